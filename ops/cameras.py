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
class ViewChange:
    ts: float
    state: str
    """ok | shifted | moved"""
    message: str
    """English, for the log and the API."""


@dataclass(frozen=True)
class ViewStatus:
    """The camera view guard's verdict: does the camera still look where its zones were drawn?"""

    state: str
    """ok (matches the zones' reference) | shifted (moved a little: zones re-registered, rules go on) |
    moved (rules paused)"""
    since: float | None = None
    shift: float | None = None
    """Movement of the view at the last check, as a fraction of the frame diagonal."""
    inliers: int | None = None
    matches: int | None = None
    reference_taken_at: float | None = None
    changes: list[ViewChange] = field(default_factory=list)
    """The latest state changes, newest first."""
    changes_by_state: dict[str, int] = field(default_factory=dict)
    """How many times the view entered each state (for the metrics)."""


@dataclass(frozen=True)
class CameraStatus:
    id: str
    name: str
    state: str
    """connecting | up | down | finished | disabled | stale (distributed mode: no state from its worker lately)"""
    fps: float
    """Frames sampled per second over the last minute."""
    last_frame_ts: float | None
    reconnects: int
    last_error: str | None
    zones: list[dict[str, Any]] = field(default_factory=list)
    """The camera's zones as config dicts: id, name, kind, polygon (normalized), dwell_s."""
    address: str = ""
    view: ViewStatus | None = None
    """The view guard's verdict (None: not checked, e.g. a camera without zones)."""
    worker: str = ""
    """Distributed mode: the edge or pool worker that reported it last ("" in the embedded mode)."""
    reported_at: float | None = None
    """Distributed mode: when its latest state arrived (unix seconds; None: never)."""
    zones_pending: bool = False
    """Distributed mode: zones were saved here that its worker has not reported applied yet."""
    zones_error: str | None = None
    """Distributed mode: why its worker refused the zones saved last (None: none refused)."""


class CameraControl(Protocol):
    def cameras(self) -> list[CameraStatus]:
        """Every configured camera with its health."""

    def snapshot(self, camera_id: str) -> bytes | None:
        """The latest frame as JPEG, or None when none was seen yet. KeyError for an unknown camera."""

    def reference(self, camera_id: str) -> bytes | None:
        """The JPEG reference snapshot the camera's zones were drawn on (view guard), or None. KeyError for an
        unknown camera."""

    def set_zones(self, camera_id: str, zones: list[dict[str, Any]]) -> None:
        """Validate, persist to the config file and apply live. ValueError with a user-readable message
        when a zone is invalid; KeyError for an unknown camera."""
