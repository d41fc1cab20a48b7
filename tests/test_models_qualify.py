"""`nonsite models qualify`: each precision's eval against fp32's and its speed on this CPU, which
`detector.openvino.precision: auto` then reads (issue 16: the fastest precision whose eval scores match)."""

from __future__ import annotations

import io
import json
import logging
from dataclasses import replace
from pathlib import Path

import pytest

from nonsite.config.detector import DetectorConfig
from nonsite.models import create_detector
from nonsite.models.precision import cpu_flags, fast_on
from nonsite.models.qualify import (
    build_record,
    cpu_identity,
    eval_difference,
    eval_matches,
    eval_summary,
    load_qualification,
    qualification_path,
    save_record,
)
from nonsite.models.registry import resolve
from nonsite.pipeline.evaluation import ClipResult
from nonsite.pipeline.qualification import qualify_command

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def qdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "qualification"
    monkeypatch.setenv("NONSITE_QUALIFICATION_DIR", str(d))
    return d


def _eval(alerts: list[tuple[str, str, str, float]], tp: int, fp: int, fn: int = 0) -> dict[str, object]:
    return {"per_type": {"stray_dog": {"episodes": tp + fn, "tp": tp, "fp": fp, "fn": fn, "precision": None,
                                       "recall": None, "median_delay_s": None}},
            "alerts": [list(a) for a in alerts]}


FP32 = _eval([("dog-road", "stray_dog", "road", 10.0), ("dog-park", "stray_dog", "park", 6.4)], tp=2, fp=0)


def test_eval_matches_within_one_frame_and_not_beyond() -> None:
    same = _eval([("dog-road", "stray_dog", "road", 10.2), ("dog-park", "stray_dog", "park", 6.4)], tp=2, fp=0)
    late = _eval([("dog-road", "stray_dog", "road", 10.4), ("dog-park", "stray_dog", "park", 6.4)], tp=2, fp=0)
    extra = _eval([("dog-road", "stray_dog", "road", 10.0), ("dog-park", "stray_dog", "park", 6.4),
                   ("negative-highway", "stray_dog", "road", 3.0)], tp=2, fp=1)
    assert eval_matches(FP32, same)
    assert not eval_matches(FP32, late)  # two frames at 5 fps later
    assert not eval_matches(FP32, extra)
    assert eval_difference(FP32, extra) == "stray_dog FP 0 -> 1"


def test_a_record_applies_to_these_weights_on_this_cpu_only(models_dir: Path, qdir: Path, tmp_path: Path) -> None:
    weights = resolve("yolo11n-coco")
    int8 = tmp_path / "m-int8.xml"
    int8.write_text("<net/>", encoding="utf-8")
    int8.with_suffix(".bin").write_bytes(b"calibration one")
    differs = _eval([("dog-road", "stray_dog", "road", 10.0), ("dog-park", "stray_dog", "park", 6.4),
                     ("negative-highway", "stray_dog", "road", 3.0)], tp=2, fp=1)
    rec = build_record(weights, 640, int8_xml=int8, dataset="tests/data/eval",
                       speeds={"fp32": {1: 27.0, 4: 27.4}, "bf16": {1: 30.0, 4: 38.0}, "int8": {1: 33.0, 4: 35.0}},
                       ran={"fp32": "f32", "bf16": "bf16", "int8": "int8"},
                       evals={"fp32": FP32, "bf16": differs, "int8": FP32})
    assert rec["precisions"]["bf16"]["matches_fp32"] is False and rec["precisions"]["int8"]["matches_fp32"] is True
    assert rec["precisions"]["bf16"]["differs"] == "stray_dog FP 0 -> 1"
    assert rec["precisions"]["int8"]["score"] == pytest.approx((33.0 * 35.0) ** 0.5, abs=0.01)
    path = save_record(rec, qualification_path(weights, 640))
    assert path.parent == qdir

    got, note = load_qualification(weights, 640, int8)
    assert got is not None and set(got) == {"fp32", "bf16", "int8"} and "qualified" in note

    # the int8 IR rebuilt (another calibration): its entry no longer applies, the float ones do
    int8.with_suffix(".bin").write_bytes(b"calibration two")
    got, note = load_qualification(weights, 640, int8)
    assert got is not None and "int8" not in got and "rebuilt" in note

    # another CPU: none of it applies (the speed order is the CPU's)
    other = "model name\t: AMD EPYC 7B13\nflags\t\t: fpu avx2 fma\n"
    got, note = load_qualification(weights, 640, int8, cpuinfo=other)
    assert got is None and "another CPU" in note and "nonsite models qualify --model yolo11n-coco" in note

    # other weights of the same name (a retrained model): none of it applies
    got, note = load_qualification(replace(weights, sha256="0" * 64), 640, int8)
    assert got is None and "other weights" in note

    # a damaged file says so, never a traceback
    path.write_text("{not json", encoding="utf-8")
    got, note = load_qualification(weights, 640, int8)
    assert got is None and "unreadable" in note


def test_a_precision_the_cpu_ran_as_f32_is_not_listed_apart(models_dir: Path, qdir: Path) -> None:
    rec = build_record(resolve("yolo11n-coco"), 640, int8_xml=None, dataset="d",
                       speeds={"fp32": {1: 27.0}, "bf16": {1: 27.1}}, ran={"fp32": "f32", "bf16": "f32"},
                       evals={"fp32": FP32})
    assert set(rec["precisions"]) == {"fp32"} and rec["int8_sha256"] is None


def test_qualify_measures_writes_and_auto_runs_the_choice(models_dir: Path, media_dir: Path, qdir: Path,
                                                          tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Two real clips of the eval set, at every float precision this CPU runs natively: the record is written,
    fp32 matches itself, and a detector with `precision: auto` then runs the record's choice and says why."""
    dataset = tmp_path / "eval"
    dataset.mkdir()
    for name in ("dog-road-car", "negative-highway"):
        (dataset / name).symlink_to(ROOT / "tests" / "data" / "eval" / name)
    out = io.StringIO()
    assert qualify_command("yolo11n-coco", dataset=dataset, precisions=["fp32", "bf16"], out=out, min_s=0.3) == 0
    text = out.getvalue()
    weights = resolve("yolo11n-coco")
    rec = json.loads(qualification_path(weights, 640).read_text(encoding="utf-8"))
    natively = [p for p in ("fp32", "bf16") if p in fast_on(cpu_flags())]
    assert set(rec["precisions"]) == set(natively)
    assert rec["cpu"] == json.loads(json.dumps(cpu_identity())) and rec["source_sha256"] == weights.sha256
    fp32 = rec["precisions"]["fp32"]
    assert fp32["matches_fp32"] is True and fp32["score"] > 0 and set(fp32["fps"]) == {"1", "4"}
    assert any(a[0] == "dog-road-car" and a[1] == "stray_dog" for a in fp32["eval"]["alerts"])
    matching = [p for p, q in rec["precisions"].items() if q["matches_fp32"]]
    expected = max(matching, key=lambda p: rec["precisions"][p]["score"])
    assert f"auto now runs {expected}" in text

    with caplog.at_level(logging.INFO, logger="nonsite.models.openvino_backend"):
        det = create_detector(DetectorConfig.model_validate({"backend": "openvino"}))
    assert det.precision == {"fp32": "f32"}.get(expected, expected)  # type: ignore[attr-defined]
    assert "eval matches fp32" in det.precision_reason  # type: ignore[attr-defined]
    assert any("eval matches fp32" in r.getMessage() for r in caplog.records)  # said at start


def test_qualify_reports_bad_input_in_one_line(models_dir: Path, qdir: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    assert qualify_command("yolo11n-coco", dataset=tmp_path, precisions=["fp16"], out=io.StringIO()) == 2
    assert "--precisions: unknown fp16" in capsys.readouterr().err
    assert qualify_command("yolo11n-coco", dataset=tmp_path / "none", precisions=["fp32"], out=io.StringIO()) == 2
    assert "dataset folder not found" in capsys.readouterr().err
    assert not qdir.exists()  # nothing written


def test_qualify_says_why_each_precision_was_not_measured(models_dir: Path, qdir: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """One reason each: a precision this CPU does not run natively, and an int8 that is not built yet."""
    from nonsite.pipeline import qualification

    monkeypatch.setattr(qualification, "fast_on", lambda _flags: ("fp32", "int8"))
    monkeypatch.setattr(qualification, "cached_int8", lambda _w, _s: None)
    out = io.StringIO()
    qualify_command("yolo11n-coco", dataset=tmp_path, precisions=["fp32", "bf16", "int8"], out=out)
    said = out.getvalue()
    assert "not measured: bf16 (this CPU does not run it natively)" in said
    assert "not measured: int8 (no int8 model is built: nonsite models quantize --model yolo11n-coco" in said
    assert "natively, or" not in said


def test_an_alert_may_move_by_one_frame_of_its_own_clip() -> None:
    """A clip sampled at 1 fps cannot tell apart alerts less than 1 s apart: one frame there is 1 s (the street
    model's int8 on an EPYC, 2026-12-06: hawker-cart-three-stops confirmed at 120 s -> 119 s), two are not; a
    5 fps clip keeps 0.2 s."""
    frames = {"frame_s": {"dog-road": 1.0, "dog-park": 0.2}}
    fp32 = FP32 | frames
    one = _eval([("dog-road", "stray_dog", "road", 9.0), ("dog-park", "stray_dog", "park", 6.6)], tp=2, fp=0) | frames
    two = _eval([("dog-road", "stray_dog", "road", 8.0), ("dog-park", "stray_dog", "park", 6.4)], tp=2, fp=0) | frames
    park = _eval([("dog-road", "stray_dog", "road", 10.0), ("dog-park", "stray_dog", "park", 6.8)], tp=2, fp=0)
    assert eval_matches(fp32, one)
    assert not eval_matches(fp32, two)
    assert eval_difference(fp32, two) == "dog-road stray_dog confirmed at 10 s -> 8 s"
    assert not eval_matches(fp32, park)  # two frames of the 5 fps clip
    assert not eval_matches(FP32, one)  # without the clips' frame intervals: 0.2 s


def test_an_eval_summary_holds_each_clips_frame_interval() -> None:
    clip = ClipResult("hawker", "x.mp4", 150, 150.0, [], [], frame_s=1.0)
    summary = eval_summary([clip], {"frames": 150, "detector_calls": 150, "per_type": {}})
    assert summary["frame_s"] == {"hawker": 1.0}


def test_the_difference_names_the_alert_that_moved() -> None:
    """What the log says of the int8 YOLO11n (2026-12-06): the same alerts, two confirmed later."""
    later = _eval([("dog-road", "stray_dog", "road", 12.0), ("dog-park", "stray_dog", "park", 6.4)], tp=2, fp=0)
    assert not eval_matches(FP32, later)
    assert eval_difference(FP32, later) == "dog-road stray_dog confirmed at 10 s -> 12 s"
