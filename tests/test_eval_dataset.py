"""The shipped evaluation dataset (tests/data/eval, clips from the shared media) through `nonsite eval`:
the real detector, tracker, rules and evidence path over real video and photographs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

# The module's eval fixture runs the whole dataset (34 clips, two models) in its first test's setup: past the
# suite's 300 s per-test limit on a loaded machine (6 errors in both side-by-side clones).
pytestmark = pytest.mark.timeout(2400)

ROOT = Path(__file__).resolve().parents[1]
DATASET = ROOT / "tests" / "data" / "eval"


@pytest.fixture(scope="module")
def scores(tmp_path_factory: pytest.TempPathFactory, media_dir: Path, models_dir: Path) -> tuple[dict[str, Any], str]:
    out = tmp_path_factory.mktemp("eval") / "scores.json"
    env = {**os.environ, "NONSITE_MEDIA_DIR": str(media_dir), "NONSITE_MODELS_DIR": str(models_dir)}
    r = subprocess.run([sys.executable, "-m", "nonsite", "eval", "--dataset", str(DATASET), "--json", str(out)],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=2400)  # a guard, not a target:
    # 34 clips on two models take minutes alone and over 15 min with another suite beside it on 2 cores
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads(out.read_text()), r.stdout


def negatives() -> list[str]:
    return sorted(d.name for d in DATASET.iterdir()
                  if (d / "truth.yaml").is_file() and not yaml.safe_load((d / "truth.yaml").read_text())["episodes"])


def test_the_dataset_has_the_negatives_the_issue_asks_for() -> None:
    names = negatives()
    assert {"negative-highway", "negative-motorcycles-stopline"} <= set(names)
    for name in ("negative-highway", "negative-motorcycles-stopline"):  # zones a naive system would alert on
        kinds = {z["kind"] for z in yaml.safe_load((DATASET / name / "camera.yaml").read_text())["zones"]}
        assert {"no_parking", "no_stray_dogs", "no_vending"} <= kinds


def test_no_alert_on_any_clip_without_a_violation(scores: tuple[dict[str, Any], str]) -> None:
    doc, _ = scores
    by_clip = {c["name"]: c for c in doc["results"]}
    for name in negatives():
        assert by_clip[name]["alerts"] == [], (name, by_clip[name]["alerts"])


def test_real_violations_are_found_on_real_video(scores: tuple[dict[str, Any], str]) -> None:
    doc, _ = scores
    by_clip = {c["name"]: c for c in doc["results"]}
    assert by_clip["parking-lot-timelapse"]["tp"] >= 1  # real CCTV video
    assert by_clip["dog-fence"]["tp"] == 1 and by_clip["dog-fence"]["fp"] == 0  # real video, one dog: one alert
    assert by_clip["vending-night-market-closed"]["tp"] == 1  # the same stalls are legal at 19:30, not at 10:00
    rows = doc["per_type"]
    for t in ("sidewalk_parking", "street_vending", "stray_dog"):
        assert rows[t]["tp"] >= 1, (t, rows[t])
    assert rows["all"]["fp"] == 0, rows["all"]


def test_left_objects_are_found_on_the_composites_and_only_there(scores: tuple[dict[str, Any], str]) -> None:
    doc, _ = scores
    rows = doc["per_type"]
    for t in ("piled_materials", "street_drying", "illegal_posting", "outside_shop"):
        assert (rows[t]["episodes"], rows[t]["tp"], rows[t]["fp"]) == (1, 1, 0), (t, rows[t])
    by_clip = {c["name"]: c for c in doc["results"]}
    negatives_left = [n for n in negatives() if n.startswith("negative-left-")]
    assert len(negatives_left) == 5  # transients, light, a standing person, shadow/shake/rain, real traffic
    assert all(by_clip[n]["alerts"] == [] for n in negatives_left)


def test_mobile_hawker_stops_add_up_and_a_cart_passing_through_is_no_hawker(scores: tuple[dict[str, Any], str]
                                                                           ) -> None:
    doc, _ = scores
    row = doc["per_type"]["mobile_hawker"]
    assert (row["episodes"], row["tp"], row["fp"]) == (1, 1, 0), row
    by_clip = {c["name"]: c for c in doc["results"]}
    assert by_clip["negative-hawker-cart-passing"]["alerts"] == []


def test_cameras_with_vending_or_hawking_zones_run_on_the_street_model(scores: tuple[dict[str, Any], str]) -> None:
    doc, _ = scores
    for c in doc["results"]:
        kinds = {z["kind"] for z in yaml.safe_load((DATASET / c["name"] / "camera.yaml").read_text())["zones"]}
        want = "street-yolo11n" if kinds & {"no_vending", "no_hawking"} else "yolo11n-coco"
        assert c["model"] == want, (c["name"], c["model"])
    assert set(doc["detector"]["models"]) == {"yolo11n-coco", "street-yolo11n"}


def test_report_prints_every_clip_and_the_scores_per_type(scores: tuple[dict[str, Any], str]) -> None:
    doc, out = scores
    for c in doc["results"]:
        assert c["name"] in out
    for t in ("sidewalk_parking", "street_vending", "stray_dog", "piled_materials", "street_drying", "illegal_posting",
              "outside_shop", "mobile_hawker", "all"):
        assert any(line.startswith(t) for line in out.splitlines())
    assert doc["camera_hours"] > 0 and doc["detector"]["name"] == "yolo11n-coco"
