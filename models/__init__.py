"""Detector backends behind one interface, and the weights registry.

``import nonsite.models`` stays light: torch/ultralytics load only when the ultralytics backend or an
ONNX export needs them, onnxruntime only when the ONNX backend is created.
"""

from __future__ import annotations

import importlib

from nonsite.config.detector import DetectorConfig
from nonsite.config.detectors import DETECTOR_BACKENDS
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
    """The detector for ``cfg.backend`` (one of :data:`~nonsite.config.detectors.DETECTOR_BACKENDS`: onnx,
    openvino, ultralytics) on ``cfg.model``; the backend's implementation is imported only now.

    Raises :class:`WeightsError` (or a subclass) with a one-sentence fix when the weights cannot be found
    or loaded."""
    cfg = cfg or DetectorConfig()
    spec = DETECTOR_BACKENDS.get(cfg.backend)
    if spec is None:
        raise WeightsError(f"Unknown detector backend '{cfg.backend}'; use {', '.join(DETECTOR_BACKENDS)}.")
    module, _, name = spec.implementation.partition(":")
    detector: Detector = getattr(importlib.import_module(module), name)(cfg, download=download)
    return detector
