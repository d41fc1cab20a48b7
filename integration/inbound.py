"""The platform's status callbacks (受理 accepted, 派遣 dispatched, 结案 closed, 退回 returned) → a workflow action.

:func:`handle_callback` is what the console's callback route calls with the request's headers and raw body:

1. :func:`parse_callback` verifies the HMAC signature (same scheme as our reports, with the callback secret;
   a stale timestamp is refused as a replay) and reads the fields (``callback_fields``: dotted paths);
2. the platform's event id is claimed in the callback log: a second delivery of the same event is answered
   as a duplicate and changes nothing;
3. :func:`decide` maps the platform status onto our workflow through ``status_map`` (an action, or none:
   recorded in the audit trail only).

It returns a :class:`CallbackDecision`; the caller applies ``action`` with ``nonsite.cases.workflow.apply_action``
as ``actor`` and writes the audit note. When that fails for a reason that may pass (the database is down) it
calls ``store.release_callback`` so the platform's retry is taken; a transition that does not apply to the
case's status (``InvalidTransition``) is recorded as a note, not retried.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from nonsite.config.integration import PlatformConfig
from nonsite.integration.outbox import HandoffStore
from nonsite.integration.signing import SignatureError, verify_signature

__all__ = ["Callback", "CallbackDecision", "CallbackRejected", "decide", "handle_callback", "parse_callback"]

MAX_CALLBACK_BYTES = 64 * 1024


class CallbackRejected(Exception):
    """A callback refused; ``status_code`` is the HTTP status to answer (401 signature, 400/422 body)."""

    def __init__(self, status_code: int, message: str) -> None:
        self.status_code = status_code
        super().__init__(message)


@dataclass(frozen=True)
class Callback:
    """A verified status change reported by the platform."""

    event_id: str
    case_number: str
    status: str
    comment: str = ""
    at: datetime | None = None


@dataclass(frozen=True)
class CallbackDecision:
    """What to do with a callback: ``action`` (a workflow action name, or None: a note only) on ``case_number``
    by ``actor``, with ``note`` (and ``reason`` for dismiss). ``duplicate``: already handled, do nothing."""

    platform: str
    event_id: str
    case_number: str
    platform_status: str
    action: str | None
    note: str
    actor: str
    reason: str | None = None
    duplicate: bool = False
    at: datetime | None = None

    def audit_detail(self) -> dict[str, Any]:
        """What the audit entry records of it."""
        return {"platform": self.platform, "platform_event_id": self.event_id,
                "platform_status": self.platform_status, "note": self.note}


def _dig(data: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(data, Mapping) or part not in data:
            return None
        data = data[part]
    return data


def _text(data: Mapping[str, Any], path: str, what: str, *, required: bool, limit: int) -> str:
    value = _dig(data, path)
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise CallbackRejected(400, f"the callback has no {what} (expected at '{path}')")
        return ""
    if not isinstance(value, str | int):
        raise CallbackRejected(400, f"the callback's {what} at '{path}' must be a string")
    text = str(value).strip()
    if len(text) > limit:
        raise CallbackRejected(400, f"the callback's {what} is longer than {limit} characters")
    return text


def parse_callback(headers: Mapping[str, str], body: bytes, cfg: PlatformConfig, secret: bytes,
                   *, now: float | None = None) -> Callback:
    """Verify and read a callback; :class:`CallbackRejected` says why it is refused."""
    if len(body) > MAX_CALLBACK_BYTES:
        raise CallbackRejected(413, f"callback body larger than {MAX_CALLBACK_BYTES} bytes")
    lower = {k.lower(): v for k, v in headers.items()}
    try:
        verify_signature(secret, lower.get(cfg.timestamp_header.lower()), lower.get(cfg.signature_header.lower()),
                         body, now=time.time() if now is None else now, max_skew_s=cfg.max_skew_s)
    except SignatureError as exc:
        raise CallbackRejected(401, str(exc)) from None
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise CallbackRejected(400, "the callback body is not UTF-8 JSON") from None
    if not isinstance(data, Mapping):
        raise CallbackRejected(400, "the callback body must be a JSON object")
    f = cfg.callback_fields
    at_text = _text(data, f.at, "time", required=False, limit=64)
    at = None
    if at_text:
        try:
            at = datetime.fromisoformat(at_text)
        except ValueError:
            raise CallbackRejected(400, f"the callback's time {at_text!r} is not ISO 8601") from None
    return Callback(
        event_id=_text(data, f.event_id, "event id", required=True, limit=128),
        case_number=_text(data, f.case_number, "case number", required=True, limit=40),
        status=_text(data, f.status, "status", required=True, limit=64),
        comment=_text(data, f.comment, "comment", required=False, limit=2000),
        at=at,
    )


def decide(cb: Callback, cfg: PlatformConfig) -> CallbackDecision:
    """The workflow action ``status_map`` gives the callback's status (CallbackRejected 422 when unknown)."""
    mapping = cfg.status_map.get(cb.status)
    if mapping is None:
        known = ", ".join(sorted(cfg.status_map)) or "none"
        raise CallbackRejected(422, f"unknown platform status {cb.status!r}; known: {known} "
                               "(integration.platform.status_map)")
    note = f"[{cfg.name}] {cb.comment or mapping.note or cb.status}"
    return CallbackDecision(platform=cfg.name, event_id=cb.event_id, case_number=cb.case_number,
                            platform_status=cb.status, action=mapping.action, note=note,
                            actor=f"platform:{cfg.name}", reason=mapping.reason, at=cb.at)


def handle_callback(headers: Mapping[str, str], body: bytes, *, cfg: PlatformConfig, secret: bytes,
                    store: HandoffStore, now: float | None = None) -> CallbackDecision:
    """Verify, deduplicate (by the platform's event id) and map one callback; see the module docstring."""
    current = time.time() if now is None else now
    cb = parse_callback(headers, body, cfg, secret, now=current)
    decision = decide(cb, cfg)
    if not store.claim_callback(cfg.name, cb.event_id, cb.case_number, cb.status, current):
        return CallbackDecision(**{**decision.__dict__, "duplicate": True, "action": None})
    return decision
