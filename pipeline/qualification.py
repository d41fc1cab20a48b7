"""``nonsite models qualify``: measure which precisions of a model match fp32 on the eval set, and how fast each
runs on this CPU, and write the record that ``detector.openvino.precision: auto`` reads
(:mod:`nonsite.models.qualify`: the record, its checks and the comparison of two evals). Here, in the pipeline,
because qualifying a model runs the pipeline: ``nonsite eval`` of the set at each precision."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from nonsite.models.precision import PRECISIONS, cpu_flags, fast_on
from nonsite.models.qualify import (
    BATCHES,
    ROUNDS,
    auto_precision,
    build_record,
    eval_summary,
    qualification_path,
    save_record,
)
from nonsite.models.quantize import cached_int8
from nonsite.models.registry import WeightsError, resolve
from nonsite.pipeline.evaluation import EvalError, evaluate, load_dataset


def dataset_frames(clips: Iterable[Any], n: int = 32, per_clip: int = 8) -> list[np.ndarray]:
    """Up to ``n`` real frames of the eval clips, ``per_clip`` from the start of each, for timing."""
    import cv2

    out: list[np.ndarray] = []
    for clip in clips:
        if clip.video is not None:
            cap = cv2.VideoCapture(str(clip.video))
            try:
                for _ in range(per_clip):
                    ok, frame = cap.read()
                    if not ok:
                        break
                    out.append(frame)
            finally:
                cap.release()
        elif clip.image is not None:
            frame = cv2.imread(str(clip.image))
            if frame is not None:
                out.append(frame)
        if len(out) >= n:
            break
    return out[:n]


def time_batches(det: Any, batches: list[list[np.ndarray]], min_s: float = 0.0) -> tuple[float, int]:
    """Seconds and frames to detect ``batches``, repeated until ``min_s`` has passed (also the bench's timing)."""
    n = 0
    start = time.perf_counter()
    while True:
        for b in batches:
            det.detect(b)
            n += len(b)
        elapsed = time.perf_counter() - start
        if elapsed >= min_s:
            return elapsed, n


def time_precision(det: Any, frames: list[np.ndarray], batch: int, min_s: float) -> float:
    """Frames/s of ``det`` on ``frames`` in batches of ``batch`` (after one untimed pass: OpenVINO compiles per
    shape), repeated for at least ``min_s`` seconds."""
    batches = [frames[i: i + batch] for i in range(0, len(frames), batch)]
    time_batches(det, batches)
    seconds, n = time_batches(det, batches, min_s)
    return n / seconds


def qualify_model(model: str, *, imgsz: int = 640, dataset: Path, precisions: Sequence[str] | None = None,
                  min_s: float = 5.0, progress: Callable[[str], None] | None = None) -> tuple[dict[str, Any], Path]:
    """Measure and write the qualification of ``model``: the eval of ``dataset`` and the speed at each precision
    this CPU runs natively (``precisions`` limits them; int8 only when built), each batch size timed for ``min_s``
    seconds in all (in :data:`ROUNDS` turns). Returns the record and its path."""
    from nonsite.config import NonsiteConfig
    from nonsite.config.detector import DetectorConfig
    from nonsite.models import create_detector

    say = progress or (lambda _m: None)
    weights = resolve(model)
    int8_xml = cached_int8(weights, imgsz)
    asked = list(precisions or ("fp32", "bf16", "int8"))
    if "fp32" not in asked:
        asked.insert(0, "fp32")
    native = fast_on(cpu_flags())
    todo = [p for p in asked if p in native and (p != "int8" or int8_xml is not None)]
    for p in asked:
        if p not in native:
            say(f"not measured: {p} (this CPU does not run it natively)")
        elif p not in todo:
            say(f"not measured: {p} (no int8 model is built: nonsite models quantize --model {weights.name})")
    clips = load_dataset(dataset)
    frames = dataset_frames(clips)
    if not frames:
        raise WeightsError(f"{dataset}: no frame could be read for timing")
    det_cfgs = {p: {"backend": "openvino", "model": weights.name, "imgsz": imgsz, "openvino": {"precision": p}}
                for p in todo}
    detectors = {p: create_detector(DetectorConfig.model_validate(det_cfgs[p])) for p in todo}
    ran = {p: str(getattr(detectors[p], "precision", p)) for p in todo}
    # Timed in turns, ROUNDS times, the best of each kept: a moment of load elsewhere on the box slows one turn of
    # one precision, not the precision.
    speeds: dict[str, dict[int, float]] = {p: {} for p in todo}
    for _ in range(ROUNDS):
        for p in todo:
            for b in BATCHES:
                speeds[p][b] = max(speeds[p].get(b, 0.0), time_precision(detectors[p], frames, b, min_s / ROUNDS))
    for p in todo:
        say(f"{p}: runs {ran[p]}, " + ", ".join(f"{v:.1f} frames/s at batch {b}" for b, v in speeds[p].items()))
    evals: dict[str, dict[str, Any]] = {}
    for p in todo:
        if p != "fp32" and ran[p] == "f32":
            continue
        start = time.perf_counter()
        results, scores = evaluate(clips, NonsiteConfig.model_validate({"detector": det_cfgs[p]}), detectors[p])
        evals[p] = eval_summary(results, scores)
        say(f"{p}: eval of {len(clips)} clips ({scores['frames']} frames) in {time.perf_counter() - start:.0f} s, "
            f"{len(evals[p]['alerts'])} alerts")
    record = build_record(weights, imgsz, int8_xml=int8_xml, dataset=str(dataset), speeds=speeds, ran=ran,
                          evals=evals)
    return record, save_record(record, qualification_path(weights, imgsz))


def qualify_command(model: str, *, imgsz: int = 640, dataset: Path, precisions: list[str],
                    out: TextIO | None = None, min_s: float = 5.0) -> int:
    """``nonsite models qualify``: each precision's eval and speed on this CPU, written where ``precision: auto``
    reads it; prints what was measured and what ``auto`` now picks. 0, or 2 after a one-line error."""
    out = out or sys.stdout
    unknown = [p for p in precisions if p not in PRECISIONS]
    if unknown:
        print(f"error: --precisions: unknown {', '.join(unknown)}; use some of {', '.join(PRECISIONS)}",
              file=sys.stderr)
        return 2
    try:
        record, path = qualify_model(model, imgsz=imgsz, dataset=dataset, precisions=precisions, min_s=min_s,
                                     progress=lambda m: print(m, file=out, flush=True))
        weights = resolve(model)
    except (WeightsError, EvalError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for p, q in sorted(record["precisions"].items(), key=lambda kv: -kv[1]["score"]):
        verdict = "matches fp32" if q["matches_fp32"] else f"differs from fp32 ({q.get('differs', '')})"
        fps = ", ".join(f"{v} at batch {b}" for b, v in q["fps"].items())
        print(f"  {p:5} {q['score']:6.1f} frames/s ({fps}); eval {verdict}", file=out)
    chosen, why = auto_precision(weights, imgsz, cached_int8(weights, imgsz))
    print(f"wrote {path}; detector.openvino.precision: auto now runs {chosen} ({why})", file=out)
    return 0
