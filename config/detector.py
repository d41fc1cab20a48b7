"""The detector backend, its weights and thresholds."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from nonsite.config.base import Section


class DetectorConfig(Section):
    backend: Literal["onnx", "ultralytics"] = Field(
        "onnx",
        description="onnx: ONNX Runtime on an ultralytics export (fastest on CPU here); "
        "ultralytics: the .pt checkpoint through ultralytics/PyTorch.",
    )
    model: str = Field(
        "yolo11n-coco",
        description="A weights-registry name (see `nonsite models list`) or a path to a .pt / .onnx file.",
    )
    imgsz: int = Field(640, ge=128, le=1920, multiple_of=32, description="Network input size in pixels.")
    confidence: float = Field(0.3, gt=0, lt=1, description="Minimum detection confidence kept.")
    iou: float = Field(0.45, gt=0, lt=1, description="IoU threshold of non-maximum suppression.")
    threads: int = Field(0, ge=0, description="Inference threads; 0 lets the runtime choose.")
    device: str = Field("cpu", description="ultralytics backend only: 'cpu' or a CUDA device like 'cuda:0'.")


class TrackerConfig(Section):
    track_activation_threshold: float = Field(
        0.25, gt=0, lt=1, description="ByteTrack: confidence needed to start a track."
    )
    lost_track_s: float = Field(
        3.0, gt=0, description="Seconds a lost track is kept so it can resume with the same id after occlusion."
    )
    matching_threshold: float = Field(0.8, gt=0, le=1, description="ByteTrack: IoU matching threshold.")
