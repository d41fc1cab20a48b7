"""HMAC-SHA256 signatures of the platform hand-off (both ways) and expiring signed evidence links.

A request is signed over ``<timestamp>\\n<body>`` with a shared secret; the headers are::

    X-Nonsite-Timestamp: 1765000000
    X-Nonsite-Signature: sha256=<hex HMAC-SHA256(secret, b"1765000000\\n" + body)>

The receiver recomputes it with :func:`verify_signature` (constant-time compare) and refuses a timestamp
further than ``max_skew_s`` from its clock, so a captured request cannot be replayed later.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import time
from collections.abc import Callable
from urllib.parse import quote, urlencode

from nonsite.config.loader import ConfigError

__all__ = ["LinkSigner", "MissingSecret", "SignatureError", "secret_from_env", "sign", "signature_headers",
           "verify_link", "verify_signature"]

PREFIX = "sha256="
_EXP = re.compile(r"^[0-9]{1,12}$")  # Unix seconds: digits only, no sign, no spaces, no 4300-digit number


class MissingSecret(ConfigError):
    """The environment variable that should hold a secret is not set (the message names it, never a value)."""


class SignatureError(ValueError):
    """A signature that does not verify (the message says why: missing, stale, wrong)."""


def secret_from_env(name: str) -> bytes:
    """The secret in environment variable ``name`` (UTF-8), or MissingSecret."""
    value = os.environ.get(name, "")
    if not value:
        raise MissingSecret(f"environment variable {name} is not set; export it with the shared secret")
    return value.encode("utf-8")


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """``sha256=<hex>``: HMAC-SHA256 of ``b"<timestamp>\\n" + body``."""
    mac = hmac.new(secret, f"{int(timestamp)}\n".encode("ascii") + body, hashlib.sha256)
    return PREFIX + mac.hexdigest()


def signature_headers(secret: bytes, body: bytes, *, timestamp: int | None = None,
                      signature_header: str = "X-Nonsite-Signature",
                      timestamp_header: str = "X-Nonsite-Timestamp") -> dict[str, str]:
    ts = int(time.time()) if timestamp is None else int(timestamp)
    return {timestamp_header: str(ts), signature_header: sign(secret, ts, body)}


def verify_signature(secret: bytes, timestamp: str | None, signature: str | None, body: bytes, *,
                     now: float | None = None, max_skew_s: int = 300) -> None:
    """Raise :class:`SignatureError` unless ``signature`` is ours over ``timestamp`` and ``body`` and the
    timestamp is within ``max_skew_s`` seconds of ``now``."""
    if not timestamp or not signature:
        raise SignatureError("the request is not signed (timestamp or signature header missing)")
    try:
        ts = int(timestamp.strip())
    except ValueError:
        raise SignatureError("the timestamp header is not Unix seconds") from None
    current = time.time() if now is None else now
    if abs(current - ts) > max_skew_s:
        raise SignatureError(f"the signature's timestamp is {abs(current - ts):.0f} s away from our clock "
                             f"(more than {max_skew_s} s): a replay, or a clock to set right")
    if not hmac.compare_digest(sign(secret, ts, body), signature.strip()):
        raise SignatureError("the signature does not match the body (wrong secret, or the body was changed)")


class LinkSigner:
    """Expiring links to evidence blobs for people outside the console (the platform's case viewer).

    With an S3 store the link is the store's presigned URL; with a local store it is
    ``<base_url>/platform/evidence/<key>?exp=<unix>&sig=<hex>``, an HMAC that the console route checks with
    :func:`verify_link` before it serves the blob (no login: the link itself is the credential, until it
    expires).
    """

    def __init__(self, *, base_url: str = "", secret: bytes = b"",
                 presign: Callable[[str, int], str | None] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.base_url = base_url.rstrip("/")
        self._secret = secret
        self._presign = presign
        self._clock = clock

    def __call__(self, key: str, expires_s: int) -> str | None:
        """A link to ``key`` valid for ``expires_s`` seconds, or None when neither way is configured."""
        if self._presign is not None:
            url = self._presign(key, expires_s)
            if url:
                return url
        if not self.base_url or not self._secret:
            return None
        exp = int(self._clock()) + int(expires_s)
        query = urlencode({"exp": exp, "sig": _link_mac(self._secret, key, exp)})
        return f"{self.base_url}/platform/evidence/{quote(key, safe='/')}?{query}"


def _link_mac(secret: bytes, key: str, exp: int) -> str:
    return hmac.new(secret, f"evidence-link\n{key}\n{exp}".encode(), hashlib.sha256).hexdigest()


def verify_link(secret: bytes, key: str, exp: str, sig: str, *, now: float | None = None) -> bool:
    """Whether ``exp``/``sig`` of a link made by :class:`LinkSigner` are valid for ``key`` and not expired."""
    if not secret or not isinstance(exp, str) or not isinstance(sig, str) or not _EXP.match(exp):
        return False
    expires = int(exp)
    if expires < (time.time() if now is None else now):
        return False
    # bytes on both sides: compare_digest refuses str with non-ASCII characters (a 500, not a 403)
    return hmac.compare_digest(_link_mac(secret, key, expires).encode("ascii"), sig.encode("utf-8", "replace"))
