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

from nonsite.pipeline.leftobject import LeftObjectRule, left_object_type


class IllegalPostingRule(LeftObjectRule):
    dwell_s: float = Field(
        120.0, gt=0, description="Seconds a new poster or banner must stay unchanged (it does not move once put up).",
    )


TYPE = left_object_type(
    "illegal_posting", IllegalPostingRule,
    "A poster, banner or sign put up in a no-posting zone (a left object on a wall, pole or fence).",
    ("no_posting",), ("notice_board",), order=60,
)
