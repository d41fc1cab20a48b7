"""Runs the edge for a set of cameras: one reader thread per camera, one detector loop that batches frames
across cameras (:mod:`nonsite.pipeline.scheduler`: bounded queues, fair round-robin), and an
:class:`EdgeWorker` per camera for tracking, rules and evidence.

Cameras can be added, changed and removed while the loop runs (:meth:`EdgeRunner.add_camera`,
:meth:`~EdgeRunner.update_camera`, :meth:`~EdgeRunner.remove_camera`, :meth:`~EdgeRunner.apply_config`);
the other cameras never notice. A camera whose source, fps or location changed restarts alone (new
source, tracker and pre-roll); a change of its zones only swaps its zones and rule engine, keeping
the connection and the tracks. Workers are only touched by the loop thread: changes requested from
other threads are applied by the loop between two batches.

Per camera and per stage the runner feeds :class:`~nonsite.pipeline.metrics.EdgeMetrics` (Prometheus).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import supervision as sv

from nonsite.bus.base import Bus
from nonsite.bus.events import ModelInfo, ViolationEvent
from nonsite.config import CameraConfig, NonsiteConfig, mask_url
from nonsite.config.detectors import DETECTOR_BACKENDS
from nonsite.evidence.store import Store
from nonsite.models import CameraDetectors
from nonsite.models.base import Detector
from nonsite.pipeline.gating import MotionGate, gate_for, zones_region
from nonsite.pipeline.metrics import CameraSample, EdgeMetrics
from nonsite.pipeline.recheck import RecheckDesk, default_group
from nonsite.pipeline.scheduler import FrameQueue, RoundRobin
from nonsite.pipeline.violations import typed_camera
from nonsite.pipeline.worker import EdgeWorker, PackageWriter, SequenceCounter, WorkerStats
from nonsite.streams import LiveSource, open_source
from nonsite.streams.base import Frame, Source, SourceError
from nonsite.streams.health import SourceHealth

log = logging.getLogger(__name__)

_END = object()
RATE_WINDOW_S = 60.0

Change = Literal["added", "removed", "restarted", "zones", "unchanged", "disabled"]


@dataclass
class _Queued:
    frame: Frame
    at: float
    """time.perf_counter() when the frame entered the queue."""
    gated: bool = False
    """The motion gate held it back from the detector: it rides along a batch without taking a place in it."""
    detector: Detector | None = None
    """The detector of its camera: a batch holds frames for one detector."""


@dataclass
class _Job:
    """A batch on its way: frames (with their camera) detected on the detector thread, and the cameras whose
    end-of-stream marker came with it (finished once the frames before it are processed)."""

    work: list[tuple[CameraRun, _Queued]]
    ended: list[CameraRun]
    todo: list[int]
    """Indexes into ``work`` of the frames sent to the detector (the others were gated)."""
    t0: float
    dets: Future[list[sv.Detections | None]]
    jpegs: list[Future[bytes] | None]
    """The frames' pre-roll JPEGs, encoded on the runner's encoder threads while the batch is detected (None: the
    worker encodes it itself)."""


@dataclass
class CameraRun:
    """One running camera: its source, reader thread, queue and worker."""

    camera: CameraConfig
    source: Source
    worker: EdgeWorker
    frames: FrameQueue[Any]
    live: bool
    detector: Detector
    """The detector of this camera (``detector.zone_models``: the street model for a camera with vending zones)."""
    """Latest-frame semantics: a live stream, or a file paced in real time (a simulated camera)."""
    gate: MotionGate | None = None
    """Motion-gated detection (:mod:`nonsite.pipeline.gating`), decided in the reader thread; None = off."""
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    done: bool = False
    error: str | None = None
    started: float = field(default_factory=time.monotonic)
    processed_at: deque[float] = field(default_factory=deque)
    """Monotonic times of the frames processed within the last minute (the console's fps)."""
    pending_camera: CameraConfig | None = None
    """A zones-only change waiting for the loop to apply it."""
    swapped: threading.Event = field(default_factory=threading.Event)
    """Set by the loop once ``pending_camera`` is applied."""
    finished: threading.Event = field(default_factory=threading.Event)
    """Set once the worker has been finished (end of stream, or the camera removed)."""

    @property
    def health(self) -> SourceHealth | None:
        return getattr(self.source, "health", None)

    def fps(self, now: float | None = None) -> float:
        """Frames processed per second over the last minute (or since the start, if shorter)."""
        now = time.monotonic() if now is None else now
        while self.processed_at and now - self.processed_at[0] > RATE_WINDOW_S:
            self.processed_at.popleft()
        span = min(RATE_WINDOW_S, max(now - self.started, 1e-6))
        return len(self.processed_at) / span


def model_info(detector: Detector) -> ModelInfo:
    w = detector.weights
    return ModelInfo(name=w.name, version=w.version, sha256=w.sha256, backend=detector.backend)


def preferred_batch(detector: Detector) -> int:
    """How many frames per detector call suit the backend (``edge.max_batch: 0``), as its declaration says
    (:mod:`nonsite.config.detectors`): on this project's CPUs a batch of 4 runs OpenVINO and ONNX Runtime
    faster per frame than single frames (bench/results), at the cost of up to one batch of latency, which the
    rules' dwell times (seconds) absorb; a GPU wants bigger batches. A detector of no declared backend (a
    test double) gets single frames."""
    spec = DETECTOR_BACKENDS.get(getattr(detector, "backend", ""))
    device = str(getattr(getattr(detector, "config", None), "device", "cpu"))
    return spec.preferred_batch(device) if spec is not None else 1


def _frame_size(item: Any) -> tuple[int, tuple[int, ...]] | None:
    """Batches hold frames of one size (no padding to a common size) for one detector; end markers and gated
    frames (no detection) join any batch without taking a place in it, so the detector time still scenes free
    goes to the cameras that move."""
    if isinstance(item, _Queued) and not item.gated:
        return id(item.detector), item.frame.image.shape
    return None


def _encoded(jpeg: Future[bytes] | None) -> bytes | None:
    """The pre-roll JPEG the encoder made, or None (the worker then encodes it and reports what went wrong)."""
    if jpeg is None:
        return None
    try:
        return jpeg.result()
    except Exception:
        return None


def _only_zones_differ(a: CameraConfig, b: CameraConfig) -> bool:
    return a.model_dump(exclude={"zones"}) == b.model_dump(exclude={"zones"})


class EdgeRunner:
    def __init__(
        self,
        cfg: NonsiteConfig,
        detector: Detector | CameraDetectors,
        store: Store,
        bus: Bus,
        progress: Callable[[str], None] | None = None,
        progress_every_s: float = 5.0,
        max_batch: int | None = None,
        metrics: EdgeMetrics | None = None,
        admit: Callable[[str], bool] | None = None,
        recheck_group: str | None = None,
    ) -> None:
        """``admit(camera_id)``, when given, is asked right before each frame's tracking, rules and evidence;
        False drops the frame (the detector pool processes frames only while it surely owns the camera).

        ``detector``: one detector for every camera, or :class:`CameraDetectors` (each camera gets the weights its
        zone kinds call for, ``detector.zone_models``).

        With ``cases.recheck.enabled`` the runner also answers camera re-check requests for its cameras
        (:mod:`nonsite.pipeline.recheck`), reading ``nonsite.recheck`` in consumer group ``recheck_group`` (default:
        one of this host and data directory's own)."""
        self.detectors = detector if isinstance(detector, CameraDetectors) else None
        self.detector: Detector = detector.default if isinstance(detector, CameraDetectors) else detector
        self.cfg, self.store, self.bus = cfg, store, bus
        self.admit = admit
        self.progress = progress
        self.progress_every_s = progress_every_s
        self.max_batch = max_batch or cfg.edge.max_batch or preferred_batch(self.detector)
        self.overlap = True
        """Detect the next batch while this one is processed (see :meth:`run`); False: one after the other, as
        before (bench/ measures both side by side)."""
        self.off_loop = True
        """The encoder threads encode the frames' pre-roll JPEGs while their batch is detected and the package writer
        writes the evidence packages; False: the loop does both itself, as before (bench/ measures both side by
        side). Read when a camera starts."""
        self.ahead = True
        """The package writer encodes a confirmed violation's clip and reads its plate while the package waits for its
        post-roll; False: all of it when the package is due, as before (bench/ measures both side by side). Read
        when a camera starts."""
        self._encoder: ThreadPoolExecutor | None = None
        """Pre-roll JPEG encoding of the frames of the batch being detected (while :meth:`run` runs)."""
        self.metrics = metrics if metrics is not None else EdgeMetrics()
        self.metrics.watch(self._samples)
        self._sequence = SequenceCounter(Path(cfg.data_dir) / "edge" / "sequence.json")
        self._writer = PackageWriter(cfg.edge.writer_queue, cfg.edge.writer_nice, cfg.edge.writer_threads)
        """Writes the cameras' evidence packages off the loop (each camera's in hand-off order)."""
        self._scheduler: RoundRobin[str, Any] = RoundRobin(self.max_batch, group=_frame_size)
        self._lock = threading.RLock()
        self._cameras: dict[str, CameraConfig] = {}
        """Every configured camera (enabled or not), in config order."""
        self._runs: dict[str, CameraRun] = {}
        self._retiring: list[CameraRun] = []
        self._history: list[CameraRun] = []
        self._running = False
        self._wake = threading.Event()
        for c in map(typed_camera, cfg.cameras):
            self._cameras[c.id] = c
            if c.enabled:
                self._runs[c.id] = self._new_run(c)
        self.rechecks: RecheckDesk | None = None
        if cfg.cases.recheck.enabled:
            self.rechecks = RecheckDesk(
                bus, store, recheck_group or default_group(str(cfg.data_dir)), cameras=self._camera_map,
                timezone=cfg.timezone, jpeg_quality=cfg.evidence.jpeg_quality)

    def _camera_map(self) -> dict[str, CameraConfig]:
        with self._lock:
            return dict(self._cameras)

    # -- cameras --------------------------------------------------------------------------------

    @property
    def runs(self) -> list[CameraRun]:
        """The cameras running now (removed ones are gone from here; their stats stay in :meth:`stats`)."""
        with self._lock:
            return list(self._runs.values())

    @property
    def cameras(self) -> list[CameraConfig]:
        """Every configured camera, enabled or not."""
        with self._lock:
            return list(self._cameras.values())

    def run_of(self, camera_id: str) -> CameraRun | None:
        with self._lock:
            return self._runs.get(camera_id)

    def detector_for(self, camera: CameraConfig) -> Detector:
        """The detector a camera's frames go to."""
        if self.detectors is None:
            return self.detector
        return self.detectors.for_kinds(z.kind for z in camera.zones)

    def _new_run(self, camera: CameraConfig) -> CameraRun:
        source = open_source(camera)
        live = isinstance(source, LiveSource) or camera.source.realtime
        cid = camera.id
        detector = self.detector_for(camera)
        worker = EdgeWorker(camera, self.cfg, self.store, self.bus, model_info(detector), self._sequence,
                            on_stage=lambda stage, seconds: self.metrics.stage(cid, stage, seconds),
                            views_dir=Path(self.cfg.data_dir) / "edge" / "views")
        # A live camera keeps only its newest frames; files read ahead (see _readahead).
        with self._lock:
            files = sum(1 for r in self._runs.values() if not r.live) + 1
        size = self.cfg.edge.queue_frames if live else self._readahead(files)
        queue: FrameQueue[Any] = FrameQueue(size, drop_oldest=live,
                                            on_drop=lambda _item: self.metrics.queue_dropped(cid))
        return CameraRun(camera, source, worker, queue, live, detector, gate_for(camera, self.cfg))

    def _readahead(self, files: int) -> int:
        """Queue bound of each of ``files`` file cameras: together they may read ahead enough to fill the batch
        being detected and the next one (the loop forms batch N+1 while N is detected), so one file alone reads
        ahead 2 x max_batch frames, and 16 files share that instead of each holding as many decoded frames
        (16 x 8 full-size frames: 800 MB at 1080p; bench/memory.py)."""
        return max(self.cfg.edge.queue_frames, -(-2 * self.max_batch // max(1, files)))

    def _fit_queues(self) -> None:
        """Share the file cameras' read-ahead among those running now (cameras come and go)."""
        with self._lock:
            files = [r for r in self._runs.values() if not r.live]
        size = self._readahead(len(files))
        for r in files:
            if r.frames.maxsize != size:
                r.frames.resize(size)

    def _start(self, run: CameraRun) -> None:
        run.worker.writer = self._writer if self.off_loop else None  # before: a worker writes its own packages
        run.worker.ahead = self.ahead
        if run.worker.writer is not None and run.worker.reads_plates():
            self._writer.soon(run.worker.warm_up, "plates")
        run.thread = threading.Thread(target=self._read, args=(run,), name=f"read-{run.camera.id}", daemon=True)
        run.thread.start()

    def add_camera(self, camera: CameraConfig) -> Change:
        """Start a new camera (``ValueError`` if its id exists; :class:`SourceError` if its video file is
        missing). A disabled camera is only recorded."""
        camera = typed_camera(camera)
        with self._lock:
            if camera.id in self._cameras:
                raise ValueError(f"camera '{camera.id}' already exists; use update_camera to change it")
            if not camera.enabled:
                self._cameras[camera.id] = camera
                return "disabled"
            run = self._new_run(camera)
            self._cameras[camera.id] = camera
            self._runs[camera.id] = run
            if self._running:
                self._start(run)
        log.info("camera %s: added (%s)", camera.id, mask_url(camera.source.url))
        self._wake.set()
        return "added"

    def remove_camera(self, camera_id: str, timeout: float = 10.0) -> Change:
        """Stop a camera: its confirmed violations are published with the post-roll recorded so far, its
        source is closed in the background. ``KeyError`` for an unknown camera."""
        with self._lock:
            if camera_id not in self._cameras:
                raise KeyError(camera_id)
            self._cameras.pop(camera_id)
            run = self._runs.pop(camera_id, None)
            if run is None:
                return "removed"
            self._detach(run)
            running = self._running
        if not running:
            self._retire(run)
        elif not run.finished.wait(timeout):
            log.warning("camera %s: removal still in progress after %.0f s", camera_id, timeout)
        log.info("camera %s: removed", camera_id)
        return "removed"

    def stopped(self, camera_id: str) -> bool:
        """True when no frame of ``camera_id`` can be processed any more (not running, nothing retiring)."""
        with self._lock:
            if camera_id in self._runs:
                return False
            return all(r.finished.is_set() for r in (*self._retiring, *self._history) if r.camera.id == camera_id)

    def update_camera(self, camera: CameraConfig, timeout: float = 10.0) -> Change:
        """Apply a changed camera config: nothing if equal; zones only: swap zones and rules live; else
        restart this camera alone. Enabling or disabling starts or stops it. ``KeyError`` if unknown;
        :class:`SourceError` (the old camera keeps running) if the new video file is missing."""
        camera = typed_camera(camera)
        old_run: CameraRun | None = None
        swap_wait: CameraRun | None = None
        with self._lock:
            old = self._cameras.get(camera.id)
            if old is None:
                raise KeyError(camera.id)
            if old == camera:
                return "unchanged"
            run = self._runs.get(camera.id)
            change: Change
            if run is None and not camera.enabled:
                change = "disabled"
            elif run is None:
                new = self._new_run(camera)
                self._runs[camera.id] = new
                if self._running:
                    self._start(new)
                change = "added"
            elif not camera.enabled:
                del self._runs[camera.id]
                self._detach(run)
                old_run, change = run, "disabled"
            elif _only_zones_differ(old, camera) and self.detector_for(camera) is run.detector:
                if self._running:
                    run.swapped.clear()
                    run.pending_camera = camera
                    swap_wait = run
                else:
                    self._swap_zones(run, camera)
                change = "zones"
            else:
                new = self._new_run(camera)
                del self._runs[camera.id]
                self._detach(run)
                self._runs[camera.id] = new
                if self._running:
                    self._start(new)
                old_run, change = run, "restarted"
            self._cameras[camera.id] = camera
            running = self._running
        if old_run is not None:
            if not running:
                self._retire(old_run)
            elif not old_run.finished.wait(timeout):
                log.warning("camera %s: the old run is still finishing after %.0f s", camera.id, timeout)
        if swap_wait is not None:
            self._wake.set()
            if not swap_wait.swapped.wait(timeout):
                log.warning("camera %s: the new zones are not applied yet after %.0f s", camera.id, timeout)
        log.info("camera %s: %s", camera.id, {"zones": "zones replaced live"}.get(change, change))
        self._wake.set()
        return change

    def apply_config(self, cfg: NonsiteConfig) -> dict[str, Change]:
        """Bring the cameras in line with ``cfg.cameras`` (added, removed, changed); the other sections need
        a restart and are only reported. Returns what happened to each camera that changed."""
        changes: dict[str, Change] = {}
        wanted = {c.id: c for c in cfg.cameras}
        for cid in [c.id for c in self.cameras if c.id not in wanted]:
            changes[cid] = self.remove_camera(cid)
        for c in cfg.cameras:
            try:
                change = self.update_camera(c) if c.id in self._cameras else self.add_camera(c)
            except SourceError as e:
                log.error("camera %s: not applied: %s", c.id, e)
                continue
            if change != "unchanged":
                changes[c.id] = change
        with self._lock:  # keep the config order
            self._cameras = {c.id: self._cameras[c.id] for c in cfg.cameras if c.id in self._cameras}
        other = [k for k in ("detector", "tracker", "rules", "evidence", "bus", "edge")
                 if getattr(cfg, k) != getattr(self.cfg, k)]
        if other:
            log.warning("config: %s changed; cameras are applied live, the rest takes effect after a restart",
                        ", ".join(other))
        return changes

    def _detach(self, run: CameraRun) -> None:
        """Stop a run's reader (without waiting) and hand its worker to the loop to finish."""
        run.stop.set()
        self.metrics.retire_source(run.camera.id, run.health)
        threading.Thread(target=run.source.close, name=f"close-{run.camera.id}", daemon=True).start()
        run.frames.clear()
        with self._lock:
            self._retiring.append(run)
            self._history.append(run)
        self._wake.set()

    def _retire(self, run: CameraRun) -> None:
        """Finish a detached run's worker (loop thread, or the caller when the loop is not running)."""
        with self._lock:
            if run in self._retiring:
                self._retiring.remove(run)
        if not run.finished.is_set():
            if not run.done:
                self._finish(run)
            # The run stays in the history for its stats only: its frames go now (a frame its reader queued after
            # the detach, the pre-roll, the rule engine's pictures), or every restart would keep a camera's memory.
            # Closed, not just cleared: a reader still inside a decode puts its last frame after this.
            run.frames.close()
            run.worker.release()
            run.finished.set()

    def _swap_zones(self, run: CameraRun, camera: CameraConfig) -> None:
        """New zones for a running camera (:meth:`EdgeWorker.replace_zones`); the source carries on."""
        self._published(run, run.worker.replace_zones(camera))
        run.camera = camera
        if run.gate is not None:
            run.gate.region = zones_region(camera, self.cfg.edge.gating.margin)

    # -- reading --------------------------------------------------------------------------------

    def _read(self, run: CameraRun) -> None:
        cid = run.camera.id
        try:
            for frame in run.source.frames():
                if run.stop.is_set():
                    break
                self.metrics.stage(cid, "decode", frame.decode_s)
                gated = run.gate is not None and not run.gate.decide(frame.image, frame.ts)
                if not run.frames.put(_Queued(frame, time.perf_counter(), gated, run.detector), run.stop):
                    break
                self._wake.set()  # a frame is waiting: the loop need not sleep out its poll
        except SourceError as e:
            run.error = str(e)
            log.error("camera %s: %s", cid, e)
        except Exception as e:  # a broken camera never stops the others
            run.error = f"{type(e).__name__}: {e}"
            log.exception("camera %s (%s) failed", cid, mask_url(run.camera.source.url))
        finally:
            run.frames.put_final(_END)
            self._wake.set()

    def _samples(self) -> Iterable[CameraSample]:
        return [CameraSample(r.camera.id, r.health, len(r.frames), r.live, r.worker.view_status()) for r in self.runs]

    # -- the loop -------------------------------------------------------------------------------

    def run(self, stop: threading.Event, *, until_done: bool = True) -> dict[str, WorkerStats]:
        """Process the cameras until ``stop`` is set or, with ``until_done``, until every camera has ended
        (files); returns per-camera stats (removed and restarted cameras included)."""
        with self._lock:
            self._running = True
            for r in self._runs.values():
                if r.thread is None:
                    self._start(r)
        if self.rechecks is not None:
            self.rechecks.start()
        last_progress = time.monotonic()
        # Two stages in step: while the detector thread runs batch N+1, this thread tracks, applies the rules and
        # keeps the evidence (pre-roll JPEG encoding included) of batch N. The cores the runtime does not keep
        # busy during the Python work of a batch are then busy with the next batch's inference, so the detector
        # never waits on that work (bench/: pipeline / bare detector). Workers are still only touched here.
        detector = ThreadPoolExecutor(max_workers=1, thread_name_prefix="detect")
        # Two threads: the frames of a batch are encoded side by side while it is detected (a camera's frames are
        # not held to one thread, so one fast file camera is not bound by its reader), and only frames that are
        # processed are encoded (a live camera's dropped frames never are).
        encoder = self._encoder = ThreadPoolExecutor(max_workers=2, thread_name_prefix="preroll")
        pending: _Job | None = None
        try:
            while not stop.is_set():
                self._housekeeping()
                with self._lock:
                    active = [r for r in self._runs.values() if not r.done]
                    idle = not active and not self._retiring
                if idle and until_done and pending is None:
                    break
                if pending is not None:
                    concurrent.futures.wait([pending.dets])  # the detector is free: form the next batch now,
                    # from the newest frames queued (a live camera's freshest picture), and detect it while the
                    # batch just detected is processed
                    if stop.is_set():
                        break  # no new batch; the one detected is processed below
                batch = self._scheduler.next_batch([(r.camera.id, r.frames) for r in active])
                job: _Job | None = None
                if batch:
                    by_id = {r.camera.id: r for r in active}
                    work: list[tuple[CameraRun, _Queued]] = []
                    ended: list[CameraRun] = []
                    for cid, item in batch:
                        r = by_id[cid]
                        if item is _END:
                            ended.append(r)
                        elif not r.stop.is_set():
                            work.append((r, item))
                    job = self._submit(detector, work, ended)
                if pending is not None:
                    self._complete(pending)
                pending = job
                if pending is not None and not self.overlap:
                    self._complete(pending)
                    pending = None
                if not batch:
                    if pending is None:
                        self._wake.wait(0.005 if active else 0.2)
                        self._wake.clear()
                    continue
                if self.progress and time.monotonic() - last_progress >= self.progress_every_s:
                    last_progress = time.monotonic()
                    for r in self.runs:
                        if not r.done:
                            self.progress(self.describe(r))
            if pending is not None:
                self._complete(pending)
                pending = None
        finally:
            if pending is not None:  # an exception on the way: let the batch in flight end before closing
                with contextlib.suppress(Exception):
                    pending.dets.result()
            detector.shutdown(wait=True)
            encoder.shutdown(wait=True)
            self._encoder = None
            with self._lock:
                self._running = False
                runs = list(self._runs.values())
            self._housekeeping()
            for r in runs:
                r.stop.set()
                r.source.close()
            for r in runs:
                if r.thread is not None:
                    r.thread.join(timeout=5)
            for r in runs:  # the packages of cameras still running at the stop
                self._published(r, r.worker.drain())
            self._writer.close()
            if self.rechecks is not None:
                self.rechecks.stop()
                try:
                    self.rechecks.finish(self.run_of)
                except Exception:  # the bus is away: the case side counts the re-checks unavailable after their grace
                    log.exception("answering the open camera re-checks failed")
        return self.stats()

    def _housekeeping(self) -> None:
        self._fit_queues()
        with self._lock:
            retiring = list(self._retiring)
            swaps = [(r, r.pending_camera) for r in self._runs.values() if r.pending_camera is not None]
            for r, _ in swaps:
                r.pending_camera = None
        for r in retiring:
            self._retire(r)
        for r, cam in swaps:
            if cam is not None:
                self._swap_zones(r, cam)
            r.swapped.set()
        if self.rechecks is not None:
            try:
                self.rechecks.tick(self.run_of)
            except Exception:  # a bus or store failure answering one re-check never stops the cameras
                log.exception("camera re-checks: answering failed")

    def _detect(self, images: list[Any], detector: Detector | None = None) -> list[sv.Detections | None]:
        """One detector call for the batch; if it fails, frame by frame so one bad frame costs only itself."""
        detector = detector or self.detector
        t = time.perf_counter()
        try:
            dets: list[sv.Detections | None] = list(detector.detect(images))
            self.metrics.detector_call(detector.backend, len(images), time.perf_counter() - t)
            return dets
        except Exception:
            if len(images) == 1:
                raise
        out: list[sv.Detections | None] = []
        for im in images:
            try:
                out.extend(self._detect([im], detector))
            except Exception as e:
                log.error("detector failed on a frame of shape %s: %s", getattr(im, "shape", "?"), e)
                out.append(None)
        return out

    def _submit(self, pool: ThreadPoolExecutor, work: list[tuple[CameraRun, _Queued]],
                ended: list[CameraRun]) -> _Job:
        """Start detecting the frames of ``work`` the motion gate let through (one call, on the detector thread)."""
        todo = [i for i, (_, q) in enumerate(work) if not q.gated]
        t0 = time.perf_counter()
        images = [work[i][1].frame.image for i in todo]

        def detect() -> list[sv.Detections | None]:
            if not images:
                return []
            try:
                return self._detect(images, work[todo[0]][0].detector)  # a batch holds one detector's frames
            except Exception as e:
                log.error("detector failed on a frame of camera %s: %s", work[todo[0]][0].camera.id, e)
                return [None] * len(images)

        encoder = self._encoder
        jpegs: list[Future[bytes] | None] = [
            encoder.submit(r.worker.encode_preroll, q.frame.image)
            if encoder is not None and r.worker.writer is not None else None for r, q in work]
        return _Job(work, ended, todo, t0, pool.submit(detect), jpegs)

    def _complete(self, job: _Job) -> None:
        """Process every frame of a detected batch in order (gated ones with their camera's last detections),
        then finish the cameras whose stream ended in it."""
        found = job.dets.result()
        detect_s = time.perf_counter() - job.t0
        work = job.work
        dets: list[sv.Detections | None] = [None] * len(work)
        for i, d in zip(job.todo, found, strict=True):
            dets[i] = d
            self.metrics.frames_detected.labels(camera=work[i][0].camera.id).inc()
        for (r, q), d, jpeg in zip(work, dets, job.jpegs, strict=True):
            cid = r.camera.id
            self.metrics.stage(cid, "queue", job.t0 - q.at)
            if d is None and not q.gated:
                r.error = "the detector failed on a frame (see the log)"
                continue
            if r.stop.is_set() or (self.admit is not None and not self.admit(cid)):
                continue  # removed while the batch was detected, or not ours to process (detector pool)
            if q.gated:
                self.metrics.frames_gated.labels(camera=cid).inc()
            else:
                self.metrics.stage(cid, "detect", detect_s)
            self._process(r, q.frame, d, _encoded(jpeg))
        for r in job.ended:
            r.done = True
            self._finish(r)
            r.finished.set()

    def _published(self, r: CameraRun, events: list[ViolationEvent]) -> None:
        """Count the events a worker call returned; a package the writer could not write (logged by the worker)
        becomes the camera's error."""
        if r.worker.error is not None:
            r.error, r.worker.error = r.worker.error, None
        self.metrics.published(r.camera.id, (e.type for e in events))

    def _process(self, r: CameraRun, frame: Frame, d: sv.Detections | None, jpeg: bytes | None = None) -> None:
        cid = r.camera.id
        try:
            events = r.worker.process(frame, d, jpeg=jpeg)  # reports its stages' times to the metrics (on_stage)
        except Exception as e:  # one camera's failure (a bad frame, a full disk) is its own
            r.error = f"{type(e).__name__}: {e}"
            log.exception("camera %s: frame %d failed", cid, frame.index)
            return
        self.metrics.frames_processed.labels(camera=cid).inc()
        self._published(r, events)
        r.processed_at.append(time.monotonic())
        if self.rechecks is not None:
            try:
                self.rechecks.observe(r, frame)
            except Exception:  # the re-check's trouble (a store write) is not the camera's
                log.exception("camera %s: re-check failed on frame %d", cid, frame.index)

    def _finish(self, r: CameraRun) -> list[ViolationEvent]:
        try:
            events = r.worker.finish()
        except Exception as e:
            r.error = f"{type(e).__name__}: {e}"
            log.exception("camera %s: finishing failed", r.camera.id)
            return []
        self._published(r, events)
        return events

    # -- reporting ------------------------------------------------------------------------------

    def stats(self) -> dict[str, WorkerStats]:
        """Per-camera worker stats, summed over restarts, removed cameras included."""
        with self._lock:
            runs = [*self._history, *self._runs.values()]
        out: dict[str, WorkerStats] = {}
        for r in runs:
            s = r.worker.stats
            acc = out.setdefault(r.camera.id, WorkerStats())
            acc.frames += s.frames
            acc.gated += s.gated
            acc.detections += s.detections
            acc.onsets += s.onsets
            acc.retracted += s.retracted
            for k, v in s.published.items():
                acc.published[k] = acc.published.get(k, 0) + v
            if s.last_ts is not None:
                acc.last_ts = s.last_ts if acc.last_ts is None else max(acc.last_ts, s.last_ts)
        return out

    def describe(self, r: CameraRun) -> str:
        s = r.worker.stats
        elapsed = max(time.monotonic() - r.started, 1e-6)
        state = "error: " + r.error if r.error else ("done" if r.done else "running")
        found = ", ".join(f"{k} {v}" for k, v in sorted(s.published.items())) or "none yet"
        return (f"[{r.camera.id}] {state}: {s.frames} frames ({s.frames / elapsed:.1f}/s), "
                f"{s.onsets} onsets, {s.retracted} retracted, violations: {found}")
