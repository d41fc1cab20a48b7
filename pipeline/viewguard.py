"""Camera view guard: is the camera still looking where its zones were drawn?

A dome camera (球机) that went to another preset, or a fixed camera that was knocked, keeps sending frames, but
its zones now lie over the wrong street: every rule there would be wrong. When the zones are saved or loaded the
guard keeps a **reference snapshot** of the view (``DATA_DIR/edge/views/<camera>/reference.jpg`` with
``reference.json``: the zones' hash and when it was taken; a change of the zones takes a new one, a restart with
the same zones keeps it). Every ``view_guard.check_interval_s`` it compares a small grey copy of the current
frame with the reference: ORB features, matched, and a homography fitted with RANSAC.

- the view matches and has not moved (points over the frame moved less than ``still_shift`` of the diagonal): **ok**;
- it matches with a small shift (at most ``reregister_max_shift``): **shifted**, the zones are re-registered
  through the homography (the rules go on, on the moved zones) and the change is logged;
- it does not match, or moved further: **moved**, the camera's rules pause (open episodes close, nothing
  alerts) until the view comes back.

A state changes only after ``confirm_checks`` checks in a row agree (a bus passing in front of the lens is not
a moved camera). A reference or a frame with too little texture to judge (a blank, dark or blurred view)
changes nothing. The guard's cost is one ORB pass on a ``width``-pixel grey frame per check (milliseconds,
every few seconds).
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from nonsite.config.cameras import CameraConfig
from nonsite.config.edge import ViewGuardConfig
from nonsite.ops.cameras import ViewChange, ViewStatus

log = logging.getLogger(__name__)

State = Literal["ok", "shifted", "moved"]


def zones_hash(camera: CameraConfig) -> str:
    """sha256 of the camera's zones (what the reference snapshot belongs to)."""
    doc = [z.model_dump(mode="json") for z in camera.zones]
    return hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


@dataclass
class Registration:
    """One comparison of a frame with the reference."""

    verdict: State
    matches: int
    inliers: int
    shift: float
    """Mean movement of points over the frame, as a fraction of its diagonal (1.0 when there is no match)."""
    homography: np.ndarray | None
    """Reference -> current, in normalized image coordinates (0..1); None when the view does not match."""


class _Features:
    def __init__(self, cfg: ViewGuardConfig) -> None:
        self.cfg = cfg
        self.orb = cv2.ORB_create(nfeatures=cfg.features)
        self.matcher = cv2.BFMatcher(cv2.NORM_HAMMING)
        self.clahe = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(4, 4))

    def small(self, image: np.ndarray) -> np.ndarray:
        grey = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        h, w = grey.shape[:2]
        width = min(self.cfg.width, w)
        grey = cv2.resize(grey, (width, max(1, round(h * width / w))), interpolation=cv2.INTER_AREA)
        return np.asarray(self.clahe.apply(grey))

    def describe(self, grey: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        kps, desc = self.orb.detectAndCompute(grey, None)
        pts = np.array([k.pt for k in kps], dtype=np.float32).reshape(-1, 2)
        return pts, desc


def register(feat: _Features, ref: tuple[np.ndarray, np.ndarray | None, tuple[int, int]],
             cur: tuple[np.ndarray, np.ndarray | None, tuple[int, int]]) -> Registration:
    """Compare the current view with the reference: (points, descriptors, (width, height)) of each."""
    cfg = feat.cfg
    (rp, rd, (rw, rh)), (cp, cd, (cw, ch)) = ref, cur
    if rd is None or cd is None or len(rp) < 4 or len(cp) < 4:
        return Registration("moved", 0, 0, 1.0, None)
    pairs = feat.matcher.knnMatch(rd, cd, k=2)
    matches = [p[0] for p in pairs if len(p) == 2 and p[0].distance < 0.8 * p[1].distance]
    if len(matches) < cfg.min_inliers:
        return Registration("moved", len(matches), 0, 1.0, None)
    src = np.float32([rp[m.queryIdx] for m in matches]) / np.float32([rw, rh])
    dst = np.float32([cp[m.trainIdx] for m in matches]) / np.float32([cw, ch])
    scale = float(np.hypot(cw, ch))
    h, mask = cv2.findHomography(src, dst, cv2.RANSAC, 3.0 / scale)
    inliers = int(mask.sum()) if mask is not None else 0
    if h is None or inliers < cfg.min_inliers or inliers < cfg.min_inlier_ratio * len(matches):
        return Registration("moved", len(matches), inliers, 1.0, None)
    shift = _shift(h, np.eye(3))
    if shift <= cfg.still_shift:
        return Registration("ok", len(matches), inliers, shift, np.eye(3))
    if shift <= cfg.reregister_max_shift:
        return Registration("shifted", len(matches), inliers, shift, h)
    return Registration("moved", len(matches), inliers, shift, None)


_GRID = np.float32([[x, y] for x in (0.1, 0.5, 0.9) for y in (0.1, 0.5, 0.9)]).reshape(-1, 1, 2)


def _shift(a: np.ndarray, b: np.ndarray) -> float:
    """Mean distance between where two transforms put a grid of points over the frame, as a fraction of its
    diagonal (normalized coordinates)."""
    pa = cv2.perspectiveTransform(_GRID, a).reshape(-1, 2)
    pb = cv2.perspectiveTransform(_GRID, b).reshape(-1, 2)
    return float(np.linalg.norm(pa - pb, axis=1).mean() / np.sqrt(2))


def warp_zones(camera: CameraConfig, homography: np.ndarray) -> CameraConfig:
    """The camera with its zones carried by ``homography`` (normalized reference -> current coordinates),
    clipped to the image."""
    zones = []
    for z in camera.zones:
        pts = np.float32(z.polygon).reshape(-1, 1, 2)
        moved = np.clip(cv2.perspectiveTransform(pts, homography).reshape(-1, 2), 0.0, 1.0)
        zones.append(z.model_copy(update={"polygon": [(round(float(x), 5), round(float(y), 5)) for x, y in moved]}))
    return camera.model_copy(update={"zones": zones})


@dataclass
class _Reference:
    grey: np.ndarray
    pts: np.ndarray
    desc: np.ndarray | None
    jpeg: bytes
    taken_at: float
    zones_hash: str


@dataclass
class ViewGuard:
    """The view guard of one camera (see the module). :meth:`observe` every frame; it checks at its interval and
    returns the new state when the state (or the re-registration) changed."""

    cfg: ViewGuardConfig
    folder: Path | None
    """Where the reference is kept (None: in memory only, taken again at the next start)."""
    camera_id: str
    zones: str
    state: State = "ok"
    since: float | None = None
    last: Registration | None = None
    homography: np.ndarray | None = None
    """Reference -> current zones transform in force (None: the zones as drawn)."""
    changes: deque[ViewChange] = field(default_factory=lambda: deque(maxlen=20))
    counts: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    """Guards what :meth:`status` reads (the metrics scrape and the console read it from other threads)."""
    _ref: _Reference | None = None
    _next_check: float = float("-inf")
    _streak: tuple[State, int] = ("ok", 0)
    _feat: _Features | None = None
    check_seconds: float = 0.0
    """CPU seconds of the last check (for the benchmark)."""

    def __post_init__(self) -> None:
        self._feat = _Features(self.cfg)

    # -- the reference ----------------------------------------------------------------------------------

    def _load(self) -> _Reference | None:
        if self.folder is None:
            return None
        meta_path, jpeg_path = self.folder / "reference.json", self.folder / "reference.jpg"
        try:
            meta = json.loads(meta_path.read_text())
            jpeg = jpeg_path.read_bytes()
        except (OSError, ValueError):
            return None
        if meta.get("zones_hash") != self.zones:
            return None
        img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        if img is None:
            return None
        return self._make(img, jpeg, float(meta.get("taken_at", 0.0)))

    def _make(self, image: np.ndarray, jpeg: bytes, ts: float) -> _Reference:
        assert self._feat is not None
        grey = self._feat.small(image)
        pts, desc = self._feat.describe(grey)
        return _Reference(grey, pts, desc, jpeg, ts, self.zones)

    def _take(self, image: np.ndarray, ts: float) -> _Reference:
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])
        jpeg = buf.tobytes() if ok else b""
        ref = self._make(image, jpeg, ts)
        if len(ref.pts) < 2 * self.cfg.min_inliers:
            log.warning("camera %s: its view has too little texture (%d features) to be checked; the view guard "
                        "stays silent until the zones are saved on a clearer view", self.camera_id, len(ref.pts))
        if self.folder is None:
            return ref
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            (self.folder / "reference.jpg").write_bytes(jpeg)
            tmp = self.folder / "reference.json.tmp"
            tmp.write_text(json.dumps({"camera": self.camera_id, "zones_hash": self.zones, "taken_at": ts,
                                       "width": int(image.shape[1]), "height": int(image.shape[0])}))
            tmp.replace(self.folder / "reference.json")
        except OSError as e:  # the guard still works from memory; the next start takes a new reference
            log.warning("camera %s: the view reference could not be saved in %s: %s", self.camera_id, self.folder, e)
        log.info("camera %s: view reference taken for its zones (%s)", self.camera_id, self.zones[:12])
        return ref

    def reference_jpeg(self) -> bytes | None:
        return self._ref.jpeg if self._ref is not None else None

    # -- checking ---------------------------------------------------------------------------------------

    def observe(self, image: np.ndarray, ts: float) -> State | None:
        """Check the view when due; returns the new state when it (or the zones' transform) changed."""
        if self._ref is None:
            self._ref = self._load() or self._take(image, ts)
            self.since = ts
            self._next_check = ts
        if ts < self._next_check:
            return None
        self._next_check = ts + self.cfg.check_interval_s
        assert self._feat is not None
        ref = self._ref
        if len(ref.pts) < 2 * self.cfg.min_inliers:
            return None  # a reference without texture (a blank or dark view) cannot tell a move
        started = time.process_time()
        grey = self._feat.small(image)
        pts, desc = self._feat.describe(grey)
        if len(pts) < self.cfg.min_inliers:  # a dark, blurred or blank frame says nothing about where it looks
            self.check_seconds = time.process_time() - started
            return None
        reg = register(self._feat, (ref.pts, ref.desc, ref.grey.shape[::-1]), (pts, desc, grey.shape[::-1]))
        self.check_seconds = time.process_time() - started
        self.last = reg
        verdict, n = self._streak
        self._streak = (reg.verdict, n + 1 if reg.verdict == verdict else 1)
        if self._streak[1] < self.cfg.confirm_checks:
            return None
        if reg.verdict == self.state and (reg.verdict != "shifted" or not self._moved_on(reg)):
            return None
        return self._change(reg, ts)

    def _moved_on(self, reg: Registration) -> bool:
        """A shifted view that shifted again (by more than ``still_shift``)."""
        if self.homography is None or reg.homography is None:
            return True
        return _shift(self.homography, reg.homography) > self.cfg.still_shift

    def _change(self, reg: Registration, ts: float) -> State:
        before = self.state
        self.state = reg.verdict
        self.since = ts
        self.homography = reg.homography if reg.verdict == "shifted" else None
        message = {
            "ok": "the view matches the zones' reference again; rules resume on the zones as drawn",
            "shifted": f"the view shifted by {reg.shift:.1%} of the diagonal; zones re-registered, rules go on",
            "moved": f"the view no longer matches the zones' reference ({reg.inliers} of {reg.matches} features "
                     f"agree, shift {reg.shift:.0%}); rules paused",
        }[reg.verdict]
        with self._lock:
            self.changes.appendleft(ViewChange(ts=ts, state=reg.verdict, message=message))
            self.counts[reg.verdict] = self.counts.get(reg.verdict, 0) + 1
        level = logging.WARNING if reg.verdict == "moved" or before == "moved" else logging.INFO
        log.log(level, "camera %s: view %s -> %s: %s", self.camera_id, before, reg.verdict, message)
        return reg.verdict

    def status(self) -> ViewStatus:
        reg, ref = self.last, self._ref
        with self._lock:
            changes, counts = list(self.changes), dict(self.counts)
        return ViewStatus(
            state=self.state, since=self.since, shift=round(reg.shift, 4) if reg else None,
            inliers=reg.inliers if reg else None, matches=reg.matches if reg else None,
            reference_taken_at=ref.taken_at if ref else None, changes=changes, changes_by_state=counts,
        )
