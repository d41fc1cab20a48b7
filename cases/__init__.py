"""Cases: drafts from sealed evidence, the review workflow with its append-only audit trail, the DB.

Imports nothing from detection (only the event schema, the bus and the config), so the central roles
never load a model or open a camera.
"""

from __future__ import annotations

from nonsite.cases.db import AuditEntry, Case, CaseStatus, case_by_number, open_db, write_session
from nonsite.cases.drafter import draft_case, draft_pending, run_drafter
from nonsite.cases.outbox import relay_outbox, run_outbox_relay
from nonsite.cases.workflow import (
    DISMISS_REASONS,
    TRANSITIONS,
    Action,
    CaseNotFound,
    InvalidReason,
    InvalidTransition,
    WorkflowError,
    allowed_actions,
    apply_action,
    confirm,
    dismiss,
)

__all__ = [
    "DISMISS_REASONS",
    "TRANSITIONS",
    "Action",
    "AuditEntry",
    "Case",
    "CaseNotFound",
    "CaseStatus",
    "InvalidReason",
    "InvalidTransition",
    "WorkflowError",
    "allowed_actions",
    "apply_action",
    "case_by_number",
    "confirm",
    "dismiss",
    "draft_case",
    "draft_pending",
    "open_db",
    "relay_outbox",
    "run_drafter",
    "run_outbox_relay",
    "write_session",
]
