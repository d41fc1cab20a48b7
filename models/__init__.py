"""Detector backends behind one interface, and the weights registry.

``import nonsite.models`` stays light: torch/ultralytics load only when the ultralytics backend or an
ONNX export needs them, onnxruntime only when the ONNX backend is created.
"""

from __future__ import annotations

from nonsite.config.detector import DetectorConfig
from nonsite.models.base import Detector, WeightsInfo
from nonsite.models.registry import (
    ResolvedWeights,
    WeightsChecksumError,
    WeightsError,
    WeightsNotFound,
    list_models,
    register,
    resolve,
)

__all__ = [
    "Detector",
    "DetectorConfig",
    "ResolvedWeights",
    "WeightsChecksumError",
    "WeightsError",
    "WeightsInfo",
    "WeightsNotFound",
    "create_detector",
    "list_models",
    "register",
    "resolve",
]


def create_detector(cfg: DetectorConfig | None = None, *, download: bool = True) -> Detector:
    """The detector for ``cfg.backend`` (``onnx``, ``openvino`` or ``ultralytics``) on ``cfg.model``.

    Raises :class:`WeightsError` (or a subclass) with a one-sentence fix when the weights cannot be found
    or loaded."""
    cfg = cfg or DetectorConfig()
    if cfg.backend == "onnx":
        from nonsite.models.onnx_backend import OnnxDetector

        return OnnxDetector(cfg, download=download)
    if cfg.backend == "ultralytics":
        from nonsite.models.ultralytics_backend import UltralyticsDetector

        return UltralyticsDetector(cfg, download=download)
    if cfg.backend == "openvino":
        from nonsite.models.openvino_backend import OpenVinoDetector

        return OpenVinoDetector(cfg, download=download)
    raise WeightsError(f"Unknown detector backend '{cfg.backend}'; use onnx, openvino or ultralytics.")
