"""Feedback photos (反馈: the rectified place): the one place where an uploaded photo is checked and stored.

Every caller (the console's pages and API, scripts) goes through :func:`prepare_photo` and
:func:`store_photo` (or :func:`store_feedback_photo`, both at once):

- only real JPEG or PNG images, by their bytes (magic and header), never by their names;
- at most ``max_bytes`` per photo and :data:`MAX_PIXELS` pixels (refused from the header, before decoding:
  a small file can declare a huge canvas);
- decoded and re-encoded as JPEG, so nothing but pixels reaches the store (no scripts posing as images, no
  metadata, no trailing payloads); at most :data:`MAX_CONCURRENT_DECODES` decodes run at once in a process,
  so parallel uploads cannot drive memory up;
- stored under ``cases/<case number>/feedback/<sha256 of the stored bytes>.jpg``, never inside an evidence
  package (the package's manifest would no longer match).

Decoding is blocking CPU work: an ``async`` caller runs these functions in a worker thread.
"""

from __future__ import annotations

import hashlib
import re
import struct
import threading
from dataclasses import dataclass
from typing import Any

__all__ = [
    "FEEDBACK_MAX_BYTES",
    "MAX_CONCURRENT_DECODES",
    "MAX_PIXELS",
    "PHOTO_CONTENT_TYPE",
    "AttachmentError",
    "PreparedPhoto",
    "feedback_key",
    "feedback_prefix",
    "image_kind_and_size",
    "prepare_photo",
    "store_feedback_photo",
    "store_photo",
]

#: Largest feedback photo accepted (a phone photo is 2-6 MB).
FEEDBACK_MAX_BYTES = 12 * 1024 * 1024
#: Larger images are refused before decoding.
MAX_PIXELS = 40_000_000
#: Decodes (and re-encodes) running at once in this process; the others wait their turn.
MAX_CONCURRENT_DECODES = 2
JPEG_MAGIC = b"\xff\xd8\xff"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_QUALITY = 90
#: What every stored feedback photo is (it was re-encoded).
PHOTO_CONTENT_TYPE = "image/jpeg"
_NUMBER = re.compile(r"^[A-Z0-9-]{1,40}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_DECODES = threading.BoundedSemaphore(MAX_CONCURRENT_DECODES)


class AttachmentError(ValueError):
    """An upload that is refused; the message says why and what is accepted.

    ``code``: ``empty`` | ``too_large`` | ``not_an_image`` | ``bad_image`` | ``image_too_large`` |
    ``bad_case_number``; ``filename``: the name the client gave (for the message only).
    """

    def __init__(self, code: str, message: str, filename: str = "") -> None:
        super().__init__(message)
        self.code, self.message, self.filename = code, message, filename


@dataclass(frozen=True)
class PreparedPhoto:
    """A checked photo, re-encoded and ready to store."""

    data: bytes
    sha256: str
    name: str
    """The client's file name, made safe to show (no folders, no odd characters)."""


def feedback_prefix(case_number: str) -> str:
    if not _NUMBER.match(case_number or ""):
        raise AttachmentError("bad_case_number", f"case number {case_number!r} cannot name a folder in the store")
    return f"cases/{case_number}/feedback/"


def feedback_key(case_number: str, sha256: str) -> str:
    """Where the feedback photo with this sha256 (of its stored bytes) of the case is stored."""
    if not _SHA256.match(sha256 or ""):
        raise AttachmentError("bad_image", f"{sha256!r} is not the hex sha256 of a stored photo")
    return f"{feedback_prefix(case_number)}{sha256}.jpg"


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


def image_kind_and_size(data: bytes, filename: str = "") -> tuple[str, int, int]:
    """``("jpeg" | "png", width, height)`` from the file's own header; AttachmentError otherwise."""
    name = f" {filename!r}" if filename else ""
    if data.startswith(PNG_MAGIC):
        if len(data) < 24 or data[12:16] != b"IHDR":
            raise AttachmentError("bad_image", f"photo{name} does not decode (a damaged PNG: no image header)",
                                  filename)
        width, height = struct.unpack(">II", data[16:24])
        return "png", width, height
    if data.startswith(JPEG_MAGIC):
        size = _jpeg_size(data)
        if size is None:
            raise AttachmentError("bad_image", f"photo{name} does not decode (a damaged JPEG: no frame header)",
                                  filename)
        return "jpeg", size[0], size[1]
    raise AttachmentError("not_an_image", f"photo{name}: only JPEG or PNG photos are accepted (the file is "
                          "neither, whatever its name says)", filename)


def _decode_and_reencode(data: bytes) -> bytes | None:
    """The image re-encoded as JPEG; None when it does not decode (blocking; bounded by the caller)."""
    import cv2  # only here: importing the case package stays light
    import numpy as np

    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None or image.size == 0:
        return None
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    return encoded.tobytes() if ok else None


def safe_name(filename: str) -> str:
    """The client's file name without folders or odd characters (for display only)."""
    return re.sub(r"[^\w.\- ]", "_", (filename or "").rsplit("/", 1)[-1].rsplit("\\", 1)[-1])[:120]


def prepare_photo(data: bytes, filename: str = "", *, max_bytes: int = FEEDBACK_MAX_BYTES) -> PreparedPhoto:
    """Check ``data`` (type by its bytes, size, pixels) and re-encode it as JPEG; AttachmentError otherwise."""
    name = f" {filename!r}" if filename else ""
    if not data:
        raise AttachmentError("empty", f"the photo{name} is empty; choose a JPEG or PNG file", filename)
    if len(data) > max_bytes:
        raise AttachmentError("too_large", f"the photo{name} is {len(data) / 1e6:.1f} MB; the limit is "
                              f"{max_bytes / 1e6:.1f} MB", filename)
    kind, width, height = image_kind_and_size(data, filename)
    if width == 0 or height == 0 or width * height > MAX_PIXELS:
        raise AttachmentError("image_too_large", f"photo{name} is {width}x{height} pixels; at most "
                              f"{MAX_PIXELS // 1_000_000} megapixels are accepted", filename)
    with _DECODES:
        encoded = _decode_and_reencode(data)
    if encoded is None:
        raise AttachmentError("bad_image", f"photo{name} does not decode as a {kind.upper()} image (damaged or "
                              "truncated); take it again", filename)
    return PreparedPhoto(encoded, hashlib.sha256(encoded).hexdigest(), safe_name(filename))


def store_photo(store: Any, case_number: str, photo: PreparedPhoto) -> dict[str, Any]:
    """Put a prepared photo in the store; the attachment record ``{key, sha256, content_type, bytes, name}``
    that :func:`~nonsite.cases.workflow.rectify` takes. Store errors propagate (StoreError)."""
    key = feedback_key(case_number, photo.sha256)
    store.put(key, photo.data, PHOTO_CONTENT_TYPE)
    return {"key": key, "sha256": photo.sha256, "content_type": PHOTO_CONTENT_TYPE, "bytes": len(photo.data),
            "name": photo.name}


def store_feedback_photo(
    store: Any, case_number: str, data: bytes, filename: str = "", *, max_bytes: int = FEEDBACK_MAX_BYTES,
) -> dict[str, Any]:
    """:func:`prepare_photo` then :func:`store_photo`: check, re-encode and store one photo."""
    feedback_prefix(case_number)  # a bad case number is refused before any work
    return store_photo(store, case_number, prepare_photo(data, filename, max_bytes=max_bytes))
