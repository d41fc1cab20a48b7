"""Which precisions of a model match fp32 on the eval set, and how fast each runs on this CPU.

``detector.openvino.precision: auto`` picks the fastest precision whose ``nonsite eval`` scores match fp32's. Both
halves depend on the model and the machine: on one Xeon the street model's int8 matched fp32 and was its fastest
while its bf16 raised two alerts fp32 does not; YOLO11n's bf16 matched and ran faster than its int8
(bench/results/latest.md, "Precision"). So the choice is measured, not guessed:
``nonsite models qualify --model NAME`` (:mod:`nonsite.pipeline.qualification`; ``make bench`` measures the same
things) runs the eval set (``tests/data/eval`` by default) at every precision this CPU runs natively, times each at
batch 1 and 4 on the set's frames, and writes a *qualification* record (this module) to
``<weights cache>/precision/<model>-<imgsz>.json``.

At start the OpenVINO backend reads the record (:func:`load_qualification`) and, when it is for these weights, this
int8 IR and this CPU, runs the fastest precision whose eval matched (:func:`nonsite.models.precision.choose_precision`).
Without a record it falls back to the CPU's flags (bf16 where native, else fp32; int8 never) and says so in its log
line. A record of another CPU, of other weights or of an int8 IR since rebuilt is not used (the log says which).

"Matches" is :func:`eval_matches`: the same true/false positives and misses per violation type, and every alert
confirmed at the same time within one frame of its clip (a clip sampled at 1 fps cannot tell apart alerts less than
1 s apart), and never less than ``tolerance_s`` (one frame at 5 fps).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from nonsite.models.precision import NEEDS, choose_precision, cpu_flags
from nonsite.models.registry import ResolvedWeights, cache_dir, sha256_file

FORMAT = 2
"""Bumped when the record's meaning changes, so old records are measured again (2: alerts compared within one frame
of their clip, where 1 compared them within 0.2 s whatever the clip's fps)."""
ENV_DIR = "NONSITE_QUALIFICATION_DIR"
TOLERANCE_S = 0.2
"""Alerts confirmed within this of fp32's count as the same (one frame at 5 fps), or within one frame of their clip
where its frames lie further apart."""
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


def int8_sha256(int8_xml: Path | None) -> str | None:
    """The identity of an int8 IR: its weights file (``.bin``), which a new calibration rewrites."""
    if int8_xml is None or not int8_xml.with_suffix(".bin").is_file():
        return None
    return sha256_file(int8_xml.with_suffix(".bin"))


# -- eval results: what is compared ------------------------------------------------------------------------


def eval_summary(results: Sequence[Any], scores: dict[str, Any]) -> dict[str, Any]:
    """What two eval runs are compared on: per type TP / FP / FN (and P, R, delay for the reader), every alert as
    ``[clip, type, zone, confirm_s]`` and each clip's frame interval in seconds (``frame_s``)."""
    per_type = {t: {k: v[k] for k in ("episodes", "tp", "fp", "fn", "precision", "recall", "median_delay_s")}
                for t, v in scores["per_type"].items() if v["episodes"] or v["tp"] or v["fp"]}
    alerts = sorted((r.name, a.type, a.zone, a.confirm_s) for r in results for a in r.alerts)
    return {"frames": scores["frames"], "detector_calls": scores["detector_calls"], "per_type": per_type,
            "alerts": [list(a) for a in alerts], "frame_s": {r.name: r.frame_s for r in results}}


def _same_time(fp32: dict[str, Any], x: list[Any], y: list[Any], tolerance_s: float) -> bool:
    """Alert ``y`` confirmed at the time of fp32's ``x``: within one frame of its clip, and ``tolerance_s`` at least."""
    return abs(x[3] - y[3]) <= max(tolerance_s, fp32.get("frame_s", {}).get(x[0], 0.0)) + 1e-6


def eval_matches(a: dict[str, Any], b: dict[str, Any], tolerance_s: float = TOLERANCE_S) -> bool:
    """The same TP / FP / FN per type, and every alert confirmed at the same time: within one frame of its clip
    (``a``'s ``frame_s``), and ``tolerance_s`` at least."""
    keys = ("tp", "fp", "fn")
    if set(a["per_type"]) != set(b["per_type"]):
        return False
    if any(a["per_type"][t][k] != b["per_type"][t][k] for t in a["per_type"] for k in keys):
        return False
    if len(a["alerts"]) != len(b["alerts"]):
        return False
    return all(x[:3] == y[:3] and _same_time(a, x, y, tolerance_s)
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
        elif not _same_time(fp32, x, y, tolerance_s):
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


def auto_precision(weights: ResolvedWeights, imgsz: int, int8_xml: Path | None) -> tuple[str, str]:
    """``(precision, why)`` of ``detector.openvino.precision: auto`` for these weights on this CPU: the precisions the
    model has (fp32 and bf16 always, int8 once built), this model's qualification when one applies, the CPU's flags
    otherwise (:func:`nonsite.models.precision.choose_precision`)."""
    available = ["fp32", "bf16", *(["int8"] if int8_xml is not None else [])]
    qualified, note = load_qualification(weights, imgsz, int8_xml)
    return choose_precision(cpu_flags(), available, qualified=qualified, note=note)


def _openvino_version() -> str | None:
    try:
        from importlib import metadata

        return metadata.version("openvino")
    except Exception:  # noqa: BLE001 (not installed: the record still says what it can)
        return None
