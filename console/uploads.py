"""Request bodies within size limits, counted as they arrive (before anything parses them).

What an uploaded photo may be (JPEG or PNG by its bytes, pixels, re-encoding) is checked in one place,
:mod:`nonsite.cases.attachments`, which :func:`nonsite.console.actions.perform` calls.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class BodyLimit:
    """ASGI middleware: refuse request bodies over ``limit_of(scope)`` bytes with ``too_large(scope, size)``.

    The body is counted as it arrives (a missing or lying Content-Length does not help), then replayed
    to the app; the app never sees an oversized body.
    """

    def __init__(self, app: ASGIApp, limit_of: Callable[[Scope], int | None],
                 too_large: Callable[[Scope, int, int], ASGIApp]) -> None:
        self.app, self.limit_of, self.too_large = app, limit_of, too_large

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        limit = self.limit_of(scope) if scope["type"] == "http" else None
        if limit is None:
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self.too_large(scope, int(declared), limit)(scope, receive, send)
            return
        chunks: list[bytes] = []
        total = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                await self.app(scope, _replay([message], receive), send)
                return
            body = message.get("body", b"")
            total += len(body)
            if total > limit:
                await self.too_large(scope, total, limit)(scope, receive, send)
                return
            chunks.append(body)
            if not message.get("more_body", False):
                break
        replay: list[Message] = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]
        await self.app(scope, _replay(replay, receive), send)


def _replay(messages: list[Message], receive: Receive) -> Receive:
    pending = list(messages)

    async def replayed() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replayed
