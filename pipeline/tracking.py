"""Multi-object tracking with ByteTrack (Roboflow's maintained `trackers` package)."""

from __future__ import annotations

import warnings

import supervision as sv
from trackers import ByteTrackTracker

from nonsite.config.detector import TrackerConfig


class Tracker:
    """Gives detections stable ids across frames; timing comes from frame timestamps, so a camera
    sampled at 5 fps and one at 2 fps keep tracks for the same number of seconds."""

    def __init__(self, cfg: TrackerConfig, fps: float) -> None:
        # ``trackers`` counts its lost-track buffer in frames *of a 30 fps video* and scales it by ``frame_rate``
        # itself (with timestamps it keeps a lost track for ``lost_track_buffer / 30`` s): the buffer for
        # ``lost_track_s`` seconds is ``lost_track_s * 30`` whatever the camera's rate. (Counted in camera frames, a
        # 1 fps camera's tracks were pruned 0.1 s after each frame, before a second frame could confirm them, and a
        # 5 fps camera kept a lost track 0.5 s instead of 3 s.)
        self._bt = ByteTrackTracker(
            lost_track_buffer=max(1, round(cfg.lost_track_s * 30)),
            frame_rate=fps,
            track_activation_threshold=cfg.track_activation_threshold,
            high_conf_det_threshold=cfg.high_confidence,
            minimum_consecutive_frames=cfg.minimum_consecutive_frames,
            minimum_iou_threshold=cfg.minimum_iou,
        )

    def update(self, detections: sv.Detections, ts: float) -> sv.Detections:
        """Tracked detections of this frame (``tracker_id`` -1 for ones not yet tracked)."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = self._bt.update(detections, timestamp=ts)
        if out.tracker_id is None:
            out.tracker_id = sv.Detections.empty().tracker_id
        return out
