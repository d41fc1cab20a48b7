"""`detector.openvino.precision: auto`: the choice from the CPU's flags and the precisions the model has."""

from __future__ import annotations

import pytest

from nonsite.config import ConfigError
from nonsite.config.detector import DetectorConfig
from nonsite.config.detectors.openvino import OpenVinoSettings
from nonsite.models.precision import INT8_FIRST, choose_precision, cpu_flags, fast_on

XEON_SPR = "fpu sse4_2 avx2 avx512f avx512bw avx512_vnni avx512_bf16 amx_bf16 amx_tile amx_int8"
ICE_LAKE = "fpu sse4_2 avx2 avx512f avx512bw avx512_vnni"
ALDER_LAKE = "fpu sse4_2 avx2 avx_vnni"
EPYC_AVX2 = "fpu sse4_2 avx2 fma"
OLD = "fpu sse4_2"
ALL = ("fp32", "bf16", "int8")
FLOAT = ("fp32", "bf16")


def test_reads_the_flags_of_proc_cpuinfo() -> None:
    info = "processor\t: 0\nmodel name\t: Intel(R) Xeon(R)\nflags\t\t: fpu avx2 amx_int8\n\nprocessor\t: 1\n"
    assert cpu_flags(info) == {"fpu", "avx2", "amx_int8"}
    assert cpu_flags("processor : 0\n") == frozenset()
    assert isinstance(cpu_flags(), frozenset)  # this machine's


@pytest.mark.parametrize(("flags", "available", "expected"), [
    (XEON_SPR, ALL, "bf16"),  # int8 is out of the default preference: its eval did not match fp32
    (XEON_SPR, FLOAT, "bf16"),
    (ICE_LAKE, ALL, "fp32"),  # bf16 is not native there
    (EPYC_AVX2, ALL, "fp32"),
    (OLD, ALL, "fp32"),
    ("", ALL, "fp32"),  # unknown CPU (no /proc/cpuinfo)
])
def test_default_preference_picks_the_fastest_native_precision_that_matches_fp32(
    flags: str, available: tuple[str, ...], expected: str
) -> None:
    chosen, why = choose_precision(flags.split(), available)
    assert chosen == expected
    assert why


@pytest.mark.parametrize(("flags", "available", "expected"), [
    (XEON_SPR, ALL, "int8"),  # AMX: int8 first
    (XEON_SPR, FLOAT, "bf16"),  # no int8 model built yet
    (ICE_LAKE, ALL, "int8"),  # AVX512-VNNI runs int8 natively
    (ICE_LAKE, FLOAT, "fp32"),
    (ALDER_LAKE, ALL, "int8"),  # AVX-VNNI
    (EPYC_AVX2, ALL, "fp32"),  # no VNNI: int8 measured no faster than fp32 on such a CPU (bench/results)
    (OLD, ALL, "fp32"),
])
def test_with_int8_first_it_needs_vnni_or_amx_and_a_built_model(flags: str, available: tuple[str, ...],
                                                                 expected: str) -> None:
    assert choose_precision(flags.split(), available, INT8_FIRST)[0] == expected


def test_says_why_it_skipped_a_faster_precision() -> None:
    chosen, why = choose_precision(XEON_SPR.split(), FLOAT, INT8_FIRST)
    assert chosen == "bf16" and "nonsite models quantize" in why
    chosen, why = choose_precision(ICE_LAKE.split(), FLOAT)
    assert chosen == "fp32" and "amx_bf16" in why


def test_a_preference_without_int8_never_picks_it() -> None:
    """When int8's eval scores do not match fp32 the preference leaves it out; nothing brings it back."""
    for flags in (XEON_SPR, ICE_LAKE, ALDER_LAKE, EPYC_AVX2, OLD):
        assert choose_precision(flags.split(), ALL)[0] != "int8"


def test_fast_on_lists_what_a_cpu_runs_natively() -> None:
    assert fast_on(XEON_SPR.split()) == ["fp32", "bf16", "int8"]
    assert fast_on(OLD.split()) == ["fp32"]


def test_config_accepts_the_precisions_and_auto_by_default() -> None:
    assert DetectorConfig().settings(OpenVinoSettings).precision == "auto"
    legacy = DetectorConfig.model_validate({"precision": "int8"})  # detector.precision of older configs
    assert legacy.settings(OpenVinoSettings).precision == "int8"
    with pytest.raises((ConfigError, ValueError)):
        DetectorConfig.model_validate({"openvino": {"precision": "int4"}})


def _q(**scores: tuple[float, bool]) -> dict[str, dict[str, object]]:
    return {p: {"score": s, "matches_fp32": m} for p, (s, m) in scores.items()}


def test_a_qualification_picks_the_fastest_precision_whose_eval_matches() -> None:
    """The street model on a Xeon (bench, 2026-12-06): int8 matched fp32 and was fastest, bf16 raised two alerts
    fp32 does not. Flags alone would pick bf16."""
    street = _q(fp32=(27.2, True), bf16=(34.1, False), int8=(33.9, True))
    chosen, why = choose_precision(XEON_SPR.split(), ALL, qualified=street, note="qualified 2026-12-06")
    assert chosen == "int8"
    assert "eval matches fp32" in why and "qualified 2026-12-06" in why and "bf16 34.1 eval differs" in why
    coco = _q(fp32=(26.7, True), bf16=(51.3, True), int8=(38.8, True))  # all match: the fastest, bf16
    assert choose_precision(XEON_SPR.split(), ALL, qualified=coco)[0] == "bf16"


def test_a_qualification_never_picks_what_the_model_lacks_or_the_cpu_does_not_run_natively() -> None:
    street = _q(fp32=(27.2, True), bf16=(34.1, False), int8=(33.9, True))
    assert choose_precision(XEON_SPR.split(), FLOAT, qualified=street)[0] == "fp32"  # int8 IR deleted since
    assert choose_precision(EPYC_AVX2.split(), ALL, qualified=street)[0] == "fp32"  # no VNNI / AMX here
    only_bf16_differs = _q(fp32=(27.0, True), bf16=(50.0, False))
    assert choose_precision(XEON_SPR.split(), FLOAT, qualified=only_bf16_differs)[0] == "fp32"


def test_without_a_qualification_the_note_says_how_to_get_one() -> None:
    chosen, why = choose_precision(XEON_SPR.split(), ALL, qualified=None,
                                   note="not qualified on this machine (nonsite models qualify --model m)")
    assert chosen == "bf16" and "nonsite models qualify --model m" in why
