"""Licence-plate reading on a vehicle box, with an offline OCR whose models ship inside its package.

The OCR is RapidOCR (``rapidocr`` on PyPI): PaddleOCR's PP-OCR text detection and recognition models as
ONNX files inside the wheel, run with ONNX Runtime (rapidocr's own default) or OpenVINO (``plates.runtime``: the
same readings, faster on some CPUs, for more memory); nothing is downloaded at run time.

How a plate is read (:meth:`PlateReader.read`):

1. the lower part of the vehicle box (below ``search_top`` of its height) is cut out and upscaled to at
   least ``min_search_width`` pixels (far vehicles are small);
2. the OCR finds text lines in it and reads them; neighbouring lines are also joined (a plate read as
   two pieces, ``京A`` + ``12345``, and two-row plates);
3. each text is normalised (:func:`normalise`: full-width to ASCII, uppercase, separators such as the
   middle dot removed) and must match one of the configured formats (:func:`match_format`); common
   OCR confusions (O/0, I/1, ...) are corrected only where the format demands the other kind of
   character, and only when exactly one correction fits;
4. the most confident match at or above ``min_confidence`` is the reading; otherwise there is none.
   A plate is never guessed.
"""

from __future__ import annotations

import itertools
import logging
import re
import threading
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from nonsite.config.plates import PlatesConfig
from nonsite.models.registry import sha256_file

log = logging.getLogger(__name__)

SEPARATORS = frozenset(" \t\r\n·•・∙⋅.。,，:：;；-‐‑–—_~'\"`|/\\()[]{}")
"""Characters dropped by :func:`normalise` (the middle dot between the office letter and the serial,
spaces, and what OCR reads screws and frame edges as)."""

CONFUSIONS: dict[str, str] = {"O": "0", "Q": "0", "D": "0", "I": "1", "Z": "2", "S": "5", "B": "8", "G": "6"}
"""Letter -> digit pairs OCR confuses on plates; each pair is tried both ways."""
_SWAPS: dict[str, tuple[str, ...]] = {}
for _letter, _digit in CONFUSIONS.items():
    _SWAPS[_letter] = (*_SWAPS.get(_letter, ()), _digit)
    _SWAPS[_digit] = (*_SWAPS.get(_digit, ()), _letter)

MAX_CORRECTIONS = 2
"""Default of ``plates.max_corrections``: a text needing more corrections is not a plate."""


class PlateReaderError(RuntimeError):
    """The OCR cannot be loaded; the message says how to fix it."""


@dataclass(frozen=True)
class PlateReading:
    """A plate read on a vehicle and matched to a configured format."""

    text: str
    """Normalised plate text, e.g. ``京A12345``."""
    confidence: float
    """OCR confidence 0..1 (the least of the joined text lines)."""
    format: str
    """Name of the matched plate format (``standard``, ``new_energy_small``, ...)."""
    crop: np.ndarray = field(repr=False, compare=False)
    """BGR crop of the plate region, from the original image."""
    crop_xyxy: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    """The crop's box in the full image's pixels."""
    raw: str = ""
    """The text as the OCR read it, before normalisation."""
    corrections: int = 0
    """Characters changed to fit the format (O->0, I->1, ...)."""


@dataclass(frozen=True)
class PlateCandidate:
    """One text the OCR read in the search region, and what became of it."""

    raw: str
    text: str
    """Normalised (and corrected when a format matched)."""
    confidence: float
    format: str | None
    """The matched format, None when it matched none."""
    corrections: int
    xyxy: tuple[float, float, float, float]
    """The text's box in the full image's pixels."""


# ------------------------------------------------------------------------------------------------ text


def normalise(text: str) -> str:
    """Full-width to ASCII (NFKC), uppercase, and without separators or spaces: ``'京a·12 345'`` -> ``'京A12345'``."""
    t = unicodedata.normalize("NFKC", text).upper()
    return "".join(ch for ch in t if ch not in SEPARATORS)


def compile_formats(cfg: PlatesConfig) -> list[tuple[str, re.Pattern[str]]]:
    return [(f.name, re.compile(f.pattern)) for f in cfg.formats]


def match_format(
    text: str, formats: Sequence[tuple[str, re.Pattern[str]]], max_corrections: int = MAX_CORRECTIONS
) -> tuple[str, str, int] | None:
    """``(plate, format name, corrections)`` when the normalised ``text`` matches a format, else None.

    The text as read is tried first. Only when it matches no format are confusable characters swapped
    (O<->0, I<->1, Q->0, D<->0, Z<->2, S<->5, B<->8, G<->6): the fewest swaps that make it match win, and
    when different plates fit with that many swaps the reading is ambiguous and dropped."""
    t = normalise(text)
    if not t:
        return None
    for name, rx in formats:
        if rx.fullmatch(t):
            return t, name, 0
    spots = [i for i, ch in enumerate(t) if ch in _SWAPS]
    for k in range(1, min(max_corrections, len(spots)) + 1):
        found: dict[str, str] = {}
        for positions in itertools.combinations(spots, k):
            for repl in itertools.product(*(_SWAPS[t[i]] for i in positions)):
                chars = list(t)
                for i, c in zip(positions, repl, strict=True):
                    chars[i] = c
                cand = "".join(chars)
                for name, rx in formats:
                    if rx.fullmatch(cand):
                        found.setdefault(cand, name)
                        break
        if len(found) == 1:
            (plate, name), = found.items()
            return plate, name, k
        if len(found) > 1:
            log.debug("plate text %r is ambiguous after %d corrections: %s", text, k, sorted(found))
            return None
    return None


# ------------------------------------------------------------------------------------------------ geometry


@dataclass(frozen=True)
class _Line:
    text: str
    score: float
    x1: float
    y1: float
    x2: float
    y2: float

    @property
    def h(self) -> float:
        return self.y2 - self.y1

    @property
    def w(self) -> float:
        return self.x2 - self.x1


def _join(a: _Line, b: _Line) -> _Line:
    return _Line(a.text + b.text, min(a.score, b.score), min(a.x1, b.x1), min(a.y1, b.y1), max(a.x2, b.x2),
                 max(a.y2, b.y2))


def _same_row(a: _Line, b: _Line) -> bool:
    """``b`` continues ``a`` to its right on the same row (a plate read in two pieces)."""
    overlap = min(a.y2, b.y2) - max(a.y1, b.y1)
    if overlap < 0.5 * min(a.h, b.h) or not 0.5 <= a.h / max(b.h, 1e-6) <= 2.0:
        return False
    gap = b.x1 - a.x2
    return -0.3 * a.h <= gap <= 1.5 * max(a.h, b.h) and b.x1 > a.x1


def _stacked(a: _Line, b: _Line) -> bool:
    """``b`` is the lower row of a two-row plate whose upper row is ``a``."""
    overlap = min(a.x2, b.x2) - max(a.x1, b.x1)
    gap = b.y1 - a.y2
    return (
        b.y1 > a.y1 + 0.5 * a.h
        and -0.5 * a.h <= gap <= 0.8 * max(a.h, b.h)
        and overlap >= 0.5 * min(a.w, b.w)
    )


def _candidates(lines: list[_Line]) -> list[_Line]:
    out = list(lines)
    for a, b in itertools.permutations(lines, 2):
        if _same_row(a, b) or _stacked(a, b):
            out.append(_join(a, b))
    return out


# ------------------------------------------------------------------------------------------------ reader


def _check_image(image: np.ndarray) -> None:
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        desc = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise ValueError(f"read() takes a BGR uint8 image of shape (H, W, 3), got {desc}.")


def _openvino_params(ocr: Any) -> dict[str, Any]:
    """rapidocr parameters that run its own ONNX files (those its ONNX Runtime engine runs, checked against the
    sha256 of its model list) on its OpenVINO engine, which would otherwise download OpenVINO models."""
    from rapidocr import EngineType
    from rapidocr.inference_engine.base import FileInfo, InferSession

    out: dict[str, Any] = {}
    for part in ("Det", "Rec"):
        c = ocr.cfg[part]
        info = InferSession.get_model_url(FileInfo(
            engine_type=EngineType.ONNXRUNTIME, ocr_version=c.ocr_version, task_type=c.task_type,
            lang_type=c.lang_type, model_type=c.model_type))
        path = Path(ocr.cfg.Global.model_root_dir) / Path(str(info["model_dir"])).name
        if not path.is_file() or sha256_file(path) != info["SHA256"]:
            raise PlateReaderError(
                f"The OCR model {path} is missing or not the one rapidocr lists (sha256); reinstall rapidocr (its "
                f"wheel carries the models) or set plates.runtime: onnxruntime.")
        out[f"{part}.engine_type"] = EngineType.OPENVINO
        out[f"{part}.model_path"] = str(path)
    return out


def _compile_for(ocr: Any, precision: str, threads: int) -> None:
    """Compile the OCR's OpenVINO models again with the arithmetic and threads asked for: rapidocr compiles them with
    OpenVINO's default, which is bf16 on a CPU with AMX and fp32 elsewhere (its settings cannot name a
    precision)."""
    import openvino as ov

    core = ov.Core()
    for part in (ocr.text_det, ocr.text_rec):
        session = part.session
        compiled = core.compile_model(session.model, "CPU", {
            "INFERENCE_PRECISION_HINT": _OV_PRECISION[precision],
            **({"INFERENCE_NUM_THREADS": threads} if threads else {}),
            # Every search region has its own size: kernels kept per input shape only add memory (measured: no
            # slower without them, and about 40 % less growth over many sizes).
            "CPU_RUNTIME_CACHE_CAPACITY": 0,
        })
        session.session = compiled.create_infer_request()


_OV_PRECISION = {"fp32": "f32", "bf16": "bf16"}


class PlateReader:
    """Reads plates with RapidOCR (models bundled in its wheel, loaded once).

    :meth:`read` is thread-safe: calls are serialised on one OCR instance (a reading runs on ``plates.threads``
    threads: one by default, beside the detector)."""

    def __init__(self, cfg: PlatesConfig | None = None) -> None:
        self.config = cfg or PlatesConfig()
        self._formats = compile_formats(self.config)
        try:
            from rapidocr import RapidOCR
        except ImportError as e:
            raise PlateReaderError(
                f"Plate reading needs the rapidocr package ({e}); install the project's dependencies "
                f"(pip install -e .) or set plates.enabled: false."
            ) from e
        params = {
            "Global.log_level": "error",
            "Global.use_cls": False,  # plates are upright: no 180-degree classifier
            "Global.text_score": 0.3,  # keep weak lines too: min_confidence is applied here, per plate
            "Det.limit_type": "max",  # the region is already scaled for OCR: never upscale it again
            "Det.limit_side_len": 1280,
        }
        if self.config.threads:
            params["EngineConfig.onnxruntime.intra_op_num_threads"] = self.config.threads
            params["EngineConfig.onnxruntime.inter_op_num_threads"] = 1
        try:
            if self.config.runtime == "openvino":
                params.update(_openvino_params(RapidOCR(params=params)))  # a RapidOCR loads its models lazily
            self._ocr = RapidOCR(params=params)
            # Load the detection and recognition models now, not on the first vehicle.
            blank = np.full((48, 160, 3), 255, np.uint8)
            self._ocr(blank, use_det=True, use_cls=False, use_rec=False)
            self._ocr(blank, use_det=False, use_cls=False, use_rec=True)
            if self.config.runtime == "openvino":
                _compile_for(self._ocr, self.config.precision, self.config.threads)
        except PlateReaderError:
            raise
        except Exception as e:  # noqa: BLE001 (rapidocr/onnxruntime/openvino raise many types on a broken install)
            raise PlateReaderError(
                f"The OCR models of rapidocr could not be loaded ({type(e).__name__}: {e}); reinstall rapidocr "
                f"(its wheel carries the models) or set plates.enabled: false."
            ) from e
        self._lock = threading.Lock()

    # -------------------------------------------------------------------------------------------------

    def _region(
        self, image: np.ndarray, vehicle_xyxy: tuple[float, float, float, float]
    ) -> tuple[int, int, int, int] | None:
        h, w = image.shape[:2]
        x1, y1, x2, y2 = (float(v) for v in vehicle_xyxy)
        x1, x2 = max(0.0, min(x1, x2)), min(float(w), max(x1, x2))
        y1, y2 = max(0.0, min(y1, y2)), min(float(h), max(y1, y2))
        top = y1 + self.config.search_top * (y2 - y1)
        rx1, ry1, rx2, ry2 = int(x1), int(top), int(np.ceil(x2)), int(np.ceil(y2))
        if rx2 - rx1 < 16 or ry2 - ry1 < 8:
            return None
        return rx1, ry1, rx2, ry2

    def scan(self, image_bgr: np.ndarray, vehicle_xyxy: tuple[float, float, float, float]) -> list[PlateCandidate]:
        """Every text the OCR reads in the plate search region of the vehicle, matched or not, most
        confident first (for debugging and tests; :meth:`read` keeps the best match)."""
        _check_image(image_bgr)
        region = self._region(image_bgr, vehicle_xyxy)
        if region is None:
            return []
        rx1, ry1, rx2, ry2 = region
        crop = image_bgr[ry1:ry2, rx1:rx2]
        cfg = self.config
        scale = min(max(cfg.min_search_width / crop.shape[1], 1.0), cfg.max_upscale)
        if scale > 1.0:
            crop = cv2.resize(crop, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
        with self._lock:
            res = self._ocr(crop, use_det=True, use_cls=False, use_rec=True)
        boxes = getattr(res, "boxes", None)
        if boxes is None or not res.txts:
            return []
        lines: list[_Line] = []
        for poly, text, score in zip(boxes, res.txts, res.scores, strict=True):
            p = np.asarray(poly, dtype=float).reshape(-1, 2)
            lines.append(
                _Line(
                    str(text), float(score),
                    rx1 + p[:, 0].min() / scale, ry1 + p[:, 1].min() / scale,
                    rx1 + p[:, 0].max() / scale, ry1 + p[:, 1].max() / scale,
                )
            )
        out: list[PlateCandidate] = []
        for c in _candidates(lines):
            m = match_format(c.text, self._formats, cfg.max_corrections)
            out.append(
                PlateCandidate(
                    raw=c.text,
                    text=m[0] if m else normalise(c.text),
                    confidence=c.score,
                    format=m[1] if m else None,
                    corrections=m[2] if m else 0,
                    xyxy=(c.x1, c.y1, c.x2, c.y2),
                )
            )
        out.sort(key=lambda c: (-c.confidence, c.corrections))
        return out

    def read(
        self, image_bgr: np.ndarray, vehicle_xyxy: tuple[float, float, float, float]
    ) -> PlateReading | None:
        """The plate of the vehicle in ``vehicle_xyxy`` (pixels of ``image_bgr``), or None when no text there
        matches a configured format with at least ``min_confidence``."""
        best: PlateCandidate | None = None
        for c in self.scan(image_bgr, vehicle_xyxy):
            if c.format is None or c.confidence < self.config.min_confidence:
                continue
            if best is None or (c.confidence, -c.corrections) > (best.confidence, -best.corrections):
                best = c
        if best is None:
            return None
        h, w = image_bgr.shape[:2]
        x1, y1, x2, y2 = best.xyxy
        pad = self.config.crop_padding * (y2 - y1)
        cx1, cy1 = max(0, int(x1 - pad)), max(0, int(y1 - pad))
        cx2, cy2 = min(w, int(np.ceil(x2 + pad))), min(h, int(np.ceil(y2 + pad)))
        return PlateReading(
            text=best.text,
            confidence=round(best.confidence, 4),
            format=best.format or "",
            crop=image_bgr[cy1:cy2, cx1:cx2].copy(),
            crop_xyxy=(float(cx1), float(cy1), float(cx2), float(cy2)),
            raw=best.raw,
            corrections=best.corrections,
        )


_readers: dict[str, PlateReader] = {}
_readers_lock = threading.Lock()


def get_reader(cfg: PlatesConfig | None = None) -> PlateReader:
    """One shared :class:`PlateReader` per distinct configuration (the OCR loads once per process)."""
    cfg = cfg or PlatesConfig()
    key = cfg.model_dump_json()
    with _readers_lock:
        reader = _readers.get(key)
        if reader is None:
            reader = _readers[key] = PlateReader(cfg)
        return reader


def read_plate(
    image_bgr: np.ndarray, vehicle_xyxy: tuple[float, float, float, float], cfg: PlatesConfig | None = None
) -> PlateReading | None:
    """:meth:`PlateReader.read` on the shared reader for ``cfg`` (see :func:`get_reader`)."""
    return get_reader(cfg).read(image_bgr, vehicle_xyxy)
