"""Which precisions of a model match fp32 on the eval set, and how fast each runs on this CPU.

``detector.openvino.precision: auto`` picks the fastest precision whose ``nonsite eval`` scores match fp32's. Both
halves depend on the model and the machine: on one Xeon the street model's int8 matched fp32 and was its fastest
while its bf16 raised two alerts fp32 does not; YOLO11n's bf16 matched and ran faster than its int8
(bench/results/latest.md, "Precision"). So the choice is measured, not guessed:
``nonsite models qualify --model NAME`` (and ``make bench``, which measures the same things) runs the eval set
(``tests/data/eval`` by default) at every precision this CPU runs natively, times each at batch 1 and 4 on the
set's frames, and writes a *qualification* record to ``<weights cache>/precision/<model>-<imgsz>.json``.

At start the OpenVINO backend reads the record (:func:`load_qualification`) and, when it is for these weights, this
int8 IR and this CPU, runs the fastest precision whose eval matched (:func:`nonsite.models.precision.choose_precision`).
Without a record it falls back to the CPU's flags (bf16 where native, else fp32; int8 never) and says so in its log
line. A record of another CPU, of other weights or of an int8 IR since rebuilt is not used (the log says which).

"Matches" is :func:`eval_matches`: the same true/false positives and misses per violation type, and every alert
confirmed at the same time within ``tolerance_s`` (one frame at 5 fps).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from nonsite.models.precision import NEEDS, cpu_flags, fast_on
from nonsite.models.registry import ResolvedWeights, WeightsError, cache_dir, resolve

log = logging.getLogger(__name__)

FORMAT = 1
"""Bumped when the record's meaning changes, so old records are measured again."""
ENV_DIR = "NONSITE_QUALIFICATION_DIR"
TOLERANCE_S = 0.2
"""Alerts confirmed within this of fp32's count as the same (one frame at 5 fps)."""
BATCHES = (1, 4)
"""Batch sizes timed: single frames (a quiet box) and the OpenVINO backend's preferred batch (a busy one)."""
ROUNDS = 3
"""Turns of timing per precision and batch size (the best is kept)."""


def qualification_dir() -> Path:
    env = os.environ.get(ENV_DIR)
    return Path(env).expanduser() if env else cache_dir() / "precision"


def qualification_path(weights: ResolvedWeights, imgsz: int) -> Path:
    return qualification_dir() / f"{weights.name}-{imgsz}.json"


def cpu_identity(cpuinfo: str | None = None) -> dict[str, Any]:
    """The CPU a speed was measured on: its model name and the flags that decide a precision's speed."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:
            cpuinfo = ""
    name = next((line.partition(":")[2].strip() for line in cpuinfo.splitlines()
                 if line.partition(":")[0].strip() == "model name"), "unknown")
    relevant = {f for needs in NEEDS.values() for f in needs}
    return {"name": name, "flags": sorted(relevant & cpu_flags(cpuinfo)), "cores": os.cpu_count()}


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def int8_sha256(int8_xml: Path | None) -> str | None:
    """The identity of an int8 IR: its weights file (``.bin``), which a new calibration rewrites."""
    if int8_xml is None or not int8_xml.with_suffix(".bin").is_file():
        return None
    return file_sha256(int8_xml.with_suffix(".bin"))


# -- eval results: what is compared ------------------------------------------------------------------------


def eval_summary(results: Sequence[Any], scores: dict[str, Any]) -> dict[str, Any]:
    """What two eval runs are compared on: per type TP / FP / FN (and P, R, delay for the reader) and every
    alert as ``[clip, type, zone, confirm_s]``."""
    per_type = {t: {k: v[k] for k in ("episodes", "tp", "fp", "fn", "precision", "recall", "median_delay_s")}
                for t, v in scores["per_type"].items() if v["episodes"] or v["tp"] or v["fp"]}
    alerts = sorted((r.name, a.type, a.zone, a.confirm_s) for r in results for a in r.alerts)
    return {"frames": scores["frames"], "detector_calls": scores["detector_calls"], "per_type": per_type,
            "alerts": [list(a) for a in alerts]}


def eval_matches(a: dict[str, Any], b: dict[str, Any], tolerance_s: float = TOLERANCE_S) -> bool:
    """The same TP / FP / FN per type, and every alert confirmed at the same time within ``tolerance_s``."""
    keys = ("tp", "fp", "fn")
    if set(a["per_type"]) != set(b["per_type"]):
        return False
    if any(a["per_type"][t][k] != b["per_type"][t][k] for t in a["per_type"] for k in keys):
        return False
    if len(a["alerts"]) != len(b["alerts"]):
        return False
    return all(x[:3] == y[:3] and abs(x[3] - y[3]) <= tolerance_s + 1e-6
               for x, y in zip(a["alerts"], b["alerts"], strict=True))


def eval_difference(fp32: dict[str, Any], other: dict[str, Any], tolerance_s: float = TOLERANCE_S) -> str:
    """How ``other``'s eval differs from fp32's, in a few words (for the log and the CLI)."""
    diffs = []
    types = sorted(set(fp32["per_type"]) | set(other["per_type"]))
    for t in [t for t in types if t != "all"] or types:  # per type; "all" only when nothing else is scored
        a, b = fp32["per_type"].get(t, {}), other["per_type"].get(t, {})
        for k in ("tp", "fp", "fn"):
            if a.get(k, 0) != b.get(k, 0):
                diffs.append(f"{t} {k.upper()} {a.get(k, 0)} -> {b.get(k, 0)}")
    if diffs:
        return "; ".join(diffs)
    if len(fp32["alerts"]) != len(other["alerts"]):
        return f"alerts {len(fp32['alerts'])} -> {len(other['alerts'])}"
    for x, y in zip(fp32["alerts"], other["alerts"], strict=True):
        if x[:3] != y[:3]:
            diffs.append(f"{x[0]} {x[1]} in {x[2]} -> {y[0]} {y[1]} in {y[2]}")
        elif abs(x[3] - y[3]) > tolerance_s + 1e-6:
            diffs.append(f"{x[0]} {x[1]} confirmed at {x[3]:g} s -> {y[3]:g} s")
    return "; ".join(diffs) or "the same"


# -- the record ------------------------------------------------------------------------------------------


def build_record(weights: ResolvedWeights, imgsz: int, *, int8_xml: Path | None, dataset: str,
                 speeds: dict[str, dict[int, float]], ran: dict[str, str], evals: dict[str, dict[str, Any]],
                 tolerance_s: float = TOLERANCE_S) -> dict[str, Any]:
    """The qualification of ``weights`` on this CPU from measured ``speeds`` (precision -> batch -> frames/s),
    what OpenVINO ``ran`` for each precision asked (``f32`` for one this CPU lacks) and each precision's
    :func:`eval_summary`. A precision this CPU ran as f32 computed fp32's numbers: it matches and is not listed
    as a precision of its own."""
    if "fp32" not in evals:
        raise ValueError("a qualification needs fp32's eval: every other precision is compared with it")
    precisions: dict[str, Any] = {}
    for p, fps in speeds.items():
        if p != "fp32" and ran.get(p) == "f32":
            continue
        ev = evals.get(p)
        entry: dict[str, Any] = {"ran": ran.get(p), "fps": {str(b): round(v, 2) for b, v in sorted(fps.items())},
                                 "score": round(speed_score(fps), 2)}
        if ev is None:
            entry.update(matches_fp32=None, eval=None)
        else:
            same = p == "fp32" or eval_matches(evals["fp32"], ev, tolerance_s)
            entry.update(matches_fp32=same, eval={k: ev[k] for k in ("per_type", "alerts")})
            if not same:
                entry["differs"] = eval_difference(evals["fp32"], ev, tolerance_s)
        precisions[p] = entry
    return {"format": FORMAT, "model": weights.name, "imgsz": imgsz, "source_sha256": weights.sha256,
            "int8_sha256": int8_sha256(int8_xml) if "int8" in precisions else None,
            "cpu": cpu_identity(), "openvino": _openvino_version(), "dataset": dataset,
            "tolerance_s": tolerance_s, "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "precisions": precisions}


def speed_score(fps: dict[int, float] | dict[str, float]) -> float:
    """One speed per precision: the geometric mean of its frames/s at the batch sizes timed (the edge runs single
    frames on a quiet box and batches of up to 4 on a busy one; the two orders can differ)."""
    vals = [float(v) for v in fps.values() if v and v > 0]
    return math.exp(sum(math.log(v) for v in vals) / len(vals)) if vals else 0.0


def save_record(record: dict[str, Any], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def load_qualification(weights: ResolvedWeights, imgsz: int, int8_xml: Path | None,
                       cpuinfo: str | None = None) -> tuple[dict[str, dict[str, Any]] | None, str]:
    """``(precisions, note)``: the qualified precisions of the record for these weights on this CPU (each with
    ``score`` and ``matches_fp32``), or None and why no record applies."""
    path = qualification_path(weights, imgsz)
    if not path.is_file():
        return None, f"not qualified on this machine (nonsite models qualify --model {weights.name})"
    try:
        rec = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None, f"{path} is unreadable; run nonsite models qualify --model {weights.name} again"
    redo = f"run nonsite models qualify --model {weights.name} again"
    if rec.get("format") != FORMAT or rec.get("source_sha256") != weights.sha256 or rec.get("imgsz") != imgsz:
        return None, f"the qualification in {path} is of other weights; {redo}"
    here = cpu_identity(cpuinfo)
    if rec.get("cpu", {}).get("name") != here["name"] or rec.get("cpu", {}).get("flags") != here["flags"]:
        return None, f"qualified on another CPU ({rec.get('cpu', {}).get('name')}); {redo}"
    precisions = dict(rec.get("precisions") or {})
    note = f"qualified {rec.get('measured_at', '?')[:10]} on {rec.get('dataset')}"
    if "int8" in precisions and rec.get("int8_sha256") != int8_sha256(int8_xml):
        del precisions["int8"]
        note += f"; the int8 model was rebuilt since (not qualified; {redo})"
    return precisions, note


def _openvino_version() -> str | None:
    try:
        from importlib import metadata

        return metadata.version("openvino")
    except Exception:  # noqa: BLE001 (not installed: the record still says what it can)
        return None


# -- measuring --------------------------------------------------------------------------------------------


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


def time_precision(det: Any, frames: list[np.ndarray], batch: int, min_s: float) -> float:
    """Frames/s of ``det`` on ``frames`` in batches of ``batch`` (after one untimed pass: OpenVINO compiles per
    shape), repeated for at least ``min_s`` seconds."""
    batches = [frames[i: i + batch] for i in range(0, len(frames), batch)]
    for b in batches:
        det.detect(b)
    n, start = 0, time.perf_counter()
    while True:
        for b in batches:
            det.detect(b)
            n += len(b)
        elapsed = time.perf_counter() - start
        if elapsed >= min_s:
            return n / elapsed


def qualify_model(model: str, *, imgsz: int = 640, dataset: Path, precisions: Sequence[str] | None = None,
                  min_s: float = 5.0, progress: Callable[[str], None] | None = None) -> tuple[dict[str, Any], Path]:
    """Measure and write the qualification of ``model``: the eval of ``dataset`` and the speed at each precision
    this CPU runs natively (``precisions`` limits them; int8 only when built), each batch size timed for ``min_s``
    seconds in all (in :data:`ROUNDS` turns). Returns the record and its path."""
    from nonsite.config import NonsiteConfig
    from nonsite.config.detector import DetectorConfig
    from nonsite.models import create_detector
    from nonsite.models.quantize import cached_int8
    from nonsite.pipeline.evaluation import evaluate, load_dataset

    say = progress or (lambda _m: None)
    weights = resolve(model)
    int8_xml = cached_int8(weights, imgsz)
    asked = list(precisions or ("fp32", "bf16", "int8"))
    if "fp32" not in asked:
        asked.insert(0, "fp32")
    todo = [p for p in asked if p in fast_on(cpu_flags()) and (p != "int8" or int8_xml is not None)]
    skipped = [p for p in asked if p not in todo]
    if skipped:
        say(f"not measured: {', '.join(skipped)} (this CPU does not run it natively, or no int8 model is built: "
            f"nonsite models quantize --model {weights.name})")
    clips = load_dataset(dataset)
    frames = dataset_frames(clips)
    if not frames:
        raise WeightsError(f"{dataset}: no frame could be read for timing")
    detectors: dict[str, Any] = {}
    ran: dict[str, str] = {}
    for p in todo:
        det_cfg = {"backend": "openvino", "model": weights.name, "imgsz": imgsz, "openvino": {"precision": p}}
        detectors[p] = create_detector(DetectorConfig.model_validate(det_cfg))
        ran[p] = str(getattr(detectors[p], "precision", p))
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
        det_cfg = {"backend": "openvino", "model": weights.name, "imgsz": imgsz, "openvino": {"precision": p}}
        start = time.perf_counter()
        results, scores = evaluate(clips, NonsiteConfig.model_validate({"detector": det_cfg}), detectors[p])
        evals[p] = eval_summary(results, scores)
        say(f"{p}: eval of {len(clips)} clips ({scores['frames']} frames) in {time.perf_counter() - start:.0f} s, "
            f"{len(evals[p]['alerts'])} alerts")
    record = build_record(weights, imgsz, int8_xml=int8_xml, dataset=str(dataset), speeds=speeds, ran=ran,
                          evals=evals)
    return record, save_record(record, qualification_path(weights, imgsz))
