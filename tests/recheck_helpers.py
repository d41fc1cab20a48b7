"""Helpers for the camera re-check tests (docs/recheck.md): a generated street scene with or without the parked
car (or a pile of sacks, for the left-object types), and a detector that reports the scene's car, so an edge
runner's re-check desk can be driven for real."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np

from nonsite.models.base import WeightsInfo
from nonsite.pipeline.detections import make_detections

#: The parked car of the synthetic scene (and of make_sealed's confirmation box).
CAR = (10.0, 20.0, 110.0, 90.0)
ZONE = [{"id": "z-walk", "kind": "no_stray_dogs", "polygon": [[0, 0], [1, 0], [1, 1], [0, 1]]}]


class BrightBoxDetector:
    """Reports the white rectangle of the synthetic scene as a car (wherever it is), and nothing else."""

    backend = "scripted"
    class_names = ["car"]

    def __init__(self) -> None:
        self.weights = WeightsInfo(name="scripted", version="1", sha256="0" * 64, path="")

    def detect(self, images: list[np.ndarray]) -> list[Any]:
        out = []
        for im in images:
            ys, xs = np.nonzero((im > 230).all(axis=2))
            if len(xs) > 200:
                out.append(make_detections([(xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)], ["car"], [0.9]))
            else:
                out.append(make_detections([], []))
        return out


def street() -> np.ndarray:
    """The empty grey street of the synthetic scene (320x240)."""
    img = np.full((240, 320, 3), 110, np.uint8)
    cv2.line(img, (0, 200), (320, 200), (60, 60, 60), 2)
    return img


def draw_pile(img: np.ndarray, box: tuple[float, float, float, float] = CAR) -> np.ndarray:
    """A pile of dark brown sacks with seams over ``box`` (in place; returns ``img``): a left object, coloured
    unlike the street (a white box on a grey street is the same colour at another brightness: a light change)."""
    x1, y1, x2, y2 = (int(v) for v in box)
    cv2.rectangle(img, (x1, y1), (x2, y2), (30, 60, 120), -1)
    for y in range(y1 + 8, y2, 12):
        cv2.line(img, (x1, y), (x2, y), (15, 30, 60), 2)
    return img


def scene(path: Path, with_car: bool, *, pile: bool = False) -> Path:
    """Two seconds of a grey street (10 fps, 320x240), with the parked car or without it (or a pile of sacks where
    the car stands: ``pile``)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (320, 240))
    for i in range(20):
        img = np.full((240, 320, 3), 110, np.uint8)
        cv2.line(img, (0, 200 + i % 3), (320, 200 + i % 3), (60, 60, 60), 2)
        if with_car:
            x1, y1, x2, y2 = (int(v) for v in CAR)
            cv2.rectangle(img, (x1, y1), (x2, y2), (255, 255, 255), -1)
        if pile:
            draw_pile(img)
        writer.write(img)
    writer.release()
    return path
