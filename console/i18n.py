"""Message catalogues (``console/locales/<lang>.json``) and time formatting in the city's zone."""

from __future__ import annotations

import logging
from datetime import datetime
from zoneinfo import ZoneInfo

from nonsite.config.manifest import CONSOLE_LOCALES, locale_strings

log = logging.getLogger(__name__)

LOCALES_DIR = CONSOLE_LOCALES
LANGUAGES: tuple[str, ...] = ("zh", "en")
HTML_LANG = {"zh": "zh-CN", "en": "en"}


def catalogue(lang: str) -> dict[str, str]:
    """The flat ``key -> text`` catalogue of ``lang`` (one of :data:`LANGUAGES`), with the extra strings of
    ``NONSITE_LOCALES`` (violation types added outside the repository, :mod:`nonsite.config.manifest`)."""
    if lang not in LANGUAGES:
        raise ValueError(f"unknown console language {lang!r}; use one of {', '.join(LANGUAGES)}")
    return locale_strings(LOCALES_DIR, lang)


class Translator:
    """``t(key, **fields)``: the text of ``key`` in one language, with ``{field}`` placeholders filled."""

    def __init__(self, lang: str) -> None:
        self.lang = lang
        self.messages = catalogue(lang)

    def __call__(self, key: str, **fields: object) -> str:
        text = self.messages.get(key)
        if text is None:
            log.warning("console text %r missing from the %s catalogue", key, self.lang)
            return key
        return text.format(**fields) if fields else text

    def has(self, key: str) -> bool:
        return key in self.messages

    def label(self, group: str, value: str | None) -> str:
        """The label of an enumerated value (``type.stray_dog``), or the raw value when it has none."""
        if value is None or value == "":
            return ""
        key = f"{group}.{value}"
        return self.messages.get(key, value)


def utc_offset_text(dt: datetime) -> str:
    """``UTC+08:00`` for an aware datetime."""
    off = dt.utcoffset()
    total = int(off.total_seconds()) if off is not None else 0
    sign = "+" if total >= 0 else "-"
    hours, rest = divmod(abs(total), 3600)
    return f"UTC{sign}{hours:02d}:{rest // 60:02d}"


def local_time(dt: datetime | None, zone: ZoneInfo) -> str:
    """``2026-11-21 19:03:12 (UTC+08:00)``: a stored UTC instant on the city's wall clock."""
    if dt is None:
        return ""
    local = dt.astimezone(zone)
    return f"{local:%Y-%m-%d %H:%M:%S} ({utc_offset_text(local)})"
