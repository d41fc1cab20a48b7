"""Checks of command-line values that argparse's ``type=float`` / ``type=int`` let through (``nan``, ``inf``,
``1e308``, ``999999999`` days, a URL that cannot be parsed): each raises ValueError with a one-line message
naming the option and the accepted range, which the commands print as ``error: ...`` with exit code 2."""

from __future__ import annotations

import math
from urllib.parse import urlsplit

from nonsite.config.cameras import scrub

#: Longest timeout a command accepts (one day).
MAX_TIMEOUT_S = 86_400.0
#: Longest lifetime of an API token (ten years).
MAX_TOKEN_DAYS = 3650


def seconds(option: str, value: float, *, maximum: float = MAX_TIMEOUT_S) -> float:
    """``value`` when it is a finite number of seconds in (0, ``maximum``]."""
    if not isinstance(value, int | float) or not math.isfinite(value) or not 0 < value <= maximum:
        raise ValueError(f"{option} must be a number of seconds above 0 and at most {maximum:g}, got {value}")
    return float(value)


def days(option: str, value: int, *, maximum: int = MAX_TOKEN_DAYS) -> int:
    """``value`` when it is a whole number of days in [1, ``maximum``]."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= maximum:
        raise ValueError(f"{option} must be a whole number of days from 1 to {maximum}, got {value}")
    return value


def source_url(value: str) -> str:
    """``value`` when it parses as a URL (or names a file / ``device:N``): host, port and brackets checked, so a
    malformed one (``rtsp://[::1/x``) is a one-line error with the password masked."""
    text = value.strip()
    if not text:
        raise ValueError("the camera URL is empty; pass rtsp://user:pass@host/path, http(s)://, a file or device:N")
    if "://" not in text:
        return text
    try:
        parts = urlsplit(text)
        _ = parts.port, parts.hostname  # ValueError for a bad port or an unclosed IPv6 bracket
    except ValueError:  # its message may quote part of the password: say what to check instead
        raise ValueError(f"the camera URL {scrub(text, text)} cannot be parsed: check the host, the port and any "
                         "'[' ']' (percent-encode '@', ':', '/', '#' in the password: %40 %3A %2F %23)") from None
    return text
