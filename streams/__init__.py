"""Camera sources (file, RTSP, HTTP MJPEG, device), sampling, reconnect, health and the pre-roll buffer.

``open_source(camera)`` turns a :class:`~nonsite.config.CameraConfig` into a :class:`Source`; iterate
``source.frames()``, read ``source.health`` from any thread, and ``source.close()`` when done.
"""

from __future__ import annotations

import os
from urllib.parse import unquote, urlsplit

from nonsite.config.cameras import CameraConfig, mask_url
from nonsite.streams.base import Frame, Source, SourceError
from nonsite.streams.composite import SPEC_SUFFIX, CompositeSource
from nonsite.streams.health import SourceHealth, SourceState
from nonsite.streams.opencv_source import FileSource, LiveSource, diagnose_open_failure
from nonsite.streams.ringbuffer import RingBuffer

LIVE_SCHEMES = frozenset({"rtsp", "rtsps", "http", "https", "rtmp", "srt", "udp", "tcp"})


def open_source(camera: CameraConfig) -> FileSource | LiveSource | CompositeSource:
    """Build the source for a camera from its ``source`` section. Nothing is opened until ``frames()``
    is iterated, except that a missing video file is reported at once (:class:`SourceError`)."""
    src = camera.source
    url = src.url.strip()
    if url.lower().startswith("device:"):
        spec = url.split(":", 1)[1]
        if not spec.isdigit():
            raise SourceError(f"camera {camera.id}: '{url}' is not a device; write device:N (N = 0, 1, ...)")
        return LiveSource(camera.id, int(spec), fps=camera.fps, open_timeout_s=src.open_timeout_s,
                          read_timeout_s=src.read_timeout_s, reconnect_initial_s=src.reconnect_initial_s,
                          reconnect_max_s=src.reconnect_max_s, decode_threads=src.decode_threads)
    scheme = urlsplit(url).scheme.lower()
    if scheme in LIVE_SCHEMES:
        return LiveSource(camera.id, url, fps=camera.fps, transport=src.transport,
                          open_timeout_s=src.open_timeout_s, read_timeout_s=src.read_timeout_s,
                          reconnect_initial_s=src.reconnect_initial_s, reconnect_max_s=src.reconnect_max_s,
                          decode_threads=src.decode_threads)
    if scheme == "file":
        parts = urlsplit(url)
        path = unquote(parts.path)
        if parts.netloc and parts.netloc != "localhost":
            path = f"//{parts.netloc}{path}"
        return FileSource(camera.id, path, fps=camera.fps, loop=src.loop, realtime=src.realtime,
                          decode_threads=src.decode_threads)
    if scheme == "" or (len(scheme) == 1 and os.name == "nt"):  # a plain path (or C:\ on Windows)
        if url.endswith(SPEC_SUFFIX):  # a composite clip generated from real media (the demo's left objects)
            return CompositeSource(camera.id, url, camera.fps, loop=src.loop, realtime=src.realtime,
                                   decode_threads=src.decode_threads)
        return FileSource(camera.id, url, fps=camera.fps, loop=src.loop, realtime=src.realtime,
                          decode_threads=src.decode_threads)
    raise SourceError(
        f"camera {camera.id}: unsupported source '{mask_url(url)}'; use rtsp://, http(s):// (MJPEG), "
        f"a file path or file://, a composite clip (*{SPEC_SUFFIX}), or device:N"
    )


__all__ = [
    "CompositeSource", "FileSource", "Frame", "LiveSource", "RingBuffer", "Source", "SourceError", "SourceHealth",
    "SourceState", "diagnose_open_failure", "open_source",
]
