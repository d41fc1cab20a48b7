"""The reminder job: runs :func:`nonsite.cases.reminders.plan` over the open cases and stores what it plans as
console notifications (the bell), sending each notice once to the integration channels when configured.

- **What is planned**: every case in an open step with a deadline (``cases.due_at``; a 督办's new deadline counts
  from when it was issued). Reminders go to the team's people (leader and members of the case's team in the
  organisation file), escalations to the team leader (a group without one: its squad's) and, from the policy's
  level on, the supervisors (active users with the role ``supervisor``).
- **Exactly once**: a ``notifications`` row per notice key and recipient (unique); the planner is handed the
  keys already stored for the cases it looks at. A notice goes to the channels only when this run inserted at
  least one of its rows, so two jobs racing send it once.
- **When**: :class:`ReminderJob` runs :func:`run_once` every ``interval_s`` (60) in a daemon thread of the console
  process (``cases.reminders: true``), on an injectable clock; ``nonsite reminders run --once [--now ISO]`` runs
  one round from the command line.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, func, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from nonsite.cases.db import OPEN_SQL, Case, CaseStatus, Notification, Supervision, User, utcnow
from nonsite.cases.deadlines import Due
from nonsite.cases.organisation import Organisation
from nonsite.cases.reminders import Notice, OpenStep, ReminderPolicy, plan

__all__ = ["OPEN_STATUSES", "OpenCase", "ReminderJob", "RoundResult", "mark_read", "open_cases", "open_steps",
           "run_once", "unread_count", "user_notifications"]

log = logging.getLogger(__name__)

#: Statuses whose step has a deadline (dismissed and closed cases are finished).
OPEN_STATUSES: tuple[CaseStatus, ...] = (CaseStatus.DRAFT, CaseStatus.RETURNED, CaseStatus.CONFIRMED,
                                         CaseStatus.APPROVED, CaseStatus.DISPATCHED, CaseStatus.RECTIFIED)


def open_cases() -> Any:
    """The condition "neither closed nor dismissed", word for word that of the partial index ``ix_cases_open``
    (a few thousand rows however long the history), so both databases read the index."""
    return text(f"cases.{OPEN_SQL}")


@dataclass(frozen=True)
class RoundResult:
    """What one round did: notices planned, notification rows stored, notices handed to the channels."""

    planned: int
    stored: int
    sent: int
    notices: tuple[Notice, ...] = ()


def supervisors(session: Session) -> tuple[str, ...]:
    """The active supervisors (they receive the later escalations)."""
    return tuple(session.scalars(select(User.username).where(User.role == "supervisor", User.active.is_(True))
                                 .order_by(User.username)))


@dataclass(frozen=True)
class OpenCase:
    """The columns of an open case the job reads (not the whole row: its evidence and violation are large)."""

    id: int
    number: str
    team: str | None
    due_step: str | None
    due_at: datetime | None
    step_started_at: datetime | None
    created_at: datetime
    type: str
    address: str
    camera_name: str
    camera_id: str


def open_steps(session: Session, organisation: Organisation | None) -> tuple[list[OpenStep], dict[str, OpenCase]]:
    """The open steps with a deadline, as the planner needs them, and their cases by number."""
    cases = [OpenCase(*r) for r in session.execute(
        select(Case.id, Case.number, Case.team, Case.due_step, Case.due_at, Case.step_started_at, Case.created_at,
               Case.type, Case.address, Case.camera_name, Case.camera_id)
        .where(open_cases(), Case.due_at.is_not(None)))]
    cases.sort(key=lambda c: c.id)
    starts: dict[int, datetime] = {}
    if cases:
        ids = [c.id for c in cases]
        for i in range(0, len(ids), 500):
            for case_id, issued_at in session.execute(
                    select(Supervision.case_id, Supervision.issued_at)
                    .where(Supervision.case_id.in_(ids[i:i + 500]), Supervision.answered_at.is_(None),
                           Supervision.new_deadline.is_not(None))
                    .order_by(Supervision.issued_at)):
                starts[case_id] = issued_at  # the newest open order's deadline is the case's (workflow.set_step_due)
    steps: list[OpenStep] = []
    for c in cases:
        assert c.due_at is not None
        start = starts.get(c.id) or c.step_started_at or c.created_at
        if start >= c.due_at:
            start = c.due_at
        team = organisation.team(c.team) if organisation is not None and c.team else None
        steps.append(OpenStep(
            case_number=c.number, step=c.due_step or "", due=Due(start=start, at=c.due_at), team_id=c.team,
            leader=organisation.leader_of(c.team) if organisation is not None and c.team else None,
            team_people=team.people if team is not None else ()))
    return steps, {c.number: c for c in cases}


def _sent_keys(session: Session, case_ids: list[int]) -> set[str]:
    keys: set[str] = set()
    for i in range(0, len(case_ids), 500):
        keys.update(session.scalars(select(Notification.key).where(Notification.case_id.in_(case_ids[i:i + 500]))
                                    .distinct()))
    return keys


def _insert(session: Session, row: dict[str, object]) -> bool:
    """Insert one notification row unless its (key, recipient) is there; True when inserted."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        stmt = postgresql.insert(Notification).values(**row).on_conflict_do_nothing(
            constraint="uq_notifications_key_recipient")
    elif dialect == "sqlite":
        stmt = sqlite.insert(Notification).values(**row).on_conflict_do_nothing(
            index_elements=["key", "recipient"])
    else:  # pragma: no cover - the case database is SQLite or PostgreSQL
        raise RuntimeError(f"unsupported database {dialect}")
    # RETURNING tells what was inserted (the ORM's rowcount of a skipped PostgreSQL insert is not 0).
    return session.execute(stmt.returning(Notification.id)).first() is not None


def run_once(
    session_factory: sessionmaker[Session], organisation: Organisation | None, now: datetime, *,
    policy: ReminderPolicy | None = None, send: Callable[[Notice, Any], None] | None = None,
) -> RoundResult:
    """One round: plan the notices due at ``now``, store one notification per recipient, and hand each notice
    this round stored to ``send`` (the integration channels; a failure there is logged, the rows stay)."""
    now = now.astimezone(UTC)
    with session_factory() as session:
        steps, cases = open_steps(session, organisation)
        sent = _sent_keys(session, [c.id for c in cases.values()])
        pol = policy or ReminderPolicy()
        if pol.supervisors == ():
            pol = ReminderPolicy(pol.remind_at, pol.escalate_every, pol.max_escalations, supervisors(session),
                                 pol.supervisors_from_level)
    notices = plan(steps, now, sent, pol)
    stored = 0
    fresh: list[Notice] = []
    with session_factory.begin() as session:
        for n in notices:
            case = cases[n.case_number]
            inserted = 0
            for who, copy in [*((r, False) for r in n.recipients), *((r, True) for r in n.copy_to)]:
                inserted += _insert(session, {
                    "key": n.key, "recipient": who, "copy": copy, "case_id": case.id, "case_number": n.case_number,
                    "team": n.team_id, "kind": n.kind, "step": n.step, "level": n.level, "due_at": n.due_at,
                    "created_at": now})
            stored += inserted
            if inserted:
                fresh.append(n)
    sent_count = 0
    for n in fresh:
        if send is None:
            continue
        try:
            send(n, cases[n.case_number])
            sent_count += 1
        except Exception:  # noqa: BLE001 - a channel failing must not stop the console's bell
            log.exception("reminders: sending %s to the notification channels failed", n.key)
    if notices:
        log.info("reminders: %d notices planned, %d notifications stored, %d sent to channels",
                 len(notices), stored, sent_count)
    return RoundResult(len(notices), stored, sent_count, tuple(fresh))


# -- a user's notifications (the console's bell and /notifications) -------------------------------------------


def unread_count(session: Session, username: str) -> int:
    return int(session.scalar(select(func.count()).select_from(Notification)
                              .where(Notification.recipient == username, Notification.read_at.is_(None))) or 0)


def user_notifications(session: Session, username: str, *, limit: int = 200) -> list[Notification]:
    """``username``'s notifications, unread first, newest first."""
    return list(session.scalars(select(Notification).where(Notification.recipient == username)
                                .order_by(Notification.read_at.is_not(None), Notification.id.desc()).limit(limit)))


def mark_read(session_factory: sessionmaker[Session], username: str, ids: Iterable[int] | None,
              now: datetime | None = None) -> int:
    """Mark ``username``'s notifications read (``ids``: those; None: all); another user's ids change nothing."""
    at = (now or utcnow()).astimezone(UTC)
    conds = [Notification.recipient == username, Notification.read_at.is_(None)]
    if ids is not None:
        wanted = list(ids)
        if not wanted:
            return 0
        conds.append(Notification.id.in_(wanted))
    with session_factory.begin() as session:
        return int(session.execute(update(Notification).where(and_(*conds)).values(read_at=at)).rowcount or 0)


class ReminderJob:
    """:func:`run_once` every ``interval_s`` in a daemon thread, until :meth:`stop`.

    ``organisation`` is asked each round (the console's may be edited while it runs); ``clock`` gives the
    current instant (tests inject one); ``send`` hands a fresh notice to the integration channels.
    """

    def __init__(self, session_factory: sessionmaker[Session], organisation: Callable[[], Organisation | None], *,
                 clock: Callable[[], datetime] = utcnow, interval_s: float = 60.0,
                 policy: ReminderPolicy | None = None, send: Callable[[Notice, Any], None] | None = None) -> None:
        if interval_s <= 0:
            raise ValueError("the reminder job's interval must be above 0 seconds (e.g. 60)")
        self.session_factory, self.organisation, self.clock = session_factory, organisation, clock
        self.interval_s, self.policy, self.send = interval_s, policy, send
        self.rounds = 0
        self.last: RoundResult | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> RoundResult:
        self.last = run_once(self.session_factory, self.organisation(), self.clock(), policy=self.policy,
                             send=self.send)
        self.rounds += 1
        return self.last

    def start(self) -> ReminderJob:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="nonsite-reminders", daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception:  # noqa: BLE001 - a database hiccup: try again next round
                log.exception("reminder round failed; retrying in %.0f s", self.interval_s)
            self._stop.wait(self.interval_s)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
