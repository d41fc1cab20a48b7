"""The case database: SQLAlchemy 2.0 models and :func:`open_db`.

SQLite is the default (embedded mode; WAL journal, foreign keys on, writers serialised with
``BEGIN IMMEDIATE`` so a read-then-write transaction never fails half way); PostgreSQL slots in
through the URL (later with Alembic migrations). Every timestamp is stored and returned in UTC.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    Dialect,
    Engine,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    TypeDecorator,
    create_engine,
    event,
    select,
    update,
)
from sqlalchemy import Enum as SqlEnum
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship, sessionmaker
from sqlalchemy.pool import StaticPool

__all__ = [
    "AuditEntry",
    "Base",
    "Case",
    "CaseSequence",
    "CaseStatus",
    "OutboxMessage",
    "allocate_number",
    "case_by_number",
    "open_db",
    "write_session",
]

_WRITE_OPTION = "nonsite_write"


def utcnow() -> datetime:
    return datetime.now(UTC)


class UtcDateTime(TypeDecorator[datetime]):
    """A timezone-aware datetime stored as UTC (SQLite has no zone; PostgreSQL gets timestamptz)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the case database; pass a UTC-aware datetime")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class CaseStatus(enum.StrEnum):
    """Status of a case (DESIGN: draft → confirmed → approved | returned | dismissed → dispatched → …)."""

    DRAFT = "draft"
    CONFIRMED = "confirmed"
    APPROVED = "approved"
    RETURNED = "returned"
    DISMISSED = "dismissed"
    DISPATCHED = "dispatched"
    RECTIFIED = "rectified"
    CLOSED = "closed"


class Base(DeclarativeBase):
    pass


_status_type = SqlEnum(
    CaseStatus,
    name="case_status",
    native_enum=False,
    create_constraint=True,
    length=16,
    values_callable=lambda e: [m.value for m in e],
    validate_strings=True,
)


class Case(Base):
    """A case drafted from one sealed evidence package (one per violation event)."""

    __tablename__ = "cases"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    number: Mapped[str] = mapped_column(String(40), unique=True, comment="<prefix>-<year>-<6-digit seq>")
    event_id: Mapped[str] = mapped_column(String(64), unique=True, comment="Violation event id (idempotency)")
    type: Mapped[str] = mapped_column(String(64), index=True)
    camera_id: Mapped[str] = mapped_column(String(128), index=True)
    camera_name: Mapped[str] = mapped_column(String(256), default="")
    zone_id: Mapped[str] = mapped_column(String(128))
    zone_name: Mapped[str] = mapped_column(String(256), default="")
    address: Mapped[str] = mapped_column(String(512), default="")
    lat: Mapped[float | None] = mapped_column(Float, nullable=True)
    lon: Mapped[float | None] = mapped_column(Float, nullable=True)
    started_at: Mapped[datetime] = mapped_column(UtcDateTime)
    confirmed_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    dwell_s: Mapped[float] = mapped_column(Float)
    confidence: Mapped[float] = mapped_column(Float)
    track_ids: Mapped[list[int]] = mapped_column(JSON, default=list)
    evidence: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list, comment="EvidenceItem dicts")
    manifest_key: Mapped[str] = mapped_column(String(512))
    manifest_sha256: Mapped[str] = mapped_column(String(64))
    signature_key: Mapped[str] = mapped_column(String(512), default="")
    seal_problems: Mapped[list[str]] = mapped_column(JSON, default=list)
    thumbnail_key: Mapped[str | None] = mapped_column(String(512), nullable=True)
    violation: Mapped[dict[str, Any]] = mapped_column(
        JSON, default=dict, comment="The violation event as sealed (boxes, model, rule config hash)"
    )
    status: Mapped[CaseStatus] = mapped_column(_status_type, default=CaseStatus.DRAFT, index=True)
    dismiss_reason: Mapped[str | None] = mapped_column(String(32), nullable=True)
    dismiss_note: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)

    audit: Mapped[list[AuditEntry]] = relationship(
        back_populates="case", order_by="AuditEntry.id", viewonly=True
    )

    def __repr__(self) -> str:
        return f"Case({self.number!r}, {self.type!r}, {self.status.value!r})"


class AuditEntry(Base):
    """Append-only audit trail: who did what to which case, when (updates and deletes are refused)."""

    __tablename__ = "audit_entries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id", ondelete="RESTRICT"), index=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    actor: Mapped[str] = mapped_column(String(128))
    action: Mapped[str] = mapped_column(String(32))
    before_status: Mapped[str | None] = mapped_column(String(16), nullable=True)
    after_status: Mapped[str | None] = mapped_column(String(16), nullable=True)
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)

    case: Mapped[Case] = relationship(back_populates="audit", viewonly=True)


class CaseSequence(Base):
    """Last case number handed out per prefix and year (advanced inside the drafting transaction)."""

    __tablename__ = "case_sequences"

    prefix: Mapped[str] = mapped_column(String(12), primary_key=True)
    year: Mapped[int] = mapped_column(Integer, primary_key=True)
    last: Mapped[int] = mapped_column(Integer)


class OutboxMessage(Base):
    """Transactional outbox: bus messages written with the state change, relayed after commit."""

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    topic: Mapped[str] = mapped_column(String(128))
    key: Mapped[str] = mapped_column(String(256))
    value: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    published_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True, index=True)


@event.listens_for(AuditEntry, "before_update")
def _refuse_audit_update(mapper: Any, connection: Any, target: AuditEntry) -> None:
    raise PermissionError("audit entries are append-only; write a new entry instead of changing one")


@event.listens_for(AuditEntry, "before_delete")
def _refuse_audit_delete(mapper: Any, connection: Any, target: AuditEntry) -> None:
    raise PermissionError("audit entries are append-only and cannot be deleted")


_SQLITE_TRIGGERS = (
    "CREATE TRIGGER IF NOT EXISTS audit_entries_no_update BEFORE UPDATE ON audit_entries "
    "BEGIN SELECT RAISE(ABORT, 'audit entries are append-only'); END",
    "CREATE TRIGGER IF NOT EXISTS audit_entries_no_delete BEFORE DELETE ON audit_entries "
    "BEGIN SELECT RAISE(ABORT, 'audit entries are append-only'); END",
)


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event below decide how transactions start (pysqlite's own
        # implicit BEGIN is deferred and would make a read-then-write transaction fail on contention).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=FULL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        write = conn.get_execution_options().get(_WRITE_OPTION, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def open_db(url: str) -> sessionmaker[Session]:
    """Open (and create the tables of) the case database at SQLAlchemy ``url``.

    ``sqlite:///path/cases.db`` creates the folder when missing. Sessions keep loaded objects usable
    after commit (``expire_on_commit=False``), so functions can return detached cases.
    """
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ValueError(
            f"case database URL {url!r} is not a SQLAlchemy URL; use e.g. sqlite:///data/cases.db"
        ) from None
    kwargs: dict[str, Any] = {}
    is_sqlite = parsed.get_backend_name() == "sqlite"
    if is_sqlite:
        database = parsed.database or ""
        if database in ("", ":memory:") or database.startswith("file::memory:"):
            kwargs.update(poolclass=StaticPool, connect_args={"check_same_thread": False})
        else:
            folder = Path(database).expanduser().resolve().parent
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ValueError(
                    f"cannot create the folder {folder} of the case database ({exc.strerror}); "
                    "set cases.database_url to a writable place"
                ) from None
            kwargs.update(connect_args={"check_same_thread": False, "timeout": 30})
    engine = create_engine(parsed, **kwargs)
    if is_sqlite:
        _configure_sqlite(engine)
    Base.metadata.create_all(engine)
    if is_sqlite:
        with engine.begin() as conn:
            for ddl in _SQLITE_TRIGGERS:
                conn.exec_driver_sql(ddl)
    return sessionmaker(bind=engine, expire_on_commit=False)


@contextmanager
def write_session(session_factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session whose transaction holds the write lock from its start, committed on success.

    On SQLite the transaction begins with ``BEGIN IMMEDIATE`` (writers queue instead of failing
    half way); other databases use row locks (``SELECT … FOR UPDATE``) where it matters.
    """
    with session_factory() as session:
        session.connection(execution_options={_WRITE_OPTION: True})
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


def allocate_number(session: Session, prefix: str, year: int) -> str:
    """The next case number ``<prefix>-<year>-<6-digit seq>`` in the caller's transaction.

    The counter row is advanced with one ``UPDATE … RETURNING`` (a row lock until commit), so a
    rolled-back transaction gives its number back: numbers have no gaps and no duplicates.
    """
    stmt = (
        update(CaseSequence)
        .where(CaseSequence.prefix == prefix, CaseSequence.year == year)
        .values(last=CaseSequence.last + 1)
        .returning(CaseSequence.last)
    )
    seq = session.execute(stmt).scalar_one_or_none()
    if seq is None:
        try:
            with session.begin_nested():
                session.add(CaseSequence(prefix=prefix, year=year, last=1))
            seq = 1
        except IntegrityError:  # another transaction created the row first
            seq = session.execute(stmt).scalar_one()
    if seq > 999_999:
        raise OverflowError(f"case numbers for {prefix}-{year} are exhausted (more than 999999 cases)")
    return f"{prefix}-{year}-{seq:06d}"


def case_by_number(session: Session, number: str) -> Case | None:
    return session.scalar(select(Case).where(Case.number == number))
