"""One detector per weights in use: a camera with vending zones runs on the street model (detector.zone_models),
the others on detector.model; each camera's frames go to its own detector, one pass per frame."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import supervision as sv
from edge_helpers import DOG, FULL, PARKING, camera, config, runner

from nonsite.config import ConfigError
from nonsite.config.detector import DetectorConfig
from nonsite.models import CameraDetectors
from nonsite.models.base import WeightsInfo
from nonsite.models.postprocess import make_detections


class Recording:
    """Finds nothing; records the shapes of the frames it was given."""

    backend = "onnx"

    def __init__(self, cfg: DetectorConfig, download: bool = True) -> None:
        self.weights = WeightsInfo(cfg.model, "test", "0" * 64, cfg.model)
        self.class_names = ["person"]
        self.shapes: list[tuple[int, ...]] = []

    def detect(self, images: Sequence[np.ndarray]) -> list[sv.Detections]:
        self.shapes += [im.shape for im in images]
        return [make_detections(np.zeros((0, 4)), np.zeros(0), np.zeros(0, int), self.class_names) for _ in images]


def test_zone_models_pick_the_street_model_for_vending_cameras_only() -> None:
    cfg = DetectorConfig()
    assert cfg.model_for(["sidewalk", "no_stray_dogs"]) == "yolo11n-coco"
    assert cfg.model_for(["sidewalk", "no_vending"]) == "street-yolo11n"
    assert cfg.model_for(["no_hawking"]) == "street-yolo11n"
    assert DetectorConfig(zone_models={}).model_for(["no_vending"]) == "yolo11n-coco"
    with pytest.raises(ValueError, match="unknown zone kind 'no_vendng'"):
        DetectorConfig(zone_models={"no_vendng": "street-yolo11n"})


def test_a_typo_in_zone_models_is_one_line_with_file_and_line(tmp_path: Path) -> None:
    from nonsite.pipeline.violations import load_config

    f = tmp_path / "c.yaml"
    f.write_text("detector:\n  zone_models:\n    no_vendng: street-yolo11n\n", encoding="utf-8")
    with pytest.raises(ConfigError) as e:
        load_config(f)
    assert str(e.value).startswith(f"{f}:") and "no_vendng" in str(e.value)


def test_each_camera_runs_on_the_detector_its_zones_call_for(tmp_path: Path, media_dir: Path) -> None:
    vending = [{"id": "square", "kind": "no_vending", "polygon": FULL}]
    cfg = config(tmp_path, [camera("park", media_dir / PARKING, fps=2),
                            camera("market", media_dir / DOG, fps=2, zones=vending)])
    made: list[Recording] = []

    def factory(dc: DetectorConfig, download: bool = True) -> Any:
        made.append(Recording(dc, download))
        return made[-1]

    detectors = CameraDetectors(cfg.detector, factory=factory)
    r = runner(cfg, detectors)
    assert r.run_of("park").detector.weights.name == "yolo11n-coco"
    assert r.run_of("market").detector.weights.name == "street-yolo11n"
    import threading

    stats = r.run(threading.Event())
    by_name = {d.weights.name: d for d in made}
    assert set(by_name) == {"yolo11n-coco", "street-yolo11n"}  # each loaded once
    assert set(by_name["yolo11n-coco"].shapes) == {(480, 640, 3)}  # the car park's frames only
    assert set(by_name["street-yolo11n"].shapes) == {(360, 360, 3)}  # the dog clip's frames only
    assert len(by_name["yolo11n-coco"].shapes) == stats["park"].frames
    assert len(by_name["street-yolo11n"].shapes) == stats["market"].frames


def test_tracks_get_ids_at_low_frame_rates_and_survive_a_missed_frame() -> None:
    """The tracker keeps ids at 1 fps too (a hawker camera sampled once a second): ``trackers`` counts its lost-track
    buffer in 30 fps frames; counted in camera frames, a 1 fps camera never confirmed a track."""
    from nonsite.config.detector import TrackerConfig
    from nonsite.pipeline.detections import make_detections
    from nonsite.pipeline.tracking import Tracker

    for fps in (1.0, 2.0, 5.0):
        t = Tracker(TrackerConfig(), fps)
        ids = []
        for k in range(6):
            seen = k != 3  # missed once: within lost_track_s (3 s) at every rate
            d = make_detections([[100, 100, 200, 300]] if seen else [], ["person"] if seen else [],
                                confidence=[0.9] if seen else [])
            out = t.update(d, 1000 + k / fps)
            ids.append(int(out.tracker_id[0]) if len(out) else None)
        assert ids[0] == -1 and ids[1] >= 0, (fps, ids)  # confirmed on its second frame
        assert ids[1:3] == [ids[1]] * 2 and ids[4:] == [ids[1]] * 2, (fps, ids)  # same id after the miss
