"""Sealing, verification and the sealer consumer, on real frames, a real store and a real EmbeddedBus."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from services.fixtures import make_event

from nonsite.bus import EmbeddedBus
from nonsite.bus.events import (
    TOPIC_DEAD_LETTER,
    TOPIC_EVIDENCE,
    TOPIC_VIOLATIONS,
    EvidenceSealed,
    ViolationEvent,
    new_event_id,
)
from nonsite.evidence import sealer as sealer_mod
from nonsite.evidence.local import LocalStore
from nonsite.evidence.manifest import canonical_json
from nonsite.evidence.sealer import run_sealer, seal, seal_pending
from nonsite.evidence.signing import Signer, verify_signature
from nonsite.evidence.store import StoreError
from nonsite.evidence.verify import verify_all, verify_command, verify_package


@pytest.fixture(scope="module")
def frames(clip_frames: list[np.ndarray]) -> list[np.ndarray]:
    return clip_frames


@pytest.fixture()
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "evidence")


@pytest.fixture()
def signer(tmp_path: Path) -> Signer:
    return Signer.load_or_create(tmp_path / "keys" / "signing.pem")


def test_seal_then_verify_ok(store: LocalStore, signer: Signer, frames: list[np.ndarray]) -> None:
    event = make_event(store, frames)
    sealed = seal(store, signer, event)
    assert sealed.problems == [] and sealed.public_key_fingerprint == signer.fingerprint()
    data = store.get(sealed.manifest_key)
    assert verify_signature(signer.public_key_pem(), data, store.get(sealed.signature_key))
    manifest = json.loads(data)
    assert canonical_json(manifest) == data  # stored in canonical form
    assert manifest["event_id"] == event.event_id and manifest["rule_config_hash"] == "cd" * 32
    assert manifest["camera"] == {"id": "cam-01", "name": "东门"}
    assert manifest["model"]["sha256"] == "ab" * 32
    assert {a["role"] for a in manifest["artifacts"]} == {
        "onset", "confirm", "onset_annotated", "confirm_annotated", "closeup", "clip"}
    assert manifest["signature"]["public_key_fingerprint"] == signer.fingerprint()
    result = verify_package(store, event.event_id, signer.public_key_pem())
    assert result.ok and result.problems == [] and result.files == 6


def test_seal_is_idempotent(store: LocalStore, signer: Signer, frames: list[np.ndarray]) -> None:
    event = make_event(store, frames)
    first = seal(store, signer, event)
    path = store.path_of(first.manifest_key)
    mtime = path.stat().st_mtime_ns
    before = store.get(first.manifest_key), store.get(first.signature_key)
    time.sleep(0.01)
    second = seal(store, signer, event)
    assert second == first
    assert (store.get(first.manifest_key), store.get(first.signature_key)) == before
    assert path.stat().st_mtime_ns == mtime


def test_unsigned_manifest_is_sealed_again(store: LocalStore, signer: Signer, frames: list[np.ndarray]) -> None:
    event = make_event(store, frames)
    first = seal(store, signer, event)
    store.delete(first.signature_key)  # as if the sealer crashed between the two writes
    again = seal(store, signer, event)
    assert again.sealed_at > first.sealed_at
    assert verify_package(store, event.event_id, signer.public_key_pem()).ok


@pytest.fixture()
def sealed_event(store: LocalStore, signer: Signer, frames: list[np.ndarray]) -> ViolationEvent:
    event = make_event(store, frames)
    seal(store, signer, event)
    return event


def _problems(store: LocalStore, event: ViolationEvent, signer: Signer) -> list[str]:
    r = verify_package(store, event.event_id, signer.public_key_pem())
    assert r.ok is False
    return r.problems


def test_tampered_byte_is_named(store: LocalStore, signer: Signer, sealed_event: ViolationEvent) -> None:
    path = store.path_of(f"events/{sealed_event.event_id}/confirm.jpg")
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    problems = _problems(store, sealed_event, signer)
    assert len(problems) == 1
    assert problems[0].startswith("confirm.jpg: sha256 differs (expected ")


def test_missing_file_is_named(store: LocalStore, signer: Signer, sealed_event: ViolationEvent) -> None:
    store.path_of(f"events/{sealed_event.event_id}/clip.mp4").unlink()
    assert _problems(store, sealed_event, signer) == ["clip.mp4: missing"]


def test_extra_file_is_named(store: LocalStore, signer: Signer, sealed_event: ViolationEvent) -> None:
    store.put(f"events/{sealed_event.event_id}/extra.txt", b"planted", "text/plain")
    assert _problems(store, sealed_event, signer) == ["extra.txt: extra file not in manifest"]


def test_corrupt_signature_is_named(store: LocalStore, signer: Signer, sealed_event: ViolationEvent) -> None:
    key = f"events/{sealed_event.event_id}/manifest.sig"
    sig = bytearray(store.get(key))
    sig[0] ^= 0xFF
    store.put(key, bytes(sig), "application/octet-stream")
    assert _problems(store, sealed_event, signer) == ["manifest.sig: signature does not verify"]


def test_edited_manifest_fails_signature(store: LocalStore, signer: Signer, sealed_event: ViolationEvent) -> None:
    key = f"events/{sealed_event.event_id}/manifest.json"
    store.put(key, store.get(key).replace(b"z-sidewalk", b"z-road0000"), "application/json")
    assert _problems(store, sealed_event, signer) == ["manifest.sig: signature does not verify"]


def test_other_public_key_is_refused(
    store: LocalStore, signer: Signer, sealed_event: ViolationEvent, tmp_path: Path
) -> None:
    other = Signer.load_or_create(tmp_path / "other.pem")
    r = verify_package(store, sealed_event.event_id, other.public_key_pem())
    assert not r.ok and r.problems[0].startswith("manifest.sig: signature does not verify (the manifest names key")


def test_unsealed_package(store: LocalStore, signer: Signer, frames: list[np.ndarray]) -> None:
    event = make_event(store, frames)
    r = verify_package(store, event.event_id, signer.public_key_pem())
    assert not r.ok and r.problems == ["manifest.json: missing (package never sealed)"]


def test_seal_records_blob_problems(store: LocalStore, signer: Signer, frames: list[np.ndarray]) -> None:
    event = make_event(store, frames)
    store.delete(f"events/{event.event_id}/closeup.jpg")
    store.put(f"events/{event.event_id}/onset.jpg", b"swapped before sealing", "image/jpeg")
    sealed = seal(store, signer, event)
    expected = next(i.sha256 for i in event.evidence if i.role == "onset")
    got = hashlib.sha256(b"swapped before sealing").hexdigest()
    assert sealed.problems[0] == f"onset.jpg: sha256 differs (expected {expected}, got {got})"
    assert sealed.problems[1] == "closeup.jpg: missing"
    problems = _problems(store, event, signer)  # the manifest keeps what the edge declared
    assert "closeup.jpg: missing" in problems and any(p.startswith("onset.jpg: sha256 differs") for p in problems)


def test_verify_command_output_and_exit_codes(
    store: LocalStore, signer: Signer, frames: list[np.ndarray], capsys: pytest.CaptureFixture[str]
) -> None:
    good = make_event(store, frames)
    bad = make_event(store, frames)
    seal(store, signer, good)
    seal(store, signer, bad)
    pem = signer.public_key_pem()

    assert verify_command(store, pem, good.event_id, False) == 0
    fp = signer.fingerprint()[:16]
    assert capsys.readouterr().out == f"OK {good.event_id} (6 files; signed by key {fp}..., not pinned: set " \
        "evidence.trusted_keys)\n"

    store.path_of(f"events/{bad.event_id}/clip.mp4").unlink()
    assert verify_command(store, pem, bad.event_id, False) == 1
    assert capsys.readouterr().out == f"FAIL {bad.event_id}\n  clip.mp4: missing\n"

    assert verify_command(store, pem, None, True) == 1
    out = capsys.readouterr().out
    assert f"OK {good.event_id} (6 files; signed by key {fp}" in out
    assert f"FAIL {bad.event_id}\n  clip.mp4: missing" in out
    assert [r.ok for r in verify_all(store, pem)].count(False) == 1

    unknown = new_event_id()
    assert verify_command(store, pem, unknown, False) == 2
    assert f"no evidence package for event {unknown}" in capsys.readouterr().err
    assert verify_command(store, pem, "../etc", False) == 2
    assert "cannot name an evidence package" in capsys.readouterr().err
    assert verify_command(store, "not a key", good.event_id, False) == 2
    assert "not a PEM Ed25519 public key" in capsys.readouterr().err


def _drain(bus: EmbeddedBus, topic: str) -> list:
    c = bus.consumer(topic, "test-reader")
    return c.poll(max_records=100, timeout_s=0.2)


def test_seal_pending_over_embedded_bus(
    tmp_path: Path, store: LocalStore, signer: Signer, frames: list[np.ndarray]
) -> None:
    bus = EmbeddedBus(tmp_path / "bus" / "bus.sqlite")
    e1 = make_event(store, frames, camera_id="cam-01")
    e2 = make_event(store, frames, camera_id="cam-02")
    bus.publish(TOPIC_VIOLATIONS, "cam-01", e1.model_dump_json().encode())
    bus.publish(TOPIC_VIOLATIONS, "cam-x", b'{"type": "sidewalk_parking", "camera_id": 5')  # broken JSON
    bus.publish(TOPIC_VIOLATIONS, "cam-x", b'{"event_id": "x"}')  # valid JSON, not an event
    bus.publish(TOPIC_VIOLATIONS, "cam-02", e2.model_dump_json().encode())

    assert seal_pending(bus, store, signer) == 2
    assert bus.lag(TOPIC_VIOLATIONS, "nonsite-sealer") == 0

    sealed = [EvidenceSealed.model_validate_json(m.value) for m in _drain(bus, TOPIC_EVIDENCE)]
    assert [s.event_id for s in sealed] == [e1.event_id, e2.event_id]
    assert [m.key for m in _drain(bus, TOPIC_EVIDENCE)] == ["cam-01", "cam-02"]
    assert all(s.problems == [] for s in sealed)

    dead = [json.loads(m.value) for m in _drain(bus, TOPIC_DEAD_LETTER)]
    assert [(d["topic"], d["offset"]) for d in dead] == [(TOPIC_VIOLATIONS, 1), (TOPIC_VIOLATIONS, 2)]
    assert dead[0]["value"] == '{"type": "sidewalk_parking", "camera_id": 5'
    assert "not a valid ViolationEvent" in dead[0]["reason"] and dead[1]["reason"]

    # redelivery after a crash before commit: sealed again idempotently, same manifest
    assert seal_pending(bus, store, signer, group="another-group") == 2
    again = [EvidenceSealed.model_validate_json(m.value) for m in _drain(bus, TOPIC_EVIDENCE)][2:]
    assert [(s.event_id, s.manifest_sha256, s.sealed_at) for s in again] == [
        (s.event_id, s.manifest_sha256, s.sealed_at) for s in sealed]
    assert all(r.ok for r in verify_all(store, signer.public_key_pem()))
    bus.close()


class FlakyStore(LocalStore):
    """A real LocalStore whose first writes fail, as during a disk or network outage."""

    def __init__(self, root: Path, failures: int) -> None:
        super().__init__(root)
        self.failures = failures

    def put(self, key: str, data: bytes, content_type: str) -> None:
        if key.endswith("manifest.json") and self.failures > 0:
            self.failures -= 1
            raise StoreError("simulated outage")
        super().put(key, data, content_type)


def test_run_sealer_thread_dead_letters_and_retries(
    tmp_path: Path, store: LocalStore, signer: Signer, frames: list[np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sealer_mod, "_RETRY_MIN_S", 0.05)
    bus = EmbeddedBus(tmp_path / "bus" / "bus.sqlite")
    e1 = make_event(store, frames)
    e2 = make_event(store, frames)
    bus.publish(TOPIC_VIOLATIONS, "cam-01", b"\xff\xfe not even utf-8")
    bus.publish(TOPIC_VIOLATIONS, "cam-01", e1.model_dump_json().encode())
    flaky = FlakyStore(store.root, failures=2)
    stop = threading.Event()
    t = threading.Thread(target=run_sealer, args=(bus, flaky, signer, stop), daemon=True)
    t.start()
    try:
        bus.publish(TOPIC_VIOLATIONS, "cam-01", e2.model_dump_json().encode())  # arrives while running
        deadline = time.monotonic() + 20
        while bus.end_offset(TOPIC_EVIDENCE) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        t.join(timeout=10)
    assert not t.is_alive()
    assert flaky.failures == 0  # the outage was retried, not dead-lettered
    assert [EvidenceSealed.model_validate_json(m.value).event_id for m in _drain(bus, TOPIC_EVIDENCE)] == [
        e1.event_id, e2.event_id]
    dead = [json.loads(m.value) for m in _drain(bus, TOPIC_DEAD_LETTER)]
    assert len(dead) == 1 and dead[0]["offset"] == 0 and "value_base64" in dead[0]
    assert bus.lag(TOPIC_VIOLATIONS, "nonsite-sealer") == 0
    bus.close()
