"""Fault tests of the distributed mode with real servers and real processes: a Kafka-protocol broker
(Tansu, its log in an S3 bucket so a restart keeps it), S3 evidence (moto, object lock), and the sealer
and drafter as separate ``nonsite`` processes.

- the broker is killed mid-run and restarted: no event lost, none duplicated in cases;
- the sealer is SIGKILLed between writing and committing: redelivery, no duplicate package or case;
- malformed and oversized messages: dead letter with the reason, the consumers go on.
"""

from __future__ import annotations

import hashlib
import json
import signal
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import yaml
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from services.fixtures import (
    ROOT,
    bucket_name,
    kafka_config,
    make_event,
    nonsite_process,
    s3_config,
    stop_process,
    wait_for,
)
from services.servers import Moto, S3rver, Tansu
from sqlalchemy import func, select

from nonsite.bus.deadletter import MAX_EVENT_BYTES
from nonsite.bus.events import TOPIC_DEAD_LETTER, TOPIC_EVIDENCE, TOPIC_VIOLATIONS, ViolationEvent
from nonsite.bus.kafka import KafkaBus
from nonsite.cases.db import Case, open_db
from nonsite.cases.drafter import run_drafter
from nonsite.evidence.s3 import S3Store
from nonsite.evidence.sealer import run_sealer
from nonsite.evidence.signing import Signer
from nonsite.evidence.spool import EdgeEvidence
from nonsite.evidence.verify import verify_all

SetEnv = Callable[[Moto | S3rver], None]


@dataclass
class Stack:
    moto: Moto
    broker: Tansu
    bucket: str
    config: Path
    root: Path
    store: S3Store

    def data(self, role: str) -> Path:
        return self.root / role

    def env(self, role: str, **extra: str) -> dict[str, str]:
        return {"NONSITE_DATA_DIR": str(self.data(role)), **extra}

    def start(self, role: str, **extra: str):  # type: ignore[no-untyped-def]
        self.data(role).mkdir(parents=True, exist_ok=True)
        return nonsite_process([role, "--config", str(self.config)], self.env(role, **extra),
                               self.root / f"{role}.log")

    def log(self, role: str) -> str:
        p = self.root / f"{role}.log"
        return p.read_text(errors="replace") if p.exists() else ""

    def cases(self) -> list[tuple[str, str]]:
        """(number, event_id) of every case the drafter wrote, read-only (the drafter owns the file)."""
        db = self.data("drafter") / "cases.db"
        if not db.exists():
            return []
        try:
            conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
            try:
                return [(n, e) for n, e in conn.execute("SELECT number, event_id FROM cases ORDER BY id")]
            finally:
                conn.close()
        except sqlite3.OperationalError:  # not created yet
            return []

    def logs(self) -> str:
        return "\n".join(f"--- {r} ---\n{self.log(r)[-3000:]}" for r in ("sealer", "drafter"))

    def public_key(self) -> bytes:
        return (self.data("sealer") / "keys" / "signing.pub.pem").read_bytes()


@pytest.fixture()
def stack(moto: Moto, s3_env_of: SetEnv, tmp_path: Path) -> Iterator[Stack]:
    s3_env_of(moto)
    log_bucket = f"tansu-{uuid.uuid4().hex[:10]}"
    moto.make_bucket(log_bucket)
    broker = Tansu(s3=(moto.url, log_bucket, moto.access_key))
    broker.start()
    bucket = bucket_name()
    cfg = {
        "bus": {"kind": "kafka", "kafka": {"bootstrap_servers": broker.bootstrap, "partitions": 3,
                                           "session_timeout_ms": 6000, "publish_timeout_s": 3}},
        "evidence": {"store": "s3", "s3": {"endpoint": moto.endpoint, "bucket": bucket, "timeout_s": 3},
                     "spool": {"retry_s": 0.5}, "retention": {"seal_days": 1}},
    }
    config = tmp_path / "distributed.yaml"
    config.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    try:
        yield Stack(moto, broker, bucket, config, tmp_path, S3Store(s3_config(moto, bucket)))
    finally:
        broker.close()


class Edge:
    """An edge in this process: S3 evidence through the spool, events through the Kafka outbox."""

    def __init__(self, stack: Stack, frames: list[np.ndarray]) -> None:
        self.bus = KafkaBus(kafka_config(stack.broker), stack.data("edge") / "bus", role="edge")
        self.evidence = EdgeEvidence(stack.store, self.bus, stack.data("edge") / "spool", 64 * 1024**2, 0.5)
        self.frames = frames
        self.published: list[ViolationEvent] = []

    def violation(self, camera_id: str) -> ViolationEvent:
        event = make_event(self.evidence.edge_store, self.frames, camera_id, n_clip=2)
        self.evidence.edge_bus.publish(TOPIC_VIOLATIONS, camera_id, event.model_dump_json().encode())
        self.published.append(event)
        return event

    def close(self) -> None:
        self.evidence.close()
        self.bus.close()


def test_broker_killed_mid_run_and_restarted_loses_nothing_and_duplicates_nothing(
    stack: Stack, clip_frames: list[np.ndarray]
) -> None:
    sealer, drafter = stack.start("sealer"), stack.start("drafter")
    edge = Edge(stack, clip_frames)
    try:
        for i in range(4):
            edge.violation(f"cam-{i % 2}")
        wait_for(lambda: len(stack.cases()) >= 2, 60, "the first cases before the outage", logs=stack.logs)

        stack.broker.kill()  # SIGKILL: no clean shutdown
        for i in range(4, 8):
            edge.violation(f"cam-{i % 2}")  # the edge keeps detecting and publishing
        assert edge.bus.pending() >= 4  # in the outbox, on disk
        time.sleep(2)
        stack.broker.start()
        for i in range(8, 10):
            edge.violation(f"cam-{i % 2}")
        assert edge.bus.drain(60), "the edge's outbox did not drain after the broker returned"

        wait_for(lambda: len(stack.cases()) >= 10, 120, "10 cases after the broker restart", logs=stack.logs)
        time.sleep(3)  # give any duplicate a chance to show up
        cases = stack.cases()
        ids = [e for _, e in cases]
        assert len(ids) == 10 and set(ids) == {e.event_id for e in edge.published}, "lost or duplicated"
        numbers = sorted(n for n, _ in cases)
        assert [int(n.rsplit("-", 1)[1]) for n in numbers] == list(range(1, 11))  # gapless
        results = verify_all(stack.store, stack.public_key())
        assert len(results) == 10 and all(r.ok for r in results), [r.problems for r in results if not r.ok]
        assert sealer.poll() is None and drafter.poll() is None, "a role died during the outage"
    finally:
        edge.close()
        stop_process(sealer)
        stop_process(drafter)
    assert our_frames(stack.log("sealer") + stack.log("drafter")) == []


def our_frames(log: str) -> list[str]:
    """Traceback lines that point into nonsite's own code (the Kafka client logs its own, harmless ones)."""
    return [line for line in log.splitlines()
            if line.strip().startswith(f'File "{ROOT}/') and "/.venv/" not in line]


def _committed(broker: Tansu, topic: str, group: str) -> int:
    c = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=group, enable_auto_commit=False)
    try:
        return sum(c.committed(TopicPartition(topic, p)) or 0 for p in c.partitions_for_topic(topic) or ())
    finally:
        c.close()


@pytest.mark.parametrize("point", ["sealer.before_commit", "sealer.after_manifest"])
def test_sealer_killed_between_writing_and_committing_redelivers_without_duplicates(
    stack: Stack, clip_frames: list[np.ndarray], point: str
) -> None:
    edge = Edge(stack, clip_frames)
    try:
        events = [edge.violation("cam-1") for _ in range(3)]  # one camera: one partition, in order
        assert edge.bus.drain(30)
    finally:
        edge.close()
    first = events[0]
    mkey = f"events/{first.event_id}/manifest.json"

    crashed = stack.start("sealer", NONSITE_FAULT=point)
    assert crashed.wait(timeout=90) == -signal.SIGKILL, stack.log("sealer")
    assert f"killing process {crashed.pid} at {point}" in stack.log("sealer")
    assert stack.store.exists(mkey)  # the work was written...
    assert _committed(stack.broker, TOPIC_VIOLATIONS, "nonsite-sealer") == 0  # ...the commit was not
    manifest_before = stack.store.get(mkey)

    sealer, drafter = stack.start("sealer"), stack.start("drafter")
    try:
        wait_for(lambda: len(stack.cases()) >= 3, 90, "3 cases after the sealer restart", logs=stack.logs)
        time.sleep(3)
        cases = stack.cases()
        assert sorted(e for _, e in cases) == sorted(e.event_id for e in events)  # one case each
        if point == "sealer.before_commit":
            # The package was complete: the redelivery re-announced it and rewrote nothing.
            assert stack.store.get(mkey) == manifest_before
            assert len(stack.store.versions(mkey)) == 1
        else:
            # Killed before the signature: the redelivery sealed it again (one package, signed).
            assert stack.store.exists(f"events/{first.event_id}/manifest.sig")
        results = verify_all(stack.store, stack.public_key())
        assert len(results) == 3 and all(r.ok for r in results), [r.problems for r in results]
        assert sorted(k.rsplit("/", 1)[1] for k in stack.store.list(f"events/{first.event_id}/")) == sorted(
            ["onset.jpg", "confirm.jpg", "onset_annotated.jpg", "confirm_annotated.jpg", "closeup.jpg", "clip.mp4",
             "manifest.json", "manifest.sig"])
    finally:
        stop_process(sealer)
        stop_process(drafter)


def _dead_letters(broker: Tansu, n: int, timeout_s: float = 30) -> list[dict[str, object]]:
    c = KafkaConsumer(bootstrap_servers=broker.bootstrap, enable_auto_commit=False, auto_offset_reset="earliest",
                      max_partition_fetch_bytes=8 * 1024**2)
    try:
        parts = wait_for(lambda: c.partitions_for_topic(TOPIC_DEAD_LETTER), 10, "the dead-letter topic")
        c.assign([TopicPartition(TOPIC_DEAD_LETTER, p) for p in parts])  # type: ignore[union-attr]
        c.seek_to_beginning()
        out: list[dict[str, object]] = []
        deadline = time.monotonic() + timeout_s
        while len(out) < n and time.monotonic() < deadline:
            for recs in c.poll(500).values():
                out.extend(json.loads(r.value) for r in recs)
        return out
    finally:
        c.close()


def test_malformed_and_oversized_messages_are_dead_lettered_and_the_consumers_go_on(
    stack: Stack, clip_frames: list[np.ndarray], tmp_path: Path
) -> None:
    cfg = kafka_config(stack.broker)
    bus = KafkaBus(cfg, tmp_path / "central", role="node")
    signer = Signer.load_or_create(tmp_path / "keys" / "signing.pem")
    sessions = open_db(f"sqlite:///{tmp_path / 'cases.db'}")
    stop = threading.Event()
    threads = [
        threading.Thread(target=run_sealer, args=(bus, stack.store, signer, stop), daemon=True),
        threading.Thread(target=run_drafter, args=(bus, sessions, "NS", stop), daemon=True),
    ]
    raw = KafkaProducer(bootstrap_servers=stack.broker.bootstrap, max_request_size=8 * 1024**2)
    oversized = b'{"event_id": "' + b"x" * (2 * 1024**2) + b'"}'
    try:
        bus.ensure_topics()
        for t in threads:
            t.start()
        good = make_event(stack.store, clip_frames, "cam-9", n_clip=2)
        for value in (b"\xff\xfe not json", b'{"schema_version": 1, "type": "stray_dog"}', oversized):
            raw.send(TOPIC_VIOLATIONS, key=b"cam-9", value=value).get(10)
        raw.send(TOPIC_EVIDENCE, key=b"cam-9", value=b"[]").get(10)
        raw.send(TOPIC_EVIDENCE, key=b"cam-9", value=oversized).get(10)
        raw.send(TOPIC_VIOLATIONS, key=b"cam-9", value=good.model_dump_json().encode()).get(10)

        def count() -> int:
            with sessions() as s:
                return int(s.scalar(select(func.count()).select_from(Case)) or 0)

        wait_for(lambda: count() == 1, 60, "the good event's case")
        dead = _dead_letters(stack.broker, 5)
        assert len(dead) == 5, dead
        schema = json.loads((ROOT / "docs" / "schemas" / f"{TOPIC_DEAD_LETTER}.json").read_text())
        for record in dead:
            jsonschema.validate(record, schema)
        by = {(r["topic"], r["value_bytes"]): r for r in dead}
        big = len(oversized)
        for topic in (TOPIC_VIOLATIONS, TOPIC_EVIDENCE):
            r = by[(topic, big)]
            assert f"exceeds the {MAX_EVENT_BYTES}-byte limit" in str(r["reason"])
            assert r["truncated"] is True and r["value_sha256"] == hashlib.sha256(oversized).hexdigest()
            assert len(str(r["value"])) < 100_000
        reasons = " | ".join(str(r["reason"]) for r in dead)
        assert "not a valid ViolationEvent" in reasons and "not an EvidenceSealed event" in reasons
        assert any("value_base64" in r for r in dead)  # the binary one is kept, as base64
        with sessions() as s:
            assert s.scalar(select(Case.event_id)) == good.event_id
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=20)
        raw.close()
        bus.close()
