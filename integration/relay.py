"""Where the hand-off and the notifications take their work from, without touching the workflow's code:

- :func:`relay_decisions` / :func:`run_platform_relay`: a consumer of ``nonsite.cases`` (the decisions the
  workflow already writes to its transactional outbox) that queues a platform report when a case reaches a
  status of ``push_on``; the revision is the decision's time in milliseconds, so a redelivered decision
  queues nothing new; a message that is not a decision goes to the dead-letter topic;
- :func:`notify_new_alerts`: new case drafts (alerts) since the last round, as notices (a cursor in the
  hand-off database; the first round starts at the newest case, so a restart never floods the chat; the ids the
  cursor passed before their transaction committed are watched as its gaps, so a late commit is still sent, once);
- :func:`notify_new_supervisions`: 督办 orders issued since the last round, as notices naming the case and the
  instruction (cursor ``supervisions``, the same first-round rule);
- :func:`notice_from_reminder`: a bureau reminder/escalation (``nonsite.cases.reminders.Notice``) as a notice;
- :func:`build_connector` / :func:`build_notifier`: both from the configuration.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import ValidationError
from sqlalchemy import Column, Connection, Float, Integer, MetaData, String, Table, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from nonsite.bus import Bus, Message
from nonsite.bus.deadletter import dead_letter_value
from nonsite.bus.events import TOPIC_CASES, TOPIC_DEAD_LETTER, CaseDecision
from nonsite.cases.db import Case, CaseStatus, Supervision
from nonsite.cases.reminders import Notice as ReminderNotice
from nonsite.config.manifest import CONSOLE_LOCALES, locale_strings
from nonsite.config.root import NonsiteConfig
from nonsite.evidence import Store, presigned_url
from nonsite.integration.connector import PlatformConnector
from nonsite.integration.notify import Notice, Notifier, notice_from_case
from nonsite.integration.outbox import HandoffStore, default_url
from nonsite.integration.platform import report_from_case
from nonsite.integration.signing import LinkSigner, secret_from_env

__all__ = ["build_connector", "build_notifier", "decision_revision", "notice_from_reminder", "notify_new_alerts",
           "notify_new_supervisions", "open_store", "relay_decisions", "reminder_sender", "run_platform_relay"]

log = logging.getLogger(__name__)

PLATFORM_GROUP = "nonsite-platform"

_meta = MetaData()
cursors = Table("integration_cursors", _meta,
                Column("name", String(64), primary_key=True), Column("position", Integer, nullable=False))
#: Ids a cursor passed that were not committed yet (:func:`notify_new_alerts`), with when it passed them (Unix s).
cursor_gaps = Table("integration_cursor_gaps", _meta,
                    Column("name", String(64), primary_key=True), Column("row_id", Integer, primary_key=True),
                    Column("since", Float, nullable=False))


def open_store(cfg: NonsiteConfig) -> HandoffStore:
    """The hand-off database the configuration names (default ``DATA_DIR/integration.db``)."""
    store = HandoffStore(cfg.integration.platform.database_url or default_url(Path(cfg.data_dir)))
    _meta.create_all(store.engine)
    return store


def build_connector(cfg: NonsiteConfig, store: HandoffStore, evidence: Store | None = None) -> PlatformConnector:
    """The platform connector of ``cfg`` (secrets from the environment: MissingSecret names what is unset)."""
    p = cfg.integration.platform
    link_secret = secret_from_env(p.link_secret_env) if p.link_base_url else b""
    presign: Callable[[str, int], str | None] | None = None
    if evidence is not None:
        store_ = evidence

        def presign(key: str, seconds: int) -> str | None:
            return presigned_url(store_, key, seconds)

    links = LinkSigner(base_url=p.link_base_url, secret=link_secret, presign=presign)
    return PlatformConnector(p, store, secret=secret_from_env(p.secret_env), links=links, timezone=cfg.timezone)


def build_notifier(cfg: NonsiteConfig) -> Notifier:
    return Notifier(cfg.integration.notifications, timezone=cfg.timezone)


def decision_revision(decision: CaseDecision) -> int:
    """The report revision of a decision: its time in milliseconds (stable across redeliveries, increasing)."""
    return int(decision.at.timestamp() * 1000)


def relay_decisions(messages: list[Message], session_factory: sessionmaker[Session],
                    connector: PlatformConnector, bus: Bus, group: str = PLATFORM_GROUP) -> int:
    """Queue a report for each decision whose status is in ``push_on``; returns how many were queued."""
    queued = 0
    push_on = set(connector.cfg.push_on)
    for message in messages:
        try:
            decision = CaseDecision.model_validate_json(message.value)
        except ValidationError as exc:
            reason = f"not a case decision: {exc.errors()[0]['msg']}"
            log.error("platform relay: %s at %s offset %d; dead-lettered", reason, message.topic, message.offset)
            bus.publish(TOPIC_DEAD_LETTER, message.key, dead_letter_value(message, reason, group))
            continue
        if decision.status not in push_on:
            continue
        with session_factory() as session:
            case = session.scalar(select(Case).where(Case.number == decision.case_number))
        if case is None:
            log.error("platform relay: case %s of a decision is not in the database", decision.case_number)
            continue
        # the status is the decision's (the case may have moved on since); the rest is the case as it is now
        report = report_from_case(case).model_copy(update={"status": decision.status})
        queued += connector.enqueue(report, decision_revision(decision))
    return queued


def run_platform_relay(bus: Bus, session_factory: sessionmaker[Session], connector: PlatformConnector,
                       stop: threading.Event, *, group: str = PLATFORM_GROUP, poll_timeout_s: float = 0.5) -> None:
    """Consume ``nonsite.cases`` until ``stop``; a message is committed once its report is in the outbox."""
    consumer = bus.consumer(TOPIC_CASES, group)
    try:
        while not stop.is_set():
            batch = consumer.poll(max_records=100, timeout_s=poll_timeout_s)
            if not batch:
                continue
            try:
                relay_decisions(batch, session_factory, connector, bus, group)
            except Exception:  # a database is down: read the batch again after a pause
                log.exception("platform relay failed; retrying")
                consumer.close()
                consumer = bus.consumer(TOPIC_CASES, group)
                stop.wait(2.0)
                continue
            consumer.commit(batch[-1])
    finally:
        consumer.close()


def _upsert(store: HandoffStore, name: str, position: int, conn: Connection | None = None) -> None:
    dialect = store.engine.dialect.name
    ins = (postgresql.insert(cursors) if dialect == "postgresql" else sqlite.insert(cursors)).values(
        name=name, position=position)
    stmt = ins.on_conflict_do_update(index_elements=["name"], set_={"position": position})
    if conn is not None:
        conn.execute(stmt)
        return
    with store.engine.begin() as own:
        own.execute(stmt)


#: How long an id below a cursor that was not committed yet is watched for (a drafter's transaction that commits
#: later than one with a higher id); after it, the id is taken for a rolled-back insert and forgotten.
GAP_TTL_S = 3600.0
#: Most ids below the cursor watched per round (a sequence that jumped far is not a thousand late commits).
MAX_GAPS = 1000


def _position(store: HandoffStore, name: str) -> tuple[int | None, list[int]]:
    """The cursor ``name`` and the ids below it that were not committed when it passed them (its gaps)."""
    _meta.create_all(store.engine)
    with store.engine.connect() as conn:
        cursor = conn.scalar(select(cursors.c.position).where(cursors.c.name == name))
        gaps = list(conn.scalars(select(cursor_gaps.c.row_id).where(cursor_gaps.c.name == name)
                                 .order_by(cursor_gaps.c.row_id)))
    return cursor, gaps


def _advance(store: HandoffStore, name: str, cursor: int, above: list[int], filled: list[int], *,
             now: float, ttl_s: float) -> None:
    """Move cursor ``name`` past ``above`` (the ids read above it, ascending): the ids it skips become gaps; the
    gaps ``filled`` this round and those older than ``ttl_s`` are forgotten — one transaction."""
    new_cursor = above[-1] if above else cursor
    seen = set(above)
    skipped = [i for i in range(max(cursor + 1, new_cursor - MAX_GAPS), new_cursor) if i not in seen]
    with store.engine.begin() as conn:
        if new_cursor != cursor:
            _upsert(store, name, new_cursor, conn)
        if filled:
            conn.execute(cursor_gaps.delete().where(cursor_gaps.c.name == name, cursor_gaps.c.row_id.in_(filled)))
        conn.execute(cursor_gaps.delete().where(cursor_gaps.c.name == name, cursor_gaps.c.since < now - ttl_s))
        if skipped:
            conn.execute(cursor_gaps.insert(), [{"name": name, "row_id": i, "since": now} for i in skipped])


def notify_new_alerts(session_factory: sessionmaker[Session], notifier: Notifier, store: HandoffStore,
                      *, limit: int = 500, now: float | None = None, gap_ttl_s: float = GAP_TTL_S) -> int:
    """Notify the drafts created since the last round (cursor ``new_alerts``); returns how many.

    Ids come from a sequence, but transactions commit in any order: a draft whose id is below one already read
    (its drafter committed later) is found through the cursor's gaps — the ids it skipped — once, when it
    commits; a gap that stays empty for ``gap_ttl_s`` (a rolled-back insert) is forgotten."""
    now = time.time() if now is None else now
    cursor, gaps = _position(store, "new_alerts")
    with session_factory() as session:
        if cursor is None:  # first round: start from now
            _upsert(store, "new_alerts", int(session.scalar(select(func.max(Case.id))) or 0))
            return 0
        rows = session.scalars(select(Case).where(Case.id > cursor).order_by(Case.id).limit(limit)).all()
        late = session.scalars(select(Case).where(Case.id.in_(gaps)).order_by(Case.id)).all() if gaps else []
        notices = [notice_from_case(case, "new_alert") for case in [*late, *rows] if case.status is CaseStatus.DRAFT]
    for notice in notices:
        notifier.notify(notice)
    _advance(store, "new_alerts", cursor, [c.id for c in rows], [c.id for c in late], now=now, ttl_s=gap_ttl_s)
    return len(notices)


def notify_new_supervisions(session_factory: sessionmaker[Session], notifier: Notifier, store: HandoffStore,
                            *, limit: int = 500, timezone: str = "Asia/Shanghai", now: float | None = None,
                            gap_ttl_s: float = GAP_TTL_S) -> int:
    """Notify the 督办 orders issued since the last round (cursor ``supervisions``): one ``supervision`` notice
    per order, its detail the supervisor's instruction (and the new deadline, local time); returns how many.
    An order committed after one with a higher id is found through the cursor's gaps (:func:`notify_new_alerts`)."""
    now = time.time() if now is None else now
    cursor, gaps = _position(store, "supervisions")
    with session_factory() as session:
        if cursor is None:  # first round: start from now
            _upsert(store, "supervisions", int(session.scalar(select(func.max(Supervision.id))) or 0))
            return 0
        joined = select(Supervision, Case).join(Case, Case.id == Supervision.case_id)
        rows = session.execute(joined.where(Supervision.id > cursor).order_by(Supervision.id).limit(limit)).all()
        late = session.execute(joined.where(Supervision.id.in_(gaps)).order_by(Supervision.id)).all() if gaps else []
        notices = [_supervision_notice(order, case, timezone) for order, case in [*late, *rows]]
    for notice in notices:
        notifier.notify(notice)
    _advance(store, "supervisions", cursor, [o.id for o, _ in rows], [o.id for o, _ in late], now=now,
             ttl_s=gap_ttl_s)
    return len(notices)


def _supervision_notice(order: Supervision, case: Case, timezone: str) -> Notice:
    detail = f"{order.instruction}（{order.issued_by}）"
    if order.new_deadline is not None:
        due = order.new_deadline.astimezone(ZoneInfo(timezone)).strftime("%m-%d %H:%M")
        detail = f"{order.instruction}，限{due}前（{order.issued_by}）"
    return notice_from_case(case, "supervision", detail=detail, at=order.issued_at)


#: The bureau's steps (``nonsite.cases.deadlines``) as the teams call them.
STEP_NAMES: dict[str, str] = {"confirm": "研判确认", "review": "法制审核", "dispatch": "派遣", "rectify": "整改",
                              "close": "结案"}


def notice_from_reminder(n: ReminderNotice, summary: str) -> Notice:
    """A bureau reminder (提醒) or escalation (超期) as a notice; ``summary`` is the case's type and place."""
    step = STEP_NAMES.get(n.step, n.step)
    if n.kind == "escalation":
        return Notice("overdue", n.case_number, summary, n.since, f"{step}环节已超期（第{n.level}级督促）")
    return Notice("reminder", n.case_number, summary, n.since, f"{step}环节即将到期")


def reminder_sender(notifier: Notifier) -> Callable[[ReminderNotice, Any], None]:
    """What the reminder job (``nonsite.cases.notifications``) calls for each fresh notice with the case's columns
    (type, address, camera): queue it on the channels that subscribe to ``reminder`` / ``overdue`` (the
    notifier's worker sends it)."""
    names = locale_strings(CONSOLE_LOCALES, "zh")

    def send(n: ReminderNotice, case: Any) -> None:
        place = case.address or case.camera_name or case.camera_id
        notifier.notify(notice_from_reminder(n, f"{names.get(f'type.{case.type}', case.type)} · {place}"))

    return send
