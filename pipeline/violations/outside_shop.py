"""Goods outside the shop (店外经营 / 跨门经营): a shop's goods, stands or tables outside its door.

A class-agnostic left object (:mod:`nonsite.pipeline.leftobject`): something that appears in the zone, stays
unchanged for the dwell and no tracked person or vehicle explains; a trained model's class can label or confirm
it (``object_classes``, ``require_class``). Evidence adds the zone's clean reference still (role ``reference``,
the "before" picture) beside the onset and confirmation stills.

Zones: ``shop_front`` (the pavement in front of the shops, up to the door line).
"""

from __future__ import annotations

from pydantic import Field

from nonsite.pipeline.leftobject import LeftObjectRule, LeftObjectState, detect_left_objects
from nonsite.pipeline.violations.base import Hit, Scene, ViolationType


class OutsideShopRule(LeftObjectRule):
    dwell_s: float = Field(300.0, gt=0, description="Seconds the goods must stand unchanged in front of the shop.")


def detect(scene: Scene[OutsideShopRule], state: LeftObjectState) -> list[Hit]:
    return detect_left_objects(scene, state, TYPE.name)


TYPE = ViolationType(
    name="outside_shop",
    config=OutsideShopRule,
    description="Goods, stands or tables of a shop outside its front (a left object in a shop-front zone).",
    watches=("shop_front",),
    detect=detect,
    new_state=LeftObjectState,
    reference=LeftObjectState.reference_of,
    order=70,
)
