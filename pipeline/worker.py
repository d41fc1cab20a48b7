"""The edge worker of one camera: detections -> tracker -> rules -> evidence capture -> publish.

Detection itself happens outside (the runner batches frames across cameras into one detector call);
:meth:`EdgeWorker.process` takes a frame and its detections. A confirmed violation is published after
``post_roll_s`` more seconds of video, once every blob is in the store (claim-check: the event names
the blobs by key and sha256, media never rides the bus).
"""

from __future__ import annotations

import json
import logging
import threading
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import supervision as sv

from nonsite.config import CameraConfig, NonsiteConfig
from nonsite.evidence.capture import CameraMeta, Still, write_package_blobs
from nonsite.evidence.store import Store
from nonsite.pipeline.bus.base import Bus
from nonsite.pipeline.detections import merge_class_group
from nonsite.pipeline.events import TOPIC_VIOLATIONS, Location, ModelInfo, ViolationEvent, new_event_id
from nonsite.pipeline.rules import Episode, RuleEngine, RuleEvent, rule_config_hash
from nonsite.pipeline.tracking import Tracker
from nonsite.streams.base import Frame
from nonsite.streams.ringbuffer import RingBuffer

log = logging.getLogger(__name__)


class _Clip:
    """JPEG frames of one episode: the first half of ``max_s`` and the last half (long episodes)."""

    def __init__(self, frames: list[tuple[float, bytes]], max_s: float) -> None:
        self.half = max_s / 2
        self.head: list[tuple[float, bytes]] = []
        self.tail: deque[tuple[float, bytes]] = deque()
        for f in frames:
            self.add(*f)

    def add(self, ts: float, jpeg: bytes) -> None:
        if not self.head or ts - self.head[0][0] <= self.half:
            self.head.append((ts, jpeg))
            return
        self.tail.append((ts, jpeg))
        while self.tail and ts - self.tail[0][0] > self.half:
            self.tail.popleft()

    def frames(self) -> list[tuple[float, bytes]]:
        return self.head + list(self.tail)


@dataclass
class _Open:
    episode: Episode
    onset: Still
    clip: _Clip
    confirm: Still | None = None
    closeup: tuple[float, float, float, float] | None = None
    publish_at: float = float("inf")
    event_id: str = field(default_factory=new_event_id)


class SequenceCounter:
    """Per-camera evidence sequence numbers, persisted so they never repeat across restarts."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)

    def next(self, camera_id: str) -> int:
        with self._lock:
            data = json.loads(self.path.read_text()) if self.path.exists() else {}
            data[camera_id] = int(data.get(camera_id, 0)) + 1
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(data, sort_keys=True))
            tmp.replace(self.path)
            return data[camera_id]


@dataclass
class WorkerStats:
    frames: int = 0
    detections: int = 0
    onsets: int = 0
    retracted: int = 0
    published: dict[str, int] = field(default_factory=dict)
    last_ts: float | None = None


class EdgeWorker:
    def __init__(
        self,
        camera: CameraConfig,
        cfg: NonsiteConfig,
        store: Store,
        bus: Bus,
        model: ModelInfo,
        sequence: SequenceCounter,
    ) -> None:
        self.camera, self.cfg, self.store, self.bus, self.model = camera, cfg, store, bus, model
        self.sequence = sequence
        self.tracker = Tracker(cfg.tracker, camera.fps)
        self.ring = RingBuffer(
            max_seconds=cfg.evidence.pre_roll_s + 2.0 / camera.fps, max_bytes=64 * 1024 * 1024,
            jpeg_quality=cfg.evidence.jpeg_quality,
        )
        self.engine: RuleEngine | None = None
        self.rule_hash = rule_config_hash(camera, cfg.rules)
        self.open: dict[tuple[str, str, int], _Open] = {}
        self.pending: list[_Open] = []
        self.stats = WorkerStats()
        self._meta = CameraMeta(id=camera.id, name=camera.name, address=camera.location.address)

    def process(self, frame: Frame, detections: sv.Detections) -> list[ViolationEvent]:
        """Advance this camera by one sampled frame; returns the events published during it."""
        if self.engine is None:
            self.engine = RuleEngine(self.camera, self.cfg.rules, frame.shape)
        self.stats.frames += 1
        self.stats.detections += len(detections)
        self.stats.last_ts = frame.ts
        self.ring.append(frame.ts, frame.image)
        latest = self.ring.latest()
        if latest is not None:
            for o in (*self.open.values(), *self.pending):
                o.clip.add(*latest)
        detections = merge_class_group(detections, self.cfg.rules.sidewalk_parking.vehicle_classes)
        tracked = self.tracker.update(detections, frame.ts)
        for ev in self.engine.update(tracked, frame.ts):
            self._on_rule_event(ev, frame)
        return self._publish_due(frame.ts)

    def finish(self) -> list[ViolationEvent]:
        """End of stream: close episodes and publish what is confirmed with the post-roll there is."""
        if self.engine is not None and self.stats.last_ts is not None:
            for ev in self.engine.finish(self.stats.last_ts):
                self._on_rule_event(ev, None)
        return self._publish_due(float("inf"))

    def _on_rule_event(self, ev: RuleEvent, frame: Frame | None) -> None:
        key = ev.episode.key
        if ev.kind == "onset" and frame is not None:
            self.stats.onsets += 1
            pre = self.ring.between(ev.episode.onset - self.cfg.evidence.pre_roll_s, frame.ts)
            self.open[key] = _Open(ev.episode, Still(frame.ts, frame.image.copy(), ev.boxes),
                                   _Clip(pre, self.cfg.evidence.max_clip_s))
        elif ev.kind == "confirmed" and frame is not None and key in self.open:
            o = self.open.pop(key)
            o.confirm = Still(frame.ts, frame.image.copy(), ev.boxes)
            o.closeup = ev.main_xyxy
            o.publish_at = frame.ts + self.cfg.evidence.post_roll_s
            self.pending.append(o)
        elif ev.kind in ("retracted", "ended") and self.open.pop(key, None) is not None:
            self.stats.retracted += ev.kind == "retracted"

    def _publish_due(self, now: float) -> list[ViolationEvent]:
        due = [o for o in self.pending if o.publish_at <= now]
        self.pending = [o for o in self.pending if o.publish_at > now]
        return [self._publish(o) for o in due]

    def _publish(self, o: _Open) -> ViolationEvent:
        ep, confirm = o.episode, o.confirm
        assert confirm is not None and o.closeup is not None and ep.confirmed_at is not None
        zone = next(z for z in self.camera.zones if z.id == ep.zone_id)
        items = write_package_blobs(
            self.store, event_id=o.event_id, violation_type=ep.rule, camera=self._meta, zone_id=zone.id,
            zone_polygon=list(zone.polygon), onset=o.onset, confirm=confirm, closeup_xyxy=o.closeup,
            clip=o.clip.frames(), sequence=self.sequence.next(self.camera.id), timezone=self.cfg.timezone,
            jpeg_quality=self.cfg.evidence.jpeg_quality,
        )
        loc = self.camera.location
        event = ViolationEvent(
            event_id=o.event_id, type=ep.rule, camera_id=self.camera.id, camera_name=self.camera.name,
            zone_id=zone.id, zone_name=zone.name,
            started_at=datetime.fromtimestamp(ep.onset, UTC),
            confirmed_at=datetime.fromtimestamp(ep.confirmed_at, UTC),
            track_ids=[ep.track_id, *sorted(ep.related_track_ids)],
            boxes={"onset": o.onset.boxes, "confirm": confirm.boxes},
            confidence=round(float(np.mean(ep.confidences)), 4) if ep.confidences else 0.0,
            dwell_s=round(ep.confirmed_at - ep.onset, 3), model=self.model, rule_config_hash=self.rule_hash,
            evidence=items, location=Location(address=loc.address, lat=loc.lat, lon=loc.lon),
        )
        self.bus.publish(TOPIC_VIOLATIONS, self.camera.id, event.model_dump_json().encode())
        self.stats.published[ep.rule] = self.stats.published.get(ep.rule, 0) + 1
        log.info("camera %s: %s in zone %s published as %s", self.camera.id, ep.rule, zone.id, o.event_id)
        return event
