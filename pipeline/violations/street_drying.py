"""Street-side drying (沿街晾晒): clothes, quilts or goods hung or spread to dry along a street.

A class-agnostic left object (:mod:`nonsite.pipeline.leftobject`): something that appears in the zone, stays
unchanged for the dwell and no tracked person or vehicle explains; a trained model's class can label or confirm
it (``object_classes``, ``require_class``). Evidence adds the zone's clean reference still (role ``reference``,
the "before" picture) beside the onset and confirmation stills.

Zones: ``no_drying`` (railings, trees, balconies and windows facing the street, the pavement).
"""

from __future__ import annotations

from pydantic import Field

from nonsite.pipeline.leftobject import LeftObjectRule, left_object_type


class StreetDryingRule(LeftObjectRule):
    dwell_s: float = Field(300.0, gt=0, description="Seconds the things must hang unchanged in the zone.")


TYPE = left_object_type(
    "street_drying", StreetDryingRule,
    "Things hung or spread to dry along a street (a left object in a no-drying zone).",
    ("no_drying",), order=50,
)
