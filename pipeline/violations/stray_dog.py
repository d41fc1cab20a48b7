"""Stray dog (流浪犬): a dog in a no-stray-dogs zone with nobody near it and nobody walking along with it.

Allow zones (``dogs_allowed``, e.g. a dog park) exempt an area.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np
from pydantic import Field

from nonsite.config.rules import RuleCommon
from nonsite.pipeline.geometry import diag, iou
from nonsite.pipeline.violations.base import FORGET_S, Hit, Scene, TypeState, ViolationType

SAME_OBJECT_IOU = 0.7  # a "person" box on top of the dog's box is the dog labelled twice, not an owner


class StrayDogRule(RuleCommon):
    dwell_s: float = Field(30.0, gt=0, description="Seconds a dog must be seen with nobody near it.")
    cooldown_s: float = Field(
        300.0, ge=0, description="After an alert, no new stray-dog alert in that zone for this many seconds."
    )
    rematch_distance: float = Field(
        4.0, ge=0,
        description="... or whose centre lies within this many box diagonals of the last box's centre "
        "(dogs wander: keep it wide).",
    )
    dog_class: str = Field("dog", description="Detector class name of a dog.")
    person_class: str = Field("person", description="Detector class name of a person.")
    person_distance: float = Field(
        4.0, gt=0, description="A person within this many dog-box diagonals counts as an owner."
    )
    owner_follow_s: float = Field(
        3.0, ge=0,
        description="A person who moved together with the dog over the last this-many seconds (same "
        "direction, similar distance) counts as its owner even when farther away; 0 switches this off.",
    )
    owner_follow_distance: float = Field(
        12.0, gt=0, description="How far (in dog-box diagonals) a person moving with the dog may walk."
    )
    owner_memory_s: float = Field(
        5.0, ge=0, description="A dog seen with an owner stays owned for this many seconds (the owner briefly "
        "hidden)."
    )


@dataclass
class DogState(TypeState):
    owned_at: dict[int, float] = field(default_factory=dict)
    """When each dog track was last seen with an owner."""
    paths: dict[int, deque[tuple[float, float, float]]] = field(default_factory=dict)
    """Recent centres (ts, x, y) of dogs and people, per track."""

    def forget(self, ts: float) -> None:
        for t in [t for t, at in self.owned_at.items() if ts - at > FORGET_S]:
            del self.owned_at[t]


def _follows(state: DogState, dog: int, person: int, cfg: StrayDogRule, dog_diag: float, ts: float) -> bool:
    """Whether tracked ``person`` moved together with tracked ``dog`` over the last ``owner_follow_s``."""
    dp, pp = state.paths.get(dog), state.paths.get(person)
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


def detect(scene: Scene[StrayDogRule], state: DogState) -> list[Hit]:
    """Tracked dogs in the zone, outside allow zones, not seen with an owner within ``owner_memory_s``."""
    cfgs, d, ts = scene.configs, scene.d, scene.ts
    tid = scene.tracked
    dog_classes = {c.dog_class for c in cfgs}
    person_classes = {c.person_class for c in cfgs}
    dogs = scene.select(dog_classes, min(c.min_confidence for c in cfgs)) & (tid >= 0)
    people_mask = scene.select(person_classes, min(c.min_confidence for c in cfgs))
    c = (d.xyxy[:, :2] + d.xyxy[:, 2:]) / 2 if len(d) else np.zeros((0, 2))
    keep = max((cfg.owner_follow_s for cfg in cfgs), default=0.0) + 1.0
    for i in np.flatnonzero((dogs | people_mask) & (tid >= 0)):
        path = state.paths.setdefault(int(tid[i]), deque())
        path.append((ts, float(c[i, 0]), float(c[i, 1])))
        while path and ts - path[0][0] > keep:
            path.popleft()
    for t in [t for t, p in state.paths.items() if not p or ts - p[-1][0] > keep]:
        del state.paths[t]
    if not scene.zones:
        return []
    exempt = scene.exempt()
    hits = []
    for zone, cfg in scene.zones:
        people = np.flatnonzero(scene.select([cfg.person_class], cfg.min_confidence))
        here = zone.contains(d) & scene.select([cfg.dog_class], cfg.min_confidence) & (tid >= 0) & ~exempt
        for i in np.flatnonzero(here):
            t, dg = int(tid[i]), diag(d.xyxy[i])
            owned = any(
                iou(d.xyxy[i], d.xyxy[j]) < SAME_OBJECT_IOU and (
                    float(np.hypot(*(c[j] - c[i]))) <= cfg.person_distance * dg
                    or (tid[j] >= 0 and _follows(state, t, int(tid[j]), cfg, dg, ts)))
                for j in people
            )
            if owned:
                state.owned_at[t] = ts
            if ts - state.owned_at.get(t, float("-inf")) <= cfg.owner_memory_s:
                continue
            hits.append(Hit(TYPE.name, zone.id, t, int(i)))
    return hits


TYPE = ViolationType(
    name="stray_dog",
    config=StrayDogRule,
    description="Dog with no person near it.",
    watches=("no_stray_dogs",),
    exempts=("dogs_allowed",),
    detect=detect,
    new_state=DogState,
    order=30,
)
