"""The three violation rules as a pure function of tracked detections, their appearance and time.

Per frame each rule names the objects for which its condition holds ("hits"); the engine turns hits
into episodes: ``onset`` when a condition starts, ``confirmed`` once it has held for the zone's dwell
(one alert per episode), ``retracted`` when it stops before the dwell, ``ended`` when a confirmed one
stops. A condition interrupted for at most ``max_gap_s`` (a missed detection, a short occlusion that
the tracker bridges) continues.

One alert per episode, even when the tracker does not keep the id: a new track whose hit has no
episode yet is first matched, by place (IoU or centre distance to the episode's last box) and by look
(colour histogram, ``Detections.data['appearance']`` when the worker computed it), to an open episode
whose track was lost, then to an alerted episode that ended less than ``rematch_s`` ago; a match
continues that episode instead of starting a new one. A per-zone cooldown keeps one rule quiet in a
zone after an alert. Rules, zones and allow-zones apply by their schedules in the city's time zone.

Thresholds come from ``rules:``, overridden per camera (``cameras[].rules``) and per zone
(``zones[].rules``, ``zones[].dwell_s``): :func:`zone_rule_config` resolves them.
"""

from __future__ import annotations

import hashlib
import json
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal
from zoneinfo import ZoneInfo

import numpy as np
import supervision as sv

from nonsite.bus.events import BoxRecord
from nonsite.config.cameras import CameraConfig, ZoneConfig
from nonsite.config.rules import (
    RuleCommon,
    RulesConfig,
    SidewalkParkingRule,
    StrayDogRule,
    StreetVendingRule,
    apply_overrides,
    schedule_active,
)
from nonsite.pipeline.appearance import APPEARANCE, similarity
from nonsite.pipeline.detections import box_records, names_of
from nonsite.pipeline.stationarity import Stationarity
from nonsite.pipeline.zones import Zone

RuleName = Literal["sidewalk_parking", "street_vending", "stray_dog"]
RULES: tuple[RuleName, ...] = ("sidewalk_parking", "street_vending", "stray_dog")
RIDER_MIN_CONFIDENCE = 0.25  # riders are half hidden by what they ride: take weaker person boxes too
SAME_OBJECT_IOU = 0.7  # a "person" box on top of the dog's box is the dog labelled twice, not an owner


def camera_rules(camera: CameraConfig, rules: RulesConfig) -> RulesConfig:
    """``rules`` with the camera's own overrides applied."""
    return apply_overrides(rules, camera.rules)


def zone_rule_config(camera: CameraConfig, rules: RulesConfig, zone: ZoneConfig, rule: str) -> RuleCommon:
    """The thresholds of ``rule`` in ``zone``: zone overrides > camera overrides > ``rules:``."""
    cfg = apply_overrides(camera_rules(camera, rules), zone.rules)
    out: RuleCommon = getattr(cfg, rule)
    if zone.dwell_s is not None:
        out = out.model_copy(update={"dwell_s": zone.dwell_s})
    return out


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


# -- geometry --------------------------------------------------------------------------------------


def _iou(a: np.ndarray | tuple[float, ...], b: np.ndarray | tuple[float, ...]) -> float:
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def _gap(a: np.ndarray, b: np.ndarray) -> float:
    """Shortest distance between two boxes (0 when they touch or overlap)."""
    dx = max(0.0, float(max(a[0], b[0]) - min(a[2], b[2])))
    dy = max(0.0, float(max(a[1], b[1]) - min(a[3], b[3])))
    return float(np.hypot(dx, dy))


def _centre(b: np.ndarray | tuple[float, ...]) -> np.ndarray:
    return np.array([(b[0] + b[2]) / 2, (b[1] + b[3]) / 2], dtype=float)


def _diag(b: np.ndarray | tuple[float, ...]) -> float:
    return float(np.hypot(b[2] - b[0], b[3] - b[1]))


def _area(b: np.ndarray) -> float:
    return float(max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1]))


def _inside_fraction(obj: np.ndarray, region: np.ndarray) -> float:
    """Fraction of ``obj``'s area that lies inside ``region``."""
    iw = min(obj[2], region[2]) - max(obj[0], region[0])
    ih = min(obj[3], region[3]) - max(obj[1], region[1])
    a = _area(obj)
    return float(iw * ih / a) if iw > 0 and ih > 0 and a > 0 else 0.0


def _rides(people: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Which person boxes sit on vehicle box ``v``: feet within the vehicle's lower part and horizontal
    extent, top above the vehicle's upper quarter (a rider, not a pedestrian walking past)."""
    vh = v[3] - v[1]
    fx = (people[:, 0] + people[:, 2]) / 2
    return np.asarray(
        (fx >= v[0]) & (fx <= v[2])
        & (people[:, 3] >= v[1] + 0.25 * vh) & (people[:, 3] <= v[3] + 0.15 * vh)
        & (people[:, 1] < v[1] + 0.25 * vh)
    )


def riders(vehicles: np.ndarray, people: np.ndarray) -> np.ndarray:
    """For each vehicle box, whether a person box sits on it (see :func:`_rides`)."""
    if not len(people):
        return np.zeros(len(vehicles), dtype=bool)
    return np.array([bool(_rides(people, v).any()) for v in vehicles], dtype=bool)


def riding(people: np.ndarray, vehicles: np.ndarray) -> np.ndarray:
    """For each person box, whether it sits on one of the vehicle boxes."""
    out = np.zeros(len(people), dtype=bool)
    for v in vehicles:
        out |= _rides(people, v)
    return out


class RuleEngine:
    """Rules of one camera. Feed it tracked detections frame by frame with :meth:`update`."""

    def __init__(self, camera: CameraConfig, rules: RulesConfig, frame_wh: tuple[int, int],
                 timezone: str = "Asia/Shanghai") -> None:
        self.camera = camera
        self.rules = camera_rules(camera, rules)
        self.tz = ZoneInfo(timezone)
        self.zones = [Zone(z, frame_wh) for z in camera.zones]
        self._zone_cfg: dict[str, RuleCommon] = {
            z.id: zone_rule_config(camera, rules, z.cfg, z.rule) for z in self.zones if z.rule
        }
        self._stationarity: dict[tuple[str, float, float], Stationarity] = {}
        self._ridden_at: dict[int, float] = {}
        self._owned_at: dict[int, float] = {}
        self._paths: dict[int, deque[tuple[float, float, float]]] = {}
        self.episodes: dict[int, Episode] = {}
        self._by_track: dict[tuple[str, str, int], int] = {}
        self._recent: list[Episode] = []
        self._continuous: dict[tuple[str, str, int], tuple[float, float]] = {}
        self._last_alert: dict[tuple[str, str], float] = {}
        self._next_id = 1

    # -- configuration -------------------------------------------------------------------------

    def zone_config(self, zone_id: str) -> RuleCommon:
        """Effective thresholds of the rule that watches ``zone_id``."""
        return self._zone_cfg[zone_id]

    def _local(self, ts: float) -> datetime:
        return datetime.fromtimestamp(ts, UTC).astimezone(self.tz)

    def _active_zones(self, rule: str, ts: float) -> list[tuple[Zone, RuleCommon]]:
        local = self._local(ts)
        return [
            (z, self._zone_cfg[z.id]) for z in self.zones
            if z.rule == rule and self._zone_cfg[z.id].enabled
            and schedule_active(z.cfg.schedule, local) and schedule_active(self._zone_cfg[z.id].schedule, local)
        ]

    def _exempt(self, rule: str, d: sv.Detections, ts: float) -> np.ndarray:
        mask = np.zeros(len(d), dtype=bool)
        local = self._local(ts)
        for z in self.zones:
            if z.exempts == rule and schedule_active(z.cfg.schedule, local):
                mask |= z.contains(d)
        return mask

    def _tracked(self, d: sv.Detections) -> np.ndarray:
        return d.tracker_id if d.tracker_id is not None else np.full(len(d), -1, dtype=int)

    def _select(self, d: sv.Detections, classes: list[str] | set[str], min_conf: float) -> np.ndarray:
        mask = np.isin(names_of(d), list(classes))
        if d.confidence is not None:
            mask &= d.confidence >= min_conf
        return mask

    def _standing(self, rule: str, cfg: SidewalkParkingRule | StreetVendingRule, d: sv.Detections,
                  mask: np.ndarray, ts: float) -> dict[int, float]:
        st = self._stationarity.get((rule, cfg.max_shift, cfg.min_overlap))
        if st is None:
            st = self._stationarity[(rule, cfg.max_shift, cfg.min_overlap)] = Stationarity(
                cfg.max_shift, cfg.min_overlap)
        return st.update(self._tracked(d)[mask], d.xyxy[mask], ts)

    def _ridden(self, d: sv.Detections, vehicles: np.ndarray, person_class: str, memory_s: float,
                ts: float) -> np.ndarray:
        """Mask of ``vehicles`` ridden now or within ``memory_s`` (per track)."""
        tid = self._tracked(d)
        people = d.xyxy[self._select(d, [person_class], RIDER_MIN_CONFIDENCE)]
        idx = np.flatnonzero(vehicles)
        now = riders(d.xyxy[idx], people)
        out = np.zeros(len(d), dtype=bool)
        for i, r in zip(idx, now, strict=True):
            t = int(tid[i])
            if r:
                if t >= 0:
                    self._ridden_at[t] = ts
                out[i] = True
            elif t >= 0 and ts - self._ridden_at.get(t, float("-inf")) <= memory_s:
                out[i] = True
        return out

    # -- per-rule conditions -------------------------------------------------------------------

    def sidewalk_parking(self, d: sv.Detections, ts: float) -> list[Hit]:
        zones = self._active_zones("sidewalk_parking", ts)
        base = self.rules.sidewalk_parking
        cfgs: list[SidewalkParkingRule] = [base, *(c for _, c in zones)]  # type: ignore[list-item]
        tid = self._tracked(d)
        tracked = tid >= 0
        classes = {c for cfg in cfgs for c in cfg.vehicle_classes}
        any_vehicle = self._select(d, classes, min(c.min_confidence for c in cfgs)) & tracked
        ridden_classes = {c for cfg in cfgs for c in cfg.ridden_classes}
        ridden = self._ridden(d, any_vehicle & np.isin(names_of(d), list(ridden_classes)), base.person_class,
                              base.rider_memory_s, ts)
        since_by: dict[tuple[float, float], dict[int, float]] = {}
        for cfg in cfgs:
            if (cfg.max_shift, cfg.min_overlap) not in since_by:
                since_by[(cfg.max_shift, cfg.min_overlap)] = self._standing("sidewalk_parking", cfg, d,
                                                                             any_vehicle, ts)
        hits = []
        for zone, zcfg in zones:
            cfg: SidewalkParkingRule = zcfg  # type: ignore[assignment]
            since = since_by[(cfg.max_shift, cfg.min_overlap)]
            ridden_here = ridden & np.isin(names_of(d), cfg.ridden_classes)
            inside = zone.contains(d) & self._select(d, cfg.vehicle_classes, cfg.min_confidence) & tracked
            inside &= ~ridden_here
            hits += [Hit("sidewalk_parking", zone.id, int(tid[i]), int(i), since[int(tid[i])])
                     for i in np.flatnonzero(inside)]
        return hits

    def street_vending(self, d: sv.Detections, ts: float) -> list[Hit]:
        zones = self._active_zones("street_vending", ts)
        base = self.rules.street_vending
        cfgs: list[StreetVendingRule] = [base, *(c for _, c in zones)]  # type: ignore[list-item]
        tid = self._tracked(d)
        person_classes = {c.person_class for c in cfgs}
        all_persons = self._select(d, person_classes, min(c.min_confidence for c in cfgs)) & (tid >= 0)
        since_by = {(c.max_shift, c.min_overlap): self._standing("street_vending", c, d, all_persons, ts)
                    for c in cfgs}
        if not zones:
            return []
        exempt = self._exempt("street_vending", d, ts)
        cart_classes = {c for cfg in cfgs for c in cfg.cart_classes}
        carts_any = self._select(d, cart_classes, min(c.min_confidence for c in cfgs))
        ridden = self._ridden(d, carts_any, base.person_class, 0.0, ts)
        hits = []
        for zone, zcfg in zones:
            cfg: StreetVendingRule = zcfg  # type: ignore[assignment]
            since = since_by[(cfg.max_shift, cfg.min_overlap)]
            persons = self._select(d, [cfg.person_class], cfg.min_confidence) & (tid >= 0) & ~exempt
            vehicles = d.xyxy[self._select(d, cfg.cart_classes, RIDER_MIN_CONFIDENCE)]
            if len(vehicles) and persons.any():  # a rider is travelling, not vending
                persons[persons] &= ~riding(d.xyxy[persons], vehicles)
            ground = np.flatnonzero(self._select(d, cfg.stall_classes, cfg.min_confidence)
                                    | (self._select(d, cfg.cart_classes, cfg.min_confidence) & ~ridden))
            overhead = np.flatnonzero(self._select(d, cfg.overhead_classes, cfg.min_confidence))
            seats = np.flatnonzero(self._select(d, cfg.seat_classes, cfg.min_confidence))
            if not len(ground) and not len(overhead):
                continue
            for i in np.flatnonzero(zone.contains(d) & persons):
                p = d.xyxy[i]
                strong = [int(j) for j in ground if j != i and self._beside(p, d.xyxy[j], cfg)]
                strong += [int(j) for j in overhead if j != i and self._under(p, d.xyxy[j], cfg)]
                if not strong:
                    continue
                near_seats = [int(j) for j in seats if self._beside(p, d.xyxy[j], cfg, carried_ok=True)]
                hits.append(Hit("street_vending", zone.id, int(tid[i]), int(i), since[int(tid[i])],
                                tuple(dict.fromkeys(strong + near_seats))))
        return hits

    @staticmethod
    def _carried(p: np.ndarray, obj: np.ndarray, cfg: StreetVendingRule) -> bool:
        """An object no bigger than the person lying mostly inside the person's box extended upwards."""
        h = p[3] - p[1]
        held = np.array([p[0], p[1] - 0.5 * h, p[2], p[3]])
        return _area(obj) <= _area(p) and _inside_fraction(obj, held) >= cfg.carried_overlap

    def _beside(self, p: np.ndarray, obj: np.ndarray, cfg: StreetVendingRule, carried_ok: bool = False) -> bool:
        """A ground object next to the person at about the same depth."""
        h = p[3] - p[1]
        if _gap(p, obj) > cfg.proximity * h or abs(obj[3] - p[3]) > cfg.depth_tolerance * h:
            return False
        return carried_ok or not self._carried(p, obj, cfg)

    def _under(self, p: np.ndarray, obj: np.ndarray, cfg: StreetVendingRule) -> bool:
        """The person stands under an overhead object (a market umbrella) of stall size."""
        h = p[3] - p[1]
        width = obj[2] - obj[0]
        if not 0.6 * h <= width <= 3.0 * h or self._carried(p, obj, cfg):
            return False
        over = min(p[2], obj[2]) - max(p[0], obj[0])
        return bool(over > 0 and p[1] - 0.5 * h <= obj[3] <= p[1] + 0.4 * h)

    def _follows(self, dog: int, person: int, cfg: StrayDogRule, dog_diag: float, ts: float) -> bool:
        """Whether tracked ``person`` moved together with tracked ``dog`` over the last ``owner_follow_s``."""
        dp, pp = self._paths.get(dog), self._paths.get(person)
        if not dp or not pp or cfg.owner_follow_s <= 0:
            return False
        # Over the last owner_follow_s, or the part of it both were seen in (at least a third of it).
        start = max(ts - cfg.owner_follow_s, dp[0][0], pp[0][0])
        if ts - start < cfg.owner_follow_s / 3:
            return False

        def at(path: deque[tuple[float, float, float]], t: float) -> np.ndarray | None:
            best = min(path, key=lambda s: abs(s[0] - t))
            return np.array(best[1:]) if abs(best[0] - t) <= max(0.5, cfg.owner_follow_s / 3) else None

        d0, d1, p0, p1 = at(dp, start), at(dp, ts), at(pp, start), at(pp, ts)
        if d0 is None or d1 is None or p0 is None or p1 is None:
            return False
        vd, vp = d1 - d0, p1 - p0
        nd, np_ = float(np.hypot(*vd)), float(np.hypot(*vp))
        if nd < 0.5 * dog_diag or np_ < 0.25 * nd or np_ > 4 * nd:
            return False  # the dog did not go anywhere, or the person did not go along
        if float(vd @ vp) / (nd * np_) < 0.7:
            return False
        far = max(float(np.hypot(*(d0 - p0))), float(np.hypot(*(d1 - p1))))
        return far <= cfg.owner_follow_distance * dog_diag

    def stray_dog(self, d: sv.Detections, ts: float) -> list[Hit]:
        zones = self._active_zones("stray_dog", ts)
        base = self.rules.stray_dog
        cfgs: list[StrayDogRule] = [base, *(c for _, c in zones)]  # type: ignore[list-item]
        tid = self._tracked(d)
        dog_classes = {c.dog_class for c in cfgs}
        person_classes = {c.person_class for c in cfgs}
        dogs = self._select(d, dog_classes, min(c.min_confidence for c in cfgs)) & (tid >= 0)
        people_mask = self._select(d, person_classes, min(c.min_confidence for c in cfgs))
        c = (d.xyxy[:, :2] + d.xyxy[:, 2:]) / 2 if len(d) else np.zeros((0, 2))
        keep = max((cfg.owner_follow_s for cfg in cfgs), default=0.0) + 1.0
        for i in np.flatnonzero((dogs | people_mask) & (tid >= 0)):
            path = self._paths.setdefault(int(tid[i]), deque())
            path.append((ts, float(c[i, 0]), float(c[i, 1])))
            while path and ts - path[0][0] > keep:
                path.popleft()
        for t in [t for t, p in self._paths.items() if not p or ts - p[-1][0] > keep]:
            del self._paths[t]
        if not zones:
            return []
        exempt = self._exempt("stray_dog", d, ts)
        hits = []
        for zone, zcfg in zones:
            cfg: StrayDogRule = zcfg  # type: ignore[assignment]
            people = np.flatnonzero(self._select(d, [cfg.person_class], cfg.min_confidence))
            here = zone.contains(d) & self._select(d, [cfg.dog_class], cfg.min_confidence) & (tid >= 0) & ~exempt
            for i in np.flatnonzero(here):
                t, diag = int(tid[i]), _diag(d.xyxy[i])
                owned = any(
                    _iou(d.xyxy[i], d.xyxy[j]) < SAME_OBJECT_IOU and (
                        float(np.hypot(*(c[j] - c[i]))) <= cfg.person_distance * diag
                        or (tid[j] >= 0 and self._follows(t, int(tid[j]), cfg, diag, ts)))
                    for j in people
                )
                if owned:
                    self._owned_at[t] = ts
                if ts - self._owned_at.get(t, float("-inf")) <= cfg.owner_memory_s:
                    continue
                hits.append(Hit("stray_dog", zone.id, t, int(i)))
        return hits

    # -- episodes -------------------------------------------------------------------------------

    def hits(self, d: sv.Detections, ts: float) -> list[Hit]:
        out: list[Hit] = []
        for name, fn in (("sidewalk_parking", self.sidewalk_parking), ("street_vending", self.street_vending),
                         ("stray_dog", self.stray_dog)):
            if any(z.rule == name for z in self.zones):
                out += fn(d, ts)
        return out

    def _place_matches(self, ep: Episode, box: tuple[float, ...], feat: np.ndarray | None, cfg: RuleCommon
                       ) -> float | None:
        """Match score of a new box against an episode's object, None when it is not the same object."""
        iou = _iou(box, ep.last_xyxy)
        dist = float(np.hypot(*(_centre(box) - _centre(ep.last_xyxy))))
        if iou < cfg.rematch_iou and dist > cfg.rematch_distance * max(_diag(ep.last_xyxy), 1.0):
            return None
        sim = 1.0
        if cfg.rematch_similarity > 0 and feat is not None and ep.appearance is not None:
            sim = similarity(feat, ep.appearance)
            if sim < cfg.rematch_similarity:
                return None
        return iou + sim - dist / max(_diag(ep.last_xyxy), 1.0) * 0.01

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

    def update(self, d: sv.Detections, ts: float) -> list[RuleEvent]:
        """Advance to time ``ts`` with this frame's tracked detections; returns what changed."""
        events: list[RuleEvent] = []
        seen: set[int] = set()
        tids = self._tracked(d)
        visible = {int(t) for t in tids if t >= 0}
        feats = d.data.get(APPEARANCE)
        # The strongest case first: when a zone's cooldown lets one alert through, it is the person with the
        # most stall evidence.
        for hit in sorted(self.hits(d, ts), key=lambda h: -len(h.related)):
            tkey = (hit.rule, hit.zone_id, hit.track_id)
            cfg = self._zone_cfg[hit.zone_id]
            first, last = self._continuous.get(tkey, (ts, ts))
            if ts - last > cfg.max_gap_s:
                first = ts
            self._continuous[tkey] = (first, ts)
            onset = max(first, hit.since)
            box = tuple(float(v) for v in d.xyxy[hit.index])
            feat = np.asarray(feats[hit.index], dtype=np.float32) if feats is not None else None
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
            involved[[hit.index, *hit.related]] = True
            boxes = box_records(d, involved)
            if ep is None:
                ep = Episode(hit.rule, hit.zone_id, hit.track_id, onset, ts, cfg.dwell_s, id=self._next_id,
                             baseline=onset)
                self._next_id += 1
                self.episodes[ep.id] = ep
                self._by_track[tkey] = ep.id
                events.append(RuleEvent("onset", ep, ts, boxes, box))  # type: ignore[arg-type]
            seen.add(ep.id)
            ep.track_ids.add(hit.track_id)
            ep.last_true = ts
            ep.last_xyxy = box  # type: ignore[assignment]
            ep.last_boxes = boxes
            if feat is not None and feat.any():
                ep.appearance = feat if ep.appearance is None else 0.8 * ep.appearance + 0.2 * feat
            if d.confidence is not None:
                ep.confidence_sum += float(d.confidence[hit.index])
                ep.confidence_n += 1
            ep.related_track_ids |= {int(t) for t in tids[list(hit.related)] if t >= 0}
            if ep.confirmed_at is None and ts - ep.onset >= ep.dwell_s - 1e-6:
                ep.confirmed_at = ts
                zone_key = (ep.rule, ep.zone_id)
                if ts - self._last_alert.get(zone_key, -np.inf) < cfg.cooldown_s:
                    ep.suppressed = True
                else:
                    self._last_alert[zone_key] = ts
                    events.append(RuleEvent("confirmed", ep, ts, boxes, box))  # type: ignore[arg-type]
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
        for store in (self._ridden_at, self._owned_at):
            for t in [t for t, at in store.items() if ts - at > 600.0]:
                del store[t]

    def _close(self, ep: Episode, ts: float) -> RuleEvent:
        del self.episodes[ep.id]
        ep.closed_at = ts
        if ep.confirmed_at is not None:
            self._recent.append(ep)
        return RuleEvent("retracted" if ep.confirmed_at is None else "ended", ep, ts, [])

    def finish(self, ts: float) -> list[RuleEvent]:
        """End of stream: close every open episode."""
        return [self._close(ep, ts) for ep in list(self.episodes.values())]


def rule_config_hash(camera: CameraConfig, rules: RulesConfig) -> str:
    """sha256 of the rule thresholds and this camera's zones: evidence names the exact config in force."""
    doc = {"rules": rules.model_dump(mode="json"), "zones": [z.model_dump(mode="json") for z in camera.zones]}
    if camera.rules is not None:
        doc["camera_rules"] = camera.rules.model_dump(mode="json", exclude_none=True)
    return hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
