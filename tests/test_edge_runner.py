"""The edge runner with many cameras: fair shares of a detector slower than the cameras, each camera's fps
respected, latest-frame semantics for live cameras, and cameras added, changed and removed while the
others keep running. Cameras are the shared media; "live" ones are files paced in real time and looped."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from edge_helpers import DOG, JUNCTION, PARKING, FixedLatencyDetector, Running, camera, config, runner, wait_until

from nonsite.config import CameraConfig, DetectorConfig
from nonsite.models import create_detector
from nonsite.streams import SourceError


@pytest.fixture(scope="module")
def yolo(models_dir: Path):
    return create_detector(DetectorConfig(backend="onnx"))


def accelerator(yolo, latency_s: float) -> FixedLatencyDetector:
    """A detector of fixed speed (see FixedLatencyDetector): the shares below do not depend on how busy the
    test machine is."""
    return FixedLatencyDetector(yolo, latency_s)


def processed(r, cid: str) -> float:
    return r.metrics.value("nonsite_frames_processed_total", camera=cid)


def dropped(r, cid: str) -> float:
    return r.metrics.value("nonsite_frames_dropped_total", camera=cid, where="queue")


def test_a_busy_live_camera_cannot_starve_a_quiet_one(tmp_path: Path, media_dir: Path, yolo) -> None:
    # 20 fps + 2 fps of demand on a detector that manages at most 10 frames/s.
    cfg = config(tmp_path, [camera("busy", media_dir / PARKING, fps=20, live=True),
                            camera("quiet", media_dir / DOG, fps=2, live=True)])
    r = runner(cfg, accelerator(yolo, 0.1), max_batch=1)
    run = Running(r)
    time.sleep(5.0)
    run.stop()
    busy_h, quiet_h = r.run_of("busy").health, r.run_of("quiet").health
    busy, quiet = processed(r, "busy"), processed(r, "quiet")
    # The quiet camera gets every frame it samples (2/s), or half the detector if even that is less;
    # the busy one gets the rest.
    assert quiet_h.frames_sampled >= 8
    assert quiet >= min(quiet_h.frames_sampled - 2, 0.45 * (busy + quiet)), (quiet, busy, quiet_h)
    assert quiet <= 2 * 5.0 + 2  # never faster than its own fps
    assert busy >= quiet - 1
    # The busy camera is behind: it drops its oldest frames, and every sampled frame is accounted for.
    assert dropped(r, "busy") >= 0.3 * busy_h.frames_sampled
    in_queue = len(r.run_of("busy").frames)
    assert processed(r, "busy") + dropped(r, "busy") + in_queue == pytest.approx(busy_h.frames_sampled, abs=2)


def test_equal_demand_gets_equal_shares_under_overload(tmp_path: Path, media_dir: Path, yolo) -> None:
    cams = [camera(f"cam{i}", media_dir / v, fps=10, live=True) for i, v in enumerate((PARKING, DOG, JUNCTION))]
    r = runner(config(tmp_path, cams), accelerator(yolo, 0.1), max_batch=1)
    run = Running(r)
    time.sleep(4.0)
    run.stop()
    shares = [processed(r, f"cam{i}") for i in range(3)]
    assert min(shares) >= 3 and min(shares) >= 0.75 * max(shares), shares
    assert all(dropped(r, f"cam{i}") > 0 for i in range(3))  # 30 fps asked of a 10 fps detector


def test_each_camera_is_detected_at_its_own_fps(tmp_path: Path, media_dir: Path, yolo) -> None:
    cfg = config(tmp_path, [camera("slow", media_dir / DOG, fps=1, live=True),
                            camera("fast", media_dir / PARKING, fps=4, live=True)])
    r = runner(cfg, accelerator(yolo, 0.01))
    run = Running(r)
    wait_until(lambda: processed(r, "slow") >= 1 and processed(r, "fast") >= 1, 10, "first frames")
    p0 = {c: processed(r, c) for c in ("slow", "fast")}
    t0 = time.monotonic()
    time.sleep(4.0)
    dt = time.monotonic() - t0
    rates = {c: (processed(r, c) - p0[c]) / dt for c in ("slow", "fast")}
    run.stop()
    # Each at its own rate (the fast one may get less on a machine too slow for 5 frames/s, never more).
    assert rates["slow"] == pytest.approx(1, abs=0.3) and rates["fast"] <= 4 * 1.15, rates
    assert rates["fast"] >= 2 * rates["slow"], rates


def test_file_cameras_wait_instead_of_dropping_and_share_fairly(tmp_path: Path, media_dir: Path,
                                                                yolo) -> None:
    # Files are read as fast as the detector takes them; one has ten times the frames of the other.
    cfg = config(tmp_path, [camera("many", media_dir / PARKING, fps=10), camera("few", media_dir / PARKING, fps=1)])
    r = runner(cfg, accelerator(yolo, 0.01), max_batch=2)
    stats = r.run(threading.Event())
    assert stats["many"].frames == 81 and stats["few"].frames == 9  # every frame, none dropped
    assert dropped(r, "many") == dropped(r, "few") == 0
    # Each frame of the quiet file is detected as soon as it is decoded (it waits for at most the batch in
    # flight), while the busy file's frames queue up behind each other.
    m = r.metrics

    def wait(cid: str, what: str, **le: str) -> float:
        return m.value(f"nonsite_stage_latency_seconds_{what}", camera=cid, stage="queue", **le)

    assert wait("few", "bucket", le="0.1") == wait("few", "count") == 9
    assert wait("few", "sum") / 9 < wait("many", "sum") / 81


def test_cameras_added_changed_and_removed_while_the_others_run(tmp_path: Path, media_dir: Path,
                                                                yolo) -> None:
    park_zone = [{"id": "bays", "kind": "no_parking", "polygon": [[0, 0.6], [0.8, 0.6], [0.8, 0.9], [0, 0.9]]}]
    cfg = config(tmp_path, [camera("park", media_dir / PARKING, fps=5, live=True, zones=park_zone),
                            camera("dog", media_dir / DOG, fps=5, live=True)])
    r = runner(cfg, accelerator(yolo, 0.01))
    run = Running(r)
    wait_until(lambda: processed(r, "park") >= 3 and processed(r, "dog") >= 3, 10, "first frames")
    park_src, dog_src = r.run_of("park").source, r.run_of("dog").source

    # Add a third camera: it starts, the others are untouched.
    junction = CameraConfig.model_validate(camera("junction", media_dir / JUNCTION, fps=5, live=True))
    assert r.add_camera(junction) == "added"
    wait_until(lambda: processed(r, "junction") >= 3, 10, "frames of the added camera")
    with pytest.raises(ValueError, match="already exists"):
        r.add_camera(junction)

    # New zones for "park": applied live, same connection, same tracker.
    new_zones = [{"id": "lane", "kind": "sidewalk", "polygon": [[0, 0.3], [1, 0.3], [1, 0.5], [0, 0.5]]},
                 {"id": "gate", "kind": "no_vending", "polygon": [[0, 0], [0.2, 0], [0.2, 0.2]]}]
    park = CameraConfig.model_validate(camera("park", media_dir / PARKING, fps=5, live=True, zones=new_zones))
    tracker = r.run_of("park").worker.tracker
    n = processed(r, "park")
    assert r.update_camera(park) == "zones"
    assert r.update_camera(park) == "unchanged"

    def engine_zones() -> list[str]:
        engine = r.run_of("park").worker.engine
        return [z.id for z in engine.zones] if engine is not None else []

    wait_until(lambda: engine_zones() == ["lane", "gate"], 10, "the rule engine on the new zones")
    wait_until(lambda: processed(r, "park") >= n + 3, 10, "frames after the zone change")
    assert r.run_of("park").source is park_src and r.run_of("park").worker.tracker is tracker
    assert [z.id for z in r.run_of("park").camera.zones] == ["lane", "gate"]

    # A changed fps restarts "dog" alone.
    dog_frames = processed(r, "dog")
    park_before = processed(r, "park")
    dog = CameraConfig.model_validate(camera("dog", media_dir / DOG, fps=3, live=True))
    assert r.update_camera(dog) == "restarted"
    assert r.run_of("dog").source is not dog_src and r.run_of("dog").camera.fps == 3
    wait_until(lambda: processed(r, "dog") >= dog_frames + 3, 10, "frames of the restarted camera")
    assert r.run_of("park").source is park_src and processed(r, "park") > park_before

    # A missing file for a changed camera is refused; the camera keeps running as it was.
    broken = CameraConfig.model_validate(camera("dog", tmp_path / "gone.mp4", fps=3, live=True))
    with pytest.raises(SourceError, match="video file not found"):
        r.update_camera(broken)
    assert r.run_of("dog").camera.fps == 3

    # Remove the added camera: it is gone, its counters stay, the others carry on.
    j_frames = processed(r, "junction")
    assert r.remove_camera("junction") == "removed"
    assert r.run_of("junction") is None and "junction" not in {c.id for c in r.cameras}
    park_before = processed(r, "park")
    wait_until(lambda: processed(r, "park") >= park_before + 3, 10, "frames after the removal")
    with pytest.raises(KeyError):
        r.remove_camera("junction")
    stats = run.stop()
    assert processed(r, "junction") == j_frames and stats["junction"].frames == j_frames
    assert stats["dog"].frames == processed(r, "dog")  # summed over the restart
    assert r.metrics.value("nonsite_frames_sampled_total", camera="junction") >= j_frames
