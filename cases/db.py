"""The case database: SQLAlchemy 2.0 models and :func:`open_db`.

SQLite is the default (embedded mode; WAL journal, foreign keys on, writers serialised with
``BEGIN IMMEDIATE`` so a read-then-write transaction never fails half way); PostgreSQL (distributed
mode) slots in through the URL. The schema is created and upgraded by the Alembic migrations shipped in
``cases/migrations`` (:func:`open_db` runs them to head). Every timestamp is stored and returned in UTC.
"""

from __future__ import annotations

import enum
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Dialect,
    Engine,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    create_engine,
    event,
    false,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy import Enum as SqlEnum
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, OperationalError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship, sessionmaker
from sqlalchemy.pool import StaticPool

from nonsite.config.files import private_file
from nonsite.config.loader import ConfigError

__all__ = [
    "DECISIONS",
    "DISPOSITIONS",
    "LINK_KINDS",
    "ApiToken",
    "AuditEntry",
    "Base",
    "Case",
    "CaseLink",
    "CaseRecheck",
    "CaseSequence",
    "CaseStatus",
    "ConfigChange",
    "ConsoleSession",
    "DatabaseSchemaError",
    "Notification",
    "OutboxMessage",
    "Supervision",
    "User",
    "allocate_number",
    "case_by_number",
    "head_revision",
    "migrate",
    "normalise_url",
    "open_db",
    "schema_revision",
    "write_session",
]

#: Suggested dispositions of a draft (from the legal-basis catalogue's discretion table).
DISPOSITIONS: tuple[str, ...] = ("warning", "penalty", "dispatch", "manual")
#: What the legal reviewer decides with the approval (首违不罚 warning, a fine, no penalty, transfer elsewhere).
DECISIONS: tuple[str, ...] = ("warning", "penalty", "no_penalty", "transfer")
#: How two cases are linked as possible repeats: the same zone of the same camera, or the same plate.
LINK_KINDS: tuple[str, ...] = ("same_zone", "same_plate")

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


#: The open cases (neither closed nor dismissed) as SQL, word for word the condition of the partial index
#: ``ix_cases_open`` (migration 0007): a query that says exactly this reads that index.
OPEN_SQL = "status NOT IN ('closed', 'dismissed')"


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
    # Added by migration 0002.
    offender_plate: Mapped[str | None] = mapped_column(
        String(32), nullable=True, index=True, comment="Plate text as read (normalised), when one was read"
    )
    offender_hint: Mapped[dict[str, Any] | None] = mapped_column(
        JSON, nullable=True, comment="The violation's OffenderHint (plate, confidence, format, crop role)"
    )
    repeat_count: Mapped[int] = mapped_column(
        Integer, default=0, server_default="0", comment="Earlier linked cases that count as repeats"
    )
    suggested_disposition: Mapped[str] = mapped_column(
        String(16), default="manual", server_default="manual", index=True,
        comment="warning | penalty | dispatch | manual (from the discretion table)",
    )
    disposition: Mapped[dict[str, Any]] = mapped_column(
        JSON, default=dict, server_default=text("'{}'"),
        comment="The discretion rule that matched: rule id, basis, dispatch team, summary",
    )
    legal_basis: Mapped[dict[str, Any]] = mapped_column(
        JSON, default=dict, server_default=text("'{}'"),
        comment="Snapshot of the catalogue entry applied when drafted (provisions, penalty, version)",
    )
    dispatched_to: Mapped[str] = mapped_column(
        String(256), default="", server_default="", comment="Team the case was dispatched to"
    )
    # Added by migration 0006_bureau (issue 14).
    team: Mapped[str | None] = mapped_column(
        String(64), nullable=True, comment="Team id the case is routed to (organisation file; reassign changes it)")
    grid: Mapped[str | None] = mapped_column(String(64), nullable=True, comment="Grid id of the camera when routed")
    street: Mapped[str | None] = mapped_column(String(64), nullable=True, comment="Street id of that grid")
    due_at: Mapped[datetime | None] = mapped_column(
        UtcDateTime, nullable=True, comment="First late instant of the current step (UTC; null: no limit)")
    step_started_at: Mapped[datetime | None] = mapped_column(
        UtcDateTime, nullable=True, comment="When the case entered its current step (UTC)")
    due_soon_at: Mapped[datetime | None] = mapped_column(
        UtcDateTime, nullable=True, comment="From this instant the step is due soon (UTC)")
    due_step: Mapped[str | None] = mapped_column(
        String(16), nullable=True, comment="The step due_at belongs to (confirm | review | dispatch | rectify | close)")

    decision: Mapped[str | None] = mapped_column(
        String(16), nullable=True, comment="The reviewer's decision: warning | penalty | no_penalty | transfer")
    decision_amount_yuan: Mapped[int | None] = mapped_column(
        Integer, nullable=True, comment="The fine of a penalty decision (within the catalogue's range)")
    decision_reason: Mapped[str] = mapped_column(
        Text, default="", server_default="", comment="Why (required for no_penalty)")
    # Added by migration 0007_notifications.
    finish_due: Mapped[datetime | None] = mapped_column(
        UtcDateTime, nullable=True, comment="限时办结: when the whole case must be finished (UTC; from confirmation)")
    # Added by migration 0010_recheck.
    recheck_state: Mapped[str | None] = mapped_column(
        String(16), nullable=True,
        comment="The newest camera re-check: pending | clear | present | unavailable (null: none requested)")

    audit: Mapped[list[AuditEntry]] = relationship(
        back_populates="case", order_by="AuditEntry.id", viewonly=True
    )

    __table_args__ = (
        Index("ix_cases_team_status_due", "team", "status", "due_at"),
        Index("ix_cases_status_due", "status", "due_at"),
        Index("ix_cases_due_order", text("(due_at IS NULL)"), "due_at", "id"),
        Index("ix_cases_confirmed_type", "confirmed_at", "type"),
        Index("ix_cases_confirmed_team", "confirmed_at", "team"),
        Index("ix_cases_open", "team", "status", "due_at", "due_soon_at",
              sqlite_where=text(OPEN_SQL), postgresql_where=text(OPEN_SQL)),
        # 0009_stats: the statistics page and the overdue report.
        Index("ix_cases_camera_place", "camera_id", "camera_name", "lat", "lon"),
        Index("ix_cases_updated_at", "updated_at"),
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
    # Added by migration 0003_note_columns: structured fields, never parsed from the note's text.
    team: Mapped[str | None] = mapped_column(String(256), nullable=True, comment="Team a dispatch went to")
    photos: Mapped[list[str] | None] = mapped_column(
        JSON, nullable=True, comment="sha256 of each feedback photo of a rectification"
    )
    chain_seq: Mapped[int | None] = mapped_column(
        Integer, nullable=True, comment="Position in the audit hash chain (1, 2, ...; set when written)")
    prev_hash: Mapped[str | None] = mapped_column(
        String(64), nullable=True, comment="entry_hash of the previous entry of the chain (64 zeros for the first)")
    entry_hash: Mapped[str | None] = mapped_column(
        String(64), nullable=True, comment="sha256 over this entry's content and prev_hash (nonsite.cases.audit)")

    case: Mapped[Case] = relationship(back_populates="audit", viewonly=True)

    __table_args__ = (
        Index("ix_audit_entries_chain_seq", "chain_seq", unique=True),
        Index("ix_audit_entries_case_status_at", "case_id", "after_status", "at"),  # 0009_stats
    )


class AuditChain(Base):
    """The head of the audit hash chain (one row): the last position and hash, advanced under a row lock by
    every transaction that writes audit entries, so concurrent writers extend one chain."""

    __tablename__ = "audit_chain"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, comment="chain_seq of the last entry (0: none yet)")
    head_hash: Mapped[str] = mapped_column(String(64), comment="entry_hash of the last entry")


class Supervision(Base):
    """A supervision order (督办) on a case: a supervisor's instruction and new deadline, the team's answer."""

    __tablename__ = "supervisions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id", ondelete="RESTRICT"), index=True)
    instruction: Mapped[str] = mapped_column(Text, comment="What the supervisor orders (督办意见)")
    new_deadline: Mapped[datetime | None] = mapped_column(
        UtcDateTime, nullable=True, comment="The deadline the order sets (UTC)")
    issued_by: Mapped[str] = mapped_column(String(128))
    issued_at: Mapped[datetime] = mapped_column(UtcDateTime)
    answered_by: Mapped[str | None] = mapped_column(String(128), nullable=True)
    answered_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    answer: Mapped[str] = mapped_column(Text, default="", server_default="")

    @property
    def open(self) -> bool:
        return self.answered_at is None


class Notification(Base):
    """A reminder or escalation for one user (the console's bell); unique per notice key and recipient, so the
    reminder job stores — and sends — each notice once, even with two jobs running (migration 0007)."""

    __tablename__ = "notifications"
    __table_args__ = (
        UniqueConstraint("key", "recipient", name="uq_notifications_key_recipient"),
        Index("ix_notifications_recipient_read", "recipient", "read_at", "id"),
        Index("ix_notifications_case", "case_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(200), comment="The planner's notice key: case|step|due instant|kind|level")
    recipient: Mapped[str] = mapped_column(String(128), comment="Console user name it is for")
    copy: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false(),
                                       comment="True: in copy (the assignee of an escalation)")
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id", ondelete="RESTRICT"))
    case_number: Mapped[str] = mapped_column(String(40))
    team: Mapped[str | None] = mapped_column(
        String(64), nullable=True, comment="The case's team when the notice was planned")
    kind: Mapped[str] = mapped_column(String(16), comment="reminder | escalation")
    step: Mapped[str] = mapped_column(String(16))
    level: Mapped[int] = mapped_column(Integer)
    due_at: Mapped[datetime] = mapped_column(UtcDateTime, comment="The deadline it is about (UTC)")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    read_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)


class ConfigChange(Base):
    """An edit of a configuration file in the console (the organisation, ``/admin/organisation``): who, when, the
    hashes before and after, and the text saved (migration 0007)."""

    __tablename__ = "config_changes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    actor: Mapped[str] = mapped_column(String(128))
    what: Mapped[str] = mapped_column(String(32), comment="Which file: organisation")
    path: Mapped[str] = mapped_column(String(1024))
    before_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    after_sha256: Mapped[str] = mapped_column(String(64))
    after_text: Mapped[str] = mapped_column(Text, comment="The file as saved")
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class CaseLink(Base):
    """A possible repeat: ``case_id`` (the later case) is linked to the earlier ``linked_case_id``."""

    __tablename__ = "case_links"
    __table_args__ = (UniqueConstraint("case_id", "linked_case_id", "kind", name="uq_case_links"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"), index=True)
    linked_case_id: Mapped[int] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16), comment="same_zone | same_plate")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class CaseRecheck(Base):
    """A camera re-check of a rectified case (migration 0010, docs/recheck.md): the request, and the after package
    that answered it (sealed and signed like every evidence package)."""

    __tablename__ = "case_rechecks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id", ondelete="RESTRICT"), index=True)
    request_id: Mapped[str] = mapped_column(
        String(128), unique=True, comment="RecheckRequest.request_id (= the after package's event id)")
    camera_id: Mapped[str] = mapped_column(String(128))
    zone_id: Mapped[str] = mapped_column(String(128))
    classes: Mapped[list[str]] = mapped_column(JSON, default=list, comment="Detector classes looked for")
    boxes_px: Mapped[list[list[float]]] = mapped_column(
        JSON, default=list, comment="The original objects' boxes (pixels of the confirm still)")
    clear_s: Mapped[float] = mapped_column(Float)
    timeout_s: Mapped[float] = mapped_column(Float)
    requested_at: Mapped[datetime] = mapped_column(UtcDateTime)
    requested_by: Mapped[str] = mapped_column(String(128), comment="Who reported the case rectified")
    answer_due_at: Mapped[datetime] = mapped_column(
        UtcDateTime, comment="With no answer by then the re-check counts as unavailable (timeout + grace)")
    state: Mapped[str] = mapped_column(String(16), comment="pending | clear | present | unavailable")
    answered_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    observed_at: Mapped[datetime | None] = mapped_column(
        UtcDateTime, nullable=True, comment="The frame (or instant) that decided the outcome")
    after_event_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    after_manifest_key: Mapped[str | None] = mapped_column(String(512), nullable=True)
    after_manifest_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    after_signature_key: Mapped[str | None] = mapped_column(String(512), nullable=True)
    after_evidence: Mapped[list[dict[str, Any]]] = mapped_column(
        JSON, default=list, comment="EvidenceItem dicts of the after package")
    detail: Mapped[dict[str, Any]] = mapped_column(
        JSON, default=dict, comment="The RecheckResult as sealed (or why it counted as unavailable)")


class User(Base):
    """A console user (operator, reviewer or admin); see :mod:`nonsite.cases.users`."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    display_name: Mapped[str] = mapped_column(String(128), default="")
    role: Mapped[str] = mapped_column(String(16), comment="operator | reviewer | admin")
    password_hash: Mapped[str] = mapped_column(String(255), comment="argon2id hash (argon2-cffi)")
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    password_changed_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    last_login_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    unlocked_at: Mapped[datetime | None] = mapped_column(
        UtcDateTime, nullable=True, comment="When an admin last cleared the user's failed logins")
    """When an admin last cleared the user's failed logins (``nonsite users unlock``)."""

    def __repr__(self) -> str:
        return f"User({self.username!r}, {self.role!r}{'' if self.active else ', inactive'})"


class ApiToken(Base):
    """An API token for integrators: only its sha256 is stored; the plaintext is shown once."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True, comment="hex sha256 of the token")
    prefix: Mapped[str] = mapped_column(String(16), comment="First characters of the token, to recognise it")
    role: Mapped[str] = mapped_column(String(16), comment="Role the token acts with: operator | reviewer | admin")
    scopes: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_by: Mapped[str] = mapped_column(String(128), default="")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    last_used_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    owner: Mapped[str | None] = mapped_column(
        String(64), nullable=True, comment="The console user the token acts for (four-eyes counts them as one "
        "person); null: the token is its own identity")
    """The console user the token acts for (its actions are that person's); None: its own identity."""

    @property
    def actor(self) -> str:
        """How the audit trail names what this token did."""
        return f"token:{self.name}"

    def __repr__(self) -> str:
        return f"ApiToken({self.name!r}, {self.role!r}, {self.scopes!r})"


class ConsoleSession(Base):
    """A logged-in console session; the cookie carries its id, only the id's sha256 is stored here."""

    __tablename__ = "console_sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sid_hash: Mapped[str] = mapped_column(
        String(64), unique=True, comment="hex sha256 of the session id in the cookie (the id itself is never stored)")
    username: Mapped[str] = mapped_column(String(64), index=True)
    address: Mapped[str] = mapped_column(String(64), default="", comment="Client address at login")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    end_reason: Mapped[str] = mapped_column(String(32), default="", server_default="",
                                            comment="logout | password_changed | disabled | revoked")


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


def _set_wal(cur: Any, wait_s: float = 30.0) -> None:
    """``PRAGMA journal_mode=WAL``, waiting while another connection holds the write lock.

    On a fresh database file the switch to WAL needs an exclusive lock, and SQLite answers "database is
    locked" at once (its busy handler is not called, to avoid a deadlock) while another opener migrates the
    database in a write transaction; that opener's switch to WAL persists in the file, so a retry succeeds.
    """
    deadline = time.monotonic() + wait_s
    delay = 0.02
    while True:
        try:
            cur.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() + delay > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.5)


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event below decide how transactions start (pysqlite's own
        # implicit BEGIN is deferred and would make a read-then-write transaction fail on contention).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        _set_wal(cur)
        cur.execute("PRAGMA synchronous=FULL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        write = conn.get_execution_options().get(_WRITE_OPTION, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


class DatabaseSchemaError(ConfigError):
    """The case database cannot be reached or brought to this version's schema (the message says why and
    what to do; the command line prints it as one line)."""


#: Where the Alembic environment and the revisions live (shipped as package data).
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
#: The revision that is the walking skeleton's schema (databases made by its ``create_all``).
BASELINE_REVISION = "0001"
#: Key of the PostgreSQL advisory lock that serialises concurrent migrators.
_PG_MIGRATION_LOCK = 0x6E6F6E73  # "nons"


def normalise_url(url: str) -> str:
    """``url`` with PostgreSQL pointed at the installed driver (psycopg 3); a clear error if not a URL."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ValueError(
            f"case database URL {url!r} is not a SQLAlchemy URL; use e.g. sqlite:///data/cases.db "
            "or postgresql://user@host/dbname"
        ) from None
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def _alembic_config(connection: Any) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str:
    """The newest revision the shipped migrations know."""
    from alembic.script import ScriptDirectory

    return str(ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head())


def schema_revision(engine: Engine) -> str | None:
    """The Alembic revision the database is at (None: never migrated)."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def migrate(engine: Engine, revision: str = "head") -> tuple[str | None, str]:
    """Upgrade the database to ``revision`` (default: the newest); returns (before, after).

    Runs in one transaction holding a lock (PostgreSQL: an advisory lock; SQLite: ``BEGIN IMMEDIATE``),
    so processes that open the same database at once migrate it once. A database made by the walking
    skeleton (tables but no ``alembic_version``) is stamped at the baseline revision first.
    """
    from alembic import command
    from alembic.runtime.migration import MigrationContext
    from alembic.util import CommandError

    url = engine.url.render_as_string(hide_password=True)
    try:
        with engine.connect().execution_options(**{_WRITE_OPTION: True}) as conn, conn.begin():
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_MIGRATION_LOCK})
            before = MigrationContext.configure(conn).get_current_revision()
            cfg = _alembic_config(conn)
            if before is None and inspect(conn).has_table("cases"):
                command.stamp(cfg, BASELINE_REVISION)
                before = BASELINE_REVISION
            command.upgrade(cfg, revision)
            after = MigrationContext.configure(conn).get_current_revision()
    except CommandError as exc:
        raise DatabaseSchemaError(
            f"cannot migrate the case database at {url}: {exc}; if it was made by a newer nonsite, "
            "run that version (or restore a backup)"
        ) from None
    except OperationalError as exc:
        raise DatabaseSchemaError(
            f"cannot reach the case database at {url} ({str(exc.orig).strip().splitlines()[0]}); "
            "check cases.database_url and that the server is running"
        ) from None
    return before, str(after)


def open_db(url: str, *, upgrade: bool = True) -> sessionmaker[Session]:
    """Open the case database at SQLAlchemy ``url`` and bring its schema to the newest revision.

    ``sqlite:///path/cases.db`` creates the folder when missing; ``postgresql://user@host/db`` uses
    psycopg 3. Sessions keep loaded objects usable after commit (``expire_on_commit=False``), so
    functions can return detached cases. ``upgrade=False`` opens without migrating (for inspection).
    """
    parsed = make_url(normalise_url(url))
    kwargs: dict[str, Any] = {}
    is_sqlite = parsed.get_backend_name() == "sqlite"
    if is_sqlite:
        database = parsed.database or ""
        if database in ("", ":memory:") or database.startswith("file::memory:"):
            kwargs.update(poolclass=StaticPool, connect_args={"check_same_thread": False})
        else:
            folder = Path(database).expanduser().resolve().parent
            try:  # 0600 in a 0700 folder, before SQLite creates it (its WAL and journal files follow)
                private_file(Path(database).expanduser().resolve())
            except OSError as exc:
                raise ValueError(
                    f"cannot create the folder {folder} of the case database ({exc.strerror}); "
                    "set cases.database_url to a writable place"
                ) from None
            kwargs.update(connect_args={"check_same_thread": False, "timeout": 30})
    else:
        kwargs.update(pool_pre_ping=True)
    engine = create_engine(parsed, **kwargs)
    if is_sqlite:
        _configure_sqlite(engine)
    if upgrade:
        try:
            migrate(engine)
        except BaseException:
            engine.dispose()
            raise
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
