"""Camera health (read by the console and the metrics exporter) and the reconnect backoff."""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, replace
from enum import StrEnum


class SourceState(StrEnum):
    """Where a source stands."""

    connecting = "connecting"
    """Opening the stream (first time or after a loss)."""
    up = "up"
    """Frames are arriving."""
    down = "down"
    """Open failed or the stream stalled; waiting to retry (``last_error`` says why)."""
    finished = "finished"
    """A file ended (not looping) or the source was closed."""


@dataclass(frozen=True)
class SourceHealth:
    """A snapshot of one source's health; cheap to take from any thread."""

    camera_id: str
    state: SourceState
    since: float
    """When the source entered ``state`` (epoch seconds)."""
    last_frame_ts: float | None
    """Timestamp of the newest decoded frame, or None before the first."""
    frames_decoded: int
    """Frames read from the source (sampled or dropped)."""
    frames_sampled: int
    """Frames converted and handed on at the target fps."""
    reconnects: int
    """Times a lost live stream was opened again successfully."""
    open_failures: int
    """Failed attempts to open the stream."""
    last_error: str | None
    """Why the source was last down (credentials masked), or None."""
    frames_dropped: int = 0
    """Live sources: sampled frames replaced by a newer one before the consumer took them (the consumer
    was slower than the target fps; latest-frame semantics)."""

    def to_dict(self) -> dict[str, object]:
        return {
            "camera_id": self.camera_id,
            "state": self.state.value,
            "since": self.since,
            "last_frame_ts": self.last_frame_ts,
            "frames_decoded": self.frames_decoded,
            "frames_sampled": self.frames_sampled,
            "reconnects": self.reconnects,
            "open_failures": self.open_failures,
            "last_error": self.last_error,
            "frames_dropped": self.frames_dropped,
        }


class HealthTracker:
    """Thread-safe mutable health behind :class:`SourceHealth` snapshots."""

    def __init__(self, camera_id: str) -> None:
        self._lock = threading.Lock()
        self._h = SourceHealth(
            camera_id=camera_id,
            state=SourceState.connecting,
            since=time.time(),
            last_frame_ts=None,
            frames_decoded=0,
            frames_sampled=0,
            reconnects=0,
            open_failures=0,
            last_error=None,
        )

    def snapshot(self) -> SourceHealth:
        with self._lock:
            return self._h

    def set_state(self, state: SourceState, error: str | None = None) -> None:
        with self._lock:
            h = self._h
            changes: dict[str, object] = {}
            if h.state != state:
                changes.update(state=state, since=time.time())
            if error is not None:
                changes["last_error"] = error
            if changes:
                self._h = replace(h, **changes)  # type: ignore[arg-type]

    def decoded(self, ts: float) -> None:
        with self._lock:
            self._h = replace(self._h, frames_decoded=self._h.frames_decoded + 1, last_frame_ts=ts)

    def sampled(self) -> None:
        with self._lock:
            self._h = replace(self._h, frames_sampled=self._h.frames_sampled + 1)

    def dropped(self) -> None:
        with self._lock:
            self._h = replace(self._h, frames_dropped=self._h.frames_dropped + 1)

    def reconnected(self) -> None:
        with self._lock:
            self._h = replace(self._h, reconnects=self._h.reconnects + 1)

    def open_failed(self, error: str) -> None:
        with self._lock:
            self._h = replace(self._h, open_failures=self._h.open_failures + 1, last_error=error)


class Backoff:
    """Exponential backoff with jitter: ``initial * 2**n`` capped at ``maximum``, each wait drawn from
    the upper half of that (so many cameras that lost the same server do not return in lockstep)."""

    def __init__(self, initial: float, maximum: float, rng: random.Random | None = None) -> None:
        self.initial = initial
        self.maximum = max(maximum, initial)
        self._n = 0
        self._rng = rng or random.Random()

    def next(self) -> float:
        ceiling = min(self.maximum, self.initial * (2.0 ** min(self._n, 32)))
        self._n += 1
        return self._rng.uniform(ceiling / 2.0, ceiling)

    def reset(self) -> None:
        self._n = 0
