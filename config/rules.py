"""Rule settings common to every violation type: thresholds of the episode machinery, schedules, overrides.

Thresholds are set once under ``rules:`` and can be overridden per camera (``cameras[].rules``) and per
zone (``cameras[].zones[].rules``); the most specific setting wins. Each violation type adds its own fields
to :class:`RuleCommon` in its module (:mod:`nonsite.pipeline.violations`). Schedules (``schedule:``) say when a
rule or a zone is enforced, in the city's time zone (``timezone:``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, ConfigDict, Field, create_model, field_validator, model_validator

from nonsite.config.base import Section
from nonsite.config.manifest import type_names

Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

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
    same_object_overlap: float = Field(
        0.6, ge=0, le=1,
        description="One object, one alert: a confirmation in a zone whose box overlaps an open, already confirmed "
        "episode's object there by at least this fraction of the smaller box is that same object (a second, "
        "partial box of it) and raises no second alert; 0 = off.",
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


@dataclass(frozen=True)
class _UnknownType:
    name: str


def _known_type(value: Any) -> Any:
    if isinstance(value, _UnknownType):
        raise ValueError(f"unknown violation type '{value.name}'; use one of {', '.join(type_names())}")
    return value


class _ByType(Section):
    """Settings keyed by violation type. Central roles (sealer, drafter, console) validate only that every key
    names a known type (:func:`nonsite.config.manifest.type_names`); the models with each type's own fields
    are built from the registry of violation types where rules run (:mod:`nonsite.pipeline.violations`)."""

    model_config = ConfigDict(extra="allow")
    __pydantic_extra__: dict[str, Annotated[dict[str, Any] | None, BeforeValidator(_known_type)]]

    @model_validator(mode="before")
    @classmethod
    def _mark_unknown(cls, data: Any) -> Any:
        """Unknown type names fail as their own key (file:line of the key, not of the section)."""
        if isinstance(data, dict):
            known = type_names()
            return {k: v if k in known else _UnknownType(str(k)) for k, v in data.items()}
        return data

    def named(self) -> list[str]:
        """The types this section sets something for."""
        return [n for n, v in (self.model_extra or {}).items() if v is not None]


class RulesConfig(_ByType):
    """Thresholds and schedules of each violation type (``rules.<type>``); see docs/config.schema.json."""


class RuleOverrides(_ByType):
    """Rule settings that differ for one camera or one zone; unset keys inherit from ``rules:``."""


def overrides_model(rule: type[RuleCommon], name: str) -> type[Section]:
    """A model with every field of ``rule`` optional (None = inherit), for camera- and zone-level overrides."""
    fields: dict[str, Any] = {}
    for fname, f in rule.model_fields.items():
        ann: Any = Annotated[(f.annotation, *f.metadata)] if f.metadata else f.annotation
        fields[fname] = (ann | None, Field(None, description=f"Overrides rules.{name}.{fname}: {f.description}"))
    model = create_model(f"{rule.__name__}Overrides", __base__=Section, **fields)
    model.__doc__ = f"Overrides of rules.{name}; unset keys inherit."
    return model


def typed_rules_models(types: list[tuple[str, type[RuleCommon], str]]) -> tuple[type[Section], type[Section]]:
    """``rules:`` and the camera/zone overrides with each type's own model: ``types`` is (name, model,
    description) per type, in order."""
    rules = create_model("RulesConfig", __base__=Section, **{  # type: ignore[call-overload]
        name: (model, Field(default_factory=model, description=desc)) for name, model, desc in types
    })
    rules.__doc__ = "Thresholds and schedules of each violation type."
    over = create_model("RuleOverrides", __base__=Section, **{  # type: ignore[call-overload]
        name: (overrides_model(model, name) | None, Field(None, description=f"Overrides of rules.{name} here."))
        for name, model, _ in types
    })
    over.__doc__ = RuleOverrides.__doc__
    return rules, over


def override_names(over: Section) -> list[str]:
    """The types an overrides section (typed or not) sets something for."""
    if isinstance(over, _ByType):
        return over.named()
    return [n for n in type(over).model_fields if getattr(over, n) is not None]


def apply_overrides(rules: Section, over: Section | None) -> Section:
    """``rules`` with the keys set in ``over`` replaced (a new object; ``rules`` is left alone). Both are the
    typed models of :func:`typed_rules_models`."""
    if over is None:
        return rules
    update: dict[str, RuleCommon] = {}
    for name in override_names(over):
        ov = getattr(over, name)
        changes = {k: getattr(ov, k) for k in ov.model_fields_set if getattr(ov, k) is not None}
        update[name] = getattr(rules, name).model_copy(update=changes)
    return rules.model_copy(update=update)
