"""Cases: drafts from sealed evidence, the legal-basis catalogue, repeat links, the review workflow with its
append-only audit trail, users and API tokens, case documents, and the database (SQLite or PostgreSQL,
schema by Alembic migrations).

Imports nothing from detection (only the event schema, the bus and the config), so the central roles
never load a model or open a camera. Modules: ``db`` (models, :func:`open_db`, migrations), ``drafter``,
``legal_basis``, ``workflow`` (transitions, roles, permissions), ``users``, ``queries`` (read side for the
console), ``document`` (HTML/PDF case file), ``negatives`` (false-positive export), ``outbox``, ``audit``
(the audit trail's hash chain and its signed checkpoints).
"""

from __future__ import annotations

from nonsite.cases import audit as _audit  # noqa: F401 - chains every audit entry written (before_flush hook)
from nonsite.cases import enforcement as _enforcement  # noqa: F401,E402 - maps the documents tables (0008_documents)
from nonsite.cases.db import (
    DISPOSITIONS,
    ApiToken,
    AuditEntry,
    Case,
    CaseLink,
    CaseStatus,
    DatabaseSchemaError,
    User,
    case_by_number,
    open_db,
    write_session,
)
from nonsite.cases.drafter import draft_case, draft_pending, run_drafter
from nonsite.cases.legal_basis import Catalogue, LegalBasisError, default_catalogue, load_catalogue
from nonsite.cases.outbox import relay_outbox, run_outbox_relay
from nonsite.cases.workflow import (
    DISMISS_REASONS,
    PERMISSIONS,
    TRANSITIONS,
    Action,
    CaseNotFound,
    InvalidReason,
    InvalidTransition,
    PermissionDenied,
    Role,
    WorkflowError,
    allowed_actions,
    apply_action,
    approve,
    can,
    close,
    confirm,
    dismiss,
    dispatch,
    rectify,
    return_case,
)

__all__ = [
    "DISMISS_REASONS",
    "DISPOSITIONS",
    "PERMISSIONS",
    "TRANSITIONS",
    "Action",
    "ApiToken",
    "AuditEntry",
    "Case",
    "CaseLink",
    "CaseNotFound",
    "CaseStatus",
    "Catalogue",
    "DatabaseSchemaError",
    "InvalidReason",
    "InvalidTransition",
    "LegalBasisError",
    "PermissionDenied",
    "Role",
    "User",
    "WorkflowError",
    "allowed_actions",
    "apply_action",
    "approve",
    "can",
    "case_by_number",
    "close",
    "confirm",
    "default_catalogue",
    "dismiss",
    "dispatch",
    "draft_case",
    "draft_pending",
    "load_catalogue",
    "open_db",
    "rectify",
    "relay_outbox",
    "return_case",
    "run_drafter",
    "run_outbox_relay",
    "write_session",
]
