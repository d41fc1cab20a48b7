"""Illegal posting (违规宣传物): posters, banners or signs put up without approval.

A class-agnostic left object (:mod:`nonsite.pipeline.leftobject`): something that appears in the zone, stays
unchanged for the dwell and no tracked person or vehicle explains; a trained model's class can label or confirm
it (``object_classes``, ``require_class``). Evidence adds the zone's clean reference still (role ``reference``,
the "before" picture) beside the onset and confirmation stills.

Zones: ``no_posting`` (walls, poles, fences, bridges); ``notice_board`` exempts an approved board or
posting column.
"""

from __future__ import annotations

from pydantic import Field

from nonsite.pipeline.leftobject import LeftObjectRule, LeftObjectState, detect_left_objects
from nonsite.pipeline.violations.base import Hit, Scene, ViolationType


class IllegalPostingRule(LeftObjectRule):
    dwell_s: float = Field(
        120.0, gt=0, description="Seconds a new poster or banner must stay unchanged (it does not move once put up).",
    )


def detect(scene: Scene[IllegalPostingRule], state: LeftObjectState) -> list[Hit]:
    return detect_left_objects(scene, state, TYPE.name)


TYPE = ViolationType(
    name="illegal_posting",
    config=IllegalPostingRule,
    description="A poster, banner or sign put up in a no-posting zone (a left object on a wall, pole or fence).",
    watches=("no_posting",),
    exempts=("notice_board",),
    detect=detect,
    new_state=LeftObjectState,
    reference=LeftObjectState.reference_of,
    order=60,
)
