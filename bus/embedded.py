"""Embedded bus: a durable, append-only log in one SQLite file (WAL, synchronous=FULL).

Same contract as Kafka for what nonsite needs: per-topic ordered offsets, consumer groups with
committed positions, at-least-once redelivery of what was not committed. Safe across threads and
processes on one machine.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

from nonsite.bus.base import Message
from nonsite.config.files import private_file

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
  topic TEXT NOT NULL, offset INTEGER NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL,
  ts REAL NOT NULL, PRIMARY KEY (topic, offset));
CREATE TABLE IF NOT EXISTS commits (
  grp TEXT NOT NULL, topic TEXT NOT NULL, offset INTEGER NOT NULL, PRIMARY KEY (grp, topic));
"""


class EmbeddedBus:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        private_file(self.path)  # 0600 in a 0700 folder, before SQLite creates it (its WAL files follow)
        self._local = threading.local()
        self._closed = False
        with self._conn() as c:
            c.executescript(_SCHEMA)

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            self._local.conn = conn
        return conn

    def publish(self, topic: str, key: str, value: bytes) -> None:
        c = self._conn()
        c.execute("BEGIN IMMEDIATE")
        try:
            (nxt,) = c.execute(
                "SELECT COALESCE(MAX(offset) + 1, 0) FROM messages WHERE topic = ?", (topic,)
            ).fetchone()
            c.execute(
                "INSERT INTO messages (topic, offset, key, value, ts) VALUES (?, ?, ?, ?, ?)",
                (topic, nxt, key, value, time.time()),
            )
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise

    def consumer(self, topic: str, group: str) -> EmbeddedConsumer:
        return EmbeddedConsumer(self, topic, group)

    def tail(self, topic: str, *, from_start: bool = False) -> EmbeddedConsumer:
        """A reader of ``topic`` from its current end on (no group position is ever committed for it); from its
        first message with ``from_start`` (``caught_up()`` then tells when it read what was there at the start)."""
        c = EmbeddedConsumer(self, topic, f"(tail {id(self):x})")
        c._end_at_start = self.end_offset(topic)
        c._position = 0 if from_start else c._end_at_start
        return c

    def end_offset(self, topic: str) -> int:
        (n,) = self._conn().execute(
            "SELECT COALESCE(MAX(offset) + 1, 0) FROM messages WHERE topic = ?", (topic,)
        ).fetchone()
        return int(n)

    def committed(self, topic: str, group: str) -> int:
        row = self._conn().execute(
            "SELECT offset FROM commits WHERE grp = ? AND topic = ?", (group, topic)
        ).fetchone()
        return int(row[0]) if row else 0

    def lag(self, topic: str, group: str) -> int:
        return self.end_offset(topic) - self.committed(topic, group)

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


def _message(topic: str, offset: int, key: object, value: object) -> Message:
    """A row of the log as a :class:`Message`, whatever was written into it (a row another program wrote with a
    text or numeric value, or a non-text key, becomes bytes the consumer then rejects to the dead letters)."""
    if isinstance(value, bytes | bytearray | memoryview):
        data = bytes(value)
    else:
        data = ("" if value is None else str(value)).encode("utf-8", "surrogatepass")
    return Message(topic, int(offset), key if isinstance(key, str) else ("" if key is None else str(key)), data)


class EmbeddedConsumer:
    """One member of a consumer group (the embedded bus gives a whole topic to each member)."""

    def __init__(self, bus: EmbeddedBus, topic: str, group: str) -> None:
        self.bus, self.topic, self.group = bus, topic, group
        self._position: int | None = None
        self._end_at_start = 0

    def caught_up(self) -> bool:
        """(A tail reader) True once it read every message that was in the topic when it was created."""
        return self._position is not None and self._position >= self._end_at_start

    def poll(self, max_records: int = 100, timeout_s: float = 1.0) -> list[Message]:
        deadline = time.monotonic() + timeout_s
        while True:
            if self._position is None:
                self._position = self.bus.committed(self.topic, self.group)
            rows = self.bus._conn().execute(
                "SELECT offset, key, value FROM messages WHERE topic = ? AND offset >= ? ORDER BY offset LIMIT ?",
                (self.topic, self._position, max_records),
            ).fetchall()
            if rows:
                self._position = rows[-1][0] + 1
                return [_message(self.topic, o, k, v) for o, k, v in rows]
            if time.monotonic() >= deadline:
                return []
            time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))

    def commit(self, message: Message) -> None:
        self.bus._conn().execute(
            "INSERT INTO commits (grp, topic, offset) VALUES (?, ?, ?) "
            "ON CONFLICT (grp, topic) DO UPDATE SET offset = MAX(offset, excluded.offset)",
            (self.group, self.topic, message.offset + 1),
        )

    def seek_to_committed(self) -> None:
        """Forget the in-memory position: the next poll starts again after the last commit."""
        self._position = None

    def close(self) -> None:
        self._position = None
