"""Weights this project trained and ships in models/zoo/: card, registry and file agree; the street model
finds vendor carts and still finds what the base COCO model finds."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from nonsite.config.detector import DetectorConfig
from nonsite.models import create_detector, registry
from nonsite.models.registry import get_entry, resolve
from nonsite.models.street import box_iou

ZOO = Path(registry.__file__).resolve().parent / "zoo"
STREET = "street-yolo11n"
MAX_BYTES = 12_000_000
# india_road_obstacles val images (not trained on): a labelled cart (thela, class 1) the street model finds,
# and a street with people and cars the base model finds.
CART_IMAGE = "val_0093"
STREET_IMAGE = "val_0086"


def test_every_zoo_file_is_registered_with_the_sha256_its_card_states() -> None:
    files = sorted(ZOO.glob("*.onnx"))
    assert [f.stem for f in files] == [STREET]
    by_file = {e.file: e for e in registry.load_registry().values() if e.origin == "builtin"}
    for f in files:
        assert f.stat().st_size <= MAX_BYTES, f"{f.name} is {f.stat().st_size} bytes, over 12 MB"
        digest = hashlib.sha256(f.read_bytes()).hexdigest()
        entry = by_file[f.name]
        assert entry.sha256 == digest
        card = (ZOO / f"{f.stem}.md").read_text(encoding="utf-8")
        assert set(re.findall(rf"`{re.escape(f.name)}`[^\n]*?([0-9a-f]{{64}})", card)) == {digest}
        r = resolve(entry.name, download=False)
        assert r.path == f and r.sha256 == digest and r.source == "registered"


def test_street_model_keeps_the_coco_classes_and_adds_vendor_cart() -> None:
    street, coco = get_entry(STREET), get_entry("yolo11n-coco")
    assert street is not None and coco is not None
    assert street.classes[:80] == coco.classes and street.classes[80:] == ("vendor_cart",)


@pytest.fixture(scope="module")
def val_dir(media_dir: Path) -> Path:
    return media_dir / "india_road_obstacles"


def _image(val_dir: Path, stem: str) -> np.ndarray:
    im = cv2.imread(str(val_dir / "images" / "val" / f"{stem}.jpg"))
    assert im is not None
    return im


def test_street_model_finds_the_labelled_vendor_cart(val_dir: Path, models_dir: Path) -> None:
    im = _image(val_dir, CART_IMAGE)
    h, w = im.shape[:2]
    rows = [ln.split() for ln in (val_dir / "labels" / "val" / f"{CART_IMAGE}.txt").read_text().splitlines()]
    carts = np.array([[float(v) for v in r[1:5]] for r in rows if r[0] == "1"])
    carts = np.column_stack([(carts[:, 0] - carts[:, 2] / 2) * w, (carts[:, 1] - carts[:, 3] / 2) * h,
                             (carts[:, 0] + carts[:, 2] / 2) * w, (carts[:, 1] + carts[:, 3] / 2) * h])
    det = create_detector(DetectorConfig(model=STREET), download=False)
    assert det.class_names[80] == "vendor_cart"
    (d,) = det.detect([im])
    found = d.xyxy[d.data["class_name"] == "vendor_cart"]
    assert len(found), f"no vendor_cart in {CART_IMAGE}: {list(d.data['class_name'])}"
    assert box_iou(carts, found).max() >= 0.5
    base = create_detector(DetectorConfig(model="yolo11n-coco"), download=False)
    (b,) = base.detect([im])
    assert "vendor_cart" not in set(b.data["class_name"])


def test_street_model_finds_the_people_and_cars_the_base_model_finds(val_dir: Path, models_dir: Path) -> None:
    im = _image(val_dir, STREET_IMAGE)
    (b,) = create_detector(DetectorConfig(model="yolo11n-coco"), download=False).detect([im])
    (s,) = create_detector(DetectorConfig(model=STREET), download=False).detect([im])
    checked = 0
    for cls in ("person", "car"):
        want = b.xyxy[(b.data["class_name"] == cls) & (b.confidence >= 0.5)]
        got = s.xyxy[s.data["class_name"] == cls]
        if not len(want):
            continue
        assert len(got), f"the street model finds no {cls} where the base model finds {len(want)}"
        matched = (box_iou(want, got).max(1) >= 0.5).sum()
        assert matched >= max(1, int(0.5 * len(want))), f"{cls}: {matched} of {len(want)} base boxes found"
        checked += 1
    assert checked, f"the base model finds no confident person or car in {STREET_IMAGE}; pick another image"
