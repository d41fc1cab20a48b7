"""The OpenVINO backend on real images: same detections as ONNX Runtime on the same export, batches, the
static-shape cache, clear errors."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import supervision as sv

from nonsite.config.detector import DetectorConfig
from nonsite.models import WeightsError, create_detector
from nonsite.models.openvino_backend import OpenVinoDetector
from nonsite.models.registry import get_entry


@pytest.fixture(scope="module")
def ov_det(models_dir: Path) -> OpenVinoDetector:
    # fp32 explicitly: the default (auto) may pick int8 where its model is built (tests/test_models_int8.py)
    det = create_detector(DetectorConfig.model_validate({"backend": "openvino", "openvino": {"precision": "fp32"}}))
    assert isinstance(det, OpenVinoDetector)
    return det


@pytest.fixture(scope="module")
def onnx_det(models_dir: Path):
    return create_detector(DetectorConfig(backend="onnx"))


@pytest.fixture(scope="module")
def images(media_dir: Path) -> list[np.ndarray]:
    bus = cv2.imread(str(media_dir / "generic_bus_ultralytics.jpg"))
    cap = cv2.VideoCapture(str(media_dir / "street_india_intersection.mp4"))
    frames = []
    for i in range(61):
        ok, f = cap.read()
        assert ok
        if i in (0, 60):
            frames.append(f)
    cap.release()
    return [bus, *frames]


def _match(a: sv.Detections, b: sv.Detections, min_conf: float = 0.5) -> None:
    """Every confident box of ``a`` has a box of the same class in ``b`` with IoU > 0.7."""
    conf = a.confidence >= min_conf
    assert conf.any()
    iou = sv.box_iou_batch(a.xyxy[conf], b.xyxy)
    same = a.class_id[conf][:, None] == b.class_id[None, :]
    assert (np.where(same, iou, 0).max(axis=1) > 0.7).all()


def test_finds_the_bus_and_agrees_with_onnx_runtime(ov_det: OpenVinoDetector, onnx_det, images) -> None:
    (d,) = ov_det.detect([images[0]])
    names = d.data["class_name"].tolist()
    assert names.count("bus") == 1 and names.count("person") >= 3
    assert [ov_det.class_names[c] for c in d.class_id] == names
    for img in images:
        (a,), (b,) = ov_det.detect([img]), onnx_det.detect([img])
        _match(a, b)
        _match(b, a)


def test_weights_and_precision_are_recorded(ov_det: OpenVinoDetector, onnx_det) -> None:
    entry = get_entry("yolo11n-coco")
    assert ov_det.backend == "openvino"
    assert (ov_det.weights.name, ov_det.weights.sha256) == (entry.name, entry.sha256)
    assert ov_det.onnx_path == onnx_det.onnx_path  # the same cached export
    assert ov_det.precision in ("bf16", "f32", "f16")


def test_batches_match_singles_and_compiled_shapes_are_reused(ov_det: OpenVinoDetector, images) -> None:
    frames = images[1:]
    batch = ov_det.detect(frames)
    singles = [ov_det.detect([f])[0] for f in frames]
    for b, s in zip(batch, singles, strict=True):
        assert len(b) >= 5
        _match(b, s, min_conf=0.4)
        _match(s, b, min_conf=0.4)
    shapes = set(ov_det._compiled)
    # 640x360 frames: letterboxed to 640x384; a batch of two runs as single-frame requests on the throughput
    # streams (batch 0 in the cache's key), a lone frame on a model of its own
    assert (0, 384, 640) in shapes and (1, 384, 640) in shapes and (2, 384, 640) not in shapes
    ov_det.detect(frames)
    assert set(ov_det._compiled) == shapes  # nothing compiled again


def test_a_batch_on_throughput_streams_finds_what_one_request_of_the_batch_finds(models_dir: Path, images) -> None:
    """streams auto (the default) and streams 1 (the whole batch as one request): the same boxes, classes and
    scores for a batch of frames of two sizes (the photograph pads the 640x360 frames to its shape in both)."""
    one = create_detector(DetectorConfig.model_validate({"backend": "openvino", "openvino": {
        "precision": "fp32", "streams": 1}}))
    auto = create_detector(DetectorConfig.model_validate({"backend": "openvino", "openvino": {"precision": "fp32"}}))
    batch = [images[1], images[0], images[2], images[1]]
    a, b = one.detect(batch), auto.detect(batch)
    # the portrait photograph (640 x 480 letterboxed) and the 640x360 frames (384 x 640): a 640 x 640 batch
    assert (4, 640, 640) in one._compiled  # type: ignore[attr-defined]
    assert (0, 640, 640) in auto._compiled and (4, 640, 640) not in auto._compiled  # type: ignore[attr-defined]
    for x, y in zip(a, b, strict=True):
        assert len(x) == len(y) >= 3
        assert (x.class_id == y.class_id).all()
        assert np.allclose(x.xyxy, y.xyxy, atol=0.5) and np.allclose(x.confidence, y.confidence, atol=1e-3)
    with pytest.raises(ValueError, match="streams"):
        DetectorConfig.model_validate({"backend": "openvino", "openvino": {"streams": -1}})


def test_bad_input_and_models(ov_det: OpenVinoDetector, images) -> None:
    assert ov_det.detect([]) == []
    with pytest.raises(ValueError, match="BGR uint8"):
        ov_det.detect([cv2.cvtColor(images[0], cv2.COLOR_BGR2GRAY)])
    with pytest.raises(WeightsError, match="yolox"):
        create_detector(DetectorConfig(backend="openvino", model="yolox-nano-coco-416"))
