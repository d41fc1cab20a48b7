"""Live updates of the alert queue: a server-sent event per new or changed case.

The stream polls the case database (``live_poll_s``, 1 s by default) for cases whose ``updated_at``
(then id) is past the cursor it last sent; the cursor is the event id, so a reconnecting browser
(``Last-Event-ID``) misses nothing. Each event says whether the case matches the page's filter.
Every ``recheck_s`` the stream asks whether its session or API token still holds; once the user logged out,
changed the password, was disabled or the token was revoked, it sends an ``end`` event and closes.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import anyio
from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session, sessionmaker

from nonsite.cases import Case
from nonsite.cases.queries import CaseFilter

MAX_BATCH = 200
HEARTBEAT_S = 15.0
STREAM_S = 300.0
"""A stream ends after this long; the browser reconnects at once with its last event id."""


@dataclass(frozen=True)
class Cursor:
    """Where a stream stands: the last change sent (``updated_at``, ``id``) and the highest case id seen."""

    updated_at: datetime
    id: int
    max_id: int

    def __str__(self) -> str:
        return f"{self.updated_at.astimezone(UTC).strftime('%Y%m%dT%H%M%S.%f')}~{self.id}~{self.max_id}"

    @classmethod
    def parse(cls, value: str) -> Cursor:
        parts = value.split("~")
        try:
            if len(parts) != 3 or not all(p.isdigit() and len(p) <= 18 for p in parts[1:]):
                raise ValueError(value)
            stamp = datetime.strptime(parts[0], "%Y%m%dT%H%M%S.%f").replace(tzinfo=UTC)
            return cls(stamp, int(parts[1]), int(parts[2]))
        except ValueError:
            raise ValueError(f"since {value!r} is not a cursor this console gave out; omit it to start "
                             "from now") from None


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def current_cursor(session: Session) -> Cursor:
    """The position of the latest change (new streams start here: only what happens next is sent)."""
    row = session.execute(select(Case.updated_at, Case.id).order_by(Case.updated_at.desc(), Case.id.desc())
                          .limit(1)).first()
    max_id = session.scalar(select(func.max(Case.id))) or 0
    return Cursor(row[0], row[1], max_id) if row else Cursor(_EPOCH, 0, 0)


def changes_since(session: Session, cursor: Cursor, flt: CaseFilter) -> tuple[list[tuple[Case, Cursor]], set[int]]:
    """Cases changed or new after ``cursor`` with the cursor after each, and which of them match ``flt``.

    New cases are found by id (whatever their timestamps say), changed ones by ``updated_at``.
    """
    new = list(session.scalars(select(Case).where(Case.id > cursor.max_id).order_by(Case.id).limit(MAX_BATCH)))
    after = or_(Case.updated_at > cursor.updated_at,
                and_(Case.updated_at == cursor.updated_at, Case.id > cursor.id))
    changed = list(session.scalars(select(Case).where(Case.id <= cursor.max_id, after)
                                   .order_by(Case.updated_at, Case.id).limit(MAX_BATCH)))
    if not changed and not new:
        return [], set()
    out: list[tuple[Case, Cursor]] = []
    at = cursor
    for case in changed:
        at = Cursor(case.updated_at, case.id, cursor.max_id)
        out.append((case, at))
    for case in new:
        at = Cursor(at.updated_at, at.id, case.id)
        out.append((case, at))
    ids = [c.id for c, _ in out]
    matching = set(session.scalars(select(Case.id).where(Case.id.in_(ids), *flt.conditions())))
    return out, matching


def sse(event: str, data: dict[str, Any], ident: str | None = None) -> str:
    lines = []
    if ident:
        lines.append(f"id: {ident}")
    lines.append(f"event: {event}")
    lines.append("data: " + json.dumps(data, ensure_ascii=False, default=str))
    return "\n".join(lines) + "\n\n"


async def stream(
    session_factory: sessionmaker[Session],
    flt: CaseFilter,
    cursor: Cursor,
    payload: Callable[[Case, bool], dict[str, Any]],
    poll_s: float,
    stream_s: float = STREAM_S,
    *,
    alive: Callable[[], bool] | None = None,
    recheck_s: float = 5.0,
) -> AsyncIterator[str]:
    """``case`` events (``payload(case, matches)``) for every change after ``cursor``, for ``stream_s``.

    ``alive`` (blocking; run in a thread every ``recheck_s``) says whether the caller may still listen; when
    it says no, the stream sends ``event: end`` and stops (the browser is not told to reconnect).

    A client that left is noticed when the next event or keep-alive cannot be sent (the server then
    closes this generator).
    """

    def poll(at: Cursor) -> tuple[list[tuple[Case, Cursor]], set[int]]:
        with session_factory() as session:
            return changes_since(session, at, flt)

    yield f"retry: 2000\nid: {cursor}\n\n"
    started = last_sent = checked = time.monotonic()
    while time.monotonic() - started < stream_s:
        if alive is not None and time.monotonic() - checked >= recheck_s:
            if not await anyio.to_thread.run_sync(alive):
                yield sse("end", {"reason": "session_ended"})
                return
            checked = time.monotonic()
        cases, matching = await anyio.to_thread.run_sync(poll, cursor)
        for case, after in cases:
            cursor = after  # the event's id: a reconnecting client resumes right after it
            yield sse("case", payload(case, case.id in matching), str(cursor))
        now = time.monotonic()
        if cases:
            last_sent = now
            if len(cases) >= MAX_BATCH:
                continue
        elif now - last_sent >= HEARTBEAT_S:
            yield ": keep-alive\n\n"
            last_sent = now
        await anyio.sleep(poll_s)
