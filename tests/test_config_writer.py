"""Saving zones into the operator's own YAML: only that camera's zones change; comments, order, quoting and
${VAR} references stay; a bad zone never reaches the disk."""

from __future__ import annotations

import difflib
import os
import shutil
from pathlib import Path

import pytest

from nonsite.config import load_config
from nonsite.config.writer import update_camera_zones

ROOT = Path(__file__).resolve().parents[1]

CONFIG = """\
# Street cameras of district 7 (edited by hand; keep the comments!)
data_dir: data   # relative to this file

detector:
  backend: onnx
  model: yolo11n-coco

cameras:
  # The corner by the market: vendors in the evening.
  - id: cam-market
    name: "菜市场东门"
    source:
      url: "rtsp://viewer:${CAM_MARKET_PASSWORD:-changeme}@10.0.0.7:554/Streaming/Channels/101"
    fps: 5
    zones:
      # Pavement in front of the shops.
      - id: pavement
        name: 东侧人行道
        kind: sidewalk
        polygon: [[0.1, 0.5], [0.9, 0.5], [0.9, 0.7], [0.1, 0.7]]   # drawn on the 2024 snapshot
        dwell_s: 120
      - id: square
        kind: no_vending
        polygon: [[0.0, 0.0], [0.4, 0.0], [0.4, 0.4]]

  - id: cam-park   # park gate
    source: {url: park.mp4, loop: true}
    zones:
      - id: lawn
        kind: no_stray_dogs
        polygon: [[0, 0], [1, 0], [1, 1], [0, 1]]

# Rules are tuned per district.
rules:
  street_vending:
    dwell_s: 300   # five minutes
"""

MOVED = {"id": "pavement", "name": "东侧人行道", "kind": "sidewalk",
         "polygon": [[0.1, 0.55], [0.9, 0.55], [0.9, 0.75], [0.1, 0.75]], "dwell_s": 120}
SQUARE = {"id": "square", "kind": "no_vending", "polygon": [[0.0, 0.0], [0.4, 0.0], [0.4, 0.4]]}


@pytest.fixture
def config(tmp_path: Path) -> Path:
    p = tmp_path / "district7.yaml"
    p.write_text(CONFIG, encoding="utf-8")
    (tmp_path / "park.mp4").write_bytes(b"")  # the loader resolves the path; the file need not be a video
    return p


def changed_lines(before: str, after: str) -> list[str]:
    return [ln for ln in difflib.unified_diff(before.splitlines(), after.splitlines(), lineterm="", n=0)
            if ln[:1] in "+-" and not ln.startswith(("+++", "---"))]


def test_moving_a_polygon_changes_that_line_only(config: Path) -> None:
    update_camera_zones(config, "cam-market", [MOVED, SQUARE])
    after = config.read_text(encoding="utf-8")
    assert changed_lines(CONFIG, after) == [
        "-        polygon: [[0.1, 0.5], [0.9, 0.5], [0.9, 0.7], [0.1, 0.7]]   # drawn on the 2024 snapshot",
        "+        polygon: [[0.1, 0.55], [0.9, 0.55], [0.9, 0.75], [0.1, 0.75]] # drawn on the 2024 snapshot",
    ]
    cfg = load_config(config)
    assert cfg.cameras[0].zones[0].polygon[0] == (0.1, 0.55)


def test_adding_and_removing_zones_keeps_everything_else(config: Path) -> None:
    new = {"id": "bus-stop", "name": "公交站", "kind": "no_parking",
           "polygon": [[0.5, 0.8], [0.7, 0.8], [0.7, 0.95]], "dwell_s": None}
    update_camera_zones(config, "cam-market", [MOVED, new])  # square removed, bus-stop added
    after = config.read_text(encoding="utf-8")
    assert changed_lines(CONFIG, after) == [
        "-        polygon: [[0.1, 0.5], [0.9, 0.5], [0.9, 0.7], [0.1, 0.7]]   # drawn on the 2024 snapshot",
        "+        polygon: [[0.1, 0.55], [0.9, 0.55], [0.9, 0.75], [0.1, 0.75]] # drawn on the 2024 snapshot",
        "-      - id: square",
        "-        kind: no_vending",
        "-        polygon: [[0.0, 0.0], [0.4, 0.0], [0.4, 0.4]]",
        "+      - id: bus-stop",
        "+        name: 公交站",
        "+        kind: no_parking",
        "+        polygon: [[0.5, 0.8], [0.7, 0.8], [0.7, 0.95]]",
    ]
    # Comments, quoting, the ${VAR} reference and the blank line before the next camera are all there.
    for kept in ("# Street cameras of district 7", "# The corner by the market", "# Pavement in front of the shops.",
                 'name: "菜市场东门"', "${CAM_MARKET_PASSWORD:-changeme}", "# park gate", "# five minutes",
                 "\n\n  - id: cam-park"):
        assert kept in after
    cfg = load_config(config)
    assert [z.id for z in cfg.cameras[0].zones] == ["pavement", "bus-stop"]
    assert [z.id for z in cfg.cameras[1].zones] == ["lawn"]


def test_clearing_and_restoring_zones_round_trips_to_the_same_bytes(config: Path) -> None:
    update_camera_zones(config, "cam-market", [])
    cleared = config.read_text(encoding="utf-8")
    assert "    zones: []\n\n  - id: cam-park" in cleared and load_config(config).cameras[0].zones == []
    pavement = {**MOVED, "polygon": [[0.1, 0.5], [0.9, 0.5], [0.9, 0.7], [0.1, 0.7]]}
    update_camera_zones(config, "cam-market", [pavement, SQUARE])
    restored = config.read_text(encoding="utf-8")
    # Only the comments that lived on the removed zones are gone.
    assert changed_lines(CONFIG, restored) == [
        "-      # Pavement in front of the shops.",
        "-        polygon: [[0.1, 0.5], [0.9, 0.5], [0.9, 0.7], [0.1, 0.7]]   # drawn on the 2024 snapshot",
        "+        polygon: [[0.1, 0.5], [0.9, 0.5], [0.9, 0.7], [0.1, 0.7]]",
    ]


def test_same_zones_leave_the_demo_config_byte_identical(tmp_path: Path) -> None:
    demo = tmp_path / "demo.yaml"
    shutil.copy(ROOT / "examples" / "demo.yaml", demo)
    before = demo.read_bytes()
    cfg = load_config(demo)
    for cam in cfg.cameras:
        update_camera_zones(demo, cam.id, [z.model_dump(mode="json") for z in cam.zones])
    assert demo.read_bytes() == before


def test_an_invalid_zone_is_refused_with_the_loaders_message_and_the_file_is_untouched(config: Path) -> None:
    os.chmod(config, 0o640)
    before = config.read_bytes()
    bad = {"id": "square", "kind": "no_vending", "polygon": [[0.0, 0.0], [0.4, 0.0]]}
    with pytest.raises(ValueError) as e:
        update_camera_zones(config, "cam-market", [MOVED, bad])
    msg = str(e.value)
    assert msg.startswith(f"{config}:") and "cameras[0].zones[1].polygon: a zone polygon needs at least 3 points" in msg
    assert config.read_bytes() == before
    with pytest.raises(ValueError, match="outside 0..1"):
        update_camera_zones(config, "cam-market", [{**MOVED, "polygon": [[10, 10], [600, 10], [300, 400]]}])
    with pytest.raises(ValueError, match="zone id 'pavement' appears twice"):
        update_camera_zones(config, "cam-market", [MOVED, MOVED])
    with pytest.raises(ValueError, match="zones\\[0\\].kind"):
        update_camera_zones(config, "cam-market", [{**MOVED, "kind": "parking"}])
    with pytest.raises(KeyError):
        update_camera_zones(config, "cam-nowhere", [MOVED])
    assert config.read_bytes() == before
    assert sorted(p.name for p in config.parent.iterdir()) == ["district7.yaml", "park.mp4"]  # no temp files left
    update_camera_zones(config, "cam-market", [MOVED, SQUARE])
    assert config.stat().st_mode & 0o777 == 0o640  # the replaced file keeps its permissions
