"""OpenVINO detector on an ultralytics YOLO model: an OpenVINO IR (``.xml`` + ``.bin``), an ONNX export, or a
``.pt`` (exported to ONNX once and cached, then compiled by OpenVINO).

Same letterbox, decoding and NMS as the ONNX Runtime backend (:class:`OnnxDetector`); only the inference
runtime differs. On the Intel CPUs here OpenVINO runs YOLO11n faster than ONNX Runtime at the same fp32
precision (see /work/shared/models/README.md and ``detector.precision`` for bf16)."""

from __future__ import annotations

import ast
import logging
import threading
from pathlib import Path

import numpy as np
import yaml

from nonsite.config.detector import DetectorConfig
from nonsite.models.base import WeightsInfo
from nonsite.models.onnx_backend import OnnxDetector
from nonsite.models.registry import WeightsError, resolve

log = logging.getLogger(__name__)

PRECISION_HINTS = {"fp32": "f32", "bf16": "bf16"}


class OpenVinoDetector(OnnxDetector):
    """YOLO detection with OpenVINO on the CPU (pre/post-processing shared with :class:`OnnxDetector`)."""

    backend = "openvino"

    def __init__(self, cfg: DetectorConfig, *, download: bool = True) -> None:
        try:
            import openvino as ov
        except ImportError as e:
            raise WeightsError(
                f"detector.backend openvino needs the openvino package ({e}); pip install openvino, or use "
                f"detector.backend: onnx."
            ) from e
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

            self.model_path: Path = ensure_onnx(resolved, cfg.imgsz)
        else:
            self.model_path = resolved.path
        self.onnx_path = self.model_path

        core = ov.Core()
        props: dict[str, object] = {
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": PRECISION_HINTS[getattr(cfg, "precision", "fp32")],
        }
        if cfg.threads:
            props["INFERENCE_NUM_THREADS"] = cfg.threads
        try:
            model = core.read_model(str(self.model_path))
            self.compiled = core.compile_model(model, "CPU", props)
        except Exception as e:  # noqa: BLE001 (OpenVINO raises RuntimeError subclasses of its own)
            raise WeightsError(
                f"OpenVINO cannot load {self.model_path} ({type(e).__name__}: {e}); export the model again "
                f"(nonsite models export) or use detector.backend: onnx."
            ) from e

        inp, out = model.inputs[0], model.outputs[0]
        ishape, oshape = inp.get_partial_shape(), out.get_partial_shape()
        if ishape.rank.get_length() != 4 or oshape.rank.get_length() != 3:
            raise WeightsError(
                f"{self.model_path} is not an ultralytics YOLO detection model (input {ishape}, output {oshape}; "
                f"expected (B, 3, H, W) -> (B, 4 + classes, anchors))."
            )
        dims = [d.get_length() if d.is_static else None for d in ishape]
        b, _, h, w = dims
        self.fixed_batch = b
        self.fixed_hw = (h, w) if h is not None and w is not None else None
        self.imgsz = max(self.fixed_hw) if self.fixed_hw else cfg.imgsz
        meta = _metadata(self.model_path)
        self.stride = int(meta.get("stride", 32))
        self.class_names = list(resolved.classes) or _names(meta)
        nc = oshape[1].get_length() if oshape[1].is_static else None
        if nc is not None and not self.class_names:
            self.class_names = [f"class{i}" for i in range(nc - 4)]
        if nc is not None and nc - 4 != len(self.class_names):
            raise WeightsError(
                f"{self.model_path} predicts {nc - 4} classes but model '{resolved.name}' lists "
                f"{len(self.class_names)}; register it with the right class names."
            )
        self.weights: WeightsInfo = resolved.info(self.class_names)
        self._local = threading.local()

    def _infer(self, blob: np.ndarray) -> np.ndarray:
        req = getattr(self._local, "request", None)
        if req is None:  # one infer request per thread: requests are not shared across threads
            req = self._local.request = self.compiled.create_infer_request()
        req.infer({0: blob})
        return np.array(req.get_output_tensor(0).data, copy=True)


def _metadata(path: Path) -> dict[str, object]:
    """ultralytics' metadata (names, stride): ``metadata.yaml`` beside an IR, the metadata of an ONNX."""
    side = path.with_name("metadata.yaml")
    if path.suffix == ".xml" and side.is_file():
        try:
            data = yaml.safe_load(side.read_text(encoding="utf-8"))
            if isinstance(data, dict):
                return data
        except (OSError, yaml.YAMLError) as e:
            log.debug("cannot read %s: %s", side, e)
    if path.suffix == ".onnx":
        try:
            import onnx

            return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
        except Exception as e:  # noqa: BLE001 (onnx missing or an unreadable file: names come from elsewhere)
            log.debug("cannot read the metadata of %s: %s", path, e)
    return {}


def _names(meta: dict[str, object]) -> list[str]:
    names = meta.get("names")
    if isinstance(names, str):
        try:
            names = ast.literal_eval(names)
        except (ValueError, SyntaxError):
            return []
    if isinstance(names, dict):
        return [str(names[k]) for k in sorted(names)]
    if isinstance(names, list):
        return [str(n) for n in names]
    return []
