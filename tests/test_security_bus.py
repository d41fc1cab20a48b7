"""Attacks through the bus (issue 11, item 7): a poisoned message must be dead-lettered with its reason while
the consumer goes on sealing and drafting, on the embedded bus and on a real Kafka-protocol broker (Tansu); a
consumer thread that dies turns readiness false.

Before the fix: an event whose evidence key was ``../../keys/signing.pem`` made the sealer retry forever (no
later event was ever sealed, across restarts), and a log row the consumer could not read killed the drafter
thread while ``/readyz`` still said ready.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from services.fixtures import kafka_config, make_event, wait_for
from services.servers import Tansu

from nonsite.bus import Bus, EmbeddedBus, Message, open_bus
from nonsite.bus.events import (
    TOPIC_DEAD_LETTER,
    TOPIC_EVIDENCE,
    TOPIC_VIOLATIONS,
    CaseDecision,
    EvidenceItem,
    EvidenceSealed,
    ViolationEvent,
)
from nonsite.bus.kafka import KafkaBus
from nonsite.cases import Case, open_db, run_drafter
from nonsite.config.services import BusConfig
from nonsite.evidence.local import LocalStore
from nonsite.evidence.sealer import run_sealer
from nonsite.evidence.signing import Signer

TRAVERSAL = "../../keys/signing.pem"


@pytest.fixture(scope="module")
def frames(clip_frames: list[np.ndarray]) -> list[np.ndarray]:
    return clip_frames


def poisoned(event: ViolationEvent, key: str = TRAVERSAL) -> bytes:
    """``event`` as JSON with its first evidence key replaced (as an attacker on the bus would send it)."""
    raw = json.loads(event.model_dump_json())
    raw["evidence"][0]["key"] = key
    return json.dumps(raw).encode()


def all_messages(bus: Bus, topic: str, n: int, timeout_s: float = 60.0) -> list[Message]:
    """The first ``n`` messages of ``topic``, read from the beginning by an observer outside every group (on Kafka:
    assigned partitions, no group coordination, so it neither waits for nor disturbs the consumers under test)."""
    if isinstance(bus, KafkaBus):
        return _kafka_messages(bus.cfg.bootstrap_servers, topic, n, timeout_s)
    consumer = bus.consumer(topic, f"test-reader-{uuid.uuid4().hex[:8]}")
    got: list[Message] = []

    def enough() -> bool:
        got.extend(consumer.poll(100, 0.2))
        return len(got) >= n

    try:
        wait_for(enough, timeout_s, f"{n} message(s) on {topic}")
    finally:
        consumer.close()
    return got


def _kafka_messages(bootstrap: str, topic: str, n: int, timeout_s: float) -> list[Message]:
    from kafka import KafkaConsumer, TopicPartition

    c = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest",
                      max_partition_fetch_bytes=8 * 1024**2)
    got: list[Message] = []
    try:
        parts = wait_for(lambda: c.partitions_for_topic(topic), 10, f"the topic {topic}")
        c.assign([TopicPartition(topic, p) for p in parts])  # type: ignore[union-attr]
        c.seek_to_beginning()

        def enough() -> bool:
            for recs in c.poll(200).values():
                got.extend(Message(topic=r.topic, partition=r.partition, offset=r.offset,
                                   key=r.key.decode() if r.key else "", value=r.value) for r in recs)
            return len(got) >= n

        wait_for(enough, timeout_s, f"{n} message(s) on {topic}")
    finally:
        c.close()
    return got


@pytest.mark.parametrize("key", [TRAVERSAL, "/etc/passwd", "events/a/../../x", "events//x", "events/a\\b",
                                 "events/a b", "events/%2e%2e/x", "", "a" * 513])
def test_the_contract_refuses_keys_that_leave_the_store(key: str) -> None:
    with pytest.raises(ValidationError, match="store key"):
        EvidenceItem(role="onset", key=key, sha256="0" * 64, bytes=1, content_type="image/jpeg")
    EvidenceItem(role="onset", key="events/3f2a-uuid_1.x/onset.jpg", sha256="0" * 64, bytes=1,
                 content_type="image/jpeg")


class Sealer:
    """``run_sealer`` in a thread over ``bus`` with a local store."""

    def __init__(self, bus: Bus, store: LocalStore, signer: Signer) -> None:
        self.stop = threading.Event()
        self.thread = threading.Thread(target=run_sealer, args=(bus, store, signer, self.stop), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(20)


def _sealer_goes_on_past_a_traversal_key(bus: Bus, tmp_path: Path, frames: list[np.ndarray]) -> None:
    store = LocalStore(tmp_path / "evidence")
    signer = Signer.load_or_create(tmp_path / "keys" / "signing.pem")
    bad = make_event(store, frames, camera_id="cam-01")
    good = make_event(store, frames, camera_id="cam-01")
    bus.publish(TOPIC_VIOLATIONS, "cam-01", poisoned(bad))
    bus.publish(TOPIC_VIOLATIONS, "cam-01", good.model_dump_json().encode())
    sealer = Sealer(bus, store, signer)
    try:
        sealed = all_messages(bus, TOPIC_EVIDENCE, 1)
        assert [EvidenceSealed.model_validate_json(m.value).event_id for m in sealed] == [good.event_id]
        dead = all_messages(bus, TOPIC_DEAD_LETTER, 1)
        record = json.loads(dead[0].value)
        assert record["consumer_group"] == "nonsite-sealer" and "store key" in record["reason"]
        assert TRAVERSAL in record["value"]
        assert sealer.thread.is_alive()
    finally:
        sealer.close()
    assert not store.exists(f"events/{bad.event_id}/manifest.json")
    # Nothing outside the store was read into a package, and the key file is untouched.
    assert (tmp_path / "keys" / "signing.pem").read_bytes().startswith(b"-----BEGIN PRIVATE KEY")


def test_a_traversal_key_is_dead_lettered_and_sealing_goes_on_embedded(tmp_path: Path,
                                                                       frames: list[np.ndarray]) -> None:
    bus = EmbeddedBus(tmp_path / "bus.sqlite")
    try:
        _sealer_goes_on_past_a_traversal_key(bus, tmp_path, frames)
        # Across a restart the poison stays behind: the group's position is past it.
        assert bus.lag(TOPIC_VIOLATIONS, "nonsite-sealer") == 0
    finally:
        bus.close()


def test_a_traversal_key_is_dead_lettered_and_sealing_goes_on_kafka(tansu: Tansu, tmp_path: Path,
                                                                    frames: list[np.ndarray]) -> None:
    bus = open_bus(BusConfig(kind="kafka", kafka=kafka_config(tansu, partitions=1)), tmp_path, role="sealer")
    try:
        _sealer_goes_on_past_a_traversal_key(bus, tmp_path, frames)
    finally:
        bus.close()


def test_a_key_the_store_refuses_is_dead_lettered_not_retried_forever(tmp_path: Path,
                                                                       frames: list[np.ndarray]) -> None:
    """A key that passes the contract but that this store cannot hold (its reserved temp prefix) is a permanent
    error: dead-lettered at once, not retried as if the store were down."""
    bus = EmbeddedBus(tmp_path / "bus.sqlite")
    store = LocalStore(tmp_path / "evidence")
    bad = make_event(store, frames)
    raw = json.loads(bad.model_dump_json())
    raw["evidence"][0]["key"] = f"events/{bad.event_id}/.nonsite-tmp-x"
    good = make_event(store, frames)
    bus.publish(TOPIC_VIOLATIONS, "cam-01", json.dumps(raw).encode())
    bus.publish(TOPIC_VIOLATIONS, "cam-01", good.model_dump_json().encode())
    sealer = Sealer(bus, store, Signer.load_or_create(tmp_path / "keys" / "signing.pem"))
    try:
        sealed = all_messages(bus, TOPIC_EVIDENCE, 1)
        assert EvidenceSealed.model_validate_json(sealed[0].value).event_id == good.event_id
        assert "reserved prefix" in json.loads(all_messages(bus, TOPIC_DEAD_LETTER, 1)[0].value)["reason"]
    finally:
        sealer.close()
        bus.close()


class Drafter:
    def __init__(self, bus: Bus, db_url: str) -> None:
        self.sessions = open_db(db_url)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=run_drafter, args=(bus, self.sessions, "NS", self.stop),
                                       kwargs={"poll_timeout_s": 0.1}, daemon=True)
        self.thread.start()

    def cases(self) -> list[str]:
        with self.sessions() as s:
            return [c.event_id for c in s.query(Case).order_by(Case.id)]

    def close(self) -> None:
        self.stop.set()
        self.thread.join(20)
        self.sessions.kw["bind"].dispose()


def _sealed_json() -> tuple[str, bytes]:
    from test_cases_drafter import make_sealed

    s = make_sealed()
    return s.event_id, s.model_dump_json().encode()


def test_a_malformed_log_row_does_not_kill_the_drafter(tmp_path: Path) -> None:
    bus = EmbeddedBus(tmp_path / "bus.sqlite")
    bus.publish(TOPIC_EVIDENCE, "cam-01", b"{}")  # the topic exists; then another program writes bad rows
    with sqlite3.connect(tmp_path / "bus.sqlite") as c:
        c.execute("INSERT INTO messages (topic, offset, key, value, ts) VALUES (?, 1, 7, 'text, not bytes', 0)",
                  (TOPIC_EVIDENCE,))
        c.execute("INSERT INTO messages (topic, offset, key, value, ts) VALUES (?, 2, 'k', -1, 0)",
                  (TOPIC_EVIDENCE,))
    event_id, value = _sealed_json()
    bus.publish(TOPIC_EVIDENCE, "cam-01", value)
    drafter = Drafter(bus, f"sqlite:///{tmp_path / 'cases.db'}")
    try:
        wait_for(lambda: drafter.cases() == [event_id], 20, "the good event's case")
        dead = all_messages(bus, TOPIC_DEAD_LETTER, 3)
        assert [json.loads(m.value)["offset"] for m in dead] == [0, 1, 2]
        assert drafter.thread.is_alive()
    finally:
        drafter.close()
        bus.close()


def test_poison_on_kafka_is_dead_lettered_and_drafting_goes_on(tansu: Tansu, tmp_path: Path) -> None:
    bus = open_bus(BusConfig(kind="kafka", kafka=kafka_config(tansu, partitions=1)), tmp_path, role="drafter")
    try:
        raw = json.loads(_sealed_json()[1])
        raw["manifest_key"] = "../../../etc/shadow"
        bus.publish(TOPIC_EVIDENCE, "cam-01", json.dumps(raw).encode())
        bus.publish(TOPIC_EVIDENCE, "cam-01", b"\xff\xfe not json")
        event_id, value = _sealed_json()
        bus.publish(TOPIC_EVIDENCE, "cam-01", value)
        drafter = Drafter(bus, f"sqlite:///{tmp_path / 'cases.db'}")
        try:
            wait_for(lambda: drafter.cases() == [event_id], 60, "the good event's case")
            reasons = [json.loads(m.value)["reason"] for m in all_messages(bus, TOPIC_DEAD_LETTER, 2)]
            assert "manifest_key" in reasons[0] and "JSON" in reasons[1]
            assert drafter.thread.is_alive()
        finally:
            drafter.close()
    finally:
        bus.close()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_readiness_turns_false_when_a_consumer_thread_dies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    from nonsite import app
    from nonsite.config import NonsiteConfig

    died = threading.Event()

    def crashing_drafter(*args: Any, **kwargs: Any) -> None:
        died.set()
        raise RuntimeError("drafter crashed")

    cfg = NonsiteConfig.model_validate({"data_dir": str(tmp_path / "data")})
    node = app.Embedded(cfg)
    monkeypatch.setattr("nonsite.cases.drafter.run_drafter", crashing_drafter)
    try:
        node.start_consumers()
        died.wait(5)
        wait_for(lambda: not node.consumers_readiness()["consumers"]["ok"], 10, "readiness to turn false")
        assert "drafter" in node.consumers_readiness()["consumers"]["detail"]
    finally:
        node.close()
    monkeypatch.undo()
    healthy = app.Embedded(cfg)
    try:
        healthy.start_consumers()
        assert healthy.consumers_readiness()["consumers"]["ok"]
    finally:
        healthy.close()


# -- fuzzing: random JSON on every topic a consumer reads -> handled or dead-lettered, the consumer alive ------

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)


def _mutations(model: type[Any], base: dict[str, Any]) -> st.SearchStrategy[bytes]:
    """Random JSON, and valid messages of ``model`` with one field replaced by random JSON."""
    fields = list(model.model_fields)
    replaced = st.builds(lambda f, v: json.dumps({**base, f: v}).encode(), st.sampled_from(fields), _json)
    return st.one_of(_json.map(lambda v: json.dumps(v).encode()), replaced, st.binary(max_size=64))


@pytest.fixture(scope="module")
def fuzz_env(tmp_path_factory: pytest.TempPathFactory, clip_frames: list[np.ndarray]) -> Iterator[
        Callable[[str, bytes], list[Message]]]:
    """One sealer and one drafter thread on an embedded bus; feed(topic, value) publishes one message, waits
    until its consumer committed it, and returns what that consumer dead-lettered for it."""
    d = tmp_path_factory.mktemp("fuzz")
    bus = EmbeddedBus(d / "bus.sqlite")
    store = LocalStore(d / "evidence")
    sealer = Sealer(bus, store, Signer.load_or_create(d / "keys" / "signing.pem"))
    drafter = Drafter(bus, f"sqlite:///{d / 'cases.db'}")
    groups = {TOPIC_VIOLATIONS: "nonsite-sealer", TOPIC_EVIDENCE: "nonsite-drafter"}
    dead = bus.consumer(TOPIC_DEAD_LETTER, "fuzz-reader")

    def feed(topic: str, value: bytes) -> list[Message]:
        bus.publish(topic, "fuzz", value)
        end = bus.end_offset(topic)
        wait_for(lambda: bus.committed(topic, groups[topic]) >= end, 20, f"{topic} to be consumed")
        assert sealer.thread.is_alive() and drafter.thread.is_alive()
        return dead.poll(100, 0.0)

    try:
        yield feed
    finally:
        sealer.close()
        drafter.close()
        bus.close()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzz_violation_messages_are_sealed_or_dead_lettered(fuzz_env: Callable[[str, bytes], list[Message]],
                                                            data: st.DataObject) -> None:
    from test_cases_drafter import make_sealed

    base = json.loads(make_sealed().violation.model_dump_json())
    value = data.draw(_mutations(ViolationEvent, base))
    fuzz_env(TOPIC_VIOLATIONS, value)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzz_sealed_messages_are_drafted_or_dead_lettered(fuzz_env: Callable[[str, bytes], list[Message]],
                                                          data: st.DataObject) -> None:
    from test_cases_drafter import make_sealed

    base = json.loads(make_sealed().model_dump_json())
    value = data.draw(_mutations(EvidenceSealed, base))
    dead = fuzz_env(TOPIC_EVIDENCE, value)
    try:
        EvidenceSealed.model_validate_json(value)
    except ValidationError:
        assert dead, "an invalid sealed event must be dead-lettered"


def test_every_bus_schema_refuses_random_json_with_a_validation_error() -> None:
    """The contracts never raise anything but ValidationError for any JSON (no TypeError, no recursion)."""
    @settings(max_examples=150, deadline=None)
    @given(value=_json)
    def check(value: object) -> None:
        for model in (ViolationEvent, EvidenceSealed, CaseDecision):
            with contextlib.suppress(ValidationError):
                model.model_validate_json(json.dumps(value))

    check()
