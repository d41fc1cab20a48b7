"""Camera re-check before closing (docs/recheck.md), the camera side.

The process that runs a camera (an edge, or the pool worker that holds it) consumes ``nonsite.recheck`` and takes
the requests for ITS cameras (others are ignored: another process owns them). For each it watches the case's zone
frame by frame with :func:`objects_in_zone` and :func:`step` (pure functions): the zone is *clear* once no detection
of the request's classes (overlapping one of the original boxes, when the request gives them) has been in the zone
for ``clear_s``; it is *present* when ``timeout_s`` passed without such a clear stretch. It then writes the *after*
package: the zone when the watch began (``after_first``) and when it decided (``after_last``), each untouched (the
ring buffer's JPEG of that frame) and annotated (zone outline, the objects still seen, a banner), and publishes it on
``nonsite.violations`` as a :class:`~nonsite.bus.events.ViolationEvent` with a ``recheck`` block: the sealer seals
and signs it like every package (``nonsite evidence verify <request id>`` works on it) and the drafter records it on
the case. A camera that is configured here but not running (disabled, failed, its file ended) answers
``unavailable`` at once, with no stills; so does a watch whose camera stops before it decided, and a request for
classes the camera's detector does not report (a watch would always see the zone "clear").

A left object (the left-object types of :mod:`nonsite.pipeline.leftobject`: piled materials, street drying, …) is
found by background difference, not by a detector class: for those types the watch compares each frame with the
zone's clear **reference** picture that the camera's left-object detector keeps, inside the original boxes
(:func:`left_object_fraction`, :func:`left_object_present`); a zone with no reference yet (never seen clear since the
camera process started) answers ``unavailable``.

Idempotent by request id: a redelivered request that was answered (or is being watched) is ignored, and the after
package's event id is the request id, so a second answer could only repeat the first (the sealer and the case side
keep the first). A request whose ``requested_at + timeout_s`` has passed is skipped (the case side counts an
unanswered request as unavailable after its grace). A message that is not a valid request goes to the dead letter.
"""

from __future__ import annotations

import hashlib
import logging
import socket
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Literal
from zoneinfo import ZoneInfo

import cv2
import numpy as np
import supervision as sv

from nonsite.bus.base import Bus, Consumer, Message
from nonsite.bus.deadletter import UnusableMessage, dead_letter_value, parse_message
from nonsite.bus.events import (
    TOPIC_DEAD_LETTER,
    TOPIC_RECHECK,
    TOPIC_VIOLATIONS,
    BoxRecord,
    EvidenceItem,
    Location,
    ModelInfo,
    RecheckRequest,
    RecheckResult,
    ViolationEvent,
)
from nonsite.bus.metrics import DEAD_LETTERS
from nonsite.evidence.capture import JPEG, annotate, ascii_text, encode_jpeg, local_time_text
from nonsite.evidence.package import ROLE_FILES, package_prefix
from nonsite.evidence.store import Store
from nonsite.pipeline.detections import box_records, names_of
from nonsite.pipeline.geometry import overlap_of_smaller
from nonsite.pipeline.leftobject import (
    LEFT_OBJECT,
    LeftObjectState,
    Params,
    boxes_mask,
    foreground,
    gain,
    grey,
    register,
    shift_by,
    small_colour,
)

if TYPE_CHECKING:
    from nonsite.config import CameraConfig
    from nonsite.pipeline.edge import CameraRun
    from nonsite.streams.base import Frame

__all__ = ["LEFT_OBJECT_MIN_FRACTION", "MIN_BOX_OVERLAP", "CheckState", "RecheckDesk", "Watch", "default_group",
           "is_left_object_type", "left_object_fraction", "left_object_present", "objects_in_zone", "step"]

log = logging.getLogger(__name__)

#: After packages :attr:`RecheckDesk.answered` keeps (the newest).
ANSWERS_KEPT = 256
#: An object counts as the original one when it covers at least this much of the smaller of the two boxes.
MIN_BOX_OVERLAP = 0.3
#: A left object counts as still there when more than this share of its original box(es) differs from the zone's
#: clear reference. The box is the bounding box of the region the left-object detector found, so the object filled
#: much of it (a quarter of an irregular pile's box at the least); light changes, a small shake and JPEG noise leave a
#: few percent once :func:`~nonsite.pipeline.leftobject.foreground` has registered and normalised the light. A fifth
#: keeps a partly cleared pile "present" and that noise "clear".
LEFT_OBJECT_MIN_FRACTION = 0.2
Outcome = Literal["clear", "present"]


# -- the pure part --------------------------------------------------------------------------------------------


def objects_in_zone(
    detections: sv.Detections, polygon_px: np.ndarray, classes: Sequence[str], boxes_px: Sequence[Sequence[float]],
    min_confidence: float, min_overlap: float = MIN_BOX_OVERLAP,
) -> np.ndarray:
    """Mask of the detections that are the violating object: of one of ``classes``, at least ``min_confidence``,
    ground point (bottom centre) inside ``polygon_px`` (pixels, N x 2) and, when ``boxes_px`` is not empty,
    overlapping one of those boxes by ``min_overlap`` of the smaller box."""
    n = len(detections)
    if n == 0:
        return np.zeros(0, dtype=bool)
    mask = np.isin(names_of(detections), list(classes))
    if detections.confidence is not None:
        mask &= np.asarray(detections.confidence) >= min_confidence
    xyxy = np.asarray(detections.xyxy, dtype=float)
    contour = np.asarray(polygon_px, dtype=np.float32).reshape(-1, 1, 2)
    for i in np.flatnonzero(mask):
        x1, _, x2, y2 = xyxy[i]
        in_zone = cv2.pointPolygonTest(contour, (float((x1 + x2) / 2), float(y2)), False) >= 0
        same = not boxes_px or any(overlap_of_smaller(xyxy[i], b) >= min_overlap for b in boxes_px)
        mask[i] = in_zone and same
    return mask


def left_object_fraction(frame_bgr: np.ndarray, reference_bgr: np.ndarray, boxes_px: Sequence[Sequence[float]],
                         params: Params | None = None) -> float:
    """Share (0 to 1) of ``boxes_px`` (full-resolution pixels of ``frame_bgr``) where ``frame_bgr`` shows something
    that the zone's clear ``reference_bgr`` does not, judged as the left-object detector judges: both small
    (``params.width`` wide), the frame registered onto the reference with the boxes' content taken from the
    reference (a shake of up to ``params.max_shake_px`` cancels; a larger shift, e.g. something else that came into
    view, is not applied), its brightness normalised by the global gain measured outside the boxes, then
    :func:`~nonsite.pipeline.leftobject.foreground`. No box inside the frame gives 0.0."""
    p = params or Params()
    h, w = frame_bgr.shape[:2]
    if reference_bgr.shape[:2] != (h, w):
        reference_bgr = cv2.resize(reference_bgr, (w, h), interpolation=cv2.INTER_AREA)
    current, reference = small_colour(frame_bgr, p.width), small_colour(reference_bgr, p.width)
    inside = boxes_mask(current.shape[:2], np.asarray(boxes_px, dtype=float), p.width / w, grow=0.0)
    if not inside.any():
        return 0.0
    masked = current.copy()
    masked[inside] = reference[inside]  # the object itself must not pull the registration
    shift = register(grey(masked), grey(reference), p.max_shake_px)
    if shift is not None:
        current = shift_by(current, shift)
    g = gain(grey(current), grey(reference), ~inside)
    fg = foreground(current / max(g, 1e-3), reference, p)
    return float(fg[inside].mean())


def left_object_present(frame_bgr: np.ndarray, reference_bgr: np.ndarray, boxes_px: Sequence[Sequence[float]],
                        params: Params | None = None, min_fraction: float = LEFT_OBJECT_MIN_FRACTION) -> bool:
    """Whether the left object is still in its original box(es): more than ``min_fraction`` of them differs from
    the zone's clear reference (:func:`left_object_fraction`)."""
    return left_object_fraction(frame_bgr, reference_bgr, boxes_px, params) > min_fraction


def is_left_object_type(violation_type: str) -> bool:
    """Whether ``violation_type`` finds its objects by background difference (its state is a left-object
    detector's) rather than by a detector class."""
    from nonsite.pipeline.violations import violation_types

    vt = next((t for t in violation_types() if t.name == violation_type), None)
    return vt is not None and isinstance(vt.new_state, type) and issubclass(vt.new_state, LeftObjectState)


@dataclass(frozen=True)
class CheckState:
    """Where a watch stands: its first frame, the start of the current clear stretch (None while the object is
    seen) and how many frames it looked at."""

    started: float | None = None
    clear_since: float | None = None
    frames: int = 0


def step(state: CheckState, present: bool, ts: float, clear_s: float, timeout_s: float
         ) -> tuple[CheckState, Outcome | None]:
    """Advance a watch by one frame at ``ts`` (seconds) where the object is ``present`` or not; returns the new state
    and the outcome once decided: ``clear`` when the zone has been clear for ``clear_s`` (the stretch starts at the
    first clear frame), ``present`` when ``timeout_s`` after the first frame passed without that."""
    started = state.started if state.started is not None else ts
    clear_since = None if present else (state.clear_since if state.clear_since is not None else ts)
    new = CheckState(started, clear_since, state.frames + 1)
    if clear_since is not None and ts - clear_since >= clear_s:
        return new, "clear"
    if ts - started >= timeout_s:
        return new, "present"
    return new, None


# -- the camera side's desk -----------------------------------------------------------------------------------


@dataclass
class _Shot:
    ts: float
    jpeg: bytes
    boxes: list[BoxRecord]


@dataclass
class Watch:
    request: RecheckRequest
    state: CheckState = field(default_factory=CheckState)
    first: _Shot | None = None
    last: _Shot | None = None
    left_object: bool = False
    """A left-object type: judged against ``reference`` (the zone's clear picture, taken at the first frame)."""
    reference: np.ndarray | None = None


class RecheckDesk:
    """The re-checks of one :class:`~nonsite.pipeline.edge.EdgeRunner`: a consumer thread takes the requests for the
    runner's cameras; the runner's loop thread activates them (:meth:`tick`) and feeds them frames
    (:meth:`observe`), so workers are only touched by the loop thread."""

    def __init__(self, bus: Bus, store: Store, group: str, *, cameras: Callable[[], dict[str, CameraConfig]],
                 timezone: str = "Asia/Shanghai", jpeg_quality: int = 92) -> None:
        """``cameras()``: the cameras this process runs now (a pool worker's runner holds only its assigned ones)."""
        self.bus, self.store, self.group = bus, store, group
        self._cameras = cameras
        self.timezone, self.jpeg_quality = timezone, jpeg_quality
        self._lock = threading.Lock()
        self._incoming: list[RecheckRequest] = []
        self._seen: set[str] = set()
        self.watches: dict[str, list[Watch]] = {}
        self.answered: deque[ViolationEvent] = deque(maxlen=ANSWERS_KEPT)
        """The last after packages published by this desk (newest last), for the runner's callers and tests."""
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    # consumer thread

    def start(self) -> None:
        """Start reading requests (until :meth:`stop`)."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._consume, args=(self._stop,), name="recheck", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop reading requests and wait for the reader."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _consume(self, stop: threading.Event) -> None:
        consumer: Consumer | None = None
        while not stop.is_set():
            try:
                if consumer is None:
                    consumer = self.bus.consumer(TOPIC_RECHECK, self.group)
                for message in consumer.poll(max_records=50, timeout_s=0.5):
                    self.offer(message)
                    consumer.commit(message)
            except Exception as e:  # the bus is away: keep the runner going, try again
                log.warning("re-check requests: %s: %s; retrying", type(e).__name__, e)
                if consumer is not None:
                    consumer.close()
                    consumer = None
                stop.wait(1.0)
        if consumer is not None:
            consumer.close()

    def offer(self, message: Message) -> bool:
        """Take one ``nonsite.recheck`` message: True when it is a request for one of our cameras, now queued.
        A message that is no valid request is dead-lettered."""
        try:
            request = parse_message(message, RecheckRequest, "a valid RecheckRequest")
        except UnusableMessage as e:
            log.warning("dead-lettering %s offset %d: %s", message.topic, message.offset, e)
            self.bus.publish(TOPIC_DEAD_LETTER, message.key, dead_letter_value(message, str(e), self.group))
            DEAD_LETTERS.labels(message.topic, self.group).inc()
            return False
        if request.camera_id not in self._cameras():
            return False  # another edge or pool worker runs it
        if datetime.now(UTC) > request.requested_at + timedelta(seconds=request.timeout_s):
            log.info("re-check %s of case %s: expired before it arrived; skipped", request.request_id,
                     request.case_number)
            return False
        with self._lock:
            if request.request_id in self._seen:
                return False
            self._seen.add(request.request_id)
            self._incoming.append(request)
        log.info("re-check %s of case %s: camera %s, zone %s, looking for %s", request.request_id,
                 request.case_number, request.camera_id, request.zone_id, ", ".join(request.classes))
        return True

    # loop thread

    def tick(self, run_of: Callable[[str], CameraRun | None]) -> None:
        """Start the watches that arrived; answer unavailable for a camera that is not running (or stopped)."""
        with self._lock:
            incoming, self._incoming = self._incoming, []
        for request in incoming:
            run = run_of(request.camera_id)
            why = _not_running(run)
            if why is None and run is not None and not any(z.id == request.zone_id for z in run.camera.zones):
                why = f"camera {request.camera_id} has no zone {request.zone_id!r} any more"
            left = is_left_object_type(request.violation_type)  # compared with the zone's clear picture instead
            known = list(getattr(run.detector, "class_names", None) or []) if run is not None else []
            if why is None and not left and known and not set(request.classes) & set(known):
                # the detector would never see it, so a watch would always answer "clear"; say it cannot check
                why = (f"the detector of camera {request.camera_id} does not report {', '.join(request.classes)}, "
                       "so the camera cannot re-check this object")
            if why is not None:
                self._answer_unavailable(request, why, run.camera if run is not None else None)
                continue
            self.watches.setdefault(request.camera_id, []).append(Watch(request, left_object=left))
        for cid in list(self.watches):
            run = run_of(cid)
            why = _not_running(run)
            if why is not None:
                for w in self.watches.pop(cid):
                    self._answer_unavailable(w.request, f"{why} before the re-check decided",
                                             run.camera if run is not None else None, w)

    def observe(self, run: CameraRun, frame: Frame) -> None:
        """One processed frame of ``run``'s camera: advance its watches (the worker's detections of the frame)."""
        watches = self.watches.get(run.camera.id)
        if not watches:
            return
        worker = run.worker
        latest = worker.ring.latest()
        if latest is None or latest[0] != frame.ts:
            return
        ts = frame.ts
        detections = worker.last_detections
        h, w = frame.image.shape[:2]
        done: list[Watch] = []
        for watch in watches:
            req = watch.request
            zone = next((z for z in worker.zones_camera.zones if z.id == req.zone_id), None)
            if zone is None:
                continue  # tick answers it (zones changed)
            polygon = np.asarray(zone.polygon, dtype=float) * [w, h]
            if watch.left_object:
                if watch.reference is None:
                    watch.reference = _zone_reference(run, req)
                if watch.reference is None:
                    self._answer_unavailable(
                        req, f"camera {run.camera.id} has no clear reference picture of zone {req.zone_id} (not seen "
                        "clear since the camera process started), so it cannot re-check a left object", run.camera,
                        watch)
                    done.append(watch)
                    continue
                boxes = [tuple(b) for b in req.boxes_px] or [(*polygon.min(axis=0), *polygon.max(axis=0))]
                fraction = left_object_fraction(frame.image, watch.reference, boxes)
                present = fraction > LEFT_OBJECT_MIN_FRACTION
                seen = [BoxRecord(xyxy=tuple(float(v) for v in b), class_name=LEFT_OBJECT,  # type: ignore[arg-type]
                                  confidence=round(min(1.0, fraction), 4)) for b in boxes] if present else []
            else:
                mask = objects_in_zone(detections, polygon, req.classes, req.boxes_px, req.min_confidence)
                present = bool(mask.any())
                seen = box_records(detections, mask) if present else []
            shot = _Shot(latest[0], latest[1], seen)
            before = watch.state
            watch.state, outcome = step(before, present, ts, req.clear_s, req.timeout_s)
            if watch.first is None or (watch.state.clear_since is not None and before.clear_since is None
                                       and outcome is None):
                watch.first = shot  # the first frame, then the first frame of each clear stretch
            watch.last = shot
            if outcome is not None:
                self._answer(run, watch, outcome)
                done.append(watch)
        if done:
            left = [x for x in watches if x not in done]
            if left:
                self.watches[run.camera.id] = left
            else:
                self.watches.pop(run.camera.id, None)

    def finish(self, run_of: Callable[[str], CameraRun | None]) -> None:
        """The runner stops: every open watch answers unavailable (nobody will watch it any more)."""
        for cid in list(self.watches):
            run = run_of(cid)
            for w in self.watches.pop(cid):
                self._answer_unavailable(w.request, "the camera process stopped before the re-check decided",
                                         run.camera if run is not None else None, w)

    # answers

    def _taken(self, request: RecheckRequest) -> bool:
        """True (and logged) when the store already holds something under the request's package prefix: an
        answer given before a restart, or a request whose id names someone else's package (never written into)."""
        if next(iter(self.store.list(package_prefix(request.request_id))), None) is None:
            return False
        log.warning("re-check %s of case %s: events/%s/ exists already; not answered again (nothing written)",
                    request.request_id, request.case_number, request.request_id)
        return True

    def _answer(self, run: CameraRun, watch: Watch, outcome: Outcome) -> None:
        req, state = watch.request, watch.state
        assert watch.first is not None and watch.last is not None and state.started is not None
        if self._taken(req):
            return
        camera = run.camera
        zone = next(z for z in run.worker.zones_camera.zones if z.id == req.zone_id)
        polygon = [tuple(p) for p in zone.polygon]
        items: list[EvidenceItem] = []
        prefix = package_prefix(req.request_id)
        label = {"clear": "AFTER CLEAR", "present": "AFTER STILL PRESENT"}[outcome]
        for role, shot in (("after_first", watch.first), ("after_last", watch.last)):
            image = cv2.imdecode(np.frombuffer(shot.jpeg, np.uint8), cv2.IMREAD_COLOR)
            fields = [local_time_text(shot.ts, ZoneInfo(self.timezone)), f"CAM {camera.id}", f"ZONE {req.zone_id}",
                      f"RECHECK {ascii_text(req.case_number)}", label]
            annotated = encode_jpeg(annotate(image, shot.boxes, polygon, fields), self.jpeg_quality)
            for r, data in ((role, shot.jpeg), (f"{role}_annotated", annotated)):
                key = prefix + ROLE_FILES[r]
                self.store.put(key, data, JPEG)
                items.append(EvidenceItem(role=r, key=key, sha256=_sha256(data), bytes=len(data), content_type=JPEG))
        clear_since = state.clear_since if outcome == "clear" else None
        confs = [b.confidence for b in watch.last.boxes]
        result = RecheckResult(
            request_id=req.request_id, case_number=req.case_number, outcome=outcome,
            watched_from=_utc(state.started), clear_since=_utc(clear_since) if clear_since is not None else None,
            observed_at=_utc(watch.last.ts), frames=state.frames,
            detail="" if outcome == "clear" else
            f"the original box still differed from the zone's clear reference picture within the last {req.clear_s:g} "
            "s at the timeout" if watch.left_object else
            f"an object of {', '.join(req.classes)} was in the zone within the last {req.clear_s:g} s at the timeout")
        event = ViolationEvent(
            event_id=req.request_id, type=req.violation_type, camera_id=camera.id, camera_name=camera.name,
            zone_id=req.zone_id, zone_name=zone.name, started_at=_utc(state.started),
            confirmed_at=_utc(watch.last.ts), track_ids=sorted({b.track_id for b in watch.last.boxes
                                                                if b.track_id is not None}),
            boxes={"after_first": watch.first.boxes, "after_last": watch.last.boxes},
            confidence=round(max(confs), 4) if confs else 0.0,
            dwell_s=round(max(0.0, watch.last.ts - (clear_since if clear_since is not None else state.started)), 3),
            model=run.worker.model, rule_config_hash=run.worker.rule_hash, evidence=items,
            location=Location(address=camera.location.address, lat=camera.location.lat, lon=camera.location.lon),
            recheck=result,
        )
        self._publish(event)

    def _answer_unavailable(self, request: RecheckRequest, why: str, camera: CameraConfig | None,
                            watch: Watch | None = None) -> None:
        if self._taken(request):
            return
        now = datetime.now(UTC)
        started = _utc(watch.state.started) if watch is not None and watch.state.started is not None else now
        result = RecheckResult(request_id=request.request_id, case_number=request.case_number, outcome="unavailable",
                               watched_from=started, observed_at=now,
                               frames=watch.state.frames if watch is not None else 0, detail=why[:500])
        loc = camera.location if camera is not None else None
        event = ViolationEvent(
            event_id=request.request_id, type=request.violation_type, camera_id=request.camera_id,
            camera_name=camera.name if camera is not None else "", zone_id=request.zone_id, started_at=started,
            confirmed_at=now, track_ids=[], boxes={}, confidence=0.0, dwell_s=0.0,
            model=ModelInfo(name="none", version="", sha256=""), rule_config_hash="", evidence=[],
            location=Location(address=loc.address, lat=loc.lat, lon=loc.lon) if loc is not None else Location(),
            recheck=result,
        )
        self._publish(event)

    def _publish(self, event: ViolationEvent) -> None:
        assert event.recheck is not None
        self.bus.publish(TOPIC_VIOLATIONS, event.camera_id, event.model_dump_json().encode("utf-8"))
        self.answered.append(event)
        log.info("re-check %s of case %s: %s (camera %s)", event.event_id, event.recheck.case_number,
                 event.recheck.outcome, event.camera_id)


def _not_running(run: CameraRun | None) -> str | None:
    if run is None:
        return "the camera is not running (disabled or removed)"
    if run.error:
        return f"the camera failed: {run.error}"[:300]
    if run.done or run.stop.is_set():
        return "the camera's stream ended"
    return None


def _zone_reference(run: CameraRun, request: RecheckRequest) -> np.ndarray | None:
    """The clear reference picture (BGR) the camera's left-object detector of the request's type keeps of its zone,
    or None: no such detector on this camera (yet), or the zone never seen clear."""
    engine = run.worker.engine
    if engine is None or not any(t.name == request.violation_type for t in engine.types):
        return None
    state = engine.state(request.violation_type)
    ref = state.reference(request.zone_id) if isinstance(state, LeftObjectState) else None
    if ref is None:
        return None
    image = cv2.imdecode(np.frombuffer(ref.jpeg, np.uint8), cv2.IMREAD_COLOR)
    return image if image is not None else None


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def default_group(data_dir: str, node: str = "") -> str:
    """A consumer group of this camera process's own: every process must see every request (and keep only those
    of its cameras), so each has a group, stable across its restarts (host, data directory, pool worker id)."""
    tag = hashlib.sha256(f"{socket.gethostname()}|{data_dir}|{node}".encode()).hexdigest()[:12]
    return f"nonsite-recheck-{tag}"


