"""Box geometry shared by the episode machinery and the violation types (boxes as x1, y1, x2, y2)."""

from __future__ import annotations

import numpy as np


def iou(a: np.ndarray | tuple[float, ...], b: np.ndarray | tuple[float, ...]) -> float:
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def gap(a: np.ndarray, b: np.ndarray) -> float:
    """Shortest distance between two boxes (0 when they touch or overlap)."""
    dx = max(0.0, float(max(a[0], b[0]) - min(a[2], b[2])))
    dy = max(0.0, float(max(a[1], b[1]) - min(a[3], b[3])))
    return float(np.hypot(dx, dy))


def centre(b: np.ndarray | tuple[float, ...]) -> np.ndarray:
    return np.array([(b[0] + b[2]) / 2, (b[1] + b[3]) / 2], dtype=float)


def diag(b: np.ndarray | tuple[float, ...]) -> float:
    return float(np.hypot(b[2] - b[0], b[3] - b[1]))


def area(b: np.ndarray) -> float:
    return float(max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1]))


def overlap_of_smaller(a: np.ndarray | tuple[float, ...], b: np.ndarray | tuple[float, ...]) -> float:
    """Intersection of two boxes over the smaller one's area: 1.0 when one contains the other."""
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    small = min(max(0.0, a[2] - a[0]) * max(0.0, a[3] - a[1]), max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1]))
    return float(iw * ih / small) if iw > 0 and ih > 0 and small > 0 else 0.0


def inside_fraction(obj: np.ndarray, region: np.ndarray) -> float:
    """Fraction of ``obj``'s area that lies inside ``region``."""
    iw = min(obj[2], region[2]) - max(obj[0], region[0])
    ih = min(obj[3], region[3]) - max(obj[1], region[1])
    a = area(obj)
    return float(iw * ih / a) if iw > 0 and ih > 0 and a > 0 else 0.0


def rides(people: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Which person boxes sit on vehicle box ``v``: feet within the vehicle's lower part and horizontal
    extent, top above the vehicle's upper quarter (a rider, not a pedestrian walking past)."""
    vh = v[3] - v[1]
    fx = (people[:, 0] + people[:, 2]) / 2
    return np.asarray(
        (fx >= v[0]) & (fx <= v[2])
        & (people[:, 3] >= v[1] + 0.25 * vh) & (people[:, 3] <= v[3] + 0.15 * vh)
        & (people[:, 1] < v[1] + 0.25 * vh)
    )


def riders(vehicles: np.ndarray, people: np.ndarray) -> np.ndarray:
    """For each vehicle box, whether a person box sits on it (see :func:`rides`)."""
    if not len(people):
        return np.zeros(len(vehicles), dtype=bool)
    return np.array([bool(rides(people, v).any()) for v in vehicles], dtype=bool)


def riding(people: np.ndarray, vehicles: np.ndarray) -> np.ndarray:
    """For each person box, whether it sits on one of the vehicle boxes."""
    out = np.zeros(len(people), dtype=bool)
    for v in vehicles:
        out |= rides(people, v)
    return out
