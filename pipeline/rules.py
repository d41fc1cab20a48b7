"""The episode machinery: violation types' hits over time become onsets, confirmations and ends.

It knows no violation type: each type (:mod:`nonsite.pipeline.violations`, one module each) is a pure
function of tracked detections, time, the zones it watches and its own state. Per frame each type names
the objects for which its condition holds ("hits"); the engine turns hits into episodes: ``onset`` when a
condition starts, ``confirmed`` once it has held for the zone's dwell (one alert per episode),
``retracted`` when it stops before the dwell, ``ended`` when a confirmed one stops. A condition
interrupted for at most ``max_gap_s`` (a missed detection, a short occlusion that the tracker bridges)
continues.

One alert per episode, even when the tracker does not keep the id: a new track whose hit has no
episode yet is first matched, by place (IoU or centre distance to the episode's last box) and by look
(colour histogram, ``Detections.data['appearance']`` when the worker computed it), to an open episode
whose track was lost, then to an alerted episode that ended less than ``rematch_s`` ago; a match
continues that episode instead of starting a new one. One alert per object, even when the detector gives it
two boxes that the merge before tracking left apart (two tracks): an episode that reaches its dwell while
its box overlaps an open, already confirmed episode of the same rule in the same zone (``same_object_overlap``
of the smaller box) is that object again and raises no alert. A per-zone cooldown keeps one rule quiet in a
zone after an alert. Rules, zones and allow-zones apply by their schedules in the city's time zone.

Thresholds come from ``rules:``, overridden per camera (``cameras[].rules``) and per zone
(``zones[].rules``, ``zones[].dwell_s``): :func:`zone_rule_config` resolves them.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo

import numpy as np
import supervision as sv

from nonsite.bus.events import BoxRecord
from nonsite.config.cameras import CameraConfig, ZoneConfig
from nonsite.config.rules import RuleCommon, apply_overrides, schedule_active
from nonsite.pipeline.appearance import APPEARANCE, similarity
from nonsite.pipeline.detections import box_records
from nonsite.pipeline.geometry import centre, diag, iou, overlap_of_smaller
from nonsite.pipeline.violations import typed_camera, typed_rules, violation_types
from nonsite.pipeline.violations.base import Hit, Scene, TypeState, ViolationType
from nonsite.pipeline.zones import Zone

__all__ = ["Episode", "Hit", "RuleEngine", "RuleEvent", "camera_rules", "rule_config_hash", "zone_rule_config"]


def camera_rules(camera: CameraConfig, rules: Any) -> Any:
    """``rules`` with the camera's own overrides applied (both as the registry's typed models)."""
    return apply_overrides(typed_rules(rules), typed_camera(camera).rules)


def zone_rule_config(camera: CameraConfig, rules: Any, zone: ZoneConfig, rule: str) -> RuleCommon:
    """The thresholds of ``rule`` in ``zone``: zone overrides > camera overrides > ``rules:``."""
    zone = next(z for z in typed_camera(camera).zones if z.id == zone.id)
    cfg = apply_overrides(camera_rules(camera, rules), zone.rules)
    out: RuleCommon = getattr(cfg, rule)
    if zone.dwell_s is not None:
        out = out.model_copy(update={"dwell_s": zone.dwell_s})
    return out


@dataclass
class Episode:
    rule: str
    zone_id: str
    track_id: int
    """The track that carries the episode now (it changes when a new track is matched to it)."""
    onset: float
    last_true: float
    dwell_s: float
    id: int = 0
    confirmed_at: float | None = None
    suppressed: bool = False
    closed_at: float | None = None
    track_ids: set[int] = field(default_factory=set)
    related_track_ids: set[int] = field(default_factory=set)
    confidence_sum: float = 0.0
    confidence_n: int = 0
    last_xyxy: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    last_boxes: list[BoxRecord] = field(default_factory=list)
    """Boxes of the objects involved at ``last_true`` (for stills taken during the episode)."""
    appearance: np.ndarray | None = None
    baseline: float = 0.0
    """Onset the current track's own state gave when it took the episode over; a later one = a new start."""
    same_as: int | None = None
    """The open, alerted episode whose object this one turned out to be (a second box of it): no alert."""

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.rule, self.zone_id, self.id)

    @property
    def confidence(self) -> float:
        return self.confidence_sum / self.confidence_n if self.confidence_n else 0.0


@dataclass
class RuleEvent:
    kind: Literal["onset", "confirmed", "retracted", "ended"]
    episode: Episode
    ts: float
    boxes: list[BoxRecord]
    """Boxes of the objects involved, in this frame (empty for retracted/ended)."""
    main_xyxy: tuple[float, float, float, float] | None = None


class RuleEngine:
    """The violation types of one camera. Feed it tracked detections frame by frame with :meth:`update`."""

    def __init__(self, camera: CameraConfig, rules: Any, frame_wh: tuple[int, int],
                 timezone: str = "Asia/Shanghai") -> None:
        self.camera = camera = typed_camera(camera)
        self.rules = camera_rules(camera, rules)
        self.tz = ZoneInfo(timezone)
        self.frame_wh = frame_wh
        self.zones = [Zone(z, frame_wh) for z in camera.zones]
        self._zone_cfg: dict[str, RuleCommon] = {
            z.id: zone_rule_config(camera, rules, z.cfg, z.rule) for z in self.zones if z.rule
        }
        watched = {z.rule for z in self.zones if z.rule}
        self.types: list[ViolationType] = [t for t in violation_types() if t.name in watched]
        self._state: dict[str, TypeState] = {t.name: t.new_state() for t in self.types}
        self.episodes: dict[int, Episode] = {}
        self._by_track: dict[tuple[str, str, int], int] = {}
        self._recent: list[Episode] = []
        self._continuous: dict[tuple[str, str, int], tuple[float, float]] = {}
        self._last_alert: dict[tuple[str, str], float] = {}
        self._next_id = 1

    # -- configuration -------------------------------------------------------------------------

    def move_zones(self, camera: CameraConfig) -> None:
        """The same zones (ids, kinds, thresholds) at new places in the image (the camera's view shifted and
        the zones were re-registered): episodes and their memory carry on."""
        moved = {z.id: z for z in typed_camera(camera).zones}
        self.zones = [Zone(moved.get(z.id, z.cfg), self.frame_wh) for z in self.zones]

    def zone_config(self, zone_id: str) -> RuleCommon:
        """Effective thresholds of the rule that watches ``zone_id``."""
        return self._zone_cfg[zone_id]

    def _local(self, ts: float) -> datetime:
        return datetime.fromtimestamp(ts, UTC).astimezone(self.tz)

    def scene(self, vt: ViolationType, d: sv.Detections, ts: float, image: np.ndarray | None = None) -> Scene[Any]:
        """What type ``vt`` sees at ``ts``: its zones and allow zones that apply now, its thresholds."""
        local = self._local(ts)
        zones = [
            (z, self._zone_cfg[z.id]) for z in self.zones
            if z.rule == vt.name and self._zone_cfg[z.id].enabled
            and schedule_active(z.cfg.schedule, local) and schedule_active(self._zone_cfg[z.id].schedule, local)
        ]
        exempt = [z for z in self.zones if z.exempts == vt.name and schedule_active(z.cfg.schedule, local)]
        return Scene(d, ts, zones, getattr(self.rules, vt.name), exempt, image)

    # -- episodes -------------------------------------------------------------------------------

    def hits(self, d: sv.Detections, ts: float, image: np.ndarray | None = None) -> list[Hit]:
        """What every type watched on this camera finds in this frame."""
        out: list[Hit] = []
        for vt in self.types:
            out += vt.detect(self.scene(vt, d, ts, image), self._state[vt.name])
        return out

    def state(self, rule: str) -> TypeState:
        """The memory of type ``rule`` on this camera (for its evidence hooks)."""
        return self._state[rule]

    def _place_matches(self, ep: Episode, box: tuple[float, ...], feat: np.ndarray | None, cfg: RuleCommon
                       ) -> float | None:
        """Match score of a new box against an episode's object, None when it is not the same object."""
        overlap = iou(box, ep.last_xyxy)
        dist = float(np.hypot(*(centre(box) - centre(ep.last_xyxy))))
        if overlap < cfg.rematch_iou and dist > cfg.rematch_distance * max(diag(ep.last_xyxy), 1.0):
            return None
        sim = 1.0
        if cfg.rematch_similarity > 0 and feat is not None and ep.appearance is not None:
            sim = similarity(feat, ep.appearance)
            if sim < cfg.rematch_similarity:
                return None
        return overlap + sim - dist / max(diag(ep.last_xyxy), 1.0) * 0.01

    def _rematch(self, hit: Hit, box: tuple[float, ...], feat: np.ndarray | None, ts: float,
                 visible: set[int], seen: set[int]) -> Episode | None:
        cfg = self._zone_cfg[hit.zone_id]
        best: tuple[float, Episode] | None = None
        lost = [ep for ep in self.episodes.values()
                if ep.id not in seen and ep.track_id not in visible]
        recent = [ep for ep in self._recent if ep.closed_at is not None and ts - ep.closed_at <= cfg.rematch_s]
        for ep in (*lost, *recent):
            if ep.rule != hit.rule or ep.zone_id != hit.zone_id:
                continue
            score = self._place_matches(ep, box, feat, cfg)
            if score is not None and (best is None or score > best[0]):
                best = (score, ep)
        if best is None:
            return None
        ep = best[1]
        if ep.closed_at is not None:  # an alerted episode comes back: reopen it, never alert again
            self._recent.remove(ep)
            ep.closed_at = None
            self.episodes[ep.id] = ep
        return ep

    def _same_object(self, ep: Episode, box: tuple[float, ...], cfg: RuleCommon) -> Episode | None:
        """An open episode of the same rule and zone, already confirmed, whose object's box overlaps ``box``
        (``same_object_overlap`` of the smaller box): ``ep`` is a second box of that object."""
        if cfg.same_object_overlap <= 0:
            return None
        best: tuple[float, Episode] | None = None
        for other in self.episodes.values():
            if other is ep or other.confirmed_at is None or (other.rule, other.zone_id) != (ep.rule, ep.zone_id):
                continue
            overlap = overlap_of_smaller(box, other.last_xyxy)
            if overlap >= cfg.same_object_overlap and (best is None or overlap > best[0]):
                best = (overlap, other)
        if best is None:
            return None
        return self.episodes.get(best[1].same_as, best[1]) if best[1].same_as is not None else best[1]

    def update(self, d: sv.Detections, ts: float, image: np.ndarray | None = None) -> list[RuleEvent]:
        """Advance to time ``ts`` with this frame's tracked detections (and the frame, for types that look at
        pixels); returns what changed."""
        events: list[RuleEvent] = []
        seen: set[int] = set()
        tids = d.tracker_id if d.tracker_id is not None else np.full(len(d), -1, dtype=int)
        visible = {int(t) for t in tids if t >= 0}
        feats = d.data.get(APPEARANCE)
        # The strongest case first: when a zone's cooldown lets one alert through, it is the person with the
        # most stall evidence.
        for hit in sorted(self.hits(d, ts, image), key=lambda h: -len(h.related)):
            tkey = (hit.rule, hit.zone_id, hit.track_id)
            cfg = self._zone_cfg[hit.zone_id]
            first, last = self._continuous.get(tkey, (ts, ts))
            if ts - last > cfg.max_gap_s:
                first = ts
            self._continuous[tkey] = (first, ts)
            onset = max(first, hit.since)
            own = hit.index >= 0  # else a region no detection stands for (hit.xyxy)
            x1, y1, x2, y2 = (float(v) for v in (d.xyxy[hit.index] if own else hit.xyxy or (0, 0, 0, 0)))
            box = (x1, y1, x2, y2)
            feat = np.asarray(feats[hit.index], dtype=np.float32) if feats is not None and own else None
            ep = self.episodes.get(self._by_track.get(tkey, -1))
            if ep is not None and ep.id in seen:
                continue
            if ep is not None and onset > ep.baseline + 1e-6:  # the condition started over (the object moved)
                events.append(self._close(ep, ts))
                ep = None
            if ep is None:
                ep = self._rematch(hit, box, feat, ts, visible, seen)
                if ep is not None:
                    ep.track_id = hit.track_id
                    ep.baseline = onset
                    self._by_track[tkey] = ep.id
            involved = np.zeros(len(d), dtype=bool)
            involved[[hit.index, *hit.related] if own else list(hit.related)] = True
            boxes = box_records(d, involved)
            if not own:
                boxes.insert(0, BoxRecord(xyxy=box, class_name=hit.label or hit.rule, confidence=1.0,
                                          track_id=hit.track_id))
            if ep is None:
                ep = Episode(hit.rule, hit.zone_id, hit.track_id, onset, ts, cfg.dwell_s, id=self._next_id,
                             baseline=onset)
                self._next_id += 1
                self.episodes[ep.id] = ep
                self._by_track[tkey] = ep.id
                events.append(RuleEvent("onset", ep, ts, boxes, box))
            seen.add(ep.id)
            ep.track_ids.add(hit.track_id)
            ep.last_true = ts
            ep.last_xyxy = box
            ep.last_boxes = boxes
            if feat is not None and feat.any():
                ep.appearance = feat if ep.appearance is None else 0.8 * ep.appearance + 0.2 * feat
            if d.confidence is not None or not own:
                ep.confidence_sum += float(d.confidence[hit.index]) if own and d.confidence is not None else 1.0
                ep.confidence_n += 1
            ep.related_track_ids |= {int(t) for t in tids[list(hit.related)] if t >= 0}
            if ep.confirmed_at is None and ts - ep.onset >= ep.dwell_s - 1e-6:
                ep.confirmed_at = ts
                zone_key = (ep.rule, ep.zone_id)
                same = self._same_object(ep, box, cfg)
                if same is not None:
                    ep.suppressed, ep.same_as = True, same.id
                elif ts - self._last_alert.get(zone_key, -np.inf) < cfg.cooldown_s:
                    ep.suppressed = True
                else:
                    self._last_alert[zone_key] = ts
                    events.append(RuleEvent("confirmed", ep, ts, boxes, box))
        for ep in list(self.episodes.values()):
            if ep.id not in seen and ts - ep.last_true > self._zone_cfg[ep.zone_id].max_gap_s:
                events.append(self._close(ep, ts))
        self._forget(ts)
        return events

    def _forget(self, ts: float) -> None:
        for key in [k for k, (_, last) in self._continuous.items() if ts - last > 60.0]:
            del self._continuous[key]
        self._recent = [ep for ep in self._recent
                        if ep.closed_at is not None and ts - ep.closed_at <= self._zone_cfg[ep.zone_id].rematch_s]
        live = set(self.episodes) | {ep.id for ep in self._recent}
        for key in [k for k, v in self._by_track.items() if v not in live]:
            del self._by_track[key]
        for state in self._state.values():
            state.forget(ts)

    def _close(self, ep: Episode, ts: float) -> RuleEvent:
        del self.episodes[ep.id]
        ep.closed_at = ts
        if ep.confirmed_at is not None:
            self._recent.append(ep)
        return RuleEvent("retracted" if ep.confirmed_at is None else "ended", ep, ts, [])

    def finish(self, ts: float) -> list[RuleEvent]:
        """End of stream: close every open episode."""
        return [self._close(ep, ts) for ep in list(self.episodes.values())]


def rule_config_hash(camera: CameraConfig, rules: Any) -> str:
    """sha256 of the rule thresholds and this camera's zones: evidence names the exact config in force."""
    camera, rules = typed_camera(camera), typed_rules(rules)
    doc = {"rules": rules.model_dump(mode="json"), "zones": [z.model_dump(mode="json") for z in camera.zones]}
    if camera.rules is not None:
        doc["camera_rules"] = camera.rules.model_dump(mode="json", exclude_none=True)
    return hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
