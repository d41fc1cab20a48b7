"""Stationarity: has a tracked object stayed where it stopped?

Each track keeps a reference box set where it last stopped. While the box centre stays within
``max_shift`` x (reference box diagonal) of the reference centre, the object is stationary since the
reference time; a larger move resets the reference. Comparing with the reference (not the previous
frame) means slow creep cannot accumulate unnoticed, and detector jitter of a few pixels never
resets it. A track that is not seen keeps its reference for ``forget_s`` (short occlusions).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class _Ref:
    cx: float
    cy: float
    diag: float
    since: float
    last_seen: float


class Stationarity:
    def __init__(self, max_shift: float, forget_s: float = 10.0) -> None:
        self.max_shift = max_shift
        self.forget_s = forget_s
        self._refs: dict[int, _Ref] = {}

    def update(self, track_ids: np.ndarray, xyxy: np.ndarray, ts: float) -> dict[int, float]:
        """Feed this frame's tracked boxes; returns ``{track_id: stationary_since}`` for them."""
        out: dict[int, float] = {}
        for tid, box in zip(track_ids.tolist(), xyxy, strict=True):
            if tid < 0:
                continue
            cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
            diag = float(np.hypot(box[2] - box[0], box[3] - box[1]))
            ref = self._refs.get(tid)
            if ref is None or np.hypot(cx - ref.cx, cy - ref.cy) > self.max_shift * max(ref.diag, 1.0):
                ref = _Ref(cx, cy, diag, ts, ts)
                self._refs[tid] = ref
            ref.last_seen = ts
            out[tid] = ref.since
        for tid in [t for t, r in self._refs.items() if ts - r.last_seen > self.forget_s]:
            del self._refs[tid]
        return out

    def since(self, track_id: int) -> float | None:
        ref = self._refs.get(track_id)
        return ref.since if ref else None
