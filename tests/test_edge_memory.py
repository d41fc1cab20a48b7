"""What a camera keeps in memory (issue 16, bench/memory.py): the pre-roll keeps to its configured bound, a
stopped camera keeps no frames, a video file decodes the same frames whatever its decoder thread count."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import supervision as sv
from edge_helpers import DOG, JUNCTION, Running, camera, config, runner, wait_until

from nonsite.bus.embedded import EmbeddedBus
from nonsite.bus.events import ModelInfo
from nonsite.config import CameraConfig, NonsiteConfig
from nonsite.evidence.local import LocalStore
from nonsite.models.base import WeightsInfo
from nonsite.pipeline.worker import EdgeWorker, SequenceCounter
from nonsite.streams import FileSource, open_source
from nonsite.streams.base import Frame

T0 = 1_715_000_000.0


class NothingFound:
    """A detector that finds nothing, at once: these tests look at frames kept, not at detections."""

    backend = "test"
    class_names = ["person"]
    weights = WeightsInfo(name="none", version="0", sha256="0" * 64, path="")

    def detect(self, images: Sequence[np.ndarray]) -> list[sv.Detections]:
        return [sv.Detections.empty() for _ in images]


def worker(tmp_path: Path, **evidence: object) -> tuple[EdgeWorker, EmbeddedBus]:
    cfg = NonsiteConfig.model_validate({
        "data_dir": str(tmp_path), "evidence": evidence,
        "cameras": [{"id": "cam-1", "source": {"url": "x.mp4"}, "fps": 5,
                     "zones": [{"id": "walk", "kind": "sidewalk", "polygon": [[0, 0], [1, 0], [1, 1], [0, 1]]}]}]})
    bus = EmbeddedBus(tmp_path / "bus.sqlite")
    w = EdgeWorker(cfg.cameras[0], cfg, LocalStore(tmp_path / "evidence"), bus,
                   ModelInfo(name="m", version="1", sha256="0" * 64), SequenceCounter(tmp_path / "seq.json"))
    return w, bus


def noise(i: int) -> np.ndarray:
    """A frame JPEG cannot shrink much (about 100 KB at 320x240), different each time."""
    return np.random.default_rng(i).integers(0, 256, (240, 320, 3), dtype=np.uint8)


def test_the_pre_roll_keeps_to_its_configured_memory_bound(tmp_path: Path) -> None:
    w, bus = worker(tmp_path, pre_roll_s=10, pre_roll_max_mb=0.25)
    try:
        for i in range(20):  # 4 s of frames: all of them within pre_roll_s
            w.process(Frame("cam-1", i, T0 + i / 5, noise(i)), sv.Detections.empty())
            assert w.ring.nbytes <= 0.25 * 2**20
        assert 1 <= len(w.ring) < 20
        newest = w.ring.latest()
        assert newest is not None and newest[0] == T0 + 19 / 5  # the oldest frames went, the newest stays
    finally:
        bus.close()

    w, bus = worker(tmp_path / "default", pre_roll_s=10)
    try:
        for i in range(20):
            w.process(Frame("cam-1", i, T0 + i / 5, noise(i)), sv.Detections.empty())
        assert len(w.ring) == 20  # the default bound holds the whole pre-roll of such frames
    finally:
        bus.close()


def test_the_pre_roll_frames_are_stored_at_their_own_jpeg_quality(tmp_path: Path) -> None:
    frame = noise(1)
    sizes = {}
    for q in (60, 95):
        w, bus = worker(tmp_path / str(q), pre_roll_jpeg_quality=q, jpeg_quality=92)
        try:
            w.process(Frame("cam-1", 0, T0, frame), sv.Detections.empty())
            latest = w.ring.latest()
            assert latest is not None
            sizes[q] = len(latest[1])
            decoded = cv2.imdecode(np.frombuffer(latest[1], np.uint8), cv2.IMREAD_COLOR)
            assert decoded.shape == frame.shape
        finally:
            bus.close()
    assert sizes[60] < sizes[95]


def test_a_removed_or_restarted_camera_keeps_no_frames(tmp_path: Path, media_dir: Path) -> None:
    cfg = config(tmp_path, [camera("dog", media_dir / DOG, fps=5, live=True),
                            camera("junction", media_dir / JUNCTION, fps=5, live=True)])
    r = runner(cfg, NothingFound())
    run = Running(r)
    try:
        def processed(cid: str) -> float:
            return r.metrics.value("nonsite_frames_processed_total", camera=cid)

        wait_until(lambda: processed("dog") >= 3 and processed("junction") >= 3, 10, "first frames")
        old_dog, old_junction = r.run_of("dog"), r.run_of("junction")
        assert old_dog is not None and old_junction is not None
        assert len(old_dog.worker.ring) > 0 and len(old_junction.worker.ring) > 0

        assert r.update_camera(CameraConfig.model_validate(camera("dog", media_dir / DOG, fps=3, live=True))) \
            == "restarted"
        assert r.remove_camera("junction") == "removed"
        wait_until(lambda: old_dog.finished.is_set() and r.stopped("junction"), 10, "the old runs finished")
        for old in (old_dog, old_junction):
            assert len(old.worker.ring) == 0 and old.worker.ring.nbytes == 0
            assert len(old.frames) == 0
            assert old.worker.engine is None and old.worker.last_detections.is_empty()
        dog_frames = processed("dog")
        wait_until(lambda: processed("dog") >= dog_frames + 3, 10, "frames of the restarted camera")
    finally:
        stats = run.stop()
    assert stats["junction"].frames == processed("junction") >= 3  # the stats of a stopped camera stay


def test_a_video_decodes_the_same_frames_whatever_its_thread_count(media_dir: Path) -> None:
    def first(threads: int) -> list[np.ndarray]:
        out = []
        for f in FileSource("cam", media_dir / DOG, fps=5, decode_threads=threads).frames():
            out.append(f.image)
            if len(out) == 6:
                break
        return out

    one, auto = first(1), first(0)
    assert len(one) == len(auto) == 6
    assert all(np.array_equal(a, b) for a, b in zip(one, auto, strict=True))

    cam = CameraConfig.model_validate(camera("cam", media_dir / DOG, decode_threads=3))
    src = open_source(cam)
    assert isinstance(src, FileSource) and src.decode_threads == 3
    assert open_source(CameraConfig.model_validate(camera("cam", media_dir / DOG))).decode_threads == 1


def test_episodes_opened_on_one_frame_share_one_copy_of_its_picture(tmp_path: Path) -> None:
    from nonsite.pipeline.detections import make_detections

    w, bus = worker(tmp_path, pre_roll_s=1, post_roll_s=0.4)
    cars = [(40.0, 120.0, 140.0, 200.0), (180.0, 120.0, 290.0, 200.0)]
    images = []
    try:
        for i in range(30):
            img = np.full((240, 320, 3), 90, np.uint8)
            img[:20, :20] = i
            images.append(img)
            w.process(Frame("cam-1", i, T0 + i / 5, img), make_detections(cars, ["car", "car"], confidence=[0.9, 0.9]))
            if len(w.open) + len(w.pending) >= 2:
                break
        episodes = [*w.open.values(), *w.pending]
        assert len(episodes) == 2 and episodes[0].onset.ts == episodes[1].onset.ts
        still = episodes[0].onset.image
        assert episodes[1].onset.image is still  # one copy for both
        frame = images[round((episodes[0].onset.ts - T0) * 5)]
        assert np.array_equal(still, frame) and still is not frame
        frame[:] = 0  # the decoder's buffer reused: the evidence keeps its own picture
        assert still.mean() > 0
    finally:
        bus.close()


def test_file_cameras_share_their_read_ahead(tmp_path: Path, media_dir: Path) -> None:
    cams = [camera(f"c{i}", media_dir / DOG, fps=5, loop=True) for i in range(4)]  # files that never end
    r = runner(config(tmp_path, cams, edge={"max_batch": 4, "queue_frames": 1}), NothingFound())
    run = Running(r)
    try:
        # 4 files share 2 batches of 4 frames: 2 each (one file alone reads ahead both batches: 8)
        wait_until(lambda: sorted(x.frames.maxsize for x in r.runs) == [2, 2, 2, 2], 10, "4 files' queues")
        for cid in ("c1", "c2", "c3"):
            r.remove_camera(cid)
        wait_until(lambda: [x.frames.maxsize for x in r.runs] == [8], 10, "the queue of the file left")
        wait_until(lambda: r.metrics.value("nonsite_frames_processed_total", camera="c0") > 0, 10,
                   "the file left goes on being processed")
    finally:
        run.stop()
