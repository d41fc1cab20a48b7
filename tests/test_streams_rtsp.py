"""Live RTSP sources against a real RTSP server (gst-rtsp-server, tests/rtsp_server.py) serving real video:
frames flow, credentials and paths fail clearly without leaking the password, a killed or frozen server
is noticed and the source reconnects by itself."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from nonsite.config import CameraConfig
from nonsite.streams import Frame, LiveSource, SourceState, open_source

HERE = Path(__file__).resolve().parent
SYSTEM_PYTHON = "/usr/bin/python3"
USER, PASSWORD = "admin", "Pa55-w0rd_xyzzy"
VIDEO = "traffic_highway.mp4"  # 960x540, 25 fps, 10 s; the server loops it


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _have_rtsp_server() -> bool:
    if not os.path.exists(SYSTEM_PYTHON):
        return False
    probe = "import gi; gi.require_version('GstRtspServer', '1.0'); from gi.repository import GstRtspServer"
    return subprocess.run([SYSTEM_PYTHON, "-c", probe], capture_output=True).returncode == 0


class RtspServer:
    """tests/rtsp_server.py in a subprocess; start() again after kill() serves on the same port."""

    def __init__(self, media: Path, port: int, path: str, log_dir: Path, auth: bool = True) -> None:
        self.media, self.port, self.path, self.log_dir, self.auth = media, port, path, log_dir, auth
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def url(self, user: str | None = USER, password: str | None = PASSWORD, path: str | None = None) -> str:
        cred = f"{user}:{password}@" if user is not None else ""
        return f"rtsp://{cred}127.0.0.1:{self.port}{path or self.path}"

    def start(self, timeout: float = 15.0) -> None:
        self.starts += 1
        cmd = [SYSTEM_PYTHON, str(HERE / "rtsp_server.py"), "--port", str(self.port), "--path", self.path,
               "--media", str(self.media)]
        if self.auth:
            cmd += ["--user", USER, "--password", PASSWORD]
        err = open(self.log_dir / f"rtsp_server_{self.starts}.log", "wb")  # noqa: SIM115 - closed with proc
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err)
        err.close()
        deadline = time.monotonic() + timeout
        stdout = self.proc.stdout
        assert stdout is not None
        ready: list[bytes] = []
        reader = threading.Thread(target=lambda: ready.append(stdout.readline()), daemon=True)
        reader.start()
        reader.join(timeout)
        line = ready[0] if ready else b""
        if not line.startswith(b"READY"):
            self.kill()
            log = (self.log_dir / f"rtsp_server_{self.starts}.log").read_text(errors="replace")
            pytest.fail(f"RTSP server did not start: {line!r}\n{log}")
        while time.monotonic() < deadline:  # it says READY once listening; make sure it accepts
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.05)
        pytest.fail(f"RTSP server does not accept connections on port {self.port}")

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL, like a camera losing power; connections drop without a goodbye."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # in case a test froze it
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.kill()


@pytest.fixture
def rtsp_server(media_dir: Path, tmp_path: Path) -> Iterator[RtspServer]:
    if not _have_rtsp_server():
        pytest.skip(f"{SYSTEM_PYTHON} lacks GStreamer's RTSP server (apt install python3-gi "
                    "gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-ugly gstreamer1.0-libav)")
    server = RtspServer(media_dir / VIDEO, _free_port(), "/live/ch1", tmp_path)
    server.start()
    yield server
    server.stop()


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


def wait_for(cond: Callable[[], bool], timeout: float, what: str) -> float:
    start = time.monotonic()
    while not cond():
        if time.monotonic() - start > timeout:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)
    return time.monotonic() - start


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
    assert ttff < 3.0
    assert os.environ.get("OPENCV_FFMPEG_CAPTURE_OPTIONS", "").endswith("rtsp_transport;tcp")
    for f in frames:
        assert f.camera_id == "cam-rtsp" and f.shape == (960, 540) and f.image.dtype == np.uint8
    ts = np.array([f.ts for f in frames])
    assert np.all(np.diff(ts) > 0) and start <= ts[0] <= ts[-1] <= time.time()
    # About 5 fps out of a 25 fps stream: mostly every 5th frame, never converting all of them.
    assert np.median(np.diff(ts[1:])) == pytest.approx(0.2, abs=0.05)
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
    took = wait_for(lambda: src.health.open_failures >= 2, 8.0, "two failed opens")
    h = src.health
    col.close()
    assert took < 8.0
    assert h.state in (SourceState.down, SourceState.connecting)
    assert h.last_error is not None and expect in h.last_error, h.last_error
    assert col.frames == [] and h.frames_decoded == 0
    out, err = capfd.readouterr()  # FFmpeg's own stderr too
    for text in (caplog.text, h.last_error, out, err, repr(h)):
        assert PASSWORD not in text
    assert "cannot open rtsp://" in caplog.text and "retrying in" in caplog.text


def test_nothing_listening_is_connection_refused() -> None:
    src = live(f"rtsp://{USER}:{PASSWORD}@127.0.0.1:{_free_port()}/live/ch1")
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
