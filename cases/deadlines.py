"""Deadlines (限时办结) on a working-day clock: time limits per violation type and per step, due times, states.

A **step** is the time a case waits in one status for the next action of the workflow
(:data:`STEP_OF_STATUS`)::

    confirm   draft / returned -> confirmed   operator's evidence review (e.g. within 30 minutes)
    review    confirmed -> approved/returned  legal review 法制审核 (e.g. within 1 working day)
    dispatch  approved -> dispatched          task handed to a team (任务交办)
    rectify   dispatched -> rectified         the team's field disposal and feedback (整改, N days)
    close     rectified -> closed             closing the case (结案)

A :class:`TimeLimit` is an amount and a unit:

- ``minutes`` / ``hours``: elapsed time, round the clock (the duty desk works nights and holidays);
- ``working_minutes``: minutes inside the office hours (``office_hours``) of working days only;
- ``days``: calendar days; the day the step starts is not counted (期间开始之日不计算在内), the step is due at
  the end (24:00) of the N-th day after it; ``roll_to_working_day`` moves a last day that is a rest day to the
  end of the next working day (期间届满的最后一日是法定休假日的，以休假日后的第一日为期间届满的日期);
- ``working_days``: working days; the start day is not counted, the step is due at the end (24:00) of the N-th
  working day after it (行政处罚法第八十五条: 期限以工作日计算，不含法定节假日).

Days are counted in the city's time zone; every instant going in and out is UTC-aware. ``Due.at`` is the
**first late instant**: a step is overdue when ``now >= due.at``; a day-based deadline "by the end of
10 October" is stored as 11 October 00:00 local (16:00 UTC on the 10th in Asia/Shanghai).

Working days come from the maintained ``chinesecalendar`` package (the State Council's holiday schedule:
statutory holidays and the make-up working days 调休). Version 1.11.0 covers the years **2004 to 2026**
(:func:`calendar_years` reads the range from the installed package, so an upgrade widens it). A date outside
that range falls back to Monday to Friday: a warning is logged once per year and per calendar, and the
result says so (``Due.calendar_covered`` is False, ``Due.uncovered_years`` names the years) so the UI can
show "calendar not covered" (节假日日历未覆盖). The State Council publishes the next year's schedule
each November; upgrade the package when a release carries it.

The limits live in the legal-basis catalogue (``cases/legal_basis.yaml``): catalogue-wide defaults under
``time_limits:`` and per-type overrides under ``types.<type>.time_limits:``; :func:`time_limits_from_catalogue`
reads them from a catalogue-shaped dict, :meth:`~nonsite.cases.legal_basis.Catalogue.time_limit_table` from a
loaded catalogue. Nothing here touches the database.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from nonsite.config.loader import ConfigError, error_lines, load_model

__all__ = [
    "STEPS",
    "STEP_OF_STATUS",
    "Due",
    "DueState",
    "OfficeWindow",
    "StepLimits",
    "TimeLimit",
    "TimeLimitDefaults",
    "TimeLimitError",
    "TimeLimitTable",
    "TypeTimeLimits",
    "WorkCalendar",
    "calendar_years",
    "due_at",
    "load_time_limits",
    "state",
    "time_limits_from_catalogue",
]

log = logging.getLogger(__name__)

Step = Literal["confirm", "review", "dispatch", "rectify", "close"]
#: The steps of the workflow, in order.
STEPS: tuple[str, ...] = ("confirm", "review", "dispatch", "rectify", "close")
#: Which step a case in each open status is in (dismissed and closed cases have none).
STEP_OF_STATUS: Mapping[str, str] = {
    "draft": "confirm",
    "returned": "confirm",
    "confirmed": "review",
    "approved": "dispatch",
    "dispatched": "rectify",
    "rectified": "close",
}

Unit = Literal["minutes", "hours", "working_minutes", "days", "working_days"]
_MAX_DAYS_SEARCHED = 3660  # a limit that needs more than ten years of calendar is a configuration error


class TimeLimitError(ConfigError):
    """Time limits that do not validate (``str()`` is ``file:line: key: fix`` lines)."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TimeLimit(_Model):
    """How long one step may take."""

    amount: int = Field(gt=0, le=100_000, description="How many units the step may take.")
    unit: Unit = Field(
        description="minutes | hours (elapsed, round the clock), working_minutes (inside office hours of working "
        "days), days (calendar days, due at 24:00 of the N-th day after the start day), working_days (due at "
        "24:00 of the N-th working day after the start day; statutory holidays and make-up days per chinesecalendar)."
    )
    roll_to_working_day: bool = Field(
        False, description="days only: when the last day is a rest day, the step is due at the end of the next "
        "working day instead."
    )

    @model_validator(mode="after")
    def _roll(self) -> TimeLimit:
        if self.roll_to_working_day and self.unit != "days":
            raise ValueError(f"roll_to_working_day applies only to unit: days, not {self.unit}; remove it")
        return self

    def label(self, lang: str = "zh") -> str:
        """The limit in words (``1个工作日``, ``30 minutes``)."""
        zh = {"minutes": "分钟", "hours": "小时", "working_minutes": "工作分钟", "days": "天",
              "working_days": "个工作日"}
        if lang == "en":
            return f"{self.amount} {self.unit.replace('_', ' ')}"
        return f"{self.amount}{zh[self.unit]}"


def _parse_clock(value: Any) -> Any:
    # YAML 1.1 reads an unquoted 13:30 as the base-60 integer 810; take it back as a time of day.
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 24 * 60:
        return time(value // 60, value % 60)
    return value


class OfficeWindow(_Model):
    """One window of office hours (local time of the city)."""

    start: time = Field(description="Start, HH:MM (quote it in YAML: '08:30').")
    end: time = Field(description="End, HH:MM, after start (the same day).")

    @field_validator("start", "end", mode="before")
    @classmethod
    def _clock(cls, value: Any) -> Any:
        return _parse_clock(value)

    @model_validator(mode="after")
    def _order(self) -> OfficeWindow:
        if self.end <= self.start:
            raise ValueError(f"end {self.end:%H:%M} is not after start {self.start:%H:%M}; a window stays within a day")
        return self


def _default_office_hours() -> list[OfficeWindow]:
    return [OfficeWindow(start=time(8, 30), end=time(12, 0)), OfficeWindow(start=time(13, 30), end=time(17, 30))]


class StepLimits(_Model):
    """A time limit per step; a step left out has no limit (or, in a type's override, keeps the default)."""

    confirm: TimeLimit | None = Field(None, description="draft/returned -> confirmed (operator's evidence review).")
    review: TimeLimit | None = Field(None, description="confirmed -> approved or returned (legal review 法制审核).")
    dispatch: TimeLimit | None = Field(None, description="approved -> dispatched (task handed to a team).")
    rectify: TimeLimit | None = Field(None, description="dispatched -> rectified (field disposal and feedback).")
    close: TimeLimit | None = Field(None, description="rectified -> closed (结案).")


def _default_steps() -> StepLimits:
    return StepLimits(
        confirm=TimeLimit(amount=30, unit="minutes"),
        review=TimeLimit(amount=1, unit="working_days"),
        dispatch=TimeLimit(amount=1, unit="working_days"),
        rectify=TimeLimit(amount=3, unit="working_days"),
        close=TimeLimit(amount=2, unit="working_days"),
    )


class TimeLimitDefaults(_Model):
    """Catalogue-wide time limits (``time_limits:`` at the top of the legal-basis catalogue)."""

    due_soon_fraction: float = Field(
        0.2, gt=0, lt=1,
        description="A step is 'due soon' when at most this fraction of its allowed time (start to due) is left.",
    )
    office_hours: list[OfficeWindow] = Field(
        default_factory=_default_office_hours, min_length=1,
        description="Office hours of a working day (local time), for working_minutes limits; in order, not "
        "overlapping.",
    )
    steps: StepLimits = Field(default_factory=_default_steps, description="The limit of each step.")

    @model_validator(mode="after")
    def _windows(self) -> TimeLimitDefaults:
        for a, b in zip(self.office_hours, self.office_hours[1:], strict=False):
            if b.start < a.end:
                raise ValueError(f"office_hours window {b.start:%H:%M}-{b.end:%H:%M} starts before the previous one "
                                 f"ends ({a.end:%H:%M}); list the windows in order without overlap")
        return self


class TypeTimeLimits(_Model):
    """A violation type's overrides (``types.<type>.time_limits:``); a step it names replaces the default (null:
    no limit for this type)."""

    due_soon_fraction: float | None = Field(None, gt=0, lt=1, description="Overrides the catalogue's fraction.")
    steps: StepLimits = Field(default_factory=StepLimits, description="The steps whose limit differs for this type.")


@dataclass(frozen=True)
class TimeLimitTable:
    """Catalogue-wide limits with the per-type overrides applied."""

    defaults: TimeLimitDefaults = field(default_factory=TimeLimitDefaults)
    per_type: Mapping[str, TypeTimeLimits] = field(default_factory=dict)

    def limit(self, violation_type: str, step: str) -> TimeLimit | None:
        """The limit of ``step`` for a case of ``violation_type`` (None: the step has no limit)."""
        if step not in STEPS:
            raise ValueError(f"unknown step {step!r}; use one of {', '.join(STEPS)}")
        override = self.per_type.get(violation_type)
        if override is not None and step in override.steps.model_fields_set:
            return getattr(override.steps, step)  # type: ignore[no-any-return]
        return getattr(self.defaults.steps, step)  # type: ignore[no-any-return]

    def due_soon_fraction(self, violation_type: str) -> float:
        override = self.per_type.get(violation_type)
        if override is not None and override.due_soon_fraction is not None:
            return override.due_soon_fraction
        return self.defaults.due_soon_fraction

    def due_for(
        self, violation_type: str, step: str, start: datetime, tz: str | ZoneInfo,
        calendar: WorkCalendar | None = None,
    ) -> Due | None:
        """When ``step`` of a case of ``violation_type`` that started at ``start`` (UTC) is due (None: no limit)."""
        limit = self.limit(violation_type, step)
        if limit is None:
            return None
        return due_at(start, limit, tz, office_hours=self.defaults.office_hours, calendar=calendar)


    def finish_due(
        self, violation_type: str, confirmed_at: datetime, tz: str | ZoneInfo, calendar: WorkCalendar | None = None,
    ) -> Due | None:
        """The case's 限时办结 deadline: the steps after confirmation (review, dispatch, rectify, close) chained,
        each counted from the previous one's due (a day-based step from the day it was due, that day not
        counted; a step without a limit adds nothing); None when no step after
        confirmation has a limit. ``calendar_covered`` is False when any step's count left the calendar."""
        start = _aware(confirmed_at, "confirmed_at")
        at, covered, years, limited = start, True, set(), False
        for step in STEPS[1:]:
            limit = self.limit(violation_type, step)
            if limit is None:
                continue
            # A day-based step counts from the day the previous step was due (24:00 belongs to that day).
            begin = at - timedelta(microseconds=1) if limited and limit.unit in ("days", "working_days") else at
            due = due_at(begin, limit, tz, office_hours=self.defaults.office_hours, calendar=calendar)
            at, covered, limited = due.at, covered and due.calendar_covered, True
            years.update(due.uncovered_years)
        if not limited:
            return None
        return Due(start=start, at=at, limit=None, calendar_covered=covered, uncovered_years=tuple(sorted(years)))


# -- the calendar ---------------------------------------------------------------------------------------


def calendar_years() -> tuple[int, int]:
    """First and last year the installed ``chinesecalendar`` knows (1.11.0: 2004, 2026)."""
    from chinese_calendar import constants

    years = [d.year for d in constants.holidays]
    return min(years), max(years)


class WorkCalendar:
    """China's working days: weekends, statutory holidays and make-up working days (调休) from ``chinesecalendar``;
    Monday to Friday outside the years it covers (a warning logged once per year)."""

    def __init__(self) -> None:
        from chinese_calendar import constants

        self._holidays: Mapping[date, Any] = constants.holidays
        self._workdays: Mapping[date, Any] = constants.workdays
        self.first_year, self.last_year = calendar_years()
        self._warned: set[int] = set()

    def covers(self, day: date) -> bool:
        return self.first_year <= day.year <= self.last_year

    def is_workday(self, day: date) -> tuple[bool, bool]:
        """(whether ``day`` is a working day, whether the holiday calendar covers it)."""
        if not self.covers(day):
            if day.year not in self._warned:
                self._warned.add(day.year)
                log.warning(
                    "the holiday calendar (chinesecalendar) covers %d-%d, not %d: counting Monday to Friday as "
                    "working days that year (upgrade chinesecalendar once it carries the State Council's schedule)",
                    self.first_year, self.last_year, day.year,
                )
            return day.weekday() < 5, False
        if day in self._workdays:
            return True, True
        return day.weekday() < 5 and day not in self._holidays, True


_default_calendar: WorkCalendar | None = None


def _calendar(calendar: WorkCalendar | None) -> WorkCalendar:
    global _default_calendar
    if calendar is not None:
        return calendar
    if _default_calendar is None:
        _default_calendar = WorkCalendar()
    return _default_calendar


# -- due times and states -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Due:
    """When a step is due: ``at`` is the first late instant (UTC); ``start`` when the step began (UTC)."""

    start: datetime
    at: datetime
    limit: TimeLimit | None = None
    calendar_covered: bool = True
    uncovered_years: tuple[int, ...] = ()

    @property
    def allowed(self) -> timedelta:
        return self.at - self.start


class DueState(enum.StrEnum):
    ON_TIME = "on_time"
    DUE_SOON = "due_soon"
    OVERDUE = "overdue"


def _aware(value: datetime, name: str) -> datetime:
    if value.tzinfo is None:
        raise ValueError(f"{name} must be timezone-aware (UTC); got a naive datetime")
    return value.astimezone(UTC)


def _zone(tz: str | ZoneInfo) -> ZoneInfo:
    return tz if isinstance(tz, ZoneInfo) else ZoneInfo(tz)


def _local_midnight(day: date, zone: ZoneInfo) -> datetime:
    return datetime.combine(day, time(0), tzinfo=zone).astimezone(UTC)


def due_at(
    start_utc: datetime,
    limit: TimeLimit,
    tz: str | ZoneInfo,
    *,
    office_hours: list[OfficeWindow] | None = None,
    calendar: WorkCalendar | None = None,
) -> Due:
    """When a step that started at ``start_utc`` with ``limit`` is due, counted in the city's zone ``tz``.

    ``office_hours`` (default 08:30-12:00 and 13:30-17:30) matter for ``working_minutes`` only. The result is
    UTC; ``calendar_covered`` is False when a day outside the holiday calendar's years was counted as Monday to
    Friday.
    """
    start = _aware(start_utc, "start_utc")
    zone = _zone(tz)
    cal = _calendar(calendar)
    uncovered: set[int] = set()

    def workday(day: date) -> bool:
        is_work, covered = cal.is_workday(day)
        if not covered:
            uncovered.add(day.year)
        return is_work

    if limit.unit in ("minutes", "hours"):
        at = start + (timedelta(minutes=limit.amount) if limit.unit == "minutes" else timedelta(hours=limit.amount))
    elif limit.unit == "days":
        last = start.astimezone(zone).date() + timedelta(days=limit.amount)
        if limit.roll_to_working_day:
            last = _next_workday(last, workday, include=True)
        at = _local_midnight(last + timedelta(days=1), zone)
    elif limit.unit == "working_days":
        day = start.astimezone(zone).date()
        for _ in range(limit.amount):
            day = _next_workday(day + timedelta(days=1), workday, include=True)
        at = _local_midnight(day + timedelta(days=1), zone)
    else:
        at = _working_minutes(start, limit.amount, zone, office_hours or _default_office_hours(), workday)
    return Due(start=start, at=at, limit=limit, calendar_covered=not uncovered,
               uncovered_years=tuple(sorted(uncovered)))


def _next_workday(day: date, workday: Any, *, include: bool) -> date:
    if not include:
        day += timedelta(days=1)
    for _ in range(_MAX_DAYS_SEARCHED):
        if workday(day):
            return day
        day += timedelta(days=1)
    raise ValueError(f"no working day within {_MAX_DAYS_SEARCHED} days after {day}")


def _working_minutes(
    start: datetime, minutes: int, zone: ZoneInfo, windows: list[OfficeWindow], workday: Any
) -> datetime:
    left = timedelta(minutes=minutes)
    day = start.astimezone(zone).date()
    for _ in range(_MAX_DAYS_SEARCHED):
        if workday(day):
            for w in windows:
                w_start = datetime.combine(day, w.start, tzinfo=zone).astimezone(UTC)
                w_end = datetime.combine(day, w.end, tzinfo=zone).astimezone(UTC)
                begin = max(w_start, start)
                if begin >= w_end:
                    continue
                if w_end - begin >= left:
                    return begin + left
                left -= w_end - begin
        day += timedelta(days=1)
    raise ValueError(f"{minutes} working minutes do not fit in {_MAX_DAYS_SEARCHED} days")


def state(due: Due, now: datetime, due_soon_fraction: float = 0.2) -> DueState:
    """``overdue`` from ``due.at`` on; ``due_soon`` when at most ``due_soon_fraction`` of the allowed time
    (``due.start`` to ``due.at``, elapsed time) is left; ``on_time`` before that."""
    if not 0 <= due_soon_fraction < 1:
        raise ValueError(f"due_soon_fraction must be in [0, 1), not {due_soon_fraction}")
    now = _aware(now, "now")
    if now >= due.at:
        return DueState.OVERDUE
    if due.at - now <= due.allowed * due_soon_fraction:
        return DueState.DUE_SOON
    return DueState.ON_TIME


# -- reading the limits from a catalogue ----------------------------------------------------------------


class _TypeEntry(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)  # the rest of a type's entry is legal_basis' business

    time_limits: TypeTimeLimits | None = None


class _CatalogueLimits(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    time_limits: TimeLimitDefaults = Field(default_factory=TimeLimitDefaults)
    types: dict[str, _TypeEntry] = Field(default_factory=dict)

    def table(self) -> TimeLimitTable:
        per_type = {t: e.time_limits for t, e in self.types.items() if e.time_limits is not None}
        return TimeLimitTable(defaults=self.time_limits, per_type=per_type)


_UNKNOWN_KEY = "unknown key; see the time limits schema at the top of cases/legal_basis.yaml"


def time_limits_from_catalogue(
    raw: Mapping[str, Any], *, source: str = "catalogue", lines: Mapping[tuple[Any, ...], int] | None = None
) -> TimeLimitTable:
    """The time limits of a catalogue-shaped dict: defaults under ``time_limits:``, overrides under
    ``types.<type>.time_limits:`` (every other key is ignored). A catalogue without them gets the built-in
    defaults (30 minutes to confirm, 1 working day to review and to dispatch, 3 to rectify, 2 to close).

    Raises :class:`TimeLimitError` with ``source:line: key: fix`` lines (``lines`` maps key paths to lines).
    """
    try:
        parsed = _CatalogueLimits.model_validate(dict(raw))
    except ValidationError as e:
        raise TimeLimitError("\n".join(error_lines(e, source, lines or {}, unknown_key=_UNKNOWN_KEY))) from None
    return parsed.table()


def load_time_limits(path: str | Path) -> TimeLimitTable:
    """The time limits of a catalogue file (the legal-basis catalogue, or a file of the same shape)."""
    try:
        return load_model(Path(path), _CatalogueLimits, what="the file must be a mapping (time_limits:, types:)",
                          unknown_key=_UNKNOWN_KEY).table()
    except ConfigError as e:
        raise TimeLimitError(str(e)) from None
