"""The package manifest: canonical JSON describing the event and every artifact's sha256, signed detached."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from nonsite.bus.events import EvidenceItem, ViolationEvent
from nonsite.evidence.package import SIGNATURE_NAME

MANIFEST_VERSION = 1
SIGNATURE_ALGORITHM = "Ed25519"


def canonical_json(obj: Any) -> bytes:
    """Deterministic UTF-8 JSON: sorted keys, no insignificant whitespace (the bytes that are signed)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode(
        "utf-8"
    )


def iso_utc(t: datetime) -> str:
    """``2024-05-01T06:03:22.123456Z``."""
    return t.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def parse_time(s: str) -> datetime:
    return datetime.fromisoformat(s).astimezone(UTC)


def build_manifest(
    event: ViolationEvent, *, sealed_at: datetime, public_key_fingerprint: str, problems: list[str]
) -> dict[str, Any]:
    """The manifest of ``event``: what happened, where, by which model and rules, and every artifact as the
    edge declared it (``sealing_problems`` records what did not match when sealed)."""
    return {
        "manifest_version": MANIFEST_VERSION,
        "event_schema_version": event.schema_version,
        "event_id": event.event_id,
        "type": event.type,
        "camera": {"id": event.camera_id, "name": event.camera_name},
        "zone": {"id": event.zone_id, "name": event.zone_name},
        "location": event.location.model_dump(mode="json"),
        "times": {
            "started_at": iso_utc(event.started_at),
            "confirmed_at": iso_utc(event.confirmed_at),
            "published_at": iso_utc(event.published_at),
            "dwell_s": event.dwell_s,
        },
        "track_ids": list(event.track_ids),
        "confidence": event.confidence,
        "boxes": {role: [b.model_dump(mode="json") for b in boxes] for role, boxes in event.boxes.items()},
        "model": event.model.model_dump(mode="json"),
        "rule_config_hash": event.rule_config_hash,
        "artifacts": [
            item.model_dump(mode="json") for item in sorted(event.evidence, key=lambda i: (i.key, i.role))
        ],
        "sealed_at": iso_utc(sealed_at),
        "signature": {
            "algorithm": SIGNATURE_ALGORITHM,
            "file": SIGNATURE_NAME,
            "public_key_fingerprint": public_key_fingerprint,
        },
        "sealing_problems": list(problems),
        # An after package (camera re-check) signs its outcome too; other manifests keep their old form.
        **({"recheck": event.recheck.model_dump(mode="json")} if event.recheck is not None else {}),
    }


def parse_manifest(data: bytes) -> dict[str, Any]:
    """The manifest object in ``data``; ValueError saying what is wrong when it is not one."""
    try:
        obj = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"not valid JSON ({e})") from None
    if not isinstance(obj, dict):
        raise ValueError("not a JSON object")
    for k in ("event_id", "artifacts", "sealed_at", "signature"):
        if k not in obj:
            raise ValueError(f"has no '{k}' field")
    if not isinstance(obj["artifacts"], list):
        raise ValueError("'artifacts' is not a list")
    return obj


def manifest_artifacts(manifest: dict[str, Any]) -> list[EvidenceItem]:
    """The artifacts a parsed manifest lists; ValueError when one is malformed."""
    out = []
    for i, a in enumerate(manifest["artifacts"]):
        try:
            out.append(EvidenceItem.model_validate(a))
        except ValueError as e:
            raise ValueError(f"artifact #{i} is malformed: {e}") from None
    return out


def manifest_fingerprint(manifest: dict[str, Any]) -> str:
    sig = manifest.get("signature")
    return str(sig.get("public_key_fingerprint", "")) if isinstance(sig, dict) else ""
