"""Clock health: which (S)NTP servers the device clock is compared with, how often, and the allowed offset."""

from __future__ import annotations

from pydantic import Field, field_validator

from nonsite.config.base import Section

NTP_PORT = 123


def split_server(server: str, default_port: int = NTP_PORT) -> tuple[str, int]:
    """``host``, ``host:port``, ``[v6addr]`` or ``[v6addr]:port`` -> (host, port); ValueError when malformed."""
    s = server.strip()
    if not s:
        raise ValueError("empty server name")
    if s.startswith("["):  # [2001:db8::1]:123
        host, sep, rest = s[1:].partition("]")
        if not sep or not host:
            raise ValueError(f"'{server}': an IPv6 address goes in brackets, e.g. [2001:db8::1]:123")
        if not rest:
            return host, default_port
        if not rest.startswith(":"):
            raise ValueError(f"'{server}': expected :PORT after the bracketed address")
        port_text = rest[1:]
    elif s.count(":") == 1:
        host, port_text = s.split(":")
        if not host:
            raise ValueError(f"'{server}': no host before the port")
    else:  # a name, an IPv4 address or a bare IPv6 address (several colons)
        return s, default_port
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"'{server}': port must be a number from 1 to 65535")
    return host, int(port_text)


class ClockConfig(Section):
    servers: list[str] = Field(
        default_factory=list,
        description="(S)NTP servers the device clock is compared with, as host or host:port (default port 123): "
        "the city's reference time server, a BeiDou/GPS time server. Several: the median of their offsets "
        "counts. Empty = no clock check.",
    )
    interval_s: float = Field(
        64.0, gt=0, le=86400,
        description="Seconds between two checks (the first runs at start). Public servers may answer too "
        "frequent queries with a kiss-o'-death (RATE): keep it at 64 s or more for them.",
    )
    timeout_s: float = Field(2.0, gt=0, le=60, description="Seconds to wait for the answer to one query.")
    samples: int = Field(
        4, ge=1, le=16,
        description="Queries per server per check; the answer with the smallest round-trip delay is kept "
        "(as NTP does: it carries the least network asymmetry).",
    )
    max_offset_s: float = Field(
        1.0, gt=0,
        description="Largest allowed difference between the device clock and the servers' time, in seconds "
        "(the evidence norm: within about one second of standard time); beyond it the clock is drifted.",
    )

    @field_validator("servers")
    @classmethod
    def _servers(cls, v: list[str]) -> list[str]:
        for s in v:
            split_server(s)
        return [s.strip() for s in v]
