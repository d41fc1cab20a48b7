"""Street vending with a cart class (the street model's ``vendor_cart``): scripted, tracked detections (no
video), then one real photograph through the street model."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from test_pipeline_rules import FULL, LEFT, camera, kinds, run

from nonsite.config import RulesConfig
from nonsite.pipeline.rules import RuleEngine

ZONE = {"id": "square", "kind": "no_vending", "polygon": FULL}
CART = (5, "vendor_cart", 170, 380, 320, 485)
VENDOR = (1, "person", 100, 300, 160, 480)


def engine(*zones: dict, **over: object) -> RuleEngine:
    cfg = {"dwell_s": 10, "max_gap_s": 1.0, "cooldown_s": 0, **over}
    return RuleEngine(camera(*(zones or (ZONE,))), RulesConfig.model_validate({"street_vending": cfg}), (1000, 1000))


def frames(*objs: tuple, n: int = 30, step: float = 0.5) -> list[tuple[float, list[tuple]]]:
    return [(t * step, list(objs)) for t in range(n)]


def test_cart_at_rest_with_a_vendor_is_the_case_with_the_vendor_as_related() -> None:
    eng = engine()
    ev = run(eng, frames(VENDOR, CART))
    assert kinds(ev) == ["onset", "confirmed"]
    assert {e[2] for e in ev} == {5}  # the cart carries the episode, not the person
    assert ev[1][1] == 10.0  # confirmed after the dwell
    (ep,) = eng.episodes.values()
    assert ep.related_track_ids == {1}


def test_cart_left_alone_for_the_dwell_confirms_unless_an_attendant_is_required() -> None:
    assert kinds(run(engine(), frames(CART))) == ["onset", "confirmed"]
    assert run(engine(require_attendant=True), frames(CART)) == []
    assert "confirmed" in kinds(run(engine(require_attendant=True), frames(VENDOR, CART)))


def test_a_cart_pushed_along_never_confirms() -> None:
    moving = [(t * 0.5, [(1, "person", 100 + 30 * t, 300, 160 + 30 * t, 480),
                         (5, "vendor_cart", 170 + 30 * t, 380, 320 + 30 * t, 485)]) for t in range(30)]
    assert "confirmed" not in kinds(run(engine(), moving))


def test_a_cart_in_an_allowed_zone_or_outside_the_zone_is_not_vending() -> None:
    allowed = {"id": "market", "kind": "vending_allowed", "polygon": LEFT}
    assert run(engine(ZONE, allowed), frames(VENDOR, CART)) == []
    right = {"id": "square", "kind": "no_vending", "polygon": [[0.6, 0], [1, 0], [1, 1], [0.6, 1]]}
    assert run(engine(right), frames(VENDOR, CART)) == []


def test_a_rider_on_a_stopped_cart_is_not_its_attendant() -> None:
    rider = (1, "person", 200, 300, 280, 470)  # sits on the cart box (a tricycle cart waiting at a light)
    assert run(engine(require_attendant=True), frames(rider, CART)) == []


def test_one_case_per_cart_even_with_a_vendor_under_an_umbrella_beside_it() -> None:
    umbrella = (6, "umbrella", 60, 230, 330, 300)  # the COCO heuristic would make the vendor a case too
    ev = run(engine(), frames(VENDOR, CART, umbrella))
    assert kinds(ev).count("confirmed") == 1 and {e[2] for e in ev} == {5}


def test_without_a_cart_class_the_coco_heuristics_still_find_the_vendor() -> None:
    table = (6, "dining table", 170, 380, 320, 485)
    ev = run(engine(), frames(VENDOR, table))
    assert kinds(ev) == ["onset", "confirmed"] and {e[2] for e in ev} == {1}


# -- a real photograph through the street model ---------------------------------------------------------------

CART_IMAGE = "val_0093"  # india_road_obstacles val (never trained on): a labelled cart the street model finds


def test_a_real_cart_in_a_no_vending_zone_confirms_through_the_street_model(media_dir: Path, models_dir: Path
                                                                             ) -> None:
    from nonsite.config.detector import DetectorConfig
    from nonsite.models import create_detector

    im = cv2.imread(str(media_dir / "india_road_obstacles" / "images" / "val" / f"{CART_IMAGE}.jpg"))
    assert im is not None
    h, w = im.shape[:2]
    (d,) = create_detector(DetectorConfig(model="street-yolo11n"), download=False).detect([im])
    carts = d.xyxy[d.data["class_name"] == "vendor_cart"]
    assert len(carts)
    x1, y1, x2, y2 = carts[0]
    pad = 0.05
    zone = {"id": "roadside", "kind": "no_vending",
            "polygon": [[max(0, x1 / w - pad), max(0, y1 / h - pad)], [min(1, x2 / w + pad), max(0, y1 / h - pad)],
                        [min(1, x2 / w + pad), min(1, y2 / h + pad)], [max(0, x1 / w - pad), min(1, y2 / h + pad)]]}
    eng = RuleEngine(camera(zone), RulesConfig.model_validate({"street_vending": {"dwell_s": 5, "cooldown_s": 0}}),
                     (w, h))
    d.tracker_id = np.arange(1, len(d) + 1)  # a still: every object keeps its box, so one id each
    events = []
    for k in range(20):  # the still for 10 s at 2 frames a second: a cart standing there
        events += eng.update(d, 1000.0 + k * 0.5)
    confirmed = [e for e in events if e.kind == "confirmed"]
    assert len(confirmed) == 1
    main = next(b for b in confirmed[0].boxes if b.track_id == confirmed[0].episode.track_id)
    assert main.class_name == "vendor_cart"  # the cart is the case's object
