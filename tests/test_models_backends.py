"""Detector backends on real images: ultralytics .pt and ONNX Runtime (exported once, cached)."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import supervision as sv

from nonsite.config.detector import DetectorConfig
from nonsite.models import WeightsError, create_detector
from nonsite.models import export as export_mod
from nonsite.models.registry import get_entry

PT_SHA = "ed9cf38c4a0a9ac7f6a39122661fb2d4e8efcc450d85d68ba73d688ce3e35e4b"


@pytest.fixture(scope="module")
def onnx_det(models_dir: Path):
    return create_detector(DetectorConfig(backend="onnx"))


@pytest.fixture(scope="module")
def pt_det(models_dir: Path):
    return create_detector(DetectorConfig(backend="ultralytics"))


@pytest.fixture(scope="module")
def bus(media_dir: Path) -> np.ndarray:
    img = cv2.imread(str(media_dir / "generic_bus_ultralytics.jpg"))
    assert img is not None
    return img


@pytest.fixture(scope="module")
def frames(media_dir: Path) -> list[np.ndarray]:
    """Two frames 2 s apart from the busy junction video (640x360)."""
    cap = cv2.VideoCapture(str(media_dir / "street_india_intersection.mp4"))
    out = []
    for i in range(61):
        ok, f = cap.read()
        assert ok
        if i in (0, 60):
            out.append(f)
    cap.release()
    return out


def _counts(d: sv.Detections) -> dict[str, int]:
    names, counts = np.unique(d.data["class_name"], return_counts=True)
    return dict(zip(names.tolist(), counts.tolist(), strict=True))


def _assert_well_formed(d: sv.Detections, image: np.ndarray, class_names: list[str]) -> None:
    h, w = image.shape[:2]
    assert isinstance(d.data["class_name"], np.ndarray) and d.data["class_name"].dtype.kind == "U"
    assert [class_names[c] for c in d.class_id] == d.data["class_name"].tolist()
    assert d.confidence is not None and (d.confidence >= 0.3).all()
    assert (d.xyxy[:, 0] >= 0).all() and (d.xyxy[:, 2] <= w).all() and (d.xyxy[:, 3] <= h).all()
    assert (d.xyxy[:, 2] > d.xyxy[:, 0]).all() and (d.xyxy[:, 3] > d.xyxy[:, 1]).all()


@pytest.mark.parametrize("which", ["onnx_det", "pt_det"])
def test_finds_the_bus_and_the_people(which: str, request: pytest.FixtureRequest, bus: np.ndarray) -> None:
    det = request.getfixturevalue(which)
    (d,) = det.detect([bus])
    counts = _counts(d)
    assert counts.get("bus") == 1 and counts.get("person", 0) >= 3, counts
    _assert_well_formed(d, bus, det.class_names)
    # The bus box is in pixels of the 810x1080 input: it spans most of the image width.
    bx = d.xyxy[d.data["class_name"] == "bus"][0]
    assert bx[2] - bx[0] > 0.8 * bus.shape[1]


def test_weights_recorded(onnx_det, pt_det) -> None:
    entry = get_entry("yolo11n-coco")
    for det, backend in ((onnx_det, "onnx"), (pt_det, "ultralytics")):
        assert det.backend == backend
        assert (det.weights.name, det.weights.sha256, det.weights.version) == ("yolo11n-coco", PT_SHA, entry.version)
        assert det.weights.path.endswith("yolo11n-coco.pt")  # the source .pt, also for ONNX
        assert det.class_names == list(entry.classes) == det.weights.classes


def _match(a: sv.Detections, b: sv.Detections, min_conf: float = 0.5) -> None:
    """Every confident box of ``a`` has a box of the same class in ``b`` with IoU > 0.7."""
    conf = a.confidence >= min_conf
    assert conf.any()
    iou = sv.box_iou_batch(a.xyxy[conf], b.xyxy)
    same = a.class_id[conf][:, None] == b.class_id[None, :]
    best = np.where(same, iou, 0).max(axis=1)
    assert (best > 0.7).all(), best


def test_onnx_and_pt_agree(onnx_det, pt_det, bus: np.ndarray, frames: list[np.ndarray]) -> None:
    for img in [bus, *frames]:
        (a,), (b,) = onnx_det.detect([img]), pt_det.detect([img])
        _match(a, b)
        _match(b, a)


@pytest.mark.parametrize("which", ["onnx_det", "pt_det"])
def test_batch_of_two_equals_two_singles(which: str, request: pytest.FixtureRequest, frames: list[np.ndarray]) -> None:
    det = request.getfixturevalue(which)
    batch = det.detect(frames)
    singles = [det.detect([f])[0] for f in frames]
    assert len(batch) == 2
    assert len(batch[0]) != len(batch[1]) or not np.allclose(batch[0].xyxy, batch[1].xyxy)  # different frames
    for b, s in zip(batch, singles, strict=True):
        assert len(b) == len(s) >= 5
        np.testing.assert_array_equal(b.class_id, s.class_id)
        np.testing.assert_allclose(b.xyxy, s.xyxy, atol=0.05)
        np.testing.assert_allclose(b.confidence, s.confidence, atol=1e-3)


def test_boxes_follow_the_input_scale(onnx_det, bus: np.ndarray) -> None:
    (full,) = onnx_det.detect([bus])
    half = cv2.resize(bus, (bus.shape[1] // 2, bus.shape[0] // 2), interpolation=cv2.INTER_AREA)
    (small,) = onnx_det.detect([half])
    scaled = sv.Detections(xyxy=small.xyxy * 2, confidence=small.confidence, class_id=small.class_id)
    _match(full, scaled, min_conf=0.8)


def test_mixed_sizes_in_one_batch(onnx_det, bus: np.ndarray, frames: list[np.ndarray]) -> None:
    mixed = onnx_det.detect([bus, frames[0]])
    (alone,) = onnx_det.detect([bus])
    assert _counts(mixed[0]).get("bus") == 1
    _match(alone, mixed[0], min_conf=0.6)
    _assert_well_formed(mixed[1], frames[0], onnx_det.class_names)


def test_empty_and_bad_input(onnx_det, bus: np.ndarray) -> None:
    assert onnx_det.detect([]) == []
    with pytest.raises(ValueError, match="BGR uint8"):
        onnx_det.detect([cv2.cvtColor(bus, cv2.COLOR_BGR2GRAY)])


def test_export_cache_is_reused(onnx_det, monkeypatch: pytest.MonkeyPatch) -> None:
    onnx_path = onnx_det.onnx_path
    assert onnx_path.parent == export_mod.cache_dir() and onnx_path.name == "yolo11n-coco-640.onnx"
    before = onnx_path.stat().st_mtime_ns

    def no_export(*a: object, **k: object) -> None:
        raise AssertionError("re-exported although the cached ONNX is current")

    monkeypatch.setattr(export_mod, "_export", no_export)
    again = create_detector(DetectorConfig(backend="onnx"))
    assert again.onnx_path == onnx_path and onnx_path.stat().st_mtime_ns == before


def test_export_cache_goes_stale_when_source_or_imgsz_change(onnx_det, tmp_path: Path, monkeypatch) -> None:
    onnx_path = onnx_det.onnx_path
    monkeypatch.setenv("NONSITE_WEIGHTS_CACHE", str(tmp_path))
    os.symlink(onnx_path, tmp_path / onnx_path.name)
    meta = onnx_path.with_name(onnx_path.name + ".json").read_text()
    (tmp_path / (onnx_path.name + ".json")).write_text(meta)
    w = onnx_det.resolved
    assert export_mod.cached_export(w, 640) == tmp_path / onnx_path.name
    assert export_mod.cached_export(w, 480) is None  # another imgsz: another file
    (tmp_path / (onnx_path.name + ".json")).write_text(meta.replace(PT_SHA, "0" * 64))
    assert export_mod.cached_export(w, 640) is None  # the .pt changed


def test_ready_int8_onnx_uses_its_own_input_size(models_dir: Path, bus: np.ndarray, frames) -> None:
    det = create_detector(DetectorConfig(backend="onnx", model="yolo11n-coco-int8-320", imgsz=640))
    assert (det.imgsz, det.fixed_batch, det.weights.name) == (320, 1, "yolo11n-coco-int8-320")
    assert det.weights.sha256 == get_entry("yolo11n-coco-int8-320").sha256
    out = det.detect([bus, frames[0]])  # a fixed batch of 1 still takes a list
    assert _counts(out[0]).get("bus") == 1 and _counts(out[0]).get("person", 0) >= 3
    assert len(out[1]) > 0


def test_unsupported_models_are_refused_clearly(models_dir: Path) -> None:
    with pytest.raises(WeightsError, match="yolox"):
        create_detector(DetectorConfig(backend="onnx", model="yolox-nano-coco-416"))
    with pytest.raises(WeightsError, match="needs a .pt"):
        create_detector(DetectorConfig(backend="ultralytics", model="yolo11n-coco-int8-320"))


def test_openvino_backend_matches_onnx(models_dir: Path, bus: np.ndarray, frames: list[np.ndarray], onnx_det) -> None:
    """OpenVINO (fp32) on the same ONNX export: the same detections as ONNX Runtime, batched or not."""
    ov = create_detector(DetectorConfig.model_validate({"backend": "openvino", "openvino": {"precision": "fp32"}}))
    assert ov.backend == "openvino" and ov.weights.sha256 == PT_SHA and ov.class_names == onnx_det.class_names
    for got, ref in zip(ov.detect([bus, *frames]), onnx_det.detect([bus, *frames]), strict=True):
        assert len(got) == len(ref) and len(ref) > 0
        assert got.data["class_name"].tolist() == ref.data["class_name"].tolist()
        assert np.allclose(got.xyxy, ref.xyxy, atol=1.0) and np.allclose(got.confidence, ref.confidence, atol=0.01)
    assert [len(d) for d in ov.detect([bus])] == [len(onnx_det.detect([bus])[0])]


def test_gpu_devices_pick_tensorrt_then_cuda_and_never_fall_back_silently(tmp_path: Path) -> None:
    from nonsite.models.onnx_backend import execution_providers

    gpu = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    providers = execution_providers("cuda:1", gpu, tmp_path)
    assert [p[0] if isinstance(p, tuple) else p for p in providers] == gpu
    trt = providers[0][1]
    assert trt["device_id"] == 1 and trt["trt_fp16_enable"]
    assert trt["trt_engine_cache_path"] == str(tmp_path / "trt-cache")
    assert execution_providers("cuda", gpu[1:], tmp_path) == [("CUDAExecutionProvider", {"device_id": 0}),
                                                              "CPUExecutionProvider"]
    assert execution_providers("cpu", gpu, tmp_path) == ["CPUExecutionProvider"]
    with pytest.raises(WeightsError, match="needs onnxruntime-gpu"):
        execution_providers("cuda:0", ["CPUExecutionProvider"], tmp_path)


def test_openvino_refuses_a_gpu_device_with_the_backends_that_can() -> None:
    with pytest.raises(WeightsError, match="use backend onnx"):
        create_detector(DetectorConfig(backend="openvino", device="cuda:0"))
