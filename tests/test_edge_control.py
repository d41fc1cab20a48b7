"""The console's camera control over a running edge (pipeline/control.py): camera health, the latest picture,
and zone edits saved into the commented config file and applied live."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from edge_helpers import DOG, PARKING, FixedLatencyDetector, Running, runner, wait_until

from nonsite.config import DetectorConfig, load_config
from nonsite.models import create_detector
from nonsite.ops.cameras import CameraControl, CameraStatus
from nonsite.pipeline.control import EdgeCameraControl

CONFIG = """\
# Pilot node, two cameras (and a third one waiting for its cable).
data_dir: data
cameras:
  - id: cam-park      # car park east gate
    name: 停车场东口
    fps: 5
    source: {{url: "{park}", realtime: true, loop: true}}
    location: {{address: 演示路 1 号}}
    zones:
      - id: bays
        name: 禁停区
        kind: no_parking
        polygon: [[0.0, 0.64], [0.78, 0.62], [0.78, 0.8], [0.0, 0.9]]   # drawn on site

  - id: cam-dog
    fps: 5
    source: {{url: "{dog}", realtime: true, loop: true}}

  - id: cam-later
    enabled: false    # not connected yet
    source: {{url: "rtsp://10.0.0.9/stream"}}
"""


@pytest.fixture
def node(tmp_path: Path, media_dir: Path, models_dir: Path):
    path = tmp_path / "node.yaml"
    path.write_text(CONFIG.format(park=media_dir / PARKING, dog=media_dir / DOG), encoding="utf-8")
    yolo = create_detector(DetectorConfig(backend="onnx"))
    r = runner(load_config(path), FixedLatencyDetector(yolo, 0.01))
    run = Running(r)
    yield path, r, EdgeCameraControl(r, path)
    run.stop()


def test_cameras_report_health_zones_and_rate(node) -> None:
    _, r, control = node
    typed: CameraControl = control  # the console's protocol, satisfied structurally
    assert all(callable(getattr(typed, m)) for m in ("cameras", "snapshot", "set_zones"))
    wait_until(lambda: all(s.fps > 0 and s.state == "up" for s in control.cameras()[:2]), 10, "both cameras up")
    wait_until(lambda: r.metrics.value("nonsite_frames_processed_total", camera="cam-park") >= 10, 10, "frames")
    park, dog, later = control.cameras()
    assert all(isinstance(s, CameraStatus) for s in (park, dog, later))
    assert (park.id, park.name, park.address, park.state) == ("cam-park", "停车场东口", "演示路 1 号", "up")
    assert 0 < park.fps <= 5.5  # never above the camera's fps (a busy box gets less)
    assert park.reconnects == 0 and park.last_error is None
    assert park.last_frame_ts is not None
    expected = {"id": "bays", "name": "禁停区", "kind": "no_parking", "dwell_s": None,
                "polygon": [[0.0, 0.64], [0.78, 0.62], [0.78, 0.8], [0.0, 0.9]]}
    assert [{k: z[k] for k in expected} for z in park.zones] == [expected]  # plus the fields' defaults
    assert dog.zones == [] and dog.state == "up"
    assert (later.id, later.state, later.fps, later.last_frame_ts) == ("cam-later", "disabled", 0.0, None)


def test_snapshot_is_the_latest_frame_as_jpeg(node) -> None:
    _, _, control = node
    wait_until(lambda: control.snapshot("cam-park") is not None, 10, "a first frame")
    jpeg = control.snapshot("cam-park")
    assert jpeg is not None and jpeg[:2] == b"\xff\xd8"
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert image.shape == (480, 640, 3) and image.std() > 20
    assert control.snapshot("cam-later") is None
    with pytest.raises(KeyError):
        control.snapshot("cam-nowhere")


def test_set_zones_saves_the_file_and_applies_live(node) -> None:
    path, r, control = node
    wait_until(lambda: r.metrics.value("nonsite_frames_processed_total", camera="cam-dog") >= 3, 10, "frames")
    source = r.run_of("cam-dog").source
    zones = [{"id": "path", "name": "小路", "kind": "no_stray_dogs", "polygon": [[0, 0], [1, 0], [1, 1], [0, 1]],
              "dwell_s": 20}]
    control.set_zones("cam-dog", zones)
    text = path.read_text(encoding="utf-8")
    assert "      - id: path\n        name: 小路\n        kind: no_stray_dogs\n" in text
    for kept in ("# Pilot node", "# car park east gate", "# drawn on site", "# not connected yet"):
        assert kept in text
    assert [z.id for z in load_config(path).cameras[1].zones] == ["path"]
    assert [z.id for z in r.run_of("cam-dog").camera.zones] == ["path"]  # live, at once
    wait_until(lambda: r.run_of("cam-dog").worker.engine is not None
               and [z.id for z in r.run_of("cam-dog").worker.engine.zones] == ["path"], 10, "the new rule engine")
    assert r.run_of("cam-dog").source is source  # no reconnection
    assert control.cameras()[1].zones[0]["dwell_s"] == 20

    before = path.read_bytes()
    with pytest.raises(ValueError, match="cameras\\[1\\].zones\\[0\\].polygon: a zone polygon needs at least 3"):
        control.set_zones("cam-dog", [{"id": "bad", "kind": "no_stray_dogs", "polygon": [[0, 0], [1, 1]]}])
    with pytest.raises(ValueError, match="outside 0..1"):
        control.set_zones("cam-dog", [{"id": "px", "kind": "no_stray_dogs", "polygon": [[0, 0], [640, 0], [0, 480]]}])
    with pytest.raises(KeyError):
        control.set_zones("cam-nowhere", zones)
    assert path.read_bytes() == before and [z.id for z in r.run_of("cam-dog").camera.zones] == ["path"]
