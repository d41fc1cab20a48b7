"""The edge's evidence spool: when the evidence store is unreachable, blobs wait on local disk (bounded) and
the violation events that name them wait with them, so an event is never published before its evidence
is in the store (claim-check); spooled packages publish late, not never.

:class:`EdgeEvidence` wraps the store and the bus an edge worker writes to:

- ``edge.store.put`` writes to the store; when that fails it writes the blob to the spool instead (and keeps
  doing so, without waiting on a dead store, until the uploader has emptied the spool);
- ``edge.bus.publish`` of a ``nonsite.violations`` event whose blobs are (partly) in the spool, or while
  earlier events are held back, holds the event back in the spool too;
- an uploader thread retries every ``retry_s``: it uploads the spooled blobs oldest first, then publishes the
  held-back events in order.

The spool is bounded (``evidence.spool.max_bytes``). When a blob does not fit, the write is refused with
a :class:`~nonsite.evidence.store.StoreError`, an ERROR log line naming the key and the fix, and the
``nonsite_evidence_spool_rejected_total`` metric: never a silent drop. Everything survives a restart of the
edge (files fsynced, index in SQLite); the next edge process on the same data directory resumes the upload.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from nonsite.bus.base import Bus, Consumer
from nonsite.bus.events import TOPIC_VIOLATIONS
from nonsite.config.files import PRIVATE_FILE_MODE, private_dir, private_file
from nonsite.evidence.local import check_key, fsync_dir
from nonsite.evidence.metrics import (
    SPOOL_BLOBS,
    SPOOL_BYTES,
    SPOOL_EVENTS,
    SPOOL_FULL,
    SPOOL_MAX_BYTES,
    SPOOL_REJECTED,
    STORE_UP,
    UPLOADED,
)
from nonsite.evidence.store import Store, StoreError

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS blobs (
  seq INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL UNIQUE, sha256 TEXT NOT NULL,
  content_type TEXT NOT NULL, bytes INTEGER NOT NULL, file TEXT NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS events (
  seq INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL,
  created REAL NOT NULL);
"""


class SpoolFullError(StoreError):
    """The store is down and the spool has no room for this blob."""


@dataclass(frozen=True)
class SpooledBlob:
    key: str
    sha256: str
    content_type: str
    bytes: int
    file: str


@dataclass(frozen=True)
class HeldEvent:
    seq: int
    topic: str
    key: str
    value: bytes


class EvidenceSpool:
    """Blobs and held-back events on local disk: ``<dir>/blobs/*`` plus the index ``<dir>/spool.sqlite``."""

    def __init__(self, directory: str | os.PathLike[str], max_bytes: int) -> None:
        self.dir = Path(directory)
        self.blob_dir = self.dir / "blobs"
        private_dir(self.blob_dir)
        self.max_bytes = max_bytes
        SPOOL_MAX_BYTES.set(max_bytes)
        self._lock_fd = os.open(self.dir / "spool.lock", os.O_RDWR | os.O_CREAT, PRIVATE_FILE_MODE)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise StoreError(f"the evidence spool {self.dir} is in use by another edge process; "
                             "give each edge its own data directory (or evidence.spool.path)") from None
        self._mutex = threading.Lock()
        self._db = sqlite3.connect(private_file(self.dir / "spool.sqlite"), timeout=30, isolation_level=None,
                                   check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        self._refresh()

    def _refresh(self) -> None:
        n, size = self._db.execute("SELECT COUNT(*), COALESCE(SUM(bytes), 0) FROM blobs").fetchone()
        (e,) = self._db.execute("SELECT COUNT(*) FROM events").fetchone()
        self.blob_count, self.bytes, self.event_count = int(n), int(size), int(e)
        SPOOL_BLOBS.set(self.blob_count)
        SPOOL_BYTES.set(self.bytes)
        SPOOL_EVENTS.set(self.event_count)

    def add_blob(self, key: str, data: bytes, content_type: str) -> None:
        """Keep ``data`` for ``key`` (fsynced before returning); :class:`SpoolFullError` when it does not fit."""
        with self._mutex:
            old = self._db.execute("SELECT bytes, file FROM blobs WHERE key = ?", (key,)).fetchone()
            used = self.bytes - (int(old[0]) if old else 0)
            if used + len(data) > self.max_bytes:
                SPOOL_REJECTED.inc()
                SPOOL_FULL.set(1)
                msg = (f"evidence spool {self.dir} is full ({used} of {self.max_bytes} bytes) while the store is "
                       f"unreachable: {key} ({len(data)} bytes) is NOT kept; bring the store back, free disk, or "
                       "raise evidence.spool.max_bytes")
                log.error(msg)
                raise SpoolFullError(msg)
            name = f"{uuid.uuid4().hex}.blob"
            tmp = self.blob_dir / f".{name}.tmp"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.blob_dir / name)
            fsync_dir(self.blob_dir)
            self._db.execute(
                "INSERT INTO blobs (key, sha256, content_type, bytes, file, created) VALUES (?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (key) DO UPDATE SET sha256 = excluded.sha256, content_type = excluded.content_type, "
                "bytes = excluded.bytes, file = excluded.file, created = excluded.created",
                (key, hashlib.sha256(data).hexdigest(), content_type, len(data), name, time.time()),
            )
            if old:
                with contextlib.suppress(OSError):
                    (self.blob_dir / old[1]).unlink()
            SPOOL_FULL.set(0)
            self._refresh()

    def blobs(self, limit: int = 50) -> list[SpooledBlob]:
        with self._mutex:
            rows = self._db.execute(
                "SELECT key, sha256, content_type, bytes, file FROM blobs ORDER BY seq LIMIT ?", (limit,)
            ).fetchall()
        return [SpooledBlob(*r) for r in rows]

    def has_blob(self, key: str) -> bool:
        with self._mutex:
            return self._db.execute("SELECT 1 FROM blobs WHERE key = ?", (key,)).fetchone() is not None

    def spooled_keys(self) -> list[str]:
        with self._mutex:
            return [r[0] for r in self._db.execute("SELECT key FROM blobs ORDER BY key")]

    def read(self, blob: SpooledBlob) -> bytes:
        return (self.blob_dir / blob.file).read_bytes()

    def read_key(self, key: str) -> bytes | None:
        with self._mutex:
            row = self._db.execute("SELECT file FROM blobs WHERE key = ?", (key,)).fetchone()
        return (self.blob_dir / row[0]).read_bytes() if row else None

    def remove_blob(self, key: str) -> None:
        with self._mutex:
            row = self._db.execute("SELECT file FROM blobs WHERE key = ?", (key,)).fetchone()
            if row is None:
                return
            self._db.execute("DELETE FROM blobs WHERE key = ?", (key,))
            with contextlib.suppress(OSError):
                (self.blob_dir / row[0]).unlink()
            self._refresh()

    def hold(self, topic: str, key: str, value: bytes) -> None:
        """Keep an event until its blobs are uploaded (durable before returning)."""
        with self._mutex:
            self._db.execute("INSERT INTO events (topic, key, value, created) VALUES (?, ?, ?, ?)",
                             (topic, key, value, time.time()))
            self._refresh()

    def held(self, limit: int = 50) -> list[HeldEvent]:
        with self._mutex:
            rows = self._db.execute("SELECT seq, topic, key, value FROM events ORDER BY seq LIMIT ?",
                                    (limit,)).fetchall()
        return [HeldEvent(int(s), t, k, bytes(v)) for s, t, k, v in rows]

    def release(self, seq: int) -> None:
        with self._mutex:
            self._db.execute("DELETE FROM events WHERE seq = ?", (seq,))
            self._refresh()

    def empty(self) -> bool:
        return self.blob_count == 0 and self.event_count == 0

    def close(self) -> None:
        with self._mutex:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
            if self._lock_fd >= 0:
                os.close(self._lock_fd)
                self._lock_fd = -1


def event_blob_keys(value: bytes) -> list[str]:
    """The store keys a serialized ViolationEvent names (empty for anything else)."""
    try:
        obj = json.loads(value)
    except (ValueError, UnicodeDecodeError):
        return []
    items = obj.get("evidence") if isinstance(obj, dict) else None
    return [i["key"] for i in items or [] if isinstance(i, dict) and isinstance(i.get("key"), str)]


class SpoolingStore:
    """The edge's view of the store: writes fall back to the spool while the store is down."""

    def __init__(self, edge: EdgeEvidence) -> None:
        self._edge = edge

    def __repr__(self) -> str:
        return f"SpoolingStore({self._edge.store!r}, spool={str(self._edge.spool.dir)!r})"

    def put(self, key: str, data: bytes, content_type: str) -> None:
        self._edge.put(key, data, content_type)

    def get(self, key: str) -> bytes:
        data = self._edge.spool.read_key(key)
        return data if data is not None else self._edge.store.get(key)

    def exists(self, key: str) -> bool:
        return self._edge.spool.has_blob(key) or self._edge.store.exists(key)

    def list(self, prefix: str = "") -> Iterator[str]:
        keys = set(self._edge.store.list(prefix)) | {k for k in self._edge.spool.spooled_keys() if k.startswith(prefix)}
        return iter(sorted(keys))

    def delete(self, key: str) -> None:
        self._edge.spool.remove_blob(key)
        self._edge.store.delete(key)


class ClaimCheckBus:
    """The edge's view of the bus: a violation is published only once its evidence is in the store."""

    def __init__(self, edge: EdgeEvidence) -> None:
        self._edge = edge

    def publish(self, topic: str, key: str, value: bytes) -> None:
        self._edge.publish(topic, key, value)

    def consumer(self, topic: str, group: str) -> Consumer:
        return self._edge.bus.consumer(topic, group)

    def close(self) -> None:
        """Nothing: the owner closes the :class:`EdgeEvidence` and the bus under it."""


class EdgeEvidence:
    """Store + bus of an edge with the spool in between (see the module docstring)."""

    def __init__(self, store: Store, bus: Bus, spool_dir: str | os.PathLike[str], max_bytes: int,
                 retry_s: float = 5.0) -> None:
        self.store, self.bus, self.retry_s = store, bus, retry_s
        self.spool = EvidenceSpool(spool_dir, max_bytes)
        self._up = self.spool.blob_count == 0
        STORE_UP.set(1 if self._up else 0)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self.edge_store = SpoolingStore(self)
        self.edge_bus = ClaimCheckBus(self)
        self._thread = threading.Thread(target=self._upload_loop, name="evidence-spool", daemon=True)
        self._thread.start()
        if not self.spool.empty():
            log.warning("evidence spool %s holds %d blob(s) and %d event(s) from an earlier run; uploading them",
                        self.spool.dir, self.spool.blob_count, self.spool.event_count)

    # -- edge side -------------------------------------------------------------------------------------

    def put(self, key: str, data: bytes, content_type: str) -> None:
        check_key(key)
        if self._up and self.spool.blob_count == 0:
            try:
                self.store.put(key, data, content_type)
                return
            except StoreError as e:
                self._down(e)
        self.spool.add_blob(key, data, content_type)
        self._wake.set()

    def publish(self, topic: str, key: str, value: bytes) -> None:
        if topic == TOPIC_VIOLATIONS and (
            self.spool.event_count > 0 or any(self.spool.has_blob(k) for k in event_blob_keys(value))
        ):
            self.spool.hold(topic, key, value)
            log.info("event on %s (camera %s) held back until its evidence is in the store", topic, key)
            self._wake.set()
            return
        self.bus.publish(topic, key, value)

    def pending(self) -> int:
        """Blobs plus events still in the spool."""
        return self.spool.blob_count + self.spool.event_count

    def drain(self, timeout_s: float) -> bool:
        """Wait until the spool is empty (True) or ``timeout_s`` passed (False)."""
        deadline = time.monotonic() + timeout_s
        self._wake.set()
        while not self.spool.empty():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        return True

    # -- uploader --------------------------------------------------------------------------------------

    def _down(self, e: BaseException) -> None:
        if self._up:
            log.warning("evidence store %r unreachable (%s); spooling evidence in %s (room for %d MB) and holding "
                        "back its events until it returns", self.store, e, self.spool.dir,
                        self.spool.max_bytes // 1024**2)
        self._up = False
        STORE_UP.set(0)

    def _upload_loop(self) -> None:
        while not self._stop.is_set():
            if self.spool.empty():
                self._up = True
                STORE_UP.set(1)
                self._wake.wait(self.retry_s)
                self._wake.clear()
                continue
            try:
                progressed = self._upload_round()
            except (StoreError, OSError) as e:
                self._down(e)
                progressed = False
            if not progressed:
                self._stop.wait(self.retry_s)

    def _upload_round(self) -> bool:
        """Upload a batch of blobs, then publish the events whose evidence is complete; True if any moved."""
        moved = False
        for blob in self.spool.blobs(50):
            if self._stop.is_set():
                return moved
            data = self.spool.read(blob)
            if hashlib.sha256(data).hexdigest() != blob.sha256:
                log.error("spooled blob %s changed on local disk (sha256 differs); uploading it as it is, the sealer "
                          "will record the difference", blob.key)
            self.store.put(blob.key, data, blob.content_type)
            self.spool.remove_blob(blob.key)
            UPLOADED.inc()
            moved = True
        if self.spool.blob_count == 0 and not self._up:
            log.warning("evidence store %r reachable again; spooled evidence uploaded", self.store)
            self._up = True
            STORE_UP.set(1)
        for ev in self.spool.held(50):
            if any(self.spool.has_blob(k) for k in event_blob_keys(ev.value)):
                break  # keep the order: later events wait for this one
            self.bus.publish(ev.topic, ev.key, ev.value)
            self.spool.release(ev.seq)
            log.info("published held-back event on %s (camera %s)", ev.topic, ev.key)
            moved = True
        return moved

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=30)
        self.spool.close()
