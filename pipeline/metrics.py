"""Prometheus metrics of the edge, per camera and per stage (prometheus-client).

Every :class:`EdgeMetrics` has its own :class:`~prometheus_client.CollectorRegistry` (two runners in one
process, or two tests, never collide). The roles serve it with the default registry on their ops endpoint
(:class:`nonsite.ops.health.OpsServer`: ``/metrics``, ``/healthz``, ``/readyz``).

Exposed series (``camera`` = camera id):

==========================================  ==============================================================
``nonsite_frames_decoded_total``            frames read from the source, sampled or not (counter)
``nonsite_frames_sampled_total``            frames picked at the camera's detection fps (counter)
``nonsite_frames_processed_total``          frames that went through tracking and rules (detected or gated)
``nonsite_frames_detected_total``           frames the detector ran on (the motion gate let them through)
``nonsite_frames_gated_total``              frames processed with the last detections: the motion gate
                                            held them back (still scene); gated share = gated / (gated +
                                            detected)
``nonsite_frames_dropped_total``            frames never detected, by ``where``: ``source`` (a newer
                                            frame replaced it in the live reader) or ``queue`` (the
                                            camera's queue was full: the detector is behind)
``nonsite_detector_latency_seconds``        one detector call, by ``backend`` and ``batch_size``
``nonsite_stage_latency_seconds``           per frame and ``stage``: decode, queue (wait for the
                                            detector), detect (the batch it was in), track, rules,
                                            evidence (the rest of the worker: appearance, stills, clip
                                            frames, hand-off); per package: package (plate, stills,
                                            clip, store and bus, on the package writer's thread)
``nonsite_queue_depth``                     frames waiting for the detector (gauge)
``nonsite_camera_up``                       1 when frames arrive, else 0 (gauge)
``nonsite_camera_state``                    1 for the camera's current state (connecting, up, down,
                                            finished), 0 for the others
``nonsite_camera_last_frame_age_seconds``   seconds since the newest frame (live cameras)
``nonsite_reconnects_total``                lost streams opened again
``nonsite_open_failures_total``             failed attempts to open a stream
``nonsite_events_published_total``          violation events published, by ``type``
``nonsite_camera_view_moved``               1 while the camera looks elsewhere than where its zones were
                                            drawn (view guard: its rules are paused), else 0; only cameras
                                            whose view is checked
``nonsite_camera_view_shifted``             1 while its zones are re-registered after a small shift
``nonsite_camera_view_changes_total``       view guard state changes, by ``state`` (ok, shifted, moved)
``nonsite_cameras``                         cameras running (gauge)
``process_*``                               the process (resident memory, CPU) from prometheus-client
==========================================  ==============================================================

Counters of a camera survive its restart (a changed source) and are kept for removed cameras.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from nonsite.ops.cameras import ViewStatus
from nonsite.streams.health import SourceHealth, SourceState

STAGES = ("decode", "queue", "detect", "track", "rules", "evidence", "package")

# 1 ms .. 10 s: a detector call on a CPU is tens of ms; a batch on a busy box can take seconds.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass
class CameraSample:
    """What the collector reads about one camera at scrape time."""

    camera_id: str
    health: SourceHealth | None
    queue_depth: int
    live: bool
    view: ViewStatus | None = None
    """The view guard's verdict (None: the camera's view is not checked)."""


@dataclass
class _Carried:
    """Totals of a camera's earlier sources (before a restart), so its counters never go back."""

    decoded: int = 0
    sampled: int = 0
    source_dropped: int = 0
    reconnects: int = 0
    open_failures: int = 0


@dataclass
class EdgeMetrics:
    """The edge's metrics in one registry; the runner feeds it, Prometheus scrapes it."""

    registry: CollectorRegistry = field(default_factory=lambda: CollectorRegistry(auto_describe=True))
    process: bool = True
    """Also expose the process collector (resident memory, CPU seconds) in this registry."""

    def __post_init__(self) -> None:
        r = self.registry
        self.frames_processed = Counter("nonsite_frames_processed", "Frames that went through tracking and rules "
                                        "(detected, or gated: with the last detections).", ["camera"], registry=r)
        self.frames_detected = Counter("nonsite_frames_detected", "Frames the detector ran on.", ["camera"],
                                       registry=r)
        self.frames_gated = Counter("nonsite_frames_gated", "Frames processed with the last detections: the motion "
                                    "gate held them back from the detector (nothing moved near the zones).",
                                    ["camera"], registry=r)
        self.detector_latency = Histogram("nonsite_detector_latency_seconds", "Duration of one detector call.",
                                          ["backend", "batch_size"], buckets=LATENCY_BUCKETS, registry=r)
        self.stage_latency = Histogram("nonsite_stage_latency_seconds", "Seconds a frame spent in each stage.",
                                       ["camera", "stage"], buckets=LATENCY_BUCKETS, registry=r)
        self.events_published = Counter("nonsite_events_published", "Violation events published.",
                                        ["camera", "type"], registry=r)
        self._lock = threading.Lock()
        self._carried: dict[str, _Carried] = {}
        self._queue_drops: dict[str, int] = {}
        self._sources: Callable[[], Iterable[CameraSample]] = lambda: ()
        r.register(_SourceCollector(self))
        if self.process:
            ProcessCollector(registry=r)

    # -- fed by the runner ------------------------------------------------------------------------

    def watch(self, sources: Callable[[], Iterable[CameraSample]]) -> None:
        """Where the collector reads the cameras' health and queue depths at scrape time."""
        self._sources = sources

    def queue_dropped(self, camera_id: str, n: int = 1) -> None:
        with self._lock:
            self._queue_drops[camera_id] = self._queue_drops.get(camera_id, 0) + n

    def retire_source(self, camera_id: str, health: SourceHealth | None) -> None:
        """A camera's source is closed for good (camera restarted or removed): keep its totals."""
        if health is None:
            return
        with self._lock:
            c = self._carried.setdefault(camera_id, _Carried())
            c.decoded += health.frames_decoded
            c.sampled += health.frames_sampled
            c.source_dropped += health.frames_dropped
            c.reconnects += health.reconnects
            c.open_failures += health.open_failures

    def stage(self, camera_id: str, stage: str, seconds: float) -> None:
        self.stage_latency.labels(camera=camera_id, stage=stage).observe(max(seconds, 0.0))

    def detector_call(self, backend: str, batch_size: int, seconds: float) -> None:
        self.detector_latency.labels(backend=backend, batch_size=str(batch_size)).observe(seconds)

    def published(self, camera_id: str, types: Iterable[str]) -> None:
        for t in types:
            self.events_published.labels(camera=camera_id, type=t).inc()

    # -- read by the collector and by the benchmark ------------------------------------------------

    def carried(self, camera_id: str) -> _Carried:
        with self._lock:
            c = self._carried.get(camera_id, _Carried())
            return _Carried(**vars(c))

    def queue_drops(self, camera_id: str) -> int:
        with self._lock:
            return self._queue_drops.get(camera_id, 0)

    def known_cameras(self) -> set[str]:
        with self._lock:
            return set(self._carried) | set(self._queue_drops)

    def value(self, name: str, **labels: str) -> float:
        """The current value of one sample (0 when absent), e.g. ``value('nonsite_frames_decoded_total',
        camera='cam-1')``; for tests and the benchmark."""
        v = self.registry.get_sample_value(name, labels)
        return 0.0 if v is None else float(v)


class _SourceCollector(Collector):
    """Camera health, queue depths and drop counts, read fresh at every scrape."""

    def __init__(self, m: EdgeMetrics) -> None:
        self.m = m

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        m = self.m
        lab = ["camera"]
        decoded = CounterMetricFamily("nonsite_frames_decoded", "Frames read from the source (sampled or not).",
                                      labels=lab)
        sampled = CounterMetricFamily("nonsite_frames_sampled", "Frames picked at the camera's detection fps.",
                                      labels=lab)
        dropped = CounterMetricFamily("nonsite_frames_dropped", "Sampled frames never detected: replaced by a "
                                      "newer one in the live reader (source) or dropped from a full queue (queue).",
                                      labels=["camera", "where"])
        reconnects = CounterMetricFamily("nonsite_reconnects", "Lost streams opened again.", labels=lab)
        failures = CounterMetricFamily("nonsite_open_failures", "Failed attempts to open the stream.", labels=lab)
        depth = GaugeMetricFamily("nonsite_queue_depth", "Frames waiting for the detector.", labels=lab)
        up = GaugeMetricFamily("nonsite_camera_up", "1 when frames arrive from the camera, else 0.", labels=lab)
        state = GaugeMetricFamily("nonsite_camera_state", "1 for the camera's current state.",
                                  labels=["camera", "state"])
        age = GaugeMetricFamily("nonsite_camera_last_frame_age_seconds", "Seconds since the newest frame of a "
                                "live camera.", labels=lab)
        running = GaugeMetricFamily("nonsite_cameras", "Cameras running.")
        view_moved = GaugeMetricFamily("nonsite_camera_view_moved", "1 while the camera's view does not match the "
                                       "reference snapshot of its zones (its rules are paused), else 0.", labels=lab)
        view_shifted = GaugeMetricFamily("nonsite_camera_view_shifted", "1 while the camera's zones are "
                                         "re-registered after a small shift of its view, else 0.", labels=lab)
        view_changes = CounterMetricFamily("nonsite_camera_view_changes", "View guard state changes.",
                                           labels=["camera", "state"])
        now = time.time()
        seen: set[str] = set()
        n = 0
        for s in m._sources():
            cid = s.camera_id
            seen.add(cid)
            n += 1
            c = m.carried(cid)
            h = s.health
            decoded.add_metric([cid], c.decoded + (h.frames_decoded if h else 0))
            sampled.add_metric([cid], c.sampled + (h.frames_sampled if h else 0))
            dropped.add_metric([cid, "source"], c.source_dropped + (h.frames_dropped if h else 0))
            dropped.add_metric([cid, "queue"], m.queue_drops(cid))
            reconnects.add_metric([cid], c.reconnects + (h.reconnects if h else 0))
            failures.add_metric([cid], c.open_failures + (h.open_failures if h else 0))
            depth.add_metric([cid], s.queue_depth)
            cur = h.state if h else SourceState.connecting
            up.add_metric([cid], 1.0 if cur is SourceState.up else 0.0)
            for st in SourceState:
                state.add_metric([cid, st.value], 1.0 if st is cur else 0.0)
            if s.live and h is not None and h.last_frame_ts is not None:
                age.add_metric([cid], max(0.0, now - h.last_frame_ts))
            if s.view is not None:
                view_moved.add_metric([cid], 1.0 if s.view.state == "moved" else 0.0)
                view_shifted.add_metric([cid], 1.0 if s.view.state == "shifted" else 0.0)
                for st in ("ok", "shifted", "moved"):
                    view_changes.add_metric([cid, st], s.view.changes_by_state.get(st, 0))
        for cid in sorted(m.known_cameras() - seen):  # removed cameras keep their totals
            c = m.carried(cid)
            decoded.add_metric([cid], c.decoded)
            sampled.add_metric([cid], c.sampled)
            dropped.add_metric([cid, "source"], c.source_dropped)
            dropped.add_metric([cid, "queue"], m.queue_drops(cid))
            reconnects.add_metric([cid], c.reconnects)
            failures.add_metric([cid], c.open_failures)
        running.add_metric([], n)
        yield from (decoded, sampled, dropped, reconnects, failures, depth, up, state, age, running, view_moved,
                    view_shifted, view_changes)

