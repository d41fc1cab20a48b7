"""Per-camera pre-roll ring buffer of JPEG-compressed frames.

Why compressed: evidence clips need the seconds *before* a violation, so every camera keeps its
recent frames. Raw, a 1080p BGR frame is 1920 x 1080 x 3 = 6.2 MB; 60 s at 5 fps would be 1.9 GB per
camera. As JPEG (quality ~85) the same frame is ~150-300 KB, so the same minute fits in ~60 MB, and a
box with dozens of cameras stays within its memory. Encoding costs a few milliseconds per sampled
frame, paid once; decoding happens only when a clip is actually written.
"""

from __future__ import annotations

import bisect
import threading
from collections import deque
from itertools import islice

import cv2
import numpy as np


class RingBuffer:
    """Recent frames of one camera as ``(ts, jpeg bytes)``, oldest first, bounded by age and by size.

    ``max_seconds``: frames older than the newest timestamp minus this are dropped. ``max_bytes``: the
    oldest frames are dropped until the total JPEG size fits (a single frame larger than the whole
    budget is not stored). ``max_width``: wider frames are downscaled (aspect kept) before encoding.
    All methods are thread-safe: the stream thread appends while evidence capture reads.
    """

    def __init__(
        self, max_seconds: float, max_bytes: int = 256 * 1024 * 1024, *, jpeg_quality: int = 85,
        max_width: int | None = None,
    ) -> None:
        if max_seconds <= 0:
            raise ValueError(f"max_seconds must be positive, got {max_seconds}")
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive, got {max_bytes}")
        if not 1 <= jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must be 1..100, got {jpeg_quality}")
        if max_width is not None and max_width < 1:
            raise ValueError(f"max_width must be at least 1, got {max_width}")
        self.max_seconds = float(max_seconds)
        self.max_bytes = int(max_bytes)
        self.jpeg_quality = int(jpeg_quality)
        self.max_width = max_width
        self._lock = threading.Lock()
        self._ts: deque[float] = deque()
        self._data: deque[bytes] = deque()
        self._nbytes = 0

    def encode(self, image: np.ndarray) -> bytes:
        """The JPEG this buffer would store for ``image`` (downscaled to ``max_width`` if wider)."""
        h, w = image.shape[:2]
        if self.max_width is not None and w > self.max_width:
            new_h = max(1, round(h * self.max_width / w))
            image = cv2.resize(image, (self.max_width, new_h), interpolation=cv2.INTER_AREA)
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality])
        if not ok:
            raise ValueError(f"cannot encode a frame of shape {image.shape} as JPEG")
        return buf.tobytes()

    def append(self, ts: float, image: np.ndarray) -> int:
        """Compress and store a BGR frame taken at ``ts``; returns the stored size in bytes."""
        data = self.encode(image)  # outside the lock: encoding is the slow part
        self.append_jpeg(ts, data)
        return len(data)

    def append_jpeg(self, ts: float, data: bytes) -> None:
        """Store an already-encoded JPEG. Out-of-order timestamps are inserted in order."""
        with self._lock:
            if len(data) > self.max_bytes:
                return
            if not self._ts or ts >= self._ts[-1]:
                self._ts.append(ts)
                self._data.append(data)
            else:
                i = bisect.bisect_right(self._ts, ts)
                self._ts.insert(i, ts)
                self._data.insert(i, data)
            self._nbytes += len(data)
            self._evict()

    def _evict(self) -> None:
        horizon = self._ts[-1] - self.max_seconds
        while self._ts and (self._ts[0] < horizon or self._nbytes > self.max_bytes):
            self._ts.popleft()
            self._nbytes -= len(self._data.popleft())

    def between(self, t0: float, t1: float) -> list[tuple[float, bytes]]:
        """Frames with ``t0 <= ts <= t1``, oldest first."""
        with self._lock:
            lo = bisect.bisect_left(self._ts, t0)
            hi = bisect.bisect_right(self._ts, t1)
            return list(islice(zip(self._ts, self._data, strict=True), lo, hi))

    def latest(self) -> tuple[float, bytes] | None:
        """The newest frame, or None when empty."""
        with self._lock:
            if not self._ts:
                return None
            return self._ts[-1], self._data[-1]

    def oldest_ts(self) -> float | None:
        with self._lock:
            return self._ts[0] if self._ts else None

    def clear(self) -> None:
        with self._lock:
            self._ts.clear()
            self._data.clear()
            self._nbytes = 0

    @property
    def nbytes(self) -> int:
        """Total size of the stored JPEGs."""
        with self._lock:
            return self._nbytes

    def __len__(self) -> int:
        with self._lock:
            return len(self._ts)

    @staticmethod
    def decode(data: bytes) -> np.ndarray:
        """A stored JPEG back to a BGR image."""
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if image is None:
            raise ValueError("not a JPEG image")
        return image
