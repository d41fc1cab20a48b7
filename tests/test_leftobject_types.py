"""The four left-object violation types (乱堆物料, 沿街晾晒, 违规宣传物, 店外经营) on scripted input: frames of a real
CCTV background with a real object pasted in, detections scripted (none, a tracked person, a labelling class).
Through the rule engine, and once through the edge worker for the evidence (the clean reference still)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from nonsite.bus.embedded import EmbeddedBus
from nonsite.bus.events import ModelInfo
from nonsite.cases import draft_case, open_db
from nonsite.cases.document import render_case_html
from nonsite.config import CameraConfig
from nonsite.evidence.local import LocalStore
from nonsite.evidence.sealer import seal
from nonsite.evidence.signing import Signer
from nonsite.pipeline.composite import load_crop, paste
from nonsite.pipeline.detections import make_detections
from nonsite.pipeline.leftobject import LEFT_OBJECT, TRACK_ID_BASE
from nonsite.pipeline.rules import RuleEngine
from nonsite.pipeline.violations import models, violation_types
from nonsite.pipeline.worker import EdgeWorker, SequenceCounter
from nonsite.streams.base import Frame

T0 = 1_715_000_000.0  # Monday 2024-05-06, 20:53 Beijing time
LOWER = [[0.05, 0.6], [0.95, 0.6], [0.95, 1.0], [0.05, 1.0]]
UPPER = [[0.05, 0.0], [0.95, 0.0], [0.95, 0.45], [0.05, 0.45]]
AT, WIDTH = (0.5, 0.9), 0.2  # the object's bottom centre (in LOWER) and width
KINDS = {"piled_materials": "no_piling_area", "street_drying": "no_drying", "illegal_posting": "no_posting",
         "outside_shop": "shop_front"}


@pytest.fixture(scope="module")
def background(media_dir: Path) -> np.ndarray:
    cap = cv2.VideoCapture(str(media_dir / "parking_lot_cctv_timelapse_a_640x480.mp4"))
    ok, frame = cap.read()
    cap.release()
    assert ok
    return cv2.resize(frame, (320, 240), interpolation=cv2.INTER_AREA)


@pytest.fixture(scope="module")
def goods(media_dir: Path) -> np.ndarray:
    return load_crop(media_dir / "india_road_obstacles/images/val/val_0082.jpg", (0.1, 0.2, 0.6, 0.7))


def frames(background: np.ndarray, goods: np.ndarray, seconds: int, appear: int = 15
           ) -> list[tuple[float, np.ndarray, tuple[float, ...] | None]]:
    """(ts, image, pasted box) per second; the goods stand from ``appear`` on."""
    rng = np.random.default_rng(1)
    out = []
    for t in range(seconds):
        img = background.copy()
        box = paste(img, goods, AT, WIDTH) if t >= appear else None
        img = np.clip(img.astype(np.float32) + rng.normal(0, 2.0, img.shape), 0, 255).astype(np.uint8)
        out.append((T0 + t, img, box))
    return out


def camera(kind: str, polygon: list[list[float]] = LOWER, **extra: object) -> CameraConfig:
    zones = [{"id": "z", "kind": kind, "polygon": polygon}]
    return CameraConfig.model_validate({"id": "cam", "source": {"url": "x.mp4"}, "fps": 1.0, "zones": zones,
                                        **extra})


def rules(name: str, **over: object) -> object:
    return models().rules.model_validate({name: {"dwell_s": 20, "learn_s": 30, **over}})


def play(engine: RuleEngine, seq: list[tuple[float, np.ndarray, tuple[float, ...] | None]],
         people: int | None = None, labels: str | None = None) -> list[tuple[str, float, str, int]]:
    """Feed the engine; ``people``: a person with this track id (-1: not tracked yet) stands on the goods' box;
    ``labels``: a detection of that class covers them. Returns (kind, seconds, class of the main box, track id)."""
    out = []
    for ts, img, box in seq:
        objs: list[tuple[int, str, tuple[float, ...]]] = []
        if box is not None and people is not None:
            objs.append((people, "person", box))
        if box is not None and labels:
            objs.append((8, labels, box))
        d = make_detections([o[2] for o in objs], [o[1] for o in objs], tracker_id=[o[0] for o in objs])
        for e in engine.update(d, ts, img):
            out.append((e.kind, round(ts - T0, 1), e.boxes[0].class_name if e.boxes else "", e.episode.track_id))
    return out


def test_the_registry_lists_the_four_types_with_their_zone_kinds() -> None:
    types = {t.name: t for t in violation_types()}
    for name, kind in KINDS.items():
        assert kind in types[name].watches
        assert types[name].reference is not None  # the clean reference still goes into the evidence
    assert types["piled_materials"].exempts == ("piling_allowed",)
    assert types["illegal_posting"].exempts == ("notice_board",)


@pytest.mark.parametrize("name", list(KINDS))
def test_each_type_confirms_an_object_left_in_its_zone_after_the_dwell(
        name: str, background: np.ndarray, goods: np.ndarray) -> None:
    engine = RuleEngine(camera(KINDS[name]), rules(name), (320, 240))
    events = play(engine, frames(background, goods, 50))
    kinds = [(k, cls) for k, _, cls, _ in events]
    assert kinds == [("onset", LEFT_OBJECT), ("confirmed", LEFT_OBJECT)]
    onset, confirmed = events[0][1], events[1][1]
    assert 15 <= onset <= 18  # the goods came at 15 s
    assert confirmed - onset == pytest.approx(20.0)
    assert events[1][3] >= TRACK_ID_BASE


def test_an_object_outside_the_zone_or_on_an_allowed_site_raises_nothing(background: np.ndarray,
                                                                         goods: np.ndarray) -> None:
    seq = frames(background, goods, 50)
    assert play(RuleEngine(camera("no_piling_area", UPPER), rules("piled_materials"), (320, 240)), seq) == []
    allowed = CameraConfig.model_validate({
        "id": "cam", "source": {"url": "x.mp4"}, "fps": 1.0,
        "zones": [{"id": "z", "kind": "no_piling_area", "polygon": LOWER},
                  {"id": "works", "kind": "piling_allowed", "polygon": LOWER}]})
    assert play(RuleEngine(allowed, rules("piled_materials"), (320, 240)), seq) == []


@pytest.mark.parametrize("track_id", [7, -1])  # tracked, or seen but not tracked (yet)
def test_a_person_standing_there_is_not_a_left_object(background: np.ndarray, goods: np.ndarray,
                                                      track_id: int) -> None:
    engine = RuleEngine(camera("shop_front"), rules("outside_shop"), (320, 240))
    assert play(engine, frames(background, goods, 50), people=track_id) == []


def test_a_person_standing_in_front_of_the_object_hides_it_without_restarting_its_time(
        background: np.ndarray, goods: np.ndarray, media_dir: Path) -> None:
    person = load_crop(media_dir / "generic_bus_ultralytics.jpg", (0.274, 0.377, 0.426, 0.795))
    seq = frames(background, goods, 60, appear=5)
    out = []
    engine = RuleEngine(camera("no_piling_area"), rules("piled_materials", dwell_s=40), (320, 240))
    for ts, img, _ in seq:
        objs: list[tuple[float, ...]] = []
        if 25 <= ts - T0 < 40:  # someone stops right in front of the goods for 15 s
            img = img.copy()
            objs.append(paste(img, person, (AT[0], AT[1] + 0.02), WIDTH * 0.8))
        d = make_detections(objs, ["person"] * len(objs), tracker_id=[3] * len(objs))
        out += [(e.kind, round(ts - T0)) for e in engine.update(d, ts, img)]
    assert [k for k, _ in out] == ["onset", "confirmed"]
    assert out[1][1] - out[0][1] == 40  # one episode from when the goods came, through the person's stay


def test_a_trained_class_labels_the_object_and_can_be_required(background: np.ndarray, goods: np.ndarray) -> None:
    seq = frames(background, goods, 50)
    cfg = {"object_classes": ["clothes"], "require_class": True}
    required = RuleEngine(camera("no_drying"), rules("street_drying", **cfg), (320, 240))
    assert play(required, seq) == []  # nothing confirms it: no alert
    labelled = RuleEngine(camera("no_drying"), rules("street_drying", **cfg), (320, 240))
    assert [(k, cls) for k, _, cls, _ in play(labelled, seq, labels="clothes")] == [
        ("onset", "clothes"), ("confirmed", "clothes")]


def test_a_schedule_keeps_the_type_silent_outside_its_hours(background: np.ndarray, goods: np.ndarray) -> None:
    daytime = rules("outside_shop", schedule=[{"start": "07:00", "end": "19:00"}])  # T0 is 20:53 local
    assert play(RuleEngine(camera("shop_front"), daytime, (320, 240)), frames(background, goods, 50)) == []


def test_the_evidence_has_the_clean_reference_still_before_the_object_came(
        tmp_path: Path, background: np.ndarray, goods: np.ndarray) -> None:
    cfg = models().config.model_validate({
        "rules": {"piled_materials": {"dwell_s": 20, "learn_s": 30}},
        "evidence": {"pre_roll_s": 1, "post_roll_s": 1, "min_still_gap_s": 5},
        "cameras": [{"id": "cam", "source": {"url": "x.mp4"}, "fps": 1.0,
                     "zones": [{"id": "z", "kind": "no_piling_area", "polygon": LOWER}]}],
    })
    store, bus = LocalStore(tmp_path / "ev"), EmbeddedBus(tmp_path / "bus.sqlite")
    try:
        worker = EdgeWorker(cfg.cameras[0], cfg, store, bus, ModelInfo(name="m", version="1", sha256="0" * 64),
                            SequenceCounter(tmp_path / "seq.json"))
        seq = frames(background, goods, 50)
        events = []
        for i, (ts, img, _) in enumerate(seq):
            events += worker.process(Frame("cam", i, ts, img), make_detections([], []))
        events += worker.finish()
    finally:
        bus.close()
    assert len(events) == 1
    ev = events[0]
    blobs = {item.role: store.get(item.key) for item in ev.evidence}
    assert {"reference", "reference_annotated", "onset", "confirm", "closeup"} <= set(blobs)
    assert ev.type == "piled_materials" and ev.dwell_s == pytest.approx(20.0)

    def pixels(role: str) -> np.ndarray:
        return cv2.imdecode(np.frombuffer(blobs[role], np.uint8), cv2.IMREAD_COLOR).astype(np.float32)

    box = [int(v) for v in seq[-1][2] or ()]
    region = (slice(box[1], box[3]), slice(box[0], box[2]))
    clean = background.astype(np.float32)[region]
    assert float(np.abs(pixels("reference")[region] - clean).mean()) < 8  # before: the zone clean
    assert float(np.abs(pixels("confirm")[region] - clean).mean()) > 25  # after: the goods there
    assert ev.boxes["confirm"][0].class_name == LEFT_OBJECT

    # sealed and drafted: the case cites the city appearance regulation and its document shows the reference first
    sealed = seal(store, Signer.load_or_create(tmp_path / "signing.pem"), ev)
    sf = open_db(f"sqlite:///{tmp_path / 'cases.db'}")
    try:
        case, _ = draft_case(sf, sealed, "NS")
    finally:
        sf.kw["bind"].dispose()
    assert [p["id"] for p in case.legal_basis["provisions"]] == ["cacsr-14", "cacsr-36"]
    html = render_case_html(case, "zh", image_src=lambda role, key: f"/e/{role}.jpg")
    stills = [html.index(f'/e/{role}.jpg') for role in ("reference_annotated", "onset_annotated", "confirm_annotated")]
    assert stills == sorted(stills) and "参照图：该区域清洁时（标注）" in html and "乱堆物料" in html
