"""The int8 detector (`nonsite models quantize`, `detector.openvino.precision: int8`) on a real frame."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import pytest

from nonsite.config.detector import DetectorConfig
from nonsite.models import WeightsError, create_detector
from nonsite.models.quantize import cached_int8, ensure_int8
from nonsite.models.registry import resolve


@pytest.fixture(scope="module")
def int8_xml(models_dir: Path, media_dir: Path) -> Path:
    """The cached int8 IR of yolo11n-coco (built here, on fewer calibration frames, when the cache has none)."""
    return ensure_int8("yolo11n-coco", frames=64)


def test_int8_model_loads_and_finds_the_people_and_the_bus(int8_xml: Path, media_dir: Path) -> None:
    det = create_detector(DetectorConfig.model_validate({"backend": "openvino", "openvino": {"precision": "int8"}}))
    assert det.precision == "int8"  # type: ignore[attr-defined]
    assert det.model_path == int8_xml  # type: ignore[attr-defined]
    meta = json.loads(int8_xml.with_suffix(".json").read_text(encoding="utf-8"))
    # calibrated on real frames: the 64 asked for are spread evenly over the media's videos (a few fewer when they
    # do not divide evenly), or more when the cache holds a model built with `nonsite models quantize` (300)
    assert meta["source"] == "yolo11n-coco" and meta["calibration_frames"] >= 48
    (d,) = det.detect([cv2.imread(str(media_dir / "generic_bus_ultralytics.jpg"))])
    names = d.data["class_name"].tolist()
    assert names.count("person") >= 3 and "bus" in names
    assert (d.confidence[[n == "person" for n in names]] >= 0.5).any()


def test_int8_without_a_built_model_says_how_to_build_it(models_dir: Path) -> None:
    assert cached_int8(resolve("yolo11n-coco"), 288) is None  # nobody quantizes at 288
    with pytest.raises(WeightsError, match="nonsite models quantize --model yolo11n-coco --imgsz 288"):
        create_detector(DetectorConfig.model_validate({"backend": "openvino", "imgsz": 288,
                                                       "openvino": {"precision": "int8"}}))
