"""ONNX Runtime detector on an ultralytics YOLO ONNX (exported here from the .pt, or a ready .onnx)."""

from __future__ import annotations

import ast
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import supervision as sv

from nonsite.config.detector import DetectorConfig
from nonsite.models.base import WeightsInfo
from nonsite.models.postprocess import decode_yolo, prepare_batch, run_in_batches
from nonsite.models.registry import ResolvedWeights, WeightsError, resolve

log = logging.getLogger(__name__)


class OnnxDetector:
    """YOLO detection with ONNX Runtime: own letterbox, (B, 4 + nc, N) decoding and class-aware NMS.

    With a ``.pt`` model the ONNX is exported once and cached (see :mod:`nonsite.models.export`); the
    recorded weights are the source ``.pt``. A ready ``.onnx`` of ultralytics format is used as is; a
    fixed input size or batch in the model wins over the config."""

    backend = "onnx"

    def __init__(self, cfg: DetectorConfig, *, download: bool = True) -> None:
        self.config = cfg
        resolved = resolve(cfg.model, download=download)
        self.resolved = resolved
        if resolved.family != "yolo":
            raise WeightsError(
                f"Model '{resolved.name}' is a {resolved.family} model whose output this backend cannot decode; "
                f"use a YOLO (ultralytics) model such as yolo11n-coco."
            )
        if resolved.format == "pt":
            from nonsite.models.export import ensure_onnx

            self.onnx_path: Path = ensure_onnx(resolved, cfg.imgsz)
        else:
            self.onnx_path = resolved.path

        opts = ort.SessionOptions()
        if cfg.threads:
            opts.intra_op_num_threads = cfg.threads
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        providers = execution_providers(cfg.device, ort.get_available_providers(), self.onnx_path.parent)
        try:
            self.session = ort.InferenceSession(str(self.onnx_path), opts, providers=providers)
        except Exception as e:  # noqa: BLE001 (onnxruntime raises its own exception types)
            raise WeightsError(f"ONNX Runtime cannot load {self.onnx_path} ({e}); delete it to re-export.") from e

        inp = self.session.get_inputs()[0]
        out = self.session.get_outputs()[0]
        self._input_name = inp.name
        if len(inp.shape) != 4 or len(out.shape) != 3:
            raise WeightsError(
                f"{self.onnx_path} is not an ultralytics YOLO detection ONNX (input {inp.shape}, output "
                f"{out.shape}; expected (B, 3, H, W) -> (B, 4 + classes, anchors))."
            )
        b, _, h, w = inp.shape
        self.fixed_batch: int | None = b if isinstance(b, int) else None
        self.fixed_hw: tuple[int, int] | None = (h, w) if isinstance(h, int) and isinstance(w, int) else None
        self.imgsz = max(self.fixed_hw) if self.fixed_hw else cfg.imgsz
        if self.fixed_hw and self.imgsz != cfg.imgsz:
            log.info("%s has a fixed input %dx%d; detector.imgsz %d is not used", self.onnx_path.name, h, w, cfg.imgsz)

        meta = self.session.get_modelmeta().custom_metadata_map
        self.stride = int(meta.get("stride", 32))
        self.class_names: list[str] = _class_names(resolved, meta)
        nc = out.shape[1]
        if isinstance(nc, int) and not self.class_names:
            self.class_names = [f"class{i}" for i in range(nc - 4)]
        if isinstance(nc, int) and nc - 4 != len(self.class_names):
            raise WeightsError(
                f"{self.onnx_path} predicts {nc - 4} classes but model '{resolved.name}' lists "
                f"{len(self.class_names)}; register it with the right class names."
            )
        self.weights: WeightsInfo = resolved.info(self.class_names)

    # ----------------------------------------------------------------------------------------------

    def _run(self, images: Sequence[np.ndarray]) -> list[sv.Detections]:
        blob, lbs = prepare_batch(images, self.imgsz, self.stride, self.fixed_hw)
        pred = self._infer(blob)
        cfg = self.config
        return [decode_yolo(pred[i], lbs[i], cfg.confidence, cfg.iou, self.class_names) for i in range(len(images))]

    def _infer(self, blob: np.ndarray) -> np.ndarray:
        """The raw (B, 4 + classes, anchors) output for an NCHW float32 blob."""
        return self.session.run(None, {self._input_name: blob})[0]

    def detect(self, images: Sequence[np.ndarray]) -> list[sv.Detections]:
        """Detections per BGR uint8 image, boxes in that image's pixels; one session.run per batch (per
        ``fixed_batch`` images when the model has a fixed batch size)."""
        return run_in_batches(self._run, images, self.fixed_batch)



def _class_names(resolved: ResolvedWeights, meta: dict[str, str]) -> list[str]:
    if resolved.classes:
        return list(resolved.classes)
    names = meta.get("names")
    if names:
        try:
            parsed = ast.literal_eval(names)
            if isinstance(parsed, dict):
                return [str(parsed[k]) for k in sorted(parsed)]
            return [str(n) for n in parsed]
        except (ValueError, SyntaxError):
            pass
    return []


def execution_providers(device: str, available: list[str], cache_dir: Path) -> list[Any]:
    """ONNX Runtime execution providers for ``detector.device``: ``cpu``, or ``cuda[:N]`` for TensorRT (engines
    cached beside the model, fp16) then CUDA on GPU N, with the CPU as the last resort for unsupported nodes.

    A GPU asked for but not available (onnxruntime without CUDA, no driver) is an error naming what to install,
    never a silent fall-back to the CPU."""
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if not device.startswith("cuda"):
        raise WeightsError(f"detector.device {device!r} is not understood; use 'cpu' or 'cuda:0'")
    index = int(device.partition(":")[2] or 0)
    if "CUDAExecutionProvider" not in available:
        raise WeightsError(f"detector.device {device} needs onnxruntime-gpu with CUDA (available here: "
                           f"{', '.join(available)}); install onnxruntime-gpu or use device: cpu")
    out: list[Any] = []
    if "TensorrtExecutionProvider" in available:
        out.append(("TensorrtExecutionProvider", {
            "device_id": index, "trt_fp16_enable": True, "trt_engine_cache_enable": True,
            "trt_engine_cache_path": str(cache_dir / "trt-cache"),
        }))
    out.append(("CUDAExecutionProvider", {"device_id": index}))
    out.append("CPUExecutionProvider")
    return out
