"""Stationarity: has a tracked object stayed where it stopped?

Each track keeps a reference box where it last stopped (the median of its first few boxes there, so one
bad first box does not skew it). The object still stands while its box centre stays within ``max_shift``
x (reference diagonal) of the reference centre, or its box overlaps the reference by at least
``min_overlap`` of the smaller box (a box shrunk by partial occlusion keeps most of it). A move counts
only when ``confirm_moves`` consecutive observations show it: one jittery or merged box never restarts
the dwell; a real move restarts it at the first moved observation. Comparing with the reference (not the
previous frame) means slow creep cannot accumulate unnoticed. A track that is not seen keeps its
reference for ``forget_s`` (short occlusions).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

REF_SAMPLES = 5


def overlap_of_smaller(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection area of boxes ``a`` and ``b`` (xyxy) over the area of the smaller one (0..1)."""
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    small = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return float(iw * ih / small) if small > 0 else 0.0


@dataclass
class _Ref:
    samples: list[np.ndarray]
    since: float
    last_seen: float
    box: np.ndarray = field(init=False)
    moved_since: float | None = None
    moved_count: int = 0

    def __post_init__(self) -> None:
        self.box = self.samples[0]

    def add_sample(self, box: np.ndarray) -> None:
        if len(self.samples) < REF_SAMPLES:
            self.samples.append(box)
            self.box = np.median(np.stack(self.samples), axis=0)


class Stationarity:
    def __init__(self, max_shift: float, min_overlap: float = 1.0, confirm_moves: int = 2,
                 forget_s: float = 10.0) -> None:
        self.max_shift = max_shift
        self.min_overlap = min_overlap
        self.confirm_moves = max(1, confirm_moves)
        self.forget_s = forget_s
        self._refs: dict[int, _Ref] = {}

    def _stands(self, ref: _Ref, box: np.ndarray) -> bool:
        r = ref.box
        diag = max(float(np.hypot(r[2] - r[0], r[3] - r[1])), 1.0)
        shift = float(np.hypot((box[0] + box[2] - r[0] - r[2]) / 2, (box[1] + box[3] - r[1] - r[3]) / 2))
        return shift <= self.max_shift * diag or overlap_of_smaller(box, r) >= self.min_overlap

    def update(self, track_ids: np.ndarray, xyxy: np.ndarray, ts: float) -> dict[int, float]:
        """Feed this frame's tracked boxes; returns ``{track_id: stationary_since}`` for them."""
        out: dict[int, float] = {}
        for tid, raw in zip(np.asarray(track_ids).tolist(), np.asarray(xyxy, dtype=float), strict=True):
            if tid < 0:
                continue
            box = np.asarray(raw, dtype=float)
            ref = self._refs.get(tid)
            if ref is None:
                ref = self._refs[tid] = _Ref([box], ts, ts)
            elif self._stands(ref, box):
                ref.moved_since, ref.moved_count = None, 0
                ref.add_sample(box)
            else:
                if ref.moved_since is None:
                    ref.moved_since = ts
                ref.moved_count += 1
                if ref.moved_count >= self.confirm_moves:
                    ref = self._refs[tid] = _Ref([box], ref.moved_since, ts)
            ref.last_seen = ts
            out[tid] = ref.since
        for tid in [t for t, r in self._refs.items() if ts - r.last_seen > self.forget_s]:
            del self._refs[tid]
        return out

    def since(self, track_id: int) -> float | None:
        ref = self._refs.get(track_id)
        return ref.since if ref else None
