"""Every role's operations endpoint: ``/metrics`` (Prometheus), ``/healthz`` (liveness), ``/readyz`` (readiness).

- ``/healthz`` answers 200 while the role's work threads are alive (a crashed consumer loop or a dead detector
  loop answers 503: the orchestrator restarts the process).
- ``/readyz`` answers 200 when every dependency check passed on its last run (broker, store, database, clock),
  503 otherwise; both answer JSON naming each check, its state and a plain-words detail.
- Checks run in a background thread every ``interval_s`` and the endpoints serve their latest results, so a
  probe never waits on a dead broker.

``nonsite_role_up{role}`` is 1 while the role runs; ``nonsite_role_ready{role}`` mirrors ``/readyz`` and
``nonsite_role_check_ok{role,check}`` each check.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Gauge
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

log = logging.getLogger(__name__)

ROLE_UP = Gauge("nonsite_role_up", "1 while this role's process runs its work.", ["role"])
ROLE_READY = Gauge("nonsite_role_ready", "1 when every readiness check of the role passed on its last run.",
                   ["role"])
CHECK_OK = Gauge("nonsite_role_check_ok", "1 when the readiness check passed on its last run.", ["role", "check"])

Check = Callable[[], "str | None"]
"""A readiness check: returns a detail line when it passes, raises (any exception: its message is the detail)
when it fails."""


@dataclass
class CheckResult:
    ok: bool
    detail: str
    at: float


class Health:
    """Liveness and readiness of one role, fed by the role, read by :class:`OpsServer` and the console."""

    def __init__(self, role: str, *, interval_s: float = 5.0) -> None:
        self.role = role
        self.interval_s = interval_s
        self._checks: dict[str, Check] = {}
        self._alive: dict[str, Callable[[], bool]] = {}
        self._results: dict[str, CheckResult] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._wake = threading.Event()
        ROLE_UP.labels(role).set(1)

    def started(self) -> None:
        """The role has opened its dependencies and registered its checks: readiness may now pass (the checks
        run at once)."""
        self._started.set()
        self._wake.set()

    def add_check(self, name: str, check: Check) -> None:
        """A readiness check, run every ``interval_s`` (``/readyz`` fails until it first passes)."""
        with self._lock:
            self._checks[name] = check

    def add_liveness(self, name: str, alive: Callable[[], bool]) -> None:
        """Something that must stay true while the process is healthy (e.g. a work thread is alive)."""
        with self._lock:
            self._alive[name] = alive

    def run_checks(self) -> dict[str, CheckResult]:
        """Run every readiness check now (the background thread does this every ``interval_s``)."""
        with self._lock:
            checks = dict(self._checks)
        for name, check in checks.items():
            try:
                detail = check()
                result = CheckResult(True, detail or "ok", time.time())
            except Exception as e:  # any failure is a failed check: its message is the detail
                result = CheckResult(False, str(e) or type(e).__name__, time.time())
            with self._lock:
                before = self._results.get(name)
                self._results[name] = result
            if before is None or before.ok != result.ok:
                (log.info if result.ok else log.warning)("%s readiness check %s: %s", self.role, name,
                                                         "ok" if result.ok else result.detail)
            CHECK_OK.labels(self.role, name).set(1 if result.ok else 0)
        ready, _ = self.readiness()
        ROLE_READY.labels(self.role).set(1 if ready else 0)
        with self._lock:
            return dict(self._results)

    def liveness(self) -> tuple[bool, dict[str, Any]]:
        with self._lock:
            alive = dict(self._alive)
        states = {}
        for name, fn in alive.items():
            try:
                states[name] = bool(fn())
            except Exception:
                states[name] = False
        return all(states.values()), {"status": "ok" if all(states.values()) else "failing", "role": self.role,
                                      "checks": {k: ("ok" if v else "failing") for k, v in states.items()}}

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        with self._lock:
            names = list(self._checks)
            results = dict(self._results)
        checks: dict[str, dict[str, Any]] = {}
        for name in names:
            r = results.get(name)
            checks[name] = ({"ok": False, "detail": "not checked yet"} if r is None
                            else {"ok": r.ok, "detail": r.detail, "checked_at": round(r.at, 3)})
        if not self._started.is_set():
            checks["started"] = {"ok": False, "detail": "the role is still starting"}
        ok = all(c["ok"] for c in checks.values()) and self.liveness()[0]
        return ok, {"status": "ready" if ok else "not ready", "role": self.role, "checks": checks}

    def start(self) -> Health:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name=f"health-{self.role}", daemon=True)
            self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.run_checks()
            self._wake.wait(self.interval_s)
            self._wake.clear()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        ROLE_UP.labels(self.role).set(0)
        ROLE_READY.labels(self.role).set(0)


class OpsServer:
    """``/metrics`` of ``registries``, ``/healthz`` and ``/readyz`` of ``health`` on ``host:port`` (0: a free port)."""

    def __init__(self, health: Health, registries: Sequence[CollectorRegistry] = (REGISTRY,),
                 host: str = "127.0.0.1", port: int = 0) -> None:
        self.health = health
        self.registries = list(registries)
        handler = _handler(self)
        self.server = ThreadingHTTPServer((host, port), handler)
        self.server.daemon_threads = True
        self.host = host
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, name=f"ops-{health.role}", daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def metrics_text(self) -> bytes:
        return metrics_text(self.registries)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def metrics_text(registries: Iterable[CollectorRegistry]) -> bytes:
    """The Prometheus text exposition of several registries (their metric names must not overlap)."""
    return b"".join(generate_latest(r) for r in registries)


def _handler(ops: OpsServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, ops.metrics_text(), CONTENT_TYPE_LATEST)
            elif path in ("/healthz", "/readyz"):
                ok, body = ops.health.liveness() if path == "/healthz" else ops.health.readiness()
                self._send(200 if ok else 503, json.dumps(body, ensure_ascii=False).encode(), "application/json")
            else:
                self._send(404, b"not found: try /metrics, /healthz or /readyz\n", "text/plain; charset=utf-8")

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # probes every few seconds: not worth a log line
            return

    return Handler


# -- the checks the roles share -----------------------------------------------------------------------------


def broker_check(bus: object, topic: str) -> Check:
    """The Kafka broker answers (end offsets of ``topic``); the embedded bus is always there."""
    def check() -> str:
        end_offsets = getattr(bus, "end_offsets", None)
        if end_offsets is None:
            return "embedded bus"
        parts = end_offsets(topic)
        return f"broker answers ({len(parts)} partitions of {topic})"
    return check


def store_check(store: object) -> Check:
    """The evidence store answers a read."""
    def check() -> str:
        store.exists("keys/health-probe")  # type: ignore[attr-defined]
        return f"evidence store answers ({store!r})"
    return check


def database_check(sessions: Callable[[], Any]) -> Check:
    def check() -> str:
        from sqlalchemy import text

        with sessions() as s:
            s.execute(text("SELECT 1"))
        return "database answers"
    return check


def run_now(checks: dict[str, Check]) -> dict[str, dict[str, Any]]:
    """Run ``checks`` now: name -> ``{"ok", "detail"}`` (for a server that checks on each request)."""
    out: dict[str, dict[str, Any]] = {}
    for name, check in checks.items():
        try:
            out[name] = {"ok": True, "detail": check() or "ok"}
        except Exception as e:  # a failed check: its message is the detail
            out[name] = {"ok": False, "detail": str(e) or type(e).__name__}
    return out


def clock_check(monitor: Any) -> Check:
    """The clock is within the configured offset of the reference (a never-answered reference fails too)."""
    def check() -> str:
        status = monitor.status()
        if status is None:
            raise RuntimeError("clock not checked yet")
        if not status.ok:
            raise RuntimeError(status.detail)
        return str(status.detail)
    return check


def threads_alive(threads: Iterable[threading.Thread]) -> Callable[[], bool]:
    ts = list(threads)
    return lambda: all(t.is_alive() for t in ts)


def threads_check(threads: Callable[[], Iterable[threading.Thread]]) -> Check:
    """Readiness of a role's work threads (consumers): fails, naming them, once one has stopped (a consumer
    thread that died on a bad message must not leave the role reporting ready)."""
    def check() -> str:
        ts = list(threads())
        if not ts:
            raise RuntimeError("the work threads are not running")
        dead = [t.name for t in ts if not t.is_alive()]
        if dead:
            raise RuntimeError(f"work thread(s) stopped: {', '.join(dead)}")
        return ", ".join(t.name for t in ts) + " running"
    return check
