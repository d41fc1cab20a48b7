"""Detector backends behind one interface, and the weights registry.

``import nonsite.models`` stays light: torch/ultralytics load only when the ultralytics backend or an
ONNX export needs them, onnxruntime only when the ONNX backend is created.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable, Iterable

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
    "CameraDetectors",
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


class CameraDetectors:
    """The detectors of one process, one per weights in use: ``detector.model`` for most cameras, the weights of
    ``detector.zone_models`` for a camera with a zone of such a kind (the street model where vendor carts matter).
    Each is created once, on first use (its sha256 checked by the registry); every camera gets one pass per frame.
    """

    def __init__(self, cfg: DetectorConfig | None = None, *, download: bool = True,
                 factory: Callable[..., Detector] = create_detector) -> None:
        self.cfg = cfg or DetectorConfig()
        self._download = download
        self._factory = factory
        self._by_model: dict[str, Detector] = {}
        self._lock = threading.Lock()

    def model_for(self, kinds: Iterable[str]) -> str:
        """The weights for a camera whose zones have these kinds."""
        return self.cfg.model_for(kinds)

    def get(self, model: str) -> Detector:
        """The detector on ``model`` (created now if it is the first camera that needs it)."""
        with self._lock:
            det = self._by_model.get(model)
            if det is None:
                det = self._by_model[model] = self._factory(self.cfg.for_model(model), download=self._download)
            return det

    def for_kinds(self, kinds: Iterable[str]) -> Detector:
        return self.get(self.model_for(kinds))

    @property
    def default(self) -> Detector:
        """The detector on ``detector.model``."""
        return self.get(self.cfg.model)

    def loaded(self) -> list[Detector]:
        """The detectors created so far, in the order they were."""
        with self._lock:
            return list(self._by_model.values())
