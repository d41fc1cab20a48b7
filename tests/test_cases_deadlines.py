"""Deadlines on China's working-day clock: statutory holidays and make-up working days from chinesecalendar,
the city's time zone, minute limits, year boundaries, the fallback outside the calendar's years, and the time
limits read from the legal-basis catalogue."""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from bureau_support import SH, end_of, local
from chinese_calendar import constants

from nonsite.cases.db import CaseStatus
from nonsite.cases.deadlines import (
    STEP_OF_STATUS,
    STEPS,
    Due,
    DueState,
    TimeLimit,
    TimeLimitError,
    WorkCalendar,
    calendar_years,
    due_at,
    load_time_limits,
    state,
    time_limits_from_catalogue,
)
from nonsite.cases.legal_basis import DEFAULT_CATALOGUE, LegalBasisError, default_catalogue, load_catalogue


def holiday_block(year: int, name: str) -> list[date]:
    days = sorted(d for d, h in constants.holidays.items() if d.year == year and h == name)
    assert days, f"chinesecalendar has no {name} in {year}"
    return days


def makeup_days(year: int, name: str) -> list[date]:
    return sorted(d for d, h in constants.workdays.items() if d.year == year and h == name)


WD = TimeLimit(amount=1, unit="working_days")


def test_the_calendar_covers_2004_to_2026_and_says_so() -> None:
    assert calendar_years() == (2004, 2026)
    cal = WorkCalendar()
    assert cal.covers(date(2026, 12, 31)) and not cal.covers(date(2027, 1, 1))


def test_national_day_2026_pushes_a_one_working_day_review_past_the_holiday() -> None:
    block = holiday_block(2026, "National Day")
    assert block[0] == date(2026, 10, 1) and len(block) == 7  # the package's schedule: 1-7 October
    first_back = block[-1] + timedelta(days=1)
    # Confirmed on the last working afternoon before the holiday, 17:00 local.
    eve = block[0] - timedelta(days=1)
    due = due_at(local(eve.year, eve.month, eve.day, 17), WD, "Asia/Shanghai")
    assert due.at == end_of(first_back) == datetime(2026, 10, 8, 16, 0, tzinfo=UTC)
    assert due.calendar_covered and due.uncovered_years == ()
    # A case that arrives during the holiday (local 1 October 01:00 is still 30 September in UTC) waits too.
    assert due_at(datetime(2026, 9, 30, 17, 0, tzinfo=UTC), WD, SH).at == end_of(first_back)


def test_a_make_up_saturday_counts_as_a_working_day() -> None:
    makeup = makeup_days(2026, "National Day")
    after = [d for d in makeup if d.month == 10]
    assert after and after[0].weekday() == 5  # a Saturday worked after the holiday
    saturday = after[0]
    start = saturday - timedelta(days=2)  # the Thursday before it
    three = TimeLimit(amount=3, unit="working_days")
    due = due_at(local(start.year, start.month, start.day, 10), three, SH)
    # Friday, the make-up Saturday, then Monday (Sunday rests): due at the end of that Monday.
    monday = saturday + timedelta(days=2)
    assert due.at == end_of(monday)
    plain_weeks = due_at(local(2026, 11, 12, 10), three, SH)  # the same weekdays in an ordinary week
    assert plain_weeks.at == end_of(date(2026, 11, 17))  # Fri, Mon, Tue: the Saturday does not count


def test_spring_festival_2026_and_its_make_up_days() -> None:
    block = holiday_block(2026, "Spring Festival")
    before, after = (d for d in makeup_days(2026, "Spring Festival") if d < block[0]), \
        (d for d in makeup_days(2026, "Spring Festival") if d > block[-1])
    sat_before, sat_after = next(before), next(after)
    eve = block[0] - timedelta(days=2)  # two days before the holiday
    assert (eve + timedelta(days=1)) == sat_before
    two = TimeLimit(amount=2, unit="working_days")
    due = due_at(local(eve.year, eve.month, eve.day, 9), two, SH)
    # Day 1: the make-up Saturday before the festival; day 2: the first day after the festival.
    assert due.at == end_of(block[-1] + timedelta(days=1))
    five = TimeLimit(amount=5, unit="working_days")
    from_back = block[-1] + timedelta(days=1)
    due5 = due_at(local(from_back.year, from_back.month, from_back.day, 9), five, SH)
    expected = [from_back + timedelta(days=i) for i in range(1, 10)]
    workdays = [d for d in expected if d.weekday() < 5 or d == sat_after][:5]
    assert sat_after in workdays  # the make-up Saturday after the festival is one of the five
    assert due5.at == end_of(workdays[-1])


def test_year_boundary_new_year_2026() -> None:
    # 31 December 2025 + 1 working day: 1-3 January are New Year's Day, Sunday 4 January is a make-up day.
    ny = holiday_block(2026, "New Year's Day")
    makeup = makeup_days(2026, "New Year's Day")
    due = due_at(local(2025, 12, 31, 15), WD, SH)
    assert due.at == end_of(makeup[0]) and makeup[0] == ny[-1] + timedelta(days=1)
    assert due.calendar_covered


def test_outside_the_calendar_falls_back_to_monday_to_friday_and_flags_it(caplog: pytest.LogCaptureFixture) -> None:
    cal = WorkCalendar()
    two = TimeLimit(amount=2, unit="working_days")
    with caplog.at_level(logging.WARNING, logger="nonsite.cases.deadlines"):
        due = due_at(local(2100, 1, 7, 10), two, SH, calendar=cal)  # Thursday 7 January 2100
        again = due_at(local(2100, 1, 7, 10), two, SH, calendar=cal)
    assert due.at == end_of(date(2100, 1, 11))  # Friday, Monday
    assert due.calendar_covered is False and due.uncovered_years == (2100,)
    assert again == due
    warnings = [r for r in caplog.records if "2100" in r.getMessage()]
    assert len(warnings) == 1 and "Monday to Friday" in warnings[0].getMessage()  # once per year
    # Crossing from a covered year into an uncovered one flags only the uncovered year.
    cross = due_at(local(2026, 12, 31, 10), two, SH, calendar=cal)
    assert cross.calendar_covered is False and cross.uncovered_years == (2027,)
    # Minute and hour limits never consult the calendar.
    assert due_at(local(2100, 1, 1), TimeLimit(amount=30, unit="minutes"), SH, calendar=cal).calendar_covered


def test_minute_limits_round_the_clock_and_in_office_hours() -> None:
    start = local(2026, 9, 30, 23, 50)
    thirty = due_at(start, TimeLimit(amount=30, unit="minutes"), SH)
    assert thirty.at == local(2026, 10, 1, 0, 20)  # the duty desk works through midnight and holidays
    assert due_at(start, TimeLimit(amount=4, unit="hours"), SH).at == local(2026, 10, 1, 3, 50)
    # 120 working minutes from 16:00 on the eve of National Day: 90 that afternoon (to 17:30), then the
    # holiday, then 30 from 08:30 on the first working day back.
    work = TimeLimit(amount=120, unit="working_minutes")
    assert due_at(local(2026, 9, 30, 16), work, SH).at == local(2026, 10, 8, 9, 0)
    # Lunch break: 11:50 + 30 working minutes = 10 before 12:00, 20 after 13:30.
    assert due_at(local(2026, 11, 12, 11, 50), TimeLimit(amount=30, unit="working_minutes"), SH).at \
        == local(2026, 11, 12, 13, 50)
    # Started before office hours: counting begins at 08:30.
    assert due_at(local(2026, 11, 12, 6), TimeLimit(amount=15, unit="working_minutes"), SH).at \
        == local(2026, 11, 12, 8, 45)


def test_calendar_days_and_rolling_off_a_holiday() -> None:
    three = TimeLimit(amount=3, unit="days")
    assert due_at(local(2026, 9, 28, 10), three, SH).at == end_of(date(2026, 10, 1))
    rolled = due_at(local(2026, 9, 28, 10), TimeLimit(amount=3, unit="days", roll_to_working_day=True), SH)
    assert rolled.at == end_of(date(2026, 10, 8))


def test_the_city_zone_decides_the_day() -> None:
    # 15:30 UTC on Friday 13 November is 23:30 in Shanghai (Friday) but Saturday 00:30 in Tokyo.
    start = datetime(2026, 11, 13, 15, 30, tzinfo=UTC)
    assert due_at(start, WD, "Asia/Shanghai").at == end_of(date(2026, 11, 16))
    tokyo = due_at(start, WD, "Asia/Tokyo").at
    assert tokyo == datetime(2026, 11, 16, 15, 0, tzinfo=UTC)  # Monday 24:00 Tokyo
    with pytest.raises(ValueError, match="timezone-aware"):
        due_at(datetime(2026, 11, 13, 15, 30), WD, SH)


def test_states_on_time_due_soon_overdue() -> None:
    due = Due(start=local(2026, 11, 12, 8), at=local(2026, 11, 12, 18))  # ten hours allowed
    assert state(due, local(2026, 11, 12, 9), 0.2) is DueState.ON_TIME
    assert state(due, local(2026, 11, 12, 15, 59), 0.2) is DueState.ON_TIME
    assert state(due, local(2026, 11, 12, 16), 0.2) is DueState.DUE_SOON  # two hours = a fifth left
    assert state(due, local(2026, 11, 12, 17, 59), 0.2) is DueState.DUE_SOON
    assert state(due, local(2026, 11, 12, 18), 0.2) is DueState.OVERDUE
    assert state(due, local(2026, 11, 20), 0.5) is DueState.OVERDUE
    assert state(due, local(2026, 11, 12, 13), 0.5) is DueState.DUE_SOON


def test_steps_follow_the_workflow_statuses() -> None:
    open_statuses = {s.value for s in CaseStatus} - {"dismissed", "closed"}
    assert set(STEP_OF_STATUS) == open_statuses
    assert set(STEP_OF_STATUS.values()) == set(STEPS)


def test_the_shipped_catalogue_carries_the_limits() -> None:
    table = default_catalogue().time_limit_table()
    assert table.limit("sidewalk_parking", "confirm") == TimeLimit(amount=30, unit="minutes")
    assert table.limit("street_vending", "review") == TimeLimit(amount=1, unit="working_days")
    assert table.limit("stray_dog", "rectify") == TimeLimit(amount=4, unit="hours")  # the type's override
    assert table.limit("stray_dog", "review") == table.limit("sidewalk_parking", "review")  # the default
    assert table.due_soon_fraction("stray_dog") == 0.2
    # The same from the raw file, through the dict loader.
    assert load_time_limits(DEFAULT_CATALOGUE) == table
    due = table.due_for("street_vending", "review", local(2026, 9, 30, 17), SH)
    assert due is not None and due.at == end_of(date(2026, 10, 8))
    with pytest.raises(ValueError, match="unknown step"):
        table.limit("stray_dog", "appeal")


def test_type_overrides_and_null_removes_a_limit() -> None:
    raw = {
        "version": "x",
        "time_limits": {"due_soon_fraction": 0.25, "steps": {"review": {"amount": 2, "unit": "working_days"}}},
        "types": {
            "sidewalk_parking": {"name": "ignored here", "time_limits": {"steps": {"review": None}}},
            "stray_dog": {"time_limits": {"due_soon_fraction": 0.5}},
        },
    }
    table = time_limits_from_catalogue(raw)
    assert table.limit("street_vending", "review") == TimeLimit(amount=2, unit="working_days")
    assert table.limit("sidewalk_parking", "review") is None
    assert table.limit("street_vending", "confirm") is None  # the catalogue names only review
    assert table.due_soon_fraction("stray_dog") == 0.5 and table.due_soon_fraction("x") == 0.25
    assert time_limits_from_catalogue({}).limit("x", "confirm") == TimeLimit(amount=30, unit="minutes")


def test_bad_limits_name_file_line_and_key(tmp_path: Path) -> None:
    text = DEFAULT_CATALOGUE.read_text(encoding="utf-8")
    old = "    review: {amount: 1, unit: working_days}"
    assert old in text
    path = tmp_path / "city.yaml"
    path.write_text(text.replace(old, "    review: {amount: 1, unit: fortnights}"), encoding="utf-8")
    line = next(i for i, s in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if "fortnights" in s)
    with pytest.raises(TimeLimitError) as err:
        load_time_limits(path)
    assert str(err.value).startswith(f"{path}:{line}: time_limits.steps.review.unit: Input should be 'minutes'")
    # The catalogue loader reports the same key (the catalogue carries the limits).
    with pytest.raises(LegalBasisError, match=rf"{line}: time_limits\.steps\.review\.unit"):
        load_catalogue(path)
    bad = {"time_limits": {"office_hours": [{"start": "13:30", "end": "12:00"}]}}
    with pytest.raises(TimeLimitError, match=r"time_limits\.office_hours\[0\]: end 12:00 is not after start 13:30"):
        time_limits_from_catalogue(bad, source="c.yaml")
    overlap = {"time_limits": {"office_hours": [{"start": "08:00", "end": "12:00"}, {"start": 690, "end": 900}]}}
    with pytest.raises(TimeLimitError, match="starts before the previous one ends"):
        time_limits_from_catalogue(overlap)  # 690 is YAML 1.1's reading of an unquoted 11:30
    roll = {"time_limits": {"steps": {"close": {"amount": 1, "unit": "hours", "roll_to_working_day": True}}}}
    with pytest.raises(TimeLimitError, match="roll_to_working_day applies only to unit: days"):
        time_limits_from_catalogue(roll)


def test_the_case_deadline_chains_the_steps_after_confirmation() -> None:
    table = default_catalogue().time_limit_table()
    # Confirmed Thursday 12 November 10:00: review by end of Fri 13, dispatch by end of Mon 16, rectify 3 working
    # days later (Thu 19), close 2 more (Mon 23): due at 24:00 on Monday 23 November.
    due = table.finish_due("sidewalk_parking", local(2026, 11, 12, 10), SH)
    assert due is not None and due.at == end_of(date(2026, 11, 23)) and due.start == local(2026, 11, 12, 10)
    # A stray dog: rectify within 4 hours of the dispatch deadline (end of Mon 16 = Tue 00:00 -> 04:00), then
    # close within 2 working days counted from Tuesday: Wed 18, Thu 19.
    dog = table.finish_due("stray_dog", local(2026, 11, 12, 10), SH)
    assert dog is not None and dog.at == end_of(date(2026, 11, 19))
    none = time_limits_from_catalogue({"time_limits": {"steps": {"confirm": {"amount": 5, "unit": "minutes"}}}})
    assert none.finish_due("x", local(2026, 11, 12), SH) is None  # no limit after confirmation
    late = table.finish_due("sidewalk_parking", local(2026, 12, 24, 10), SH, calendar=WorkCalendar())
    assert late is not None and late.calendar_covered is False and late.uncovered_years == (2027,)
