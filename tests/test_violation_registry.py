"""The registry of violation types: a type is one module plus its catalogue entry and its labels.

The proof: a toy type (乱堆物料, goods piled in a no-piling zone) written into a temporary folder, with its
legal-basis catalogue entry and its labels, and no file of the repository touched, appears in the config
schema, fires in the pipeline on scripted detections, is drafted into a case with its legal basis and shows
in the console's type filter. The central roles still import no detection code.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from console_support import Env

from nonsite.bus import EmbeddedBus
from nonsite.bus.events import ModelInfo, ViolationEvent
from nonsite.cases import draft_case, load_catalogue, open_db
from nonsite.cases.legal_basis import DEFAULT_CATALOGUE
from nonsite.config import ConfigError, NonsiteConfig, load_config
from nonsite.config.manifest import CONSOLE_LOCALES, LOCALES_ENV, locale_strings, type_names, zone_kinds
from nonsite.evidence import LocalStore
from nonsite.evidence.sealer import seal
from nonsite.evidence.signing import Signer
from nonsite.pipeline.detections import make_detections
from nonsite.pipeline.rules import RuleEngine
from nonsite.pipeline.violations import MODULES_ENV, config_schema, models, violation_types
from nonsite.pipeline.violations import load_config as load_typed
from nonsite.pipeline.worker import EdgeWorker, SequenceCounter
from nonsite.streams.base import Frame

REPO = Path(__file__).resolve().parents[1]
CASES_LOCALES = REPO / "cases" / "locales"
FULL = [[0, 0], [1, 0], [1, 1], [0, 1]]
T0 = datetime(2026, 11, 21, 3, 0, 0, tzinfo=UTC).timestamp()
GOODS = (100.0, 200.0, 260.0, 330.0)

TOY_MODULE = '''
"""Piled goods (乱堆物料): goods standing in a no-piling zone."""

import numpy as np
from pydantic import Field

from nonsite.config.rules import RuleCommon
from nonsite.pipeline.violations.base import Hit, Scene, ViolationType


class PiledGoodsRule(RuleCommon):
    dwell_s: float = Field(20.0, gt=0, description="Seconds goods must stand in the zone.")
    goods_classes: list[str] = Field(default_factory=lambda: ["suitcase"], description="Classes counted as goods.")


def detect(scene: Scene[PiledGoodsRule], state: object) -> list[Hit]:
    tid = scene.tracked
    hits = []
    for zone, cfg in scene.zones:
        here = zone.contains(scene.d) & scene.select(cfg.goods_classes, cfg.min_confidence) & (tid >= 0)
        hits += [Hit(TYPE.name, zone.id, int(tid[i]), int(i)) for i in np.flatnonzero(here)]
    return hits


TYPE = ViolationType(name="piled_goods", config=PiledGoodsRule, description="Goods piled in a no-piling zone.",
                     watches=("no_piling",), detect=detect)
'''

TOY_CATALOGUE_ENTRY = '''
  piled_goods:
    name: {zh: 乱堆物料, en: Goods piled on the street}
    basis: [cacsr-14, cacsr-36]
    penalty: null
    repeat: {window_days: 30, by: [zone]}
    discretion:
      - id: order-clearing
        when: {}
        disposition: warning
        basis: [cacsr-36]
        summary: {zh: 责令限期清理。, en: Order the goods cleared within a time limit.}
        confirmed_by_legal_office: false
'''

TOY_LABELS = {
    "zh": {"type.piled_goods": "乱堆物料", "zone_kind.no_piling": "禁止堆物区"},
    "en": {"type.piled_goods": "Piled goods", "zone_kind.no_piling": "No-piling zone"},
}


@dataclass
class Toy:
    folder: Path
    catalogue: Path


@pytest.fixture
def toy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Toy]:
    """The toy type in three places outside the repository: its module, its catalogue entry, its labels."""
    src = tmp_path / "toy_types"
    src.mkdir()
    (src / "nonsite_toy_piled_goods.py").write_text(textwrap.dedent(TOY_MODULE), encoding="utf-8")
    catalogue = tmp_path / "legal_basis.yaml"
    catalogue.write_text(DEFAULT_CATALOGUE.read_text(encoding="utf-8") + TOY_CATALOGUE_ENTRY, encoding="utf-8")
    locales = tmp_path / "locales"
    locales.mkdir()
    for lang, strings in TOY_LABELS.items():
        (locales / f"{lang}.json").write_text(json.dumps(strings, ensure_ascii=False), encoding="utf-8")
    monkeypatch.syspath_prepend(str(src))
    monkeypatch.setenv(MODULES_ENV, "nonsite_toy_piled_goods")
    monkeypatch.setenv(LOCALES_ENV, str(locales))
    yield Toy(tmp_path, catalogue)
    sys.modules.pop("nonsite_toy_piled_goods", None)


def toy_camera() -> dict:
    return {"id": "cam-toy", "name": "河滨路", "source": {"url": "x.mp4"}, "fps": 5,
            "zones": [{"id": "quay", "name": "码头", "kind": "no_piling", "polygon": FULL}]}


def test_the_toy_type_is_in_the_config_schema_and_its_settings_are_validated(toy: Toy) -> None:
    assert [t.name for t in violation_types()] == [
        "sidewalk_parking", "street_vending", "stray_dog",
        "piled_materials", "street_drying", "illegal_posting", "outside_shop",  # the left-object types
        "mobile_hawker", "piled_goods",
    ]
    schema = config_schema()
    rules = schema["$defs"]["RulesConfig"]["properties"]
    assert rules["piled_goods"]["description"] == "Goods piled in a no-piling zone."
    goods = schema["$defs"]["PiledGoodsRule"]["properties"]["goods_classes"]
    assert goods["description"] == "Classes counted as goods."
    assert "piled_goods" in schema["$defs"]["RuleOverrides"]["properties"]
    assert "no_piling" in schema["$defs"]["ZoneKind"]["enum"]

    path = toy.folder / "c.yaml"
    path.write_text("rules:\n  piled_goods: {dwell_s: 3}\ncameras:\n  - id: a\n    source: {url: a.mp4}\n"
                    "    zones:\n      - {id: q, kind: no_piling, polygon: [[0, 0], [1, 0], [1, 1]],\n"
                    "         rules: {piled_goods: {goods_classes: [suitcase, box]}}}\n", encoding="utf-8")
    cfg = load_typed(path)
    assert cfg.rules.piled_goods.dwell_s == 3
    assert cfg.cameras[0].zones[0].rules.piled_goods.goods_classes == ["suitcase", "box"]
    central = load_config(path)  # the central roles: known type name and zone kind, from the shared manifest
    assert central.rules.named() == ["piled_goods"] and central.cameras[0].zones[0].kind == "no_piling"

    path.write_text(path.read_text(encoding="utf-8").replace("dwell_s: 3", "dwel_s: 3"), encoding="utf-8")
    with pytest.raises(ConfigError) as e:
        load_typed(path)
    assert f"{path}:2: rules.piled_goods.dwel_s: unknown key" in str(e.value)


def test_without_its_module_and_labels_the_type_is_unknown(tmp_path: Path) -> None:
    assert "piled_goods" not in {t.name for t in violation_types()}
    assert "piled_goods" not in type_names() and "no_piling" not in zone_kinds()
    path = tmp_path / "c.yaml"
    path.write_text("rules:\n  piled_goods: {dwell_s: 3}\n", encoding="utf-8")
    for load in (load_config, load_typed):
        with pytest.raises(ConfigError) as e:
            load(path)
        assert str(e.value).startswith(f"{path}:2: rules.piled_goods: unknown"), str(e.value)


def test_the_toy_type_fires_in_the_rule_engine_on_scripted_detections(toy: Toy) -> None:
    cam = NonsiteConfig.model_validate({"rules": {"piled_goods": {"dwell_s": 2}}, "cameras": [toy_camera()]})
    engine = RuleEngine(cam.cameras[0], cam.rules, (640, 480))
    kinds = []
    for i in range(20):
        d = make_detections([GOODS], ["suitcase"], tracker_id=[4], confidence=[0.8])
        kinds += [(e.kind, e.episode.rule, round(e.ts - T0, 1)) for e in engine.update(d, T0 + i * 0.2)]
    kinds += [(e.kind, e.episode.rule, round(e.ts - T0, 1)) for e in engine.finish(T0 + 4.0)]
    assert kinds == [("onset", "piled_goods", 0.0), ("confirmed", "piled_goods", 2.0), ("ended", "piled_goods", 4.0)]


def toy_event(toy: Toy, store: LocalStore) -> ViolationEvent:
    """The toy type through the edge worker: frames with scripted detections -> a published event."""
    cfg = models().config.model_validate({"rules": {"piled_goods": {"dwell_s": 2}}, "cameras": [toy_camera()],
                                          "evidence": {"pre_roll_s": 1, "post_roll_s": 0.4, "min_still_gap_s": 0}})
    bus = EmbeddedBus(toy.folder / "bus.sqlite")
    try:
        worker = EdgeWorker(cfg.cameras[0], cfg, store, bus, ModelInfo(name="m", version="1", sha256="0" * 64),
                            SequenceCounter(toy.folder / "seq.json"))
        out: list[ViolationEvent] = []
        for i in range(25):
            img = np.full((480, 640, 3), 90, np.uint8)
            img[200:330, 100:260] = (30, 60, 150)
            dets = make_detections([GOODS], ["suitcase"], confidence=[0.8])
            out += worker.process(Frame("cam-toy", i, T0 + i / 5, img), dets)
        out += worker.finish()
    finally:
        bus.close()
    assert [e.type for e in out] == ["piled_goods"]
    return out[0]


def test_the_toy_type_is_drafted_with_its_legal_basis_and_shows_in_the_console_filter(toy: Toy) -> None:
    store = LocalStore(toy.folder / "evidence")
    event = toy_event(toy, store)
    assert event.zone_id == "quay" and event.offender_hint is None  # no plate hook: nothing invented
    signer = Signer.generate()
    sealed = seal(store, signer, event)
    assert sealed.problems == []
    db_url = f"sqlite:///{toy.folder / 'cases.db'}"
    sf = open_db(db_url)
    try:
        case, created = draft_case(sf, sealed, "NS", catalogue=load_catalogue(toy.catalogue))
    finally:
        sf.kw["bind"].dispose()
    assert created and case.type == "piled_goods"
    assert case.legal_basis["known"]
    assert case.legal_basis["name"] == {"zh": "乱堆物料", "en": "Goods piled on the street"}
    assert [p["id"] for p in case.legal_basis["provisions"]] == ["cacsr-14", "cacsr-36"]
    assert case.suggested_disposition == "warning"

    env = Env(toy.folder, db_url, store, signer.public_key_pem().encode(), {}, {}, {}, signer=signer)
    client, _ = env.app("op")
    page = client.get("/")
    assert page.status_code == 200
    assert '<option value="piled_goods">乱堆物料</option>' in page.text  # the filter, labelled
    assert "乱堆物料" in client.get("/?type=piled_goods").text
    english = client.get("/?lang=en").text
    assert '<option value="piled_goods">Piled goods</option>' in english


def test_zone_editor_offers_the_toy_zone_kind(toy: Toy) -> None:
    assert zone_kinds()[-1] == "no_piling"
    assert locale_strings(CONSOLE_LOCALES, "zh")["zone_kind.no_piling"] == "禁止堆物区"
    assert locale_strings(CASES_LOCALES, "en")["type.piled_goods"] == "Piled goods"


def test_every_registered_type_has_its_catalogue_entry_and_labels() -> None:
    """The shared manifest and the registry agree: the central roles know every type the edge can raise."""
    catalogue = load_catalogue(DEFAULT_CATALOGUE)
    for vt in violation_types():
        assert vt.name in catalogue.types, vt.name
        assert vt.name in type_names()
        for lang in ("zh", "en"):
            assert f"type.{vt.name}" in locale_strings(CONSOLE_LOCALES, lang)
            assert f"type.{vt.name}" in locale_strings(CASES_LOCALES, lang)
        assert set(vt.watches) | set(vt.exempts) <= set(zone_kinds()), vt.name
    registered = {k for vt in violation_types() for k in (*vt.watches, *vt.exempts)}
    assert registered == set(zone_kinds())
    assert [t.name for t in violation_types()] == list(type_names())


@pytest.mark.parametrize("module", ["nonsite.console.app", "nonsite.evidence.sealer", "nonsite.cases.drafter"])
def test_central_roles_import_no_detection_code(module: str) -> None:
    code = (f"import sys, {module}; print([m for m in sys.modules if m.startswith('nonsite.pipeline') "
            "or m in ('numpy', 'cv2', 'supervision')])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]"


def test_console_client_type_filter_lists_shipped_types(tmp_path: Path) -> None:
    """Without any case, the filter offers every labelled type (nothing hard-coded in the console)."""
    env = Env(tmp_path, f"sqlite:///{tmp_path / 'cases.db'}", LocalStore(tmp_path / "evidence"),
              Signer.generate().public_key_pem().encode(), {}, {}, {})
    open_db(env.db_url).kw["bind"].dispose()
    client, _ = env.app("op")
    text = client.get("/?lang=en").text
    for name, label in [("sidewalk_parking", "Sidewalk parking"), ("stray_dog", "Stray dog")]:
        assert f'<option value="{name}">{label}</option>' in text
