"""The console's side of the cameras in the distributed mode: :class:`BusCameraControl`, the
:class:`~nonsite.ops.cameras.CameraControl` of a standalone console (``nonsite console`` on Kafka).

- It follows ``nonsite.cameras`` from its end (no consumer group: every console sees every state) and keeps the newest
  :class:`~nonsite.bus.events.CameraState` of each camera, and its newest snapshot. A camera whose worker has not
  reported for ``camera_status.stale_after_s`` (at least three of the worker's intervals) is shown ``stale``.
- The cameras are those of the console's config file (the source of truth; cameras reported by a worker but missing
  from the file are shown too, read-only). Their zones are the file's.
- :meth:`BusCameraControl.set_zones` writes the zones into the console's config file with the same writer and check as
  the embedded editor (:func:`nonsite.config.writer.update_camera_zones`: ValueError and the file untouched when they
  would not load), then publishes a :class:`~nonsite.bus.events.CameraZonesCommand` on ``nonsite.camera-control``;
  the worker that runs the camera applies it live and reports the revision in its next state (``zones_pending``
  until then, ``zones_error`` if it refused them).
- A state that is not one (bad JSON, wrong schema, key not its camera, a snapshot that is not a JPEG) goes to
  ``nonsite.dead-letter``; the reader carries on.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nonsite.bus import follow
from nonsite.bus.base import Bus, Message
from nonsite.bus.deadletter import UnusableMessage, dead_letter_value, parse_message
from nonsite.bus.events import (
    TOPIC_CAMERA_CONTROL,
    TOPIC_CAMERAS,
    TOPIC_DEAD_LETTER,
    CameraState,
    CameraZonesCommand,
)
from nonsite.config import CameraConfig, NonsiteConfig, load_config
from nonsite.config.roles import CameraStatusConfig
from nonsite.config.writer import update_camera_zones
from nonsite.ops.cameras import CameraStatus, ViewChange, ViewStatus

log = logging.getLogger(__name__)

GROUP = "nonsite-console-cameras"
"""How the console names itself in the dead-letter records of the states it rejects."""


def _jpeg(text: str | None) -> bytes | None:
    """The bytes of a base64 JPEG; ValueError when it is not one."""
    if text is None:
        return None
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("a snapshot is not base64") from None
    if not data.startswith(b"\xff\xd8"):
        raise ValueError("a snapshot is not a JPEG")
    return data


def _view(st: CameraState) -> ViewStatus | None:
    v = st.view
    if v is None:
        return None
    return ViewStatus(state=v.state, since=v.since, shift=v.shift, inliers=v.inliers, matches=v.matches,
                      reference_taken_at=v.reference_taken_at,
                      changes=[ViewChange(c.ts, c.state, c.message) for c in v.changes],
                      changes_by_state=dict(v.changes_by_state))


class BusCameraControl:
    """:class:`~nonsite.ops.cameras.CameraControl` over the bus and the console's config file."""

    def __init__(self, bus: Bus, config_path: str | os.PathLike[str], settings: CameraStatusConfig, *,
                 loader: Callable[[Path], NonsiteConfig] = load_config, issued_by: str | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.bus, self.settings, self.loader, self.clock = bus, settings, loader, clock
        self.config_path = Path(config_path)
        self.issued_by = issued_by if issued_by is not None else f"console@{socket.gethostname()}"
        self._cfg: tuple[tuple[int, int], NonsiteConfig] | None = None
        self._states: dict[str, tuple[CameraState, float]] = {}
        self._snapshots: dict[str, bytes] = {}
        self._references: dict[str, bytes] = {}
        self._pending: dict[str, int] = {}
        self._last_revision = 0
        self._lock = threading.Lock()
        self._edit = threading.Lock()  # one zone edit at a time: write, publish
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.listening = threading.Event()
        """Set once the reader's start position is fixed (states published from then on arrive)."""
        self.rejected = 0
        """States sent to the dead letters."""

    # -- life ----------------------------------------------------------------------------------------------------

    def start(self) -> BusCameraControl:
        self._thread = threading.Thread(target=self._follow, name="camera-states", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def alive(self) -> bool:
        """False once the reader thread has died (liveness)."""
        return self._thread is None or self._thread.is_alive() or self._stop.is_set()

    def _follow(self) -> None:
        follow(self.bus, TOPIC_CAMERAS, self.handle, stop=self._stop, listening=self.listening,
               what="camera state")

    def _dead_letter(self, msg: Message, reason: str) -> None:
        self.rejected += 1
        log.error("camera state %s:%d rejected: %s", msg.topic, msg.offset, reason)
        self.bus.publish(TOPIC_DEAD_LETTER, msg.key, dead_letter_value(msg, reason, GROUP))

    def handle(self, msg: Message) -> str:
        """Take in one message of ``nonsite.cameras``: "state" or "dead_letter"."""
        try:
            st = parse_message(msg, CameraState, "a camera state", key_field="camera_id",
                               key_what="the state's camera")
        except UnusableMessage as e:
            self._dead_letter(msg, str(e))
            return "dead_letter"
        try:
            snapshot, reference = _jpeg(st.snapshot_jpeg), _jpeg(st.reference_jpeg)
        except ValueError as e:
            self._dead_letter(msg, f"camera {st.camera_id}: {e}")
            return "dead_letter"
        with self._lock:
            self._states[st.camera_id] = (st.model_copy(update={"snapshot_jpeg": None, "reference_jpeg": None}),
                                          self.clock())
            if snapshot is not None:
                self._snapshots[st.camera_id] = snapshot
            if reference is not None:
                self._references[st.camera_id] = reference
            if self._pending.get(st.camera_id, st.zone_revision + 1) <= st.zone_revision:
                del self._pending[st.camera_id]  # applied: nothing to wait for, even after the worker restarts
        return "state"

    # -- the config file -----------------------------------------------------------------------------------------

    def _config(self) -> NonsiteConfig:
        """The console's config file, read again when it changed (an edit here or by hand)."""
        try:
            st = self.config_path.stat()
            stamp = (st.st_mtime_ns, st.st_size)
        except OSError:
            stamp = (0, 0)
        cached = self._cfg
        if cached is not None and cached[0] == stamp:
            return cached[1]
        try:
            cfg = self.loader(self.config_path)
        except Exception as e:  # a file broken by hand: keep showing what was there
            if cached is not None:
                log.error("cameras: %s; showing the cameras as they were", e)
                return cached[1]
            raise
        self._cfg = (stamp, cfg)
        return cfg

    def _configured(self) -> dict[str, CameraConfig]:
        return {c.id: c for c in self._config().cameras}

    # -- CameraControl -------------------------------------------------------------------------------------------

    def cameras(self) -> list[CameraStatus]:
        configured = self._configured()
        now = self.clock()
        with self._lock:
            states = dict(self._states)
            pending = dict(self._pending)
        out = [self._status(c.id, c, states.get(c.id), pending.get(c.id), now) for c in configured.values()]
        out += [self._status(cid, None, got, None, now) for cid, got in sorted(states.items()) if cid not in configured]
        return out

    def _status(self, cid: str, cam: CameraConfig | None, got: tuple[CameraState, float] | None,
                pending: int | None, now: float) -> CameraStatus:
        zones = [z.model_dump(mode="json") for z in cam.zones] if cam is not None else (got[0].zones if got else [])
        name = (cam.name if cam is not None else "") or (got[0].camera_name if got else "")
        address = (cam.location.address if cam is not None else "") or (got[0].address if got else "")
        if got is None:
            return CameraStatus(id=cid, name=name, state="disabled" if cam is not None and not cam.enabled else "stale",
                                fps=0.0, last_frame_ts=None, reconnects=0, last_error=None, zones=zones,
                                address=address, zones_pending=pending is not None)
        st, at = got
        stale = now - at > max(self.settings.stale_after_s, 3 * st.interval_s)
        state = "stale" if stale else st.state
        refused = st.zone_error if pending is not None and st.zone_error_revision >= pending else None
        return CameraStatus(
            id=cid, name=name, state=state, fps=0.0 if stale else round(st.fps, 2), last_frame_ts=st.last_frame_ts,
            reconnects=st.reconnects, last_error=st.last_error, zones=zones, address=address, view=_view(st),
            worker=st.worker_id, reported_at=at,
            zones_pending=pending is not None and st.zone_revision < pending and refused is None,
            zones_error=refused,
        )

    def snapshot(self, camera_id: str) -> bytes | None:
        with self._lock:
            if camera_id not in self._configured() and camera_id not in self._states:
                raise KeyError(camera_id)
            return self._snapshots.get(camera_id)

    def reference(self, camera_id: str) -> bytes | None:
        with self._lock:
            if camera_id not in self._configured() and camera_id not in self._states:
                raise KeyError(camera_id)
            return self._references.get(camera_id)

    def set_zones(self, camera_id: str, zones: list[dict[str, Any]]) -> None:
        """Write the zones into the console's config file (ValueError, file untouched, when they would not load;
        KeyError for a camera not in it), then send them to the camera's worker."""
        with self._edit:
            if camera_id not in self._configured():
                raise KeyError(camera_id)
            update_camera_zones(self.config_path, camera_id, zones, self.loader)
            revision = max(int(self.clock() * 1000), self._last_revision + 1)
            cmd = CameraZonesCommand(camera_id=camera_id, zones=zones, revision=revision, issued_by=self.issued_by)
            self.bus.publish(TOPIC_CAMERA_CONTROL, camera_id, cmd.model_dump_json().encode("utf-8"))
            self._last_revision = revision
            with self._lock:
                self._pending[camera_id] = revision
            log.warning("camera %s: zones saved in %s and sent to its worker (revision %d)", camera_id,
                        self.config_path, revision)
