"""Which inference precision the OpenVINO detector runs when ``detector.openvino.precision`` is ``auto``.

A pure choice. When the model has been qualified on this CPU (``nonsite models qualify``, :mod:`nonsite.models.qualify`:
each precision's eval on ``tests/data/eval`` against fp32's, and its speed here): the fastest precision whose eval
matched. Otherwise from the CPU's instruction-set flags (``/proc/cpuinfo``) and the precisions the model has
(fp32 and bf16 always, from the same ONNX; int8 once ``nonsite models quantize`` has built its IR): the first
precision of :data:`PREFERENCE` that the model has and the CPU runs fast.

:data:`PREFERENCE` is the order of measured speed on this project's CPUs, limited to precisions whose
``nonsite eval`` scores on ``tests/data/eval`` match fp32's (bench/README.md, "Precision"). A precision the CPU
lacks the instructions for is never chosen: int8 without VNNI or AMX ran no faster than fp32 here, and OpenVINO
runs a bf16 request as f32 on a CPU without BF16 instructions.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

PRECISIONS = ("fp32", "bf16", "int8")

PREFERENCE = ("bf16", "fp32")
"""The order without a qualification: bf16 (about twice fp32's speed where native) before fp32. int8 is left out:
whether a calibration matches fp32 differs by model and by build (on the eval clips one NNCF int8 YOLO11n raised a
false alert that fp32 does not, 2026-12-05, another confirmed two alerts later, 2026-12-06, while the street model's
int8 matched), so only a qualification brings it in."""
INT8_FIRST = ("int8", "bf16", "fp32")
"""The order when int8's eval matches fp32: int8 is the fastest on CPUs with VNNI or AMX."""

NEEDS: dict[str, tuple[str, ...]] = {
    "fp32": (),
    "bf16": ("amx_bf16", "avx512_bf16"),
    "int8": ("amx_int8", "avx512_vnni", "avx_vnni"),
}
"""CPU flags of which any one makes the precision fast (none needed: always fast). int8 needs VNNI (AVX512 or AVX:
the u8 x s8 multiply-add in one instruction) or AMX tiles: on an AVX2-only CPU (an AMD EPYC here, bench/results)
the int8 model ran no faster than fp32, so it is not chosen there. bf16 without AVX512-BF16 or AMX is not native:
OpenVINO runs f32 instead."""


def cpu_flags(cpuinfo: str | None = None) -> frozenset[str]:
    """The ``flags`` of the first CPU in ``cpuinfo`` (default: this machine's ``/proc/cpuinfo``); empty when
    unknown (another OS), which leaves fp32."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:
            return frozenset()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def fast_on(flags: Iterable[str]) -> list[str]:
    """The precisions this CPU runs fast, in :data:`PRECISIONS` order."""
    have = set(flags)
    return [p for p in PRECISIONS if not NEEDS[p] or have.intersection(NEEDS[p])]


def choose_precision(flags: Iterable[str], available: Iterable[str],
                     preference: Iterable[str] = PREFERENCE,
                     qualified: Mapping[str, Mapping[str, Any]] | None = None,
                     note: str = "") -> tuple[str, str]:
    """``(precision, why)``.

    With ``qualified`` (the precisions of this model's qualification on this CPU, :mod:`nonsite.models.qualify`:
    each with its ``score`` in frames/s and whether its eval ``matches_fp32``): the fastest one whose eval matched
    that the model has and the CPU runs fast. Without: the first of ``preference`` that the model has
    (``available``) and the CPU runs fast (``flags``); fp32 when none is. ``note`` (why no qualification applies,
    or where it comes from) is added to the reason."""
    flags = frozenset(flags)
    have = set(available)
    fast = fast_on(flags)
    if qualified:
        ranked = sorted(qualified, key=lambda p: -float(qualified[p].get("score") or 0.0))  # fastest first
        best = next((p for p in ranked if qualified[p].get("matches_fp32") and p in have and p in fast), None)
        if best is not None:
            listed = "; ".join(
                f"{p} {float(qualified[p].get('score') or 0):.1f}"
                + ("" if qualified[p].get("matches_fp32") else f" eval differs: {qualified[p].get('differs', '?')}")
                for p in ranked)
            return best, f"the fastest whose eval matches fp32 ({note + '; ' if note else ''}frames/s: {listed})"
    for p in preference:
        if p in have and p in fast:
            need = [f for f in NEEDS[p] if f in flags]
            how = f"the CPU has {', '.join(need)}" if need else "runs everywhere"
            order = list(preference)
            skipped = order[: order.index(p)]
            notes = []
            for q in skipped:
                if q not in have:
                    notes.append(f"{q}: no {q} model built (nonsite models quantize)" if q == "int8"
                                 else f"{q}: not available")
                elif q not in fast:
                    notes.append(f"{q}: the CPU lacks {' / '.join(NEEDS[q])}")
            if note:
                notes.append(note)
            return p, how + (f"; {'; '.join(notes)}" if notes else "")
    return "fp32", "nothing faster is both available and supported by this CPU" + (f"; {note}" if note else "")
