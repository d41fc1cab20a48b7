"""The central detector pool: cameras without edge compute, shared by `nonsite pool` workers through Kafka.

How cameras find a worker
    Every camera of ``cameras:`` belongs to one partition of the assignments topic (``pool.topic``): the
    partition Kafka's own key hash gives its id (murmur2, as the Java client's default partitioner). The
    workers are one consumer group (``pool.group``) on that topic; whichever worker the group assigns a
    partition runs that partition's cameras. Adding a worker spreads the partitions (and so the cameras);
    a worker that dies stops heartbeating and its partitions move to the living ones once the group's
    session timeout (``bus.kafka.session_timeout_ms``) has passed. Nothing needs to be published on the
    topic: the group's partition assignment *is* the camera assignment.

Never on two workers
    - The group uses the eager protocol: a partition is handed to its new owner only after its old owner
      has revoked it (or has been expelled). Revocation stops the partition's cameras before the callback
      returns; the callback is asynchronous so heartbeats continue while cameras stop. A camera that
      cannot stop within ``pool.stop_timeout_s`` makes the worker exit at once (the group then moves its
      partitions as for a crash), well inside the rebalance timeout.
    - A worker cut off from the broker (or paused) keeps running only while its membership is certain:
      the lease is the last successful heartbeat plus the session timeout, minus a margin. Frames are only
      processed under a valid lease (checked before each frame's rules and evidence); when the lease runs
      out the worker stops all its cameras itself ("fenced") and starts them again only after a new
      heartbeat proves it is still a member, or the group assigns it partitions again.
    - Every start and stop goes into the worker's assignment journal (``DATA_DIR/pool/journal.jsonl``,
      appended and fsynced): which worker ran which camera from when to when, with the frames processed
      and the wall-clock time of the first and last frame. Auditors read it to show who processed a camera
      at any moment; the tests read it to prove no two workers overlapped.

Metrics: ``nonsite_pool_cameras``, ``nonsite_pool_partitions``, ``nonsite_pool_rebalances_total``,
``nonsite_pool_fenced_total`` and the edge's per-camera series (``nonsite_frames_processed_total`` ...).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import Counter, Gauge

from nonsite.bus.base import Bus
from nonsite.config import CameraConfig, NonsiteConfig
from nonsite.evidence.store import Store
from nonsite.models import CameraDetectors
from nonsite.models.base import Detector
from nonsite.pipeline.edge import EdgeRunner
from nonsite.pipeline.metrics import EdgeMetrics
from nonsite.pipeline.recheck import default_group

log = logging.getLogger(__name__)

POOL_CAMERAS = Gauge("nonsite_pool_cameras", "Cameras this pool worker runs now.", ["worker"])
POOL_PARTITIONS = Gauge("nonsite_pool_partitions", "Partitions of the assignments topic this worker owns.",
                        ["worker"])
POOL_REBALANCES = Counter("nonsite_pool_rebalances", "Assignments this worker received from the group.",
                          ["worker"])
POOL_FENCED = Counter("nonsite_pool_fenced", "Times this worker stopped its cameras because its group "
                      "membership could no longer be proven (no heartbeat within the session timeout).", ["worker"])

#: Exit code of a worker that could not stop a camera in time (the camera must never run twice).
EXIT_STOP_TIMEOUT = 75


def partition_of(camera_id: str, partitions: int) -> int:
    """The partition of the assignments topic that carries ``camera_id`` (Kafka's key hash: murmur2)."""
    from kafka.partitioner.default import murmur2

    return (murmur2(camera_id.encode("utf-8")) & 0x7FFFFFFF) % partitions


def cameras_by_partition(cameras: Iterable[CameraConfig], partitions: int) -> dict[int, list[CameraConfig]]:
    out: dict[int, list[CameraConfig]] = {}
    for c in cameras:
        if c.enabled:
            out.setdefault(partition_of(c.id, partitions), []).append(c)
    return out


def default_worker_id(configured: str | None) -> str:
    return os.environ.get("NONSITE_POOL_WORKER_ID") or configured or f"{socket.gethostname()}-{os.getpid()}"


class Journal:
    """Append-only JSON lines, fsynced: one line per camera start and stop on this worker."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()

    def write(self, **entry: Any) -> None:
        line = json.dumps({"t": round(time.time(), 3), **entry}, ensure_ascii=False) + "\n"
        with self._lock, open(self.path, "a", encoding="utf-8") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())


def read_journal(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@dataclass
class _Held:
    """A camera this worker runs: since when, and its first/last processed frame (wall clock)."""

    partition: int
    started: float
    first_frame: float | None = None
    last_frame: float | None = None
    frames: int = 0


class Lease:
    """Whether this worker's group membership is certain now: the last successful heartbeat (or join) plus
    the session timeout, less a margin for the round trip and a frame in flight."""

    def __init__(self, consumer: Any, session_timeout_s: float) -> None:
        self.consumer = consumer
        self.session_timeout_s = session_timeout_s
        self.margin_s = max(1.0, 0.25 * session_timeout_s)

    def _heartbeat(self) -> Any:
        coordinator = getattr(self.consumer, "_coordinator", None)
        return getattr(coordinator, "heartbeat", None)

    def last_proof(self) -> float:
        """monotonic time of the newest proof of membership (heartbeat answered, group joined)."""
        hb = self._heartbeat()
        if hb is None:  # a kafka-python without the heartbeat object: trust the library's own session check
            return time.monotonic()
        return float(max(hb.last_receive, hb.last_reset))

    def last_heartbeat(self) -> float:
        hb = self._heartbeat()
        return time.monotonic() if hb is None else float(hb.last_receive)

    def valid(self) -> bool:
        return time.monotonic() - self.last_proof() < self.session_timeout_s - self.margin_s


class PoolWorker:
    """One `nonsite pool` worker: an :class:`EdgeRunner` whose cameras come and go with the group's assignment."""

    def __init__(
        self,
        cfg: NonsiteConfig,
        detector: Detector | CameraDetectors,
        store: Store,
        bus: Bus,
        *,
        worker_id: str | None = None,
        progress: Callable[[str], None] | None = None,
        metrics: EdgeMetrics | None = None,
    ) -> None:
        self.cfg = cfg
        self.pool = cfg.pool
        self.worker_id = default_worker_id(worker_id or cfg.pool.worker_id)
        self.progress = progress or (lambda _line: None)
        self.by_partition = cameras_by_partition(cfg.cameras, cfg.pool.partitions)
        self.runner = EdgeRunner(cfg.model_copy(update={"cameras": []}), detector, store, bus,
                                 metrics=metrics or EdgeMetrics(process=False), admit=self._admit,
                                 recheck_group=default_group(str(cfg.data_dir), self.worker_id))
        self.journal = Journal(Path(cfg.data_dir) / "pool" / "journal.jsonl")
        self._held: dict[str, _Held] = {}
        self._owned: set[int] = set()
        self._lock = threading.RLock()
        self._fenced_at: float | None = None
        self._lease: Lease | None = None
        self._consumer: Any = None
        self._runner_thread: threading.Thread | None = None
        self._stop = threading.Event()
        POOL_CAMERAS.labels(self.worker_id).set(0)
        POOL_PARTITIONS.labels(self.worker_id).set(0)

    # -- what the runner asks before each frame --------------------------------------------------------

    def _admit(self, camera_id: str) -> bool:
        lease = self._lease
        with self._lock:
            held = self._held.get(camera_id)
            if held is None or self._fenced_at is not None or lease is None or not lease.valid():
                return False
            now = time.time()
            if held.first_frame is None:
                held.first_frame = now
            held.last_frame = now
            held.frames += 1
            return True

    # -- cameras ----------------------------------------------------------------------------------------

    def detector_alive(self) -> bool:
        """False once the detector loop has died while the worker should be running (liveness)."""
        t = self._runner_thread
        return t is None or t.is_alive() or self._stop.is_set()

    @property
    def cameras(self) -> list[str]:
        with self._lock:
            return sorted(self._held)

    def known_cameras(self) -> dict[str, CameraConfig]:
        """Every camera of ``cameras:`` this worker may be assigned (what zone commands may change), by id."""
        with self._lock:
            return {c.id: c for cams in self.by_partition.values() for c in cams}

    def replace_camera(self, camera: CameraConfig) -> str:
        """A camera's new config (a zone edit): kept for when the group assigns the camera here, and applied live
        now if this worker runs it (zones only: the camera keeps its connection and tracks). Returns what the runner
        did (:data:`~nonsite.pipeline.edge.Change`), or "kept" when this worker does not run the camera."""
        with self._lock:
            p = partition_of(camera.id, self.pool.partitions)
            cams = self.by_partition.get(p, [])
            self.by_partition[p] = [camera if c.id == camera.id else c for c in cams]
            self.cfg = self.cfg.model_copy(update={"cameras": [camera if c.id == camera.id else c
                                                               for c in self.cfg.cameras]})
            held = camera.id in self._held
        if held:
            try:
                return self.runner.update_camera(camera)
            except KeyError:  # revoked meanwhile: the new owner has its own copy
                pass
        return "kept"

    def _start_partitions(self, partitions: Iterable[int], reason: str) -> None:
        for p in sorted(partitions):
            for cam in self.by_partition.get(p, []):
                with self._lock:
                    if cam.id in self._held:
                        continue
                    self._held[cam.id] = _Held(p, time.time())
                self.journal.write(worker=self.worker_id, camera=cam.id, action="start", partition=p, reason=reason)
                try:
                    self.runner.add_camera(cam)
                except Exception as e:  # a camera that cannot start (missing file) never stops the others
                    log.error("pool %s: camera %s cannot start: %s", self.worker_id, cam.id, e)
                    self._forget(cam.id, "failed", str(e))
        self._update_gauges()

    def _stop_cameras(self, camera_ids: Iterable[str], reason: str) -> None:
        """Stop cameras and wait until none of them can process another frame; exit if one cannot."""
        ids = [c for c in camera_ids if c in self._held]
        deadline = time.monotonic() + self.pool.stop_timeout_s
        for cid in ids:
            with contextlib.suppress(KeyError):
                self.runner.remove_camera(cid, timeout=max(0.1, deadline - time.monotonic()))
            if not self.runner.stopped(cid):
                log.critical("pool %s: camera %s did not stop within %.0f s; exiting so it never runs on two "
                             "workers", self.worker_id, cid, self.pool.stop_timeout_s)
                self.journal.write(worker=self.worker_id, camera=cid, action="exit", reason="stop timeout")
                os._exit(EXIT_STOP_TIMEOUT)
            self._forget(cid, reason)
        self._update_gauges()

    def _forget(self, camera_id: str, reason: str, error: str | None = None) -> None:
        with self._lock:
            held = self._held.pop(camera_id, None)
        if held is None:
            return
        entry: dict[str, Any] = {"worker": self.worker_id, "camera": camera_id, "action": "stop",
                                 "partition": held.partition, "reason": reason, "frames": held.frames,
                                 "first_frame": held.first_frame, "last_frame": held.last_frame}
        if error:
            entry["error"] = error
        self.journal.write(**entry)

    def _stop_partitions(self, partitions: Iterable[int], reason: str) -> None:
        parts = set(partitions)
        with self._lock:
            ids = [cid for cid, h in self._held.items() if h.partition in parts]
        self._stop_cameras(ids, reason)

    def _update_gauges(self) -> None:
        with self._lock:
            POOL_CAMERAS.labels(self.worker_id).set(len(self._held))
            POOL_PARTITIONS.labels(self.worker_id).set(len(self._owned))

    # -- the group --------------------------------------------------------------------------------------

    def _listener(self) -> Any:
        from kafka import ConsumerRebalanceListener

        try:
            from kafka.consumer.subscription_state import AsyncConsumerRebalanceListener
        except ImportError:  # kafka-python 2.x: callbacks run in poll(), blocking heartbeats is not an issue
            AsyncConsumerRebalanceListener = None  # noqa: N806

        worker = self

        def revoke(tps: Iterable[Any], reason: str) -> None:
            parts = {tp.partition for tp in tps}
            with worker._lock:
                worker._owned -= parts
            worker._stop_partitions(parts, reason)

        def assign(tps: Iterable[Any]) -> None:
            parts = {tp.partition for tp in tps}
            with worker._lock:
                worker._owned |= parts
                worker._fenced_at = None
            POOL_REBALANCES.labels(worker.worker_id).inc()
            worker._start_partitions(parts, "assigned")
            worker.progress(f"pool {worker.worker_id}: partitions {sorted(worker._owned)} -> cameras "
                            f"{', '.join(worker.cameras) or '(none)'}")

        if AsyncConsumerRebalanceListener is None:
            class SyncListener(ConsumerRebalanceListener):  # type: ignore[misc]
                def on_partitions_revoked(self, revoked: Any) -> None:
                    revoke(revoked, "revoked")

                def on_partitions_assigned(self, assigned: Any) -> None:
                    assign(assigned)

            return SyncListener()

        async def in_thread(fn: Callable[[], None]) -> None:
            """Run blocking work in a thread; heartbeats go on meanwhile (the consumer's loop keeps running)."""
            done = threading.Event()
            error: list[BaseException] = []

            def target() -> None:
                try:
                    fn()
                except BaseException as e:  # handed back to the listener, then to poll()
                    error.append(e)
                finally:
                    done.set()

            threading.Thread(target=target, name=f"pool-rebalance-{worker.worker_id}", daemon=True).start()
            net = worker._consumer._coordinator._net
            while not done.is_set():
                await net.sleep(0.02)
            if error:
                raise error[0]

        class Listener(AsyncConsumerRebalanceListener):  # type: ignore[misc, valid-type]
            async def on_partitions_revoked(self, revoked: Any) -> None:
                await in_thread(lambda: revoke(revoked, "revoked"))

            async def on_partitions_assigned(self, assigned: Any) -> None:
                await in_thread(lambda: assign(assigned))

            async def on_partitions_lost(self, lost: Any) -> None:
                await in_thread(lambda: revoke(lost, "lost"))

        return Listener()

    def ensure_topic(self) -> None:
        """Create the assignments topic with ``pool.partitions`` partitions when missing."""
        from kafka.admin import NewTopic
        from kafka.errors import TopicAlreadyExistsError

        from nonsite.bus.kafka import admin_client

        kcfg = self.cfg.bus.kafka
        admin = admin_client(kcfg, f"{kcfg.client_id}-pool")
        try:
            if self.pool.topic in set(admin.list_topics()):
                have = self._partitions_of_topic(admin)
                if have is not None and have != self.pool.partitions:
                    log.warning("assignments topic %s has %d partitions, pool.partitions says %d: cameras are "
                                "placed by the topic's %d", self.pool.topic, have, self.pool.partitions, have)
                    self.pool = self.pool.model_copy(update={"partitions": have})
                    self.by_partition = cameras_by_partition(self.cfg.cameras, have)
                return
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics([NewTopic(self.pool.topic, self.pool.partitions, kcfg.replication_factor)],
                                    timeout_ms=int(max(5.0, kcfg.publish_timeout_s) * 1000), raise_errors=True)
        finally:
            admin.close()

    def _partitions_of_topic(self, admin: Any) -> int | None:
        try:
            meta = admin.describe_topics([self.pool.topic])
            return len(meta[0]["partitions"]) if meta else None
        except Exception as e:  # describing is only for the warning above
            log.debug("describe %s: %s", self.pool.topic, e)
            return None

    def run(self, stop: threading.Event, *, poll_s: float = 0.2) -> None:
        """Join the group and run the assigned cameras until ``stop``; then stop them and leave the group."""
        from kafka import KafkaConsumer
        from kafka.coordinator.assignors.range import RangePartitionAssignor
        from kafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor

        from nonsite.bus.kafka import client_settings

        self._stop = stop
        kcfg = self.cfg.bus.kafka
        session_s = kcfg.session_timeout_ms / 1000
        self._runner_thread = threading.Thread(target=self.runner.run, args=(stop,), kwargs={"until_done": False},
                                               name="pool-detector", daemon=True)
        self._runner_thread.start()
        delay = 0.5
        while not stop.is_set():
            try:
                self.ensure_topic()
                break
            except Exception as e:
                log.warning("pool %s: cannot reach the broker to create %s (%s); retrying", self.worker_id,
                            self.pool.topic, e)
                stop.wait(delay)
                delay = min(delay * 2, 15.0)
        if stop.is_set():
            return
        consumer = KafkaConsumer(
            group_id=self.pool.group,
            # eager assignors: a partition reaches its new owner only after the old one revoked it
            partition_assignment_strategy=(RangePartitionAssignor, RoundRobinPartitionAssignor),
            client_id=f"{kcfg.client_id}-pool-{self.worker_id}",
            enable_auto_commit=False,
            session_timeout_ms=kcfg.session_timeout_ms,
            heartbeat_interval_ms=max(300, kcfg.session_timeout_ms // 6),
            # a member that has not rejoined within this is expelled; revocation ends long before (stop_timeout_s)
            max_poll_interval_ms=int(max(30.0, 3 * self.pool.stop_timeout_s) * 1000),
            bootstrap_timeout_ms=3000,
            reconnect_backoff_max_ms=2000,
            **client_settings(kcfg),
        )
        self._consumer = consumer
        self._lease = Lease(consumer, session_s)
        consumer.subscribe([self.pool.topic], listener=self._listener())
        self.progress(f"pool {self.worker_id}: {len(self.cfg.cameras)} cameras on {self.pool.partitions} partitions "
                      f"of {self.pool.topic}, group {self.pool.group}")
        try:
            while not stop.is_set():
                try:
                    consumer.poll(timeout_ms=int(poll_s * 1000), max_records=1)
                except Exception as e:  # the broker is away: the lease decides what keeps running
                    log.debug("pool poll: %s", e)
                    stop.wait(poll_s)
                self._check_lease()
        finally:
            with self._lock:
                ids = list(self._held)
            self._stop_cameras(ids, "shutdown")
            try:
                consumer.close(autocommit=False)  # leave the group: the others take the cameras at once
            except Exception as e:
                log.debug("closing the pool consumer: %s", e)
            stop.set()
            self._runner_thread.join(timeout=15)

    def _check_lease(self) -> None:
        lease = self._lease
        if lease is None:
            return
        if self._fenced_at is None:
            if self._held and not lease.valid():
                with self._lock:
                    self._fenced_at = time.monotonic()
                    ids = list(self._held)
                POOL_FENCED.labels(self.worker_id).inc()
                log.warning("pool %s: no heartbeat for %.1f s (session timeout %.1f s): stopping cameras %s until "
                            "the group confirms this worker", self.worker_id, time.monotonic() - lease.last_proof(),
                            lease.session_timeout_s, ", ".join(ids))
                self._stop_cameras(ids, "fenced")
        elif lease.last_heartbeat() > self._fenced_at and lease.valid():
            # A heartbeat answered after the fence: still a member of the same generation, partitions still ours.
            with self._lock:
                self._fenced_at = None
                owned = set(self._owned)
            log.warning("pool %s: heartbeats answered again; restarting the cameras of partitions %s",
                        self.worker_id, sorted(owned))
            self._start_partitions(owned, "heartbeat resumed")
