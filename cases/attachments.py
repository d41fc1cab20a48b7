"""Feedback photos (反馈: the rectified place) stored beside the evidence, checked for type and size.

Stored under ``cases/<case number>/feedback/<sha256>.<jpg|png>``, never inside an evidence package (the
package's manifest would no longer match). :func:`store_feedback_photo` returns the attachment record that
:func:`nonsite.cases.workflow.rectify` takes.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

import cv2
import numpy as np

__all__ = ["FEEDBACK_MAX_BYTES", "FEEDBACK_TYPES", "AttachmentError", "feedback_prefix", "store_feedback_photo"]

#: Largest feedback photo accepted (a phone photo is 2-6 MB).
FEEDBACK_MAX_BYTES = 12 * 1024 * 1024
#: Accepted photo types: content type -> (magic bytes, file extension).
FEEDBACK_TYPES: dict[str, tuple[bytes, str]] = {
    "image/jpeg": (b"\xff\xd8\xff", "jpg"),
    "image/png": (b"\x89PNG\r\n\x1a\n", "png"),
}
_NUMBER = re.compile(r"^[A-Z0-9-]{1,40}$")


class AttachmentError(ValueError):
    """An upload that is refused; the message says why and what is accepted."""


def feedback_prefix(case_number: str) -> str:
    if not _NUMBER.match(case_number or ""):
        raise AttachmentError(f"case number {case_number!r} cannot name a folder in the store")
    return f"cases/{case_number}/feedback/"


def store_feedback_photo(
    store: Any, case_number: str, data: bytes, filename: str = "", *, max_bytes: int = FEEDBACK_MAX_BYTES,
) -> dict[str, Any]:
    """Check ``data`` is a JPEG or PNG photo (by its bytes, not its name) of at most ``max_bytes``, store it,
    and return ``{key, sha256, content_type, bytes, name}`` for :func:`~nonsite.cases.workflow.rectify`."""
    if not data:
        raise AttachmentError("the photo is empty; choose a JPEG or PNG file")
    if len(data) > max_bytes:
        raise AttachmentError(f"the photo is {len(data) / 1e6:.1f} MB; the limit is {max_bytes / 1e6:.0f} MB")
    content_type = next((ct for ct, (magic, _) in FEEDBACK_TYPES.items() if data.startswith(magic)), None)
    if content_type is None:
        raise AttachmentError("only JPEG or PNG photos are accepted; this file is neither")
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if img is None or img.size == 0:
        raise AttachmentError("the photo does not decode (damaged or truncated); take it again")
    sha = hashlib.sha256(data).hexdigest()
    key = f"{feedback_prefix(case_number)}{sha}.{FEEDBACK_TYPES[content_type][1]}"
    store.put(key, data, content_type)
    name = re.sub(r"[^\w.\- ]", "_", (filename or "").rsplit("/", 1)[-1].rsplit("\\", 1)[-1])[:120]
    return {"key": key, "sha256": sha, "content_type": content_type, "bytes": len(data), "name": name}
