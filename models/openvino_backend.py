"""OpenVINO detector on the same ultralytics YOLO ONNX the ONNX Runtime backend uses.

OpenVINO reads the ONNX directly (no separate IR export needed): a ``.pt`` model is exported to ONNX
once and cached (:mod:`nonsite.models.export`), a ready ``.onnx`` is used as is. Pre- and
post-processing are the ONNX backend's (letterbox, YOLO decoding, class-aware NMS), so both backends
see the same pixels and produce the same kind of detections.

The model is compiled for static input shapes (batch, height, width), one compiled model per shape
seen, kept in a small LRU: a static shape runs markedly faster on CPU than a dynamic one, and a box
sees few shapes (one per camera resolution). A lone frame runs on a model compiled for latency (one request on
every core). A batch of frames (one of each of several cameras) runs, by default (``streams``), as single-frame
requests on a model compiled for throughput: OpenVINO's streams (2 on a 2-core box, each on its share of the cores)
run them side by side, and each frame is letterboxed while the one before runs and decoded while the ones after
run. On a 2-core Xeon that did 7-22 % more frames/s than one request of the batch at bf16 (int8 3 %, fp32 11 %),
with the same detections, and half the memory (two compiled models per frame size instead of four: batch 1 to 4).

OpenVINO chooses the inference precision as ``detector.openvino.precision`` says: fp32 (the same numbers as the
other backends), bf16 (about twice as fast on CPUs with AMX or AVX512-BF16, see bench/), int8 (the NNCF-quantized
IR that ``nonsite models quantize`` builds, :mod:`nonsite.models.quantize`), or auto (the default: the fastest the
CPU supports among those whose eval scores match fp32, as ``nonsite models qualify`` measured on this CPU,
:mod:`nonsite.models.qualify` and :mod:`nonsite.models.precision`; logged at start).
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import supervision as sv

from nonsite.config.detector import DetectorConfig
from nonsite.config.detectors.openvino import OpenVinoSettings
from nonsite.models.base import WeightsInfo
from nonsite.models.postprocess import (
    Letterbox,
    batch_shape,
    decode_yolo,
    prepare_batch,
    prepare_one,
    run_in_batches,
)
from nonsite.models.qualify import auto_precision
from nonsite.models.quantize import cached_int8
from nonsite.models.registry import ResolvedWeights, WeightsError, resolve

log = logging.getLogger(__name__)

MAX_COMPILED = 16
"""Compiled static shapes kept (batch x height x width); the least recently used is dropped beyond."""


def _import_openvino() -> Any:
    try:
        import openvino as ov
    except ImportError:
        raise WeightsError("The openvino backend needs the openvino package; pip install openvino, or set "
                           "detector.backend: onnx.") from None
    return ov


class OpenVinoDetector:
    """YOLO detection with OpenVINO on CPU; the same interface and output as the ONNX backend."""

    backend = "openvino"

    def __init__(self, cfg: DetectorConfig, *, download: bool = True) -> None:
        if cfg.device != "cpu":
            raise WeightsError(f"the openvino backend runs on the CPU; for detector.device {cfg.device} use "
                               "backend onnx (TensorRT / CUDA) or ultralytics")
        ov = _import_openvino()
        self.config = cfg
        resolved = resolve(cfg.model, download=download)
        self.resolved = resolved
        if resolved.family != "yolo":
            raise WeightsError(
                f"Model '{resolved.name}' is a {resolved.family} model whose output this backend cannot decode; "
                f"use a YOLO (ultralytics) model such as yolo11n-coco."
            )
        want = cfg.settings(OpenVinoSettings).precision
        self.precision_reason = "configured"
        int8_path = cached_int8(resolved, cfg.imgsz)
        if want == "auto":
            want, self.precision_reason = auto_precision(resolved, cfg.imgsz, int8_path)
        if want == "int8" and int8_path is None:
            raise WeightsError(f"detector.openvino.precision is int8 but model '{resolved.name}' has no int8 model "
                               f"at imgsz {cfg.imgsz}; build it: nonsite models quantize --model {resolved.name} "
                               f"--imgsz {cfg.imgsz}")
        if resolved.format == "pt":
            from nonsite.models.export import ensure_onnx

            self.onnx_path: Path = ensure_onnx(resolved, cfg.imgsz)
        else:
            self.onnx_path = resolved.path
        model_path = int8_path if want == "int8" and int8_path is not None else self.onnx_path
        self.model_path: Path = model_path
        self._core = ov.Core()
        try:
            self._model = self._core.read_model(str(model_path))
        except Exception as e:  # noqa: BLE001 (OpenVINO raises RuntimeError subclasses of its own)
            raise WeightsError(f"OpenVINO cannot read {self.onnx_path} ({e}); delete it to re-export.") from e
        if len(self._model.inputs) != 1 or len(self._model.outputs) < 1:
            raise WeightsError(f"{self.onnx_path} is not an ultralytics YOLO detection ONNX (one image input).")
        inp, out = self._model.inputs[0].get_partial_shape(), self._model.outputs[0].get_partial_shape()
        if inp.rank.get_length() != 4 or out.rank.get_length() != 3:
            raise WeightsError(
                f"{self.onnx_path} is not an ultralytics YOLO detection ONNX (input {inp}, output {out}; "
                "expected (B, 3, H, W) -> (B, 4 + classes, anchors))."
            )
        dims = [d.get_length() if d.is_static else None for d in inp]
        self.fixed_batch: int | None = dims[0]
        h, w = dims[2], dims[3]
        self.fixed_hw: tuple[int, int] | None = (h, w) if h is not None and w is not None else None
        self.imgsz = max(self.fixed_hw) if self.fixed_hw else cfg.imgsz
        self.stride = 32
        self.class_names: list[str] = _class_names(resolved, self.onnx_path)
        nc = out[1].get_length() if out[1].is_static else None
        if nc is not None and not self.class_names:
            self.class_names = [f"class{i}" for i in range(nc - 4)]
        if nc is not None and nc - 4 != len(self.class_names):
            raise WeightsError(
                f"{self.onnx_path} predicts {nc - 4} classes but model '{resolved.name}' lists "
                f"{len(self.class_names)}; register it with the right class names."
            )
        self._props: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY"}
        if want != "int8":  # int8: the quantized layers run int8, the runtime picks the rest (bf16 on AMX)
            self._props["INFERENCE_PRECISION_HINT"] = {"fp32": "f32", "bf16": "bf16"}[want]
        if cfg.threads:
            self._props["INFERENCE_NUM_THREADS"] = cfg.threads
        streams = cfg.settings(OpenVinoSettings).streams
        self._stream_props: dict[str, Any] | None = None
        """How a batch of several frames runs: as single-frame requests on throughput streams (these properties),
        or, when None, as one request of the whole batch (``streams: 1``, or a model with a fixed batch size)."""
        if streams != 1 and self.fixed_batch is None:
            self._stream_props = {**self._props, "PERFORMANCE_HINT": "THROUGHPUT"}
            if streams > 1:
                self._stream_props["NUM_STREAMS"] = streams
        self._compiled: OrderedDict[tuple[int, int, int], Any] = OrderedDict()
        self._lock = threading.Lock()
        self.weights: WeightsInfo = resolved.info(self.class_names)
        chosen = self._request((1, *self._shape_for_default())).get_compiled_model().get_property(
            "INFERENCE_PRECISION_HINT")
        hint = chosen.to_string() if hasattr(chosen, "to_string") else str(chosen)
        self.precision: str = "int8" if want == "int8" else hint
        """What runs: int8 (the quantized IR), or the floating-point precision OpenVINO compiled (f32, bf16)."""
        log.info("detector: openvino %s precision %s (%s; %s)", resolved.name, self.precision,
                 cfg.settings(OpenVinoSettings).precision, self.precision_reason)

    def _shape_for_default(self) -> tuple[int, int]:
        return self.fixed_hw or (self.imgsz, self.imgsz)

    def _request(self, key: tuple[int, int, int]) -> Any:
        """An infer request of a model compiled for input (batch, h, w); compiled on first use. Batch 0 stands for
        the throughput streams' single-frame requests of (h, w) (:meth:`_streams`: a list of them)."""
        req = self._compiled.get(key)
        if req is not None:
            self._compiled.move_to_end(key)
            return req
        model = self._model.clone()
        model.reshape({model.inputs[0].get_any_name(): [max(1, key[0]), 3, key[1], key[2]]})
        if key[0] == 0:
            req = _StreamRequests(self._core.compile_model(model, "CPU", self._stream_props))
        else:
            req = self._core.compile_model(model, "CPU", self._props).create_infer_request()
        self._compiled[key] = req
        if len(self._compiled) > MAX_COMPILED:
            self._compiled.popitem(last=False)
        log.debug("openvino: compiled %s for input %s", self.onnx_path.name, key)
        return req

    def _streams(self, images: Sequence[np.ndarray]) -> list[sv.Detections]:
        """A batch of frames as single-frame requests, each started as soon as its frame is letterboxed: OpenVINO
        runs them on its throughput streams (several at a time, each on its share of the cores), and each frame's
        output is decoded while the later ones still run. The same input shape for every frame of the batch, so
        each frame's detections are those of the batch as one request."""
        shape = batch_shape(images, self.imgsz, self.stride, self.fixed_hw)
        cfg = self.config
        with self._lock:
            reqs = self._request((0, *shape)).take(len(images))
            lbs: list[Letterbox] = []
            try:
                for im, r in zip(images, reqs, strict=True):
                    blob, lb = prepare_one(im, shape, None if self.fixed_hw else self.imgsz)
                    r.start_async({0: blob})
                    lbs.append(lb)
                out = []
                for r, lb in zip(reqs, lbs, strict=False):
                    r.wait()
                    out.append(decode_yolo(r.get_output_tensor(0).data[0], lb, cfg.confidence, cfg.iou,
                                           self.class_names))
                return out
            finally:  # a bad frame (prepare_one raises) leaves no request running into the next call
                for r in reqs[: len(lbs)]:
                    r.wait()

    def _run(self, images: Sequence[np.ndarray]) -> list[sv.Detections]:
        if len(images) > 1 and self._stream_props is not None:
            return self._streams(images)
        blob, lbs = prepare_batch(images, self.imgsz, self.stride, self.fixed_hw)
        with self._lock:
            n, _, h, w = blob.shape
            req = self._request((n, h, w))
            req.infer({0: blob})
            pred = np.array(req.get_output_tensor(0).data, copy=True)
        cfg = self.config
        return [decode_yolo(pred[i], lbs[i], cfg.confidence, cfg.iou, self.class_names) for i in range(len(images))]

    def detect(self, images: Sequence[np.ndarray]) -> list[sv.Detections]:
        """Detections per BGR uint8 image, boxes in that image's pixels. A batch of several runs as single-frame
        requests on the throughput streams (``detector.openvino.streams``, default), or as one inference per batch
        (``streams: 1``; per ``fixed_batch`` images when the model has a fixed batch size)."""
        return run_in_batches(self._run, images, self.fixed_batch)



class _StreamRequests:
    """Single-frame infer requests of one model compiled for throughput streams, as many as the largest batch seen
    (a batch's frames are all in flight at once; OpenVINO queues them to its streams)."""

    def __init__(self, compiled: Any) -> None:
        self.compiled = compiled
        self.requests: list[Any] = []

    def take(self, n: int) -> list[Any]:
        while len(self.requests) < n:
            self.requests.append(self.compiled.create_infer_request())
        return self.requests[:n]


def _class_names(resolved: ResolvedWeights, onnx_path: Path) -> list[str]:
    """Registered class names, else the ``names`` the ultralytics export wrote into the ONNX metadata."""
    if resolved.classes:
        return list(resolved.classes)
    import onnxruntime as ort

    from nonsite.models.onnx_backend import _class_names as from_meta

    meta = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"]).get_modelmeta()
    return from_meta(resolved, meta.custom_metadata_map)
