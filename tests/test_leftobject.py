"""The class-agnostic left-object detector on synthetic sequences built from real CCTV backgrounds.

Each sequence is one real frame of ../shared/media (sensor noise added per frame), one sample a second, with
real object imagery pasted in (a vendor's cart of fruit crates, a person from a street photograph) or the
light, the camera or the weather changed. A left object must be found after it stands; nothing else may
stand as one.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

from nonsite.pipeline.composite import add_rain, apply_gain, load_crop, paste, shift
from nonsite.pipeline.leftobject import LeftObjects, Params

Frame = Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]
"""(clean background, second) -> (frame, tracked boxes to ignore)."""

CRATES = ("india_road_obstacles/images/val/val_0082.jpg", (0.1, 0.2, 0.6, 0.7))
PERSON = ("generic_bus_ultralytics.jpg", (0.274, 0.377, 0.426, 0.795))  # a man standing (COCO person box)
NONE = np.zeros((0, 4))


@pytest.fixture(scope="module")
def background(media_dir: Path) -> np.ndarray:
    cap = cv2.VideoCapture(str(media_dir / "parking_lot_cctv_timelapse_a_640x480.mp4"))
    ok, frame = cap.read()
    cap.release()
    assert ok
    return cv2.resize(frame, (320, 240), interpolation=cv2.INTER_AREA)  # the detector looks at 160 px anyway


@pytest.fixture(scope="module")
def crates(media_dir: Path) -> np.ndarray:
    return load_crop(media_dir / CRATES[0], CRATES[1])


@pytest.fixture(scope="module")
def person(media_dir: Path) -> np.ndarray:
    return load_crop(media_dir / PERSON[0], PERSON[1])


def run(background: np.ndarray, make: Frame, seconds: int = 90) -> list[list[tuple[float, tuple[float, ...]]]]:
    """Per second, the candidates as (seconds standing, box in pixels)."""
    det = LeftObjects(Params(learn_s=30.0))
    rng = np.random.default_rng(7)
    out = []
    for t in range(seconds):
        frame, ignore = make(background.copy(), t)
        noisy = np.clip(frame.astype(np.float32) + rng.normal(0, 2.0, frame.shape), 0, 255).astype(np.uint8)
        cands = det.update(noisy, float(t), ignore)
        out.append([(t - c.since, det.full_box(c)) for c in cands])
    return out


def longest_standing(history: list[list[tuple[float, tuple[float, ...]]]]) -> float:
    return max((s for frame in history for s, _ in frame), default=0.0)


def covers(box: tuple[float, ...], target: tuple[float, ...]) -> bool:
    x1, y1 = max(box[0], target[0]), max(box[1], target[1])
    x2, y2 = min(box[2], target[2]), min(box[3], target[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    return inter >= 0.5 * (target[2] - target[0]) * (target[3] - target[1])


def test_an_object_that_appears_and_stays_is_found_standing_since_it_came_and_gone_once_removed(
        background: np.ndarray, crates: np.ndarray) -> None:
    pasted: list[tuple[float, ...]] = []

    def make(f: np.ndarray, t: int) -> tuple[np.ndarray, np.ndarray]:
        if 20 <= t < 75:
            pasted.append(paste(f, crates, (0.5, 0.85), 0.2))
        return f, NONE

    history = run(background, make)
    at_70 = history[70]
    assert len(at_70) == 1
    standing, box = at_70[0]
    assert covers(box, pasted[0])
    assert 45 <= standing <= 50  # it came at 20 s (the temporal median shows it from the third sample)
    assert all(not frame for frame in history[:20])  # nothing before it came
    assert history[-1] == []  # taken away at 75 s: the empty zone is what the background knows


def test_an_object_there_at_start_and_then_taken_away_leaves_no_ghost(background: np.ndarray,
                                                                     crates: np.ndarray) -> None:
    def make(f: np.ndarray, t: int) -> tuple[np.ndarray, np.ndarray]:
        if t < 30:  # learned as part of the empty scene while the detector warms up
            paste(f, crates, (0.5, 0.85), 0.2)
        return f, NONE

    assert longest_standing(run(background, make)) < 10  # the uncovered ground is not an object


def test_an_object_carried_through_never_stands(background: np.ndarray, crates: np.ndarray) -> None:
    def make(f: np.ndarray, t: int) -> tuple[np.ndarray, np.ndarray]:
        if 20 <= t < 60:
            paste(f, crates, (0.1 + 0.02 * (t - 20), 0.85), 0.2)
        return f, NONE

    assert longest_standing(run(background, make)) < 10  # even this slow (its own width in 10 s)


@pytest.mark.parametrize("change", [
    pytest.param(lambda f, t: apply_gain(f, float(np.interp(t, [10, 80], [1.0, 0.45]))), id="dusk-ramp"),
    pytest.param(lambda f, t: apply_gain(f, float(np.interp(t, [10, 80], [1.0, 1.5]))), id="dawn-ramp"),
    pytest.param(lambda f, t: apply_gain(f, 0.55 if t >= 40 else 1.0), id="sudden-dark"),
    pytest.param(lambda f, t: apply_gain(f, 1.6 if t >= 40 else 1.0, (0.0, 0.5, 0.6, 1.0)), id="lamp-switched-on"),
    pytest.param(lambda f, t: apply_gain(f, 0.5 if 30 <= t < 80 else 1.0, (0.3, 0.6, 0.6, 0.9)), id="shadow"),
])
def test_light_changes_are_not_objects(background: np.ndarray, change: Callable[[np.ndarray, int], np.ndarray]
                                       ) -> None:
    assert longest_standing(run(background, lambda f, t: (change(f, t), NONE))) < 10


def test_camera_shake_and_rain_are_not_objects(background: np.ndarray) -> None:
    rng = np.random.default_rng(3)
    shaken = run(background, lambda f, t: (shift(f, *rng.uniform(-3, 3, 2)), NONE))
    rained = run(background, lambda f, t: (add_rain(f, rng, 0.8), NONE))
    assert longest_standing(shaken) < 10
    assert longest_standing(rained) < 10


def test_an_object_still_found_through_shake_rain_and_a_light_change(background: np.ndarray,
                                                                     crates: np.ndarray) -> None:
    rng = np.random.default_rng(5)

    def make(f: np.ndarray, t: int) -> tuple[np.ndarray, np.ndarray]:
        if t >= 20:
            paste(f, crates, (0.5, 0.85), 0.2)
        f = apply_gain(f, 0.6 if t >= 50 else 1.0)
        return add_rain(shift(f, *rng.uniform(-2, 2, 2)), rng, 0.5), NONE

    assert longest_standing(run(background, make)) >= 45


def test_a_tracked_person_standing_still_is_not_a_left_object(background: np.ndarray, person: np.ndarray) -> None:
    def make(tracked: bool) -> Frame:
        def frame(f: np.ndarray, t: int) -> tuple[np.ndarray, np.ndarray]:
            if 20 <= t < 85:
                box = paste(f, person, (0.45, 0.8), 0.08)
                return f, np.array([box]) if tracked else NONE
            return f, NONE
        return frame

    assert longest_standing(run(background, make(tracked=True))) < 10
    assert longest_standing(run(background, make(tracked=False))) >= 45  # the same pixels untracked: an object
