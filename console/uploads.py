"""Uploaded photos: only real JPEG or PNG images (by their bytes, not their names) within size limits.

An accepted photo is decoded and re-encoded as JPEG, so nothing but pixels reaches the evidence store
(no scripts posing as images, no metadata, no trailing payloads).
"""

from __future__ import annotations

import struct
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

JPEG_MAGIC = b"\xff\xd8\xff"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MAX_PIXELS = 40_000_000
"""Larger images are refused before decoding (a small file can declare a huge canvas)."""
JPEG_QUALITY = 90

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class UploadRejected(ValueError):
    def __init__(self, status: int, code: str, message: str, **fields: Any) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.fields = status, code, message, fields


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    i = 2
    n = len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD9)):  # standalone markers
            i += 2
            continue
        (length,) = struct.unpack(">H", data[i + 2:i + 4])
        if length < 2:
            return None
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if i + 9 > n:
                return None
            height, width = struct.unpack(">HH", data[i + 5:i + 9])
            return width, height
        i += 2 + length
    return None


def image_kind_and_size(data: bytes) -> tuple[str, int, int]:
    """``("jpeg" | "png", width, height)`` from the file's own header; UploadRejected otherwise."""
    if data.startswith(PNG_MAGIC):
        if len(data) < 24 or data[12:16] != b"IHDR":
            raise UploadRejected(415, "bad_image", "the PNG file is damaged (no image header)")
        width, height = struct.unpack(">II", data[16:24])
        return "png", width, height
    if data.startswith(JPEG_MAGIC):
        size = _jpeg_size(data)
        if size is None:
            raise UploadRejected(415, "bad_image", "the JPEG file is damaged (no frame header)")
        return "jpeg", size[0], size[1]
    raise UploadRejected(415, "not_an_image", "only JPEG or PNG photos are accepted (the file is neither, "
                         "whatever its name says)")


def reencode_photo(data: bytes, filename: str = "") -> bytes:
    """The photo decoded and re-encoded as JPEG; UploadRejected (415) when it is not a usable JPEG/PNG."""
    name = f" {filename!r}" if filename else ""
    try:
        kind, width, height = image_kind_and_size(data)
    except UploadRejected as exc:
        raise UploadRejected(exc.status, exc.code, f"photo{name}: {exc.message}", filename=filename) from None
    if width == 0 or height == 0 or width * height > MAX_PIXELS:
        raise UploadRejected(415, "image_too_large",
                             f"photo{name} is {width}x{height} pixels; at most {MAX_PIXELS // 1_000_000} "
                             "megapixels are accepted", filename=filename)
    import cv2  # only here: importing the console stays light
    import numpy as np

    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise UploadRejected(415, "bad_image", f"photo{name} is not a readable {kind.upper()} image",
                             filename=filename)
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise UploadRejected(415, "bad_image", f"photo{name} could not be re-encoded", filename=filename)
    return encoded.tobytes()


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
