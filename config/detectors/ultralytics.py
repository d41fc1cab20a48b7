"""The ultralytics/PyTorch backend (implementation: :mod:`nonsite.models.ultralytics_backend`)."""

from __future__ import annotations

from nonsite.config.detectors import DetectorBackend

BACKEND = DetectorBackend(
    name="ultralytics",
    summary="the .pt checkpoint through ultralytics/PyTorch (CPU or CUDA).",
    implementation="nonsite.models.ultralytics_backend:UltralyticsDetector",
    cpu_batch=1,  # PyTorch on the CPU is unmeasured with batches: single frames
)
