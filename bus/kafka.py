"""The Kafka bus of the distributed mode (kafka-python), behind the same :class:`~.base.Bus` protocol.

- Topics ``nonsite.violations`` / ``nonsite.evidence`` / ``nonsite.cases`` / ``nonsite.dead-letter`` are
  created at start with the configured partitions, replication and retention (admin client); messages are
  keyed by camera id, so one camera's events keep their order in one partition.
- Publishing: acks=all, unbounded retries, idempotence where the broker supports it (kafka-python turns it
  on by default and off, with a warning, against brokers older than 0.11). ``publish`` returns once the
  broker acknowledged the message *or* once it is in the local durable outbox (:mod:`.outbox`); a relay
  thread replays the outbox, in order, when the broker is back. While anything waits in the outbox, new
  messages queue behind it, so order is kept and the caller (an edge worker) never waits on a dead broker
  for more than one ``publish_timeout_s``.
- Consuming: consumer groups, manual commit of exactly the message that was handled (after its work is
  durable); a commit refused because the partition moved to another member is not an error (the new owner
  redelivers, and every consumer here is idempotent by event id).
- Metrics: outbox depth, broker reachability and consumer lag (:mod:`.metrics`).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import (
    CommitFailedError,
    IllegalGenerationError,
    KafkaError,
    MessageSizeTooLargeError,
    RebalanceInProgressError,
    TopicAlreadyExistsError,
    UnknownMemberIdError,
)
from kafka.structs import OffsetAndMetadata

from nonsite.bus.base import Message
from nonsite.bus.deadletter import MAX_EVENT_BYTES
from nonsite.bus.events import (
    TOPIC_CAMERA_CONTROL,
    TOPIC_CAMERAS,
    TOPIC_CASES,
    TOPIC_DEAD_LETTER,
    TOPIC_EVIDENCE,
    TOPIC_RECHECK,
    TOPIC_VIOLATIONS,
)
from nonsite.bus.metrics import BROKER_UP, CONSUMER_LAG, OUTBOX_DEPTH, PUBLISHED, SPOOLED, forget
from nonsite.bus.outbox import Outbox
from nonsite.config.services import KafkaConfig

log = logging.getLogger(__name__)

TOPICS = (TOPIC_VIOLATIONS, TOPIC_EVIDENCE, TOPIC_CASES, TOPIC_RECHECK, TOPIC_DEAD_LETTER, TOPIC_CAMERAS,
          TOPIC_CAMERA_CONTROL)
#: Camera states are only worth their latest value: an hour is plenty (a console starting reads from the end).
CAMERAS_RETENTION_HOURS = 1.0
_BOOTSTRAP_TIMEOUT_MS = 3000
_RELAY_MIN_S, _RELAY_MAX_S = 0.5, 30.0
#: Consumers fetch up to this much per partition, so an oversized message is read (and dead-lettered),
#: never stuck in front of the others.
_FETCH_BYTES = 16 * 1024 * 1024
_COMMIT_MOVED = (CommitFailedError, RebalanceInProgressError, IllegalGenerationError, UnknownMemberIdError)


class BusError(ValueError):
    """A publish that can never succeed (a message over the size limit); the message says why."""


def client_settings(cfg: KafkaConfig) -> dict[str, Any]:
    """Connection settings shared by producer, consumers and admin client (credentials from the environment)."""
    kw: dict[str, Any] = {
        "bootstrap_servers": [s.strip() for s in cfg.bootstrap_servers.split(",") if s.strip()],
        "security_protocol": cfg.security_protocol,
    }
    if cfg.ssl_cafile:
        kw["ssl_cafile"] = cfg.ssl_cafile
    if cfg.sasl_mechanism:
        kw["sasl_mechanism"] = cfg.sasl_mechanism
        kw["sasl_plain_username"] = os.environ.get(cfg.sasl_username_env, "")
        kw["sasl_plain_password"] = os.environ.get(cfg.sasl_password_env, "")
    return kw


def topic_specs(cfg: KafkaConfig) -> dict[str, dict[str, Any]]:
    """What :meth:`KafkaBus.ensure_topics` creates: partitions, replication and retention.ms per topic."""
    def spec(hours: float) -> dict[str, Any]:
        return {
            "num_partitions": cfg.partitions,
            "replication_factor": cfg.replication_factor,
            "configs": {"retention.ms": str(int(hours * 3600 * 1000))},
        }

    out = {t: spec(cfg.retention_hours) for t in (TOPIC_VIOLATIONS, TOPIC_EVIDENCE, TOPIC_CASES, TOPIC_RECHECK)}
    out[TOPIC_DEAD_LETTER] = spec(cfg.dead_letter_retention_hours)
    out[TOPIC_CAMERAS] = spec(CAMERAS_RETENTION_HOURS)
    out[TOPIC_CAMERA_CONTROL] = spec(cfg.retention_hours)
    return out


class KafkaBus:
    """A :class:`~nonsite.bus.base.Bus` over Kafka with a durable local outbox.

    ``role`` names the process's part (edge, sealer, drafter, node): it is appended to the client id and
    names the outbox file (``<outbox_dir>/outbox-<role>.sqlite``).
    """

    def __init__(self, cfg: KafkaConfig, outbox_dir: str | os.PathLike[str], role: str = "node") -> None:
        self.cfg = cfg
        self.role = role
        self.client_id = f"{cfg.client_id}-{role}"
        self.outbox = Outbox(Path(outbox_dir), f"outbox-{role}")
        self._producer: KafkaProducer | None = None
        self._producer_lock = threading.Lock()
        self._topics_ready = not cfg.create_topics
        self._healthy = False  # direct sends only once the relay has connected and the outbox is empty
        self._reported_down = False
        self._wake = threading.Event()
        self._stop = threading.Event()
        self.offsets = KafkaOffsets(cfg, self.client_id)
        OUTBOX_DEPTH.labels(self.client_id).set(self.outbox.depth())
        BROKER_UP.labels(self.client_id).set(0)
        self._relay = threading.Thread(target=self._relay_loop, name=f"bus-relay-{role}", daemon=True)
        self._relay.start()

    def __repr__(self) -> str:
        return f"KafkaBus({self.cfg.bootstrap_servers!r}, role={self.role!r}, outbox={self.outbox.depth()})"

    # -- publishing ------------------------------------------------------------------------------------

    def publish(self, topic: str, key: str, value: bytes) -> None:
        """Hand ``value`` to the broker (acked by all in-sync replicas) or, failing that, to the outbox.

        Returns once the message survives a crash of this process. Raises :class:`BusError` for a message
        larger than ``bus.kafka.max_message_bytes`` (it could never be delivered).
        """
        if len(value) > self.cfg.max_message_bytes:
            raise BusError(
                f"a {len(value)}-byte message for {topic} exceeds bus.kafka.max_message_bytes "
                f"({self.cfg.max_message_bytes}); events name their media by key, they never carry it"
            )
        if self._healthy and self.outbox.depth() == 0:
            try:
                self._send(topic, key, value)
                return
            except MessageSizeTooLargeError as e:
                raise BusError(
                    f"the broker refused a {len(value)}-byte message for {topic} as too large: {e}"
                ) from None
            except KafkaError as e:
                self._down(e)
        self.outbox.append(topic, key, value)
        SPOOLED.labels(topic).inc()
        OUTBOX_DEPTH.labels(self.client_id).set(self.outbox.depth())
        self._wake.set()

    def publish_volatile(self, topic: str, key: str, value: bytes) -> bool:
        """Send ``value`` now if the broker is reachable, else drop it (False): for messages only worth their newest
        value (camera states), which must never queue up in the outbox behind the events."""
        if len(value) > self.cfg.max_message_bytes:
            raise BusError(f"a {len(value)}-byte message for {topic} exceeds bus.kafka.max_message_bytes "
                           f"({self.cfg.max_message_bytes})")
        if not self._healthy:
            self._wake.set()
            return False
        try:
            self._send(topic, key, value)
            return True
        except MessageSizeTooLargeError as e:
            raise BusError(f"the broker refused a {len(value)}-byte message for {topic} as too large: {e}") from None
        except KafkaError as e:
            self._down(e)
            self._wake.set()
            return False

    def pending(self) -> int:
        """Messages in the outbox, not yet acknowledged by the broker."""
        return self.outbox.depth()

    def drain(self, timeout_s: float) -> bool:
        """Wait until the outbox is empty (True) or ``timeout_s`` passed (False)."""
        deadline = time.monotonic() + timeout_s
        self._wake.set()
        while self.outbox.depth() > 0:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        return True

    def _producer_or_connect(self) -> KafkaProducer:
        with self._producer_lock:
            if self._producer is None:
                timeout_ms = int(self.cfg.publish_timeout_s * 1000)
                self._producer = KafkaProducer(
                    client_id=self.client_id,
                    acks="all",
                    linger_ms=0,
                    max_request_size=self.cfg.max_message_bytes + 64 * 1024,
                    request_timeout_ms=max(1000, timeout_ms // 2),
                    delivery_timeout_ms=max(2000, timeout_ms),
                    max_block_ms=timeout_ms,
                    bootstrap_timeout_ms=_BOOTSTRAP_TIMEOUT_MS,
                    reconnect_backoff_max_ms=2000,
                    **client_settings(self.cfg),
                )
                log.info("kafka producer %s connected to %s (idempotence %s)", self.client_id,
                         self.cfg.bootstrap_servers, "on" if self._producer.config.get("enable_idempotence") else "off")
            return self._producer

    def _drop_producer(self) -> None:
        """Close the producer after a failed send: the next attempt connects afresh. A broker that came back without
        its state (restarted on empty disks; Tansu in memory) knows neither the producer's id nor its sequence
        numbers, and a producer kept across it failed every send for good (tests/test_bus_kafka.py)."""
        with self._producer_lock:
            producer, self._producer = self._producer, None
        if producer is not None:
            try:
                producer.close(timeout=0)  # its unsent records are still in the outbox: nothing to flush
            except Exception as e:  # noqa: BLE001 (a flush that timed out: stop its sender thread all the same)
                log.debug("closing the failed kafka producer %s: %s", self.client_id, e)
                sender = getattr(producer, "_sender", None)
                if sender is not None:
                    sender.force_close()

    def _send(self, topic: str, key: str, value: bytes) -> None:
        producer = self._producer_or_connect()
        future = producer.send(topic, key=key.encode("utf-8"), value=value)
        future.get(timeout=self.cfg.publish_timeout_s)
        PUBLISHED.labels(topic).inc()

    def _down(self, e: BaseException) -> None:
        self._healthy = False
        self._topics_ready = not self.cfg.create_topics
        BROKER_UP.labels(self.client_id).set(0)
        if not self._reported_down:
            self._reported_down = True
            log.warning("kafka broker %s unreachable (%s: %s); events go to the outbox %s and are replayed "
                        "when it returns", self.cfg.bootstrap_servers, type(e).__name__, e, self.outbox.path)

    def _up(self) -> None:
        if self._reported_down:
            log.warning("kafka broker %s reachable again; replaying %d outbox message(s)",
                        self.cfg.bootstrap_servers, self.outbox.depth())
        self._reported_down = False
        BROKER_UP.labels(self.client_id).set(1)

    def _relay_loop(self) -> None:
        delay = _RELAY_MIN_S
        while not self._stop.is_set():
            if self._healthy and self.outbox.depth() == 0:
                self._wake.wait(1.0)
                self._wake.clear()
                continue
            try:
                self._producer_or_connect()
                if not self._topics_ready:
                    self.ensure_topics()
                self._up()
                while not self._stop.is_set():
                    batch = self.outbox.head(100)
                    if not batch:
                        break
                    for entry in batch:
                        if self._stop.is_set():
                            break
                        # One at a time: strict order, and single-record batches (some Kafka-protocol
                        # brokers report wrong end offsets for multi-record batches).
                        self._send(entry.topic, entry.key, entry.value)
                        self.outbox.remove(entry.id)
                        OUTBOX_DEPTH.labels(self.client_id).set(self.outbox.depth())
                self._healthy = self.outbox.depth() == 0
                delay = _RELAY_MIN_S
            except MessageSizeTooLargeError as e:  # the broker's limit is below ours: a config mismatch
                log.error("the broker refuses outbox messages as too large (%s); lower bus.kafka.max_message_bytes "
                          "to the broker's max.message.bytes. Retrying in %.0f s", e, _RELAY_MAX_S)
                self._stop.wait(_RELAY_MAX_S)
            except Exception as e:  # broker down, unknown topic after a broker reset, ...
                if self._stop.is_set():
                    break
                self._down(e)
                self._drop_producer()
                self._stop.wait(delay)
                delay = min(delay * 2, _RELAY_MAX_S)

    # -- topics ----------------------------------------------------------------------------------------

    def ensure_topics(self) -> list[str]:
        """Create the missing nonsite topics (partitions, replication, retention); returns those created."""
        admin = admin_client(self.cfg, self.client_id)
        try:
            existing = set(admin.list_topics())
            specs = {t: s for t, s in topic_specs(self.cfg).items() if t not in existing}
            created: list[str] = []
            if specs:
                try:
                    admin.create_topics(specs, timeout_ms=int(max(5.0, self.cfg.publish_timeout_s) * 1000),
                                        raise_errors=True)
                    created = sorted(specs)
                except TopicAlreadyExistsError:  # another process created them meanwhile
                    created = []
                log.info("created kafka topics %s (%d partitions, replication %d)", created or "(none)",
                         self.cfg.partitions, self.cfg.replication_factor)
            self._topics_ready = True
            return created
        finally:
            admin.close()

    # -- consuming -------------------------------------------------------------------------------------

    def consumer(self, topic: str, group: str) -> KafkaBusConsumer:
        return KafkaBusConsumer(self, topic, group)

    def tail(self, topic: str, *, from_start: bool = False) -> KafkaTailConsumer:
        """A reader of every partition of ``topic`` from its end on, in no consumer group (each reader sees every
        message published after it started; nothing is committed). ``from_start``: from the oldest message the
        topic keeps (its retention), with ``caught_up()`` telling when it reached the end it saw on connecting."""
        return KafkaTailConsumer(self, topic, from_start=from_start)

    def end_offsets(self, topic: str) -> dict[int, int]:
        return self.offsets.end_offsets(topic)

    def lag(self, topic: str, group: str) -> int:
        """Messages of ``topic`` that ``group`` has not committed (over every partition)."""
        return self.offsets.lag(topic, group)

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        self._relay.join(timeout=self.cfg.publish_timeout_s + 4)
        with self._producer_lock:
            if self._producer is not None:
                try:
                    self._producer.close(timeout=2)
                except Exception as e:  # closing a producer whose broker is gone
                    log.debug("closing the kafka producer: %s", e)
                self._producer = None
        self.offsets.close()
        forget(OUTBOX_DEPTH, self.client_id)
        forget(BROKER_UP, self.client_id)
        self.outbox.close()


def admin_client(cfg: KafkaConfig, client_id: str) -> KafkaAdminClient:
    """A new admin client (the caller closes it)."""
    return KafkaAdminClient(
        client_id=f"{client_id}-admin",
        request_timeout_ms=int(max(5.0, cfg.publish_timeout_s) * 1000),
        bootstrap_timeout_ms=_BOOTSTRAP_TIMEOUT_MS,
        **client_settings(cfg),
    )


class KafkaOffsets:
    """End offsets and committed offsets, read by consumers that never join a group (for lag)."""

    def __init__(self, cfg: KafkaConfig, client_id: str) -> None:
        self.cfg, self.client_id = cfg, client_id
        self._probes: dict[str, KafkaConsumer] = {}
        self._lock = threading.Lock()

    def _probe(self, group: str) -> KafkaConsumer:
        with self._lock:
            probe = self._probes.get(group)
            if probe is None:
                probe = KafkaConsumer(
                    group_id=group, client_id=f"{self.client_id}-probe", enable_auto_commit=False,
                    bootstrap_timeout_ms=_BOOTSTRAP_TIMEOUT_MS, request_timeout_ms=10000,
                    **client_settings(self.cfg),
                )
                self._probes[group] = probe
            return probe

    def end_offsets(self, topic: str, group: str = "nonsite-probe") -> dict[int, int]:
        """partition -> offset after its last message."""
        probe = self._probe(group)
        tps = [TopicPartition(topic, p) for p in sorted(probe.partitions_for_topic(topic) or set())]
        return {tp.partition: int(o) for tp, o in probe.end_offsets(tps).items()} if tps else {}

    def committed(self, topic: str, group: str) -> dict[int, int]:
        """partition -> ``group``'s committed offset (0 where it committed nothing)."""
        probe = self._probe(group)
        out = {}
        for p in sorted(probe.partitions_for_topic(topic) or set()):
            c = probe.committed(TopicPartition(topic, p))
            out[p] = int(c) if c is not None else 0
        return out

    def lag(self, topic: str, group: str) -> int:
        ends = self.end_offsets(topic, group)
        done = self.committed(topic, group)
        return sum(max(0, end - done.get(p, 0)) for p, end in ends.items())

    def close(self) -> None:
        with self._lock:
            for probe in self._probes.values():
                try:
                    probe.close(autocommit=False)
                except Exception as e:
                    log.debug("closing a kafka probe consumer: %s", e)
            self._probes.clear()


class KafkaBusConsumer:
    """One member of consumer group ``group`` on ``topic`` (partitions shared with the group's other members).

    Connects lazily and keeps trying: a role started before its broker polls empty until the broker is up.
    """

    def __init__(self, bus: KafkaBus, topic: str, group: str) -> None:
        self.bus, self.topic, self.group = bus, topic, group
        self.client_id = f"{bus.client_id}-{topic}-{os.getpid()}-{id(self) & 0xFFFF:04x}"
        self._consumer: KafkaConsumer | None = None
        self._committed: dict[int, int] = {}
        self._deferred: dict[int, int] = {}  # partition -> offset whose commit the broker did not take yet
        self._reported = False

    def _connect(self) -> KafkaConsumer:
        if self._consumer is None:
            cfg = self.bus.cfg
            self._consumer = KafkaConsumer(
                self.topic,
                group_id=self.group,
                client_id=self.client_id,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                session_timeout_ms=cfg.session_timeout_ms,
                heartbeat_interval_ms=max(300, cfg.session_timeout_ms // 3),
                max_partition_fetch_bytes=max(_FETCH_BYTES, cfg.max_message_bytes, MAX_EVENT_BYTES),
                fetch_max_bytes=max(_FETCH_BYTES, cfg.max_message_bytes) * 2,
                bootstrap_timeout_ms=_BOOTSTRAP_TIMEOUT_MS,
                reconnect_backoff_max_ms=2000,
                **client_settings(cfg),
            )
            self._committed.clear()
            if self._reported:
                log.warning("consumer %s of %s reconnected", self.group, self.topic)
                self._reported = False
        return self._consumer

    def poll(self, max_records: int = 100, timeout_s: float = 1.0) -> list[Message]:
        try:
            consumer = self._connect()
            if self._deferred:
                self._commit_deferred(consumer)
            batches = consumer.poll(timeout_ms=int(timeout_s * 1000), max_records=max_records)
        except KafkaError as e:
            if not self._reported:
                log.warning("consumer %s of %s cannot reach the broker (%s); retrying", self.group, self.topic, e)
                self._reported = True
            time.sleep(timeout_s)
            return []
        out: list[Message] = []
        for tp in sorted(batches, key=lambda t: t.partition):
            for r in batches[tp]:
                key = r.key.decode("utf-8", "replace") if r.key is not None else ""
                out.append(Message(tp.topic, r.offset, key, r.value if r.value is not None else b"", tp.partition))
        self._update_lag(consumer)
        return out

    def commit(self, message: Message) -> None:
        """Commit everything up to and including ``message`` in its partition (synchronously).

        A commit the broker cannot take now (it is down) is kept and retried before the next poll; if the
        process stops first, the message is redelivered, which every nonsite consumer handles (idempotent by
        event id). A commit refused because the partition moved to another member is dropped for the same
        reason. So this never raises for the broker's sake.
        """
        self._deferred[message.partition] = max(message.offset + 1, self._deferred.get(message.partition, 0))
        try:
            consumer = self._connect()
        except KafkaError:
            return
        self._commit_deferred(consumer)

    def _commit_deferred(self, consumer: KafkaConsumer) -> None:
        offsets = {TopicPartition(self.topic, p): OffsetAndMetadata(o, "", -1) for p, o in self._deferred.items()}
        try:
            consumer.commit(offsets)
        except _COMMIT_MOVED as e:
            # The partition went to another member during a rebalance; it redelivers from the last commit.
            log.info("commit of %s %s not accepted (%s); the partitions' new owner redelivers from the last "
                     "commit", self.topic, sorted(self._deferred.items()), type(e).__name__)
            self._deferred.clear()
            return
        except KafkaError as e:
            if not self._reported:
                log.warning("consumer %s cannot commit on %s now (%s); retrying before the next poll",
                            self.group, self.topic, e)
                self._reported = True
            return
        for p, o in self._deferred.items():
            self._committed[p] = o
        self._deferred.clear()
        if self._reported:
            log.warning("consumer %s of %s is committing again", self.group, self.topic)
            self._reported = False

    def seek_to_committed(self) -> None:
        """Drop what was fetched but not committed: the next poll starts after the last commit again."""
        if self._consumer is None:
            return
        for tp in self._consumer.assignment():
            c = self._consumer.committed(tp)
            if c is None:
                self._consumer.seek_to_beginning(tp)
            else:
                self._consumer.seek(tp, c)

    def _update_lag(self, consumer: KafkaConsumer) -> None:
        lag = 0
        try:
            for tp in consumer.assignment():
                hw = consumer.highwater(tp)
                if hw is None:
                    continue
                done = self._committed.get(tp.partition)
                if done is None:
                    c = consumer.committed(tp)
                    done = self._committed[tp.partition] = int(c) if c is not None else 0
                lag += max(0, hw - done)
        except KafkaError:
            return
        CONSUMER_LAG.labels(self.topic, self.group, self.client_id).set(lag)

    def close(self) -> None:
        if self._consumer is not None:
            try:
                self._consumer.close(autocommit=False)
            except Exception as e:
                log.debug("closing consumer %s: %s", self.client_id, e)
            self._consumer = None
        forget(CONSUMER_LAG, self.topic, self.group, self.client_id)


class KafkaTailConsumer:
    """Every partition of one topic, read from the end at the moment of connecting, without a consumer group.

    Connects lazily and keeps trying (a topic not created yet, a broker down); :meth:`ready` tells whether the
    start position is fixed, so that what is published from then on is seen. ``commit`` does nothing.
    """

    def __init__(self, bus: KafkaBus, topic: str, *, from_start: bool = False) -> None:
        self.bus, self.topic, self.from_start = bus, topic, from_start
        self._ends: dict[TopicPartition, int] = {}
        self.group = f"(tail {os.getpid()})"
        self.client_id = f"{bus.client_id}-tail-{topic}-{os.getpid()}-{id(self) & 0xFFFF:04x}"
        self._consumer: KafkaConsumer | None = None
        self._assigned = False
        self._reported = False

    def _connect(self) -> KafkaConsumer | None:
        cfg = self.bus.cfg
        if self._consumer is None:
            self._consumer = KafkaConsumer(
                group_id=None, client_id=self.client_id, enable_auto_commit=False,
                max_partition_fetch_bytes=max(_FETCH_BYTES, cfg.max_message_bytes, MAX_EVENT_BYTES),
                fetch_max_bytes=max(_FETCH_BYTES, cfg.max_message_bytes) * 2,
                bootstrap_timeout_ms=_BOOTSTRAP_TIMEOUT_MS, reconnect_backoff_max_ms=2000,
                request_timeout_ms=10000, **client_settings(cfg),
            )
        if not self._assigned:
            parts = self._consumer.partitions_for_topic(self.topic)
            if not parts:
                return None
            tps = [TopicPartition(self.topic, p) for p in sorted(parts)]
            self._consumer.assign(tps)
            if self.from_start:
                self._ends = {tp: int(o) for tp, o in self._consumer.end_offsets(tps).items()}
                self._consumer.seek_to_beginning(*tps)
            else:
                self._consumer.seek_to_end(*tps)
            for tp in tps:  # fix the start now: what is published after ready() is read
                self._consumer.position(tp)
            self._assigned = True
        return self._consumer

    def caught_up(self) -> bool:
        """True once every partition is read up to the end it had when this reader connected (at once for a reader
        from the end); False while not connected."""
        try:
            consumer = self._connect()
            if consumer is None:
                return False
            return all(consumer.position(tp) >= end for tp, end in self._ends.items())
        except KafkaError as e:
            self._report(e)
            return False

    def ready(self) -> bool:
        """Connect if needed; True once the start position is fixed."""
        try:
            return self._connect() is not None
        except KafkaError as e:
            self._report(e)
            return False

    def _report(self, e: BaseException) -> None:
        if not self._reported:
            log.warning("reader of %s cannot reach the broker (%s); retrying", self.topic, e)
            self._reported = True

    def poll(self, max_records: int = 100, timeout_s: float = 1.0) -> list[Message]:
        try:
            consumer = self._connect()
            if consumer is None:
                time.sleep(timeout_s)
                return []
            batches = consumer.poll(timeout_ms=int(timeout_s * 1000), max_records=max_records)
        except KafkaError as e:
            self._report(e)
            time.sleep(timeout_s)
            return []
        self._reported = False
        out: list[Message] = []
        for tp in sorted(batches, key=lambda t: t.partition):
            for r in batches[tp]:
                key = r.key.decode("utf-8", "replace") if r.key is not None else ""
                out.append(Message(tp.topic, r.offset, key, r.value if r.value is not None else b"", tp.partition))
        return out

    def commit(self, message: Message) -> None:
        """Nothing to commit: a tail reader has no group."""

    def close(self) -> None:
        if self._consumer is not None:
            try:
                self._consumer.close(autocommit=False)
            except Exception as e:
                log.debug("closing reader %s: %s", self.client_id, e)
            self._consumer = None
