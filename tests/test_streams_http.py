"""HTTP MJPEG sources (the kind many cheap IP cameras serve) against a real multipart HTTP server
streaming real video frames."""

from __future__ import annotations

import base64
import logging
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2
import numpy as np
import pytest

from nonsite.config import CameraConfig
from nonsite.streams import FileSource, LiveSource, SourceState, open_source

USER, PASSWORD = "viewer", "mjpeg-S3cret"
BOUNDARY = "nonsiteframe"


class MjpegServer:
    """Serves /video.mjpg as multipart/x-mixed-replace at 20 fps (looping), with HTTP basic auth."""

    def __init__(self, jpegs: list[bytes], fps: float = 20.0) -> None:
        self.jpegs, self.period = jpegs, 1.0 / fps
        self.stop = threading.Event()
        outer = self
        expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                if self.headers.get("Authorization") != expected:
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Basic realm="cam"')
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if self.path != "/video.mjpg":
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", f"multipart/x-mixed-replace;boundary={BOUNDARY}")
                self.end_headers()
                i = 0
                try:
                    while not outer.stop.is_set():
                        data = outer.jpegs[i % len(outer.jpegs)]
                        self.wfile.write(
                            f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(data)}\r\n\r\n".encode()
                            + data + b"\r\n"
                        )
                        i += 1
                        time.sleep(outer.period)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, password: str = PASSWORD, path: str = "/video.mjpg") -> str:
        return f"http://{USER}:{password}@127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        self.stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def mjpeg(media_dir: Path) -> Iterator[MjpegServer]:
    src = FileSource("srv", media_dir / "parking_lot_cctv_timelapse_a_640x480.mp4", fps=20)
    jpegs = [cv2.imencode(".jpg", f.image)[1].tobytes() for f in src.frames()][:40]
    server = MjpegServer(jpegs)
    yield server
    server.close()


def live(url: str) -> LiveSource:
    src = open_source(CameraConfig.model_validate({"id": "cam-http", "fps": 5, "source": {
        "url": url, "open_timeout_s": 3, "read_timeout_s": 2, "reconnect_initial_s": 0.2, "reconnect_max_s": 1}}))
    assert isinstance(src, LiveSource)
    return src


def test_mjpeg_frames_flow(mjpeg: MjpegServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="nonsite.streams")
    src = live(mjpeg.url())
    it = src.frames()
    frames = [next(it) for _ in range(6)]
    h = src.health
    src.close()
    assert all(f.shape == (640, 480) for f in frames)
    ts = np.array([f.ts for f in frames])
    assert np.all(np.diff(ts) > 0)
    assert np.median(np.diff(ts)) == pytest.approx(0.2, abs=0.06)
    assert h.state is SourceState.up and h.frames_decoded > h.frames_sampled
    assert PASSWORD not in caplog.text


def test_mjpeg_wrong_password_is_reported(mjpeg: MjpegServer) -> None:
    src = live(mjpeg.url(password="nope-" + PASSWORD))
    src.start()
    deadline = time.monotonic() + 6
    while src.health.open_failures == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    h = src.health
    src.close()
    assert h.last_error is not None and "401 Unauthorized" in h.last_error
    assert PASSWORD not in h.last_error and h.frames_decoded == 0
