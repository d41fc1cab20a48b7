"""Rules as pure functions of scripted, already-tracked detections and time (no video)."""

from __future__ import annotations

import numpy as np
import pytest

from nonsite.config import CameraConfig, RulesConfig
from nonsite.pipeline.detections import make_detections
from nonsite.pipeline.rules import RuleEngine, rule_config_hash
from nonsite.pipeline.stationarity import Stationarity

FULL = [[0, 0], [1, 0], [1, 1], [0, 1]]
LEFT = [[0, 0], [0.5, 0], [0.5, 1], [0, 1]]


def camera(*zones: dict) -> CameraConfig:
    return CameraConfig.model_validate({"id": "cam", "source": {"url": "x.mp4"}, "zones": list(zones)})


def rules(**over: dict) -> RulesConfig:
    base = {
        "sidewalk_parking": {"dwell_s": 10, "max_gap_s": 1.0},
        "street_vending": {"dwell_s": 10, "max_gap_s": 1.0, "cooldown_s": 100},
        "stray_dog": {"dwell_s": 5, "max_gap_s": 1.0, "cooldown_s": 0},
    }
    for k, v in over.items():
        base[k].update(v)
    return RulesConfig.model_validate(base)


def run(engine: RuleEngine, frames: list[tuple[float, list[tuple]]]) -> list[tuple[str, float, int]]:
    """frames: (ts, [(track_id, class, x1, y1, x2, y2), ...]) -> [(kind, ts, track_id)]."""
    out = []
    for ts, objs in frames:
        d = make_detections([o[2:] for o in objs], [o[1] for o in objs], tracker_id=[o[0] for o in objs])
        out += [(e.kind, ts, e.episode.track_id) for e in engine.update(d, ts)]
    return out


def car(tid: int, x: float, jitter: float = 0.0) -> tuple:
    return (tid, "car", x + jitter, 400 + jitter, x + 200 + jitter, 500)


def test_parked_car_alerts_once_after_dwell_despite_jitter() -> None:
    eng = RuleEngine(camera({"id": "walk", "kind": "sidewalk", "polygon": FULL}), rules(), (1000, 1000))
    rng = np.random.default_rng(1)
    frames = [(t * 0.5, [car(1, 100, float(rng.normal(0, 3)))]) for t in range(60)]  # 30 s, +-3 px jitter
    ev = run(eng, frames)
    assert [e[0] for e in ev] == ["onset", "confirmed"]
    assert ev[1][1] == pytest.approx(10.0, abs=0.51)


def test_car_leaving_before_dwell_is_retracted_not_alerted() -> None:
    eng = RuleEngine(camera({"id": "walk", "kind": "sidewalk", "polygon": FULL}), rules(), (1000, 1000))
    frames = [(t * 0.5, [car(1, 100)]) for t in range(12)]  # 6 s parked
    frames += [(6 + t * 0.5, []) for t in range(1, 6)]  # gone
    assert [e[0] for e in run(eng, frames)] == ["onset", "retracted"]


def test_moving_car_never_alerts() -> None:
    eng = RuleEngine(camera({"id": "walk", "kind": "sidewalk", "polygon": FULL}), rules(), (1000, 1000))
    frames = [(t * 0.5, [car(1, 10 + t * 15)]) for t in range(50)]  # drives slowly across
    assert "confirmed" not in [e[0] for e in run(eng, frames)]


def test_short_detection_gap_continues_the_episode() -> None:
    eng = RuleEngine(camera({"id": "walk", "kind": "sidewalk", "polygon": FULL}),
                     rules(sidewalk_parking={"max_gap_s": 2.0}), (1000, 1000))
    frames = [(t * 0.5, [] if t in (8, 9, 10) else [car(1, 100)]) for t in range(30)]  # 2 s unseen
    ev = run(eng, frames)
    assert [e[0] for e in ev] == ["onset", "confirmed"]


def test_ground_point_decides_the_zone() -> None:
    # The car's bottom centre is at x=600 (right half): the left-half zone does not hold it.
    eng = RuleEngine(camera({"id": "left", "kind": "sidewalk", "polygon": LEFT}), rules(), (1000, 1000))
    assert run(eng, [(t * 1.0, [car(1, 500)]) for t in range(15)]) == []


def test_per_zone_dwell_override() -> None:
    z = {"id": "walk", "kind": "no_parking", "polygon": FULL, "dwell_s": 3}
    eng = RuleEngine(camera(z), rules(), (1000, 1000))
    ev = run(eng, [(t * 0.5, [car(1, 100)]) for t in range(10)])
    assert ev[1][:2] == ("confirmed", 3.0)


def test_stray_dog_alone_alerts_and_dog_with_owner_does_not() -> None:
    z = {"id": "street", "kind": "no_stray_dogs", "polygon": FULL}
    dog = (7, "dog", 100, 800, 160, 850)
    owner = (8, "person", 170, 650, 230, 850)
    far = (9, "person", 900, 100, 950, 250)
    alone = run(RuleEngine(camera(z), rules(), (1000, 1000)), [(t * 0.5, [dog, far]) for t in range(14)])
    assert [e[0] for e in alone] == ["onset", "confirmed"]
    walked = run(RuleEngine(camera(z), rules(), (1000, 1000)), [(t * 0.5, [dog, owner]) for t in range(14)])
    assert walked == []


def test_dogs_allowed_zone_is_exempt() -> None:
    zones = ({"id": "street", "kind": "no_stray_dogs", "polygon": FULL},
             {"id": "park", "kind": "dogs_allowed", "polygon": LEFT})
    dog = (7, "dog", 100, 800, 160, 850)
    assert run(RuleEngine(camera(*zones), rules(), (1000, 1000)), [(t * 0.5, [dog]) for t in range(14)]) == []


def test_vending_needs_a_stall_and_alerts_once_per_zone_within_cooldown() -> None:
    z = {"id": "square", "kind": "no_vending", "polygon": FULL}
    p1 = (1, "person", 100, 300, 160, 480)
    p2 = (2, "person", 300, 300, 360, 480)
    stall = (3, "umbrella", 160, 250, 300, 330)
    eng = RuleEngine(camera(z), rules(), (1000, 1000))
    ev = run(eng, [(t * 0.5, [p1, p2, stall]) for t in range(30)])
    assert [e[0] for e in ev].count("confirmed") == 1  # two vendors at one stall: one case
    no_stall = run(RuleEngine(camera(z), rules(), (1000, 1000)), [(t * 0.5, [p1, p2]) for t in range(30)])
    assert no_stall == []


def test_vending_allowed_zone_exempts_vendors() -> None:
    zones = ({"id": "square", "kind": "no_vending", "polygon": FULL},
             {"id": "market", "kind": "vending_allowed", "polygon": LEFT})
    p1, stall = (1, "person", 100, 300, 160, 480), (3, "umbrella", 160, 250, 300, 330)
    assert run(RuleEngine(camera(*zones), rules(), (1000, 1000)), [(t * 0.5, [p1, stall]) for t in range(30)]) == []


def test_disabled_rule_is_silent() -> None:
    eng = RuleEngine(camera({"id": "walk", "kind": "sidewalk", "polygon": FULL}),
                     rules(sidewalk_parking={"enabled": False}), (1000, 1000))
    assert run(eng, [(t * 0.5, [car(1, 100)]) for t in range(30)]) == []


def test_stationarity_resets_on_a_real_move_only() -> None:
    st = Stationarity(max_shift=0.1)
    box = np.array([[100, 100, 200, 200]], float)
    assert st.update(np.array([5]), box, 0.0) == {5: 0.0}
    assert st.update(np.array([5]), box + 5, 1.0) == {5: 0.0}  # 7 px of a 141 px diagonal
    assert st.update(np.array([5]), box + 30, 2.0) == {5: 2.0}  # moved


def test_rule_config_hash_changes_with_thresholds() -> None:
    cam = camera({"id": "walk", "kind": "sidewalk", "polygon": FULL})
    assert rule_config_hash(cam, rules()) != rule_config_hash(cam, rules(sidewalk_parking={"dwell_s": 11}))
    assert rule_config_hash(cam, rules()) == rule_config_hash(cam, rules())
