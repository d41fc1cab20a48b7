"""The street dataset (COCO pseudo-labels + vendor_cart), the widened head, zoo paths in the registry."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pytest
import yaml

from nonsite.models import registry
from nonsite.models.cli import build_street_command
from nonsite.models.registry import resolve
from nonsite.models.street import CART_NAME, merge_labels
from nonsite.models.train import extend_head, offline_ultralytics, unfuse_checkpoint

COCO = [f"c{i}" for i in range(80)]
COCO[0], COCO[2], COCO[7] = "person", "car", "truck"
# india_road_obstacles val images: one with a labelled cart (thela), one without.
CART_IMAGE, OTHER_IMAGE = "val_0085", "val_0001"


def test_merge_labels_adds_carts_as_class_80_and_drops_the_truck_that_is_the_cart() -> None:
    pseudo_cls = np.array([0, 7, 2])
    pseudo = np.array([[0.2, 0.5, 0.1, 0.3], [0.60, 0.5, 0.3, 0.3], [0.9, 0.9, 0.1, 0.1]])
    carts = np.array([[0.61, 0.5, 0.3, 0.32]])
    lines, dropped = merge_labels(pseudo_cls, pseudo, carts, COCO)
    assert dropped == 1
    assert [ln.split()[0] for ln in lines] == ["0", "2", "80"]
    assert lines[-1] == "80 0.610000 0.500000 0.300000 0.320000"
    # a person standing at the cart is kept, whatever the overlap
    lines, dropped = merge_labels(np.array([0]), carts.copy(), carts, COCO)
    assert dropped == 0 and [ln.split()[0] for ln in lines] == ["0", "80"]


@pytest.fixture(scope="module")
def obstacles(media_dir: Path) -> Path:
    d = media_dir / "india_road_obstacles"
    assert (d / "data.yaml").is_file()
    return d


def test_build_street_dataset_on_a_mini_copy(
    obstacles: Path, models_dir: Path, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    for split, stem in (("train", CART_IMAGE), ("val", OTHER_IMAGE)):
        (src / "images" / split).mkdir(parents=True)
        (src / "labels" / split).mkdir(parents=True)
        (src / "images" / split / f"{stem}.jpg").symlink_to(obstacles / "images" / "val" / f"{stem}.jpg")
        label = obstacles / "labels" / "val" / f"{stem}.txt"
        (src / "labels" / split / f"{stem}.txt").write_bytes(label.read_bytes())
    (src / "data.yaml").write_text((obstacles / "data.yaml").read_text())
    out = tmp_path / "street"
    buf = io.StringIO()
    assert build_street_command(str(out), str(src / "data.yaml"), "yolo11n-coco", out=buf) == 0
    data = yaml.safe_load((out / "data.yaml").read_text())
    assert data["nc"] == 81 and data["names"][80] == CART_NAME and data["names"][0] == "person"
    label = (out / "labels" / "train" / f"{CART_IMAGE}.txt").read_text().splitlines()
    source_carts = [ln.split()[1:] for ln in (src / "labels" / "train" / f"{CART_IMAGE}.txt").read_text().splitlines()
                    if ln.split()[0] == "1"]
    assert source_carts, "the chosen image must hold a labelled cart"
    assert sorted(ln.split()[1:] for ln in label if ln.startswith("80 ")) == sorted(
        [f"{float(v):.6f}" for v in c] for c in source_carts)
    assert any(ln.split()[0] != "80" for ln in label), "no COCO pseudo-label was written"
    assert (out / "images" / "train" / f"{CART_IMAGE}.jpg").is_symlink()
    manifest = (out / "MANIFEST.sha256").read_text()
    assert f"labels/train/{CART_IMAGE}.txt" in manifest and f"images/val/{OTHER_IMAGE}.jpg" in manifest
    digest = hashlib.sha256(manifest.encode()).hexdigest()
    assert digest in buf.getvalue()
    # refuses to write images into the repository
    assert build_street_command(str(Path(registry.__file__).parent / "tmp-street"), str(src / "data.yaml"),
                                "yolo11n-coco", out=io.StringIO()) == 2


def test_widened_head_scores_the_old_classes_as_the_base_did(
    obstacles: Path, models_dir: Path, tmp_path: Path
) -> None:
    images = sorted((obstacles / "images" / "val").glob("*.jpg"))[:8]
    names = [*resolve("yolo11n-coco").classes, CART_NAME]
    with offline_ultralytics() as YOLO:
        base = resolve("yolo11n-coco").path
        ck = tmp_path / "wide.pt"
        unfuse_checkpoint(base, ck, images, 320)
        assert extend_head(ck, names) == 1
        assert extend_head(ck, names) == 0  # already 81 classes: untouched
        found = 0
        for im in images[:4]:
            a = YOLO(str(base))(str(im), conf=0.3, imgsz=320, verbose=False)[0].boxes
            b = YOLO(str(ck))(str(im), conf=0.3, imgsz=320, verbose=False)[0].boxes
            # The untrained cart class starts at its prior: no box of it, even at a threshold far below any
            # in use (it had random weights, and on some builds a cart box at 0.3 beside the base's boxes).
            low = YOLO(str(ck))(str(im), conf=0.001, imgsz=320, verbose=False)[0].boxes
            assert 80 not in low.cls.tolist()
            assert b.cls.tolist() == a.cls.tolist()
            np.testing.assert_allclose(b.conf.numpy(), a.conf.numpy(), atol=2e-3)
            np.testing.assert_allclose(b.xyxy.numpy(), a.xyxy.numpy(), atol=1.0)
            found += len(a)
        assert found > 0, "the comparison needs images where the base model finds something"
        assert len(YOLO(str(ck)).names) == 81


def test_registry_yaml_paths_are_relative_to_its_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "zoo").mkdir()
    weights = tmp_path / "zoo" / "m.onnx"
    weights.write_bytes(b"not really a model")
    sha = hashlib.sha256(weights.read_bytes()).hexdigest()
    reg = tmp_path / "registry.yaml"
    reg.write_text(yaml.safe_dump({"zoo-m": {"file": "m.onnx", "path": "zoo/m.onnx", "format": "onnx",
                                             "version": "1", "sha256": sha, "classes": ["a"]}}))
    monkeypatch.setattr(registry, "BUILTIN_REGISTRY", reg)
    monkeypatch.setenv("NONSITE_WEIGHTS_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path / "zoo")  # not the working directory: the registry file's folder
    r = resolve("zoo-m", download=False)
    assert r.path == weights.resolve() and r.sha256 == sha and r.source == "registered"
    weights.write_bytes(b"changed")
    with pytest.raises(registry.WeightsChecksumError):
        resolve("zoo-m", download=False)
