"""The console's view of the cameras an :class:`~nonsite.pipeline.edge.EdgeRunner` runs in this process
(:class:`nonsite.ops.cameras.CameraControl`): health, the latest picture, and zone edits that are
written to the config file and applied live (the camera keeps its connection and tracks)."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

from nonsite.config import CameraConfig, ConfigError
from nonsite.config.writer import update_camera_zones
from nonsite.ops.cameras import CameraStatus
from nonsite.pipeline.edge import EdgeRunner
from nonsite.pipeline.violations import load_config


def zone_dicts(camera: CameraConfig) -> list[dict[str, Any]]:
    """A camera's zones as plain config dicts (polygon as ``[[x, y], ...]``)."""
    return [z.model_dump(mode="json") for z in camera.zones]


class EdgeCameraControl:
    """:class:`~nonsite.ops.cameras.CameraControl` over a running :class:`EdgeRunner` and its config
    file."""

    def __init__(self, runner: EdgeRunner, config_path: str | os.PathLike[str]) -> None:
        self.runner = runner
        self.config_path = Path(config_path)
        self._lock = threading.Lock()  # one zone edit at a time: read, write, apply

    def cameras(self) -> list[CameraStatus]:
        out = []
        for cam in self.runner.cameras:
            run = self.runner.run_of(cam.id)
            h = run.health if run is not None else None
            if run is None or h is None:
                state, last_ts, reconnects, error, fps = "disabled", None, 0, None, 0.0
            else:
                state, last_ts, reconnects, error = h.state.value, h.last_frame_ts, h.reconnects, h.last_error
                fps = run.fps()
                if run.error:
                    error = run.error
            out.append(CameraStatus(
                id=cam.id, name=cam.name, state=state, fps=round(fps, 2), last_frame_ts=last_ts,
                reconnects=reconnects, last_error=error, zones=zone_dicts(cam), address=cam.location.address,
                view=run.worker.view_status() if run is not None else None,
            ))
        return out

    def snapshot(self, camera_id: str) -> bytes | None:
        if camera_id not in {c.id for c in self.runner.cameras}:
            raise KeyError(camera_id)
        run = self.runner.run_of(camera_id)
        if run is None:
            return None
        return run.worker.snapshot()

    def reference(self, camera_id: str) -> bytes | None:
        if camera_id not in {c.id for c in self.runner.cameras}:
            raise KeyError(camera_id)
        run = self.runner.run_of(camera_id)
        return run.worker.reference() if run is not None else None

    def set_zones(self, camera_id: str, zones: list[dict[str, Any]]) -> None:
        with self._lock:
            if camera_id not in {c.id for c in self.runner.cameras}:
                raise KeyError(camera_id)
            update_camera_zones(self.config_path, camera_id, zones, load_config)  # ValueError: file untouched
            try:
                cfg = load_config(self.config_path)
            except ConfigError as e:  # the file changed under us between the write and this read
                raise ValueError(str(e)) from None
            camera = next((c for c in cfg.cameras if c.id == camera_id), None)
            if camera is None:
                raise KeyError(camera_id)
            self.runner.update_camera(camera)
