"""The edge side of the cameras in the distributed mode: what an edge or a pool worker tells a standalone console about
the cameras it runs, and the zone edits it takes from one.

- Every ``camera_status.interval_s`` seconds, and at once when a camera's state, error or zones change,
  :class:`CameraAgent` publishes a :class:`~nonsite.bus.events.CameraState` per camera on ``nonsite.cameras``
  (key = camera id): health as :class:`~nonsite.pipeline.control.EdgeCameraControl` reports it, the zones it applies
  with their revision, the view guard's verdict; every ``snapshot_interval_s`` a downscaled JPEG of the latest frame
  rides along. States are volatile: dropped, not queued, while the broker is away.
- At start it catches up: it reads ``nonsite.camera-control`` from the oldest command the topic keeps (its retention
  is ``bus.kafka.retention_hours``) to the end it found, and applies for each of its cameras only the newest command
  there, and only when its revision is above :meth:`CameraAgent.baseline` (the revision it applied last, recorded in
  ``DATA_DIR/cameras/zone-revisions.json`` with a digest of the zones it wrote; when the file's zones are no longer
  those, they were edited by hand, and the file's modification time counts too). A replay is idempotent, and an
  older command never undoes a newer edit, by command or by hand. Then it reads on (every worker reads every command)
  and applies each
  :class:`~nonsite.bus.events.CameraZonesCommand` for a camera it has: the zones are written into its own config file
  when it has one (so a restart keeps them; validated by the same writer and loader as the embedded editor) and handed
  to ``on_camera``: the running camera swaps zones live, keeping its connection and tracks. Idempotent by command id
  and revision; a command that does not parse, or whose zones the worker refuses, goes to ``nonsite.dead-letter``.
"""

from __future__ import annotations

import base64
import collections
import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from pydantic import ValidationError

from nonsite.bus import follow, publish_volatile
from nonsite.bus.base import Bus, Consumer, Message
from nonsite.bus.deadletter import UnusableMessage, dead_letter_value, oversized_reason, parse_message
from nonsite.bus.events import (
    MAX_SNAPSHOT_BYTES,
    TOPIC_CAMERA_CONTROL,
    TOPIC_CAMERAS,
    TOPIC_DEAD_LETTER,
    CameraState,
    CameraZonesCommand,
    ViewState,
)
from nonsite.config import CameraConfig, ConfigError
from nonsite.config.cameras import scrub
from nonsite.config.roles import CameraStatusConfig
from nonsite.config.writer import update_camera_zones
from nonsite.ops.cameras import CameraStatus
from nonsite.pipeline.control import EdgeCameraControl
from nonsite.pipeline.edge import EdgeRunner
from nonsite.pipeline.violations import load_config, models

log = logging.getLogger(__name__)

CONTROL_GROUP = "nonsite-camera-control"
"""How a worker names itself in the dead-letter records of the zone commands it rejects."""


def _zones_digest(zones: list[Any]) -> str:
    """A digest of typed zones (what a worker wrote into its file, compared at its next start)."""
    plain = [z.model_dump(mode="json") if hasattr(z, "model_dump") else z for z in zones]
    return hashlib.sha256(json.dumps(plain, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()


def scaled_jpeg(jpeg: bytes, width: int, quality: int, limit: int = MAX_SNAPSHOT_BYTES) -> bytes | None:
    """``jpeg`` no wider than ``width`` and at most ``limit`` bytes (lower quality, then smaller), or None when it
    does not decode."""
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        return None
    h, w = image.shape[:2]
    if w > width:
        image = cv2.resize(image, (width, max(1, round(h * width / w))), interpolation=cv2.INTER_AREA)
    q = quality
    while True:
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, q])
        if ok and len(buf) <= limit:
            return bytes(buf)
        if q > 30:
            q -= 15
        elif image.shape[1] > 64:
            image = cv2.resize(image, (image.shape[1] // 2, max(1, image.shape[0] // 2)), interpolation=cv2.INTER_AREA)
        else:
            return None


class CameraAgent:
    """Publishes the states of ``runner``'s cameras and applies the zone commands for the cameras ``known`` returns.

    ``known``: every camera this worker may run, by id (an edge: its cameras; a pool worker: all of ``cameras:``, so a
    camera that moves to it later runs with the new zones too). ``on_camera``: apply a camera's new config (an edge:
    :meth:`EdgeRunner.update_camera`; a pool worker: :meth:`~nonsite.pipeline.pool.PoolWorker.replace_camera`).
    """

    def __init__(
        self,
        bus: Bus,
        runner: EdgeRunner,
        worker_id: str,
        settings: CameraStatusConfig,
        *,
        config_path: str | os.PathLike[str] | None = None,
        known: Callable[[], dict[str, CameraConfig]] | None = None,
        on_camera: Callable[[CameraConfig], object] | None = None,
        state_path: str | os.PathLike[str] | None = None,
    ) -> None:
        self.bus, self.runner, self.worker_id, self.settings = bus, runner, worker_id, settings
        self.config_path = Path(config_path) if config_path else None
        self.state_path = Path(state_path) if state_path else None
        """Where the applied revision of each camera's zones is kept (JSON), so that a restart replays only newer
        commands; None: nowhere (every start replays against the config file's modification time)."""
        self.known = known or (lambda: {c.id: c for c in runner.cameras})
        self.on_camera = on_camera or runner.update_camera
        self.health = EdgeCameraControl(runner, self.config_path or "")
        self.listening = threading.Event()
        """Set once the zone commands are read: what is published from then on reaches this worker."""
        self.applied: list[CameraZonesCommand] = []
        """The zone commands applied, oldest first."""
        self.replayed: list[CameraZonesCommand] = []
        """The zone commands applied while catching up at start (a subset of ``applied``)."""
        self._records: dict[str, dict[str, Any]] = self._load_records()
        self._revision: dict[str, int] = {cid: int(r["revision"]) for cid, r in self._records.items()}
        self._error: dict[str, tuple[str, int]] = {}
        self._seen: collections.deque[str] = collections.deque(maxlen=1000)
        self._published: dict[str, CameraState] = {}
        self._sent_at: dict[str, float] = {}
        self._snapshot_at: dict[str, tuple[float, float | None]] = {}
        self._reference_at: dict[str, tuple[int, float | None]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._threads: list[threading.Thread] = []

    # -- life ----------------------------------------------------------------------------------------------------

    def start(self) -> CameraAgent:
        self._threads = [threading.Thread(target=self._listen, name="camera-control", daemon=True),
                         threading.Thread(target=self._publish_loop, name="camera-status", daemon=True)]
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        """Stop both threads, then say that this worker's cameras are down (the console shows it at once)."""
        self._stop.set()
        self._wake.set()
        for t in self._threads:
            t.join(timeout=15)
        with self._lock:
            last = list(self._published.values())
        for st in last:
            down = st.model_copy(update={"state": "down", "fps": 0.0, "last_error": f"worker {self.worker_id} "
                                         "stopped", "snapshot_jpeg": None, "snapshot_ts": None,
                                         "reference_jpeg": None})
            self._send(down)

    # -- states --------------------------------------------------------------------------------------------------

    def states(self) -> list[CameraState]:
        """The state of each camera of the runner now (without pictures)."""
        out = []
        for cam in self.health.cameras():
            out.append(self._state(cam))
        return out

    def _state(self, cam: CameraStatus) -> CameraState:
        with self._lock:
            revision = self._revision.get(cam.id, 0)
            error, error_revision = self._error.get(cam.id, (None, 0))
        return CameraState(
            camera_id=cam.id, camera_name=cam.name[:256], address=cam.address[:512], worker_id=self.worker_id,
            state=cam.state if cam.state in ("connecting", "up", "down", "finished", "disabled") else "down",
            fps=max(0.0, cam.fps), last_frame_ts=cam.last_frame_ts, reconnects=cam.reconnects,
            last_error=scrub(cam.last_error)[:2000] if cam.last_error else None, zones=cam.zones,
            zone_revision=revision, zone_error=error, zone_error_revision=error_revision,
            view=ViewState.model_validate(asdict(cam.view)) if cam.view is not None else None,
            interval_s=self.settings.interval_s,
        )

    @staticmethod
    def _key(st: CameraState) -> tuple[Any, ...]:
        return (st.state, st.reconnects, st.last_error, st.zone_revision, st.zone_error_revision,
                st.view.state if st.view else None, st.camera_name, st.address)

    def publish_now(self) -> int:
        """Publish the states due now (changed, or older than the interval); returns how many went out."""
        now = time.monotonic()
        sent = 0
        states = self.states()
        current = {st.camera_id for st in states}
        with self._lock:
            for gone in set(self._published) - current:  # moved to another worker: no last word from here
                self._published.pop(gone, None)
        for st in states:
            prev = self._published.get(st.camera_id)
            due = prev is None or self._key(prev) != self._key(st) or \
                now - self._sent_at.get(st.camera_id, 0.0) >= self.settings.interval_s
            if not due:
                continue
            st = self._with_pictures(st, now)
            if self._send(st):
                sent += 1
                self._sent_at[st.camera_id] = now
            with self._lock:
                self._published[st.camera_id] = st
        return sent

    def _with_pictures(self, st: CameraState, now: float) -> CameraState:
        cid = st.camera_id
        run = self.runner.run_of(cid)
        if run is None or st.last_frame_ts is None:
            return st
        update: dict[str, Any] = {}
        at, frame_ts = self._snapshot_at.get(cid, (float("-inf"), None))
        if now - at >= self.settings.snapshot_interval_s and frame_ts != st.last_frame_ts:
            jpeg = run.worker.snapshot()
            small = scaled_jpeg(jpeg, self.settings.snapshot_width, self.settings.snapshot_quality) if jpeg else None
            if small is not None:
                update.update(snapshot_jpeg=base64.b64encode(small).decode("ascii"), snapshot_ts=st.last_frame_ts)
                self._snapshot_at[cid] = (now, st.last_frame_ts)
                count, taken = self._reference_at.get(cid, (0, None))
                ref_taken = st.view.reference_taken_at if st.view else None
                if ref_taken is not None and (ref_taken != taken or count % 10 == 0):
                    ref = run.worker.reference()
                    ref_small = scaled_jpeg(ref, self.settings.snapshot_width, self.settings.snapshot_quality) \
                        if ref else None
                    if ref_small is not None:
                        update["reference_jpeg"] = base64.b64encode(ref_small).decode("ascii")
                self._reference_at[cid] = (count + 1, ref_taken)
        return st.model_copy(update=update) if update else st

    def _send(self, st: CameraState) -> bool:
        try:
            return publish_volatile(self.bus, TOPIC_CAMERAS, st.camera_id, st.model_dump_json().encode("utf-8"))
        except Exception as e:  # a state is never worth stopping for
            log.warning("camera %s: state not published: %s", st.camera_id, e)
            return False

    def _publish_loop(self) -> None:
        tick = min(0.5, self.settings.interval_s)
        while not self._stop.is_set():
            if self.listening.is_set():  # a console that sees this worker's states can reach it
                try:
                    self.publish_now()
                except Exception:
                    log.exception("camera states not published")
            self._wake.wait(tick)
            self._wake.clear()

    # -- zone commands -------------------------------------------------------------------------------------------

    def _listen(self) -> None:
        follow(self.bus, TOPIC_CAMERA_CONTROL, self.handle, stop=self._stop, listening=self.listening,
               what="zone command", from_start=True, max_records=50, before_listening=self._catch_up)

    def _dead_letter(self, msg: Message, reason: str) -> None:
        log.error("zone command %s:%d rejected: %s", msg.topic, msg.offset, reason)
        group = f"{CONTROL_GROUP}:{self.worker_id}"
        self.bus.publish(TOPIC_DEAD_LETTER, msg.key, dead_letter_value(msg, reason, group))

    def handle(self, msg: Message) -> str:
        """Apply one message of ``nonsite.camera-control``; returns what happened (applied, duplicate, stale,
        not_ours, rejected, dead_letter)."""
        try:
            cmd = parse_message(msg, CameraZonesCommand, "a zone command", key_field="camera_id",
                                key_what="the command's camera")
        except UnusableMessage as e:
            self._dead_letter(msg, str(e))
            return "dead_letter"
        camera = self.known().get(cmd.camera_id)
        if camera is None:
            return "not_ours"  # another edge's camera
        with self._lock:
            if cmd.command_id in self._seen:
                return "duplicate"
            if cmd.revision <= self._revision.get(cmd.camera_id, 0):
                self._seen.append(cmd.command_id)
                return "stale"
        return self._apply(camera, cmd, msg)

    def _apply(self, camera: CameraConfig, cmd: CameraZonesCommand, msg: Message | None) -> str:
        """Write and apply ``cmd`` (its revision checked by the caller): "applied" or "rejected" (dead-lettered
        when it came live, as ``msg``; a replayed one was dead-lettered by the workers that were up then)."""
        try:
            new = self._zoned(camera, cmd.zones)
        except ValueError as e:
            with self._lock:
                self._seen.append(cmd.command_id)
                self._error[cmd.camera_id] = (str(e)[:2000], cmd.revision)
            reason = f"zones of camera {cmd.camera_id} refused by worker {self.worker_id}: {e}"
            if msg is not None:
                self._dead_letter(msg, reason)
            else:
                log.error("replayed %s", reason)
            self._wake.set()
            return "rejected"
        what = self.on_camera(new)
        with self._lock:
            self._seen.append(cmd.command_id)
            self._revision[cmd.camera_id] = cmd.revision
            self._error.pop(cmd.camera_id, None)
            self.applied.append(cmd)
            self._records[cmd.camera_id] = {"revision": cmd.revision, "command_id": cmd.command_id,
                                            "zones_sha256": _zones_digest(new.zones)}
            self._save_records()
        log.warning("camera %s: zones revision %d from %s (%d zones)%s: %s", cmd.camera_id, cmd.revision,
                    cmd.issued_by or "a console", len(cmd.zones), " (missed while down)" if msg is None else "",
                    {"zones": "applied live", "kept": "kept for when it runs here", "unchanged": "already in force"}
                    .get(str(what), str(what)))
        self._wake.set()
        return "applied"

    # -- catching up at start ------------------------------------------------------------------------------------

    def _catch_up(self, reader: Consumer) -> None:
        """Read the control topic from its oldest kept command up to the end it had when the reader connected, and
        apply for each camera of this worker the newest command there if it is newer than the zones this worker
        has (:meth:`baseline`). Bad messages are skipped here: the workers that were up dead-lettered them."""
        caught_up = getattr(reader, "caught_up", None)
        if caught_up is None:
            return
        newest: dict[str, CameraZonesCommand] = {}
        while not self._stop.is_set() and not caught_up():
            for msg in reader.poll(max_records=200, timeout_s=0.5):
                try:
                    cmd = CameraZonesCommand.model_validate_json(msg.value)
                except ValidationError:
                    continue
                if cmd.camera_id != msg.key or oversized_reason(msg):
                    continue
                prev = newest.get(cmd.camera_id)
                if prev is None or cmd.revision > prev.revision:
                    newest[cmd.camera_id] = cmd
        if self._stop.is_set():
            return
        known = self.known()
        in_file = self._file_zones()
        for cid, cmd in sorted(newest.items()):
            camera = known.get(cid)
            if camera is None:
                continue
            base = self.baseline(cid, in_file)
            if cmd.revision <= base:
                log.info("camera %s: zones revision %d on the bus is not newer than this worker's (%d); kept",
                         cid, cmd.revision, base)
                continue
            try:
                if self._apply(camera, cmd, None) == "applied":
                    self.replayed.append(cmd)
            except Exception:
                log.exception("camera %s: replayed zones revision %d failed", cid, cmd.revision)

    def baseline(self, camera_id: str, in_file: dict[str, str] | None = None) -> int:
        """The revision (ms) this worker's zones of ``camera_id`` count as: the revision it applied last, when the
        config file still has the zones it wrote then; else (edited by hand since, or never written by a command)
        the later of that revision and the file's modification time. A replayed command applies only above it."""
        record = self._records.get(camera_id)
        applied = int(record["revision"]) if record else 0
        files = self._file_zones() if in_file is None else in_file
        digest = files.get(camera_id)
        if digest is None or self.config_path is None:
            return applied  # not in this worker's file: only what it applied counts
        if record is not None and record.get("zones_sha256") == digest:
            return applied
        try:
            mtime_ms = self.config_path.stat().st_mtime_ns // 1_000_000
        except OSError:
            mtime_ms = 0
        return max(applied, mtime_ms)

    def _file_zones(self) -> dict[str, str]:
        """camera id -> digest of its zones in this worker's config file ({} without one, or when it does not
        load)."""
        if self.config_path is None:
            return {}
        try:
            cfg = load_config(self.config_path)
        except (ConfigError, OSError) as e:
            log.error("zone catch-up: %s does not load (%s); only recorded revisions count", self.config_path, e)
            return {}
        return {c.id: _zones_digest(c.zones) for c in cfg.cameras}

    def _load_records(self) -> dict[str, dict[str, Any]]:
        if self.state_path is None or not self.state_path.is_file():
            return {}
        try:
            data = json.loads(self.state_path.read_text(encoding="utf-8"))
            return {str(k): {"revision": int(v["revision"]), "command_id": str(v.get("command_id", "")),
                             "zones_sha256": str(v.get("zones_sha256", ""))}
                    for k, v in dict(data.get("cameras", {})).items()}
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as e:
            log.error("zone revisions %s unreadable (%s); starting from the config file alone", self.state_path, e)
            return {}

    def _save_records(self) -> None:
        """Write the applied revisions atomically (caller holds the lock)."""
        if self.state_path is None:
            return
        try:
            self.state_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.state_path.with_name(f".{self.state_path.name}.{os.getpid()}.tmp")
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump({"worker_id": self.worker_id, "cameras": self._records}, f, indent=1, sort_keys=True)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.state_path)
        except OSError as e:
            log.error("zone revisions not saved in %s: %s", self.state_path, e)

    def _zoned(self, camera: CameraConfig, zones: list[dict[str, Any]]) -> CameraConfig:
        """``camera`` with ``zones``, validated as the worker's loader validates them; written into this worker's
        config file first when it has one with this camera (ValueError: refused, the file untouched)."""
        if self.config_path is not None:
            try:
                update_camera_zones(self.config_path, camera.id, zones, load_config)
            except KeyError:
                pass  # not in this file (a camera given another way): live only
            else:
                try:
                    cfg = load_config(self.config_path)
                except ConfigError as e:  # the file changed under us between the write and this read
                    raise ValueError(str(e)) from None
                in_file = next((c for c in cfg.cameras if c.id == camera.id), None)
                if in_file is not None:
                    return camera.model_copy(update={"zones": in_file.zones})
        try:
            typed: CameraConfig = models().camera.model_validate({**camera.model_dump(), "zones": zones})
        except ValidationError as e:
            first = e.errors()[0]
            where = ".".join(str(p) for p in first.get("loc", ()))
            raise ValueError(f"{where}: {str(first.get('msg', '')).removeprefix('Value error, ')}") from None
        return typed
