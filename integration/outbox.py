"""The hand-off's own small database: the outbox of case reports and the log of platform callbacks.

Its tables are created by this module (SQLAlchemy Core, ``create_all``), in a file of its own —
``sqlite:///DATA_DIR/integration.db`` by default, or PostgreSQL through ``integration.platform.database_url``
— not in the case database, so the hand-off never blocks or migrates it. Times are Unix seconds (UTC).

Reports are claimed with a conditional ``UPDATE`` (a lease: ``next_attempt_at`` moved past the request's
timeout), so two workers on one database never send the same report at once; a worker that dies mid-send
leaves the report to be retried when the lease runs out.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    Engine,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError

from nonsite.integration.platform import CaseReport, idempotency_key

__all__ = ["Delivery", "DeliveryState", "HandoffStore", "default_url"]

metadata = MetaData()

reports = Table(
    "platform_reports", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("platform", String(32), nullable=False),
    Column("idempotency_key", String(96), nullable=False),
    Column("case_number", String(40), nullable=False, index=True),
    Column("revision", Integer, nullable=False),
    Column("report", Text, nullable=False, comment="CaseReport JSON (rendered afresh at each attempt)"),
    Column("state", String(12), nullable=False, comment="pending | delivered | dead"),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", Float, nullable=False),
    Column("last_status", Integer, nullable=True, comment="HTTP status of the last answer"),
    Column("last_error", Text, nullable=False, default=""),
    Column("duplicate", Boolean, nullable=False, default=False, comment="the platform answered 409 (already had it)"),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("delivered_at", Float, nullable=True),
    UniqueConstraint("platform", "idempotency_key", name="uq_platform_reports_key"),
    Index("ix_platform_reports_due", "platform", "state", "next_attempt_at"),
)

callbacks = Table(
    "platform_callbacks", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("platform", String(32), nullable=False),
    Column("event_id", String(128), nullable=False),
    Column("case_number", String(40), nullable=False),
    Column("status", String(64), nullable=False),
    Column("received_at", Float, nullable=False),
    UniqueConstraint("platform", "event_id", name="uq_platform_callbacks_event"),
)


class DeliveryState(enum.StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    DEAD = "dead"


@dataclass(frozen=True)
class Delivery:
    """One report in the outbox, as an admin sees it."""

    id: int
    platform: str
    idempotency_key: str
    case_number: str
    revision: int
    report: CaseReport
    state: DeliveryState
    attempts: int
    next_attempt_at: float
    last_status: int | None
    last_error: str
    duplicate: bool
    created_at: float
    delivered_at: float | None

    @classmethod
    def of(cls, row: Any) -> Delivery:
        m = row._mapping
        return cls(id=m["id"], platform=m["platform"], idempotency_key=m["idempotency_key"],
                   case_number=m["case_number"], revision=m["revision"],
                   report=CaseReport.model_validate_json(m["report"]), state=DeliveryState(m["state"]),
                   attempts=m["attempts"], next_attempt_at=m["next_attempt_at"], last_status=m["last_status"],
                   last_error=m["last_error"], duplicate=bool(m["duplicate"]), created_at=m["created_at"],
                   delivered_at=m["delivered_at"])


def default_url(data_dir: str | Path) -> str:
    return f"sqlite:///{Path(data_dir).resolve() / 'integration.db'}"


def _engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() != "sqlite":
        return create_engine(parsed, pool_pre_ping=True)
    database = parsed.database or ""
    if database and database != ":memory:":
        Path(database).expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(parsed, connect_args={"check_same_thread": False, "timeout": 30})

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=FULL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    return engine


class HandoffStore:
    """The outbox and callback log (thread-safe: every call is its own short transaction)."""

    def __init__(self, url: str) -> None:
        self.engine = _engine(url)
        metadata.create_all(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    # -- reports ---------------------------------------------------------------------------------------

    def enqueue(self, platform: str, report: CaseReport, revision: int, now: float) -> bool:
        """Queue ``report`` at ``revision``; False when this platform already has that key (nothing changes)."""
        row = {"platform": platform, "idempotency_key": idempotency_key(report.number, revision),
               "case_number": report.number, "revision": int(revision), "report": report.model_dump_json(),
               "state": DeliveryState.PENDING.value, "attempts": 0, "next_attempt_at": now, "last_error": "",
               "duplicate": False, "created_at": now, "updated_at": now}
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(reports).values(**row))
        except IntegrityError:
            return False
        return True

    def claim_due(self, platform: str, now: float, lease_s: float, limit: int = 20) -> list[Delivery]:
        """Pending reports due by ``now``, oldest due first, each leased to the caller for ``lease_s``."""
        with self.engine.begin() as conn:
            ids = conn.scalars(
                select(reports.c.id).where(reports.c.platform == platform,
                                           reports.c.state == DeliveryState.PENDING.value,
                                           reports.c.next_attempt_at <= now)
                .order_by(reports.c.next_attempt_at, reports.c.id).limit(limit)
            ).all()
        claimed: list[Delivery] = []
        for rid in ids:
            with self.engine.begin() as conn:
                res = conn.execute(
                    update(reports).where(reports.c.id == rid, reports.c.state == DeliveryState.PENDING.value,
                                          reports.c.next_attempt_at <= now)
                    .values(next_attempt_at=now + lease_s, updated_at=now)
                )
                if res.rowcount == 1:
                    claimed.append(Delivery.of(conn.execute(select(reports).where(reports.c.id == rid)).one()))
        return claimed

    def _set(self, delivery_id: int, **values: Any) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(reports).where(reports.c.id == delivery_id).values(**values))

    def mark_delivered(self, delivery_id: int, *, attempts: int, status: int, duplicate: bool, now: float) -> None:
        self._set(delivery_id, state=DeliveryState.DELIVERED.value, attempts=attempts, last_status=status,
                  duplicate=duplicate, delivered_at=now, updated_at=now, last_error="")

    def mark_retry(self, delivery_id: int, *, attempts: int, next_at: float, error: str, status: int | None,
                   now: float) -> None:
        self._set(delivery_id, attempts=attempts, next_attempt_at=next_at, last_error=error[:2000],
                  last_status=status, updated_at=now)

    def mark_dead(self, delivery_id: int, *, attempts: int, error: str, status: int | None, now: float) -> None:
        self._set(delivery_id, state=DeliveryState.DEAD.value, attempts=attempts, last_error=error[:2000],
                  last_status=status, updated_at=now)

    def get(self, delivery_id: int) -> Delivery | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(reports).where(reports.c.id == delivery_id)).one_or_none()
        return Delivery.of(row) if row is not None else None

    def deliveries(self, platform: str, state: DeliveryState | None = None, limit: int = 100,
             case_number: str | None = None) -> list[Delivery]:
        stmt = select(reports).where(reports.c.platform == platform)
        if state is not None:
            stmt = stmt.where(reports.c.state == state.value)
        if case_number is not None:
            stmt = stmt.where(reports.c.case_number == case_number)
        with self.engine.connect() as conn:
            rows = conn.execute(stmt.order_by(reports.c.id).limit(limit)).all()
        return [Delivery.of(r) for r in rows]

    def requeue(self, platform: str, ids: Sequence[int] | None, now: float) -> int:
        """Dead reports (those of ``ids``, or all when None) back to pending, due now, attempts reset."""
        stmt = update(reports).where(reports.c.platform == platform, reports.c.state == DeliveryState.DEAD.value)
        if ids is not None:
            stmt = stmt.where(reports.c.id.in_(list(ids)))
        with self.engine.begin() as conn:
            res = conn.execute(stmt.values(state=DeliveryState.PENDING.value, attempts=0, next_attempt_at=now,
                                           updated_at=now))
        return int(res.rowcount or 0)

    def counts(self, platform: str) -> dict[str, int]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(reports.c.state, func.count()).where(reports.c.platform == platform)
                                .group_by(reports.c.state)).all()
        out = {s.value: 0 for s in DeliveryState}
        out.update({str(s): int(n) for s, n in rows})
        return out

    # -- callbacks -------------------------------------------------------------------------------------

    def claim_callback(self, platform: str, event_id: str, case_number: str, status: str, now: float) -> bool:
        """Record a platform event id; False when it was already recorded (a duplicate delivery)."""
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(callbacks).values(platform=platform, event_id=event_id, case_number=case_number,
                                                      status=status, received_at=now))
        except IntegrityError:
            return False
        return True

    def release_callback(self, platform: str, event_id: str) -> None:
        """Forget an event id whose action could not be applied (the platform's retry is then taken)."""
        with self.engine.begin() as conn:
            conn.execute(callbacks.delete().where(callbacks.c.platform == platform, callbacks.c.event_id == event_id))

    def callback_log(self, platform: str, case_number: str) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(callbacks).where(callbacks.c.platform == platform,
                                                        callbacks.c.case_number == case_number)
                                .order_by(callbacks.c.id)).all()
        return [dict(r._mapping) for r in rows]
