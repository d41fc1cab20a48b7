"""The three violation rules as a pure function of tracked detections and time.

Per frame each rule names the objects for which its condition holds ("hits"); the engine turns hits
into episodes: ``onset`` when a condition starts, ``confirmed`` once it has held for the zone's dwell
(one alert per episode), ``retracted`` when it stops before the dwell, ``ended`` when a confirmed one
stops. A condition interrupted for at most ``max_gap_s`` (a missed detection, a short occlusion that
the tracker bridges) continues; a per-zone cooldown keeps one rule quiet in a zone after an alert.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import supervision as sv

from nonsite.config.cameras import CameraConfig
from nonsite.config.rules import RuleCommon, RulesConfig
from nonsite.pipeline.detections import box_records, centers, diagonals, select
from nonsite.pipeline.events import BoxRecord
from nonsite.pipeline.stationarity import Stationarity
from nonsite.pipeline.zones import Zone

RuleName = Literal["sidewalk_parking", "street_vending", "stray_dog"]


@dataclass(frozen=True)
class Hit:
    """The condition of ``rule`` holds this frame for the object at ``index`` in ``zone_id``."""

    rule: str
    zone_id: str
    track_id: int
    index: int
    since: float = float("-inf")
    """Earliest onset the rule's own state allows (e.g. when the vehicle stopped); -inf: no limit."""
    related: tuple[int, ...] = ()
    """Indices of other detections that make the case (stall objects)."""


@dataclass
class Episode:
    rule: str
    zone_id: str
    track_id: int
    onset: float
    last_true: float
    dwell_s: float
    confirmed_at: float | None = None
    suppressed: bool = False
    related_track_ids: set[int] = field(default_factory=set)
    confidences: list[float] = field(default_factory=list)

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.rule, self.zone_id, self.track_id)


@dataclass
class RuleEvent:
    kind: Literal["onset", "confirmed", "retracted", "ended"]
    episode: Episode
    ts: float
    boxes: list[BoxRecord]
    """Boxes of the objects involved, in this frame (empty for retracted/ended)."""
    main_xyxy: tuple[float, float, float, float] | None = None


class RuleEngine:
    """Rules of one camera. Feed it tracked detections frame by frame with :meth:`update`."""

    def __init__(self, camera: CameraConfig, rules: RulesConfig, frame_wh: tuple[int, int]) -> None:
        self.camera = camera
        self.rules = rules
        self.zones = [Zone(z, frame_wh) for z in camera.zones]
        self._cfg: dict[str, RuleCommon] = {
            "sidewalk_parking": rules.sidewalk_parking,
            "street_vending": rules.street_vending,
            "stray_dog": rules.stray_dog,
        }
        self._parked = Stationarity(rules.sidewalk_parking.max_shift)
        self._standing = Stationarity(rules.street_vending.max_shift)
        self.episodes: dict[tuple[str, str, int], Episode] = {}
        self._continuous: dict[tuple[str, str, int], tuple[float, float]] = {}
        self._last_alert: dict[tuple[str, str], float] = {}

    # -- per-rule conditions -------------------------------------------------------------------

    def _zones_for(self, rule: str) -> list[Zone]:
        return [z for z in self.zones if z.rule == rule]

    def _exempt(self, rule: str, d: sv.Detections) -> np.ndarray:
        mask = np.zeros(len(d), dtype=bool)
        for z in self.zones:
            if z.exempts == rule:
                mask |= z.contains(d)
        return mask

    def _tracked(self, d: sv.Detections) -> np.ndarray:
        return d.tracker_id if d.tracker_id is not None else np.full(len(d), -1, dtype=int)

    def sidewalk_parking(self, d: sv.Detections, ts: float) -> list[Hit]:
        cfg = self.rules.sidewalk_parking
        tid = self._tracked(d)
        vehicles = select(d, cfg.vehicle_classes, cfg.min_confidence) & (tid >= 0)
        since = self._parked.update(tid[vehicles], d.xyxy[vehicles], ts)
        hits = []
        for zone in self._zones_for("sidewalk_parking"):
            inside = zone.contains(d) & vehicles
            hits += [Hit("sidewalk_parking", zone.id, int(tid[i]), int(i), since[int(tid[i])])
                     for i in np.flatnonzero(inside)]
        return hits

    def street_vending(self, d: sv.Detections, ts: float) -> list[Hit]:
        cfg = self.rules.street_vending
        tid = self._tracked(d)
        persons = select(d, [cfg.person_class], cfg.min_confidence) & (tid >= 0)
        since = self._standing.update(tid[persons], d.xyxy[persons], ts)
        stalls = np.flatnonzero(select(d, cfg.stall_classes, cfg.min_confidence))
        persons &= ~self._exempt("street_vending", d)
        hits = []
        if len(stalls) == 0:
            return hits
        c = centers(d.xyxy)
        for zone in self._zones_for("street_vending"):
            for i in np.flatnonzero(zone.contains(d) & persons):
                height = d.xyxy[i, 3] - d.xyxy[i, 1]
                dist = np.hypot(*(c[stalls] - c[i]).T)
                near = stalls[dist <= cfg.proximity * height]
                if len(near):
                    hits.append(Hit("street_vending", zone.id, int(tid[i]), int(i), since[int(tid[i])],
                                    tuple(int(s) for s in near)))
        return hits

    def stray_dog(self, d: sv.Detections, ts: float) -> list[Hit]:
        cfg = self.rules.stray_dog
        tid = self._tracked(d)
        dogs = select(d, [cfg.dog_class], cfg.min_confidence) & (tid >= 0) & ~self._exempt("stray_dog", d)
        people = np.flatnonzero(select(d, [cfg.person_class], cfg.min_confidence))
        c, diag = centers(d.xyxy), diagonals(d.xyxy)
        hits = []
        for zone in self._zones_for("stray_dog"):
            for i in np.flatnonzero(zone.contains(d) & dogs):
                if len(people):
                    nearest = float(np.min(np.hypot(*(c[people] - c[i]).T)))
                    if nearest <= cfg.person_distance * diag[i]:
                        continue
                hits.append(Hit("stray_dog", zone.id, int(tid[i]), int(i)))
        return hits

    # -- episodes -------------------------------------------------------------------------------

    def _dwell(self, rule: str, zone_id: str) -> float:
        zone = next(z for z in self.zones if z.id == zone_id)
        return zone.cfg.dwell_s or self._cfg[rule].dwell_s

    def hits(self, d: sv.Detections, ts: float) -> list[Hit]:
        out: list[Hit] = []
        for name, fn in (("sidewalk_parking", self.sidewalk_parking), ("street_vending", self.street_vending),
                         ("stray_dog", self.stray_dog)):
            if self._cfg[name].enabled:
                out += fn(d, ts)
        return out

    def update(self, d: sv.Detections, ts: float) -> list[RuleEvent]:
        """Advance to time ``ts`` with this frame's tracked detections; returns what changed."""
        events: list[RuleEvent] = []
        seen: set[tuple[str, str, int]] = set()
        for hit in self.hits(d, ts):
            key = (hit.rule, hit.zone_id, hit.track_id)
            if key in seen:
                continue
            seen.add(key)
            cfg = self._cfg[hit.rule]
            first, last = self._continuous.get(key, (ts, ts))
            if ts - last > cfg.max_gap_s:
                first = ts
            self._continuous[key] = (first, ts)
            onset = max(first, hit.since)
            ep = self.episodes.get(key)
            if ep is not None and onset > ep.onset + 1e-6:  # the condition started over (the object moved)
                events.append(self._close(ep, ts))
                ep = None
            involved = np.zeros(len(d), dtype=bool)
            involved[[hit.index, *hit.related]] = True
            boxes = box_records(d, involved)
            main = tuple(float(v) for v in d.xyxy[hit.index])
            conf = float(d.confidence[hit.index]) if d.confidence is not None else 1.0
            if ep is None:
                ep = Episode(hit.rule, hit.zone_id, hit.track_id, onset, ts, self._dwell(hit.rule, hit.zone_id))
                self.episodes[key] = ep
                events.append(RuleEvent("onset", ep, ts, boxes, main))  # type: ignore[arg-type]
            ep.last_true = ts
            ep.confidences.append(conf)
            ep.related_track_ids |= {int(t) for t in self._tracked(d)[list(hit.related)] if t >= 0}
            if ep.confirmed_at is None and ts - ep.onset >= ep.dwell_s:
                ep.confirmed_at = ts
                zone_key = (ep.rule, ep.zone_id)
                if ts - self._last_alert.get(zone_key, -np.inf) < cfg.cooldown_s:
                    ep.suppressed = True
                else:
                    self._last_alert[zone_key] = ts
                    events.append(RuleEvent("confirmed", ep, ts, boxes, main))  # type: ignore[arg-type]
        for key, ep in list(self.episodes.items()):
            if key not in seen and ts - ep.last_true > self._cfg[ep.rule].max_gap_s:
                events.append(self._close(ep, ts))
        for key in [k for k, (_, last) in self._continuous.items() if ts - last > 60.0]:
            del self._continuous[key]
        return events

    def _close(self, ep: Episode, ts: float) -> RuleEvent:
        del self.episodes[ep.key]
        return RuleEvent("retracted" if ep.confirmed_at is None else "ended", ep, ts, [])

    def finish(self, ts: float) -> list[RuleEvent]:
        """End of stream: close every open episode."""
        return [self._close(ep, ts) for ep in list(self.episodes.values())]


def rule_config_hash(camera: CameraConfig, rules: RulesConfig) -> str:
    """sha256 of the rule thresholds and this camera's zones: evidence names the exact config in force."""
    import hashlib
    import json

    doc = {"rules": rules.model_dump(mode="json"), "zones": [z.model_dump(mode="json") for z in camera.zones]}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()).hexdigest()

