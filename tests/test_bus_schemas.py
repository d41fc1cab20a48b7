"""The published JSON Schemas of the topics (docs/schemas) are current and say what consumers accept."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from services.fixtures import ROOT, make_event

from nonsite.bus.base import Message
from nonsite.bus.deadletter import MAX_DEAD_LETTER_VALUE_BYTES, dead_letter_record, dead_letter_value
from nonsite.bus.events import TOPIC_CASES, TOPIC_DEAD_LETTER, TOPIC_EVIDENCE, TOPIC_VIOLATIONS, CaseDecision
from nonsite.bus.schemas import TOPIC_MODELS, check_schemas
from nonsite.evidence.local import LocalStore
from nonsite.evidence.sealer import seal
from nonsite.evidence.signing import Signer

SCHEMAS = ROOT / "docs" / "schemas"


def schema(topic: str) -> dict[str, object]:
    return json.loads((SCHEMAS / f"{topic}.json").read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def test_the_published_schemas_are_current() -> None:
    assert sorted(p.name for p in SCHEMAS.glob("*.json")) == sorted(f"{t}.json" for t in TOPIC_MODELS)
    assert check_schemas(SCHEMAS) == [], "run `make schema` and commit docs/schemas"
    r = subprocess.run([sys.executable, "-m", "nonsite", "bus", "schemas", "--check"], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


def test_real_events_validate_and_broken_ones_do_not(tmp_path: Path, clip_frames: list[np.ndarray]) -> None:
    store = LocalStore(tmp_path / "ev")
    event = make_event(store, clip_frames)
    sealed = seal(store, Signer.load_or_create(tmp_path / "k.pem"), event)
    decision = CaseDecision(case_number="NS-2026-000001", event_id=event.event_id, status="confirmed",
                            previous_status="draft", actor="operator-1")
    for topic, obj in ((TOPIC_VIOLATIONS, event), (TOPIC_EVIDENCE, sealed), (TOPIC_CASES, decision)):
        jsonschema.validate(json.loads(obj.model_dump_json()), schema(topic))
        assert schema(topic)["properties"]["schema_version"]["const"] == 1  # type: ignore[index]

    good = json.loads(event.model_dump_json())
    for broken in ({k: v for k, v in good.items() if k != "camera_id"},  # missing field
                   {**good, "camera_iD": "x"},  # unknown field
                   {**good, "schema_version": 2},  # a version this consumer does not speak
                   {**good, "evidence": [{**good["evidence"][0], "sha256": "not-hex"}]}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(broken, schema(TOPIC_VIOLATIONS))


def test_dead_letter_records_keep_the_start_of_a_large_value_with_its_hash() -> None:
    raw = bytes(range(256)) * 4096  # 1 MiB of binary
    msg = Message(TOPIC_VIOLATIONS, 7, "cam-1", raw, partition=2)
    record = json.loads(dead_letter_value(msg, "too big", "nonsite-sealer"))
    jsonschema.validate(record, schema(TOPIC_DEAD_LETTER))
    assert record["partition"] == 2 and record["offset"] == 7 and record["truncated"] is True
    assert record["value_bytes"] == len(raw) and record["value_sha256"] == hashlib.sha256(raw).hexdigest()
    assert base64.b64decode(record["value_base64"]) == raw[:MAX_DEAD_LETTER_VALUE_BYTES]
    # Text cut in the middle of a multi-byte character stays text.
    text = ("违停" * 40000).encode("utf-8")
    r = dead_letter_record(Message(TOPIC_VIOLATIONS, 0, "k", text), "too big", "g")
    assert r.value is not None and text.decode("utf-8").startswith(r.value) and r.truncated
