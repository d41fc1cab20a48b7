"""The dead-letter record every consumer writes when it rejects a message, and the size rule for events.

Events are small (claim-check: media never rides the bus), so a message larger than
:data:`MAX_EVENT_BYTES` is rejected unread; the dead-letter record then keeps the first
:data:`MAX_DEAD_LETTER_VALUE_BYTES` of it, with its size and sha256, so the record itself always fits.
"""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from nonsite.bus.base import Message

#: Largest event a consumer accepts (the biggest real ViolationEvent is a few tens of KiB).
MAX_EVENT_BYTES = 512 * 1024
#: Most bytes of the rejected value copied into its dead-letter record.
MAX_DEAD_LETTER_VALUE_BYTES = 64 * 1024


class DeadLetterRecord(BaseModel):
    """Published to ``nonsite.dead-letter`` (key = the rejected message's key) when a consumer rejects one."""

    model_config = ConfigDict(extra="forbid")

    reason: str = Field(description="Why the consumer rejected it, in one sentence.")
    topic: str = Field(description="Topic the message came from.")
    partition: int = Field(0, description="Partition it came from (0 on the embedded bus).")
    offset: int = Field(description="Its offset in that partition.")
    key: str = Field(description="Its key (the camera id for violations and evidence).")
    consumer_group: str = Field(description="Consumer group that rejected it.")
    at: str = Field(description="When it was rejected (UTC, ISO 8601).")
    value: str | None = Field(None, description="The value as UTF-8 text (possibly truncated), when it is text.")
    value_base64: str | None = Field(None, description="The value in base64 (possibly truncated), when it is not text.")
    value_bytes: int = Field(0, ge=0, description="Size of the whole original value.")
    value_sha256: str = Field("", description="sha256 of the whole original value.")
    truncated: bool = Field(False, description="True when value / value_base64 holds only the start of it.")


def oversized_reason(message: Message, limit: int = MAX_EVENT_BYTES) -> str | None:
    """Why ``message`` is too large to be an event, or None when it is not."""
    if len(message.value) > limit:
        return (f"message of {len(message.value)} bytes exceeds the {limit}-byte limit for events "
                "(media belongs in the evidence store, not on the bus)")
    return None


M = TypeVar("M", bound=BaseModel)


class UnusableMessage(ValueError):
    """A message no retry can make usable; its text is the dead-letter reason."""


def parse_message(message: Message, model: type[M], what: str, *, key_field: str | None = None,
                  key_what: str = "") -> M:
    """``message`` as ``model``, or :class:`UnusableMessage` saying why not: too large, not ``what`` (the first
    validation error, where and what), or (``key_field``) keyed by another value than the message's own
    ``key_field`` (``key_what`` names it: "the state's camera")."""
    too_big = oversized_reason(message)
    if too_big:
        raise UnusableMessage(too_big)
    try:
        parsed = model.model_validate_json(message.value)
    except ValidationError as e:
        first = e.errors()[0] if e.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ())) or "message"
        raise UnusableMessage(
            f"not {what} ({e.error_count()} error(s); first: {where}: {first.get('msg', e)})") from None
    if key_field is not None and getattr(parsed, key_field) != message.key:
        raise UnusableMessage(f"key {message.key!r} is not {key_what or key_field} {getattr(parsed, key_field)!r}")
    return parsed


def dead_letter_record(message: Message, reason: str, group: str) -> DeadLetterRecord:
    raw = message.value
    head = raw[:MAX_DEAD_LETTER_VALUE_BYTES]
    truncated = len(head) < len(raw)
    text = _text(head, truncated)
    return DeadLetterRecord(
        reason=reason,
        topic=message.topic,
        partition=getattr(message, "partition", 0),
        offset=message.offset,
        key=message.key,
        consumer_group=group,
        at=datetime.now(UTC).isoformat(),
        value=text,
        value_base64=None if text is not None else base64.b64encode(head).decode("ascii"),
        value_bytes=len(raw),
        value_sha256=hashlib.sha256(raw).hexdigest(),
        truncated=truncated,
    )


def dead_letter_value(message: Message, reason: str, group: str) -> bytes:
    """The JSON bytes of :func:`dead_letter_record` (always well under any broker's message limit)."""
    return dead_letter_record(message, reason, group).model_dump_json(exclude_none=True).encode("utf-8")


def _text(head: bytes, truncated: bool) -> str | None:
    """``head`` as text, or None when it is binary (a cut through the last character does not count)."""
    try:
        return head.decode("utf-8")
    except UnicodeDecodeError as e:
        if truncated and e.start >= len(head) - 3:
            try:
                return head[: e.start].decode("utf-8")
            except UnicodeDecodeError:
                return None
        return None
