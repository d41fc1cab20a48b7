"""Zones: polygons in normalized coordinates, tested at an object's ground-contact point."""

from __future__ import annotations

import numpy as np
import supervision as sv

from nonsite.config.cameras import ZoneConfig
from nonsite.pipeline.violations import exempted_by, watched_by


class Zone:
    """A zone of one camera, scaled to that camera's frame size."""

    def __init__(self, cfg: ZoneConfig, frame_wh: tuple[int, int]) -> None:
        self.cfg = cfg
        self.id = cfg.id
        watcher, exempted = watched_by(cfg.kind), exempted_by(cfg.kind)
        self.rule = watcher.name if watcher else None
        """The violation type that watches this zone (None: an allow zone)."""
        self.exempts = exempted.name if exempted else None
        """The violation type this allow zone exempts (None: a watched zone)."""
        w, h = frame_wh
        self.polygon_px = np.round(np.asarray(cfg.polygon, dtype=float) * [w, h]).astype(np.int64)
        self._zone = sv.PolygonZone(self.polygon_px, triggering_anchors=(sv.Position.BOTTOM_CENTER,))

    @property
    def height_px(self) -> float:
        """Height of the zone's bounding box in pixels."""
        ys = self.polygon_px[:, 1]
        return float(ys.max() - ys.min())

    def contains(self, d: sv.Detections) -> np.ndarray:
        """Mask of detections whose bottom-centre point lies in the polygon."""
        if len(d) == 0:
            return np.zeros(0, dtype=bool)
        return np.asarray(self._zone.trigger(d), dtype=bool)

