"""Clock health: how far the device clock is from standard time, measured with SNTP (RFC 4330).

Evidence norms want the time burned into evidence within about one second of standard time, so the node
compares its clock with the (S)NTP servers of ``clock.servers`` (the city's reference time server, a
BeiDou/GPS time server): :func:`query` asks one server once, :func:`check` asks every server a few times
and gives a verdict, :class:`ClockMonitor` does that in the background, exposes Prometheus gauges and the
latest :class:`ClockStatus` for readiness probes. Offsets here are always *local clock minus reference*:
positive means the device clock is ahead.

Why not ntplib: its ``NTPClient.request`` (0.4) returns whatever packet arrives from the server's address
and computes the offset from the originate timestamp *the reply carries*. It does not check that the
originate timestamp echoes our request (a stale or spoofed reply is taken as an answer), nor the mode, the
leap indicator (3 = server not synchronized) or stratum 0 (kiss-o'-death: its code is never reported).
Those checks are the point of a clock *health* probe, and the protocol is one 48-byte packet each way, so
it is written here. The request's transmit timestamp is a random nonce (as chrony sends), so a reply can
only match if it answers this very packet; T1 and T4 are taken locally.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import socket
import statistics
import struct
import threading
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Literal

from prometheus_client import REGISTRY, CollectorRegistry, Gauge

from nonsite.config.clock import NTP_PORT, ClockConfig, split_server

logger = logging.getLogger(__name__)

NTP_EPOCH_OFFSET = 2208988800  # seconds from 1900-01-01 (NTP era 0) to 1970-01-01 (unix)
_PACKET = struct.Struct("!BBbbII4s8s8s8s8s")  # 48 bytes: flags, stratum, poll, precision, root delay/disp,
# reference id, reference / originate / receive / transmit timestamps
_KISS_CODES = {
    "RATE": "the server asks to be queried less often",
    "DENY": "the server refuses our queries (access denied)",
    "RSTR": "the server refuses our queries (access restricted)",
    "INIT": "the server has not synchronized yet",
    "STEP": "the server is stepping its clock",
}

ClockState = Literal["ok", "drifted", "unsynced"]


class ClockError(Exception):
    """One query failed; ``reason`` is a plain sentence without the server, ``server`` is host:port."""

    def __init__(self, reason: str, server: str = "", *, kiss_code: str | None = None,
                 timeout: bool = False) -> None:
        super().__init__(f"{server}: {reason}" if server else reason)
        self.reason = reason
        self.server = server
        self.kiss_code = kiss_code
        self.timeout = timeout  # no (valid) answer in time: worth another try (UDP loses packets); others not


@dataclass(frozen=True)
class ClockSample:
    """One SNTP answer."""

    server: str
    """host:port that answered."""
    offset_s: float
    """Local clock minus the server's clock, in seconds: positive = the device clock is ahead."""
    delay_s: float
    """Round-trip delay of the query minus the server's processing time, in seconds."""
    stratum: int
    """The server's distance from its reference clock (1 = attached to GPS/BeiDou/an atomic clock)."""
    at: float
    """Unix time (local clock) when the answer arrived."""


@dataclass
class ClockStatus:
    """The verdict of one :func:`check`."""

    ok: bool
    """At least one server answered and the offset is within ``max_offset_s``."""
    synced: bool
    """At least one server gave a valid answer."""
    offset_s: float | None
    """Median of the servers' offsets (local minus reference; positive = ahead); None when none answered."""
    server: str | None
    """The server whose offset is (closest to) that median; None when none answered."""
    detail: str
    """One plain sentence for people, e.g. "clock 2.41 s ahead of ntp.city:123 (limit 1 s)"."""
    samples: list[ClockSample] = field(default_factory=list)
    """The best (smallest delay) answer of each server that answered."""
    errors: dict[str, str] = field(default_factory=dict)
    """host:port -> why that server gave no valid answer."""
    max_offset_s: float = 1.0
    """The limit the verdict was made against."""
    checked_at: float = 0.0
    """Unix time of the check."""

    @property
    def state(self) -> ClockState:
        """``ok``, ``drifted`` (answers, but beyond the limit) or ``unsynced`` (no valid answer)."""
        if not self.synced:
            return "unsynced"
        return "ok" if self.ok else "drifted"


def _label(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _ntp_to_unix(raw: bytes) -> float:
    sec, frac = struct.unpack("!II", raw)
    if not sec & 0x80000000:  # RFC 4330 section 3: MSB clear = era 1 (from 2036-02-07)
        sec += 1 << 32
    return sec - NTP_EPOCH_OFFSET + frac / 2**32


def _secs(x: float) -> str:
    return f"{x:.2f}" if abs(x) >= 1 else f"{x:.3f}"


def query(server: str, *, timeout_s: float, port: int = NTP_PORT) -> ClockSample:
    """Ask one (S)NTP server for the time once (SNTP v4, RFC 4330, over UDP) and return the measured offset.

    ``server`` is a host or host:port (the port in it wins over ``port``). The returned ``offset_s`` is the
    local clock minus the server's clock: positive = the device clock is ahead. Raises :class:`ClockError`
    when the server cannot be reached, does not answer within ``timeout_s``, or its answer is not usable:
    not a server reply, unknown version, not an answer to this request (originate timestamp), a
    kiss-o'-death (its code is named), stratum beyond 15, an unsynchronized server (leap indicator 3) or
    no transmit timestamp.
    """
    try:
        host, port = split_server(server, port)
    except ValueError as e:
        raise ClockError(str(e), server) from None
    label = _label(host, port)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    except OSError as e:
        raise ClockError(f"cannot resolve the host ({e.strerror or e})", label) from None
    family, _, _, _, addr = infos[0]
    nonce = os.urandom(8)
    request = bytes([0x23]) + bytes(39) + nonce  # LI 0, version 4, mode 3 (client); transmit = nonce
    bogus: str | None = None
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(addr)  # the kernel then drops datagrams from any other address or port
            t1 = time.time()
            p0 = time.perf_counter()
            sock.send(request)
            deadline = p0 + timeout_s
            while True:
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    raise TimeoutError
                sock.settimeout(remaining)
                data = sock.recv(1024)
                t4 = t1 + (time.perf_counter() - p0)  # elapsed on the monotonic clock: immune to clock steps
                if len(data) < _PACKET.size:
                    bogus = f"a {len(data)}-byte reply (an NTP packet has 48)"
                    continue
                fields = _PACKET.unpack_from(data)
                if fields[8] != nonce:
                    bogus = "a reply whose originate timestamp is not our request's (stale or spoofed)"
                    continue  # RFC 4330: discard it and keep waiting for the real answer
                break
        except TimeoutError:
            if bogus:
                raise ClockError(f"no valid answer within {timeout_s:g} s; rejected {bogus}", label,
                                 timeout=True) from None
            raise ClockError(f"no answer within {timeout_s:g} s", label, timeout=True) from None
        except OSError as e:  # refused (ICMP port unreachable), network unreachable, ...
            raise ClockError(f"cannot query: {e.strerror or e}", label) from None
    flags, stratum, _poll, _prec, _rdelay, _rdisp, ref_id, _ref_ts, _orig, recv_ts, tx_ts = fields
    leap, version, mode = flags >> 6, (flags >> 3) & 0x7, flags & 0x7
    if mode != 4:
        raise ClockError(f"the reply is not a server reply (mode {mode}, expected 4)", label)
    if version not in (3, 4):
        raise ClockError(f"unsupported NTP version {version} in the reply (expected 3 or 4)", label)
    if stratum == 0:
        code = ref_id.decode("ascii", "replace").rstrip("\x00 ")
        meaning = _KISS_CODES.get(code, "the server will not give the time")
        raise ClockError(f"kiss-o'-death {code or '(no code)'}: {meaning}", label, kiss_code=code)
    if stratum > 15:
        raise ClockError(f"the server is not synchronized (stratum {stratum})", label)
    if leap == 3:
        raise ClockError("the server is not synchronized (leap indicator 3, clock alarm)", label)
    if tx_ts == bytes(8):
        raise ClockError("the reply has no transmit timestamp", label)
    t2, t3 = _ntp_to_unix(recv_ts), _ntp_to_unix(tx_ts)
    offset = ((t1 - t2) + (t4 - t3)) / 2  # = -((T2-T1)+(T3-T4))/2: local minus reference
    delay = max((t4 - t1) - (t3 - t2), 0.0)
    return ClockSample(server=label, offset_s=offset, delay_s=delay, stratum=stratum, at=t4)


def _best_sample(server: str, cfg: ClockConfig, stop: threading.Event | None) -> ClockSample:
    """Up to ``cfg.samples`` queries; the answer with the smallest delay. Only a timeout is tried again (UDP
    loses packets); after any other failure (a kiss-o'-death, a bad answer, an unknown host), or a failure
    once something valid came back, the server is left alone for this check (a rate-limiting server answers
    the first query of a burst and drops or kisses the rest)."""
    got: list[ClockSample] = []
    last: ClockError | None = None
    for _ in range(cfg.samples):
        if stop is not None and stop.is_set():
            break
        try:
            got.append(query(server, timeout_s=cfg.timeout_s))
        except ClockError as e:
            last = e
            if got or not e.timeout:
                break
    if got:
        return min(got, key=lambda s: s.delay_s)
    if last is None:
        raise ClockError("check stopped before the first query")
    raise last


def check(cfg: ClockConfig, *, stop: threading.Event | None = None) -> ClockStatus:
    """Ask every server of ``cfg`` (in parallel) and compare the median of their offsets with the limit.

    Raises :class:`ClockError` when ``cfg.servers`` is empty. ``stop`` (when set) ends the sampling early.
    """
    if not cfg.servers:
        raise ClockError("no time servers configured (clock.servers); add the city's reference time server")
    labels = [_label(*split_server(s)) for s in cfg.servers]
    samples: list[ClockSample] = []
    errors: dict[str, str] = {}
    with ThreadPoolExecutor(max_workers=len(cfg.servers), thread_name_prefix="clock-query") as pool:
        futures = [pool.submit(_best_sample, s, cfg, stop) for s in cfg.servers]
        for label, fut in zip(labels, futures, strict=True):
            try:
                samples.append(fut.result())
            except ClockError as e:
                errors[label] = e.reason
    limit = cfg.max_offset_s
    now = time.time()
    if not samples:
        why = "; ".join(f"{k}: {v}" for k, v in errors.items())
        return ClockStatus(ok=False, synced=False, offset_s=None, server=None, samples=[], errors=errors,
                           detail=f"no time server answered ({why})", max_offset_s=limit, checked_at=now)
    offset = statistics.median(s.offset_s for s in samples)
    nearest = min(samples, key=lambda s: abs(s.offset_s - offset))
    ok = abs(offset) <= limit
    side = "ahead of" if offset >= 0 else "behind"
    ref = nearest.server if len(samples) == 1 else f"the median of {len(samples)} servers"
    notes = [f"limit {limit:g} s"]
    if errors:
        notes.append(f"{len(errors)} of {len(cfg.servers)} servers did not answer")
    detail = f"clock {_secs(abs(offset))} s {side} {ref} ({'; '.join(notes)})"
    return ClockStatus(ok=ok, synced=True, offset_s=offset, server=nearest.server, detail=detail,
                       samples=samples, errors=errors, max_offset_s=limit, checked_at=now)


@dataclass(frozen=True)
class _Gauges:
    offset: Gauge
    sync_ok: Gauge
    max_offset: Gauge
    last_sync: Gauge
    server_offset: Gauge


_GAUGES: weakref.WeakKeyDictionary[CollectorRegistry, _Gauges] = weakref.WeakKeyDictionary()
_GAUGES_LOCK = threading.Lock()


def _gauges(registry: CollectorRegistry) -> _Gauges:
    """The clock gauges of ``registry``, created on first use (a registry refuses the same name twice)."""
    with _GAUGES_LOCK:
        g = _GAUGES.get(registry)
        if g is None:
            g = _Gauges(
                offset=Gauge("nonsite_clock_offset_seconds", "Device clock minus standard time (median over the "
                             "time servers; positive = ahead); NaN when no server answered.", registry=registry),
                sync_ok=Gauge("nonsite_clock_sync_ok", "1 when the last clock check got at least one valid "
                              "answer from a time server, else 0.", registry=registry),
                max_offset=Gauge("nonsite_clock_max_offset_seconds", "Largest allowed clock offset "
                                 "(clock.max_offset_s).", registry=registry),
                last_sync=Gauge("nonsite_clock_last_sync_timestamp_seconds", "Unix time of the last clock check "
                                "that got a valid answer.", registry=registry),
                server_offset=Gauge("nonsite_clock_server_offset_seconds", "Device clock minus this time "
                                    "server's clock (positive = ahead); NaN when it did not answer.",
                                    ["server"], registry=registry),
            )
            _GAUGES[registry] = g
        return g


class ClockMonitor:
    """Checks the clock every ``cfg.interval_s`` in a daemon thread; gauges on ``registry``; :meth:`status`.

    A WARNING is logged when the clock becomes drifted or unsynced, an INFO when it recovers; nothing while
    the state stays the same. With no servers configured nothing runs, no gauge is registered and
    :meth:`status` stays None (readiness then ignores the clock).
    """

    def __init__(self, cfg: ClockConfig, registry: CollectorRegistry = REGISTRY) -> None:
        self.cfg = cfg
        self._status: ClockStatus | None = None
        self._state: ClockState | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._gauges: _Gauges | None = None
        if cfg.servers:
            self._gauges = _gauges(registry)
            self._gauges.max_offset.set(cfg.max_offset_s)

    @property
    def enabled(self) -> bool:
        return bool(self.cfg.servers)

    def status(self) -> ClockStatus | None:
        """The latest check's verdict; None before the first check or with no servers configured."""
        with self._lock:
            return self._status

    def check_now(self) -> ClockStatus | None:
        """Run one check now: update the gauges, log a state change, keep the verdict for :meth:`status`."""
        return self._check(None)

    def _check(self, stop: threading.Event | None) -> ClockStatus | None:
        if not self.enabled:
            return None
        st = check(self.cfg, stop=stop)
        if stop is not None and stop.is_set():
            return self.status()  # cut short by stop(): not a verdict on the clock
        self._publish(st)
        with self._lock:
            self._status = st
            prev, self._state = self._state, st.state
        if st.state != prev:
            if st.state != "ok":
                logger.warning("clock %s: %s", st.state, st.detail)
            elif prev is not None:
                logger.info("clock back in sync: %s", st.detail)
        return st

    def _publish(self, st: ClockStatus) -> None:
        g = self._gauges
        assert g is not None
        g.sync_ok.set(1 if st.synced else 0)
        g.offset.set(st.offset_s if st.offset_s is not None else math.nan)
        if st.synced:
            g.last_sync.set(st.checked_at)
        by_server = {s.server: s.offset_s for s in st.samples}
        for s in self.cfg.servers:
            label = _label(*split_server(s))
            g.server_offset.labels(server=label).set(by_server.get(label, math.nan))

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._check(self._stop)
            except Exception:  # a bug must not end clock monitoring silently
                logger.exception("clock check failed")
            if self._stop.wait(self.cfg.interval_s):
                break

    def start(self) -> None:
        """Start the background checks (the first runs at once); does nothing without servers."""
        if not self.enabled or (self._thread is not None and self._thread.is_alive()):
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="clock-monitor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the checks; returns at once when idle, within one query timeout during a check."""
        self._stop.set()
        t, self._thread = self._thread, None
        if t is not None:
            with contextlib.suppress(RuntimeError):
                t.join(timeout=self.cfg.timeout_s + 1.0)
