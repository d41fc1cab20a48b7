"""The contract between the running cameras and whoever shows them (the console): their health, the
latest picture, zone edits.

It lives in the neutral operations package so both sides import it and neither imports the other: the
edge implements :class:`CameraControl` (:mod:`nonsite.pipeline.control`), the console consumes it, and the
process that serves the console passes one in (or none, and the cameras page says the cameras are not
managed by this process).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class CameraStatus:
    id: str
    name: str
    state: str
    """connecting | up | down | finished | disabled"""
    fps: float
    """Frames sampled per second over the last minute."""
    last_frame_ts: float | None
    reconnects: int
    last_error: str | None
    zones: list[dict[str, Any]] = field(default_factory=list)
    """The camera's zones as config dicts: id, name, kind, polygon (normalized), dwell_s."""
    address: str = ""


class CameraControl(Protocol):
    def cameras(self) -> list[CameraStatus]:
        """Every configured camera with its health."""

    def snapshot(self, camera_id: str) -> bytes | None:
        """The latest frame as JPEG, or None when none was seen yet. KeyError for an unknown camera."""

    def set_zones(self, camera_id: str, zones: list[dict[str, Any]]) -> None:
        """Validate, persist to the config file and apply live. ValueError with a user-readable message
        when a zone is invalid; KeyError for an unknown camera."""
