"""Motion-gated detection: the gate on synthetic frames (still -> keep-alive by timestamps, motion in the zones'
region -> every frame, motion elsewhere -> gated), a parked car confirmed under gating with one track id,
and the edge runner keeping gated frames out of the detector's batches."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from edge_helpers import FixedLatencyDetector, camera, config, runner

from nonsite.bus.embedded import EmbeddedBus
from nonsite.bus.events import ModelInfo, ViolationEvent
from nonsite.config import NonsiteConfig
from nonsite.config.edge import GatingConfig
from nonsite.evidence.local import LocalStore
from nonsite.pipeline.detections import make_detections
from nonsite.pipeline.gating import MotionGate, gate_for, zones_region
from nonsite.pipeline.violations import models
from nonsite.pipeline.worker import EdgeWorker, SequenceCounter
from nonsite.streams.base import Frame

FPS = 5.0
T0 = 1_715_000_000.0
ZONE = [[0.25, 0.3], [1.0, 0.3], [1.0, 1.0], [0.25, 1.0]]
CAR = (300.0, 250.0, 520.0, 380.0)


def scene(seed: int = 1) -> np.ndarray:
    """A textured 640x480 street-ish picture (noise, so a moving block really changes pixels)."""
    rng = np.random.default_rng(seed)
    return cv2.GaussianBlur(rng.integers(40, 200, (480, 640, 3), dtype=np.uint8), (7, 7), 0)


def with_block(img: np.ndarray, x: int, y: int, size: int = 40) -> np.ndarray:
    out = img.copy()
    out[y:y + size, x:x + size] = (240, 240, 240)
    return out


def decisions(gate: MotionGate, frames: list[np.ndarray]) -> list[int]:
    return [i for i, f in enumerate(frames) if gate.decide(f, T0 + i / FPS)]


def test_still_frames_are_detected_at_the_keepalive_cadence_by_timestamps() -> None:
    gate = MotionGate(GatingConfig(keepalive_s=2.0, hold_s=1.0))
    img = scene()
    assert decisions(gate, [img] * 51) == [0, 10, 20, 30, 40, 50]  # 10 s at 5 fps: one frame every 2 s
    assert (gate.detected, gate.gated) == (6, 45)
    # the cadence follows the timestamps, not the frame count: at 2 fps the keep-alive is every 4th frame
    slow = MotionGate(GatingConfig(keepalive_s=2.0))
    assert [i for i in range(13) if slow.decide(img, T0 + i / 2.0)] == [0, 4, 8, 12]


def test_sensor_noise_and_jpeg_artefacts_on_a_still_scene_stay_gated() -> None:
    rng = np.random.default_rng(3)
    base = scene().astype(np.float32)

    def noisy() -> np.ndarray:  # sensor noise (sigma 8 grey levels) and JPEG at quality 70, new every frame
        f = np.clip(base + rng.normal(0, 8, base.shape), 0, 255).astype(np.uint8)
        return cv2.imdecode(cv2.imencode(".jpg", f, [cv2.IMWRITE_JPEG_QUALITY, 70])[1], cv2.IMREAD_COLOR)

    gate = MotionGate(GatingConfig(keepalive_s=2.0))
    assert decisions(gate, [noisy() for _ in range(31)]) == [0, 10, 20, 30]


def test_motion_in_the_zones_region_is_detected_every_frame() -> None:
    region = zones_region(models().camera.model_validate(
        {"id": "c", "source": {"url": "x.mp4"}, "zones": [{"id": "z", "kind": "sidewalk", "polygon": ZONE}]}), 0.05)
    assert region == pytest.approx((0.2, 0.25, 1.0, 1.0))
    gate = MotionGate(GatingConfig(keepalive_s=2.0, hold_s=1.0), region)
    base = scene()
    moving = [with_block(base, 200 + 12 * i, 300) for i in range(20)]  # a walker crossing the zone
    still = [moving[-1]] * 15
    got = decisions(gate, moving + still)
    assert got[:20] == list(range(20))  # every moving frame
    # after the motion stops: hold_s (1 s = 5 frames) more, then the keep-alive 2 s after the last detection
    assert got[20:] == [20, 21, 22, 23, 24, 34]


def test_motion_only_outside_the_zones_region_is_gated() -> None:
    gate = MotionGate(GatingConfig(keepalive_s=2.0, hold_s=1.0), (0.2, 0.25, 1.0, 1.0))
    base = scene()
    # something moving along the top-left corner, far from the zone (x < 0.2 of the width, y < 0.25 of the height)
    frames = [with_block(base, 5 + 2 * i, 10, size=30) for i in range(30)]
    assert decisions(gate, frames) == [0, 10, 20]
    # the same motion with the whole frame watched opens the gate
    whole = MotionGate(GatingConfig(keepalive_s=2.0, hold_s=1.0))
    assert len(decisions(whole, frames)) > 20


def test_a_slow_change_accumulates_against_the_last_detected_frame() -> None:
    cfg = GatingConfig(keepalive_s=30.0, hold_s=0.0, pixel_threshold=15.0)
    gate = MotionGate(cfg)
    base = scene().astype(np.int16)
    region = (slice(200, 300), slice(200, 400))
    frames = []
    for i in range(12):  # a patch brightening by 4 grey levels per frame: below the threshold frame to frame
        f = base.copy()
        f[region] += 4 * i
        frames.append(np.clip(f, 0, 255).astype(np.uint8))
    got = decisions(gate, frames)
    assert got[0] == 0 and 1 < len(got) < 12  # seen once it adds up, without the keep-alive (30 s)


def test_gate_for_follows_the_edge_section_and_the_camera_override() -> None:
    cfg = models().config.model_validate({
        "edge": {"gating": {"enabled": True}},
        "cameras": [{"id": "a", "source": {"url": "x.mp4"}}, {"id": "b", "source": {"url": "x.mp4"}, "gating": False}],
    })
    assert gate_for(cfg.cameras[0], cfg) is not None
    assert gate_for(cfg.cameras[1], cfg) is None
    off = cfg.model_copy(update={"edge": cfg.edge.model_copy(update={"gating": GatingConfig(enabled=False)})})
    assert gate_for(cfg.cameras[0], off) is None


# -- the worker: a parked car confirmed under gating ------------------------------------------------------------


def parking_config(gating: bool) -> NonsiteConfig:
    return models().config.model_validate({
        "rules": {"sidewalk_parking": {"dwell_s": 20}},
        "evidence": {"pre_roll_s": 1, "post_roll_s": 0.4, "min_still_gap_s": 0},
        "edge": {"gating": {"enabled": gating, "keepalive_s": 4.0, "hold_s": 1.0, "margin": 0.05}},
        "cameras": [{"id": "cam-1", "source": {"url": "x.mp4"}, "fps": FPS,
                     "zones": [{"id": "walk", "kind": "sidewalk", "polygon": ZONE}]}],
    })


def parked_run(tmp_path: Path, gating: bool) -> tuple[list[ViolationEvent], int, EdgeWorker]:
    """30 s of a still street with a car parked in the zone from the start, a clock ticking in the top-left
    corner (outside the zones' region); the detector (scripted: it finds the car) runs where the gate says."""
    cfg = parking_config(gating)
    cam = cfg.cameras[0]
    bus = EmbeddedBus(tmp_path / "bus.sqlite")
    worker = EdgeWorker(cam, cfg, LocalStore(tmp_path / "evidence"), bus,
                        ModelInfo(name="m", version="1", sha256="0" * 64), SequenceCounter(tmp_path / "seq.json"))
    gate = gate_for(cam, cfg)
    base = scene()
    x1, y1, x2, y2 = (int(v) for v in CAR)
    base[y1:y2, x1:x2] = (40, 40, 220)
    events: list[ViolationEvent] = []
    calls = 0
    try:
        for i in range(int(30 * FPS)):
            img = base.copy()
            img[:30, :60] = (i * 7) % 256  # the clock: changes every frame, far from the zone
            frame = Frame("cam-1", i, T0 + i / FPS, img)
            dets = None
            if gate is None or gate.decide(img, frame.ts):
                calls += 1
                dets = make_detections([CAR], ["car"], confidence=[0.9])
            events += worker.process(frame, dets)
        events += worker.finish()
    finally:
        bus.close()
    return events, calls, worker


def test_a_parked_car_confirms_under_gating_as_without_it_with_one_track(tmp_path: Path) -> None:
    off_events, off_calls, _ = parked_run(tmp_path / "off", gating=False)
    on_events, on_calls, worker = parked_run(tmp_path / "on", gating=True)
    assert off_calls == 150
    assert on_calls == 8  # one frame every 4 s (0, 4, ... 28 s): the clock outside the zones never opens the gate
    assert worker.stats.gated == 150 - on_calls and worker.stats.frames == 150
    (off,), (on,) = off_events, on_events
    assert on.type == off.type == "sidewalk_parking"
    # the dwell clock ran on timestamps across the gated frames: confirmed at the same moment
    assert on.started_at == off.started_at
    assert on.confirmed_at == off.confirmed_at
    assert on.dwell_s == pytest.approx(20.0)
    # one track all along: the car kept its id across gated stretches (4 s) longer than tracker.lost_track_s (3 s)
    assert len(on.track_ids) == 1 and on.track_ids == off.track_ids
    # evidence saw every sampled frame: the pre-roll holds the gated frames too
    assert [round((ts - T0) * FPS) for ts, _ in worker.ring.between(T0 + 29.0, T0 + 30.0)] == [145, 146, 147, 148, 149]


# -- the runner: gated frames never enter a detector batch ------------------------------------------------------


def still_video(path: Path, seconds: float = 4.0, fps: float = 10.0) -> Path:
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (320, 240))
    img = cv2.resize(scene(), (320, 240))
    for _ in range(int(seconds * fps)):
        w.write(img)
    w.release()
    return path


def test_runner_keeps_gated_frames_out_of_the_batches_and_counts_them(tmp_path: Path, models_dir: Path) -> None:
    from nonsite.config import DetectorConfig
    from nonsite.models import create_detector

    video = still_video(tmp_path / "still.avi")
    cams: list[dict[str, Any]] = [camera("still-a", video, fps=5, zones=[{"id": "z", "kind": "sidewalk",
                                                                            "polygon": ZONE}]),
                                  {**camera("still-b", video, fps=5), "gating": False}]
    cfg = config(tmp_path, cams, edge={"gating": {"enabled": True, "keepalive_s": 1.0}})
    det = FixedLatencyDetector(create_detector(DetectorConfig(backend="onnx")), 0.0)
    r = runner(cfg, det, max_batch=4)
    stats = r.run(threading.Event())
    a, b = stats["still-a"], stats["still-b"]
    assert a.frames == b.frames == 20  # every sampled frame went through the worker
    m = r.metrics
    detected_a = m.value("nonsite_frames_detected_total", camera="still-a")
    assert detected_a == 4  # 4 s still at a 1 s keep-alive: frames at 0, 1, 2, 3 s
    assert m.value("nonsite_frames_gated_total", camera="still-a") == a.gated == 16
    assert m.value("nonsite_frames_detected_total", camera="still-b") == 20  # gating: false for this camera
    assert m.value("nonsite_frames_gated_total", camera="still-b") == b.gated == 0
    assert sum(det.calls) == 24  # the detector saw only the frames the gate let through
    assert m.value("nonsite_frames_processed_total", camera="still-a") == 20


# -- nonsite eval: the same clip with gating off and on ---------------------------------------------------------


class ScriptedDetector:
    """Finds one dog in the middle of whatever it is shown, and counts the frames it was asked about."""

    backend = "scripted"

    def __init__(self) -> None:
        from nonsite.models.base import WeightsInfo

        self.weights = WeightsInfo(name="scripted", version="1", sha256="0" * 64, path="")
        self.frames = 0

    def detect(self, images: list[np.ndarray]) -> list[Any]:
        self.frames += len(images)
        out = []
        for im in images:
            h, w = im.shape[:2]
            out.append(make_detections([(w * 0.4, h * 0.4, w * 0.6, h * 0.7)], ["dog"], confidence=[0.9]))
        return out


def test_eval_scores_the_same_alert_with_gating_and_counts_detector_calls(
        tmp_path: Path, media_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from nonsite.pipeline.evaluation import load_clip, run_clip, score

    monkeypatch.setenv("NONSITE_MEDIA_DIR", str(media_dir))
    clip = load_clip(Path(__file__).parent / "data" / "eval" / "dog-road-black")  # a photograph, 8 s at 5 fps
    results = {}
    for on in (False, True):
        cfg = models().config.model_validate({"edge": {"gating": {"enabled": on, "keepalive_s": 2.0}}})
        results[on] = run_clip(clip, cfg, ScriptedDetector(), tmp_path / str(on))  # type: ignore[arg-type]
    off, on_ = results[False], results[True]
    assert (off.frames, off.detector_calls, off.gated) == (41, 41, 0)
    assert (on_.frames, on_.detector_calls, on_.gated) == (41, 5, 36)  # 0, 2, 4, 6, 8 s
    (a_off,), (a_on,) = off.alerts, on_.alerts
    assert (a_on.type, a_on.episode, a_on.confirm_s, a_on.delay_s) == (a_off.type, 0, a_off.confirm_s, a_off.delay_s)
    s = score([on_])
    assert (s["frames"], s["detector_calls"], s["gated_share"]) == (41, 5, round(36 / 41, 4))
