"""The detector interface every backend implements."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import supervision as sv


@dataclass(frozen=True)
class WeightsInfo:
    """What the evidence records about the model (name, version, sha256)."""

    name: str
    version: str
    sha256: str
    path: str
    classes: list[str] = field(default_factory=list)


class Detector(Protocol):
    backend: str
    weights: WeightsInfo
    class_names: list[str]
    """Index -> class name (COCO 80 for the shipped weights)."""

    def detect(self, images: Sequence[np.ndarray]) -> list[sv.Detections]:
        """Detect objects in BGR uint8 images; one :class:`supervision.Detections` per image, boxes in
        pixels of that image, ``class_id``, ``confidence`` set and ``data['class_name']`` filled."""
