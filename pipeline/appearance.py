"""A small appearance feature per box: a colour histogram of its crop, to tell whether a new track is the
object an episode was about (re-identification after an id switch) without any model."""

from __future__ import annotations

import cv2
import numpy as np
import supervision as sv

#: Key of the (N, BINS) float32 feature array in ``Detections.data``.
APPEARANCE = "appearance"
HUE_BINS, SAT_BINS, VAL_BINS = 8, 3, 3
BINS = HUE_BINS * SAT_BINS * VAL_BINS
_INSET = 0.15  # of the box's width/height on each side: less background, more object
_MAX_SIDE = 64  # crops are shrunk to this before counting: the histogram does not need more


def box_histograms(image: np.ndarray, xyxy: np.ndarray) -> np.ndarray:
    """HSV histograms (hue x saturation x value, L1-normalised) of the central part of each box, shape (N, BINS).

    A box outside the image or too small gets a zero row (similarity 0 to everything)."""
    out = np.zeros((len(xyxy), BINS), dtype=np.float32)
    h, w = image.shape[:2]
    for i, (x1, y1, x2, y2) in enumerate(np.asarray(xyxy, dtype=float)):
        dx, dy = (x2 - x1) * _INSET, (y2 - y1) * _INSET
        a, b = int(max(0, x1 + dx)), int(max(0, y1 + dy))
        c, d = int(min(w, x2 - dx)), int(min(h, y2 - dy))
        if c - a < 2 or d - b < 2:
            continue
        crop = image[b:d, a:c]
        scale = _MAX_SIDE / max(crop.shape[:2])
        if scale < 1:
            crop = cv2.resize(crop, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        hsv = cv2.cvtColor(crop, cv2.COLOR_BGR2HSV)
        hist = cv2.calcHist([hsv], [0, 1, 2], None, [HUE_BINS, SAT_BINS, VAL_BINS], [0, 180, 0, 256, 0, 256])
        total = float(hist.sum())
        if total > 0:
            out[i] = hist.reshape(-1) / total
    return out


def add_appearance(image: np.ndarray, d: sv.Detections) -> sv.Detections:
    """``d`` with ``data['appearance']`` set from ``image`` (in place; returned for chaining)."""
    d.data[APPEARANCE] = box_histograms(image, d.xyxy) if len(d) else np.zeros((0, BINS), dtype=np.float32)
    return d


def similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Histogram intersection of two L1-normalised histograms: 1 = same colours, 0 = nothing in common."""
    return float(np.minimum(a, b).sum())
