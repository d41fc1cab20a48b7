"""The pre-roll ring buffer on real frames: bounds by seconds and bytes, between(), latest(), threads."""

from __future__ import annotations

import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from nonsite.streams import FileSource, RingBuffer


@pytest.fixture(scope="module")
def frames(media_dir: Path) -> list[np.ndarray]:
    return [f.image for f in FileSource("c", media_dir / "parking_lot_cctv_timelapse_a_640x480.mp4", fps=5).frames()]


def test_bounded_by_seconds(frames: list[np.ndarray]) -> None:
    rb = RingBuffer(max_seconds=2.0, max_bytes=10**9)
    for i, img in enumerate(frames[:30]):
        rb.append(1000.0 + i * 0.2, img)
    # Newest at 1005.8; everything from 1003.8 on is kept: 11 frames.
    assert len(rb) == 11
    kept = rb.between(0, 10**10)
    assert kept[0][0] == pytest.approx(1003.8) and kept[-1][0] == pytest.approx(1005.8)
    assert rb.latest() is not None and rb.latest()[0] == pytest.approx(1005.8)
    assert rb.nbytes == sum(len(b) for _, b in kept)


def test_bounded_by_bytes(frames: list[np.ndarray]) -> None:
    probe = RingBuffer(max_seconds=100)
    size = len(probe.encode(frames[0]))
    budget = int(size * 5.5)
    rb = RingBuffer(max_seconds=100, max_bytes=budget)
    for i, img in enumerate(frames):
        rb.append(float(i), img)
        assert rb.nbytes <= budget
    assert 3 <= len(rb) <= 7
    assert rb.latest()[0] == float(len(frames) - 1)
    # Timestamps stay contiguous at the newest end.
    ts = [t for t, _ in rb.between(-1, 10**6)]
    assert ts == [float(t) for t in range(len(frames) - len(ts), len(frames))]
    # A frame bigger than the whole budget is not stored.
    tiny = RingBuffer(max_seconds=100, max_bytes=100)
    tiny.append(0.0, frames[0])
    assert len(tiny) == 0 and tiny.latest() is None and tiny.nbytes == 0


def test_compressed_much_smaller_than_raw_and_decodes_back(frames: list[np.ndarray]) -> None:
    rb = RingBuffer(max_seconds=10, jpeg_quality=85)
    img = frames[10]
    n = rb.append(1.0, img)
    assert n < img.nbytes / 5  # 921,600 raw bytes
    back = RingBuffer.decode(rb.latest()[1])
    assert back.shape == img.shape
    assert cv2.PSNR(back, img) > 30


def test_max_width_downscales(frames: list[np.ndarray]) -> None:
    rb = RingBuffer(max_seconds=10, max_width=320)
    rb.append(0.0, frames[0])
    assert RingBuffer.decode(rb.latest()[1]).shape == (240, 320, 3)


def test_between_and_out_of_order(frames: list[np.ndarray]) -> None:
    rb = RingBuffer(max_seconds=60)
    for t in [10.0, 10.2, 10.4, 10.8, 11.0]:
        rb.append(t, frames[0])
    rb.append(10.6, frames[1])  # late arrival goes to its place
    got = rb.between(10.2, 10.8)
    assert [t for t, _ in got] == [10.2, 10.4, 10.6, 10.8]
    assert rb.between(11.5, 12.0) == []
    assert RingBuffer.decode(got[2][1]).shape == frames[1].shape
    assert RingBuffer(max_seconds=1).latest() is None


def test_concurrent_append_and_read(frames: list[np.ndarray]) -> None:
    rb = RingBuffer(max_seconds=1.0)
    errors: list[BaseException] = []

    def writer(k: int) -> None:
        try:
            for i in range(20):
                rb.append(k * 0.01 + i * 0.1, frames[i])
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        snap = rb.between(-1, 100)
        assert [t for t, _ in snap] == sorted(t for t, _ in snap)
    for t in threads:
        t.join()
    assert not errors
    ts = [t for t, _ in rb.between(-1, 100)]
    assert ts == sorted(ts) and ts[-1] - ts[0] <= 1.0
    assert rb.nbytes == sum(len(b) for _, b in rb.between(-1, 100))


def test_rejects_bad_bounds() -> None:
    with pytest.raises(ValueError, match="max_seconds"):
        RingBuffer(max_seconds=0)
    with pytest.raises(ValueError, match="max_bytes"):
        RingBuffer(max_seconds=1, max_bytes=0)
