"""Cameras: where frames come from, where the camera stands, and the zones drawn on its view."""

from __future__ import annotations

import re
import threading
from typing import ClassVar
from urllib.parse import quote, unquote

from pydantic import Field, field_validator, model_validator

from nonsite.config.base import Section
from nonsite.config.manifest import zone_kinds
from nonsite.config.rules import RuleOverrides, ScheduleWindow, override_names

_ID = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class ZoneConfig(Section):
    rule_of_kind: ClassVar[dict[str, str]] = {}
    """Zone kind -> the violation type that watches it; set on the typed model of the registry (empty here:
    the central roles do not check which rule a zone's overrides belong to)."""

    id: str = Field(pattern=_ID, description="Zone id, unique within its camera (letters, digits, '-', '_', '.').")
    name: str = Field("", description="Human name shown to operators, e.g. '东侧人行道'.")
    kind: str = Field(
        description="What the zone means, which decides the violation type that watches it (e.g. sidewalk / "
        "no_parking: sidewalk_parking) or the type it exempts (e.g. vending_allowed); the kinds are those of "
        "the registered violation types."
    )
    polygon: list[tuple[float, float]] = Field(
        description="Polygon corners as [x, y] in normalized image coordinates (0..1, origin top-left); "
        "at least three points."
    )
    dwell_s: float | None = Field(
        None, gt=0, description="Dwell threshold for this zone in seconds; overrides the rule's default."
    )
    schedule: list[ScheduleWindow] = Field(
        default_factory=list,
        description="When this zone applies, in the city's time zone; empty = always. A rule zone is enforced "
        "only inside its windows (e.g. vending forbidden 07:00-22:00); an allow zone exempts only inside its "
        "windows (e.g. a night market 18:00-23:00).",
    )
    rules: RuleOverrides | None = Field(
        None,
        description="Thresholds of the zone's rule that differ here (e.g. {sidewalk_parking: {dwell_s: 30, "
        "min_confidence: 0.4}}); unset keys inherit from the camera and from rules:.",
    )

    @field_validator("kind")
    @classmethod
    def _kind(cls, v: str) -> str:
        if cls.rule_of_kind:  # the typed model: an enumeration of the registered kinds checked it
            return v
        known = zone_kinds()
        if v not in known:
            raise ValueError(f"unknown zone kind '{v}'; use one of {', '.join(known)}")
        return v

    @field_validator("polygon")
    @classmethod
    def _polygon(cls, v: list[tuple[float, float]]) -> list[tuple[float, float]]:
        if len(v) < 3:
            raise ValueError(f"a zone polygon needs at least 3 points, got {len(v)}; add corners as [x, y]")
        for x, y in v:
            if not (0.0 <= x <= 1.0 and 0.0 <= y <= 1.0):
                raise ValueError(
                    f"point [{x}, {y}] is outside 0..1; polygons use normalized coordinates "
                    "(divide pixels by the image width/height)"
                )
        return v

    @model_validator(mode="after")
    def _own_rule_only(self) -> ZoneConfig:
        if self.rules is None or not self.rule_of_kind:
            return self
        own = self.rule_of_kind.get(self.kind)
        for name in override_names(self.rules):
            if name != own:
                watched = f"is watched by {own}" if own else "exempts areas and is watched by no rule"
                raise ValueError(
                    f"zone '{self.id}' of kind {self.kind} {watched}; remove rules.{name} here "
                    "or put it on a zone of the matching kind"
                )
        ov = getattr(self.rules, own) if own else None
        if self.dwell_s is not None and ov is not None and ov.dwell_s is not None:
            raise ValueError(f"zone '{self.id}' sets dwell_s twice (dwell_s and rules.{own}.dwell_s); keep one")
        return self


class LocationConfig(Section):
    address: str = Field("", description="Street address of the camera, printed on evidence and cases.")
    lat: float | None = Field(None, ge=-90, le=90, description="Latitude of the camera (WGS84).")
    lon: float | None = Field(None, ge=-180, le=180, description="Longitude of the camera (WGS84).")


class SourceConfig(Section):
    url: str = Field(
        description="rtsp://, http(s):// (MJPEG), file path or file:// URL, or device:N. "
        "Put passwords in the environment: ${CAM_PASSWORD} is expanded at load time and never logged."
    )
    transport: str = Field("tcp", pattern="^(tcp|udp)$", description="RTSP transport: tcp (default) or udp.")
    loop: bool = Field(False, description="Files only: start again at the end instead of finishing.")
    realtime: bool = Field(
        False, description="Files only: pace frames at the file's own frame rate instead of as fast as possible."
    )
    open_timeout_s: float = Field(10.0, gt=0, description="Give up opening the stream after this many seconds.")
    read_timeout_s: float = Field(10.0, gt=0, description="A read that waits longer than this is a stall.")
    reconnect_initial_s: float = Field(
        0.5, gt=0, description="Live sources: first wait before reopening a lost stream; doubles per failure."
    )
    reconnect_max_s: float = Field(
        30.0, gt=0, description="Live sources: longest wait between reconnect attempts (backoff cap)."
    )
    decode_threads: int = Field(
        1, ge=0, le=64,
        description="FFmpeg decoding threads for this camera (live streams and video files). 1 keeps latency, "
        "memory and CPU per frame lowest (every thread holds frame buffers of its own: bench/memory.py); raise it "
        "for 4K/H.265 streams one core cannot decode in time; 0 = one per CPU core (frame threading "
        "delays each frame by threads-1 frames).",
    )


class CameraConfig(Section):
    id: str = Field(pattern=_ID, description="Camera id, unique; the Kafka key and evidence prefix.")
    name: str = Field("", description="Human name shown to operators.")
    enabled: bool = Field(True, description="Set false to keep the camera in the file but not run it.")
    source: SourceConfig = Field(description="Where the frames come from.")
    fps: float = Field(5.0, gt=0, le=60, description="Frames per second sampled for detection.")
    location: LocationConfig = Field(default_factory=LocationConfig, description="Where the camera stands.")
    zones: list[ZoneConfig] = Field(default_factory=list, description="Zones drawn on this camera's view.")
    view_guard: bool | None = Field(
        None, description="Check that this camera still looks where its zones were drawn (see view_guard:); "
        "unset = view_guard.enabled. Set false for a camera whose view is meant to change.",
    )
    gating: bool | None = Field(
        None, description="Motion-gated detection for this camera (see edge.gating); unset = edge.gating.enabled. "
        "Set false for a camera whose rules need every frame detected.",
    )
    rules: RuleOverrides | None = Field(
        None, description="Rule thresholds that differ for this camera (e.g. {stray_dog: {dwell_s: 60}}); zones "
        "can override them again; unset keys inherit from rules:."
    )

    @model_validator(mode="after")
    def _unique_zones(self) -> CameraConfig:
        seen: set[str] = set()
        for z in self.zones:
            if z.id in seen:
                raise ValueError(f"zone id '{z.id}' appears twice in camera '{self.id}'; zone ids must be unique")
            seen.add(z.id)
        return self


#: A URL in free text: a scheme, then everything up to the next white space (a password may hold '@', ':', '/',
#: '#', '%' and quotes, so the userinfo is not cut at the first '@').
_URL = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<rest>\S*)")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
_SECRETS: set[str] = set()
_SECRETS_LOCK = threading.Lock()


def _userinfo(rest: str) -> tuple[str, str, str] | None:
    """(user, password, the rest after '@') of a URL's part after ``scheme://``; None when it has no password.

    The userinfo ends at the last '@' of the token, not of the authority: a password written with a raw '@',
    '/', '?' or '#' is masked whole (a path with an '@' is masked too far: masking too much is safe, too little
    is not)."""
    at = rest.rfind("@")
    if at < 0:
        return None
    user, sep, password = rest[:at].partition(":")
    return (user, password, rest[at + 1:]) if sep else None


def mask_url(url: str) -> str:
    """Hide the password of every URL in ``url`` (one URL or a whole message):
    ``rtsp://admin:p@ss:w/rd@host`` -> ``rtsp://admin:***@host``."""

    def masked(scheme: str, rest: str) -> str:
        parts = _userinfo(rest)
        if parts is None:
            return scheme + rest
        user, _, after = parts
        return f"{scheme}{user}:***@{after}"

    whole = _SCHEME.match(url)
    if whole:  # one URL (the text starts with it): a password with white space is masked whole too
        return masked(whole[0], url[whole.end():])
    return _URL.sub(lambda m: masked(m["scheme"], m["rest"]), url)


def url_secrets(url: str) -> set[str]:
    """The password of ``url`` as written, decoded and percent-encoded (what a library's message may echo)."""
    scheme, sep, rest = url.strip().partition("://")
    parts = _userinfo(rest) if sep and scheme else None  # one URL: white space in the password is the password
    if parts is None or not parts[1]:
        return set()
    raw = parts[1]
    plain = unquote(raw)
    return {s for s in (raw, plain, quote(plain, safe=""), quote(plain, safe="/:@")) if s}


def scrub(text: str, url: str | None = None) -> str:
    """``text`` without any camera password: URLs masked, then every occurrence of the password of ``url`` and
    of every camera URL registered with :func:`register_secrets` (as written, decoded, percent-encoded)."""
    text = mask_url(text)
    secrets = url_secrets(url) if url else set()
    with _SECRETS_LOCK:
        secrets |= _SECRETS
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def register_secrets(url: str) -> None:
    """Remember the password of ``url`` so that :func:`scrub` hides it wherever it turns up (log lines)."""
    found = url_secrets(url)
    if found:
        with _SECRETS_LOCK:
            _SECRETS.update(found)
