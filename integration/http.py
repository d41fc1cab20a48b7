"""The one HTTP POST every outbound integration uses, URL masking for logs, and backoff with jitter.

Standard library only (``urllib``): no redirects are followed (a redirected POST is an error to report, not
to chase), and every failure is an :class:`HttpResult` or a :class:`TransportError` whose message never holds
the URL's secrets.
"""

from __future__ import annotations

import random
import re
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

__all__ = ["HttpResult", "TransportError", "backoff_delay", "mask_url", "post", "retry_after_s"]

#: Query parameters whose values are secrets (robot keys, tokens, signatures).
SECRET_PARAMS = frozenset({"key", "access_token", "token", "sign", "signature", "secret", "sig", "password",
                           "apikey", "api_key", "x-amz-signature", "x-amz-credential"})
_MAX_BODY = 64 * 1024


def mask_url(url: str) -> str:
    """``url`` fit for a log line: the password of its user info and the values of secret query parameters
    (``key``, ``access_token``, ``sign``, ...) replaced by ``***``; the path is kept."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable url>"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        netloc = f"{userinfo.split(':', 1)[0]}:***@{host}" if ":" in userinfo else f"***@{host}"
    query = urlencode([(k, "***" if k.lower() in SECRET_PARAMS else v)
                       for k, v in parse_qsl(parts.query, keep_blank_values=True)], safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


@dataclass(frozen=True)
class HttpResult:
    """The answer of a POST: status, headers (lower-case names), the first 64 KiB of the body."""

    status: int
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    def text(self, limit: int = 500) -> str:
        return self.body[:limit].decode("utf-8", "replace").strip()


class TransportError(Exception):
    """No HTTP answer: refused, unreachable, timed out, TLS failure (the message names the masked URL)."""


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None  # the 3xx answer is returned as it is


_OPENER = urllib.request.build_opener(_NoRedirect())


def post(url: str, body: bytes, headers: Mapping[str, str], timeout_s: float) -> HttpResult:
    """POST ``body`` to ``url``; an HTTP answer of any status is returned, no answer raises TransportError."""
    req = urllib.request.Request(url, data=body, method="POST", headers=dict(headers))
    try:
        with _OPENER.open(req, timeout=timeout_s) as resp:
            return HttpResult(resp.status, resp.read(_MAX_BODY), {k.lower(): v for k, v in resp.headers.items()})
    except urllib.error.HTTPError as exc:
        try:
            data = exc.read(_MAX_BODY)
        except (OSError, ValueError):
            data = b""
        hdrs = {k.lower(): v for k, v in (exc.headers or {}).items()}
        return HttpResult(exc.code, data, hdrs)
    except TimeoutError:
        raise TransportError(f"no answer from {mask_url(url)} within {timeout_s:g} s") from None
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, TimeoutError):
            raise TransportError(f"no answer from {mask_url(url)} within {timeout_s:g} s") from None
        raise TransportError(f"cannot reach {mask_url(url)}: {_strip(str(reason), url)}") from None
    except (OSError, ValueError) as exc:  # connection reset mid-answer, bad URL, ...
        raise TransportError(f"request to {mask_url(url)} failed: {_strip(str(exc), url)}") from None


def _strip(message: str, url: str) -> str:
    """An exception text without the URL (urllib sometimes repeats it)."""
    return message.replace(url, mask_url(url))


def backoff_delay(attempt: int, base_s: float, max_s: float, rng: random.Random | None = None) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1-based): exponential, capped, with jitter
    (half fixed, half random, so retries of many messages spread out but never come back at once)."""
    ceiling = min(max_s, base_s * 2 ** max(0, attempt - 1))
    return ceiling / 2 + (rng or random).uniform(0, ceiling / 2)


_RETRY_AFTER = re.compile(r"^\s*(\d{1,6})\s*$")


def retry_after_s(result: HttpResult) -> float | None:
    """The seconds of a ``Retry-After: N`` answer header, when it has one (an HTTP date is ignored)."""
    m = _RETRY_AFTER.match(result.headers.get("retry-after", ""))
    return float(m.group(1)) if m else None
