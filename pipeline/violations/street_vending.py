"""Street vending (占道经营): a stall or vendor cart standing in a no-vending zone.

With a detector that has a cart class (``vendor_cart`` of the street model, ``models/zoo/street-yolo11n.md``)
the **cart** is the case's object: a cart box standing still in the zone with a person at it (beside it, at
the same depth), or left there for the dwell, is vending. For carts and stalls the model does not see, and for
a model without a cart class, the COCO heuristics remain: a vendor stands beside a ground stall (table,
suitcase, an unridden bicycle or motorcycle used as a cart) at the same depth, or under a market umbrella;
seats count only beside a stall; a cart someone rides is travelling, and so is its rider. Allow zones
(``vending_allowed``, e.g. a night market by its schedule) exempt an area.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from pydantic import Field

from nonsite.config.rules import RuleCommon
from nonsite.pipeline.geometry import area, gap, inside_fraction, riding
from nonsite.pipeline.violations.base import (
    RIDER_MIN_CONFIDENCE,
    Hit,
    Scene,
    Standing,
    StandingState,
    ViolationType,
)


class StreetVendingRule(RuleCommon):
    dwell_s: float = Field(120.0, gt=0, description="Seconds a vendor must stay with the stall in the zone.")
    cooldown_s: float = Field(
        600.0, ge=0, description="After an alert, no new vending alert in that zone for this many seconds "
        "(several people at one stall are one case)."
    )
    rematch_distance: float = Field(
        1.0, ge=0,
        description="... or whose centre lies within this many box diagonals of the last box's centre.",
    )
    person_class: str = Field("person", description="Detector class name of a person.")
    vendor_cart_classes: list[str] = Field(
        default_factory=lambda: ["vendor_cart", "stall"],
        description="Classes of a trained model that are a vendor cart or stall itself (the street model's "
        "vendor_cart): such a box standing still in the zone is the case's object, with a person at it or "
        "left there (require_attendant). Classes the model does not have are simply never seen; the "
        "person-based heuristics (stall_classes, overhead_classes, cart_classes) then find the vendors.",
    )
    require_attendant: bool = Field(
        False,
        description="A vendor cart counts only while a person stands at it (true), or also when it is left "
        "standing in the zone for the dwell (false: a stall whose vendor stepped away still occupies the street).",
    )
    cart_max_shift: float = Field(
        0.15, gt=0, le=2,
        description="A vendor cart stands still while its box centre stays within this fraction of its box "
        "diagonal of where it stopped ...",
    )
    cart_min_overlap: float = Field(
        0.7, gt=0, le=1,
        description="... or while its box overlaps where it stopped by at least this fraction of the smaller box "
        "(a cart partly hidden by its customers still stands).",
    )
    stall_classes: list[str] = Field(
        default_factory=lambda: ["dining table", "suitcase"],
        description="Detector class names of stall-like objects standing on the ground beside which a person is "
        "a vendor (COCO heuristics; a fine-tuned model's own stall class may be added here too, e.g. thela, when "
        "it is not listed in vendor_cart_classes).",
    )
    overhead_classes: list[str] = Field(
        default_factory=lambda: ["umbrella"],
        description="Stall-like objects above the vendor (a market umbrella): they count when the person "
        "stands under them and they are at least half a person-height wide (not a hand-held umbrella).",
    )
    cart_classes: list[str] = Field(
        default_factory=lambda: ["bicycle", "motorcycle"],
        description="Vehicles used as a cart: they count as a stall while nobody rides them.",
    )
    seat_classes: list[str] = Field(
        default_factory=lambda: ["chair", "bench"],
        description="Seats count as stall evidence only beside a stall or cart (a person alone on a bench is "
        "not a vendor).",
    )
    proximity: float = Field(
        0.5, gt=0,
        description="A ground object counts when the gap between its box and the person's is at most this many "
        "person-heights ...",
    )
    depth_tolerance: float = Field(
        0.35, gt=0,
        description="... and it stands at about the person's depth: the bottoms of both boxes (where they touch "
        "the ground) at most this many person-heights apart vertically.",
    )
    carried_overlap: float = Field(
        0.6, gt=0, le=1,
        description="An object no bigger than the person lying at least this fraction inside the person's box "
        "(extended upwards by half a height) is carried (a handbag, a hand-held umbrella), not a stall.",
    )
    max_shift: float = Field(
        0.35, gt=0, le=2, description="A person is stationary while within this fraction of their box diagonal ..."
    )
    min_overlap: float = Field(
        0.6, gt=0, le=1,
        description="... or while their box overlaps where they stopped by at least this fraction of the "
        "smaller box.",
    )


@dataclass
class VendingState(StandingState):
    """Memory of street vending on one camera: when each person and each vendor cart stopped."""

    carts: Standing = field(default_factory=Standing)


def _carried(p: np.ndarray, obj: np.ndarray, cfg: StreetVendingRule) -> bool:
    """An object no bigger than the person lying mostly inside the person's box extended upwards."""
    h = p[3] - p[1]
    held = np.array([p[0], p[1] - 0.5 * h, p[2], p[3]])
    return area(obj) <= area(p) and inside_fraction(obj, held) >= cfg.carried_overlap


def _beside(p: np.ndarray, obj: np.ndarray, cfg: StreetVendingRule, carried_ok: bool = False) -> bool:
    """A ground object next to the person at about the same depth."""
    h = p[3] - p[1]
    if gap(p, obj) > cfg.proximity * h or abs(obj[3] - p[3]) > cfg.depth_tolerance * h:
        return False
    return carried_ok or not _carried(p, obj, cfg)


def _under(p: np.ndarray, obj: np.ndarray, cfg: StreetVendingRule) -> bool:
    """The person stands under an overhead object (a market umbrella) of stall size."""
    h = p[3] - p[1]
    width = obj[2] - obj[0]
    if not 0.6 * h <= width <= 3.0 * h or _carried(p, obj, cfg):
        return False
    over = min(p[2], obj[2]) - max(p[0], obj[0])
    return bool(over > 0 and p[1] - 0.5 * h <= obj[3] <= p[1] + 0.4 * h)


def attendants(scene: Scene[StreetVendingRule], cart: int, persons: np.ndarray, cfg: StreetVendingRule) -> list[int]:
    """Indices of the ``persons`` (a mask) standing at detection ``cart``: beside it at about its depth, or
    behind it (boxes touching); a person riding it is travelling with it, not selling from it."""
    d = scene.d
    c = d.xyxy[cart]
    out = []
    for i in np.flatnonzero(persons):
        p = d.xyxy[i]
        if _beside(p, c, cfg, carried_ok=True) and not riding(p[None], c[None])[0]:
            out.append(int(i))
    return out


def _cart_hits(scene: Scene[StreetVendingRule], state: VendingState) -> tuple[list[Hit], set[int]]:
    """Vendor carts (a trained model's cart class) standing still in a zone, with a person at them or (unless
    ``require_attendant``) left there; returns the hits and the people at those carts."""
    cfgs, d, tid = scene.configs, scene.d, scene.tracked
    classes = {c for cfg in cfgs for c in cfg.vendor_cart_classes}
    carts_any = scene.select(classes, min(c.min_confidence for c in cfgs)) & (tid >= 0)
    since_by = {(c.cart_max_shift, c.cart_min_overlap): state.carts.update(scene, c.cart_max_shift,
                                                                           c.cart_min_overlap, carts_any)
                for c in cfgs}
    hits: list[Hit] = []
    at_carts: set[int] = set()
    if not carts_any.any():
        return hits, at_carts
    exempt = scene.exempt()
    for zone, cfg in scene.zones:
        since = since_by[(cfg.cart_max_shift, cfg.cart_min_overlap)]
        carts = zone.contains(d) & scene.select(cfg.vendor_cart_classes, cfg.min_confidence) & (tid >= 0) & ~exempt
        persons = scene.select([cfg.person_class], cfg.min_confidence)
        for j in np.flatnonzero(carts):
            people = attendants(scene, int(j), persons, cfg)
            if cfg.require_attendant and not people:
                continue
            at_carts.update(people)
            hits.append(Hit(TYPE.name, zone.id, int(tid[j]), int(j), since[int(tid[j])], tuple(people)))
    return hits, at_carts


def detect(scene: Scene[StreetVendingRule], state: VendingState) -> list[Hit]:
    """Vendor carts standing in the zone (the people at them as ``related``), then tracked, standing people in
    the zone beside a stall found by the COCO heuristics (the stall objects as ``related``)."""
    cfgs, base, d = scene.configs, scene.base, scene.d
    tid = scene.tracked
    person_classes = {c.person_class for c in cfgs}
    all_persons = scene.select(person_classes, min(c.min_confidence for c in cfgs)) & (tid >= 0)
    since_by = {(c.max_shift, c.min_overlap): state.standing.update(scene, c.max_shift, c.min_overlap, all_persons)
                for c in cfgs}
    carts_seen, at_carts = _cart_hits(scene, state)
    if not scene.zones:
        return []
    exempt = scene.exempt()
    cart_classes = {c for cfg in cfgs for c in cfg.cart_classes}
    carts_any = scene.select(cart_classes, min(c.min_confidence for c in cfgs))
    ridden = state.ridden.update(scene, carts_any, base.person_class, 0.0)
    hits = carts_seen
    for zone, cfg in scene.zones:
        since = since_by[(cfg.max_shift, cfg.min_overlap)]
        persons = scene.select([cfg.person_class], cfg.min_confidence) & (tid >= 0) & ~exempt
        persons[list(at_carts)] = False  # their cart is the case already
        vehicles = d.xyxy[scene.select(cfg.cart_classes, RIDER_MIN_CONFIDENCE)]
        if len(vehicles) and persons.any():  # a rider is travelling, not vending
            persons[persons] &= ~riding(d.xyxy[persons], vehicles)
        stalls = [c for c in cfg.stall_classes if c not in cfg.vendor_cart_classes]
        ground = np.flatnonzero(scene.select(stalls, cfg.min_confidence)
                                | (scene.select(cfg.cart_classes, cfg.min_confidence) & ~ridden))
        overhead = np.flatnonzero(scene.select(cfg.overhead_classes, cfg.min_confidence))
        seats = np.flatnonzero(scene.select(cfg.seat_classes, cfg.min_confidence))
        if not len(ground) and not len(overhead):
            continue
        for i in np.flatnonzero(zone.contains(d) & persons):
            p = d.xyxy[i]
            strong = [int(j) for j in ground if j != i and _beside(p, d.xyxy[j], cfg)]
            strong += [int(j) for j in overhead if j != i and _under(p, d.xyxy[j], cfg)]
            if not strong:
                continue
            near_seats = [int(j) for j in seats if _beside(p, d.xyxy[j], cfg, carried_ok=True)]
            hits.append(Hit(TYPE.name, zone.id, int(tid[i]), int(i), since[int(tid[i])],
                            tuple(dict.fromkeys(strong + near_seats))))
    return hits


TYPE = ViolationType(
    name="street_vending",
    config=StreetVendingRule,
    description="A vendor cart standing in a no-vending zone (with a person at it, or left there), or a person "
    "with stall-like objects there.",
    watches=("no_vending",),
    exempts=("vending_allowed",),
    detect=detect,
    new_state=VendingState,
    order=20,
)
