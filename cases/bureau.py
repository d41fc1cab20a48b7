"""The bureau's actions on a case beside the status workflow (issue 14): reassign it to another team, issue a
supervision order (督办), answer one; and who sees which cases (a field officer: their teams' only).

Each action runs in one write transaction that changes the case (or the order), appends an audit entry (the
normal audit path: chained by :mod:`nonsite.cases.audit`) and leaves the status alone::

    reassign            operator, admin          a reason is required; the team must be one of the organisation's
    supervise           supervisor, admin        an instruction, optionally a new deadline (after now)
    answer_supervision  a field officer of the case's team; an operator or admin for any team; once per order

Who belongs to a team is the organisation file's ``leader``/``members`` (no user column).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from nonsite.cases import reminders
from nonsite.cases.db import AuditEntry, Case, Supervision, utcnow, write_session
from nonsite.cases.deadlines import DueState, TimeLimitTable
from nonsite.cases.legal_basis import default_catalogue
from nonsite.cases.organisation import Organisation
from nonsite.cases.workflow import (
    CaseNotFound,
    InvalidReason,
    PermissionDenied,
    Role,
    WorkflowError,
    due_soon_from,
    load_for_update,
    parse_role,
    set_step_due,
)

__all__ = [
    "BUREAU_PERMISSIONS",
    "answer_supervision",
    "as_order",
    "due_state",
    "open_supervisions",
    "reassign",
    "sees_all",
    "supervise",
    "supervisions_of",
    "visible_teams",
]

R = Role
#: Who may apply each bureau action (a field officer answers only for a case of their teams).
BUREAU_PERMISSIONS: Mapping[str, frozenset[Role]] = {
    "reassign": frozenset({R.OPERATOR, R.ADMIN}),
    "supervise": frozenset({R.SUPERVISOR, R.ADMIN}),
    "answer_supervision": frozenset({R.FIELD_OFFICER, R.OPERATOR, R.ADMIN}),
}
MAX_TEXT = 2000


def sees_all(role: Role | str) -> bool:
    """Whether ``role`` sees every case (everyone but a field officer)."""
    return parse_role(role) is not R.FIELD_OFFICER


def visible_teams(role: Role | str, username: str, organisation: Organisation | None) -> frozenset[str] | None:
    """The teams whose cases ``username`` sees: None for every case; a field officer sees their teams' only
    (none at all without an organisation, or when the file does not list them)."""
    if sees_all(role):
        return None
    if organisation is None:
        return frozenset()
    return frozenset(t.id for t in organisation.teams_of(username))


def _check_role(action: str, role: Role | str | None) -> None:
    if role is None:
        return
    r = parse_role(role)
    if r not in BUREAU_PERMISSIONS[action]:
        allowed = " or ".join(x.value for x in Role if x in BUREAU_PERMISSIONS[action])
        raise PermissionDenied(f"a {r.value} may not {action.replace('_', ' ')}; ask a user with the role {allowed}")


def _text(value: str, what: str) -> str:
    value = (value or "").strip()
    if not value:
        raise InvalidReason(f"{what} is required")
    if len(value) > MAX_TEXT:
        raise InvalidReason(f"{what} is {len(value)} characters; at most {MAX_TEXT}")
    return value


def _detail(role: Role | str | None, person: str | None, actor: str, **rest: object) -> dict[str, object]:
    detail: dict[str, object] = {}
    if role is not None:
        detail["role"] = parse_role(role).value
    if person and person != actor:
        detail["person"] = person
    detail.update(rest)
    return detail


def reassign(
    session_factory: sessionmaker[Session], case_ref: int | str, team: str, actor: str, reason: str, *,
    organisation: Organisation | None, role: Role | str | None = None, person: str | None = None,
    now: datetime | None = None,
) -> Case:
    """Give the case to ``team`` (an organisation team id), with the reason; audited as ``reassign``."""
    _check_role("reassign", role)
    reason = _text(reason, "the reason of a reassignment")
    if organisation is None or organisation.team(team) is None:
        known = ", ".join(t.id for t in organisation.teams) if organisation else "(no organisation configured)"
        raise WorkflowError(f"unknown team {team!r}; use one of {known}")
    at = (now or utcnow()).astimezone(UTC)
    with write_session(session_factory) as session:
        case = load_for_update(session, case_ref)
        before = case.team
        if before == team:
            raise WorkflowError(f"case {case.number} is already with team {team}")
        case.team = team
        case.updated_at = at
        session.add(AuditEntry(case_id=case.id, at=at, actor=actor, action="reassign",
                               before_status=case.status.value, after_status=case.status.value, team=team,
                               detail=_detail(role, person, actor, from_team=before, to_team=team, reason=reason)))
    return case


def supervise(
    session_factory: sessionmaker[Session], case_ref: int | str, actor: str, instruction: str, *,
    new_deadline: datetime | None = None, role: Role | str | None = None, person: str | None = None,
    now: datetime | None = None, time_limits: TimeLimitTable | None = None,
) -> Supervision:
    """Issue a 督办 on an open case: the instruction and, when given, the deadline that replaces the step's."""
    _check_role("supervise", role)
    instruction = _text(instruction, "the instruction of a supervision order")
    at = (now or utcnow()).astimezone(UTC)
    if new_deadline is not None:
        if new_deadline.tzinfo is None:
            raise WorkflowError("the new deadline must carry its time zone")
        try:
            new_deadline = new_deadline.astimezone(UTC)
        except OverflowError:
            raise WorkflowError("the new deadline is out of range; give a date in the next months") from None
        if new_deadline <= at:
            raise WorkflowError("the new deadline of a supervision order must be in the future")
    with write_session(session_factory) as session:
        case = load_for_update(session, case_ref)
        if case.status.value in ("closed", "dismissed"):
            raise WorkflowError(f"case {case.number} is {case.status.value}; only an open case can be supervised")
        order = Supervision(case_id=case.id, instruction=instruction, new_deadline=new_deadline, issued_by=actor,
                            issued_at=at, answer="")
        session.add(order)
        if new_deadline is not None:
            case.due_at = new_deadline
            case.due_soon_at = due_soon_from(at, new_deadline, (time_limits or default_catalogue().time_limit_table())
                                             .due_soon_fraction(case.type))
        case.updated_at = at
        session.flush()
        session.add(AuditEntry(
            case_id=case.id, at=at, actor=actor, action="supervise", before_status=case.status.value,
            after_status=case.status.value,
            detail=_detail(role, person, actor, supervision=order.id, instruction=instruction,
                           new_deadline=new_deadline.isoformat() if new_deadline else None)))
    return order


def answer_supervision(
    session_factory: sessionmaker[Session], supervision_id: int, actor: str, answer: str, *,
    organisation: Organisation | None, role: Role | str | None = None, person: str | None = None,
    now: datetime | None = None, time_limits: TimeLimitTable | None = None, timezone: str = "Asia/Shanghai",
) -> Supervision:
    """The team's answer to a 督办 (once); a field officer answers only for a case of their teams. Once no open
    order sets a deadline, the case is due again by its step's own limit (counted from when the step began)."""
    _check_role("answer_supervision", role)
    answer = _text(answer, "the answer to a supervision order")
    at = (now or utcnow()).astimezone(UTC)
    who = person or actor
    with write_session(session_factory) as session:
        order = session.scalar(select(Supervision).where(Supervision.id == supervision_id).with_for_update())
        if order is None:
            raise WorkflowError(f"no supervision order {supervision_id}")
        case = load_for_update(session, order.case_id)
        if role is not None:
            teams = visible_teams(role, who, organisation)
            if teams is not None and case.team not in teams:
                raise CaseNotFound(case.number)
        if order.answered_at is not None:
            raise WorkflowError(f"this supervision order on {case.number} was already answered by {order.answered_by}")
        order.answer, order.answered_by, order.answered_at = answer, who, at
        case.updated_at = at
        session.flush()
        set_step_due(session, case, time_limits, timezone, case.step_started_at or case.created_at)
        session.add(AuditEntry(
            case_id=case.id, at=at, actor=actor, action="answer_supervision", before_status=case.status.value,
            after_status=case.status.value, detail=_detail(role, person, actor, supervision=order.id, answer=answer)))
    return order


def due_state(case: Case, now: datetime) -> DueState | None:
    """on_time / due_soon / overdue of the case's current step at ``now`` (None: no deadline)."""
    if case.due_at is None:
        return None
    if now >= case.due_at:
        return DueState.OVERDUE
    if case.due_soon_at is not None and now >= case.due_soon_at:
        return DueState.DUE_SOON
    return DueState.ON_TIME


def as_order(s: Supervision, case_number: str) -> reminders.Supervision:
    """A stored order as the planner's :class:`~nonsite.cases.reminders.Supervision` (pinning, reminders)."""
    return reminders.Supervision(case_number=case_number, instruction=s.instruction, issued_by=s.issued_by,
                                 issued_at=s.issued_at, new_deadline=s.new_deadline, answered_at=s.answered_at,
                                 answer=s.answer, answered_by=s.answered_by)


def supervisions_of(session: Session, case_id: int) -> list[Supervision]:
    """A case's supervision orders, oldest first."""
    return list(session.scalars(select(Supervision).where(Supervision.case_id == case_id).order_by(Supervision.id)))


def open_supervisions(session: Session, case_ids: list[int]) -> dict[int, list[Supervision]]:
    """Open orders per case (for pinning them first in a task list)."""
    out: dict[int, list[Supervision]] = {}
    if not case_ids:
        return out
    for s in session.scalars(select(Supervision).where(Supervision.case_id.in_(case_ids),
                                                       Supervision.answered_at.is_(None))):
        out.setdefault(s.case_id, []).append(s)
    return out
