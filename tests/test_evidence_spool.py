"""The edge's evidence spool against a real S3 server (s3rver) that goes down and comes back: evidence is
kept on local disk, events wait for their evidence (claim-check), nothing is lost, a full spool is loud."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import REGISTRY
from services.fixtures import make_event, s3_config, wait_for
from services.servers import Moto, S3rver

from nonsite.bus import EmbeddedBus
from nonsite.bus.events import TOPIC_VIOLATIONS
from nonsite.evidence.s3 import S3Store
from nonsite.evidence.sealer import seal_pending
from nonsite.evidence.signing import Signer
from nonsite.evidence.spool import EdgeEvidence, SpoolFullError
from nonsite.evidence.verify import verify_package

SetEnv = Callable[[Moto | S3rver], None]


def metric(name: str) -> float:
    v = REGISTRY.get_sample_value(name)
    return float(v) if v is not None else float("nan")


def published_ids(bus: EmbeddedBus) -> list[str]:
    c = bus.consumer(TOPIC_VIOLATIONS, "probe")
    ids = [json.loads(m.value)["event_id"] for m in c.poll(1000, 0.1)]
    c.close()
    return ids


def test_store_outage_spools_evidence_holds_events_and_publishes_them_late_in_order(
    s3rver: S3rver, s3_env_of: SetEnv, clip_frames: list[np.ndarray], tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    s3_env_of(s3rver)
    store = S3Store(s3_config(s3rver))
    bus = EmbeddedBus(tmp_path / "bus.sqlite")
    edge = EdgeEvidence(store, bus, tmp_path / "spool", max_bytes=64 * 1024**2, retry_s=0.5)
    caplog.set_level(logging.WARNING)
    try:
        first = make_event(edge.edge_store, clip_frames, "cam-1")
        edge.edge_bus.publish(TOPIC_VIOLATIONS, "cam-1", first.model_dump_json().encode())
        assert published_ids(bus) == [first.event_id]  # store up: straight through

        s3rver.stop()
        held = [make_event(edge.edge_store, clip_frames, "cam-2") for _ in range(2)]
        for e in held:
            edge.edge_bus.publish(TOPIC_VIOLATIONS, "cam-2", e.model_dump_json().encode())
        # Claim-check: nothing is published while its evidence is only on the edge's disk.
        assert published_ids(bus) == [first.event_id]
        assert edge.spool.blob_count == 12 and edge.spool.event_count == 2
        assert metric("nonsite_evidence_spool_blobs") == 12 and metric("nonsite_evidence_spool_events") == 2
        assert metric("nonsite_evidence_store_up") == 0
        assert "unreachable" in caplog.text and "spooling evidence" in caplog.text

        s3rver.start()
        assert edge.drain(60), f"spool not drained: {edge.pending()} item(s) left"
        assert published_ids(bus) == [first.event_id] + [e.event_id for e in held]  # late, in order, once
        assert metric("nonsite_evidence_spool_bytes") == 0 and metric("nonsite_evidence_store_up") == 1
        assert list((tmp_path / "spool" / "blobs").iterdir()) == []
    finally:
        edge.close()
    signer = Signer.load_or_create(tmp_path / "signing.pem")
    assert seal_pending(bus, store, signer) == 3
    for e in [first, *held]:
        result = verify_package(store, e.event_id, signer.public_key_pem())
        assert result.ok, result.problems


def test_a_full_spool_refuses_loudly_and_keeps_what_it_has(
    s3rver: S3rver, s3_env_of: SetEnv, clip_frames: list[np.ndarray], tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    s3_env_of(s3rver)
    store = S3Store(s3_config(s3rver))
    s3rver.stop()
    bus = EmbeddedBus(tmp_path / "bus.sqlite")
    edge = EdgeEvidence(store, bus, tmp_path / "spool", max_bytes=150_000, retry_s=30)
    rejected_before = metric("nonsite_evidence_spool_rejected_total")
    caplog.set_level(logging.ERROR, logger="nonsite.evidence.spool")
    try:
        edge.edge_store.put("events/e1/onset.jpg", b"a" * 100_000, "image/jpeg")
        with pytest.raises(SpoolFullError, match="is full .* is NOT kept; .* raise evidence.spool.max_bytes"):
            edge.edge_store.put("events/e1/confirm.jpg", b"b" * 100_000, "image/jpeg")
        assert metric("nonsite_evidence_spool_rejected_total") == rejected_before + 1
        assert metric("nonsite_evidence_spool_full") == 1
        assert "events/e1/confirm.jpg (100000 bytes) is NOT kept" in caplog.text
        assert edge.spool.spooled_keys() == ["events/e1/onset.jpg"]  # what fitted is still there
        assert edge.edge_store.get("events/e1/onset.jpg") == b"a" * 100_000
    finally:
        edge.close()


def test_the_spool_survives_an_edge_restart(
    s3rver: S3rver, s3_env_of: SetEnv, clip_frames: list[np.ndarray], tmp_path: Path
) -> None:
    s3_env_of(s3rver)
    store = S3Store(s3_config(s3rver))
    s3rver.stop()
    bus = EmbeddedBus(tmp_path / "bus.sqlite")
    edge = EdgeEvidence(store, bus, tmp_path / "spool", max_bytes=64 * 1024**2, retry_s=0.5)
    event = make_event(edge.edge_store, clip_frames)
    edge.edge_bus.publish(TOPIC_VIOLATIONS, event.camera_id, event.model_dump_json().encode())
    edge.close()  # the edge stops (power cut, update) with the store still down
    assert published_ids(bus) == []

    s3rver.start()
    edge = EdgeEvidence(store, bus, tmp_path / "spool", max_bytes=64 * 1024**2, retry_s=0.5)
    try:
        wait_for(lambda: published_ids(bus) == [event.event_id], 30, "the held event after the restart")
        assert all(store.exists(i.key) for i in event.evidence)
    finally:
        edge.close()


def test_an_edge_spool_is_one_process_only(s3rver: S3rver, s3_env_of: SetEnv, tmp_path: Path) -> None:
    s3_env_of(s3rver)
    store = S3Store(s3_config(s3rver))
    bus = EmbeddedBus(tmp_path / "bus.sqlite")
    edge = EdgeEvidence(store, bus, tmp_path / "spool", max_bytes=10**6)
    try:
        with pytest.raises(Exception, match="in use by another edge process"):
            EdgeEvidence(store, bus, tmp_path / "spool", max_bytes=10**6)
    finally:
        edge.close()
