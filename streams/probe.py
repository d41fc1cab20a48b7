"""``nonsite cameras probe``: connect to one camera once and say what it sends, or exactly why not.

An integrator adding a camera wants four answers before drawing zones: does it connect, what codec and
resolution does it send, at what frame rate, and how long until the first picture. :func:`probe`
answers them with PyAV (FFmpeg), which also reports the server's own reason when it refuses
(401, 404), and returns the newest decoded picture as a snapshot. Failures are a :class:`ProbeError`
whose ``kind`` is one of :data:`EXIT_CODES` (the command's exit status) and whose message is one
sentence with the password masked.
"""

from __future__ import annotations

import errno
import math
import os
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlsplit

import cv2
import numpy as np

from nonsite.config.cameras import mask_url, register_secrets
from nonsite.streams.opencv_source import _scrub

ProbeFailure = Literal["unreachable", "auth_failed", "not_found", "no_video", "timeout", "unreadable"]

#: Exit status of ``nonsite cameras probe`` per failure (0 = the camera answered with video).
EXIT_CODES: dict[str, int] = {
    "unreadable": 1,  # the stream opens but no frame can be decoded (codec, corrupt data)
    "unreachable": 3,  # no such host, connection refused, no route, no such file or device
    "auth_failed": 4,  # 401 / 403: wrong or missing user name or password
    "not_found": 5,  # the server answers but has no stream at this path (404)
    "no_video": 6,  # the source has no video track (audio only, metadata only)
    "timeout": 7,  # no answer, or no frame, within the timeout
}

LIVE = frozenset({"rtsp", "rtsps", "http", "https", "rtmp", "srt", "udp", "tcp"})


class ProbeError(Exception):
    """Why a probe failed: ``kind`` (a key of :data:`EXIT_CODES`) and a one-sentence message."""

    def __init__(self, kind: ProbeFailure, message: str) -> None:
        super().__init__(message)
        self.kind: ProbeFailure = kind

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.kind]


@dataclass(frozen=True)
class ProbeResult:
    source: str
    """The probed source as it may be shown (password masked)."""
    codec: str
    """Codec name as FFmpeg reports it, e.g. ``h264``, ``hevc``, ``mjpeg``; with the profile when known."""
    width: int
    height: int
    fps: float | None
    """Frame rate the stream declares (None when it declares none)."""
    measured_fps: float | None
    """Frame rate the source sends, from the spacing of the frames' timestamps: the median gap, so frames lost on
    the way (a loaded server drops late ones) do not lower it (None when fewer than two)."""
    connect_s: float
    """Seconds until the stream was open (connection, authentication, stream description)."""
    first_frame_s: float
    """Seconds from the start of the probe until the first decoded frame."""
    frames_read: int
    snapshot: np.ndarray
    """The newest decoded picture (BGR uint8)."""

    def lines(self) -> list[str]:
        def rate(x: float | None) -> str:
            return "unknown" if x is None else f"{x:.3g}"

        return [
            f"source: {self.source}",
            f"codec: {self.codec}",
            f"resolution: {self.width}x{self.height}",
            f"fps: {rate(self.fps)} declared, {rate(self.measured_fps)} measured over {self.frames_read} frames",
            f"time to first frame: {self.first_frame_s:.2f} s (connected after {self.connect_s:.2f} s)",
        ]


def rate_from_timestamps(times: list[float]) -> float | None:
    """Frames per second from presentation timestamps (seconds): one over the median positive gap, or None when
    fewer than two frames have distinct times. A missing frame makes one gap twice as long and moves the median
    not at all, where ``(n - 1) / span`` would report the stream as slower than it is."""
    gaps = sorted(b - a for a, b in zip(times, times[1:], strict=False) if b > a)
    if not gaps:
        return None
    mid = len(gaps) // 2
    median = gaps[mid] if len(gaps) % 2 else (gaps[mid - 1] + gaps[mid]) / 2
    return 1.0 / median


def probe(target: str, *, timeout_s: float = 10.0, transport: str = "tcp", measure_s: float = 1.0,
          max_frames: int = 50) -> ProbeResult:
    """Open ``target`` (a URL, a file path or ``device:N``), decode frames for up to ``measure_s`` after
    the first one, and describe the stream. Raises :class:`ProbeError` (never with the password)."""
    if timeout_s <= 0:
        raise ValueError(f"timeout must be positive, got {timeout_s}")
    from nonsite.config.cliargs import source_url

    try:
        target = source_url(target)
    except ValueError as e:
        raise ProbeError("unreachable", str(e)) from None
    register_secrets(target)
    if target.lower().startswith("device:"):
        return _probe_device(target, timeout_s, measure_s, max_frames)
    scheme = urlsplit(target).scheme.lower()
    if scheme in LIVE:
        _check_reachable(target, timeout_s)
        return _probe_av(target, timeout_s, transport if scheme in ("rtsp", "rtsps") else None, measure_s,
                         max_frames)
    path = Path(unquote(urlsplit(target).path)) if scheme == "file" else Path(target)
    if scheme not in ("", "file") and len(scheme) > 1:
        raise ProbeError("unreachable", f"unsupported source '{mask_url(target)}'; use rtsp://, http(s)://, "
                         "a file path or device:N")
    if not path.is_file():
        raise ProbeError("unreachable", f"no such file: {path}")
    return _probe_av(str(path), timeout_s, None, measure_s, max_frames)


def _check_reachable(url: str, timeout_s: float) -> None:
    """Name resolution and TCP first: their failures have clear names (FFmpeg's are vaguer)."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("rtsp", "rtsps", "http", "https"):
        return
    host = parts.hostname or ""
    try:
        port = parts.port or {"rtsp": 554, "rtsps": 322, "http": 80, "https": 443}[parts.scheme.lower()]
    except ValueError:
        raise ProbeError("unreachable", f"the port in {mask_url(url)} is not a number") from None
    where = f"{host}:{port}"
    if not host:
        raise ProbeError("unreachable", f"no host name in {mask_url(url)}")
    try:
        socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        raise ProbeError("unreachable", f"host name '{host}' cannot be resolved; check the camera address") from None
    except UnicodeError:  # an empty or over-long label ('.x', 'a..b'): often a password with '@' and '/' unencoded
        raise ProbeError("unreachable", f"'{host}' is not a valid host name; check the camera address (characters "
                         "such as @ / # ? in the user name or password must be percent-encoded)") from None
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            pass
    except ConnectionRefusedError:
        raise ProbeError("unreachable", f"connection refused by {where}; is the camera (or RTSP server) running, "
                         "and is the port right?") from None
    except TimeoutError:
        raise ProbeError("timeout", f"no answer from {where} within {timeout_s:g} s; check the address and the "
                         "network") from None
    except OSError as e:
        raise ProbeError("unreachable", f"cannot reach {where}: {e.strerror or e}") from None


def _av_failure(e: Exception, url: str, where: str, path: str, elapsed: float, timeout_s: float) -> ProbeError:
    import av

    if isinstance(e, av.error.HTTPUnauthorizedError):
        return ProbeError("auth_failed", f"{where} rejected the user name or password (401 Unauthorized); "
                          "check the credentials in the camera URL")
    if isinstance(e, av.error.HTTPForbiddenError):
        return ProbeError("auth_failed", f"{where} refused access to the stream (403 Forbidden); check the "
                          "account's rights")
    if isinstance(e, av.error.HTTPNotFoundError):
        return ProbeError("not_found", f"no stream at path '{path or '/'}' on {where} (404 Not Found); check the "
                          "path in the URL")
    if isinstance(e, av.error.ConnectionRefusedError):
        return ProbeError("unreachable", f"connection refused by {where}")
    if isinstance(e, av.error.FileNotFoundError):
        return ProbeError("unreachable", f"no such file: {url}")
    code = getattr(e, "errno", None)
    if elapsed >= 0.9 * timeout_s or code in (errno.ETIMEDOUT, errno.EAGAIN) or isinstance(e, av.error.ExitError):
        return ProbeError("timeout", f"no answer from {where} within {timeout_s:g} s")
    if isinstance(e, av.error.InvalidDataError):
        return ProbeError("unreadable", f"{where} sends data FFmpeg cannot read as video (invalid data)")
    text = getattr(e, "strerror", None) or str(e) or type(e).__name__
    return ProbeError("unreadable", f"the stream did not open: {_scrub(text, url)}")


def _probe_av(url: str, timeout_s: float, transport: str | None, measure_s: float, max_frames: int) -> ProbeResult:
    import av

    shown = mask_url(url)
    parts = urlsplit(url)
    where = shown if not parts.hostname else f"{parts.hostname}:{parts.port}" if parts.port else parts.hostname
    options = {"rtsp_transport": transport} if transport else {}
    start = time.monotonic()
    try:
        container = av.open(url, options=options, timeout=(timeout_s, timeout_s))
    except Exception as e:  # PyAV raises one class per FFmpeg error
        raise _av_failure(e, url, where, parts.path, time.monotonic() - start, timeout_s) from None
    connect_s = time.monotonic() - start
    try:
        if not container.streams.video:
            kinds = sorted({s.type for s in container.streams}) or ["no streams at all"]
            raise ProbeError("no_video", f"{shown} has no video track (it carries: {', '.join(kinds)})")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        ctx = stream.codec_context
        declared = stream.average_rate or stream.guessed_rate or stream.base_rate
        fps = float(declared) if declared else None
        fps = fps if fps and math.isfinite(fps) and 0 < fps <= 1000 else None
        first_s: float | None = None
        last = None
        times: list[float] = []
        n = 0
        deadline = start + timeout_s
        try:
            for frame in container.decode(stream):
                now = time.monotonic()
                n += 1
                last = frame
                if frame.time is not None:
                    times.append(float(frame.time))
                if first_s is None:
                    first_s = now - start
                    deadline = now + measure_s
                if n >= max_frames or now >= deadline:
                    break
        except Exception as e:
            if first_s is None:
                raise _av_failure(e, url, where, parts.path, time.monotonic() - start, timeout_s) from None
        if last is None or first_s is None:
            if time.monotonic() - start >= 0.9 * timeout_s:
                raise ProbeError("timeout", f"{shown} opened but sent no frame within {timeout_s:g} s")
            raise ProbeError("unreadable", f"{shown} opened but no frame could be decoded")
        image = last.to_ndarray(format="bgr24")
        measured = rate_from_timestamps(times)
        codec = ctx.name + (f" ({ctx.profile})" if getattr(ctx, "profile", None) else "")
        return ProbeResult(source=shown, codec=codec, width=int(last.width), height=int(last.height), fps=fps,
                           measured_fps=measured, connect_s=connect_s, first_frame_s=first_s, frames_read=n,
                           snapshot=image)
    finally:
        container.close()


def _probe_device(target: str, timeout_s: float, measure_s: float, max_frames: int) -> ProbeResult:
    spec = target.split(":", 1)[1]
    if not spec.isdigit():
        raise ProbeError("unreachable", f"'{target}' is not a device; write device:N (N = 0, 1, ...)")
    index = int(spec)
    if sys.platform.startswith("linux") and not os.path.exists(f"/dev/video{index}"):
        raise ProbeError("unreachable", f"video device {index} not found (/dev/video{index} does not exist)")
    start = time.monotonic()
    cap = cv2.VideoCapture(index)
    try:
        if not cap.isOpened():
            raise ProbeError("unreachable", f"cannot open video device {index} (busy, or not a capture device)")
        connect_s = time.monotonic() - start
        first_s: float | None = None
        image = None
        n = 0
        t_first = t_last = 0.0
        deadline = start + timeout_s
        while time.monotonic() < deadline and n < max_frames:
            ok, img = cap.read()
            now = time.monotonic()
            if not ok:
                continue
            n += 1
            image = img
            t_last = now
            if first_s is None:
                first_s, t_first = now - start, now
                deadline = now + measure_s
        if image is None or first_s is None:
            raise ProbeError("timeout", f"video device {index} sent no frame within {timeout_s:g} s")
        fourcc = int(cap.get(cv2.CAP_PROP_FOURCC))
        codec = "".join(chr((fourcc >> 8 * i) & 0xFF) for i in range(4)).strip("\x00 ") or "raw"
        fps = cap.get(cv2.CAP_PROP_FPS)
        return ProbeResult(
            source=f"device:{index}", codec=codec.lower(), width=image.shape[1], height=image.shape[0],
            fps=fps if math.isfinite(fps) and fps > 0 else None,
            measured_fps=(n - 1) / (t_last - t_first) if n >= 2 and t_last > t_first else None,
            connect_s=connect_s, first_frame_s=first_s, frames_read=n, snapshot=image,
        )
    finally:
        cap.release()


def save_snapshot(image: np.ndarray, path: str | Path) -> Path:
    """Write ``image`` as JPEG (or PNG by extension); the parent folder must exist."""
    p = Path(path)
    if not p.parent.is_dir():
        raise ValueError(f"cannot write the snapshot to {p}: folder {p.parent} does not exist")
    ext = p.suffix.lower() or ".jpg"
    ok, buf = cv2.imencode(ext if ext in (".jpg", ".jpeg", ".png", ".bmp", ".webp") else ".jpg", image)
    if not ok:
        raise ValueError(f"cannot encode the snapshot as {ext}")
    p.write_bytes(buf.tobytes())
    return p
