"""The review workflow: allowed status transitions, dismissal reasons, and the audit trail.

DESIGN's workflow, as a table (:data:`TRANSITIONS`)::

    draft      --confirm-->  confirmed     draft     --dismiss--> dismissed (reason)
    confirmed  --approve-->  approved      confirmed --dismiss--> dismissed (reason)
    confirmed  --return-->   returned      returned  --dismiss--> dismissed (reason)
    returned   --confirm-->  confirmed     approved  --dispatch-> dispatched
    dispatched --rectify-->  rectified     rectified --close-->   closed

dismissed and closed are final.

Every transition runs in one write transaction that checks the current status, changes it, appends an
:class:`~nonsite.cases.db.AuditEntry` (before/after) and queues a :class:`CaseDecision` for
``nonsite.cases`` in the outbox, so a crash leaves either all of it or none.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from nonsite.cases.db import AuditEntry, Case, CaseStatus, OutboxMessage, utcnow, write_session
from nonsite.pipeline.events import TOPIC_CASES, CaseDecision

__all__ = [
    "DISMISS_REASONS",
    "TRANSITIONS",
    "Action",
    "CaseNotFound",
    "InvalidReason",
    "InvalidTransition",
    "WorkflowError",
    "allowed_actions",
    "apply_action",
    "confirm",
    "dismiss",
]


class Action(enum.StrEnum):
    CONFIRM = "confirm"
    APPROVE = "approve"
    RETURN = "return"
    DISMISS = "dismiss"
    DISPATCH = "dispatch"
    RECTIFY = "rectify"
    CLOSE = "close"


S, A = CaseStatus, Action

TRANSITIONS: Mapping[CaseStatus, Mapping[Action, CaseStatus]] = {
    S.DRAFT: {A.CONFIRM: S.CONFIRMED, A.DISMISS: S.DISMISSED},
    S.CONFIRMED: {A.APPROVE: S.APPROVED, A.RETURN: S.RETURNED, A.DISMISS: S.DISMISSED},
    S.RETURNED: {A.CONFIRM: S.CONFIRMED, A.DISMISS: S.DISMISSED},
    S.APPROVED: {A.DISPATCH: S.DISPATCHED},
    S.DISPATCHED: {A.RECTIFY: S.RECTIFIED},
    S.RECTIFIED: {A.CLOSE: S.CLOSED},
    S.DISMISSED: {},
    S.CLOSED: {},
}

DISMISS_REASONS: tuple[str, ...] = ("false_positive", "duplicate", "not_a_violation", "other")


class WorkflowError(Exception):
    """A workflow request that cannot be carried out; the message says why."""


class CaseNotFound(WorkflowError, LookupError):
    def __init__(self, case_ref: int | str) -> None:
        self.case_ref = case_ref
        super().__init__(f"no case {case_ref!r}; check the case number")


class InvalidTransition(WorkflowError):
    def __init__(self, number: str, status: CaseStatus, action: Action) -> None:
        self.number, self.status, self.action = number, status, action
        allowed = ", ".join(a.value for a in TRANSITIONS[status]) or "none (it is final)"
        sources = [s.value for s, acts in TRANSITIONS.items() if action in acts]
        super().__init__(
            f"case {number} is {status.value}, so it cannot be {_past(action)}: '{action.value}' applies only "
            f"to {' or '.join(sources)} cases; actions allowed now: {allowed}"
        )


class InvalidReason(WorkflowError, ValueError):
    pass


def _past(action: Action) -> str:
    return {A.RETURN: "returned", A.DISMISS: "dismissed", A.CONFIRM: "confirmed", A.APPROVE: "approved",
            A.DISPATCH: "dispatched", A.RECTIFY: "rectified", A.CLOSE: "closed"}[action]


def allowed_actions(status: CaseStatus | str) -> list[Action]:
    """Actions that may be applied to a case in ``status``."""
    return list(TRANSITIONS[CaseStatus(status)])


def _load_for_update(session: Session, case_ref: int | str) -> Case:
    stmt = select(Case).with_for_update()
    stmt = stmt.where(Case.id == case_ref) if isinstance(case_ref, int) else stmt.where(Case.number == case_ref)
    case = session.scalar(stmt)
    if case is None:
        raise CaseNotFound(case_ref)
    return case


def apply_action(
    session_factory: sessionmaker[Session],
    case_id: int | str,
    action: Action | str,
    actor: str,
    *,
    reason: str | None = None,
    note: str = "",
) -> Case:
    """Apply ``action`` to the case (its id, or its number as a string) on behalf of ``actor``.

    Raises :class:`CaseNotFound`, :class:`InvalidTransition` or :class:`InvalidReason`; on success the
    status, the audit entry and the outbox message are committed together and the case is returned.
    """
    try:
        act = Action(action)
    except ValueError:
        known = ", ".join(a.value for a in Action)
        raise WorkflowError(f"unknown action {action!r}; use one of {known}") from None
    actor = (actor or "").strip()
    if not actor:
        raise WorkflowError("an action needs an actor (the user who acts)")
    note = (note or "").strip()
    if act is A.DISMISS:
        if reason not in DISMISS_REASONS:
            raise InvalidReason(
                f"dismiss reason {reason!r} is not one of {', '.join(DISMISS_REASONS)}"
            )
        if reason == "other" and not note:
            raise InvalidReason("dismiss reason 'other' needs a note saying why")
    elif reason is not None:
        raise InvalidReason(f"only dismiss takes a reason; '{act.value}' takes a note")

    with write_session(session_factory) as session:
        case = _load_for_update(session, case_id)
        before = case.status
        after = TRANSITIONS[before].get(act)
        if after is None:
            raise InvalidTransition(case.number, before, act)
        now = utcnow()
        case.status = after
        case.updated_at = now
        detail: dict[str, Any] = {}
        if note:
            detail["note"] = note
        if act is A.DISMISS:
            case.dismiss_reason = reason
            case.dismiss_note = note
            detail["reason"] = reason
        session.add(
            AuditEntry(
                case_id=case.id, at=now, actor=actor, action=act.value,
                before_status=before.value, after_status=after.value, detail=detail,
            )
        )
        decision = CaseDecision(
            case_number=case.number, event_id=case.event_id, status=after.value,
            previous_status=before.value, actor=actor, reason=reason or note, at=now,
        )
        session.add(OutboxMessage(topic=TOPIC_CASES, key=case.number, value=decision.model_dump_json()))
    return case


def confirm(session_factory: sessionmaker[Session], case_id: int | str, actor: str, *, note: str = "") -> Case:
    """draft/returned → confirmed (the operator agrees it is a violation)."""
    return apply_action(session_factory, case_id, A.CONFIRM, actor, note=note)


def dismiss(
    session_factory: sessionmaker[Session], case_id: int | str, actor: str, reason: str, note: str = ""
) -> Case:
    """draft/confirmed/returned → dismissed, with a reason from :data:`DISMISS_REASONS` (and a note)."""
    return apply_action(session_factory, case_id, A.DISMISS, actor, reason=reason, note=note)
