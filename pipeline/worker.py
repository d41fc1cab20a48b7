"""The edge worker of one camera: detections -> tracker -> appearance -> rules -> evidence capture -> publish.

Detection itself happens outside (the runner batches frames across cameras into one detector call);
:meth:`EdgeWorker.process` takes a frame and its detections. A confirmed violation is published after
``post_roll_s`` more seconds of video, once every blob is in the store (claim-check: the event names
the blobs by key and sha256, media never rides the bus).

Evidence is two-stage (GA/T 832): the onset still, a second overview still ``evidence.min_still_gap_s``
after it while the object stays (role ``overview_2``; publishing waits for it when the dwell is shorter),
the confirmation still and a close-up. For a violation type whose evidence hook asks for it (sidewalk
parking: ``reads_plate``) the plate is read from the main object when a plate reader is there
(``plate_reader``, by default :mod:`nonsite.models.plates` when installed); look-alike classes a type names
(``merge_classes``: car/truck/bus) are merged into one box per object before tracking, and so are the
overlapping partial boxes of one object of one class (``tracker.split_boxes``). The camera view guard
(:mod:`nonsite.pipeline.viewguard`) pauses the rules while the view does not match the zones' reference
snapshot and re-registers the zones after a small shift. A type that keeps a
clean reference still of its zones (``reference``: the left-object types) adds it as role ``reference``: the
zone before the object came, beside the onset and confirmation stills.

Writing a package (decoding the pre-roll, encoding the clip, the stills, the plate reading, the store and the bus)
takes a camera's box hundreds of milliseconds. Under the runner it happens off the detection loop, on a
:class:`PackageWriter`: the loop hands a due violation over with everything it needs taken at that moment (zone,
camera, clip frames) and goes on with the next frame of every camera; a camera's packages are numbered and
published in hand-off order, however many writer threads; :meth:`EdgeWorker.process` returns the events whose
packages were written since its last call, :meth:`EdgeWorker.finish` waits for all of its own. Without a writer
(``nonsite eval``, the tests of one worker) the package is written inside the call, as before.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, Protocol, TypeVar

import cv2
import numpy as np
import supervision as sv

from nonsite.bus.base import Bus
from nonsite.bus.events import (
    TOPIC_VIOLATIONS,
    BoxRecord,
    Location,
    ModelInfo,
    OffenderHint,
    ViolationEvent,
    new_event_id,
)
from nonsite.config import CameraConfig, NonsiteConfig, ZoneConfig
from nonsite.evidence.capture import CameraMeta, ClipEncoder, Still, decode_clip_frame, write_package_blobs
from nonsite.evidence.store import Store
from nonsite.ops.cameras import ViewStatus
from nonsite.pipeline.appearance import add_appearance
from nonsite.pipeline.detections import merge_class_group, merge_split_boxes
from nonsite.pipeline.rules import Episode, RuleEngine, RuleEvent, camera_rules, rule_config_hash
from nonsite.pipeline.tracking import Tracker
from nonsite.pipeline.viewguard import ViewGuard, warp_zones, zones_hash
from nonsite.pipeline.violations import violation_types
from nonsite.streams.base import Frame
from nonsite.streams.ringbuffer import RingBuffer

log = logging.getLogger(__name__)
T = TypeVar("T")

PLATE_ROLE = "plate"
SECOND_STILL_ROLE = "overview_2"
REFERENCE_ROLE = "reference"


class PlateReadingLike(Protocol):
    """What a plate reader returns (``nonsite.models.plates.PlateReading``)."""

    text: str
    confidence: float
    format: str
    crop: np.ndarray
    crop_xyxy: tuple[float, float, float, float]


StageHook = Callable[[str, float], None]
"""``hook(stage, seconds)`` after each processed frame: ``track`` (the tracker), ``rules`` (the rule engine) and
``evidence`` (the rest: appearance, stills, clips, and publishing when there is no writer); the frame that builds the
rule engine reports ``track`` only (not a representative sample of the other two). After each package written:
``package`` (plate reading, stills, clip, store and bus; on the writer's thread when there is one)."""

PlateReader = Callable[[np.ndarray, tuple[float, float, float, float]], "PlateReadingLike | None"]
"""``reader(image_bgr, vehicle_xyxy)`` -> a reading that matched a configured format, or None."""


def default_plate_reader(cfg: NonsiteConfig) -> PlateReader | None:
    """``nonsite.models.plates.read_plate`` with the ``plates:`` section of ``cfg``; None when that section
    switches reading off. The import is tried once, at first use (a camera never waits for OCR models it
    will not need); without a reader installed, events simply carry no plate."""
    plates_cfg = getattr(cfg, "plates", None)
    if plates_cfg is not None and not getattr(plates_cfg, "enabled", True):
        return None
    state: dict[str, object] = {}

    def read(image: np.ndarray, xyxy: tuple[float, float, float, float]) -> PlateReadingLike | None:
        if "fn" not in state:
            try:
                from nonsite.models.plates import read_plate  # type: ignore[import-not-found,unused-ignore]
            except ImportError as e:
                log.info("no plate reader installed (%s); parking events carry no plate", e)
                state["fn"] = None
            else:
                state["fn"] = read_plate
        fn = state["fn"]
        if fn is None:
            return None
        return fn(image, xyxy, plates_cfg)  # type: ignore[operator,no-any-return]

    return read


class _Clip:
    """JPEG frames of one episode: the first half of ``max_s`` and the last half (long episodes)."""

    def __init__(self, frames: list[tuple[float, bytes]], max_s: float) -> None:
        self.half = max_s / 2
        self.head: list[tuple[float, bytes]] = []
        self.tail: deque[tuple[float, bytes]] = deque()
        for f in frames:
            self.add(*f)

    def add(self, ts: float, jpeg: bytes) -> None:
        if not self.head or ts - self.head[0][0] <= self.half:
            self.head.append((ts, jpeg))
            return
        self.tail.append((ts, jpeg))
        while self.tail and ts - self.tail[0][0] > self.half:
            self.tail.popleft()

    def frames(self) -> list[tuple[float, bytes]]:
        return self.head + list(self.tail)


@dataclass
class _PlateView:
    """A still and the vehicle's box in it to read the plate from; with a writer, the reading started ahead."""

    still: Still
    xyxy: tuple[float, float, float, float]
    reading: Future[PlateReadingLike | None] | None = None


@dataclass
class _Open:
    episode: Episode
    onset: Still
    clip: _Clip | None
    """The clip's frames until the confirmation (then :attr:`video` takes them over)."""
    confirm: Still | None = None
    second: Still | None = None
    closeup: tuple[float, float, float, float] | None = None
    plate_views: list[_PlateView] = field(default_factory=list)
    """The stills to read the plate from."""
    reference: Still | None = None
    publish_at: float = float("inf")
    closed: bool = False
    event_id: str = field(default_factory=new_event_id)
    video: EpisodeClip | None = None
    """The clip from the confirmation on, encoded while the package waits."""


def _done(job: Callable[[], ViolationEvent]) -> Future[ViolationEvent]:
    """``job`` run now, as a finished future."""
    future: Future[ViolationEvent] = Future()
    try:
        future.set_result(job())
    except Exception as e:
        future.set_exception(e)
    return future


@dataclass
class _Turn:
    """A package's two points of order among its camera's packages (:meth:`EdgeWorker._package`)."""

    numbered: threading.Event = field(default_factory=threading.Event)
    published: threading.Event = field(default_factory=threading.Event)


class PackageWriter:
    """Writes evidence packages and publishes their events on ``threads`` threads of its own, started in the order
    handed over, while the detection loop goes on with every camera's frames. A camera's packages keep their
    order (sequence numbers, publication) whatever the number of threads (:meth:`EdgeWorker._package`). Work done
    ahead for packages not yet due (:meth:`soon`: a clip's frames, plate readings) runs on threads of its own, so a
    package due now never queues behind another's preparation.

    ``max_pending``: packages handed over and not yet written; a hand-off past it waits for a free place (a box
    whose cameras confirm faster than it can write stops taking frames instead of filling its memory with
    clips). ``nice``: added to the threads' niceness (Linux sets it per thread; the clip encoder's threads inherit it):
    on a full box the detector and the cameras' readers come first, packages take the CPU left over. The threads
    start at the first hand-off; :meth:`close` waits for what was handed over and ends them (a later hand-off
    starts new ones)."""

    def __init__(self, max_pending: int = 32, nice: int = 0, threads: int = 1) -> None:
        if max_pending < 1:
            raise ValueError(f"max_pending must be at least 1, got {max_pending}")
        if threads < 1:
            raise ValueError(f"threads must be at least 1, got {threads}")
        self.threads = threads
        if not 0 <= nice <= 19:
            raise ValueError(f"nice must be 0..19, got {nice}")
        self.nice = nice
        self._slots = threading.BoundedSemaphore(max_pending)
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        self._ahead: dict[str, ThreadPoolExecutor] = {}

    def submit(self, job: Callable[[], ViolationEvent]) -> Future[ViolationEvent]:
        self._slots.acquire()
        try:
            with self._lock:
                future = self._started().submit(job)
        except BaseException:
            self._slots.release()
            raise
        future.add_done_callback(lambda _f: self._slots.release())
        return future

    def soon(self, job: Callable[[], T], lane: Literal["clips", "plates"] = "clips") -> Future[T]:
        """Run ``job`` ahead of a package, not counted as a package, on the writer's threads for such work (started in
        the order given within a lane). ``clips``: as many threads as write packages. ``plates`` (plate readings,
        and loading the reader): one, as the reader reads one still at a time. A burst of confirmations (cars
        parked in a row, several cameras at once) brings plate readings and clips' frames together: on one thread
        they queued behind each other while the other core idled."""
        with self._lock:
            pool = self._ahead.get(lane)
            if pool is None:
                pool = self._ahead[lane] = ThreadPoolExecutor(
                    max_workers=self.threads if lane == "clips" else 1, thread_name_prefix=f"evidence-ahead-{lane}",
                    initializer=self._lower_priority)
            return pool.submit(job)

    def _started(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="evidence-writer",
                                            initializer=self._lower_priority)
        return self._pool

    def _lower_priority(self) -> None:
        if self.nice and hasattr(os, "setpriority"):
            try:
                tid = threading.get_native_id()  # this thread only (Linux), relative to where the edge runs
                os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + self.nice))
            except OSError as e:  # a platform that nices whole processes only: the writer runs as the rest
                log.warning("the package writer runs at normal priority: %s", e)

    def close(self) -> None:
        """Wait for every package and all work handed over, then end the threads."""
        with self._lock:
            pools, self._pool, self._ahead = (self._pool, *self._ahead.values()), None, {}
        for pool in pools:
            if pool is not None:
                pool.shutdown(wait=True)


class EpisodeClip:
    """clip.mp4 of a confirmed episode, encoded while its package waits for the post-roll (and the second still):
    the frames its clip held at the confirmation (``frames``: the pre-roll and the episode, the start and the end of
    a long one), then every frame the camera takes until the package is written (:meth:`add`, on the loop's
    thread). With a writer, the frames are decoded and encoded on the writer's threads as they come, a few at a
    time; :meth:`video` (the package) then encodes the last ones and closes the file. Without one, :meth:`video`
    encodes them all. Packages confirmed on the same frame from the same frames (cars parked in a row when the
    camera starts or its view returns) share one: encoding is most of a package's cost."""

    BATCH = 5
    """Frames that wait before a writer thread is asked to encode them."""

    def __init__(self, frames: list[tuple[float, bytes]], preset: str, writer: PackageWriter | None) -> None:
        self.frames = frames
        """The frames at the confirmation (the packages that share this clip are found by them)."""
        self.writer = writer
        self._pending: deque[tuple[float, bytes]] = deque(sorted(frames, key=lambda f: f[0]))
        self._encoder = ClipEncoder(preset)
        self._lock = threading.Lock()  # one thread encodes at a time
        self._asked = False
        self._sealed = False
        self._closed = False
        self._video: bytes | None = None
        self._ask()

    def add(self, ts: float, jpeg: bytes) -> None:
        """The camera's next frame (the loop's thread); ignored once the clip is sealed."""
        if not self._sealed:
            self._pending.append((ts, jpeg))
            self._ask()

    def seal(self) -> None:
        """No more frames (the loop's thread, when the package is handed over: its clip ends with the frame it was
        due on, whenever the writer gets to it; a package sharing this clip and handed over later gets the same)."""
        self._sealed = True

    def _ask(self) -> None:
        if self.writer is None or self._asked or len(self._pending) < self.BATCH:
            return
        self._asked = True
        try:
            self.writer.soon(self._encode_some)
        except RuntimeError:  # the writer is shutting down: video() encodes them
            self._asked = False

    def _encode_some(self) -> None:
        """The frames waiting, one at a time (the package, when it comes, takes the rest). When another thread is
        encoding this clip, it takes these frames too: this thread goes on with other work instead of waiting."""
        self._asked = False
        while True:
            if not self._lock.acquire(blocking=False):
                return
            try:
                if self._closed or not self._encode_one():
                    return
            finally:
                self._lock.release()

    def _encode_pending(self) -> None:
        while self._encode_one():
            pass

    def _encode_one(self) -> bool:
        """Encode the next frame waiting (under the lock); False when none waits."""
        try:
            ts, data = self._pending.popleft()
        except IndexError:
            return False
        img = decode_clip_frame(ts, data)
        if img is not None:
            self._encoder.push(ts, img)
        return True

    def video(self) -> bytes | None:
        """clip.mp4 (None when no frame decodes); made once, the packages sharing the clip get the same bytes."""
        with self._lock:
            if not self._closed:
                try:
                    self._encode_pending()
                    self._video = self._encoder.close() if self._encoder.frames else None
                finally:
                    self._closed = True
                    self._pending.clear()
                    self._encoder.discard()
            return self._video

    def discard(self) -> None:
        """The camera stops without writing the package: drop the frames and the temporary file."""
        with self._lock:
            self._closed = True
            self._pending.clear()
            self._encoder.discard()

    def same_frames(self, frames: list[tuple[float, bytes]]) -> bool:
        return len(frames) == len(self.frames) and all(
            a[0] == b[0] and a[1] is b[1] for a, b in zip(frames, self.frames, strict=True))


class SequenceCounter:
    """Per-camera evidence sequence numbers, persisted so they never repeat across restarts."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)

    def next(self, camera_id: str) -> int:
        with self._lock:
            data = json.loads(self.path.read_text()) if self.path.exists() else {}
            data[camera_id] = int(data.get(camera_id, 0)) + 1
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(data, sort_keys=True))
            tmp.replace(self.path)
            return data[camera_id]


@dataclass
class WorkerStats:
    frames: int = 0
    gated: int = 0
    """Frames processed with the last detections (motion gate: the detector did not run on them)."""
    detections: int = 0
    onsets: int = 0
    retracted: int = 0
    published: dict[str, int] = field(default_factory=dict)
    last_ts: float | None = None


class EdgeWorker:
    def __init__(
        self,
        camera: CameraConfig,
        cfg: NonsiteConfig,
        store: Store,
        bus: Bus,
        model: ModelInfo,
        sequence: SequenceCounter,
        plate_reader: PlateReader | None = None,
        *,
        on_stage: StageHook | None = None,
        views_dir: Path | None = None,
        writer: PackageWriter | None = None,
    ) -> None:
        """``views_dir``: where the view guard keeps each camera's reference snapshot (the runner passes
        ``DATA_DIR/edge/views``); None keeps it in memory only. ``writer``: where packages are written (the
        runner's, shared by its cameras); None writes them inside :meth:`process`."""
        self.on_stage = on_stage
        self.writer = writer
        self._writing: deque[Future[ViolationEvent]] = deque()
        """Packages handed to the writer, oldest first, whose events :meth:`process` has not returned yet."""
        self._turn: _Turn | None = None
        """The order point of this camera's last package handed over."""
        self.ahead = True
        """With a writer: encode a confirmed violation's clip and read its plate while the package waits (False: when
        it is due; bench/ compares both)."""
        self._new_clips: tuple[float, list[EpisodeClip]] = (float("nan"), [])
        """The clips started on the last confirming frame (packages confirmed on it from the same frames share one)."""
        self.error: str | None = None
        """The last package that could not be written (with a writer; without one the call raises), until read."""
        self.views_dir = views_dir
        self.camera, self.cfg, self.store, self.bus, self.model = camera, cfg, store, bus, model
        self.sequence = sequence
        self._types = {t.name: t for t in violation_types()}
        self._set_camera(camera)
        self.plate_reader = plate_reader if plate_reader is not None else default_plate_reader(cfg)
        self.tracker = Tracker(cfg.tracker, camera.fps)
        ev = cfg.evidence
        self.ring = RingBuffer(
            max_seconds=ev.pre_roll_s + 2.0 / camera.fps, max_bytes=max(1, int(ev.pre_roll_max_mb * 2**20)),
            jpeg_quality=ev.pre_roll_jpeg_quality,
        )
        self.engine: RuleEngine | None = None
        self.paused_frames = 0
        """Frames whose rules were skipped because the view moved (view guard)."""
        self.open: dict[tuple[str, str, int], _Open] = {}
        self.pending: list[_Open] = []
        self.stats = WorkerStats()
        self._held: sv.Detections | None = None
        """The last detected frame's detections (classes merged): what a gated frame (no detection) reuses."""
        self._copied: tuple[Frame, np.ndarray, dict[int, bytes]] | None = None
        """The copy of the frame being processed that its stills share, and its JPEG by quality (:meth:`_still`)."""

    def _set_camera(self, camera: CameraConfig) -> None:
        """The camera's zones and rules: thresholds, the class groups its types merge, the rule hash, the meta."""
        self.camera = camera
        self.rules = camera_rules(camera, self.cfg.rules)
        self._merge_groups = [list(t.merge_classes(getattr(self.rules, t.name)))
                              for t in self._types.values() if t.merge_classes is not None]
        self.rule_hash = rule_config_hash(camera, self.cfg.rules)
        self._meta = CameraMeta(id=camera.id, name=camera.name, address=camera.location.address)
        self._zones_camera = camera
        """The camera with its zones where they lie in the image now (re-registered by the view guard)."""
        guard = self.cfg.view_guard
        on = guard.enabled if camera.view_guard is None else camera.view_guard
        self.view: ViewGuard | None = None
        if on and camera.zones:
            folder = self.views_dir / camera.id if self.views_dir is not None else None
            self.view = ViewGuard(guard, folder, camera.id, zones_hash(camera))

    def _check_view(self, frame: Frame) -> None:
        """The view guard at its interval: a moved view closes the open episodes and pauses the rules (alerted
        objects are remembered: one still there when the view returns does not alert again); a shifted one
        re-registers the zones; a view back home restores them."""
        if self.view is None:
            return
        change = self.view.observe(frame.image, frame.ts)
        if change is None:
            return
        h = self.view.homography
        self._zones_camera = warp_zones(self.camera, h) if change == "shifted" and h is not None else self.camera
        if self.engine is None:
            return
        if change == "moved":
            for ev in self.engine.finish(frame.ts):
                self._on_rule_event(ev, None)
        else:
            self.engine.move_zones(self._zones_camera)

    @property
    def last_detections(self) -> sv.Detections:
        """The detections of the frame processed last (classes merged; a gated frame's are the held ones)."""
        return self._held if self._held is not None else sv.Detections.empty()

    @property
    def zones_camera(self) -> CameraConfig:
        """The camera with its zones where they lie in the image now (re-registered by the view guard)."""
        return self._zones_camera

    @property
    def rules_paused(self) -> bool:
        """True while the view guard says the camera looks elsewhere than where its zones were drawn."""
        return self.view is not None and self.view.state == "moved"

    def view_status(self) -> ViewStatus | None:
        return self.view.status() if self.view is not None else None

    def reference(self) -> bytes | None:
        """The reference snapshot of the zones (JPEG), or None before the first frame / without a guard."""
        return self.view.reference_jpeg() if self.view is not None else None

    def reads_plates(self) -> bool:
        """Whether a violation of this camera may have its plate read (a reader is there and one of its zones'
        kinds is watched by a type that reads plates)."""
        kinds = {z.kind for z in self.camera.zones}
        return self.plate_reader is not None and any(
            vt.reads_plate is not None and kinds.intersection(vt.watches) for vt in self._types.values())

    def warm_up(self) -> None:
        """Load the plate reader's models now (on the writer's thread, when the camera starts) rather than with the
        camera's first violation, which would go out a second later."""
        if self.plate_reader is None or not self.reads_plates():
            return
        try:
            self.plate_reader(np.zeros((64, 64, 3), np.uint8), (0.0, 0.0, 64.0, 64.0))
        except Exception:  # the first real reading reports it
            log.debug("camera %s: warming the plate reader failed", self.camera.id, exc_info=True)

    def encode_preroll(self, image: np.ndarray) -> bytes:
        """The pre-roll JPEG of a frame, as :meth:`process` would store it; safe on any thread (the runner's encoder
        threads encode a batch's frames while it is detected, off the detection loop)."""
        return self.ring.encode(image)

    def process(self, frame: Frame, detections: sv.Detections | None, *,
                jpeg: bytes | None = None) -> list[ViolationEvent]:
        """Advance this camera by one sampled frame; returns the events published during it (with a writer: the
        events whose packages were written since the last call).

        ``jpeg``: the frame's pre-roll JPEG when it is already encoded (:meth:`encode_preroll`).

        ``detections`` None: the motion gate skipped the detector on this frame (:mod:`nonsite.pipeline.gating`,
        nothing moved in or near the zones): the last detected frame's detections stand for it, through the
        tracker (which ages lost tracks by time and frames: fed the held detections, a still object keeps its
        track and id however long the scene stays still), the rules, the view guard and the evidence, all with
        this frame's timestamp and picture."""
        started = time.perf_counter()
        self._check_view(frame)
        builds_engine = self.engine is None
        if self.engine is None:
            self.engine = RuleEngine(self._zones_camera, self.cfg.rules, frame.shape, timezone=self.cfg.timezone)
        self.stats.frames += 1
        self.stats.last_ts = frame.ts
        if jpeg is not None:
            self.ring.append_jpeg(frame.ts, jpeg)
        else:
            self.ring.append(frame.ts, frame.image)
        latest = self.ring.latest()
        if latest is not None:
            for o in self.open.values():
                if o.clip is not None:
                    o.clip.add(*latest)
            for video in {id(o.video): o.video for o in self.pending if o.video is not None}.values():
                video.add(*latest)
        if detections is None:
            self.stats.gated += 1
            detections = self._held if self._held is not None else sv.Detections.empty()
        else:
            self.stats.detections += len(detections)
            detections = self._merge(detections)
            self._held = detections
        t = time.perf_counter()
        tracks = self.tracker.update(detections, frame.ts)
        track_s = time.perf_counter() - t
        tracked = add_appearance(frame.image, tracks)
        t = time.perf_counter()
        if self.rules_paused:
            rule_events: list[RuleEvent] = []
            self.paused_frames += 1
        else:
            rule_events = self.engine.update(tracked, frame.ts, frame.image)
        rules_s = time.perf_counter() - t
        for ev in rule_events:
            self._on_rule_event(ev, frame)
        self._second_stills(frame)
        self._copied = None  # the stills taken keep their picture; the worker keeps none
        published = self._publish_due(frame.ts)
        if self.on_stage is not None:
            self.on_stage("track", track_s)
            if not builds_engine:
                self.on_stage("rules", rules_s)
                self.on_stage("evidence", time.perf_counter() - started - track_s - rules_s)
        return published

    def _merge(self, detections: sv.Detections) -> sv.Detections:
        """One box per object: look-alike classes a type merges, then split partial boxes of one object."""
        for group in self._merge_groups:
            detections = merge_class_group(detections, group)
        split = self.cfg.tracker.split_boxes
        if split.enabled:
            detections = merge_split_boxes(detections, split.classes, split.min_overlap)
        return detections

    def replace_zones(self, camera: CameraConfig) -> list[ViolationEvent]:
        """New zones (``camera`` differs from the current one in its zones only): episodes open under the old
        zones are closed (confirmed ones are published now, returned), the rule engine is rebuilt from the new
        zones on the next frame; the tracker and the pre-roll carry on."""
        events = self.finish()
        self._set_camera(camera)
        self.engine = None
        return events

    def snapshot(self) -> bytes | None:
        """The latest frame as JPEG, or None before the first."""
        latest = self.ring.latest()
        return latest[1] if latest is not None else None

    def _still(self, frame: Frame, boxes: list[BoxRecord]) -> Still:
        """A still of ``frame``: one copy of its picture per frame, shared by every still taken of it (a scene
        with many objects opens many episodes on one frame, and each used to keep a full-size copy of its own:
        at 1080p most of a busy camera's memory, bench/memory.py), and so is its JPEG (:attr:`Still.jpegs`).
        Stills are only read (annotating and cropping make copies)."""
        if self._copied is None or self._copied[0] is not frame:
            self._copied = (frame, frame.image.copy(), {})
        return Still(frame.ts, self._copied[1], boxes, self._copied[2])

    def _second_stills(self, frame: Frame) -> None:
        """Take the second overview still of episodes that reached ``min_still_gap_s`` and are seen now."""
        gap = self.cfg.evidence.min_still_gap_s
        if gap <= 0:
            return
        for o in (*self.open.values(), *self.pending):
            if (o.second is None and not o.closed and frame.ts >= o.onset.ts + gap
                    and o.episode.last_true == frame.ts):
                o.second = self._still(frame, list(o.episode.last_boxes))
                if o.confirm is not None:
                    self._offer_plate(o, o.second, o.episode.last_xyxy)

    def finish(self) -> list[ViolationEvent]:
        """End of stream: close episodes and publish what is confirmed with the post-roll there is; with a writer,
        wait until every package of this camera is written (the events are returned)."""
        if self.engine is not None and self.stats.last_ts is not None:
            for ev in self.engine.finish(self.stats.last_ts):
                self._on_rule_event(ev, None)
        return self._publish_due(float("inf"))

    def release(self) -> None:
        """The camera stopped for good (removed, or restarted as a new worker) and :meth:`finish` has run: drop the
        pictures only a running camera needs (the pre-roll frames, the held detections, the rule engine with its
        zones' background pictures, the view guard's reference) so a stopped camera costs no memory; the stats
        stay. Not to be followed by :meth:`process`."""
        self.ring.clear()
        self._held = None
        self.engine = None
        self.view = None
        self.open.clear()
        for o in self.pending:
            if o.video is not None:
                o.video.discard()
        self.pending.clear()

    def _on_rule_event(self, ev: RuleEvent, frame: Frame | None) -> None:
        key = ev.episode.key
        if ev.kind == "onset" and frame is not None:
            self.stats.onsets += 1
            pre = self.ring.between(ev.episode.onset - self.cfg.evidence.pre_roll_s, frame.ts)
            self.open[key] = _Open(ev.episode, self._still(frame, ev.boxes),
                                   _Clip(pre, self.cfg.evidence.max_clip_s), reference=self._reference(ev.episode))
        elif ev.kind == "confirmed" and frame is not None and key in self.open:
            o = self.open.pop(key)
            o.confirm = self._still(frame, ev.boxes)
            o.closeup = ev.main_xyxy
            o.publish_at = frame.ts + self.cfg.evidence.post_roll_s
            o.video = self._episode_clip(o.clip.frames() if o.clip is not None else [], frame.ts)
            o.clip = None
            if ev.main_xyxy is not None:
                self._offer_plate(o, o.confirm, ev.main_xyxy)
                if o.second is not None:
                    self._offer_plate(o, o.second, ev.main_xyxy)
            self.pending.append(o)
        elif ev.kind in ("retracted", "ended"):
            if self.open.pop(key, None) is not None:
                self.stats.retracted += ev.kind == "retracted"
            for o in self.pending:
                if o.episode is ev.episode:
                    o.closed = True

    def _episode_clip(self, frames: list[tuple[float, bytes]], ts: float) -> EpisodeClip:
        """The clip of an episode confirmed on the frame at ``ts``: the one started on this frame from the same
        frames, or a new one."""
        at, started = self._new_clips
        if at != ts:
            started = []
            self._new_clips = (ts, started)
        for video in started:
            if video.same_frames(frames):
                return video
        video = EpisodeClip(frames, self.cfg.evidence.clip_preset, self.writer if self.ahead else None)
        started.append(video)
        return video

    def _reference(self, ep: Episode) -> Still | None:
        """The type's clean reference still of the episode's zone (the "before" picture), when it keeps one."""
        vt = self._types.get(ep.rule)
        if vt is None or vt.reference is None or self.engine is None:
            return None
        ref = vt.reference(self.engine.state(ep.rule), ep.zone_id)
        if ref is None:
            return None
        image = cv2.imdecode(np.frombuffer(ref[1], np.uint8), cv2.IMREAD_COLOR)
        return Still(ref[0], image) if image is not None else None

    def _offer_plate(self, o: _Open, still: Still, xyxy: tuple[float, float, float, float]) -> None:
        """A still to read the vehicle's plate from, when its type and zone read plates and a reader is there: with a
        writer, read ahead on its thread (the package, written later, then picks the best reading); without one, or
        when the package comes first, read with the package (:meth:`_read_plate`)."""
        vt = self._types.get(o.episode.rule)
        if self.plate_reader is None or self.engine is None or vt is None or vt.reads_plate is None:
            return
        if not vt.reads_plate(self.engine.zone_config(o.episode.zone_id)):
            return
        view = _PlateView(still, xyxy)
        if self.writer is not None and self.ahead:
            with contextlib.suppress(RuntimeError):  # the writer is shutting down: read with the package
                view.reading = self.writer.soon(lambda: self._plate(still, xyxy), "plates")
        o.plate_views.append(view)

    def _plate(self, still: Still, xyxy: tuple[float, float, float, float]) -> PlateReadingLike | None:
        """The plate read from one still (None: no reading matches a configured format, or the reader failed)."""
        assert self.plate_reader is not None
        try:
            return self.plate_reader(still.image, xyxy)
        except Exception:  # OCR trouble never costs the violation itself
            log.exception("camera %s: plate reading failed; the event goes out without a plate", self.camera.id)
            return None

    def _read_plate(self, o: _Open) -> PlateReadingLike | None:
        """The most confident plate reading of the vehicle over the stills offered (never invented: a reader
        returns only readings that match a configured format)."""
        best: PlateReadingLike | None = None
        for view in o.plate_views:
            if view.reading is None or view.reading.cancel():  # not read ahead (yet): read here
                reading = self._plate(view.still, view.xyxy)
            else:
                reading = view.reading.result()
            if reading is not None and (best is None or reading.confidence > best.confidence):
                best = reading
        return best

    def _due(self, o: _Open, now: float) -> bool:
        if o.publish_at > now:
            return False
        gap = self.cfg.evidence.min_still_gap_s
        return gap <= 0 or o.second is not None or o.closed or now == float("inf")

    def _publish_due(self, now: float) -> list[ViolationEvent]:
        due: list[_Open] = []
        waiting: list[_Open] = []
        for o in self.pending:
            (due if self._due(o, now) else waiting).append(o)
        self.pending = waiting
        jobs = [self._package(o) for o in due]
        if self.writer is None:
            return [self._published(job()) for job in jobs]
        for job in jobs:
            try:
                self._writing.append(self.writer.submit(job))
            except RuntimeError:  # the interpreter is shutting down: written here, nothing lost
                self._writing.append(_done(job))
        return self._collect(wait=now == float("inf"))

    def drain(self) -> list[ViolationEvent]:
        """Wait until every package this camera handed to the writer is written; their events (none without a
        writer: those were returned by the calls that wrote them)."""
        return self._collect(wait=True)

    def _collect(self, *, wait: bool) -> list[ViolationEvent]:
        """The events of the packages the writer has written, in hand-off order (all of them with ``wait``); a
        package that failed is logged and kept in :attr:`error`."""
        out: list[ViolationEvent] = []
        while self._writing and (wait or self._writing[0].done()):
            future = self._writing.popleft()
            try:
                out.append(self._published(future.result()))
            except Exception as e:
                self.error = f"an evidence package could not be written: {type(e).__name__}: {e}"
                log.error("camera %s: %s", self.camera.id, self.error, exc_info=e)
        return out

    def _published(self, event: ViolationEvent) -> ViolationEvent:
        self.stats.published[event.type] = self.stats.published.get(event.type, 0) + 1
        return event

    def _package(self, o: _Open) -> Callable[[], ViolationEvent]:
        """What writing ``o`` needs, taken now on the loop's thread (the zone where it lies in the image now, the
        camera, the rule hash, the clip's frames): the package then comes out the same whenever and on whichever
        thread it is written, even if the view guard moves the zones meanwhile.

        Packages of one camera may be written side by side (a writer with several threads), but they take their
        sequence numbers and are published in hand-off order: each waits for the camera's previous one at those
        two points (the writer starts packages in hand-off order, so the previous one is already under way)."""
        zone = next(z for z in self._zones_camera.zones if z.id == o.episode.zone_id)
        camera, meta, rule_hash = self.camera, self._meta, self.rule_hash
        video = o.video
        assert video is not None
        video.seal()
        prev, turn = self._turn, _Turn()
        self._turn = turn

        def write() -> ViolationEvent:
            started = time.perf_counter()
            try:
                if prev is not None:
                    prev.numbered.wait()
                sequence = self.sequence.next(camera.id)  # a file write: here, off the loop
            finally:
                turn.numbered.set()
            try:
                event = self._write(o, zone, camera, meta, rule_hash, sequence, video)
                if prev is not None:
                    prev.published.wait()
                self.bus.publish(TOPIC_VIOLATIONS, camera.id, event.model_dump_json().encode())
            finally:
                turn.published.set()
            log.info("camera %s: %s in zone %s published as %s", camera.id, event.type, zone.id, o.event_id)
            if self.on_stage is not None:
                self.on_stage("package", time.perf_counter() - started)
            return event

        return write

    def _write(self, o: _Open, zone: ZoneConfig, camera: CameraConfig, meta: CameraMeta, rule_hash: str,
               sequence: int, video: EpisodeClip) -> ViolationEvent:
        """The package's blobs into the store; the event that names them (not yet published)."""
        ep, confirm = o.episode, o.confirm
        assert confirm is not None and o.closeup is not None and ep.confirmed_at is not None
        extra_stills = [(SECOND_STILL_ROLE, o.second)] if o.second is not None else []
        if o.reference is not None:
            extra_stills.append((REFERENCE_ROLE, o.reference))
        readings: list[PlateReadingLike | None] = []

        def extra_images() -> list[tuple[str, np.ndarray]]:
            """The plate's crop, taken after the stills and the clip: a reading still under way ahead (the plates
            lane reads one still at a time, and a burst queues there) finishes meanwhile."""
            readings.append(self._read_plate(o))
            return [(PLATE_ROLE, readings[0].crop)] if readings[0] is not None else []

        items = write_package_blobs(
            self.store, event_id=o.event_id, violation_type=ep.rule, camera=meta, zone_id=zone.id,
            zone_polygon=list(zone.polygon), onset=o.onset, confirm=confirm, closeup_xyxy=o.closeup,
            sequence=sequence, timezone=self.cfg.timezone,
            jpeg_quality=self.cfg.evidence.jpeg_quality, extra_stills=extra_stills, extra_images=extra_images,
            clip_preset=self.cfg.evidence.clip_preset, video=video.video,
        )
        plate = readings[0]
        boxes = {"onset": o.onset.boxes, "confirm": confirm.boxes}
        if o.second is not None:
            boxes[SECOND_STILL_ROLE] = o.second.boxes
        if o.reference is not None:
            boxes[REFERENCE_ROLE] = []
        hint = None
        if plate is not None:
            hint = OffenderHint(plate=plate.text, plate_confidence=round(float(plate.confidence), 4),
                                plate_format=plate.format, plate_role=PLATE_ROLE)
        loc = camera.location
        event = ViolationEvent(
            event_id=o.event_id, type=ep.rule, camera_id=camera.id, camera_name=camera.name,
            zone_id=zone.id, zone_name=zone.name,
            started_at=datetime.fromtimestamp(ep.onset, UTC),
            confirmed_at=datetime.fromtimestamp(ep.confirmed_at, UTC),
            track_ids=[*sorted(ep.track_ids), *sorted(ep.related_track_ids - ep.track_ids)],
            boxes=boxes,
            confidence=round(min(max(ep.confidence, 0.0), 1.0), 4),
            dwell_s=round(ep.confirmed_at - ep.onset, 3), model=self.model, rule_config_hash=rule_hash,
            evidence=items, location=Location(address=loc.address, lat=loc.lat, lon=loc.lon),
            offender_hint=hint,
        )
        return event
