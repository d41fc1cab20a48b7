"""The detector backend, its weights and thresholds."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from nonsite.config.base import Section


class DetectorConfig(Section):
    backend: Literal["onnx", "ultralytics", "openvino"] = Field(
        "openvino",
        description="openvino: OpenVINO on an OpenVINO IR (.xml), an ONNX, or a .pt exported to ONNX once (the "
        "fastest on CPU here, see bench/); onnx: ONNX Runtime on the same export; "
        "ultralytics: the .pt checkpoint through ultralytics/PyTorch (CPU or CUDA).",
    )
    model: str = Field(
        "yolo11n-coco",
        description="A weights-registry name (see `nonsite models list`) or a path to a .pt / .onnx file.",
    )
    imgsz: int = Field(640, ge=128, le=1920, multiple_of=32, description="Network input size in pixels.")
    confidence: float = Field(0.3, gt=0, lt=1, description="Minimum detection confidence kept.")
    iou: float = Field(0.45, gt=0, lt=1, description="IoU threshold of non-maximum suppression.")
    threads: int = Field(0, ge=0, description="Inference threads; 0 lets the runtime choose.")
    device: str = Field(
        "cpu", pattern=r"^(cpu|cuda(:\d+)?)$",
        description="'cpu' or a CUDA device like 'cuda:0': ultralytics runs PyTorch there; onnx uses ONNX Runtime's "
        "TensorRT (fp16, engines cached beside the model) and CUDA execution providers (needs onnxruntime-gpu); "
        "openvino is CPU only.",
    )
    precision: Literal["fp32", "bf16"] = Field(
        "fp32",
        description="openvino backend only: inference precision. bf16 is about twice as fast on CPUs with AMX "
        "or AVX512-BF16, with slightly different boxes and scores; fp32 matches the other backends.",
    )


class TrackerConfig(Section):
    track_activation_threshold: float = Field(
        0.4, gt=0, lt=1, description="ByteTrack: confidence a detection needs to start a new track."
    )
    high_confidence: float = Field(
        0.4, gt=0, lt=1,
        description="ByteTrack: detections at or above this are matched first (and may start tracks); "
        "weaker ones only extend existing tracks.",
    )
    minimum_consecutive_frames: int = Field(
        2, ge=1, le=10, description="Frames a new track must be seen in a row before it gets an id."
    )
    lost_track_s: float = Field(
        3.0, gt=0, description="Seconds a lost track is kept so it can resume with the same id after occlusion."
    )
    minimum_iou: float = Field(
        0.1, gt=0, lt=1, description="ByteTrack: least IoU between a track's prediction and a detection to match."
    )
