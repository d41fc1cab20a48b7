"""The one detections type of the pipeline: :class:`supervision.Detections`.

Boxes (``xyxy``, pixels), ``class_id``, ``confidence``, ``tracker_id`` as numpy arrays and the class
names in ``data['class_name']``. These helpers are small pure functions over it.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import supervision as sv

from nonsite.bus.events import BoxRecord
from nonsite.pipeline.geometry import overlap_of_smaller

Detections = sv.Detections

CLASS_NAME = "class_name"


def make_detections(
    xyxy: Iterable[Iterable[float]],
    class_names: Iterable[str],
    confidence: Iterable[float] | None = None,
    tracker_id: Iterable[int] | None = None,
    class_ids: Iterable[int] | None = None,
) -> sv.Detections:
    """Build detections from plain lists (tests and scripted scenes)."""
    boxes = np.asarray(list(xyxy), dtype=np.float32).reshape(-1, 4)
    names = np.asarray(list(class_names), dtype=str)
    n = len(boxes)
    conf = np.asarray(list(confidence), dtype=np.float32) if confidence is not None else np.full(n, 0.9, np.float32)
    ids = np.asarray(list(class_ids), dtype=int) if class_ids is not None else np.zeros(n, dtype=int)
    tid = np.asarray(list(tracker_id), dtype=int) if tracker_id is not None else None
    return sv.Detections(xyxy=boxes, confidence=conf, class_id=ids, tracker_id=tid, data={CLASS_NAME: names})


def names_of(d: sv.Detections) -> np.ndarray:
    names = d.data.get(CLASS_NAME)
    if names is None:
        return np.full(len(d), "", dtype=str)
    return np.asarray(names)


def select(d: sv.Detections, classes: Iterable[str], min_confidence: float = 0.0) -> np.ndarray:
    """Boolean mask of detections of the given class names at or above ``min_confidence``."""
    mask = np.isin(names_of(d), list(classes))
    if d.confidence is not None:
        mask &= d.confidence >= min_confidence
    return mask


def bottom_centers(xyxy: np.ndarray) -> np.ndarray:
    """Ground-contact points (bottom centre) of boxes, shape (N, 2)."""
    return np.stack([(xyxy[:, 0] + xyxy[:, 2]) / 2, xyxy[:, 3]], axis=1) if len(xyxy) else np.zeros((0, 2))


def centers(xyxy: np.ndarray) -> np.ndarray:
    if not len(xyxy):
        return np.zeros((0, 2))
    return np.stack([(xyxy[:, 0] + xyxy[:, 2]) / 2, (xyxy[:, 1] + xyxy[:, 3]) / 2], axis=1)


def diagonals(xyxy: np.ndarray) -> np.ndarray:
    return np.hypot(xyxy[:, 2] - xyxy[:, 0], xyxy[:, 3] - xyxy[:, 1])


def box_records(d: sv.Detections, mask: np.ndarray | None = None) -> list[BoxRecord]:
    """Boxes as event records (for evidence stills)."""
    idx = np.flatnonzero(mask) if mask is not None else range(len(d))
    names = names_of(d)
    out = []
    for i in idx:
        tid = None if d.tracker_id is None or d.tracker_id[i] < 0 else int(d.tracker_id[i])
        conf = float(d.confidence[i]) if d.confidence is not None else 1.0
        out.append(
            BoxRecord(
                xyxy=tuple(float(v) for v in d.xyxy[i]),  # type: ignore[arg-type]
                class_name=str(names[i]),
                confidence=round(min(max(conf, 0.0), 1.0), 4),
                track_id=tid,
            )
        )
    return out


def merge_class_group(d: sv.Detections, classes: Iterable[str], iou: float = 0.6) -> sv.Detections:
    """One box per object across a group of look-alike classes (car/truck/bus): a detector often reports
    the same vehicle as both 'car' and 'truck', which would give the tracker two objects that trade ids.
    Keeps the most confident box of each overlapping cluster; other classes pass through untouched."""
    if len(d) < 2:
        return d
    group = select(d, classes)
    if group.sum() < 2:
        return d
    merged = d[group].with_nms(threshold=iou, class_agnostic=True)
    return sv.Detections.merge([merged, d[~group]])


def merge_split_boxes(d: sv.Detections, classes: Iterable[str], min_overlap: float = 0.6) -> sv.Detections:
    """One box per object when the detector split it into overlapping partial boxes of one class (a motorcycle
    at night as its front and its rear, a car and its lit half): boxes of the same class in ``classes`` where
    one contains the other or they mostly overlap (intersection over the smaller box's area at least
    ``min_overlap``) become one box, their union, with the highest confidence and the other fields
    of the most confident part. Other classes, and boxes that merely touch, pass through untouched."""
    if len(d) < 2:
        return d
    names = names_of(d)
    wanted = set(classes)
    conf = d.confidence if d.confidence is not None else np.ones(len(d), dtype=np.float32)
    parent = list(range(len(d)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    idx = [i for i in range(len(d)) if names[i] in wanted]
    for a_pos, i in enumerate(idx):
        for j in idx[a_pos + 1:]:
            if names[i] != names[j]:
                continue
            a, b = d.xyxy[i], d.xyxy[j]
            if overlap_of_smaller(a, b) >= min_overlap:
                ri, rj = root(i), root(j)
                if ri != rj:
                    parent[rj] = ri
    groups: dict[int, list[int]] = {}
    for i in range(len(d)):
        groups.setdefault(root(i), []).append(i)
    if len(groups) == len(d):
        return d
    keep = [max(g, key=lambda k: float(conf[k])) for g in groups.values()]
    out = d[np.asarray(keep, dtype=int)]
    xyxy = out.xyxy.copy()
    for row, g in enumerate(groups.values()):
        boxes = d.xyxy[g]
        xyxy[row] = (boxes[:, 0].min(), boxes[:, 1].min(), boxes[:, 2].max(), boxes[:, 3].max())
    out.xyxy = xyxy
    return out
