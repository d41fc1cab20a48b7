"""`nonsite eval` on the issue's dataset layout (DIR/<clip>/video.mp4 + camera.yaml + truth.yaml), and its
one-line errors for a broken dataset."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import pytest

from nonsite.config import ConfigError
from nonsite.pipeline.evaluation import EvalError, load_clip, load_dataset

ROOT = Path(__file__).resolve().parents[1]


def clip(root: Path, name: str, camera: str, truth: str, source: str | None = None) -> Path:
    d = root / name
    d.mkdir(parents=True)
    (d / "camera.yaml").write_text(camera, encoding="utf-8")
    (d / "truth.yaml").write_text(truth, encoding="utf-8")
    if source is not None:
        (d / "source.yaml").write_text(source, encoding="utf-8")
    return d


DOG_ZONE = "fps: 5\nzones:\n  - {id: lane, kind: no_stray_dogs, polygon: [[0, 0], [1, 0], [1, 1], [0, 1]]}\n"


def eval_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "nonsite", "eval", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=600, env={**os.environ, **(env or {})})


def test_video_file_layout_runs_and_scores(tmp_path: Path, media_dir: Path, models_dir: Path) -> None:
    # A real photo of a dog on a road written as a 6 s video.mp4: the layout the issue names.
    data = tmp_path / "ds"
    dog = clip(data, "dog-road", DOG_ZONE + "rules: {stray_dog: {dwell_s: 2}}\n",
               "episodes:\n  - {type: stray_dog, zone: lane, start_s: 0, end_s: 6}\n")
    img = cv2.imread(str(media_dir / "india_road_thela_animal" / "images" / "train_dog_subset" / "img_004.jpg"))
    img = cv2.resize(img, (640, 896))
    out = cv2.VideoWriter(str(dog / "video.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 10, (640, 896))
    for _ in range(60):
        out.write(img)
    out.release()
    # The same video through camera.yaml's source.url, with the whole view a park where dogs are allowed.
    clip(data, "dog-park", "fps: 2\nsource: {url: ../dog-road/video.mp4}\nrules: {stray_dog: {dwell_s: 2}}\n"
         "zones:\n  - {id: lane, kind: no_stray_dogs, polygon: [[0, 0], [1, 0], [1, 1], [0, 1]]}\n"
         "  - {id: park, kind: dogs_allowed, polygon: [[0, 0], [1, 0], [1, 1], [0, 1]]}\n", "episodes: []\n")
    r = eval_cli("--dataset", str(data), "--json", str(tmp_path / "out.json"))
    assert r.returncode == 0, r.stdout + r.stderr
    doc = json.loads((tmp_path / "out.json").read_text())
    by_clip = {c["name"]: c for c in doc["results"]}
    assert by_clip["dog-road"]["tp"] == 1 and by_clip["dog-road"]["fp"] == 0
    assert by_clip["dog-road"]["seconds"] == pytest.approx(6.0, abs=0.3)
    (a,) = by_clip["dog-road"]["alerts"]
    assert a["type"] == "stray_dog" and 2.0 <= a["confirm_s"] <= 3.0 and a["episode"] == 0
    assert by_clip["dog-park"]["alerts"] == []
    dog_row = doc["per_type"]["stray_dog"]
    assert (dog_row["episodes"], dog_row["tp"], dog_row["fp"], dog_row["fn"]) == (1, 1, 0, 0)
    assert dog_row["precision"] == 1.0 and dog_row["recall"] == 1.0
    assert "stray_dog                1    1    0    0     1.000   1.000       0.0" in r.stdout


@pytest.mark.parametrize(
    ("camera", "truth", "source", "expected"),
    [
        (DOG_ZONE, "episodes:\n  - {type: stray_dog, zone: yard, start_s: 0, end_s: 5}\n", None,
         "truth.yaml:2: episodes[0]: zone 'yard' is not in camera.yaml (zones: lane)"),
        (DOG_ZONE, "episodes:\n  - {type: sidewalk_parking, zone: lane, start_s: 0, end_s: 5}\n", None,
         "zone 'lane' is watched by stray_dog, not sidewalk_parking"),
        (DOG_ZONE, "episodes:\n  - {type: stray_dog, zone: lane, start_s: 9, end_s: 5}\n", None,
         "end_s 5.0 is before start_s 9.0"),
        (DOG_ZONE, "episodes:\n  - {type: parking, zone: lane, start_s: 0, end_s: 5}\n", None,
         "truth.yaml:2: episodes[0].type: unknown type 'parking'"),
        (DOG_ZONE.replace("fps: 5", "fps: 5\nzonez: []"), "episodes: []\n", None, "camera.yaml:2: zonez: unknown key"),
        ("zones:\n  - id: lane\n    kind: no_stray_dogs\n    polygon: [[0, 0], [1, 0], [1, 1]]\n"
         "    schedule: [{start: '7', end: '9:00'}]\n", "episodes: []\n", None,
         "camera.yaml:5: zones[0].schedule[0].start: start '7' is not a time of day"),
        (DOG_ZONE, "episodes: []\n", "image: nowhere.jpg\n",
         "source.yaml:1: (top level): a still-image clip needs duration_s"),
        (DOG_ZONE, "episodes: []\n", "image: nowhere.jpg\nduration_s: 5\n", "clip media not found"),
        (DOG_ZONE, "episodes: []\n", None, "no clip: add video.mp4"),
        (DOG_ZONE, "episodes: []\n", "video: ${NONSITE_TEST_NO_SUCH_DIR}/a.mp4\n",
         "environment variable NONSITE_TEST_NO_SUCH_DIR is not set"),
    ],
)
def test_broken_clip_is_one_clear_error(tmp_path: Path, camera: str, truth: str, source: str | None,
                                        expected: str) -> None:
    d = clip(tmp_path, "c1", camera, truth, source)
    with pytest.raises((ConfigError, EvalError)) as e:
        load_clip(d)
    assert expected in str(e.value).replace(str(d) + "/", "")


def test_cli_reports_a_broken_dataset_with_exit_2_before_loading_a_model(tmp_path: Path) -> None:
    clip(tmp_path, "c1", DOG_ZONE, "episodes:\n  - {type: stray_dog, zone: yard, start_s: 0, end_s: 5}\n",
         "image: x.jpg\nduration_s: 5\n")
    (tmp_path / "c1" / "x.jpg").write_bytes(b"")
    r = eval_cli("--dataset", str(tmp_path))
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and "zone 'yard' is not in camera.yaml" in r.stderr
    assert "detector:" not in r.stdout
    r = eval_cli("--dataset", str(tmp_path / "missing"))
    assert r.returncode == 2 and "dataset folder not found" in r.stderr
    with pytest.raises(EvalError, match="no clip folders"):
        load_dataset(tmp_path / "c1")
