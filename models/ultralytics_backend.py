"""Detector on an ultralytics ``.pt`` checkpoint through ultralytics/PyTorch (CPU, or CUDA when configured)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import supervision as sv

from nonsite.config.detector import DetectorConfig
from nonsite.models.base import WeightsInfo
from nonsite.models.postprocess import make_detections
from nonsite.models.registry import WeightsError, resolve


def load_yolo(path: str) -> Any:
    """``ultralytics.YOLO(path)``, after making torchvision importable (see :mod:`torch_compat`)."""
    from nonsite.models.torch_compat import ensure_torchvision_ops

    ensure_torchvision_ops()
    from ultralytics import YOLO

    return YOLO(path, task="detect")


class UltralyticsDetector:
    """``YOLO.predict`` on a batch of BGR images with the config's imgsz, confidence, iou and device."""

    backend = "ultralytics"

    def __init__(self, cfg: DetectorConfig, *, download: bool = True) -> None:
        self.config = cfg
        resolved = resolve(cfg.model, download=download)
        self.resolved = resolved
        if resolved.format != "pt":
            raise WeightsError(
                f"The ultralytics backend needs a .pt checkpoint, but model '{resolved.name}' is {resolved.path.name}; "
                f"set detector.backend: onnx for ONNX models."
            )
        if cfg.threads:
            import torch

            torch.set_num_threads(cfg.threads)
        try:
            self.model = load_yolo(str(resolved.path))
        except Exception as e:  # noqa: BLE001 (torch/ultralytics raise many types for a bad checkpoint)
            raise WeightsError(
                f"ultralytics cannot load {resolved.path} ({type(e).__name__}: {e}); check it is a YOLO .pt "
                f"checkpoint (or re-fetch it)."
            ) from e
        names = self.model.names
        self.class_names: list[str] = [str(names[i]) for i in sorted(names)]
        self.imgsz = cfg.imgsz
        self.weights: WeightsInfo = resolved.info(self.class_names)

    def detect(self, images: Sequence[np.ndarray]) -> list[sv.Detections]:
        images = list(images)
        if not images:
            return []
        for im in images:
            if not isinstance(im, np.ndarray) or im.ndim != 3 or im.shape[2] != 3 or im.dtype != np.uint8:
                desc = f"{im.dtype} {im.shape}" if isinstance(im, np.ndarray) else type(im).__name__
                raise ValueError(f"detect() takes BGR uint8 images of shape (H, W, 3), got {desc}.")
        cfg = self.config
        results = self.model.predict(
            images,
            imgsz=cfg.imgsz,
            conf=cfg.confidence,
            iou=cfg.iou,
            device=cfg.device,
            batch=len(images),
            verbose=False,
        )
        out: list[sv.Detections] = []
        for r in results:
            b = r.boxes
            out.append(
                make_detections(
                    b.xyxy.cpu().numpy(), b.conf.cpu().numpy(), b.cls.cpu().numpy().astype(int), self.class_names
                )
            )
        return out
