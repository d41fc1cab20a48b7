"""Goods outside the shop (店外经营 / 跨门经营): a shop's goods, stands or tables outside its door.

A class-agnostic left object (:mod:`nonsite.pipeline.leftobject`): something that appears in the zone, stays
unchanged for the dwell and no tracked person or vehicle explains; a trained model's class can label or confirm
it (``object_classes``, ``require_class``). Evidence adds the zone's clean reference still (role ``reference``,
the "before" picture) beside the onset and confirmation stills.

Zones: ``shop_front`` (the pavement in front of the shops, up to the door line).
"""

from __future__ import annotations

from pydantic import Field

from nonsite.pipeline.leftobject import LeftObjectRule, left_object_type


class OutsideShopRule(LeftObjectRule):
    dwell_s: float = Field(300.0, gt=0, description="Seconds the goods must stand unchanged in front of the shop.")


TYPE = left_object_type(
    "outside_shop", OutsideShopRule,
    "Goods, stands or tables of a shop outside its front (a left object in a shop-front zone).",
    ("shop_front",), order=70,
)
