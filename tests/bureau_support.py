"""Helpers for the bureau tests (deadlines, reminders, statistics): the city's zone and its wall-clock times."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

SH = ZoneInfo("Asia/Shanghai")


def local(y: int, m: int, d: int, hh: int = 0, mm: int = 0) -> datetime:
    """A Shanghai wall-clock time as UTC (what the database stores)."""
    return datetime(y, m, d, hh, mm, tzinfo=SH).astimezone(UTC)


def end_of(day: date) -> datetime:
    """24:00 of a Shanghai day, in UTC: the first late instant of a day-based deadline."""
    return local(day.year, day.month, day.day) + timedelta(days=1)
