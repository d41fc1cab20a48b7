"""Reminders before a deadline, escalations after it, and supervision orders (督办): pure planning, no I/O.

**The planner** (:func:`plan`) is given the open steps of cases (who works them, their team, its leader, when
they are due), ``now`` and the keys of the notices already sent, and answers which notices are due now:

- a **reminder** (提醒) to the assignee (or, without one, the team's people) when a mark of the allowed time
  has elapsed (``ReminderPolicy.remind_at``, fractions of start→due; default half-time and 80 %);
- an **escalation** (超期督促) once the step is overdue, to the team leader (the assignee in copy); it repeats
  every ``escalate_every`` up to ``max_escalations`` levels, and from ``supervisors_from_level`` on it also
  goes to the supervisors (督查) — as it does at every level when the team has no leader.

Each notice has a key (:func:`notice_key`: case, step, due instant, kind, level). The caller stores the keys
of what it sent (a unique column makes that exactly-once even with two planners) and passes them back:
a notice whose key is there is never planned again, and when a planner was down and several marks passed,
only the latest is sent (an earlier one that was skipped is not sent late). A new deadline — the next step,
or a 督办 with a new deadline — is a new due instant, so its reminders start afresh.

**Supervision orders** (:class:`Supervision`, 督办): a supervisor's instruction on a case with an optional new
deadline; while unanswered it is pinned at the top of the team's task list (:func:`task_sort_key`) and its
deadline replaces the step's (:func:`effective_due`); the team answers it (:meth:`Supervision.answer`).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Literal

from nonsite.cases.deadlines import Due

__all__ = [
    "Notice",
    "OpenStep",
    "ReminderPolicy",
    "Supervision",
    "effective_due",
    "notice_key",
    "plan",
    "task_sort_key",
]

NoticeKind = Literal["reminder", "escalation"]
_NEVER = datetime.max.replace(tzinfo=UTC)


def _aware(value: datetime, name: str) -> datetime:
    if value.tzinfo is None:
        raise ValueError(f"{name} must be timezone-aware (UTC); got a naive datetime")
    return value.astimezone(UTC)


@dataclass(frozen=True)
class OpenStep:
    """One open case in one step, as the planner needs it."""

    case_number: str
    step: str
    due: Due
    team_id: str | None = None
    assignee: str | None = None  # the user working the step; None: the team as a whole
    leader: str | None = None  # the team leader (escalations)
    team_people: tuple[str, ...] = ()  # who is reminded when there is no assignee


@dataclass(frozen=True)
class ReminderPolicy:
    """When to remind and escalate."""

    remind_at: tuple[float, ...] = (0.5, 0.8)
    escalate_every: timedelta | None = timedelta(days=1)
    max_escalations: int = 3
    supervisors: tuple[str, ...] = ()
    supervisors_from_level: int = 2

    def __post_init__(self) -> None:
        if any(not 0 < f < 1 for f in self.remind_at) or list(self.remind_at) != sorted(set(self.remind_at)):
            raise ValueError(f"remind_at must be increasing fractions between 0 and 1, not {self.remind_at}")
        if self.max_escalations < 1:
            raise ValueError("max_escalations must be at least 1")
        if self.escalate_every is not None and self.escalate_every <= timedelta(0):
            raise ValueError("escalate_every must be positive (or None: escalate once)")


@dataclass(frozen=True)
class Notice:
    """A reminder or escalation to send now."""

    key: str
    kind: NoticeKind
    case_number: str
    step: str
    due_at: datetime
    level: int  # reminder: which mark (1 = first); escalation: 1, 2, ...
    recipients: tuple[str, ...]
    copy_to: tuple[str, ...] = ()
    team_id: str | None = None
    since: datetime = field(default=_NEVER)  # when it became due


def notice_key(case_number: str, step: str, due_at: datetime, kind: NoticeKind, level: int) -> str:
    """The idempotency key of a notice (stable text; store it with a unique constraint)."""
    return f"{case_number}|{step}|{_aware(due_at, 'due_at').isoformat()}|{kind}|{level}"


def _unique(*names: str | None) -> tuple[str, ...]:
    return tuple(dict.fromkeys(n for n in names if n))


def plan(
    steps: Iterable[OpenStep],
    now: datetime,
    sent: Collection[str],
    policy: ReminderPolicy | None = None,
) -> list[Notice]:
    """The reminders and escalations due at ``now`` that ``sent`` (keys of notices already sent) does not hold;
    ordered by case number, reminders before escalations."""
    pol = policy or ReminderPolicy()
    now = _aware(now, "now")
    out: list[Notice] = []
    for s in steps:
        notice = _escalation(s, now, sent, pol) if now >= s.due.at else _reminder(s, now, sent, pol)
        if notice is not None:
            out.append(notice)
    out.sort(key=lambda n: (n.case_number, n.kind != "reminder", n.level))
    return out


def _reminder(s: OpenStep, now: datetime, sent: Collection[str], pol: ReminderPolicy) -> Notice | None:
    passed = [(i, s.due.start + s.due.allowed * f) for i, f in enumerate(pol.remind_at, 1)
              if s.due.start + s.due.allowed * f <= now]
    if not passed:
        return None
    level, since = passed[-1]
    if any(notice_key(s.case_number, s.step, s.due.at, "reminder", j) in sent
           for j in range(level, len(pol.remind_at) + 1)):
        return None
    recipients = _unique(s.assignee) or _unique(*s.team_people) or _unique(s.leader)
    return Notice(notice_key(s.case_number, s.step, s.due.at, "reminder", level), "reminder", s.case_number, s.step,
                  s.due.at, level, recipients, (), s.team_id, since)


def _escalation(s: OpenStep, now: datetime, sent: Collection[str], pol: ReminderPolicy) -> Notice | None:
    level = 1
    if pol.escalate_every is not None:
        level = min(pol.max_escalations, 1 + int((now - s.due.at) / pol.escalate_every))
    if any(notice_key(s.case_number, s.step, s.due.at, "escalation", j) in sent
           for j in range(level, pol.max_escalations + 1)):
        return None
    since = s.due.at + (pol.escalate_every or timedelta(0)) * (level - 1)
    supervisors = pol.supervisors if (level >= pol.supervisors_from_level or not s.leader) else ()
    recipients = _unique(s.leader, *supervisors)
    copy_to = tuple(n for n in _unique(s.assignee) if n not in recipients)
    return Notice(notice_key(s.case_number, s.step, s.due.at, "escalation", level), "escalation", s.case_number,
                  s.step, s.due.at, level, recipients, copy_to, s.team_id, since)


# -- supervision orders (督办) ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Supervision:
    """A supervision order (督办) on a case: the supervisor's instruction, an optional new deadline, the answer."""

    case_number: str
    instruction: str
    issued_by: str
    issued_at: datetime
    new_deadline: datetime | None = None
    answered_at: datetime | None = None
    answer: str = ""
    answered_by: str | None = None

    def __post_init__(self) -> None:
        if not self.instruction.strip():
            raise ValueError("a supervision order needs an instruction saying what to do")
        if not self.issued_by.strip():
            raise ValueError("a supervision order needs the supervisor who issued it")
        object.__setattr__(self, "issued_at", _aware(self.issued_at, "issued_at"))
        if self.new_deadline is not None:
            object.__setattr__(self, "new_deadline", _aware(self.new_deadline, "new_deadline"))
            if self.new_deadline <= self.issued_at:
                raise ValueError("the new deadline of a supervision order must be after it was issued")
        answered = (self.answered_at is not None, bool(self.answer.strip()), bool(self.answered_by))
        if any(answered) and not all(answered):
            raise ValueError("an answered supervision order needs the answer, who answered and when")
        if self.answered_at is not None:
            object.__setattr__(self, "answered_at", _aware(self.answered_at, "answered_at"))
            if self.answered_at < self.issued_at:
                raise ValueError("a supervision order cannot be answered before it was issued")

    @property
    def open(self) -> bool:
        return self.answered_at is None

    def due(self) -> Due | None:
        """The deadline it sets (from when it was issued), or None."""
        return Due(start=self.issued_at, at=self.new_deadline) if self.new_deadline is not None else None

    def answered(self, answer: str, by: str, at: datetime) -> Supervision:
        """This order with the team's answer (an order is answered once)."""
        if not self.open:
            raise ValueError(f"this supervision order on {self.case_number} was already answered")
        return replace(self, answer=answer.strip(), answered_by=by.strip(), answered_at=at)


def effective_due(step_due: Due | None, supervisions: Sequence[Supervision] = ()) -> Due | None:
    """The due of a case's current step: the newest open supervision order's deadline when it set one, else the
    step's own."""
    for sup in sorted((s for s in supervisions if s.open), key=lambda s: s.issued_at, reverse=True):
        due = sup.due()
        if due is not None:
            return due
    return step_due


def task_sort_key(
    number: str, due: Due | datetime | None, supervisions: Sequence[Supervision] = ()
) -> tuple[int, datetime, datetime, str]:
    """Sort key of a team's task list: cases with an open 督办 first (earliest supervision deadline, then the
    oldest order), then the rest by due time (earliest first; no deadline last), then by case number."""
    open_orders = [s for s in supervisions if s.open]
    if open_orders:
        deadline = min((s.new_deadline for s in open_orders if s.new_deadline is not None), default=_NEVER)
        return 0, deadline, min(s.issued_at for s in open_orders), number
    at = due.at if isinstance(due, Due) else (_aware(due, "due") if due is not None else _NEVER)
    return 1, at, _NEVER, number
