"""The three violation rules and their thresholds (per-zone dwell overrides live on the zone)."""

from __future__ import annotations

from pydantic import Field

from nonsite.config.base import Section


class RuleCommon(Section):
    enabled: bool = Field(True, description="Set false to switch the rule off everywhere.")
    dwell_s: float = Field(description="Seconds the condition must hold before a violation is confirmed.")
    min_confidence: float = Field(0.3, gt=0, lt=1, description="Detections below this confidence are ignored.")
    max_gap_s: float = Field(
        2.0, ge=0, description="A condition interrupted for at most this long (missed detections) continues."
    )
    cooldown_s: float = Field(
        0.0, ge=0, description="After an alert, the same rule stays quiet in that zone for this many seconds "
        "(each object still alerts at most once per episode)."
    )


class SidewalkParkingRule(RuleCommon):
    dwell_s: float = Field(60.0, gt=0, description="Seconds a vehicle must stand still in the zone.")
    vehicle_classes: list[str] = Field(
        default_factory=lambda: ["car", "truck", "bus", "motorcycle"],
        description="Detector class names counted as vehicles.",
    )
    max_shift: float = Field(
        0.12, gt=0, le=1,
        description="A vehicle is stationary while its box centre stays within this fraction of its box "
        "diagonal of where it stopped.",
    )


class StreetVendingRule(RuleCommon):
    dwell_s: float = Field(120.0, gt=0, description="Seconds a vendor must stay with the stall in the zone.")
    cooldown_s: float = Field(
        600.0, ge=0, description="After an alert, no new vending alert in that zone for this many seconds "
        "(several people at one stall are one case)."
    )
    person_class: str = Field("person", description="Detector class name of a person.")
    stall_classes: list[str] = Field(
        default_factory=lambda: ["umbrella", "dining table", "chair", "bench", "suitcase", "stall", "vendor_cart"],
        description="Detector class names taken as stall-like objects.",
    )
    proximity: float = Field(
        1.5, gt=0, description="A stall counts when within this many person-heights of the person."
    )
    max_shift: float = Field(
        0.35, gt=0, le=2, description="A person is stationary while within this fraction of their box diagonal."
    )


class StrayDogRule(RuleCommon):
    dwell_s: float = Field(30.0, gt=0, description="Seconds a dog must be seen with nobody near it.")
    cooldown_s: float = Field(
        300.0, ge=0, description="After an alert, no new stray-dog alert in that zone for this many seconds."
    )
    dog_class: str = Field("dog", description="Detector class name of a dog.")
    person_class: str = Field("person", description="Detector class name of a person.")
    person_distance: float = Field(
        4.0, gt=0, description="A person within this many dog-box diagonals counts as an owner."
    )


class RulesConfig(Section):
    sidewalk_parking: SidewalkParkingRule = Field(
        default_factory=SidewalkParkingRule, description="Vehicle standing on a sidewalk / no-parking zone."
    )
    street_vending: StreetVendingRule = Field(
        default_factory=StreetVendingRule, description="Person with stall-like objects in a no-vending zone."
    )
    stray_dog: StrayDogRule = Field(default_factory=StrayDogRule, description="Dog with no person near it.")
