"""Frames and the source interface every camera source implements."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass
class Frame:
    """One decoded frame of a camera, sampled for detection."""

    camera_id: str
    index: int
    """Position of the frame in the source's own sequence (0-based, counts dropped frames too)."""
    ts: float
    """Capture time, seconds since the epoch (UTC). Files: open time + position in the file."""
    image: np.ndarray
    """BGR uint8, H x W x 3."""
    decode_s: float = 0.0
    """Seconds spent reading and decoding this frame, including the frames skipped since the previous
    sampled one. Files: wall time of grab + retrieve. Live streams: CPU time of the reader thread in
    grab + retrieve (wall time would include waiting for the network)."""

    @property
    def shape(self) -> tuple[int, int]:
        h, w = self.image.shape[:2]
        return w, h


class SourceError(Exception):
    """A source cannot be opened or read; the message says why (auth failed, unreachable, ...)."""


class Source(Protocol):
    camera_id: str

    def frames(self) -> Iterator[Frame]:
        """Frames sampled at the configured fps; ends when a file ends (unless looping) or on close()."""

    def close(self) -> None: ...
