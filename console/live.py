"""Live updates of the alert queue: a server-sent event per new or changed case.

The stream polls the case database (``live_poll_s``, 1 s by default) for cases whose ``updated_at``
(then id) is past the cursor it last sent; the cursor is the event id, so a reconnecting browser
(``Last-Event-ID``) misses nothing. Each event says whether the case matches the page's filter.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import anyio
from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session, sessionmaker

from nonsite.cases import Case
from nonsite.console.views import CaseFilter

MAX_BATCH = 200
HEARTBEAT_S = 15.0
STREAM_S = 300.0
"""A stream ends after this long; the browser reconnects at once with its last event id."""


@dataclass(frozen=True)
class Cursor:
    updated_at: datetime
    id: int

    def __str__(self) -> str:
        return f"{self.updated_at.astimezone(UTC).strftime('%Y%m%dT%H%M%S.%f')}~{self.id}"

    @classmethod
    def parse(cls, value: str) -> Cursor:
        stamp, sep, ident = value.partition("~")
        try:
            if not sep or not ident.isdigit() or len(ident) > 18:
                raise ValueError(value)
            return cls(datetime.strptime(stamp, "%Y%m%dT%H%M%S.%f").replace(tzinfo=UTC), int(ident))
        except ValueError:
            raise ValueError(f"since {value!r} is not a cursor this console gave out; omit it to start "
                             "from now") from None


_EPOCH = Cursor(datetime(1970, 1, 1, tzinfo=UTC), 0)


def current_cursor(session: Session) -> Cursor:
    """The position of the latest change (new streams start here: only what happens next is sent)."""
    row = session.execute(select(Case.updated_at, Case.id).order_by(Case.updated_at.desc(), Case.id.desc())
                          .limit(1)).first()
    return Cursor(row[0], row[1]) if row else _EPOCH


def changes_since(session: Session, cursor: Cursor, flt: CaseFilter) -> tuple[list[Case], set[int]]:
    """Cases changed after ``cursor`` (oldest change first) and which of them match ``flt``."""
    after = or_(Case.updated_at > cursor.updated_at,
                and_(Case.updated_at == cursor.updated_at, Case.id > cursor.id))
    cases = list(session.scalars(select(Case).where(after).order_by(Case.updated_at, Case.id).limit(MAX_BATCH)))
    if not cases:
        return [], set()
    ids = [c.id for c in cases]
    matching = set(session.scalars(select(Case.id).where(Case.id.in_(ids), *flt.conditions())))
    return cases, matching


def sse(event: str, data: dict[str, Any], ident: str | None = None) -> str:
    lines = []
    if ident:
        lines.append(f"id: {ident}")
    lines.append(f"event: {event}")
    lines.append("data: " + json.dumps(data, ensure_ascii=False, default=str))
    return "\n".join(lines) + "\n\n"


async def stream(
    is_disconnected: Callable[[], Awaitable[bool]],
    session_factory: sessionmaker[Session],
    flt: CaseFilter,
    cursor: Cursor,
    payload: Callable[[Case, bool], dict[str, Any]],
    poll_s: float,
    stream_s: float = STREAM_S,
) -> AsyncIterator[str]:
    """``case`` events (``payload(case, matches)``) for every change after ``cursor`` until the client leaves."""

    def poll(at: Cursor) -> tuple[list[Case], set[int]]:
        with session_factory() as session:
            return changes_since(session, at, flt)

    yield f"retry: 2000\nid: {cursor}\n\n"
    started = last_sent = time.monotonic()
    while time.monotonic() - started < stream_s:
        if await is_disconnected():
            return
        cases, matching = await anyio.to_thread.run_sync(poll, cursor)
        for case in cases:
            cursor = Cursor(case.updated_at, case.id)
            yield sse("case", payload(case, case.id in matching), str(cursor))
        now = time.monotonic()
        if cases:
            last_sent = now
            if len(cases) == MAX_BATCH:
                continue
        elif now - last_sent >= HEARTBEAT_S:
            yield ": keep-alive\n\n"
            last_sent = now
        await anyio.sleep(poll_s)
