"""A real RTSP server (tests/rtsp_server.py, GStreamer's gst-rtsp-server under Debian's python3) for the
stream, probe, reload and latest-frame tests, and small helpers around it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
SYSTEM_PYTHON = "/usr/bin/python3"
USER, PASSWORD = "admin", "Pa55-w0rd_xyzzy"
VIDEO = "traffic_highway.mp4"  # 960x540, 25 fps, 10 s; the server loops it


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def have_rtsp_server() -> bool:
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


def serve_rtsp(media_dir: Path, tmp_path: Path, video: str = VIDEO, path: str = "/live/ch1") -> Iterator[RtspServer]:
    """Body of an ``rtsp_server`` fixture: a started server, stopped afterwards."""
    if not have_rtsp_server():
        pytest.skip(f"{SYSTEM_PYTHON} lacks GStreamer's RTSP server (apt install python3-gi "
                    "gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-ugly gstreamer1.0-libav)")
    server = RtspServer(media_dir / video, free_port(), path, tmp_path)
    server.start()
    yield server
    server.stop()


def wait_for(cond: Callable[[], bool], timeout: float, what: str) -> float:
    start = time.monotonic()
    while not cond():
        if time.monotonic() - start > timeout:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)
    return time.monotonic() - start
