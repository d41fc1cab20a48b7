"""Street-side drying (沿街晾晒): clothes, quilts or goods hung or spread to dry along a street.

A class-agnostic left object (:mod:`nonsite.pipeline.leftobject`): something that appears in the zone, stays
unchanged for the dwell and no tracked person or vehicle explains; a trained model's class can label or confirm
it (``object_classes``, ``require_class``). Evidence adds the zone's clean reference still (role ``reference``,
the "before" picture) beside the onset and confirmation stills.

Zones: ``no_drying`` (railings, trees, balconies and windows facing the street, the pavement).
"""

from __future__ import annotations

from pydantic import Field

from nonsite.pipeline.leftobject import LeftObjectRule, LeftObjectState, detect_left_objects
from nonsite.pipeline.violations.base import Hit, Scene, ViolationType


class StreetDryingRule(LeftObjectRule):
    dwell_s: float = Field(300.0, gt=0, description="Seconds the things must hang unchanged in the zone.")


def detect(scene: Scene[StreetDryingRule], state: LeftObjectState) -> list[Hit]:
    return detect_left_objects(scene, state, TYPE.name)


TYPE = ViolationType(
    name="street_drying",
    config=StreetDryingRule,
    description="Things hung or spread to dry along a street (a left object in a no-drying zone).",
    watches=("no_drying",),
    detect=detect,
    new_state=LeftObjectState,
    reference=LeftObjectState.reference_of,
    order=50,
)
