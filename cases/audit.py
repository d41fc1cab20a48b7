"""The audit trail as a hash chain: tamper-evident even for someone who can drop the append-only triggers.

Every audit entry carries its position in the chain (``chain_seq``), the hash of the entry before it
(``prev_hash``) and its own hash (``entry_hash``: sha256 over its content and ``prev_hash``, see
:func:`entry_digest`). Entries are chained when they are written (a ``before_flush`` hook, under a row lock on
the chain head, so concurrent writers extend one chain). :func:`verify_chain` recomputes the chain and names
every row that was edited, removed or written around it.

Someone who rewrites a row *and* recomputes every later hash and the head leaves a consistent chain; the
anchor against that is a signed checkpoint kept outside the database (``nonsite cases audit checkpoint``,
daily: the chain's position and hash, signed with the sealer's key, in the evidence store).
:func:`verify_checkpoint` checks the chain still holds the checkpointed hash at that position.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import event, select
from sqlalchemy.orm import Session, sessionmaker

from nonsite.cases.db import AuditChain, AuditEntry, utcnow

GENESIS = "0" * 64
#: Version of the hashed form (part of what is hashed).
CHAIN_VERSION = 1
CHECKPOINTS = "audit/checkpoints/"


def _iso(at: datetime | str) -> str:
    """A timestamp as hashed: UTC, microseconds, ``Z`` (SQLite hands back text, PostgreSQL a datetime)."""
    if isinstance(at, str):
        at = datetime.fromisoformat(at)
    at = at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
    return at.isoformat(timespec="microseconds").replace("+00:00", "Z")


def entry_digest(*, seq: int, prev_hash: str, case_id: int, at: datetime | str, actor: str, action: str,
                 before_status: str | None, after_status: str | None, detail: Any, team: str | None = None,
                 photos: list[str] | str | None = None) -> str:
    """sha256 hex of one entry's canonical JSON form (sorted keys, UTF-8), ``prev_hash`` included.

    The dispatch team and the feedback photos (columns of their own) are part of the hashed form when set."""
    if isinstance(detail, str | bytes):
        detail = json.loads(detail)
    if isinstance(photos, str | bytes):
        photos = json.loads(photos)
    body = {"v": CHAIN_VERSION, "seq": seq, "prev": prev_hash, "case_id": case_id, "at": _iso(at), "actor": actor,
            "action": action, "before": before_status, "after": after_status, "detail": detail}
    if team is not None:
        body["team"] = team
    if photos is not None:
        body["photos"] = photos
    data = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(data.encode("utf-8")).hexdigest()


def _digest_of(entry: AuditEntry, seq: int, prev_hash: str) -> str:
    return entry_digest(seq=seq, prev_hash=prev_hash, case_id=entry.case_id, at=entry.at, actor=entry.actor,
                        action=entry.action, before_status=entry.before_status, after_status=entry.after_status,
                        detail=entry.detail if entry.detail is not None else {}, team=entry.team,
                        photos=entry.photos)


@event.listens_for(Session, "before_flush")
def _chain_new_entries(session: Session, flush_context: object, instances: object) -> None:
    """Give each new audit entry its chain position and hashes, advancing the head row (locked)."""
    new = [o for o in session.new if isinstance(o, AuditEntry)]
    if not new:
        return
    now = utcnow()
    new.sort(key=lambda o: o.at or now)
    head = session.execute(select(AuditChain).where(AuditChain.id == 1).with_for_update()
                           .execution_options(populate_existing=True)).scalar_one_or_none()
    if head is None:
        head = AuditChain(id=1, seq=0, head_hash=GENESIS)
        session.add(head)
    for entry in new:
        if entry.at is None:
            entry.at = utcnow()
        if entry.detail is None:
            entry.detail = {}
        seq = head.seq + 1
        entry.chain_seq, entry.prev_hash = seq, head.head_hash
        entry.entry_hash = _digest_of(entry, seq, head.head_hash)
        head.seq, head.head_hash = seq, entry.entry_hash


@dataclass(frozen=True)
class ChainReport:
    entries: int
    head_seq: int
    head_hash: str
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems


def _describe(e: AuditEntry) -> str:
    return f"row id {e.id} (case id {e.case_id}, {e.action} by {e.actor} at {_iso(e.at)})"


def verify_chain(session_factory: sessionmaker[Session]) -> ChainReport:
    """Recompute the chain: every row edited (content no longer matches its hash), removed (a gap, or a row
    that no longer follows its predecessor, or rows missing at the end) or written around the chain."""
    problems: list[str] = []
    with session_factory() as s:
        rows = list(s.scalars(select(AuditEntry).order_by(AuditEntry.chain_seq, AuditEntry.id)))
        head = s.get(AuditChain, 1)
    prev_hash, expected, last = GENESIS, 1, None
    for e in rows:
        if e.chain_seq is None or e.entry_hash is None or e.prev_hash is None:
            problems.append(f"{_describe(e)}: not in the chain (written around it, or its chain fields erased)")
            continue
        if e.chain_seq != expected:
            where = f"after {_describe(last)}" if last is not None else "at the start"
            problems.append(f"chain position(s) {expected}..{e.chain_seq - 1} missing: row(s) removed {where}, "
                            f"before {_describe(e)}")
        elif e.prev_hash != prev_hash:
            what = _describe(last) if last is not None else "the first row"
            problems.append(f"{_describe(e)} does not follow {what}: that row was changed or replaced")
        if _digest_of(e, e.chain_seq, e.prev_hash) != e.entry_hash:
            problems.append(f"{_describe(e)}: edited (its content no longer matches its hash)")
        prev_hash, expected, last = e.entry_hash, e.chain_seq + 1, e
    head_seq = head.seq if head is not None else 0
    head_hash = head.head_hash if head is not None else GENESIS
    if head_seq != expected - 1 or (head is not None and head_hash != prev_hash):
        problems.append(f"the chain head says {head_seq} entries (hash {head_hash[:16]}...), the rows end at "
                        f"{expected - 1}: rows at the end were removed, or the head was changed")
    return ChainReport(len(rows), head_seq, head_hash, problems)


def checkpoint_record(report: ChainReport, now: datetime | None = None) -> dict[str, Any]:
    """What a checkpoint states: the chain's position and hash at a time."""
    return {"kind": "nonsite audit checkpoint", "seq": report.head_seq, "head_hash": report.head_hash,
            "at": _iso(now or utcnow())}


def verify_checkpoint(session_factory: sessionmaker[Session], record: dict[str, Any]) -> str | None:
    """Why the chain no longer holds what ``record`` (a signed checkpoint) states, or None."""
    seq, want = int(record.get("seq", -1)), str(record.get("head_hash", ""))
    if seq == 0:
        return None
    with session_factory() as s:
        e = s.scalar(select(AuditEntry).where(AuditEntry.chain_seq == seq))
    if e is None:
        return f"checkpoint of {record.get('at')}: chain position {seq} is gone (rows removed)"
    if e.entry_hash != want:
        return (f"checkpoint of {record.get('at')}: chain position {seq} ({_describe(e)}) has hash "
                f"{(e.entry_hash or '')[:16]}..., the signed checkpoint {want[:16]}...: the chain up to it was "
                "rewritten")
    return None
