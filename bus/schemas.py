"""JSON Schema of every topic, generated from the pydantic models (published in ``docs/schemas/``).

``nonsite bus schemas`` (``make schema``) writes them; a test fails when they are not current. Consumers
validate with the same models, so what the schema rejects a consumer dead-letters.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from nonsite.bus.deadletter import MAX_EVENT_BYTES, DeadLetterRecord
from nonsite.bus.events import (
    SCHEMA_VERSION,
    TOPIC_CAMERA_CONTROL,
    TOPIC_CAMERAS,
    TOPIC_CASES,
    TOPIC_DEAD_LETTER,
    TOPIC_EVIDENCE,
    TOPIC_RECHECK,
    TOPIC_VIOLATIONS,
    CameraState,
    CameraZonesCommand,
    CaseDecision,
    EvidenceSealed,
    RecheckRequest,
    ViolationEvent,
)

#: topic -> (model of its values, what the key is, who publishes it)
TOPIC_MODELS: dict[str, tuple[type[BaseModel], str, str]] = {
    TOPIC_VIOLATIONS: (ViolationEvent, "camera id", "edge workers, once the evidence blobs are in the store"),
    TOPIC_EVIDENCE: (EvidenceSealed, "camera id", "the evidence sealer, once the manifest is signed"),
    TOPIC_CASES: (CaseDecision, "case number", "the case workflow, on every status change (for the city platform)"),
    TOPIC_RECHECK: (RecheckRequest, "camera id", "the case workflow (its outbox) when a case is reported rectified "
                    "and a camera re-check is on (cases.recheck)"),
    TOPIC_CAMERAS: (CameraState, "camera id", "edges and pool workers, every few seconds per camera they run"),
    TOPIC_CAMERA_CONTROL: (CameraZonesCommand, "camera id", "a console, when an operator saves a camera's zones"),
    TOPIC_DEAD_LETTER: (DeadLetterRecord, "key of the rejected message", "any consumer that rejects a message"),
}


def topic_schema(topic: str) -> dict[str, Any]:
    model, key, producer = TOPIC_MODELS[topic]
    schema = model.model_json_schema()
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"{topic}.json",
        "title": f"{topic} ({model.__name__})",
        "description": (
            f"Value of a message on the Kafka topic {topic}: UTF-8 JSON, key = {key}, published by {producer}. "
            f"schema_version {SCHEMA_VERSION}; consumers reject values over {MAX_EVENT_BYTES} bytes or not "
            f"matching this schema to {TOPIC_DEAD_LETTER}."
        ),
        **{k: v for k, v in schema.items() if k not in ("title", "description")},
    }


def _text(topic: str) -> str:
    return json.dumps(topic_schema(topic), indent=2, ensure_ascii=False, sort_keys=False) + "\n"


def write_schemas(directory: str | Path) -> list[Path]:
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    out = []
    for topic in TOPIC_MODELS:
        p = d / f"{topic}.json"
        p.write_text(_text(topic), encoding="utf-8")
        out.append(p)
    return out


def check_schemas(directory: str | Path) -> list[str]:
    """File names under ``directory`` that are missing or differ from the models."""
    d = Path(directory)
    stale = []
    for topic in TOPIC_MODELS:
        p = d / f"{topic}.json"
        if not p.is_file() or p.read_text(encoding="utf-8") != _text(topic):
            stale.append(p.name)
    return stale
