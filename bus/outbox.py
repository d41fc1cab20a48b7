"""The durable local outbox of a Kafka publisher: messages wait here (SQLite, synchronous=FULL) until the
broker has acknowledged them, so a broker outage loses nothing and the edge keeps detecting.

One process owns an outbox file at a time (an exclusive ``flock`` on ``<file>.lock``): a second process of
the same role on the same data directory takes the next free slot, and a crashed process's outbox is picked
up, and replayed, by the next process that starts with that role.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from nonsite.config.files import PRIVATE_FILE_MODE, private_dir, private_file

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
  id INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL,
  created REAL NOT NULL);
"""
_MAX_SLOTS = 64


@dataclass(frozen=True)
class OutboxEntry:
    id: int
    topic: str
    key: str
    value: bytes
    created: float


class OutboxBusyError(RuntimeError):
    """Every outbox slot of this role is held by another live process."""


class Outbox:
    """Ordered, durable queue of (topic, key, value) in one SQLite file; safe across this process's threads."""

    def __init__(self, directory: str | os.PathLike[str], name: str) -> None:
        d = Path(directory)
        private_dir(d)
        self._lock_fd = -1
        for slot in range(_MAX_SLOTS):
            stem = name if slot == 0 else f"{name}-{slot}"
            fd = os.open(d / f"{stem}.lock", os.O_RDWR | os.O_CREAT, PRIVATE_FILE_MODE)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            self._lock_fd = fd
            self.path = d / f"{stem}.sqlite"
            break
        else:
            raise OutboxBusyError(
                f"all {_MAX_SLOTS} outbox slots '{name}' in {d} are held by running processes; "
                "give this process its own data directory"
            )
        self._mutex = threading.Lock()
        self._conn = sqlite3.connect(private_file(self.path), timeout=30, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.executescript(_SCHEMA)
        (self._depth,) = self._conn.execute("SELECT COUNT(*) FROM outbox").fetchone()

    def __repr__(self) -> str:
        return f"Outbox({str(self.path)!r}, depth={self._depth})"

    def append(self, topic: str, key: str, value: bytes) -> int:
        """Durably add one message at the end; returns its id."""
        with self._mutex:
            cur = self._conn.execute(
                "INSERT INTO outbox (topic, key, value, created) VALUES (?, ?, ?, ?)", (topic, key, value, time.time())
            )
            self._depth += 1
            return int(cur.lastrowid or 0)

    def head(self, limit: int = 100) -> list[OutboxEntry]:
        """The oldest ``limit`` messages, oldest first."""
        with self._mutex:
            rows = self._conn.execute(
                "SELECT id, topic, key, value, created FROM outbox ORDER BY id LIMIT ?", (limit,)
            ).fetchall()
        return [OutboxEntry(int(i), t, k, bytes(v), float(c)) for i, t, k, v, c in rows]

    def remove(self, entry_id: int) -> None:
        """Forget a message the broker acknowledged."""
        with self._mutex:
            cur = self._conn.execute("DELETE FROM outbox WHERE id = ?", (entry_id,))
            self._depth -= cur.rowcount

    def depth(self) -> int:
        """Messages waiting (kept in memory: cheap to read on every publish and every metrics scrape)."""
        return self._depth

    def oldest_age_s(self) -> float:
        with self._mutex:
            row = self._conn.execute("SELECT MIN(created) FROM outbox").fetchone()
        return max(0.0, time.time() - row[0]) if row and row[0] is not None else 0.0

    def close(self) -> None:
        with self._mutex:
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()
            if self._lock_fd >= 0:
                os.close(self._lock_fd)  # releases the flock
                self._lock_fd = -1
