"""The review workflow: allowed status transitions, dismissal reasons, and the audit trail.

DESIGN's workflow, as a table (:data:`TRANSITIONS`)::

    draft      --confirm-->  confirmed     draft     --dismiss--> dismissed (reason)
    confirmed  --approve-->  approved      confirmed --dismiss--> dismissed (reason)
    confirmed  --return-->   returned      returned  --dismiss--> dismissed (reason)
    returned   --confirm-->  confirmed     approved  --dispatch-> dispatched
    dispatched --rectify-->  rectified     rectified --close-->   closed

dismissed and closed are final.

Who may do what is a second table (:data:`PERMISSIONS`), the one the console enforces too::

    operator (值班员):   confirm, dismiss, dispatch, rectify (feedback)
    reviewer (法制审核): approve, return, dismiss, close
    field_officer (执法队员): rectify (feedback) on their teams' cases
    admin:               everything
    (supervisor and leader apply no transition; the bureau's actions are in :mod:`nonsite.cases.bureau`)

and the legal review is a second pair of eyes: whoever confirmed a case cannot approve or return it.
Returning needs a comment; rectifying needs feedback (a note or an attachment such as a photo).

Every transition runs in one write transaction that checks the current status, changes it, appends an
:class:`~nonsite.cases.db.AuditEntry` (before/after) and queues a :class:`CaseDecision` for
``nonsite.cases`` in the outbox, so a crash leaves either all of it or none.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from nonsite.bus.events import TOPIC_CASES, CaseDecision
from nonsite.cases import recheck as recheck_mod
from nonsite.cases.db import (
    DECISIONS,
    AuditEntry,
    Case,
    CaseStatus,
    OutboxMessage,
    Supervision,
    utcnow,
    write_session,
)
from nonsite.cases.deadlines import STEP_OF_STATUS, TimeLimitTable
from nonsite.cases.legal_basis import default_catalogue
from nonsite.config.services import RecheckConfig

__all__ = [
    "DISMISS_REASONS",
    "PERMISSIONS",
    "TRANSITIONS",
    "Action",
    "CaseNotFound",
    "InvalidReason",
    "InvalidTransition",
    "PermissionDenied",
    "Role",
    "WorkflowError",
    "allowed_actions",
    "apply_action",
    "approve",
    "can",
    "close",
    "confirm",
    "dismiss",
    "dispatch",
    "parse_role",
    "person_of",
    "rectify",
    "return_case",
    "set_step_due",
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


class Role(enum.StrEnum):
    """Console roles (the last three come with the organisation, docs/bureau.md)."""

    OPERATOR = "operator"
    REVIEWER = "reviewer"
    ADMIN = "admin"
    SUPERVISOR = "supervisor"
    """督查: sees every case, issues 督办 (supervision orders)."""
    FIELD_OFFICER = "field_officer"
    """执法队员: sees and works only the cases of their teams (the organisation's ``members``/``leader``)."""
    LEADER = "leader"
    """领导: reads everything, changes nothing."""


R = Role

#: Which roles may apply each action (the console checks the same table before it calls the workflow).
PERMISSIONS: Mapping[Action, frozenset[Role]] = {
    A.CONFIRM: frozenset({R.OPERATOR, R.ADMIN}),
    A.DISMISS: frozenset({R.OPERATOR, R.REVIEWER, R.ADMIN}),
    A.APPROVE: frozenset({R.REVIEWER, R.ADMIN}),
    A.RETURN: frozenset({R.REVIEWER, R.ADMIN}),
    A.DISPATCH: frozenset({R.OPERATOR, R.ADMIN}),
    A.RECTIFY: frozenset({R.OPERATOR, R.FIELD_OFFICER, R.ADMIN}),
    A.CLOSE: frozenset({R.REVIEWER, R.ADMIN}),
}

#: Actions of the legal review, refused to whoever confirmed the case (四眼原则: two different people).
REVIEW_ACTIONS: frozenset[Action] = frozenset({A.APPROVE, A.RETURN})


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


class PermissionDenied(WorkflowError, PermissionError):
    """The user's role may not apply this action (or they confirmed the case they try to review)."""


def parse_role(role: Role | str) -> Role:
    try:
        return Role(role)
    except ValueError:
        raise WorkflowError(f"unknown role {role!r}; use one of {', '.join(r.value for r in Role)}") from None


def can(role: Role | str, action: Action | str) -> bool:
    """Whether ``role`` may apply ``action`` at all (the status decides whether it applies now)."""
    try:
        return Role(role) in PERMISSIONS[Action(action)]
    except ValueError:
        return False


def _past(action: Action) -> str:
    return {A.RETURN: "returned", A.DISMISS: "dismissed", A.CONFIRM: "confirmed", A.APPROVE: "approved",
            A.DISPATCH: "dispatched", A.RECTIFY: "rectified", A.CLOSE: "closed"}[action]


def allowed_actions(status: CaseStatus | str, role: Role | str | None = None) -> list[Action]:
    """Actions that may be applied to a case in ``status`` (by ``role``, when given)."""
    acts = list(TRANSITIONS[CaseStatus(status)])
    if role is None:
        return acts
    r = parse_role(role)
    return [a for a in acts if r in PERMISSIONS[a]]


def load_for_update(session: Session, case_ref: int | str) -> Case:
    """The case (by id or number) under a row lock for the rest of the transaction; ``CaseNotFound`` when none."""
    stmt = select(Case).with_for_update()
    stmt = stmt.where(Case.id == case_ref) if isinstance(case_ref, int) else stmt.where(Case.number == case_ref)
    case = session.scalar(stmt)
    if case is None:
        raise CaseNotFound(case_ref)
    return case


def person_of(entry: AuditEntry) -> str:
    """The person accountable for an audit entry: the user a token acted for, else the actor."""
    person = (entry.detail or {}).get("person")
    return person if isinstance(person, str) and person else entry.actor


def _last_confirmer(session: Session, case_id: int) -> str | None:
    """The person who last confirmed the case (the user behind a token, not the token's name)."""
    entry = session.scalar(
        select(AuditEntry).where(AuditEntry.case_id == case_id, AuditEntry.action == A.CONFIRM.value)
        .order_by(AuditEntry.id.desc()).limit(1)
    )
    return person_of(entry) if entry is not None else None


def _attachment_records(attachments: Sequence[Mapping[str, Any]] | None) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i, att in enumerate(attachments or ()):
        key, sha = str(att.get("key", "")), str(att.get("sha256", ""))
        if not key or len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
            raise WorkflowError(f"attachment {i} needs a store key and the hex sha256 of its bytes")
        out.append({"key": key, "sha256": sha, "content_type": str(att.get("content_type", "")),
                    "bytes": int(att.get("bytes", 0) or 0), "name": str(att.get("name", ""))})
    return out


def apply_action(
    session_factory: sessionmaker[Session],
    case_id: int | str,
    action: Action | str,
    actor: str,
    *,
    role: Role | str | None = None,
    reason: str | None = None,
    note: str = "",
    assignee: str | None = None,
    attachments: Sequence[Mapping[str, Any]] | None = None,
    person: str | None = None,
    time_limits: TimeLimitTable | None = None,
    timezone: str = "Asia/Shanghai",
    now: datetime | None = None,
    decision: Mapping[str, Any] | None = None,
    extra: Mapping[str, Any] | None = None,
    recheck: RecheckConfig | None = None,
) -> Case:
    """Apply ``action`` to the case (its id, or its number as a string) on behalf of ``actor``.

    ``person`` is the human accountable when ``actor`` is not one (an API token acting for its owner;
    default: the actor). The four-eyes rule compares persons: whoever confirmed a case, through the browser
    or any of their tokens, cannot approve or return it.

    ``role`` is the acting user's role, checked against :data:`PERMISSIONS` (the console and the API
    always pass it; ``None`` is for trusted internal callers such as the command line). ``reason`` is
    for dismiss only; ``note`` is a comment (required to return a case); ``assignee`` names the team
    a dispatch goes to (default: the suggested team); ``attachments`` (``{key, sha256, content_type,
    bytes, name}`` of blobs already in the evidence store) are the feedback of a rectification.

    ``decision`` (approve only): ``{"kind": warning | penalty | no_penalty | transfer, "amount_yuan": int,
    "reason": str}`` — a penalty's amount within the penalty range the case was drafted under, a reason for
    no_penalty; stored on the case and in the audit entry.

    The next step's due time (``due_at``, ``due_step``) is computed from ``time_limits`` (default: the shipped
    catalogue's) counted from ``now`` (default: the current instant) on the clock of ``timezone``; an open
    督办 with a new deadline keeps that deadline.

    ``extra``: more facts for the audit entry's detail (e.g. the field officer's result and idempotency key,
    :mod:`nonsite.cases.field`); they cannot replace the keys the workflow sets.

    ``recheck`` (``cases.recheck``): when enabled, a rectification also asks the camera to re-check the zone
    (:mod:`nonsite.cases.recheck`: a pending re-check and its request in the outbox, in this transaction). Closing
    a case whose re-check is pending (or saw the object) is refused whatever ``recheck`` says; one the camera could
    not do needs a note.

    Raises :class:`CaseNotFound`, :class:`InvalidTransition`, :class:`InvalidReason`,
    :class:`PermissionDenied` or :class:`WorkflowError`; on success the status, the audit entry and
    the outbox message are committed together and the case is returned.
    """
    try:
        act = Action(action)
    except ValueError:
        known = ", ".join(a.value for a in Action)
        raise WorkflowError(f"unknown action {action!r}; use one of {known}") from None
    actor = (actor or "").strip()
    if not actor:
        raise WorkflowError("an action needs an actor (the user who acts)")
    person = (person or "").strip() or actor
    acting_role = parse_role(role) if role is not None else None
    if acting_role is not None and acting_role not in PERMISSIONS[act]:
        allowed = " or ".join(r.value for r in Role if r in PERMISSIONS[act])
        article = "an" if acting_role.value[0] in "aeiou" else "a"
        raise PermissionDenied(
            f"{article} {acting_role.value} may not {act.value} cases; ask a user with the role {allowed}"
        )
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
    if act is A.RETURN and not note:
        raise InvalidReason("returning a case needs a comment saying what to fix")
    files = _attachment_records(attachments)
    if files and act is not A.RECTIFY:
        raise WorkflowError(f"only rectify takes attachments (the feedback photos), not '{act.value}'")
    if act is A.RECTIFY and not (note or files):
        raise InvalidReason("rectification feedback needs a note or a photo of the rectified place")
    assignee = (assignee or "").strip() or None
    if assignee is not None and act is not A.DISPATCH:
        raise WorkflowError(f"only dispatch takes an assignee, not '{act.value}'")

    if decision is not None and act is not A.APPROVE:
        raise WorkflowError(f"only approve takes a decision, not '{act.value}'")
    with write_session(session_factory) as session:
        case = load_for_update(session, case_id)
        before = case.status
        after = TRANSITIONS[before].get(act)
        if after is None:
            raise InvalidTransition(case.number, before, act)
        if act in REVIEW_ACTIONS and _last_confirmer(session, case.id) == person:
            raise PermissionDenied(
                f"{person} confirmed case {case.number}, so another user must review it (evidence review and "
                "legal review are done by two people)"
            )
        now = (now or utcnow()).astimezone(UTC)
        recheck_record = recheck_mod.check_close(session, case, note, now) if act is A.CLOSE else None
        case.status = after
        case.updated_at = now
        set_step_due(session, case, time_limits, timezone, now)
        if act is A.CONFIRM:  # 限时办结: the whole case's deadline, from the confirmation (stored since 0007)
            finish = (time_limits or default_catalogue().time_limit_table()).finish_due(case.type, now, timezone)
            case.finish_due = finish.at if finish is not None else None
        detail: dict[str, Any] = {}
        if acting_role is not None:
            detail["role"] = acting_role.value
        if person != actor:
            detail["person"] = person
        if note:
            detail["note"] = note
        if act is A.DISMISS:
            case.dismiss_reason = reason
            case.dismiss_note = note
            detail["reason"] = reason
        if act is A.DISPATCH:
            team = assignee or case.team or _suggested_team(case)
            case.dispatched_to = team
            detail["assignee"] = team
        if files:
            detail["attachments"] = files
        if decision is not None:
            detail["decision"] = _record_decision(case, decision)
        if recheck_record is not None:
            detail["recheck"] = recheck_record
        if act is A.RECTIFY:
            asked = recheck_mod.request_recheck(session, case, person, recheck, now)
            if asked is not None:
                detail["recheck_request"] = asked.request_id
        for key, value in (extra or {}).items():
            detail.setdefault(key, value)
        session.add(
            AuditEntry(
                case_id=case.id, at=now, actor=actor, action=act.value,
                before_status=before.value, after_status=after.value, detail=detail,
                team=detail.get("assignee") or None, photos=[f["sha256"] for f in files] or None,
            )
        )
        decision = CaseDecision(
            case_number=case.number, event_id=case.event_id, status=after.value,
            previous_status=before.value, actor=actor, reason=reason or note, at=now,
        )
        session.add(OutboxMessage(topic=TOPIC_CASES, key=case.number, value=decision.model_dump_json()))
    return case


def _record_decision(case: Case, decision: Mapping[str, Any]) -> dict[str, Any]:
    """Check the reviewer's decision against the case's legal basis and store it on the case."""
    kind = str(decision.get("kind") or "")
    if kind not in DECISIONS:
        raise InvalidReason(f"decision {kind!r} is not one of {', '.join(DECISIONS)}")
    reason = str(decision.get("reason") or "").strip()
    amount = decision.get("amount_yuan")
    if kind == "penalty":
        penalty = (case.legal_basis or {}).get("penalty") or None
        if penalty is None:
            raise InvalidReason(f"the catalogue sets no fine for {case.type}; decide warning, no_penalty or transfer")
        if not isinstance(amount, int) or isinstance(amount, bool):
            raise InvalidReason("a penalty decision needs the fine in whole yuan")
        low, high = penalty.get("min_yuan"), penalty.get("max_yuan")
        if (low is not None and amount < low) or (high is not None and amount > high) or amount < 0:
            raise InvalidReason(f"a fine of {amount} yuan is outside the catalogue's range "
                                f"{low if low is not None else 0}-{high if high is not None else '∞'} yuan")
    elif amount is not None:
        raise InvalidReason(f"only a penalty decision takes an amount, not {kind}")
    if kind == "no_penalty" and not reason:
        raise InvalidReason("a decision not to penalise needs the reason")
    case.decision, case.decision_amount_yuan, case.decision_reason = kind, amount, reason
    return {"kind": kind, "amount_yuan": amount, "reason": reason}


def set_step_due(session: Session, case: Case, time_limits: TimeLimitTable | None, timezone: str,
                 now: datetime) -> None:
    """Set the due time of the step the case is in now (none once dismissed or closed): the step's limit counted
    from ``now``, or the deadline of the newest open 督办 that set one; and when it becomes "due soon"."""
    step = STEP_OF_STATUS.get(case.status.value)
    table = time_limits or default_catalogue().time_limit_table()
    due = table.due_for(case.type, step, now, timezone) if step is not None else None
    ordered = session.execute(
        select(Supervision.issued_at, Supervision.new_deadline)
        .where(Supervision.case_id == case.id, Supervision.answered_at.is_(None),
               Supervision.new_deadline.is_not(None))
        .order_by(Supervision.issued_at.desc()).limit(1)
    ).first() if step is not None else None
    case.step_started_at = now if step is not None else None
    start, at = (ordered[0], ordered[1]) if ordered is not None else (now, due.at if due is not None else None)
    case.due_step = step if at is not None else None
    case.due_at = at
    case.due_soon_at = due_soon_from(start, at, table.due_soon_fraction(case.type)) if at is not None else None


def due_soon_from(start: datetime, at: datetime, fraction: float) -> datetime:
    """The instant from which a step due at ``at`` (begun at ``start``) is "due soon" (:func:`deadlines.state`)."""
    return at - (at - start) * fraction


def _suggested_team(case: Case) -> str:
    team = (case.disposition or {}).get("dispatch_to") or {}
    return str(team.get("zh") or "") if isinstance(team, dict) else ""


def confirm(
    session_factory: sessionmaker[Session], case_id: int | str, actor: str, *, note: str = "",
    role: Role | str | None = None,
) -> Case:
    """draft/returned → confirmed (the operator agrees it is a violation: 一审 evidence review)."""
    return apply_action(session_factory, case_id, A.CONFIRM, actor, note=note, role=role)


def dismiss(
    session_factory: sessionmaker[Session], case_id: int | str, actor: str, reason: str, note: str = "",
    *, role: Role | str | None = None,
) -> Case:
    """draft/confirmed/returned → dismissed, with a reason from :data:`DISMISS_REASONS` (and a note)."""
    return apply_action(session_factory, case_id, A.DISMISS, actor, reason=reason, note=note, role=role)


def approve(
    session_factory: sessionmaker[Session], case_id: int | str, actor: str, *, note: str = "",
    role: Role | str | None = None,
) -> Case:
    """confirmed → approved (二审 legal review passed)."""
    return apply_action(session_factory, case_id, A.APPROVE, actor, note=note, role=role)


def return_case(
    session_factory: sessionmaker[Session], case_id: int | str, actor: str, note: str,
    *, role: Role | str | None = None,
) -> Case:
    """confirmed → returned, with a comment saying what to fix."""
    return apply_action(session_factory, case_id, A.RETURN, actor, note=note, role=role)


def dispatch(
    session_factory: sessionmaker[Session], case_id: int | str, actor: str, *, assignee: str | None = None,
    note: str = "", role: Role | str | None = None,
) -> Case:
    """approved → dispatched (任务交办) to ``assignee`` (default: the team the discretion table suggests)."""
    return apply_action(session_factory, case_id, A.DISPATCH, actor, assignee=assignee, note=note, role=role)


def rectify(
    session_factory: sessionmaker[Session], case_id: int | str, actor: str, *, note: str = "",
    attachments: Sequence[Mapping[str, Any]] | None = None, role: Role | str | None = None,
    recheck: RecheckConfig | None = None, now: datetime | None = None,
) -> Case:
    """dispatched → rectified, with the feedback (反馈): a note and/or photos already in the evidence store (and,
    with ``recheck`` enabled, a camera re-check asked)."""
    return apply_action(session_factory, case_id, A.RECTIFY, actor, note=note, attachments=attachments, role=role,
                        recheck=recheck, now=now)


def close(
    session_factory: sessionmaker[Session], case_id: int | str, actor: str, *, note: str = "",
    role: Role | str | None = None, now: datetime | None = None,
) -> Case:
    """rectified → closed (结案); refused while a camera re-check is pending (:mod:`nonsite.cases.recheck`)."""
    return apply_action(session_factory, case_id, A.CLOSE, actor, note=note, role=role, now=now)
