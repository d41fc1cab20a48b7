"""Post-training int8 quantization of a YOLO detector for OpenVINO (NNCF), calibrated on real frames.

``nonsite models quantize --model NAME`` (or :func:`ensure_int8`) reads the model's ONNX (a ``.pt`` is exported
once, :mod:`nonsite.models.export`), runs it over a few hundred frames of the shared media (the clips of
``$NONSITE_MEDIA_DIR``, sampled evenly, letterboxed exactly as the detector does), and writes an OpenVINO IR with
int8 weights and activations to ``<cache>/int8/<name>-<imgsz>-int8.xml`` (``.bin`` beside it and ``.json``
recording the source sha256, imgsz, calibration frames and tools' versions). The detection head's box decoding
(the DFL, the anchor arithmetic and the sigmoid) stays in floating point, as ultralytics does it: quantizing it
costs box accuracy for no speed.

The OpenVINO backend runs it with ``detector.openvino.precision: int8`` (or ``auto`` on a CPU with AMX-INT8 /
VNNI, :mod:`nonsite.models.precision`).
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from nonsite.models.export import _lock, ensure_onnx
from nonsite.models.postprocess import prepare_batch
from nonsite.models.registry import ResolvedWeights, WeightsError, cache_dir, resolve

log = logging.getLogger(__name__)

INT8_FORMAT_VERSION = 1
"""Bumped when the quantization settings change, so old cached IRs are redone."""
DEFAULT_FRAMES = 300
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


@dataclass
class QuantizeResult:
    path: Path
    source: ResolvedWeights
    imgsz: int
    frames: int
    seconds: float
    bytes: int
    media: list[str] = field(default_factory=list)


def int8_paths(weights: ResolvedWeights, imgsz: int) -> tuple[Path, Path]:
    base = cache_dir() / "int8" / f"{weights.name}-{imgsz}-int8"
    return base.with_suffix(".xml"), base.with_suffix(".json")


def cached_int8(weights: ResolvedWeights, imgsz: int) -> Path | None:
    """The int8 IR of these weights at ``imgsz`` in the cache, or None when missing or stale (other weights)."""
    xml, meta_path = int8_paths(weights, imgsz)
    if not (xml.is_file() and xml.with_suffix(".bin").is_file() and meta_path.is_file()):
        return None
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    ok = (meta.get("source_sha256") == weights.sha256 and meta.get("imgsz") == imgsz
          and meta.get("format_version") == INT8_FORMAT_VERSION)
    return xml if ok else None


def media_dir() -> Path:
    d = os.environ.get("NONSITE_MEDIA_DIR")
    if not d or not Path(d).is_dir():
        raise WeightsError("int8 calibration needs real frames: set NONSITE_MEDIA_DIR to the shared media folder.")
    return Path(d)


def calibration_frames(media: Path, n: int) -> tuple[list[np.ndarray], list[str]]:
    """``n`` BGR frames spread evenly over the videos (and a share of the photographs) directly in ``media``."""
    videos = sorted(p for p in media.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
    images = sorted(p for p in media.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not videos and not images:
        raise WeightsError(f"no videos or images in {media} to calibrate on")
    frames: list[np.ndarray] = []
    used: list[str] = []
    for p in images:
        im = cv2.imread(str(p), cv2.IMREAD_COLOR)
        if im is not None:
            frames.append(im)
            used.append(p.name)
    per_video = max(1, (n - len(frames)) // max(1, len(videos)))
    for p in videos:
        cap = cv2.VideoCapture(str(p))
        total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) or per_video
        step = max(1, total // per_video)
        got = 0
        i = 0
        while got < per_video:
            ok = cap.grab()
            if not ok:
                break
            if i % step == 0:
                ok, f = cap.retrieve()
                if ok:
                    frames.append(f)
                    got += 1
            i += 1
        cap.release()
        if got:
            used.append(p.name)
    return frames[:n], used


def _ignored_scope(model: Any) -> Any:
    """The detection head's decoding (``/model.<last>/`` arithmetic, its DFL, sigmoids) kept in float."""
    import nncf

    names = [op.get_friendly_name() for op in model.get_ops()]
    heads = [int(m.group(1)) for n in names if (m := re.search(r"/model\.(\d+)/", n))]
    if not heads:
        return nncf.IgnoredScope(types=["Sigmoid"], validate=False)
    head = max(heads)
    return nncf.IgnoredScope(
        patterns=[rf".*/model\.{head}/.*(Add|Sub|Mul|Div).*", rf".*/model\.{head}/dfl.*"],
        types=["Sigmoid"], validate=False)


def quantize_model(model: str, *, imgsz: int = 640, frames: int = DEFAULT_FRAMES,
                   media: Path | None = None) -> QuantizeResult:
    """Build (always) the int8 IR of ``model`` at ``imgsz`` into the cache; see the module docstring."""
    try:
        import nncf
        import openvino as ov
    except ImportError:
        raise WeightsError("int8 quantization needs the nncf and openvino packages (pyproject: nncf).") from None
    resolved = resolve(model)
    if resolved.family != "yolo":
        raise WeightsError(f"Model '{resolved.name}' is a {resolved.family} model; only YOLO models are quantized.")
    onnx_path = ensure_onnx(resolved, imgsz) if resolved.format == "pt" else resolved.path
    if onnx_path.suffix != ".onnx":
        raise WeightsError(f"{onnx_path} is not an ONNX model; quantize the .pt or .onnx of '{resolved.name}'.")
    started = time.perf_counter()
    images, used = calibration_frames(media or media_dir(), frames)
    core = ov.Core()
    ov_model = core.read_model(str(onnx_path))
    dims = [d.get_length() if d.is_static else None for d in ov_model.inputs[0].get_partial_shape()]
    fixed_hw = (dims[2], dims[3]) if dims[2] is not None and dims[3] is not None else None

    def transform(image: np.ndarray) -> np.ndarray:
        blob, _ = prepare_batch([image], imgsz, 32, fixed_hw)
        return blob

    dataset = nncf.Dataset(images, transform)
    log.info("quantizing %s at %d on %d frames of %s", resolved.name, imgsz, len(images), ", ".join(used))
    quantized = nncf.quantize(ov_model, dataset, preset=nncf.QuantizationPreset.MIXED, subset_size=len(images),
                              ignored_scope=_ignored_scope(ov_model))
    xml, meta_path = int8_paths(resolved, imgsz)
    xml.parent.mkdir(parents=True, exist_ok=True)
    with _lock(xml.with_suffix(".lock")):
        tmp = xml.with_name(xml.stem + ".tmp.xml")
        ov.save_model(quantized, str(tmp), compress_to_fp16=False)
        tmp.with_suffix(".bin").replace(xml.with_suffix(".bin"))
        tmp.replace(xml)
        seconds = time.perf_counter() - started
        meta = {
            "source": resolved.name, "source_sha256": resolved.sha256, "source_file": str(onnx_path), "imgsz": imgsz,
            "format_version": INT8_FORMAT_VERSION, "calibration_frames": len(images), "calibration_media": used,
            "preset": "mixed", "nncf": metadata.version("nncf"), "openvino": metadata.version("openvino"),
            "built_at": datetime.now(UTC).isoformat(timespec="seconds"), "seconds": round(seconds, 1),
        }
        meta_path.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    size = xml.stat().st_size + xml.with_suffix(".bin").stat().st_size
    return QuantizeResult(xml, resolved, imgsz, len(images), seconds, size, used)


def ensure_int8(model: str, *, imgsz: int = 640, frames: int = DEFAULT_FRAMES) -> Path:
    """The cached int8 IR of ``model``, built first when missing."""
    found = cached_int8(resolve(model), imgsz)
    return found if found is not None else quantize_model(model, imgsz=imgsz, frames=frames).path
