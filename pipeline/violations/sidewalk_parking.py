"""Sidewalk parking (人行道违停): a vehicle standing still in a sidewalk or no-parking zone.

A vehicle counts as standing while its box stays near where it stopped (centre shift or overlap, so detector
jitter and a partly hidden car do not restart the dwell; a move must show on two frames); a motorcycle or
bicycle with a rider on it is in traffic, not parked. A vehicle too small to judge (a far car in a receding lane
moves a few pixels a second: below ``min_box_px`` tall, or under ``min_zone_height`` of the zone's height) is
not considered. Look-alike vehicle classes (car/truck/bus) are merged
into one box per vehicle before tracking, and a confirmed vehicle gets its plate read (evidence role
``plate``, the reading in the event's offender hint).
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from nonsite.config.rules import RuleCommon
from nonsite.pipeline.detections import names_of
from nonsite.pipeline.violations.base import Hit, Scene, StandingState, ViolationType


class SidewalkParkingRule(RuleCommon):
    dwell_s: float = Field(60.0, gt=0, description="Seconds a vehicle must stand still in the zone.")
    max_gap_s: float = Field(
        3.0, ge=0, description="A condition interrupted for at most this long (missed detections, a passing "
        "pedestrian or bus) continues."
    )
    rematch_s: float = Field(
        600.0, ge=0,
        description="After an alerted parking episode ends (the vehicle was hidden or lost), a new track at the "
        "same place that looks the same within this many seconds continues it instead of alerting again.",
    )
    vehicle_classes: list[str] = Field(
        default_factory=lambda: ["car", "truck", "bus", "motorcycle"],
        description="Detector class names counted as vehicles.",
    )
    max_shift: float = Field(
        0.12, gt=0, le=1,
        description="A vehicle is stationary while its box centre stays within this fraction of its box "
        "diagonal of where it stopped ...",
    )
    min_overlap: float = Field(
        0.8, gt=0, le=1,
        description="... or while its box overlaps where it stopped by at least this fraction of the smaller "
        "box (a box shrunk by partial occlusion still counts as standing). A move must show on two "
        "consecutive frames to count, so one bad box never restarts the dwell.",
    )
    min_box_px: float = Field(
        12.0, ge=0,
        description="A vehicle box less than this many pixels tall is not considered: no detector's box is steady "
        "enough at that size to tell a standing car from one crawling away. 0 = off.",
    )
    min_zone_height: float = Field(
        0.06, ge=0, le=1,
        description="A vehicle counts only when its box is at least this fraction of the zone's height (the zone's "
        "bounding box, in pixels) tall: far, small vehicles in a zone that reaches into the distance (a receding "
        "lane) move only a few pixels a second and would read as standing. Draw the far part of a long kerb as a "
        "zone of its own when far vehicles must count there. 0 = off.",
    )
    ridden_classes: list[str] = Field(
        default_factory=lambda: ["motorcycle", "bicycle"],
        description="Vehicle classes that are in traffic, not parked, while a person rides them (a person box "
        "sitting on the vehicle box).",
    )
    person_class: str = Field("person", description="Detector class name of a person (riders).")
    rider_memory_s: float = Field(
        10.0, ge=0, description="A vehicle seen with a rider counts as ridden for this many seconds more."
    )
    read_plates: bool = Field(
        True,
        description="Read the licence plate of a confirmed vehicle when a plate reader is installed "
        "(nonsite.models.plates, configured in the plates: section); the reading goes into the event's "
        "offender hint, the crop into the evidence (role plate). Set false for a camera or zone where plates "
        "are never legible.",
    )


def big_enough(scene: Scene[SidewalkParkingRule], zone_height_px: float, cfg: SidewalkParkingRule) -> np.ndarray:
    """Mask of detections tall enough to judge: ``min_box_px`` and ``min_zone_height`` of the zone's height."""
    h = scene.d.xyxy[:, 3] - scene.d.xyxy[:, 1]
    return np.asarray((h >= cfg.min_box_px) & (h >= cfg.min_zone_height * zone_height_px), dtype=bool)


def detect(scene: Scene[SidewalkParkingRule], state: StandingState) -> list[Hit]:
    """Tracked vehicles of the zone's classes in the zone, not ridden, with the time each stopped."""
    cfgs, base, d = scene.configs, scene.base, scene.d
    tid = scene.tracked
    tracked = tid >= 0
    classes = {c for cfg in cfgs for c in cfg.vehicle_classes}
    any_vehicle = scene.select(classes, min(c.min_confidence for c in cfgs)) & tracked
    ridden_classes = {c for cfg in cfgs for c in cfg.ridden_classes}
    ridden = state.ridden.update(scene, any_vehicle & np.isin(names_of(d), list(ridden_classes)),
                                 base.person_class, base.rider_memory_s)
    since_by: dict[tuple[float, float], dict[int, float]] = {}
    for cfg in cfgs:
        if (cfg.max_shift, cfg.min_overlap) not in since_by:
            since_by[(cfg.max_shift, cfg.min_overlap)] = state.standing.update(scene, cfg.max_shift,
                                                                               cfg.min_overlap, any_vehicle)
    hits = []
    for zone, cfg in scene.zones:
        since = since_by[(cfg.max_shift, cfg.min_overlap)]
        ridden_here = ridden & np.isin(names_of(d), cfg.ridden_classes)
        inside = zone.contains(d) & scene.select(cfg.vehicle_classes, cfg.min_confidence) & tracked
        inside &= ~ridden_here & big_enough(scene, zone.height_px, cfg)
        hits += [Hit(TYPE.name, zone.id, int(tid[i]), int(i), since[int(tid[i])]) for i in np.flatnonzero(inside)]
    return hits


TYPE = ViolationType(
    name="sidewalk_parking",
    config=SidewalkParkingRule,
    description="Vehicle standing on a sidewalk / no-parking zone.",
    watches=("sidewalk", "no_parking"),
    detect=detect,
    new_state=StandingState,
    merge_classes=lambda cfg: cfg.vehicle_classes,
    reads_plate=lambda cfg: cfg.read_plates,
    order=10,
)
