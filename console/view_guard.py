"""What the console shows of the camera view guard (the edge's :class:`nonsite.ops.cameras.ViewStatus`): on the
camera page, the verdict with the current and the reference pictures side by side; on the queue, a banner
naming the cameras whose view moved (their rules are paused, so the queue is silent about their streets)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import Request

from nonsite.console.i18n import local_time
from nonsite.console.views import root_path, state_of
from nonsite.ops.cameras import CameraStatus


def view_of(request: Request, cam: CameraStatus) -> dict[str, Any] | None:
    """The template's view of one camera's view guard, or None when its view is not checked."""
    v = cam.view
    if v is None:
        return None
    zone = state_of(request).zone
    since = local_time(datetime.fromtimestamp(v.since, UTC), zone) if v.since else ""
    return {
        "state": v.state,
        "since": since,
        "shift_pct": round(v.shift * 100, 1) if v.shift is not None and v.shift < 1 else None,
        "message": v.changes[0].message if v.changes else "",
        "reference_url": f"{root_path(request)}/cameras/{cam.id}/reference.jpg",
        "snapshot_url": f"{root_path(request)}/cameras/{cam.id}/snapshot.jpg",
        "reference_taken": local_time(datetime.fromtimestamp(v.reference_taken_at, UTC), zone)
        if v.reference_taken_at else "",
    }


def moved_cameras(request: Request) -> list[dict[str, Any]]:
    """Cameras whose view moved (rules paused), for the queue's banner; empty when no cameras are managed here."""
    control = state_of(request).cameras
    if control is None:
        return []
    return [{"id": c.id, "name": c.name or c.id, "url": f"{root_path(request)}/cameras#camera-{c.id}"}
            for c in control.cameras() if c.view is not None and c.view.state == "moved"]
