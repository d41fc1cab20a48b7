"""The edge runner with many cameras: fair shares of a detector slower than the cameras, each camera's fps
respected, latest-frame semantics for live cameras, and cameras added, changed and removed while the
others keep running. Cameras are the shared media; "live" ones are files paced in real time and looped.

No test here compares wall-clock times (a loaded machine would fail them): fairness is checked on the
scheduler's decisions (who had a frame waiting, who was served), fps on the frames' own timestamps (video
time), and the rest as counts. Rates and latencies are measured in bench/.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from edge_helpers import DOG, JUNCTION, PARKING, FixedLatencyDetector, Running, camera, config, runner, wait_until

from nonsite.config import CameraConfig, DetectorConfig
from nonsite.models import create_detector
from nonsite.pipeline.scheduler import RoundRobin
from nonsite.pipeline.worker import EdgeWorker
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


@pytest.fixture
def batches(monkeypatch: pytest.MonkeyPatch) -> list[tuple[frozenset[str], list[str]]]:
    """Every batch the runner's scheduler hands out: (the cameras with a frame waiting just before, the
    cameras served, in order)."""
    seen: list[tuple[frozenset[str], list[str]]] = []
    take = RoundRobin.next_batch

    def recording(self: RoundRobin, lanes):  # type: ignore[no-untyped-def]
        waiting = frozenset(k for k, q in lanes if len(q))
        batch = take(self, lanes)
        if batch:
            seen.append((waiting, [k for k, _ in batch]))
        return batch

    monkeypatch.setattr(RoundRobin, "next_batch", recording)
    return seen


def longest_wait(batches: list[tuple[frozenset[str], list[str]]], cid: str) -> int:
    """The most batches in a row that ``cid`` had a frame waiting and was not served."""
    longest = run = 0
    for waiting, served in batches:
        run = run + 1 if cid in waiting and cid not in served else 0
        longest = max(longest, run)
    return longest


def test_a_busy_live_camera_cannot_starve_a_quiet_one(tmp_path: Path, media_dir: Path, yolo, batches) -> None:
    # 20 fps + 2 fps of demand on a detector that manages at most 10 frames/s.
    cfg = config(tmp_path, [camera("busy", media_dir / PARKING, fps=20, live=True),
                            camera("quiet", media_dir / DOG, fps=2, live=True)])
    r = runner(cfg, accelerator(yolo, 0.1), max_batch=1)
    run = Running(r)
    wait_until(lambda: processed(r, "quiet") >= 6 and dropped(r, "busy") >= 6, 30, "frames of both cameras")
    run.stop()
    busy_h, quiet_h = r.run_of("busy").health, r.run_of("quiet").health
    busy, quiet = processed(r, "busy"), processed(r, "quiet")
    # A frame of the quiet camera waits for at most one frame of the busy one (two cameras, batches of one),
    # so it is never dropped for being stale; the busy one gets the rest of the detector.
    assert longest_wait(batches, "quiet") <= 1 and longest_wait(batches, "busy") <= 1
    assert any(w == {"busy", "quiet"} for w, _ in batches)  # they did compete
    assert dropped(r, "quiet") == 0 and quiet <= quiet_h.frames_sampled
    assert busy >= quiet - 1
    # The busy camera is behind: it drops its oldest frames, and every sampled frame is accounted for.
    in_queue = len(r.run_of("busy").frames)
    assert processed(r, "busy") + dropped(r, "busy") + in_queue == pytest.approx(busy_h.frames_sampled, abs=2)


def test_equal_demand_gets_equal_shares_under_overload(tmp_path: Path, media_dir: Path, yolo, batches) -> None:
    cams = [camera(f"cam{i}", media_dir / v, fps=10, live=True) for i, v in enumerate((PARKING, DOG, JUNCTION))]
    r = runner(config(tmp_path, cams), accelerator(yolo, 0.1), max_batch=1)
    run = Running(r)
    wait_until(lambda: all(processed(r, f"cam{i}") >= 4 and dropped(r, f"cam{i}") > 0 for i in range(3)), 30,
               "frames and drops of every camera")  # 30 fps asked of a 10 fps detector
    run.stop()
    # Round robin: a camera with a frame waiting is served within one batch per other camera.
    assert all(longest_wait(batches, f"cam{i}") <= 2 for i in range(3))
    # While all three had frames waiting, they took turns: equal shares, give or take the turn in progress.
    contested = [served[0] for waiting, served in batches if len(waiting) == 3]
    shares = [contested.count(f"cam{i}") for i in range(3)]
    assert min(shares) >= 3 and max(shares) - min(shares) <= 1, shares


def test_each_camera_is_detected_at_its_own_fps(tmp_path: Path, media_dir: Path, yolo,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, list[float]] = {"slow": [], "fast": []}
    process = EdgeWorker.process

    def recording(self: EdgeWorker, frame, detections, **kw):  # type: ignore[no-untyped-def]
        seen[self.camera.id].append(frame.ts)
        return process(self, frame, detections, **kw)

    monkeypatch.setattr(EdgeWorker, "process", recording)
    cfg = config(tmp_path, [camera("slow", media_dir / DOG, fps=1, live=True),
                            camera("fast", media_dir / PARKING, fps=4, live=True)])
    r = runner(cfg, accelerator(yolo, 0.01))
    run = Running(r)
    wait_until(lambda: processed(r, "slow") >= 4 and processed(r, "fast") >= 12, 30, "frames of both cameras")
    run.stop()
    # The frames' own timestamps (video time, 20 fps clips): each camera's frames are 1/fps apart, never
    # closer (a frame dropped under load would only widen a gap).
    for cid, fps in (("slow", 1), ("fast", 4)):
        gaps = sorted(b - a for a, b in zip(seen[cid], seen[cid][1:], strict=False))
        assert gaps[0] >= 1 / fps - 1 / 20 - 1e-6, (cid, gaps)
        assert gaps[len(gaps) // 2] == pytest.approx(1 / fps, abs=1e-3), (cid, gaps)


def test_file_cameras_wait_instead_of_dropping_and_share_fairly(tmp_path: Path, media_dir: Path,
                                                                yolo, batches) -> None:
    # Files are read as fast as the detector takes them; one has ten times the frames of the other.
    cfg = config(tmp_path, [camera("many", media_dir / PARKING, fps=10), camera("few", media_dir / PARKING, fps=1)])
    r = runner(cfg, accelerator(yolo, 0.01), max_batch=2)
    stats = r.run(threading.Event())
    assert stats["many"].frames == 81 and stats["few"].frames == 9  # every frame, none dropped
    assert dropped(r, "many") == dropped(r, "few") == 0
    # Each frame of the quiet file goes into the next batch (batches of two, two cameras): it never queues
    # behind the busy file's frames, which wait for each other.
    assert longest_wait(batches, "few") == 0
    assert [sum(served.count(cid) for _, served in batches) for cid in ("few", "many")] == [9 + 1, 81 + 1]  # + ends


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


@pytest.mark.parametrize("overlap", [True, False])
def test_the_next_batch_is_detected_while_this_one_is_processed(
    tmp_path: Path, media_dir: Path, yolo, monkeypatch: pytest.MonkeyPatch, overlap: bool
) -> None:
    """The overlapped loop (issue 16): while the detector runs batch N+1, the loop processes batch N; every frame
    of a file is still processed once, in order, and the camera is finished only after its last frame. With
    ``overlap = False`` (the old loop, kept for bench/) no frame is processed while the detector runs."""
    events: list[tuple[str, int]] = []
    lock = threading.Lock()

    class Logged(FixedLatencyDetector):
        def detect(self, images):  # type: ignore[no-untyped-def]
            with lock:
                events.append(("detect-start", len(images)))
            try:
                return super().detect(images)
            finally:
                with lock:
                    events.append(("detect-end", len(images)))

    process, finish = EdgeWorker.process, EdgeWorker.finish

    def logged_process(self: EdgeWorker, frame, detections, **kw):  # type: ignore[no-untyped-def]
        with lock:
            events.append(("process", frame.index))
        return process(self, frame, detections, **kw)

    def logged_finish(self: EdgeWorker):  # type: ignore[no-untyped-def]
        with lock:
            events.append(("finish", -1))
        return finish(self)

    monkeypatch.setattr(EdgeWorker, "process", logged_process)
    monkeypatch.setattr(EdgeWorker, "finish", logged_finish)
    r = runner(config(tmp_path, [camera("dog", media_dir / DOG, fps=5)]), Logged(yolo, 0.05), max_batch=4)
    r.overlap = overlap
    stats = r.run(threading.Event())
    indexes = [i for kind, i in events if kind == "process"]
    assert len(indexes) == stats["dog"].frames >= 30
    assert indexes == sorted(indexes) and len(set(indexes)) == len(indexes)
    assert events[-1] == ("finish", -1) and [k for k, _ in events].count("finish") == 1
    inside, running = 0, False
    for kind, _ in events:
        running = {"detect-start": True, "detect-end": False}.get(kind, running)
        inside += kind == "process" and running
    assert (inside > 0) == overlap


def test_the_loop_neither_encodes_the_pre_roll_nor_writes_packages(tmp_path: Path, media_dir: Path, yolo,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The detection loop's thread only tracks, applies the rules and forms batches: the runner's encoder threads
    encode the frames' pre-roll JPEGs while their batch is detected, its writer threads write the packages (an
    alert on one camera used to pause every camera of the box while its clip was encoded, bench/loop_profile.py)."""
    from nonsite.pipeline import worker as worker_module
    from nonsite.streams.ringbuffer import RingBuffer

    encoders: list[str] = []
    writers: list[str] = []
    nice: list[int] = []
    clip_pushes: list[tuple[str, int]] = []
    base = os.getpriority(os.PRIO_PROCESS, 0)
    encode, write = RingBuffer.encode, worker_module.write_package_blobs
    push = worker_module.ClipEncoder.push

    def pushing(self, ts, img):  # type: ignore[no-untyped-def]
        clip_pushes.append((threading.current_thread().name,
                            os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) - base))
        return push(self, ts, img)

    def encoding(self, image):  # type: ignore[no-untyped-def]
        encoders.append(threading.current_thread().name)
        return encode(self, image)

    def writing(*args, **kw):  # type: ignore[no-untyped-def]
        writers.append(threading.current_thread().name)
        nice.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) - base)
        return write(*args, **kw)

    monkeypatch.setattr(RingBuffer, "encode", encoding)
    monkeypatch.setattr(worker_module, "write_package_blobs", writing)
    monkeypatch.setattr(worker_module.ClipEncoder, "push", pushing)
    cfg = config(tmp_path, [camera("dog", media_dir / DOG, fps=5)],
                 rules={"stray_dog": {"dwell_s": 3, "max_gap_s": 1.5}}, edge={"writer_nice": 7})
    r = runner(cfg, yolo)
    stats = r.run(threading.Event())
    assert stats["dog"].published.get("stray_dog", 0) >= 1
    assert len(encoders) == stats["dog"].frames and all(name.startswith("preroll") for name in encoders)
    assert writers and all(name.startswith("evidence-writer") for name in writers)
    assert set(nice) == {min(19, base + 7) - base}  # 7 nicer than the edge (at most 19)
    # the clip is encoded while its package waits, on the writer's own thread for that, as nice as the writer
    assert any(name.startswith("evidence-ahead") for name, _ in clip_pushes), clip_pushes
    assert all(name.startswith(("evidence-ahead", "evidence-writer")) for name, _ in clip_pushes), clip_pushes
    assert {n for _, n in clip_pushes} == {min(19, base + 7) - base}
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == base  # that thread only
    assert r.metrics.value("nonsite_events_published_total", camera="dog", type="stray_dog") == \
        stats["dog"].published["stray_dog"]
