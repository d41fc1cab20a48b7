"""Class-agnostic left objects: things that appear in a zone, stay unchanged, and no detected person or vehicle
explains.

Cheap by design: small colour frames (``width`` pixels wide), analysed at most once per ``sample_s``.

Per camera, :class:`LeftObjects` keeps

- a **temporal median** of the last ``median_n`` samples, so what passes through (people, vehicles, an
  object carried by, rain streaks) never reaches the comparison;
- a **long-horizon background** of what the empty scene looks like, learned with time constant ``learn_s``
  only where nothing differs and no detected person or vehicle stands (their boxes are masked out of the
  update, so a person standing still is never learned, nor reported: their boxes are also masked out of the
  comparison); a region that differs is not learned (no object fades into the background) until it has
  differed for ``absorb_s`` (a lasting change of the scene);
- the comparison, robust to light: the current image is first **registered** to the background (phase
  correlation, so a small camera shake cancels) and **normalised by the global gain** (median ratio over the
  unchanged area, so a light switched on, dusk or a cloud does not count); a pixel then differs when its
  brightness changed by more than ``diff`` grey levels and it is not the same surface under other light:
  not the same colour at another brightness (chromaticity within ``chroma``: a shadow, a lamp), not the same
  local texture (normalised cross-correlation over a small window above ``texture_ncc``), and, in flat
  areas, beyond the ``flat_ratio`` brightness ratio;
- **candidates**: connected regions of differing pixels of at least ``min_area`` of the frame, followed from
  sample to sample by overlap; a candidate stands *since* it appeared and starts over when its content
  changes (median change above ``still_diff`` grey levels: a crowd milling about never stands) or it moves; a
  person or vehicle in front of a candidate hides it without restarting it (its box and time are kept, up to
  ``occluded_s``), but explains a region it covers that never stood on its own for ``clear_s``;
- **ghosts**: a region whose outline is in the background but not in the current image is something the
  background had learned (there when the camera started) that has gone: the uncovered scene is learned at once;
- per zone, a **reference still**: a full-resolution frame in which the zone held no candidate, taken
  ``median_n`` samples before the latest clean one (the median shows a new object only after a few samples;
  refreshed every ``reference_every_s``): the "before" picture of the evidence.

Pure functions (:func:`foreground`, :func:`regions`, :func:`gain`) do the image work; :class:`LeftObjects` is the
small per-camera state. The violation types (piled materials, street drying, posting, goods outside shops)
use it through :func:`detect_left_objects`.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import supervision as sv
from pydantic import Field

from nonsite.config.rules import RuleCommon
from nonsite.pipeline.detections import names_of
from nonsite.pipeline.violations.base import Hit, Scene, TypeState, ViolationType

TRACK_ID_BASE = 1 << 30
"""Track ids of left objects start here (ByteTrack ids are small)."""
LEFT_OBJECT = "left_object"
"""Class name of a left object's box when no detection labels it."""


@dataclass(frozen=True)
class Params:
    """Tuning of the left-object detector (most come from the type's rule settings)."""

    width: int = 160
    sample_s: float = 1.0
    median_n: int = 5
    learn_s: float = 60.0
    warmup_s: float = 5.0
    absorb_s: float = 4 * 3600.0
    diff: float = 25.0
    texture_ncc: float = 0.6
    texture_std: float = 6.0
    flat_ratio: float = 1.35
    min_area: float = 0.002
    still_diff: float = 12.0
    max_shake_px: float = 4.0
    lost_s: float = 5.0
    reference_every_s: float = 10.0
    explained_overlap: float = 0.3
    occluded_s: float = 120.0
    clear_s: float = 5.0
    chroma: float = 0.035


# -- pure image functions ----------------------------------------------------------------------------------


def small_colour(image: np.ndarray, width: int) -> np.ndarray:
    """``image`` (BGR or grey) as float32 BGR ``width`` pixels wide, lightly blurred."""
    c = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR) if image.ndim == 2 else image
    h, w = c.shape[:2]
    s = cv2.resize(c, (width, max(8, int(round(h * width / w)))), interpolation=cv2.INTER_AREA)
    return cv2.GaussianBlur(s.astype(np.float32), (3, 3), 0)


def grey(colour: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(colour, cv2.COLOR_BGR2GRAY)


def chromaticity(colour: np.ndarray) -> np.ndarray:
    """Normalised colour (b, g, r) / (b + g + r): unchanged by light that only scales brightness."""
    return colour / np.maximum(colour.sum(axis=2, keepdims=True), 1.0)


def register(current: np.ndarray, background: np.ndarray, max_px: float) -> tuple[float, float] | None:
    """The shift (dx, dy) of grey ``current`` against grey ``background`` (phase correlation); None when it
    exceeds ``max_px`` (the view moved: not a shake)."""
    win = cv2.createHanningWindow(current.shape[::-1], cv2.CV_32F)
    (dx, dy), _ = cv2.phaseCorrelate(background, current, win)
    return None if float(np.hypot(dx, dy)) > max_px else (float(dx), float(dy))


def shift_by(image: np.ndarray, d: tuple[float, float]) -> np.ndarray:
    """``image`` moved back by the shift ``d`` (onto the background)."""
    if np.hypot(*d) < 0.25:
        return image
    m = np.float32([[1, 0, -d[0]], [0, 1, -d[1]]])
    return cv2.warpAffine(image, m, (image.shape[1], image.shape[0]), borderMode=cv2.BORDER_REPLICATE)


def gain(current: np.ndarray, background: np.ndarray, valid: np.ndarray) -> float:
    """Global brightness gain of ``current`` over ``background``: the median ratio over ``valid`` pixels."""
    sel = valid & (background > 8) & (current > 4)
    if sel.sum() < 50:
        return 1.0
    return float(np.median(current[sel] / background[sel]))


def _local_stats(a: np.ndarray, b: np.ndarray, k: int = 5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Local standard deviations of ``a`` and ``b`` and their normalised cross-correlation over k x k windows."""
    def mean(x: np.ndarray) -> np.ndarray:
        return cv2.boxFilter(x, -1, (k, k), borderType=cv2.BORDER_REFLECT)

    ma, mb = mean(a), mean(b)
    va = np.maximum(mean(a * a) - ma * ma, 0.0)
    vb = np.maximum(mean(b * b) - mb * mb, 0.0)
    cov = mean(a * b) - ma * mb
    sa, sb = np.sqrt(va), np.sqrt(vb)
    ncc = cov / np.maximum(sa * sb, 1e-3)
    return sa, sb, ncc


def foreground(current_bgr: np.ndarray, background_bgr: np.ndarray, p: Params) -> np.ndarray:
    """Pixels where ``current_bgr`` (small, registered, gain-normalised) shows something the background does
    not: a brightness change beyond ``p.diff`` that is not the same surface under other light (same local
    texture, or same colour at another brightness: a shadow, a lamp)."""
    current, background = grey(current_bgr), grey(background_bgr)
    d = np.abs(current - background)
    ratio = (current + 4.0) / (background + 4.0)
    dc = np.abs(chromaticity(current_bgr) - chromaticity(background_bgr)).sum(axis=2)
    lit_enough = (current_bgr.sum(axis=2) > 60) & (background_bgr.sum(axis=2) > 60)
    same_colour = lit_enough & (dc < p.chroma) & (ratio > 0.25) & (ratio < 4.0)
    sa, sb, ncc = _local_stats(current, background)
    textured = np.maximum(sa, sb) > p.texture_std
    both_textured = np.minimum(sa, sb) > p.texture_std * 0.5
    same_surface = both_textured & (ncc > p.texture_ncc) & (ratio > 0.3) & (ratio < 3.0)
    flat_light = ~textured & (ratio > 1 / p.flat_ratio) & (ratio < p.flat_ratio)
    changed_texture = textured & (ncc < 0.2) & (d > p.diff * 0.6)
    return (((d > p.diff) & ~same_surface & ~flat_light) | changed_texture) & ~same_colour


def regions(fg: np.ndarray, min_px: int) -> list[tuple[np.ndarray, tuple[int, int, int, int]]]:
    """Connected regions of ``fg`` after a small opening and closing: (mask, box x1, y1, x2, y2) of those with at
    least ``min_px`` pixels."""
    m = fg.astype(np.uint8)
    m = cv2.morphologyEx(m, cv2.MORPH_OPEN, np.ones((2, 2), np.uint8))
    m = cv2.morphologyEx(m, cv2.MORPH_CLOSE, np.ones((5, 5), np.uint8))
    n, labels, stats, _ = cv2.connectedComponentsWithStats(m, connectivity=8)
    out = []
    for i in range(1, n):
        x, y, w, h, a = (int(v) for v in stats[i])
        if a >= min_px:
            out.append((labels == i, (x, y, x + w, y + h)))
    return out


def _moved(anchor: tuple[int, int, int, int], box: tuple[int, int, int, int], frac: float = 0.15) -> bool:
    """Whether ``box`` lies away from ``anchor``: its centre shifted by more than ``frac`` of the anchor's
    diagonal (a region that grows or shrinks in place has not moved)."""
    ax, ay = (anchor[0] + anchor[2]) / 2, (anchor[1] + anchor[3]) / 2
    bx, by = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    return float(np.hypot(bx - ax, by - ay)) > frac * max(2.0, float(np.hypot(anchor[2] - anchor[0],
                                                                             anchor[3] - anchor[1])))


def is_ghost(current: np.ndarray, background: np.ndarray, mask: np.ndarray, ignore: np.ndarray) -> bool:
    """Whether a differing region is a ghost: the outline of something the background learned and that has gone.
    An object put down brings its contour into the current image; a ghost's contour is in the background and
    the current image shows plain scene there. Compared on the region's border (people and vehicles left out)."""
    m = mask.astype(np.uint8)
    k = np.ones((3, 3), np.uint8)
    border = (cv2.dilate(m, k) - cv2.erode(m, k)).astype(bool) & ~ignore
    if border.sum() < 8:
        return False

    def edges(x: np.ndarray) -> float:
        gx, gy = cv2.Sobel(x, cv2.CV_32F, 1, 0), cv2.Sobel(x, cv2.CV_32F, 0, 1)
        return float(np.hypot(gx, gy)[border].mean())

    return edges(background) > 1.3 * edges(current)


def boxes_mask(shape: tuple[int, int], boxes: np.ndarray, scale: float, grow: float = 0.15) -> np.ndarray:
    """Mask of ``boxes`` (full-resolution pixels) on a small frame of ``shape``, each grown by ``grow``."""
    m = np.zeros(shape, bool)
    h, w = shape
    for x1, y1, x2, y2 in np.asarray(boxes, dtype=float).reshape(-1, 4):
        gx, gy = (x2 - x1) * grow, (y2 - y1) * grow
        a, b = int(max(0, np.floor((x1 - gx) * scale))), int(max(0, np.floor((y1 - gy) * scale)))
        c, d = int(min(w, np.ceil((x2 + gx) * scale))), int(min(h, np.ceil((y2 + gy) * scale)))
        m[b:d, a:c] = True
    return m


# -- per-camera state --------------------------------------------------------------------------------------


@dataclass
class Candidate:
    """A region that differs from the background."""

    id: int
    box: tuple[int, int, int, int]
    """Box on the small frame."""
    mask: np.ndarray
    since: float
    last_seen: float
    anchor: tuple[int, int, int, int] = (0, 0, 0, 0)
    """Its box when it started standing (a move away from it starts it over)."""
    look: np.ndarray | None = None
    """The small grey frame where it was last seen unoccluded (to tell whether it changed)."""
    clear_first: float | None = None
    clear_last: float | None = None
    """First and last time it was seen with no person or vehicle on it."""

    def stood_clear(self, seconds: float) -> bool:
        """Whether it was seen on its own over at least ``seconds`` (then a person or vehicle later in front of it
        hides it rather than explains it)."""
        return self.clear_first is not None and self.clear_last is not None and \
            self.clear_last - self.clear_first >= seconds


@dataclass
class Reference:
    """The latest frame in which a zone held no left object."""

    ts: float
    jpeg: bytes


@dataclass
class LeftObjects:
    """The left-object detector of one camera (see the module docstring)."""

    params: Params = field(default_factory=Params)
    background: np.ndarray | None = None
    since_fg: np.ndarray | None = None
    """Per pixel: since when it has differed (inf: it does not)."""
    recent: deque[np.ndarray] = field(default_factory=deque)
    recent_ignore: deque[np.ndarray] = field(default_factory=deque)
    """The masks of people and vehicles of the samples in the median (it may still show them after they left)."""
    candidates: list[Candidate] = field(default_factory=list)
    references: dict[str, Reference] = field(default_factory=dict)
    clean: dict[str, deque[Reference]] = field(default_factory=dict)
    """Per zone, its latest clean samples: the median shows a new object only after a few samples, so the
    reference is the oldest of them (from before the object can have come)."""
    _encoded: Reference | None = None
    started: float | None = None
    last_sample: float = float("-inf")
    scale: float = 1.0
    frame_shape: tuple[int, int] = (0, 0)
    next_id: int = TRACK_ID_BASE
    skipped: int = 0
    """Samples skipped because the view moved farther than a shake."""

    def due(self, ts: float) -> bool:
        return ts - self.last_sample >= self.params.sample_s - 1e-6

    def update(self, image: np.ndarray, ts: float, ignore_boxes: np.ndarray, area: np.ndarray | None = None
               ) -> list[Candidate]:
        """Analyse one sample: ``ignore_boxes`` are detected people/vehicles (full-resolution pixels); ``area`` an
        optional small-frame mask the candidates must touch (the zones). Returns the candidates now."""
        p = self.params
        self.last_sample = ts
        small = small_colour(image, p.width)
        shape = small.shape[:2]
        self.scale = p.width / image.shape[1]
        self.frame_shape = (image.shape[0], image.shape[1])
        ignore = boxes_mask(shape, ignore_boxes, self.scale)
        if self.background is None or self.background.shape != small.shape:
            self.background, self.started = small.copy(), ts
            self.since_fg = np.full(shape, np.inf, np.float32)
            self.recent.clear()
            self.recent_ignore.clear()
        self.recent.append(small)
        self.recent_ignore.append(ignore)
        while len(self.recent_ignore) > p.median_n:
            self.recent_ignore.popleft()
        ignore = np.logical_or.reduce(list(self.recent_ignore))
        while len(self.recent) > p.median_n:
            self.recent.popleft()
        current = np.median(np.stack(self.recent), axis=0).astype(np.float32) if len(self.recent) > 2 else small
        bg = self.background
        assert self.since_fg is not None and self.started is not None
        reg = register(grey(current), grey(bg), p.max_shake_px)
        if reg is None:  # the view moved: neither learn nor judge (the camera view guard handles it)
            self.skipped += 1
            return self.candidates
        current = shift_by(current, reg)
        warm = ts - self.started < p.warmup_s
        still_bg = ~ignore & ~np.isfinite(self.since_fg)
        g = gain(grey(current), grey(bg), still_bg)
        norm = current / max(g, 1e-3)
        fg = np.zeros(shape, bool) if warm else foreground(norm, bg, p) & ~ignore
        self.since_fg = np.where(fg, np.minimum(self.since_fg, ts), np.inf).astype(np.float32)
        # Learn where nothing differs and no person or vehicle stands, fast while warming up; absorb lasting changes.
        alpha = min(1.0, p.sample_s / (min(p.learn_s, p.warmup_s) if warm else p.learn_s))
        learn = ~ignore & (~fg | (ts - self.since_fg >= p.absorb_s))
        bg[learn] = (1 - alpha) * bg[learn] + alpha * norm[learn]
        found = [] if warm else regions(fg, max(3, int(p.min_area * fg.size)))
        if area is not None:
            found = [(m, b) for m, b in found if (m & area).any()]
        ghosts = [m for m, _ in found if is_ghost(grey(norm), grey(bg), m, ignore)]
        for m in ghosts:  # something the background learned has left: learn the uncovered scene at once
            bg[m] = norm[m]
            self.since_fg[m] = np.inf
        found = [(m, b) for m, b in found if not any(m is x for x in ghosts)]
        self._follow(found, norm, ts, ignore)
        return self.candidates

    def _follow(self, found: list[tuple[np.ndarray, tuple[int, int, int, int]]], norm: np.ndarray, ts: float,
                ignore: np.ndarray) -> None:
        p = self.params
        g = grey(norm)
        kept: list[Candidate] = []
        taken: set[int] = set()
        for mask, box in found:
            best, best_ov = None, 0.0
            for c in self.candidates:
                if c.id in taken:
                    continue
                ov = float((mask & c.mask).sum()) / max(1.0, float(min(mask.sum(), c.mask.sum())))
                if ov > best_ov:
                    best, best_ov = c, ov
            if best is None or best_ov < 0.3:
                c = Candidate(self.next_id, box, mask, ts, ts, box, g.copy())
                self.next_id += 1
            else:
                c = best
                c.last_seen = ts
                if (c.mask & ignore).any():
                    # Partly hidden by someone in front of it (or just gone: the median still shows them): it keeps
                    # its whole box, and whether it changed is left undecided.
                    taken.add(c.id)
                    kept.append(c)
                    continue
                common = mask & c.mask
                if c.look is not None and common.any():
                    change = float(np.median(np.abs(g[common] - c.look[common])))
                    if change > p.still_diff or _moved(c.anchor, box):
                        c.since, c.anchor = ts, box  # the content changed or it moved: it starts standing again
                c.box, c.mask = box, mask
                c.look = g.copy()
            taken.add(c.id)
            kept.append(c)
        for c in self.candidates:  # not seen now: hidden behind a person or vehicle, or gone
            if c.id in taken:
                continue
            hidden = float((c.mask & ignore).sum()) >= 0.5 * float(c.mask.sum()) and c.stood_clear(p.clear_s)
            if ts - c.last_seen <= (p.occluded_s if hidden else p.lost_s):
                kept.append(c)
        self.candidates = kept

    def full_box(self, c: Candidate) -> tuple[float, float, float, float]:
        """A candidate's box in full-resolution pixels."""
        s = self.scale
        h, w = self.frame_shape
        x1, y1, x2, y2 = c.box
        return (max(0.0, x1 / s), max(0.0, y1 / s), min(float(w), x2 / s), min(float(h), y2 / s))

    def keep_reference(self, zone_id: str, image: np.ndarray, ts: float, quality: int = 90) -> None:
        """The zone looks clean in the sample at ``ts``: remember ``image``; the zone's reference becomes the oldest
        clean sample kept, ``median_n`` samples back (refreshed at most every ``reference_every_s``)."""
        if self._encoded is None or self._encoded.ts != ts:
            ok, buf = cv2.imencode(".jpg", image, [int(cv2.IMWRITE_JPEG_QUALITY), quality])
            if not ok:
                return
            self._encoded = Reference(ts, buf.tobytes())
        recent = self.clean.setdefault(zone_id, deque(maxlen=self.params.median_n))
        if recent and ts - recent[-1].ts > 1.5 * self.params.sample_s:  # not clean in between: start over
            recent.clear()
        recent.append(self._encoded)
        ref = self.references.get(zone_id)
        if len(recent) == recent.maxlen and (ref is None or recent[0].ts - ref.ts >= self.params.reference_every_s):
            self.references[zone_id] = recent[0]


# -- the violation types' common part ----------------------------------------------------------------------


class LeftObjectRule(RuleCommon):
    """Settings every left-object type shares (each type sets its own defaults)."""

    dwell_s: float = Field(300.0, gt=0, description="Seconds an object must stand unchanged in the zone.")
    max_gap_s: float = Field(
        10.0, ge=0, description="An object hidden for at most this long (a bus in front of it) continues."
    )
    sample_s: float = Field(
        1.0, gt=0, le=60, description="The scene is analysed at most once per this many seconds (cheap on a CPU)."
    )
    learn_s: float = Field(
        60.0, gt=0, description="Time constant of the background (what the empty zone looks like), in seconds; "
        "longer learns gradual light changes more slowly."
    )
    sensitivity: float = Field(
        25.0, gt=0, le=255, description="Grey levels (after the light is normalised) a pixel must differ by."
    )
    min_area: float = Field(
        0.002, gt=0, lt=1, description="Smallest object, as a fraction of the frame's area."
    )
    absorb_s: float = Field(
        4 * 3600.0, gt=0, description="A change that stays longer than this becomes part of the background "
        "(a new bench, a repainted wall): it stops being reported."
    )
    ignore_classes: list[str] = Field(
        default_factory=lambda: ["person", "car", "truck", "bus", "motorcycle", "bicycle", "dog"],
        description="Detections of these classes explain what differs under them (people, vehicles), tracked "
        "or not: never learned into the background, never a left object.",
    )
    object_classes: list[str] = Field(
        default_factory=list,
        description="Detector classes that label a left object when one covers it (a trained model's own "
        "classes, e.g. goods, clothes, banner); empty: objects stay unlabelled.",
    )
    require_class: bool = Field(
        False, description="Only objects covered by a detection of object_classes count (a trained model "
        "confirms each one)."
    )


@dataclass
class LeftObjectState(TypeState):
    """One left-object detector per camera and type."""

    detector: LeftObjects | None = None
    masks: dict[str, np.ndarray] = field(default_factory=dict)
    """Small-frame masks of the zones seen so far."""

    def reference(self, zone_id: str) -> Reference | None:
        """The zone's latest clean still, if one was kept."""
        return self.detector.references.get(zone_id) if self.detector is not None else None

    @staticmethod
    def reference_of(state: Any, zone_id: str) -> tuple[float, bytes] | None:
        """The evidence hook (``ViolationType.reference``): (time, JPEG) of the zone's clean still."""
        ref = state.reference(zone_id) if isinstance(state, LeftObjectState) else None
        return (ref.ts, ref.jpeg) if ref is not None else None


def _params(cfg: LeftObjectRule) -> Params:
    return Params(sample_s=cfg.sample_s, learn_s=cfg.learn_s, diff=cfg.sensitivity, min_area=cfg.min_area,
                  absorb_s=cfg.absorb_s)


def _zone_mask(zone: Any, shape: tuple[int, int], scale: float) -> np.ndarray:
    m = np.zeros(shape, np.uint8)
    cv2.fillPoly(m, [np.round(zone.polygon_px * scale).astype(np.int32)], 1)
    return m.astype(bool)


def _overlap(a: tuple[float, ...], boxes: np.ndarray) -> np.ndarray:
    """Fraction of box ``a`` covered by each of ``boxes``."""
    if not len(boxes):
        return np.zeros(0)
    x1 = np.maximum(a[0], boxes[:, 0])
    y1 = np.maximum(a[1], boxes[:, 1])
    x2 = np.minimum(a[2], boxes[:, 2])
    y2 = np.minimum(a[3], boxes[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    return np.asarray(inter / max(1.0, (a[2] - a[0]) * (a[3] - a[1])))


def detect_left_objects(scene: Scene[Any], state: LeftObjectState, rule: str) -> list[Hit]:
    """Hits of ``rule`` for left objects in its active zones (the body of each left-object type's ``detect``)."""
    base: LeftObjectRule = scene.base
    if scene.image is None:
        return []
    image = scene.image
    if state.detector is None:
        state.detector = LeftObjects(_params(base))
    det = state.detector
    d = scene.d
    # People and vehicles the detector sees explain what differs under them, tracked or not yet (a track needs a
    # few frames to get its id; at a low frame rate a standing person may never get one).
    ignore = scene.select(base.ignore_classes, base.min_confidence)
    if det.due(scene.ts):
        small = (max(8, int(round(image.shape[0] * det.params.width / image.shape[1]))), det.params.width)
        scale = det.params.width / image.shape[1]
        for zone, _ in scene.zones:
            if zone.id not in state.masks or state.masks[zone.id].shape != small:
                state.masks[zone.id] = _zone_mask(zone, small, scale)
        area = np.zeros(small, bool)
        for m in state.masks.values():
            area |= m
        det.update(image, scene.ts, d.xyxy[ignore], area)
        for zone, _ in scene.zones:
            if not any((c.mask & state.masks[zone.id]).any() for c in det.candidates):
                det.keep_reference(zone.id, image, scene.ts)
    hits: list[Hit] = []
    if not det.candidates or not scene.zones:
        return hits
    boxes = [det.full_box(c) for c in det.candidates]
    as_dets = sv.Detections(xyxy=np.asarray(boxes, np.float32).reshape(-1, 4))
    ignore_xyxy = d.xyxy[ignore]
    names = names_of(d)
    exempt = np.zeros(len(boxes), bool)
    for z in scene.exempt_zones:
        exempt |= z.contains(as_dets)
    for zone, cfg in scene.zones:
        inside = zone.contains(as_dets) & ~exempt
        labels = scene.select(cfg.object_classes, cfg.min_confidence) if cfg.object_classes else np.zeros(len(d), bool)
        for k in np.flatnonzero(inside):
            box, c = boxes[k], det.candidates[k]
            if (_overlap(box, ignore_xyxy) >= det.params.explained_overlap).any():
                if not c.stood_clear(det.params.clear_s):
                    continue  # a person or vehicle stands there: it explains what differs
                # else it stood on its own before: the person or vehicle is in front of it, it is still there
            else:
                c.clear_first = scene.ts if c.clear_first is None else c.clear_first
                c.clear_last = scene.ts
            cover = np.flatnonzero(labels)
            cover = cover[_overlap(box, d.xyxy[cover]) >= 0.3] if len(cover) else cover
            if cfg.require_class and not len(cover):
                continue
            label = str(names[cover[0]]) if len(cover) else LEFT_OBJECT
            hits.append(Hit(rule, zone.id, c.id, -1, c.since, tuple(int(i) for i in cover), box, label))
    return hits


def left_object_type(name: str, config: type[LeftObjectRule], description: str, watches: tuple[str, ...],
                     exempts: tuple[str, ...] = (), order: int = 100) -> ViolationType:
    """A violation type whose objects are left objects: what each left-object type module declares as ``TYPE``."""

    def detect(scene: Scene[Any], state: LeftObjectState) -> list[Hit]:
        return detect_left_objects(scene, state, name)

    return ViolationType(name=name, config=config, description=description, watches=watches, exempts=exempts,
                         detect=detect, new_state=LeftObjectState, reference=LeftObjectState.reference_of,
                         order=order)


__all__ = [
    "LEFT_OBJECT", "TRACK_ID_BASE", "Candidate", "LeftObjectRule", "LeftObjectState", "LeftObjects", "Params",
    "Reference", "boxes_mask", "detect_left_objects", "foreground", "gain", "is_ghost", "left_object_type", "regions",
    "register", "small_colour",
]
