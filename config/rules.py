"""The three violation rules, their thresholds and schedules.

Thresholds are set once under ``rules:`` and can be overridden per camera (``cameras[].rules``) and per
zone (``cameras[].zones[].rules``); the most specific setting wins. Schedules (``schedule:``) say when a
rule or a zone is enforced, in the city's time zone (``timezone:``).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import Field, create_model, field_validator, model_validator

from nonsite.config.base import Section

Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
RULE_NAMES = ("sidewalk_parking", "street_vending", "stray_dog")

_HHMM = re.compile(r"^(?P<h>\d{1,2}):(?P<m>\d{2})$")


def _minutes(v: object, what: str) -> int:
    m = _HHMM.match(str(v).strip()) if isinstance(v, str) else None
    if m is None or int(m["m"]) > 59 or int(m["h"]) > 24 or (int(m["h"]) == 24 and int(m["m"]) != 0):
        raise ValueError(
            f"{what} {v!r} is not a time of day; write HH:MM from 00:00 to 23:59 (24:00 allowed as an end), "
            "e.g. '07:30'"
        )
    return int(m["h"]) * 60 + int(m["m"])


class ScheduleWindow(Section):
    """A weekly time window in the city's local time, e.g. ``{days: [fri, sat], start: '18:00', end: '23:00'}``."""

    days: list[Weekday] = Field(
        default_factory=lambda: list(WEEKDAYS),
        description="Weekdays the window starts on (mon, tue, wed, thu, fri, sat, sun); default every day.",
    )
    start: str = Field(description="Start of the window, local time HH:MM (00:00-23:59).")
    end: str = Field(
        description="End of the window, local time HH:MM (24:00 = midnight). An end earlier than the start "
        "runs past midnight into the next day (e.g. 22:00-02:00)."
    )

    @field_validator("start")
    @classmethod
    def _start(cls, v: object) -> str:
        if _minutes(v, "start") >= 24 * 60:
            raise ValueError("start '24:00' is not a time of day; a window starting at midnight starts at '00:00'")
        return str(v).strip()

    @field_validator("end")
    @classmethod
    def _end(cls, v: object) -> str:
        _minutes(v, "end")
        return str(v).strip()

    @field_validator("days")
    @classmethod
    def _days(cls, v: list[Weekday]) -> list[Weekday]:
        if not v:
            raise ValueError("days is empty; name at least one weekday (mon..sun) or leave days out for every day")
        return v

    @model_validator(mode="after")
    def _not_empty(self) -> ScheduleWindow:
        if _minutes(self.start, "start") == _minutes(self.end, "end") % (24 * 60):
            raise ValueError(
                f"the window {self.start}-{self.end} is empty; for a whole day write start: '00:00', end: '24:00'"
            )
        return self

    def contains(self, local: datetime) -> bool:
        """Whether the local time ``local`` falls inside this window."""
        start, end = _minutes(self.start, "start"), _minutes(self.end, "end")
        now = local.hour * 60 + local.minute + local.second / 60
        today = WEEKDAYS[local.weekday()]
        yesterday = WEEKDAYS[(local.weekday() - 1) % 7]
        if start < end:
            return today in self.days and start <= now < end
        return (today in self.days and now >= start) or (yesterday in self.days and now < end)


def schedule_active(windows: list[ScheduleWindow], local: datetime) -> bool:
    """True when ``windows`` is empty (always) or one of them contains ``local``."""
    return not windows or any(w.contains(local) for w in windows)


class RuleCommon(Section):
    enabled: bool = Field(True, description="Set false to switch the rule off (everywhere, or where overridden).")
    dwell_s: float = Field(description="Seconds the condition must hold before a violation is confirmed.")
    min_confidence: float = Field(0.3, gt=0, lt=1, description="Detections below this confidence are ignored.")
    max_gap_s: float = Field(
        2.0, ge=0, description="A condition interrupted for at most this long (missed detections) continues."
    )
    cooldown_s: float = Field(
        0.0, ge=0, description="After an alert, the same rule stays quiet in that zone for this many seconds "
        "(each object still alerts at most once per episode)."
    )
    schedule: list[ScheduleWindow] = Field(
        default_factory=list,
        description="When the rule is enforced, in the city's time zone; empty = always. Outside the windows "
        "the rule is silent and open episodes end.",
    )
    rematch_s: float = Field(
        120.0, ge=0,
        description="After an alerted episode ends (the object was lost), a new track at the same place that "
        "looks the same within this many seconds continues that episode instead of alerting again. Open "
        "episodes whose track was lost are matched the same way (a track id that changed after occlusion).",
    )
    rematch_iou: float = Field(
        0.3, ge=0, le=1,
        description="Same place: a new box overlapping the episode's last box by at least this IoU ...",
    )
    rematch_distance: float = Field(
        0.5, ge=0,
        description="... or whose centre lies within this many box diagonals of the last box's centre.",
    )
    rematch_similarity: float = Field(
        0.5, ge=0, le=1,
        description="Same look: least colour-histogram similarity (histogram intersection, 0..1) between the "
        "new box and the episode's object; 0 matches on place alone.",
    )


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
    stall_classes: list[str] = Field(
        default_factory=lambda: ["dining table", "suitcase", "stall", "vendor_cart"],
        description="Detector class names of stall-like objects standing on the ground (a fine-tuned model's "
        "own classes, e.g. stall or vendor_cart, count when the model has them).",
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


class RulesConfig(Section):
    sidewalk_parking: SidewalkParkingRule = Field(
        default_factory=SidewalkParkingRule, description="Vehicle standing on a sidewalk / no-parking zone."
    )
    street_vending: StreetVendingRule = Field(
        default_factory=StreetVendingRule, description="Person with stall-like objects in a no-vending zone."
    )
    stray_dog: StrayDogRule = Field(default_factory=StrayDogRule, description="Dog with no person near it.")


def _overrides(rule: type[RuleCommon], name: str) -> type[Section]:
    """A model with every field of ``rule`` optional (None = inherit), for camera- and zone-level overrides."""
    fields: dict[str, Any] = {}
    for fname, f in rule.model_fields.items():
        ann: Any = Annotated[(f.annotation, *f.metadata)] if f.metadata else f.annotation
        fields[fname] = (ann | None, Field(None, description=f"Overrides rules.{name}.{fname}: {f.description}"))
    model = create_model(f"{rule.__name__}Overrides", __base__=Section, **fields)
    model.__doc__ = f"Overrides of rules.{name}; unset keys inherit."
    return model


SidewalkParkingOverrides = _overrides(SidewalkParkingRule, "sidewalk_parking")
StreetVendingOverrides = _overrides(StreetVendingRule, "street_vending")
StrayDogOverrides = _overrides(StrayDogRule, "stray_dog")


class RuleOverrides(Section):
    """Rule settings that differ for one camera or one zone; unset keys inherit from ``rules:``."""

    sidewalk_parking: SidewalkParkingOverrides | None = Field(  # type: ignore[valid-type]
        None, description="Overrides of rules.sidewalk_parking here."
    )
    street_vending: StreetVendingOverrides | None = Field(  # type: ignore[valid-type]
        None, description="Overrides of rules.street_vending here."
    )
    stray_dog: StrayDogOverrides | None = Field(  # type: ignore[valid-type]
        None, description="Overrides of rules.stray_dog here."
    )

    def named(self) -> list[str]:
        return [n for n in RULE_NAMES if getattr(self, n) is not None]


def apply_overrides(rules: RulesConfig, over: RuleOverrides | None) -> RulesConfig:
    """``rules`` with the keys set in ``over`` replaced (a new object; ``rules`` is left alone)."""
    if over is None:
        return rules
    update: dict[str, RuleCommon] = {}
    for name in RULE_NAMES:
        ov = getattr(over, name)
        if ov is None:
            continue
        changes = {k: getattr(ov, k) for k in ov.model_fields_set if getattr(ov, k) is not None}
        update[name] = getattr(rules, name).model_copy(update=changes)
    return rules.model_copy(update=update)
