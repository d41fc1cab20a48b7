"""Motion-gated detection: run the detector on a camera's frame only when the picture changed where it matters.

Most street scenes are still most of the time, and a violation takes seconds to minutes to confirm: detecting
every sampled frame of a still scene is waste. Per camera, :class:`MotionGate` measures the change of a small
blurred grey copy of each sampled frame (``edge.gating.width`` px wide) against the last frame the detector
saw, inside the bounding box of the camera's zones grown by ``margin`` (the region whose objects the rules
look at). The detector runs on a frame when

- it is the first one (or the frame size changed),
- at least ``min_changed`` of the region's pixels differ by more than ``pixel_threshold`` grey levels (motion),
  and for ``hold_s`` after the last motion (an object that just stopped gets tracked and settled),
- or ``keepalive_s`` of video time passed since the last detected frame (keep-alive: a still scene is
  still looked at, and slow changes below the threshold are caught up).

A gated frame still goes through the camera's worker with the last detected frame's detections: the tracker
gets them with the frame's timestamp (it ages lost tracks by time and frames, so a still object keeps its
track and id however long the gate stays shut), and dwell clocks, stationarity, the view guard and evidence
(pre-roll, clips) carry on with every sampled frame's timestamp and picture. Comparing with the last
*detected* frame (not the previous frame) means a slow change accumulates until it is seen.
"""

from __future__ import annotations

import cv2
import numpy as np

from nonsite.config import CameraConfig, NonsiteConfig
from nonsite.config.edge import GatingConfig

Region = tuple[float, float, float, float]
"""x1, y1, x2, y2 in normalized image coordinates (0..1)."""

WHOLE_FRAME: Region = (0.0, 0.0, 1.0, 1.0)


def zones_region(camera: CameraConfig, margin: float) -> Region:
    """The bounding box of the camera's zones grown by ``margin`` of the frame on each side, clipped to the
    frame; the whole frame for a camera without zones."""
    pts = [p for z in camera.zones for p in z.polygon]
    if not pts:
        return WHOLE_FRAME
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    return (max(0.0, min(xs) - margin), max(0.0, min(ys) - margin),
            min(1.0, max(xs) + margin), min(1.0, max(ys) + margin))


def small_grey(image: np.ndarray, width: int) -> np.ndarray:
    """A ``width`` px wide, blurred grey copy of a BGR (or grey) frame: what the change is measured on."""
    h, w = image.shape[:2]
    height = max(1, round(h * width / max(w, 1)))
    small = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
    if small.ndim == 3:
        small = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY)
    return cv2.GaussianBlur(small, (5, 5), 0)


def changed_share(a: np.ndarray, b: np.ndarray, region: Region, pixel_threshold: float) -> float:
    """Share of the pixels inside ``region`` whose grey level differs by more than ``pixel_threshold``
    between two small grey frames of the same size."""
    h, w = a.shape[:2]
    x1, y1 = int(np.floor(region[0] * w)), int(np.floor(region[1] * h))
    x2, y2 = max(x1 + 1, int(np.ceil(region[2] * w))), max(y1 + 1, int(np.ceil(region[3] * h)))
    diff = cv2.absdiff(a[y1:y2, x1:x2], b[y1:y2, x1:x2])
    return float(np.count_nonzero(diff > pixel_threshold)) / max(diff.size, 1)


class MotionGate:
    """Decides, frame by frame of one camera, whether the detector runs (see the module docstring).

    :meth:`decide` assumes a frame it says yes to is detected (it becomes the reference). Deterministic: the
    same frames and timestamps give the same decisions. Not thread-safe; the runner calls it from the camera's
    reader thread (``region`` may be replaced from another thread: one attribute, read once per frame)."""

    def __init__(self, cfg: GatingConfig, region: Region = WHOLE_FRAME) -> None:
        self.cfg = cfg
        self.region = region
        self._ref: np.ndarray | None = None
        self._last_detect_ts = float("-inf")
        self._hot_until = float("-inf")
        self.detected = 0
        """Frames this gate let through to the detector."""
        self.gated = 0
        """Frames it held back (the worker reuses the last detections)."""

    def decide(self, image: np.ndarray, ts: float) -> bool:
        """True: detect this frame (taken at ``ts``, seconds); False: reuse the last detections."""
        small = small_grey(image, self.cfg.width)
        ref = self._ref
        if ref is not None and ref.shape == small.shape:
            if changed_share(ref, small, self.region, self.cfg.pixel_threshold) >= self.cfg.min_changed:
                self._hot_until = ts + self.cfg.hold_s
            detect = ts <= self._hot_until + 1e-9 or ts - self._last_detect_ts >= self.cfg.keepalive_s - 1e-9
        else:
            detect = True
        if detect:
            self._ref, self._last_detect_ts = small, ts
            self.detected += 1
        else:
            self.gated += 1
        return detect


def gate_for(camera: CameraConfig, cfg: NonsiteConfig) -> MotionGate | None:
    """The camera's gate, or None when gating is off for it (``camera.gating``, else ``edge.gating.enabled``)."""
    g = cfg.edge.gating
    on = g.enabled if camera.gating is None else camera.gating
    return MotionGate(g, zones_region(camera, g.margin)) if on else None
