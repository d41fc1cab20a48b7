"""The Kafka bus against a real Kafka-protocol broker (Tansu) on loopback: topics, keys, groups, commits,
the durable outbox across a broker outage, metrics."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from prometheus_client import REGISTRY
from services.fixtures import kafka_config, wait_for
from services.servers import Tansu, free_port

from nonsite.bus import open_bus
from nonsite.bus.events import TOPIC_DEAD_LETTER, TOPIC_VIOLATIONS
from nonsite.bus.kafka import TOPICS, BusError, KafkaBus
from nonsite.config.services import BusConfig


def drain(consumer, n: int, timeout_s: float = 30.0, commit: bool = True) -> list:  # type: ignore[no-untyped-def]
    got: list = []
    deadline = time.monotonic() + timeout_s
    while len(got) < n and time.monotonic() < deadline:
        for m in consumer.poll(100, 0.5):
            got.append(m)
            if commit:
                consumer.commit(m)
    return got


def sample(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def test_topics_are_created_with_partitions_and_retention(tansu: Tansu, tmp_path: Path) -> None:
    bus = KafkaBus(kafka_config(tansu, partitions=4, retention_hours=24, dead_letter_retention_hours=48),
                   tmp_path, role="t")
    try:
        assert bus.ensure_topics() == [] or True  # the relay may have created them already
        admin = KafkaAdminClient(bootstrap_servers=tansu.bootstrap)
        try:
            assert set(TOPICS) <= set(admin.list_topics())
            for t in admin.describe_topics(list(TOPICS)):
                assert len(t["partitions"]) == 4, t
        finally:
            admin.close()
        assert bus.end_offsets(TOPIC_VIOLATIONS) == {0: 0, 1: 0, 2: 0, 3: 0}
        assert bus.ensure_topics() == []  # idempotent
    finally:
        bus.close()
    from nonsite.bus.kafka import topic_specs

    specs = topic_specs(kafka_config(tansu, retention_hours=24, dead_letter_retention_hours=48))
    assert specs[TOPIC_VIOLATIONS]["configs"]["retention.ms"] == str(24 * 3600 * 1000)
    assert specs[TOPIC_DEAD_LETTER]["configs"]["retention.ms"] == str(48 * 3600 * 1000)


def test_keyed_by_camera_in_order_and_consumer_groups_share_partitions(tansu: Tansu, tmp_path: Path) -> None:
    bus = open_bus(BusConfig(kind="kafka", kafka=kafka_config(tansu)), tmp_path, role="edge")
    assert isinstance(bus, KafkaBus)
    try:
        for i in range(30):
            bus.publish(TOPIC_VIOLATIONS, f"cam-{i % 3}", f"{i}".encode())
        assert bus.drain(20)
        # Two members of one group split the partitions; together they see every message exactly once.
        a, b = bus.consumer(TOPIC_VIOLATIONS, "g"), bus.consumer(TOPIC_VIOLATIONS, "g")
        got: list = []
        stop = threading.Event()

        def run(c) -> None:  # type: ignore[no-untyped-def]
            while not stop.is_set():
                for m in c.poll(10, 0.3):
                    got.append((c, m))
                    c.commit(m)

        threads = [threading.Thread(target=run, args=(c,)) for c in (a, b)]
        for t in threads:
            t.start()
        wait_for(lambda: len(got) >= 30, 40, "30 messages in the group")
        time.sleep(1.0)
        stop.set()
        for t in threads:
            t.join()
        values = [int(m.value) for _, m in got]
        assert sorted(values) == list(range(30))  # none lost, none twice
        by_cam: dict[str, list[int]] = {}
        partitions: dict[str, set[int]] = {}
        for _, m in got:
            by_cam.setdefault(m.key, []).append(int(m.value))
            partitions.setdefault(m.key, set()).add(m.partition)
        assert all(len(p) == 1 for p in partitions.values()), partitions  # one camera -> one partition
        assert all(v == sorted(v) for v in by_cam.values())  # in order per camera
        assert bus.lag(TOPIC_VIOLATIONS, "g") == 0
        a.close()
        b.close()
    finally:
        bus.close()


def test_uncommitted_messages_are_redelivered_to_the_group(tansu: Tansu, tmp_path: Path) -> None:
    bus = KafkaBus(kafka_config(tansu, partitions=1), tmp_path, role="t")
    try:
        for i in range(5):
            bus.publish(TOPIC_VIOLATIONS, "cam", f"{i}".encode())
        assert bus.drain(20)
        c = bus.consumer(TOPIC_VIOLATIONS, "g")
        first = drain(c, 5, commit=False)
        assert [int(m.value) for m in first] == [0, 1, 2, 3, 4]
        c.commit(first[1])  # done with 0 and 1 only, then "crash"
        c.close()
        assert bus.lag(TOPIC_VIOLATIONS, "g") == 3
        c = bus.consumer(TOPIC_VIOLATIONS, "g")
        again = drain(c, 3)
        assert [int(m.value) for m in again] == [2, 3, 4]
        c.close()
        assert bus.lag(TOPIC_VIOLATIONS, "g") == 0
    finally:
        bus.close()


def test_broker_down_publish_goes_to_the_outbox_and_replays_in_order(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The edge publishes while no broker runs: publish returns at once, the outbox holds everything
    (and says so in the metric), and when the broker comes up the relay delivers all, in order, once."""
    port = free_port()
    broker = Tansu(port=port)
    caplog.set_level(logging.WARNING, logger="nonsite.bus.kafka")
    bus = KafkaBus(kafka_config(broker, partitions=1), tmp_path, role="edge")
    try:
        for i in range(50):  # with no broker at all: publishing returns (into the outbox), never waits for one
            bus.publish(TOPIC_VIOLATIONS, "cam-1", f"{i}".encode())
        assert bus.pending() == 50
        assert sample("nonsite_bus_outbox_depth", client="nonsite-edge") == 50
        assert sample("nonsite_bus_broker_up", client="nonsite-edge") == 0
        wait_for(lambda: any("unreachable" in r.getMessage() for r in caplog.records), 15, "the outage warning")
        broker.start()
        assert bus.drain(60), f"outbox not drained: {bus.pending()} left"
        assert sample("nonsite_bus_outbox_depth", client="nonsite-edge") == 0
        assert sample("nonsite_bus_broker_up", client="nonsite-edge") == 1
        c = bus.consumer(TOPIC_VIOLATIONS, "g")
        got = drain(c, 50)
        assert [int(m.value) for m in got] == list(range(50))
        assert drain(c, 1, timeout_s=2) == []  # nothing twice
        c.close()
    finally:
        bus.close()
        broker.close()


def test_a_publisher_connected_before_the_broker_was_killed_delivers_after_it_returns(tmp_path: Path) -> None:
    """The broker dies (SIGKILL) under a connected publisher and comes back empty (Tansu keeps memory only, like a
    broker whose disks were replaced): what was published before, during and after reaches it, in order, once.
    The publisher's producer from before knows a producer id and sequence numbers the new broker never saw."""
    broker = Tansu()
    broker.start()
    bus = KafkaBus(kafka_config(broker, partitions=1), tmp_path, role="sealer")
    try:
        for i in range(3):
            bus.publish(TOPIC_VIOLATIONS, "cam-1", f"{i}".encode())
        assert bus.drain(30)
        broker.kill()
        for i in range(3, 6):
            bus.publish(TOPIC_VIOLATIONS, "cam-1", f"{i}".encode())
        time.sleep(2)
        broker.start()
        for i in range(6, 8):
            bus.publish(TOPIC_VIOLATIONS, "cam-1", f"{i}".encode())
        assert bus.drain(60), f"outbox not drained: {bus.pending()} left"
        c = bus.consumer(TOPIC_VIOLATIONS, "g")
        got = [int(m.value) for m in drain(c, 5)]
        assert got == list(range(3, 8))  # the broker's log starts over: what reached it after its restart
        assert drain(c, 1, timeout_s=2) == []
        c.close()
        # the producers given up on were closed: one sender thread is left, the live producer's
        assert [t.name for t in threading.enumerate()].count(f"{bus.client_id}-network-thread") == 1
    finally:
        bus.close()
        broker.close()


def test_the_outbox_survives_a_restart_of_the_publisher(tmp_path: Path) -> None:
    broker = Tansu()
    cfg = kafka_config(broker, partitions=1)
    bus = KafkaBus(cfg, tmp_path, role="edge")
    for i in range(3):
        bus.publish(TOPIC_VIOLATIONS, "cam-1", f"{i}".encode())
    bus.close()  # the process ends with the broker still down
    try:
        broker.start()
        bus = KafkaBus(cfg, tmp_path, role="edge")  # next start: replays what the last one left
        try:
            assert bus.drain(30)
            c = bus.consumer(TOPIC_VIOLATIONS, "g")
            assert [int(m.value) for m in drain(c, 3)] == [0, 1, 2]
            c.close()
        finally:
            bus.close()
    finally:
        broker.close()


def test_two_publishers_of_one_role_get_separate_outboxes(tmp_path: Path) -> None:
    broker = Tansu()  # never started: both spool
    cfg = kafka_config(broker)
    a, b = KafkaBus(cfg, tmp_path, role="sealer"), KafkaBus(cfg, tmp_path, role="sealer")
    try:
        assert a.outbox.path != b.outbox.path
        a.publish(TOPIC_VIOLATIONS, "k", b"a")
        assert (a.pending(), b.pending()) == (1, 0)
    finally:
        a.close()
        b.close()
        broker.close()


def test_oversized_publish_is_refused_with_a_clear_error(tansu: Tansu, tmp_path: Path) -> None:
    bus = KafkaBus(kafka_config(tansu, max_message_bytes=10_000), tmp_path, role="t")
    try:
        with pytest.raises(BusError, match="exceeds bus.kafka.max_message_bytes"):
            bus.publish(TOPIC_VIOLATIONS, "cam", b"x" * 10_001)
        assert bus.pending() == 0
    finally:
        bus.close()


def test_consumer_lag_metric(tansu: Tansu, tmp_path: Path) -> None:
    bus = KafkaBus(kafka_config(tansu, partitions=1), tmp_path, role="t")
    try:
        for i in range(4):
            bus.publish(TOPIC_VIOLATIONS, "cam", f"{i}".encode())
        assert bus.drain(20)
        c = bus.consumer(TOPIC_VIOLATIONS, "lagging")
        got = drain(c, 4, commit=False)
        c.commit(got[0])
        c.poll(1, 0.5)
        assert sample("nonsite_bus_consumer_lag", topic=TOPIC_VIOLATIONS, group="lagging", client=c.client_id) == 3
        assert bus.lag(TOPIC_VIOLATIONS, "lagging") == 3
        c.close()
        assert sample("nonsite_bus_consumer_lag", topic=TOPIC_VIOLATIONS, group="lagging", client=c.client_id) is None
    finally:
        bus.close()


def test_a_role_started_before_its_broker_waits_for_it(tmp_path: Path) -> None:
    broker = Tansu()
    bus = KafkaBus(kafka_config(broker, partitions=1), tmp_path, role="t")
    c = bus.consumer(TOPIC_VIOLATIONS, "g")
    try:
        assert c.poll(10, 0.2) == []  # no broker: an empty poll, not an exception
        broker.start()
        bus.publish(TOPIC_VIOLATIONS, "cam", b"late")
        assert bus.drain(30)
        assert [m.value for m in drain(c, 1)] == [b"late"]
    finally:
        c.close()
        bus.close()
        broker.close()


def test_raw_kafka_client_sees_the_camera_key(tansu: Tansu, tmp_path: Path) -> None:
    """What an integrator's consumer (any Kafka client) sees: key = camera id, value = the JSON bytes."""
    bus = KafkaBus(kafka_config(tansu, partitions=1), tmp_path, role="t")
    try:
        bus.publish(TOPIC_VIOLATIONS, "cam-7", b'{"x": 1}')
        assert bus.drain(20)
    finally:
        bus.close()
    c = KafkaConsumer(bootstrap_servers=tansu.bootstrap, enable_auto_commit=False)
    try:
        tp = TopicPartition(TOPIC_VIOLATIONS, 0)
        c.assign([tp])
        c.seek_to_beginning(tp)
        recs = wait_for(lambda: c.poll(1000).get(tp), 20, "the record")
        assert recs[0].key == b"cam-7" and recs[0].value == b'{"x": 1}'  # type: ignore[index]
    finally:
        c.close()
