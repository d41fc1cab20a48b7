"""Camera sources over OpenCV's FFmpeg backend: video files, RTSP, HTTP MJPEG and local devices.

Sampling: every frame of the source is *grabbed* (demuxed and decoded by FFmpeg, cheap), and only the
frames picked for the target fps are *retrieved* (converted to BGR, the expensive copy). A frame is
picked when it is the nearest to the next due time ``k / fps``.

Time: for files, ``Frame.ts`` = wall time when the file was opened + position of the frame in the
file, so video time runs at video speed however fast the file is processed, and a looping file keeps
counting up. For live streams ``Frame.ts`` = ``time.time()`` right after the grab.

Live sources read in a background thread that always holds the freshest sampled frame: a consumer
slower than the target fps gets the newest frame, not a growing backlog (each frame replaced unseen
counts in ``health.frames_dropped``). When the stream cannot be opened, stalls (no frame within
``read_timeout_s``) or ends, the thread reopens it with exponential backoff and jitter until
:meth:`LiveSource.close`. Credentials in URLs never reach a log line or an error message
(:func:`nonsite.config.mask_url`).
"""

from __future__ import annotations

import logging
import math
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlsplit

import cv2
import numpy as np

from nonsite.config.cameras import mask_url, scrub
from nonsite.streams.base import Frame, SourceError, decoder_params
from nonsite.streams.health import Backoff, HealthTracker, SourceHealth, SourceState

log = logging.getLogger("nonsite.streams")

_OPTIONS_ENV = "OPENCV_FFMPEG_CAPTURE_OPTIONS"


def _split_options(value: str) -> list[str]:
    return [kv for kv in value.split("|") if kv and not kv.startswith("rtsp_transport;")]


class _CaptureOptions:
    """OpenCV reads FFmpeg options (``rtsp_transport``) from one process-wide environment variable at
    open time. Opens that need the same value run concurrently; an open that needs another value
    waits until those in flight have returned, so a UDP camera never opens with a TCP camera's options.
    Options the operator put in the variable beforehand (e.g. ``hwaccel``) are kept."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._current: str | None = None
        self._inflight = 0
        self._base = _split_options(os.environ.get(_OPTIONS_ENV, ""))

    @contextmanager
    def use(self, transport: str | None) -> Iterator[None]:
        value = "|".join(self._base + ([f"rtsp_transport;{transport}"] if transport else []))
        with self._cond:
            while self._inflight and self._current != value:
                self._cond.wait()
            if self._current != value:
                if value:
                    os.environ[_OPTIONS_ENV] = value
                else:
                    os.environ.pop(_OPTIONS_ENV, None)
                self._current = value
            self._inflight += 1
        try:
            yield
        finally:
            with self._cond:
                self._inflight -= 1
                self._cond.notify_all()


_OPTIONS = _CaptureOptions()


def _scrub(text: str, url: str) -> str:
    """Remove a URL's password from any text (library messages may quote the URL, or the password alone)."""
    return scrub(text, url)


def _finite_positive(x: float) -> float | None:
    return x if math.isfinite(x) and x > 0 else None


class _Sampler:
    """Picks, from a sequence of frame times, the frame nearest to each due time ``t0 + k/fps``."""

    def __init__(self, fps: float, source_fps: float | None) -> None:
        self.period = 1.0 / fps
        # Half a source frame: the frame closest to the due time wins, not the first one after it.
        self.tolerance = 0.5 / source_fps if source_fps and 1.0 <= source_fps <= 240.0 else 0.0
        self.next_due: float | None = None

    def take(self, t: float) -> bool:
        if self.next_due is None:
            self.next_due = t + self.period
            return True
        if t + self.tolerance < self.next_due:
            return False
        # After a gap (stall, seek) restart the grid at this frame instead of bursting to catch up.
        self.next_due = self.next_due + self.period if t - self.next_due < self.period else t + self.period
        return True


class FileSource:
    """Frames of a video file (or a still image, which reads as a one-frame video) at ``fps``.

    ``loop`` starts again at the end, timestamps and indices keep increasing; ``realtime`` holds each
    frame back until its timestamp, like a camera would deliver it. ``frames()`` can be iterated once.
    """

    def __init__(
        self, camera_id: str, path: str | os.PathLike[str], *, fps: float, loop: bool = False,
        realtime: bool = False, decode_threads: int = 1,
    ) -> None:
        """``decode_threads``: FFmpeg decoding threads (0 = FFmpeg's choice, one per core plus one). Each
        thread keeps frame buffers of its own, so a camera's decoder memory grows with it (bench/memory.py); one
        thread also spends the least CPU per frame of a file the detector, not the decoder, keeps waiting."""
        if fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        decoder_params(decode_threads)  # refuses a negative count here, not at the first open
        self.camera_id = camera_id
        self.path = Path(path)
        self.fps = fps
        self.loop = loop
        self.realtime = realtime
        self.decode_threads = decode_threads
        self._closed = threading.Event()
        self._started = False
        self._health = HealthTracker(camera_id)
        self._check_exists()

    @property
    def health(self) -> SourceHealth:
        return self._health.snapshot()

    def close(self) -> None:
        """Stop: the iterating thread releases the file at its next step."""
        self._closed.set()
        self._health.set_state(SourceState.finished)

    def _check_exists(self) -> None:
        if not self.path.exists():
            raise SourceError(f"video file not found: {self.path}; check the camera's source url")
        if not self.path.is_file():
            raise SourceError(f"video source {self.path} is not a file; give the path of a video file")

    def _open(self) -> cv2.VideoCapture:
        self._check_exists()
        cap = cv2.VideoCapture(str(self.path), cv2.CAP_FFMPEG, decoder_params(self.decode_threads))
        if not cap.isOpened():
            cap.release()
            # Still images open through the image-sequence reader when FFmpeg declines them.
            cap = cv2.VideoCapture(str(self.path), cv2.CAP_ANY)
        if not cap.isOpened():
            cap.release()
            raise SourceError(
                f"cannot open video file {self.path}: OpenCV/FFmpeg does not recognise it as a video "
                "(corrupt, or an unsupported format)"
            )
        return cap

    def frames(self) -> Iterator[Frame]:
        if self._started:
            raise RuntimeError(f"frames() of camera {self.camera_id} is already being iterated")
        self._started = True
        return self._frames()

    def _frames(self) -> Iterator[Frame]:
        if self._closed.is_set():
            return
        self._health.set_state(SourceState.connecting)
        cap = self._open()
        t_open = time.time()
        try:
            source_fps = _finite_positive(cap.get(cv2.CAP_PROP_FPS))
            frame_dt = 1.0 / source_fps if source_fps else 1.0 / self.fps
            sampler = _Sampler(self.fps, source_fps)
            offset = 0.0  # video time at the start of the current pass
            index = 0
            passes = 0
            still: np.ndarray | None = None
            spent = 0.0  # decode time since the last emitted frame
            log.info("camera %s: reading %s (%.3g fps, sampling %.3g fps%s)", self.camera_id, self.path,
                     source_fps or float("nan"), self.fps, ", looping" if self.loop else "")
            while not self._closed.is_set():
                n = 0
                first_pos = last_pos = 0.0
                while not self._closed.is_set():
                    t_grab = time.perf_counter()
                    grabbed = cap.grab()
                    spent += time.perf_counter() - t_grab
                    if not grabbed:
                        break
                    pos = cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
                    if n == 0:
                        first_pos = pos if math.isfinite(pos) else 0.0
                        pos = first_pos
                    elif not math.isfinite(pos) or pos <= last_pos:
                        pos = last_pos + frame_dt  # missing or non-monotonic timestamps
                    last_pos = pos
                    t = offset + pos - first_pos
                    ts = t_open + t
                    i = index
                    index += 1
                    n += 1
                    self._health.decoded(ts)
                    if not sampler.take(t):
                        continue
                    t_retrieve = time.perf_counter()
                    ok, image = cap.retrieve()
                    spent += time.perf_counter() - t_retrieve
                    if not ok or image is None:
                        log.debug("camera %s: frame %d could not be converted; skipped", self.camera_id, i)
                        continue
                    if passes == 0 and n == 1:
                        still = image
                    if not self._pace(ts):
                        return
                    frame = self._emit(i, ts, image, spent)
                    spent = 0.0
                    yield frame
                if self._closed.is_set():
                    break
                if n == 0:
                    if passes == 0:
                        raise SourceError(f"no frames could be decoded from video file {self.path}")
                    log.warning("camera %s: %s yields no frames on reopening; stopping", self.camera_id,
                                self.path)
                    break
                passes += 1
                if not self.loop:
                    break
                offset += last_pos - first_pos + frame_dt
                if n == 1 and still is not None:
                    # A still image (one-frame video): repeat it instead of decoding it again and again.
                    cap.release()
                    yield from self._repeat_still(still, t_open, offset, frame_dt, index, sampler)
                    return
                cap.release()
                cap = self._open()
            count = self._health.snapshot().frames_decoded
            log.info("camera %s: %s finished after %d frames", self.camera_id, self.path, count)
        finally:
            cap.release()
            self._health.set_state(SourceState.finished)

    def _repeat_still(
        self, image: np.ndarray, t_open: float, offset: float, frame_dt: float, index: int, sampler: _Sampler
    ) -> Iterator[Frame]:
        t = offset
        while not self._closed.is_set():
            ts = t_open + t
            self._health.decoded(ts)
            if sampler.take(t):
                if not self._pace(ts):
                    return
                yield self._emit(index, ts, image.copy())
            index += 1
            t += frame_dt

    def _pace(self, ts: float) -> bool:
        """In realtime mode wait until ``ts``; False when closed meanwhile."""
        if self.realtime:
            delay = ts - time.time()
            if delay > 0 and self._closed.wait(delay):
                return False
        return not self._closed.is_set()

    def _emit(self, index: int, ts: float, image: np.ndarray, decode_s: float = 0.0) -> Frame:
        self._health.sampled()
        self._health.set_state(SourceState.up)
        return Frame(camera_id=self.camera_id, index=index, ts=ts, image=image, decode_s=decode_s)


class LiveSource:
    """A live stream (RTSP, HTTP MJPEG, local device) sampled at ``fps``, reconnecting until closed.

    ``target`` is a URL (``rtsp://user:pass@host/path``, ``http://...``) or a device index. RTSP goes
    over TCP unless ``transport="udp"``. Open and read timeouts are handed to FFmpeg; a read that
    waits longer than ``read_timeout_s`` counts as a stall and the stream is reopened.
    """

    def __init__(
        self,
        camera_id: str,
        target: str | int,
        *,
        fps: float,
        transport: str = "tcp",
        open_timeout_s: float = 10.0,
        read_timeout_s: float = 10.0,
        reconnect_initial_s: float = 0.5,
        reconnect_max_s: float = 30.0,
        decode_threads: int = 1,
    ) -> None:
        if fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        if transport not in ("tcp", "udp"):
            raise ValueError(f"transport must be 'tcp' or 'udp', got {transport!r}")
        self.camera_id = camera_id
        self.target = target
        self.fps = fps
        self.transport = transport
        self.open_timeout_s = open_timeout_s
        self.read_timeout_s = read_timeout_s
        self.reconnect_initial_s = reconnect_initial_s
        self.reconnect_max_s = reconnect_max_s
        decoder_params(decode_threads)  # refuses a negative count here, not in the reconnect loop
        self.decode_threads = decode_threads
        self.display = f"device:{target}" if isinstance(target, int) else mask_url(target)
        """The source as it may be shown and logged (password masked)."""
        self._closed = threading.Event()
        self._cond = threading.Condition()
        self._slot: Frame | None = None
        self._thread: threading.Thread | None = None
        self._started = False
        self._health = HealthTracker(camera_id)

    # -- public ---------------------------------------------------------------------------------

    @property
    def health(self) -> SourceHealth:
        """Current health. A stream that is 'up' but has sent nothing for longer than the read timeout
        (plus a second) reads as 'down', even while FFmpeg is still blocked in a read."""
        h = self._health.snapshot()
        if h.state is SourceState.up and h.last_frame_ts is not None:
            silent = time.time() - h.last_frame_ts
            if silent > self.read_timeout_s + 1.0:
                h = replace(h, state=SourceState.down, last_error=f"stalled: no frame for {silent:.0f} s")
        return h

    def frames(self) -> Iterator[Frame]:
        if self._started:
            raise RuntimeError(f"frames() of camera {self.camera_id} is already being iterated")
        self._started = True
        self.start()
        return self._frames()

    def start(self) -> None:
        """Start reading in the background (``frames()`` does this); idempotent."""
        with self._cond:
            if self._thread is None and not self._closed.is_set():
                self._thread = threading.Thread(
                    target=self._run, name=f"source-{self.camera_id}", daemon=True
                )
                self._thread.start()

    def close(self, timeout: float | None = None) -> None:
        """Stop reading and release the stream. Waits for the reader (at most ``timeout``, by default
        the open/read timeout, which bounds any blocking FFmpeg call)."""
        self._closed.set()
        with self._cond:
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout if timeout is not None else max(self.open_timeout_s, self.read_timeout_s) + 1)
        self._health.set_state(SourceState.finished)

    # -- consumer side --------------------------------------------------------------------------

    def _frames(self) -> Iterator[Frame]:
        while True:
            with self._cond:
                while self._slot is None and not self._closed.is_set():
                    self._cond.wait(0.5)
                if self._closed.is_set():
                    return
                frame, self._slot = self._slot, None
            yield frame

    # -- reader thread --------------------------------------------------------------------------

    def _open_capture(self) -> cv2.VideoCapture:
        if isinstance(self.target, int):
            return cv2.VideoCapture(self.target)
        params = [
            cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, max(1, int(self.open_timeout_s * 1000)),
            cv2.CAP_PROP_READ_TIMEOUT_MSEC, max(1, int(self.read_timeout_s * 1000)),
            *decoder_params(self.decode_threads),
        ]
        scheme = urlsplit(self.target).scheme.lower()
        with _OPTIONS.use(self.transport if scheme in ("rtsp", "rtsps") else None):
            return cv2.VideoCapture(self.target, cv2.CAP_FFMPEG, params)

    def _run(self) -> None:
        backoff = Backoff(self.reconnect_initial_s, self.reconnect_max_s)
        ever_up = False
        while not self._closed.is_set():
            self._health.set_state(SourceState.connecting)
            started = time.monotonic()
            cap: cv2.VideoCapture | None = None
            try:
                cap = self._open_capture()
                opened = cap.isOpened()
            except Exception as e:  # cv2.error and friends: the stream is down, the thread lives on
                opened = False
                log.debug("camera %s: open raised %s", self.camera_id, _scrub(repr(e), self._url))
            if not opened:
                if cap is not None:
                    cap.release()
                if self._closed.is_set():
                    break
                reason = _scrub(self._diagnose(time.monotonic() - started), self._url)
                self._health.open_failed(reason)
                self._health.set_state(SourceState.down, reason)
                wait = backoff.next()
                log.warning("camera %s: cannot open %s: %s; retrying in %.1f s",
                            self.camera_id, self.display, reason, wait)
                self._closed.wait(wait)
                continue
            assert cap is not None
            log.info("camera %s: opened %s", self.camera_id, self.display)
            try:
                got_frames, reason = self._read(cap, backoff, ever_up)
            except Exception as e:
                got_frames, reason = False, f"read failed: {_scrub(str(e), self._url)}"
            finally:
                cap.release()
            ever_up = ever_up or got_frames
            if self._closed.is_set():
                break
            self._health.set_state(SourceState.down, reason)
            wait = backoff.next()
            log.warning("camera %s: lost %s: %s; reconnecting in %.1f s",
                        self.camera_id, self.display, reason, wait)
            self._closed.wait(wait)
        self._health.set_state(SourceState.finished)
        log.info("camera %s: closed %s", self.camera_id, self.display)

    @property
    def _url(self) -> str:
        return self.target if isinstance(self.target, str) else ""

    def _read(self, cap: cv2.VideoCapture, backoff: Backoff, ever_up: bool) -> tuple[bool, str]:
        """Grab until the stream fails; returns (whether any frame arrived, why it stopped)."""
        sampler = _Sampler(self.fps, _finite_positive(cap.get(cv2.CAP_PROP_FPS)))
        got = False
        last_good = time.monotonic()
        spent = 0.0  # reader-thread CPU time in grab/retrieve since the last sampled frame
        while not self._closed.is_set():
            t_call = time.monotonic()
            cpu = time.thread_time()
            ok = cap.grab()
            ts = time.time()
            spent += time.thread_time() - cpu
            waited = time.monotonic() - t_call
            if waited >= 0.9 * self.read_timeout_s:
                # FFmpeg's read timed out. grab() may still return True with a frame drained from the
                # decoder, but that frame is old: the stream has stalled either way.
                return got, f"stalled: no data for {self.read_timeout_s:g} s"
            if not ok:
                return got, "the stream ended or the connection was closed"
            index = self._health.snapshot().frames_decoded
            self._health.decoded(ts)
            if not got:
                got = True
                backoff.reset()
                self._health.set_state(SourceState.up)
                if ever_up:
                    self._health.reconnected()
                    log.info("camera %s: reconnected to %s", self.camera_id, self.display)
            if not sampler.take(ts):
                if time.monotonic() - last_good > self.read_timeout_s:
                    return got, f"frames arrive but none could be decoded for {self.read_timeout_s:g} s"
                continue
            cpu = time.thread_time()
            ok, image = cap.retrieve()
            spent += time.thread_time() - cpu
            if not ok or image is None:
                if time.monotonic() - last_good > self.read_timeout_s:
                    return got, f"frames arrive but none could be decoded for {self.read_timeout_s:g} s"
                continue
            last_good = time.monotonic()
            self._health.sampled()
            self._health.set_state(SourceState.up)
            frame = Frame(camera_id=self.camera_id, index=index, ts=ts, image=image, decode_s=spent)
            spent = 0.0
            with self._cond:
                if self._slot is not None:
                    self._health.dropped()
                    log.debug("camera %s: consumer is slower than %.3g fps; frame %d replaced",
                              self.camera_id, self.fps, self._slot.index)
                self._slot = frame
                self._cond.notify_all()
        return got, "closed"

    def _diagnose(self, elapsed: float) -> str:
        """One sentence on why the stream did not open (OpenCV itself only says 'not opened')."""
        if isinstance(self.target, int):
            dev = f"/dev/video{self.target}"
            if sys.platform.startswith("linux") and not os.path.exists(dev):
                return f"video device {self.target} not found ({dev} does not exist)"
            return f"cannot open video device {self.target} (busy, or not a capture device)"
        return diagnose_open_failure(self.target, self.transport, self.open_timeout_s, elapsed)


def diagnose_open_failure(url: str, transport: str, timeout_s: float, elapsed: float = 0.0) -> str:
    """Find out why a stream URL does not open: name resolution, TCP, then (with PyAV, if installed)
    the server's answer (401 credentials, 404 path). Never includes the password."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = parts.hostname or ""
    default_port = {"rtsp": 554, "rtsps": 322, "http": 80, "https": 443}.get(scheme, 0)
    try:
        port = parts.port or default_port
    except ValueError:
        return f"the port in {mask_url(url)} is not a number"
    where = f"{host}:{port}"
    if elapsed >= 0.9 * timeout_s:
        return f"no answer from {where} within the open timeout of {timeout_s:g} s"
    if not host:
        return f"no host name in {mask_url(url)}"
    try:
        socket.getaddrinfo(host, port or None, type=socket.SOCK_STREAM)
    except socket.gaierror:
        return f"host name '{host}' cannot be resolved; check the camera address"
    if port:
        try:
            with socket.create_connection((host, port), timeout=min(timeout_s, 5.0)):
                pass
        except ConnectionRefusedError:
            return f"connection refused by {where}; is the camera (or RTSP server) running, and is the port right?"
        except TimeoutError:
            return f"no answer from {where}; check the address and the network"
        except OSError as e:
            return f"cannot reach {where}: {e.strerror or e}"
    try:
        import av  # optional: only used to read the server's reason
    except ImportError:
        return (f"{where} accepts connections but the stream did not open "
                "(wrong path or credentials, or an unsupported format)")
    options = {"rtsp_transport": transport} if scheme in ("rtsp", "rtsps") else {}
    try:
        with av.open(url, options=options, timeout=(min(timeout_s, 5.0), min(timeout_s, 5.0))):
            return "FFmpeg opens the stream but OpenCV could not read from it (unsupported codec?)"
    except av.error.HTTPUnauthorizedError:
        return (f"{where} rejected the user name or password (401 Unauthorized); "
                "check the credentials in the camera URL")
    except av.error.HTTPForbiddenError:
        return f"{where} refused access to the stream (403 Forbidden); check the account's rights"
    except av.error.HTTPNotFoundError:
        return f"no stream at path '{parts.path or '/'}' on {where} (404 Not Found); check the path in the URL"
    except av.error.FFmpegError as e:
        return f"the stream did not open: {_scrub(e.strerror or type(e).__name__, url)}"
    except Exception as e:
        return f"the stream did not open: {_scrub(str(e), url)}"
