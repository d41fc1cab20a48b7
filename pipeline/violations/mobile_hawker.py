"""Mobile hawker (流动摊贩): a cart that moves along the street and stops again and again to sell.

One stop is not a case (a vendor cart waiting at a crossing, a delivery); the pattern is. A **stop** is the cart
standing still (its box near where it stopped) for at least ``min_stop_s`` inside a ``no_hawking`` zone with a
person at it (beside it at about its depth, not riding it). When one cart (one track) has made ``min_stops``
stops within ``window_s``, in one zone or across several zones of this kind, the hawker is confirmed; the
episode's object is the cart, the people at it are its related objects, and it stays one episode while the
cart is seen (its later stops raise no second alert). A cart that only passes through makes no stop; stops
further apart than the window never add up.

The cart classes are a trained model's (``vendor_cart`` of the street model, ``models/zoo/street-yolo11n.md``);
a tricycle cart seen as a ``bicycle`` by a COCO model can be added to ``cart_classes``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from pydantic import Field

from nonsite.config.rules import RuleCommon
from nonsite.pipeline.geometry import gap, riding
from nonsite.pipeline.violations.base import FORGET_S, Hit, Scene, Standing, TypeState, ViolationType


class MobileHawkerRule(RuleCommon):
    dwell_s: float = Field(
        1.0, gt=0,
        description="Seconds the cart must stay in view after its stops added up before the alert (one more look "
        "at it; the stops themselves are the evidence of the pattern).",
    )
    max_gap_s: float = Field(
        5.0, ge=0, description="A cart hidden for at most this long (a bus passing in front) is the same episode."
    )
    min_stops: int = Field(3, ge=2, le=50, description="Stops within window_s that make one cart a mobile hawker.")
    min_stop_s: float = Field(
        30.0, gt=0,
        description="Seconds a cart must stand still (with a person at it) for a stop to count; shorter halts "
        "(traffic, a crossing) are not stops.",
    )
    window_s: float = Field(
        900.0, gt=0,
        description="Stops count together only when they all started within this many seconds (a sliding "
        "window); older stops drop out of the count.",
    )
    cart_classes: list[str] = Field(
        default_factory=lambda: ["vendor_cart"],
        description="Detector classes of a hawker's cart (the street model's vendor_cart; add bicycle for "
        "tricycle carts with a COCO model, at the price of false stops by parked bicycles).",
    )
    person_class: str = Field("person", description="Detector class name of a person (the hawker).")
    proximity: float = Field(
        0.5, gt=0,
        description="A person is at the cart when the gap between the boxes is at most this many person-heights ...",
    )
    depth_tolerance: float = Field(
        0.35, gt=0,
        description="... and the bottoms of both boxes (where they touch the ground) are at most this many "
        "person-heights apart vertically (the same depth).",
    )
    max_shift: float = Field(
        0.15, gt=0, le=2,
        description="A cart stands still while its box centre stays within this fraction of its box diagonal of "
        "where it stopped ...",
    )
    min_overlap: float = Field(
        0.7, gt=0, le=1,
        description="... or while its box overlaps where it stopped by at least this fraction of the smaller box.",
    )
    cooldown_s: float = Field(
        0.0, ge=0, description="After an alert, no new hawker alert in that zone for this many seconds."
    )


@dataclass
class Cart:
    """What is known of one cart track: its counted stops (start times) and when its stops added up."""

    stops: list[float] = field(default_factory=list)
    """Start times of the stops that counted (each at least min_stop_s, with a person at the cart)."""
    last_seen: float = 0.0
    qualified_at: float | None = None
    """When its stops first added up: the episode's onset (constant, so the episode is not restarted)."""
    zone_id: str = ""
    """The zone of the stop that made it add up: the episode stays there while the cart moves on."""


@dataclass
class HawkerState(TypeState):
    standing: Standing = field(default_factory=Standing)
    carts: dict[int, Cart] = field(default_factory=dict)
    keep_s: float = FORGET_S

    def forget(self, ts: float) -> None:
        for t in [t for t, c in self.carts.items() if ts - c.last_seen > self.keep_s]:
            del self.carts[t]


def at_cart(people: np.ndarray, cart: np.ndarray, cfg: MobileHawkerRule) -> np.ndarray:
    """For each person box, whether it stands at ``cart``: close (``proximity``), at its depth, not riding it."""
    out = np.zeros(len(people), dtype=bool)
    if not len(people):
        return out
    for k, p in enumerate(people):
        h = max(float(p[3] - p[1]), 1.0)
        out[k] = gap(p, cart) <= cfg.proximity * h and abs(float(cart[3] - p[3])) <= cfg.depth_tolerance * h
    return out & ~riding(people, cart[None])


def count_stops(stops: list[float], now: float, window_s: float) -> int:
    """Stops that started within the last ``window_s`` seconds (all stops of the window ending now)."""
    return sum(1 for s in stops if now - s <= window_s + 1e-6)


def detect(scene: Scene[MobileHawkerRule], state: HawkerState) -> list[Hit]:
    """Carts whose stops in this type's zones add up (the people at them as ``related``)."""
    cfgs, d, tid = scene.configs, scene.d, scene.tracked
    state.keep_s = max(FORGET_S, *(c.window_s for c in cfgs))
    classes = {c for cfg in cfgs for c in cfg.cart_classes}
    carts_any = scene.select(classes, min(c.min_confidence for c in cfgs)) & (tid >= 0)
    since_by = {(c.max_shift, c.min_overlap): state.standing.update(scene, c.max_shift, c.min_overlap, carts_any)
                for c in cfgs}
    for j in np.flatnonzero(carts_any):
        state.carts.setdefault(int(tid[j]), Cart()).last_seen = scene.ts
    if not scene.zones:
        return []
    exempt = scene.exempt()
    hits: list[Hit] = []
    zone_cfg = {z.id: c for z, c in scene.zones}
    for zone, cfg in scene.zones:
        persons = scene.select([cfg.person_class], cfg.min_confidence)
        carts = zone.contains(d) & scene.select(cfg.cart_classes, cfg.min_confidence) & (tid >= 0) & ~exempt
        for j in np.flatnonzero(carts):
            t = int(tid[j])
            cart = state.carts[t]
            since = since_by[(cfg.max_shift, cfg.min_overlap)][t]
            people = np.flatnonzero(persons)
            people = people[at_cart(d.xyxy[people], d.xyxy[j], cfg)] if len(people) else people
            stopped = scene.ts - since >= cfg.min_stop_s - 1e-6
            if stopped and len(people) and (not cart.stops or cart.stops[-1] != since):
                cart.stops.append(since)  # this stop counts (once)
            if cart.qualified_at is None and count_stops(cart.stops, scene.ts, cfg.window_s) >= cfg.min_stops:
                cart.qualified_at, cart.zone_id = scene.ts, zone.id
    for j in np.flatnonzero(carts_any):
        cart = state.carts[int(tid[j])]
        if cart.qualified_at is not None and cart.zone_id in zone_cfg:
            people = np.flatnonzero(scene.select([zone_cfg[cart.zone_id].person_class],
                                                 zone_cfg[cart.zone_id].min_confidence))
            near = people[at_cart(d.xyxy[people], d.xyxy[j], zone_cfg[cart.zone_id])] if len(people) else people
            hits.append(Hit(TYPE.name, cart.zone_id, int(tid[j]), int(j), cart.qualified_at,
                            tuple(int(i) for i in near)))
    return hits


TYPE = ViolationType(
    name="mobile_hawker",
    config=MobileHawkerRule,
    description="A cart that stops again and again to sell along no-hawking streets (several stops with a person "
    "at the cart within a window).",
    watches=("no_hawking",),
    detect=detect,
    new_state=HawkerState,
    order=80,
)
