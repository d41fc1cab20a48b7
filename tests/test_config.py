"""The config file: validation errors name file, line, key and fix; the schema is published."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from nonsite.config import ConfigError, load_config, mask_url
from nonsite.pipeline.violations import config_schema

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "c.yaml"
    p.write_text(text, encoding="utf-8")
    return p


def test_demo_config_is_valid(media_dir: Path) -> None:
    cfg = load_config(ROOT / "examples" / "demo.yaml")
    assert {c.id for c in cfg.cameras} >= {"cam-carpark-01", "cam-fence-02"}
    for c in cfg.cameras:
        assert Path(c.source.url).is_file(), c.source.url


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("detector:\n  backend: onnx\n  modle: x\n", ":3: detector.modle: unknown key"),
        ("cameras:\n  - id: a\n    source: {url: a.mp4}\n    zones:\n      - id: z\n        kind: sidewalk\n"
         "        polygon: [[0, 0], [1, 1]]\n", ":7: cameras[0].zones[0].polygon: a zone polygon needs at least 3"),
        ("cameras:\n  - id: a\n    source: {url: a.mp4}\n    zones:\n      - id: z\n        kind: sidewalk\n"
         "        polygon: [[0, 0], [640, 0], [0, 480]]\n", "outside 0..1; polygons use normalized"),
        ("cameras:\n  - id: a\n    source: {url: 'rtsp://u:${NONSITE_TEST_UNSET_PW}@h/x'}\n",
         ":3: cameras[0].source.url: environment variable NONSITE_TEST_UNSET_PW is not set"),
        ("timezone: Mars/Olympus\n", ":1: timezone: unknown time zone"),
        ("cameras: [\n", "not valid YAML"),
        ("cameras:\n  - id: a\n    source: {url: a.mp4}\n  - id: a\n    source: {url: b.mp4}\n", "appears twice"),
    ],
)
def test_bad_values_are_reported_with_file_line_key_and_fix(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_config(write(tmp_path, text))
    assert str(tmp_path / "c.yaml") in str(e.value)
    assert expected in str(e.value)


def test_cli_reports_bad_config_in_one_line_with_exit_2(tmp_path: Path) -> None:
    p = write(tmp_path, "cameras:\n  - id: a\n    source: {url: a.mp4}\n    zones:\n      - id: z\n"
                        "        kind: sidewalk\n        polygon: [[0, 0], [1, 1]]\n")
    r = subprocess.run([sys.executable, "-m", "nonsite", "run", "--config", str(p), "--exit-when-done"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr
    assert "polygon" in r.stderr and "at least 3 points" in r.stderr
    assert not (tmp_path / "data").exists()  # nothing half-written


def test_missing_video_is_reported_before_anything_is_written(tmp_path: Path, models_dir: Path) -> None:
    p = write(tmp_path, "data_dir: out\ncameras:\n  - id: a\n    source: {url: nowhere.mp4}\n")
    r = subprocess.run([sys.executable, "-m", "nonsite", "run", "--config", str(p), "--exit-when-done"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert "video file not found" in r.stderr and "nowhere.mp4" in r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "out").exists()


def test_env_expansion_and_relative_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAM_PW", "s3cret")
    monkeypatch.delenv("NONSITE_DATA_DIR", raising=False)
    cfg = load_config(write(tmp_path, "data_dir: d\ncameras:\n  - id: a\n    source: {url: 'rtsp://admin:${CAM_PW}@10.0.0.1/s'}\n"
                                      "  - id: b\n    source: {url: '${NOPE:-clips}/b.mp4'}\n"))
    assert cfg.data_dir == str(tmp_path / "d")
    assert cfg.cameras[0].source.url == "rtsp://admin:s3cret@10.0.0.1/s"
    assert mask_url(cfg.cameras[0].source.url) == "rtsp://admin:***@10.0.0.1/s"
    assert cfg.cameras[1].source.url == str(tmp_path / "clips" / "b.mp4")


def test_every_field_has_a_description_and_the_published_schema_is_current() -> None:
    schema = config_schema()

    def walk(node: dict, where: str) -> None:
        for name, prop in node.get("properties", {}).items():
            assert prop.get("description"), f"{where}.{name} has no description"

    walk(schema, "root")
    for name, d in schema["$defs"].items():
        walk(d, name)
    published = ROOT / "docs" / "config.schema.json"
    assert json.loads(published.read_text(encoding="utf-8")) == schema, "run `make schema` and commit it"
