"""File sources on real media: sampling, timestamps, looping, pacing, clear errors; open_source routing."""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from nonsite.config import CameraConfig
from nonsite.streams import FileSource, LiveSource, SourceError, SourceState, open_source

PARKING = "parking_lot_cctv_timelapse_a_640x480.mp4"  # 640x480, 20 fps, 162 frames (8.1 s)


def camera(url: str, fps: float = 5.0, **source: object) -> CameraConfig:
    return CameraConfig.model_validate({"id": "cam-1", "fps": fps, "source": {"url": url, **source}})


def test_file_sampled_at_target_fps(media_dir: Path) -> None:
    src = open_source(camera(str(media_dir / PARKING), fps=5))
    assert isinstance(src, FileSource)
    before = time.time()
    frames = list(src.frames())
    # Frames 0, 4, 8, ... 160 of 162: one every 0.2 s of video time.
    assert len(frames) == 41
    assert [f.index for f in frames] == list(range(0, 161, 4))
    gaps = np.diff([f.ts for f in frames])
    assert np.allclose(gaps, 0.2, atol=1e-3)
    # ts = wall time at open + position in the file (not the time of processing, which is faster).
    assert before <= frames[0].ts <= before + 2.0
    assert frames[-1].ts - frames[0].ts == pytest.approx(8.0, abs=1e-3)
    for f in frames:
        assert f.camera_id == "cam-1"
        assert f.shape == (640, 480)
        assert f.image.dtype == np.uint8 and f.image.shape == (480, 640, 3)
    # Sampled frames are real, different pictures (a time-lapse: cars arrive).
    assert np.abs(frames[0].image.astype(int) - frames[-1].image.astype(int)).mean() > 5
    h = src.health
    assert h.state is SourceState.finished
    assert h.frames_decoded == 162 and h.frames_sampled == 41
    assert h.last_frame_ts == pytest.approx(frames[0].ts + 161 * 0.05, abs=1e-3)


def test_target_fps_above_source_fps_yields_every_frame(media_dir: Path) -> None:
    frames = list(FileSource("c", media_dir / PARKING, fps=50).frames())
    assert len(frames) == 162
    assert np.allclose(np.diff([f.ts for f in frames]), 0.05, atol=1e-3)


def test_file_url_scheme(media_dir: Path) -> None:
    src = open_source(camera((media_dir / PARKING).as_uri(), fps=1))
    assert isinstance(src, FileSource)
    assert len(list(src.frames())) == 9  # t = 0, 1, ..., 8 s


def test_loop_continues_past_the_end(media_dir: Path) -> None:
    src = open_source(camera(str(media_dir / PARKING), fps=5, loop=True))
    frames = []
    for f in src.frames():
        frames.append(f)
        if len(frames) == 90:  # more than two passes (41 frames each)
            src.close()
    assert len(frames) == 90
    ts = np.array([f.ts for f in frames])
    # Video time keeps running across the loop point at the same cadence.
    assert np.allclose(np.diff(ts), 0.2, atol=1e-3)
    assert ts[-1] - ts[0] == pytest.approx(89 * 0.2, abs=1e-2)
    idx = [f.index for f in frames]
    assert idx == sorted(set(idx))
    # Pass 1 ends at video time 8.05 s (frame 161); pass 2 starts at 8.1 s, so the next 0.2 s tick
    # (8.2 s) is its third frame: index 162 + 2, and the picture is the file's frame 2 again.
    assert idx[41] == 164
    cap = cv2.VideoCapture(str(media_dir / PARKING))
    for _ in range(3):
        ok, third = cap.read()
    cap.release()
    assert ok and np.array_equal(frames[41].image, third)
    assert src.health.state is SourceState.finished


def test_still_image_loops_as_a_stationary_clip(media_dir: Path) -> None:
    src = FileSource("c", media_dir / "generic_bus_ultralytics.jpg", fps=5, loop=True)
    it = src.frames()
    frames = [next(it) for _ in range(15)]
    src.close()
    assert list(it) == []
    assert np.allclose(np.diff([f.ts for f in frames]), 0.2, atol=1e-3)
    assert all(np.array_equal(f.image, frames[0].image) for f in frames)
    assert frames[0].image.shape[2] == 3


def test_realtime_paces_to_the_file_fps(media_dir: Path) -> None:
    src = FileSource("c", media_dir / PARKING, fps=5, realtime=True)
    it = src.frames()
    first = next(it)
    delivered = []
    for _ in range(5):
        delivered.append((next(it), time.time()))
    src.close()
    assert [f.ts - first.ts for f, _ in delivered] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0], abs=1e-3)
    assert all(at >= f.ts for f, at in delivered)  # each is held until its timestamp comes, never early


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "cam.mp4"
    with pytest.raises(SourceError, match="video file not found: .*nope/cam.mp4"):
        open_source(camera(str(missing)))
    with pytest.raises(SourceError, match="video file not found"):
        open_source(camera(missing.as_uri()))


def test_not_a_video_is_a_clear_error(media_dir: Path, tmp_path: Path) -> None:
    src = FileSource("c", media_dir / "MANIFEST.md", fps=5)
    with pytest.raises(SourceError, match="cannot open video file .*MANIFEST.md"):
        list(src.frames())
    # A truncated upload: the first 4 KiB of a real mp4.
    cut = tmp_path / "truncated.mp4"
    cut.write_bytes((media_dir / PARKING).read_bytes()[:4096])
    with pytest.raises(SourceError, match=r"(cannot open video file|no frames could be decoded from video file) .*"
                       r"truncated.mp4"):
        list(FileSource("c", cut, fps=5).frames())
    with pytest.raises(SourceError, match="is not a file"):
        FileSource("c", tmp_path, fps=5)


def test_open_source_routing_and_errors() -> None:
    live = open_source(camera("rtsp://admin:hunter2@10.0.0.5:554/Streaming/Channels/101", transport="udp"))
    assert isinstance(live, LiveSource)
    assert live.transport == "udp" and live.display == "rtsp://admin:***@10.0.0.5:554/Streaming/Channels/101"
    assert isinstance(open_source(camera("http://cam.local/video.mjpg")), LiveSource)
    dev = open_source(camera("device:0"))
    assert isinstance(dev, LiveSource) and dev.target == 0
    with pytest.raises(SourceError, match="device:N"):
        open_source(camera("device:front"))
    with pytest.raises(SourceError) as e:
        open_source(camera("ftp://user:hunter2@host/x.mp4"))
    assert "hunter2" not in str(e.value) and "ftp://user:***@host" in str(e.value)
