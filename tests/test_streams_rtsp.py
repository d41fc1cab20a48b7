"""Live RTSP sources against a real RTSP server (gst-rtsp-server, tests/rtsp_server.py) serving real video:
frames flow, credentials and paths fail clearly without leaking the password, a killed or frozen server
is noticed and the source reconnects by itself."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from rtsp_helpers import PASSWORD, USER, RtspServer, free_port, serve_rtsp, wait_for

from nonsite.config import CameraConfig
from nonsite.streams import Frame, LiveSource, SourceState, open_source


@pytest.fixture
def rtsp_server(media_dir: Path, tmp_path: Path) -> Iterator[RtspServer]:
    yield from serve_rtsp(media_dir, tmp_path)


def live(url: str, **source: object) -> LiveSource:
    cfg = {"open_timeout_s": 3.0, "read_timeout_s": 2.0, "reconnect_initial_s": 0.2, "reconnect_max_s": 1.0,
           **source}
    src = open_source(CameraConfig.model_validate({"id": "cam-rtsp", "fps": 5, "source": {"url": url, **cfg}}))
    assert isinstance(src, LiveSource)
    return src


class Collector:
    """Iterates a source's frames in a thread, so the test can watch health while frames flow."""

    def __init__(self, src: LiveSource) -> None:
        self.src = src
        self.frames: list[Frame] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        for f in self.src.frames():
            self.frames.append(f)

    def close(self) -> None:
        self.src.close()
        self.thread.join(5)
        assert not self.thread.is_alive()


def test_frames_flow_from_rtsp(rtsp_server: RtspServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="nonsite.streams")
    src = live(rtsp_server.url())
    start = time.time()
    it = src.frames()
    first = next(it)
    ttff = time.time() - start
    frames = [first] + [next(it) for _ in range(10)]
    src.close()
    assert list(it) == []
    print(f"\ntime to first frame from the local RTSP server: {ttff:.2f} s")
    sys.stdout.flush()
    assert os.environ.get("OPENCV_FFMPEG_CAPTURE_OPTIONS", "").endswith("rtsp_transport;tcp")
    for f in frames:
        assert f.camera_id == "cam-rtsp" and f.shape == (960, 540) and f.image.dtype == np.uint8
    ts = np.array([f.ts for f in frames])
    assert np.all(np.diff(ts) > 0) and start <= ts[0] <= ts[-1] <= time.time()
    # About 5 fps out of a 25 fps stream: never converting all of them (counts below).
    idx = [f.index for f in frames]
    assert idx == sorted(set(idx)) and idx[-1] - idx[1] >= 30
    assert np.abs(frames[1].image.astype(int) - frames[-1].image.astype(int)).mean() > 1  # moving traffic
    h = src.health
    assert h.state is SourceState.finished and h.open_failures == 0 and h.reconnects == 0
    assert h.frames_decoded > 2 * h.frames_sampled >= 2 * len(frames)
    assert PASSWORD not in caplog.text and "admin:***@127.0.0.1" in caplog.text


def test_udp_transport(rtsp_server: RtspServer) -> None:
    src = live(rtsp_server.url(), transport="udp")
    it = src.frames()
    frames = [next(it) for _ in range(3)]
    src.close()
    assert all(f.shape == (960, 540) for f in frames)
    assert os.environ.get("OPENCV_FFMPEG_CAPTURE_OPTIONS", "").endswith("rtsp_transport;udp")


@pytest.mark.parametrize(
    ("user", "password", "path", "expect"),
    [
        (USER, "wrong-" + PASSWORD, None, "rejected the user name or password (401 Unauthorized)"),
        (None, None, None, "rejected the user name or password (401 Unauthorized)"),
        (USER, PASSWORD, "/live/nope", "no stream at path '/live/nope'"),
    ],
    ids=["wrong-password", "no-credentials", "bad-path"],
)
def test_open_failure_is_clear_and_keeps_the_password_secret(
    rtsp_server: RtspServer, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str],
    user: str | None, password: str | None, path: str | None, expect: str,
) -> None:
    caplog.set_level(logging.DEBUG, logger="nonsite.streams")
    src = live(rtsp_server.url(user, password, path))
    col = Collector(src)
    wait_for(lambda: src.health.open_failures >= 2, 8.0, "two failed opens")
    h = src.health
    col.close()
    assert h.state in (SourceState.down, SourceState.connecting)
    assert h.last_error is not None and expect in h.last_error, h.last_error
    assert col.frames == [] and h.frames_decoded == 0
    out, err = capfd.readouterr()  # FFmpeg's own stderr too
    for text in (caplog.text, h.last_error, out, err, repr(h)):
        assert PASSWORD not in text
    assert "cannot open rtsp://" in caplog.text and "retrying in" in caplog.text


def test_nothing_listening_is_connection_refused() -> None:
    src = live(f"rtsp://{USER}:{PASSWORD}@127.0.0.1:{free_port()}/live/ch1")
    col = Collector(src)
    wait_for(lambda: src.health.open_failures >= 1, 5.0, "a failed open")
    h = src.health
    col.close()
    assert h.last_error is not None and "connection refused by 127.0.0.1" in h.last_error
    assert PASSWORD not in h.last_error


def test_reconnects_after_server_restart(rtsp_server: RtspServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="nonsite.streams")
    src = live(rtsp_server.url())
    col = Collector(src)
    wait_for(lambda: len(col.frames) >= 3, 5.0, "first frames")
    assert src.health.state is SourceState.up
    rtsp_server.kill()
    lost = wait_for(lambda: src.health.state is not SourceState.up, 4.0, "the loss to be noticed")
    n_before = len(col.frames)
    rtsp_server.start()  # same port
    back = wait_for(lambda: len(col.frames) >= n_before + 3, 10.0, "frames after the restart")
    h = src.health
    col.close()
    print(f"\nloss noticed after {lost:.2f} s; frames again {back:.2f} s after the restart began")
    assert h.reconnects >= 1
    assert h.last_error is not None and PASSWORD not in h.last_error
    ts = [f.ts for f in col.frames]
    idx = [f.index for f in col.frames]
    assert ts == sorted(ts) and idx == sorted(set(idx))
    assert "reconnected to rtsp://admin:***@" in caplog.text and PASSWORD not in caplog.text


def test_stalled_stream_is_detected_and_recovers(rtsp_server: RtspServer) -> None:
    src = live(rtsp_server.url())  # read timeout 2 s
    col = Collector(src)
    wait_for(lambda: len(col.frames) >= 3, 5.0, "first frames")
    rtsp_server.signal(signal.SIGSTOP)  # the server freezes: TCP stays open, no data
    try:
        stalled = wait_for(lambda: src.health.state is not SourceState.up, 5.0, "the stall to be noticed")
        h = src.health
        assert h.last_error is not None and "stalled" in h.last_error
        n_before = len(col.frames)
    finally:
        rtsp_server.signal(signal.SIGCONT)
    wait_for(lambda: len(col.frames) >= n_before + 3, 10.0, "frames after the server thawed")
    h = src.health
    col.close()
    print(f"\nstall noticed {stalled:.2f} s after the server froze")
    assert 1.5 <= stalled <= 4.0
    assert h.reconnects >= 1
