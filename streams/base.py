"""Frames and the source interface every camera source implements."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import cv2
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


def decoder_params(decode_threads: int) -> list[int]:
    """The ``cv2.VideoCapture`` parameters that give FFmpeg's decoder ``decode_threads`` threads (0: FFmpeg's
    choice, no parameter); ``ValueError`` below 0. Every source that decodes a video (file, live, composite) opens
    its capture with these."""
    if decode_threads < 0:
        raise ValueError(f"decode_threads must be 0 or more, got {decode_threads}")
    return [cv2.CAP_PROP_N_THREADS, decode_threads] if decode_threads > 0 else []
