"""The ONNX Runtime backend (implementation: :mod:`nonsite.models.onnx_backend`)."""

from __future__ import annotations

from nonsite.config.detectors import DetectorBackend

BACKEND = DetectorBackend(
    name="onnx",
    summary="ONNX Runtime on the ultralytics ONNX export (exported from the .pt once and cached); with a CUDA "
    "device, TensorRT (fp16, engines cached beside the model) and CUDA execution providers (needs onnxruntime-gpu).",
    implementation="nonsite.models.onnx_backend:OnnxDetector",
    cpu_batch=4,  # faster per frame than single frames on this project's CPUs (bench/results)
)
