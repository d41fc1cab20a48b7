"""The tracker keeps a lost track for ``tracker.lost_track_s`` seconds of capture time, at any sampling rate."""

from __future__ import annotations

import numpy as np
import pytest
import supervision as sv

from nonsite.config.detector import TrackerConfig
from nonsite.pipeline.tracking import Tracker

BOX = [100.0, 100.0, 180.0, 160.0]


def car(x_shift: float = 0.0) -> sv.Detections:
    return sv.Detections(xyxy=np.array([[BOX[0] + x_shift, BOX[1], BOX[2] + x_shift, BOX[3]]]),
                         confidence=np.array([0.9]), class_id=np.array([2]))


def ids_after_a_gap(fps: float, gap_s: float, lost_track_s: float = 3.0) -> tuple[int, int]:
    """Track id before and after the object goes unseen for ``gap_s`` seconds (an occlusion)."""
    tracker = Tracker(TrackerConfig(lost_track_s=lost_track_s), fps)
    t, step = 0.0, 1.0 / fps
    first = -1
    for _ in range(int(2 * fps)):  # 2 s in view: the track is confirmed
        out = tracker.update(car(), t)
        first = int(out.tracker_id[0]) if len(out) else -1
        t += step
    for _ in range(round(gap_s * fps)):
        tracker.update(sv.Detections.empty(), t)
        t += step
    out = tracker.update(car(2.0), t)
    for _ in range(3):  # a re-born track needs a few frames before it has an id
        if len(out) and out.tracker_id[0] != -1:
            break
        t += step
        out = tracker.update(car(2.0), t)
    return first, int(out.tracker_id[0])


@pytest.mark.parametrize("fps", [2.0, 5.0, 10.0, 30.0])
def test_an_occlusion_shorter_than_lost_track_s_keeps_the_id(fps: float) -> None:
    before, after = ids_after_a_gap(fps, gap_s=2.0)
    assert before != -1 and after == before


@pytest.mark.parametrize("fps", [2.0, 5.0, 10.0])
def test_an_absence_longer_than_lost_track_s_starts_a_new_track(fps: float) -> None:
    before, after = ids_after_a_gap(fps, gap_s=5.0)
    assert before != -1 and after not in (-1, before)
