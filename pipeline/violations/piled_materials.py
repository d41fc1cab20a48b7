"""Piled materials (乱堆物料): goods, materials or refuse piled along a street or in a public place.

A class-agnostic left object (:mod:`nonsite.pipeline.leftobject`): something that appears in the zone, stays
unchanged for the dwell and no tracked person or vehicle explains; a trained model's class can label or confirm
it (``object_classes``, ``require_class``). Evidence adds the zone's clean reference still (role ``reference``,
the "before" picture) beside the onset and confirmation stills.

Zones: ``no_piling_area`` (pavements, squares, the foot of a wall); ``piling_allowed`` exempts an approved
temporary piling site (a permit for building works).
"""

from __future__ import annotations

from pydantic import Field

from nonsite.pipeline.leftobject import LeftObjectRule, left_object_type


class PiledMaterialsRule(LeftObjectRule):
    dwell_s: float = Field(
        600.0, gt=0,
        description="Seconds an object must stand unchanged in the zone (10 minutes: a delivery being unloaded "
        "is not piling).",
    )


TYPE = left_object_type(
    "piled_materials", PiledMaterialsRule,
    "Materials piled in a no-piling area (a left object standing unchanged).",
    ("no_piling_area",), ("piling_allowed",), order=40,
)
