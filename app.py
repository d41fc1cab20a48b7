"""The embedded mode in one process: edge workers, evidence sealer, case drafter and the console; and the
roles of the distributed mode, one per process (:func:`run_edge`, :func:`run_sealer_role`,
:func:`run_drafter_role`).

Same code path everywhere: the sealer and drafter are bus consumers in both modes, and which bus
(embedded log or Kafka) and which store (local directory or S3) is configuration only.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

from nonsite.config import ConfigError, NonsiteConfig
from nonsite.config.files import private_data_dir

if TYPE_CHECKING:
    from fastapi import FastAPI
    from prometheus_client import CollectorRegistry
    from sqlalchemy.orm import Session, sessionmaker

    from nonsite.bus import Bus
    from nonsite.bus.kafka import KafkaBus
    from nonsite.cases.db import Case
    from nonsite.cases.legal_basis import Catalogue
    from nonsite.cases.organisation import Organisation
    from nonsite.evidence.spool import EdgeEvidence
    from nonsite.evidence.store import Store
    from nonsite.evidence.verify import Keys, VerifyResult
    from nonsite.integration.hub import PlatformHub
    from nonsite.models import CameraDetectors
    from nonsite.models.base import Detector
    from nonsite.ops.cameras import CameraControl
    from nonsite.ops.fleet import BusCameraControl
    from nonsite.pipeline.edge import EdgeRunner
    from nonsite.pipeline.worker import WorkerStats

log = logging.getLogger(__name__)


@dataclass
class RunSummary:
    violations: dict[str, int] = field(default_factory=dict)
    packages_sealed: int = 0
    case_drafts: int = 0
    cameras_failed: dict[str, str] = field(default_factory=dict)
    console_url: str | None = None

    def record(self, runner: EdgeRunner, stats: dict[str, WorkerStats], progress: Callable[[str], None]) -> None:
        """Take in a finished edge run: a line per camera, failed cameras, violations per type."""
        for r in runner.runs:
            progress(runner.describe(r))
            if r.error:
                self.cameras_failed[r.camera.id] = r.error
        for st in stats.values():
            for k, v in st.published.items():
                self.violations[k] = self.violations.get(k, 0) + v

    def lines(self) -> list[str]:
        from nonsite.pipeline.violations import violation_types  # edge side only, like the runner it summarises

        types = [t.name for t in violation_types()]
        types += sorted(set(self.violations) - set(types))
        out = ["violations: " + ", ".join(f"{t} {self.violations.get(t, 0)}" for t in types)]
        out.append(f"evidence packages sealed: {self.packages_sealed}")
        out.append(f"case drafts: {self.case_drafts}")
        for cam, err in sorted(self.cameras_failed.items()):
            out.append(f"camera {cam} FAILED: {err}")
        if self.console_url:
            out.append(f"console: {self.console_url}")
        return out


class ConsoleServer:
    """uvicorn in a thread; ``url`` once it listens."""

    def __init__(self, app: FastAPI, host: str, port: int) -> None:
        import uvicorn

        # lifespan on: the app's startup/shutdown run the console's own jobs (the bureau's reminder job)
        self.server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, name="console", daemon=True)

    def start(self, timeout_s: float = 15.0) -> str:
        self.thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the console did not start (is the port in use? set console.port)")
            time.sleep(0.05)
        sock = self.server.servers[0].sockets[0].getsockname()
        return f"http://{sock[0]}:{sock[1]}/"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=5)


class Embedded:
    """Everything a node of the embedded mode runs, opened over one data directory."""

    def __init__(self, cfg: NonsiteConfig) -> None:
        from nonsite.bus import open_bus
        from nonsite.cases.db import open_db
        from nonsite.cases.legal_basis import load_catalogue
        from nonsite.evidence import open_store, signing_key_path
        from nonsite.evidence.signing import Signer

        self.cfg = cfg
        self.data = Path(cfg.data_dir)
        private_data_dir(self.data)
        self.store = open_store(cfg.evidence, self.data)
        self.bus = open_bus(cfg.bus, self.data)
        # The edge writes through the spool when the store is remote (S3): see evidence/spool.py.
        self.edge_evidence = _edge_evidence(cfg, self.data, self.store, self.bus)
        self.edge_store = self.edge_evidence.edge_store if self.edge_evidence else self.store
        self.edge_bus = self.edge_evidence.edge_bus if self.edge_evidence else self.bus
        self.signer = Signer.load_or_create(signing_key_path(cfg.evidence, self.data))
        self.db_url = cfg.cases.database_url or f"sqlite:///{self.data / 'cases.db'}"
        self.sessions = open_db(self.db_url)
        self.catalogue = load_catalogue(cfg.cases.legal_basis)
        self.organisation = organisation_of(cfg)
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []
        self.console: ConsoleServer | None = None
        self.console_app: FastAPI | None = None
        self.initial_admin_password: str | None = None

    def start_consumers(self) -> None:
        from nonsite.cases.drafter import run_drafter
        from nonsite.cases.outbox import run_outbox_relay
        from nonsite.evidence.sealer import run_sealer

        self.threads = [
            threading.Thread(target=run_sealer, args=(self.bus, self.store, self.signer, self.stop),
                             kwargs=_retention_kwargs(self.cfg), name="sealer", daemon=True),
            threading.Thread(target=run_drafter, args=(self.bus, self.sessions, self.cfg.cases.number_prefix,
                                                       self.stop),
                             kwargs={"timezone": self.cfg.timezone, "catalogue": self.catalogue,
                                     "check_seal": seal_check(self.cfg, self.data, self.store),
                                     "organisation": watched_organisation_of(self.cfg)},
                             name="drafter", daemon=True),
            threading.Thread(target=run_outbox_relay, args=(self.bus, self.sessions, self.stop),
                             name="decisions", daemon=True),
        ]
        for t in self.threads:
            t.start()

    def verification_keys(self) -> Keys:
        """The trusted ring when ``evidence.trusted_keys`` pins keys (packages sealed before a rotation verify);
        else this node's own key."""
        from nonsite.evidence.keys import verification_keys

        if self.cfg.evidence.trusted_keys:
            ring = verification_keys(self.cfg.evidence, self.data, self.store)
            if ring is not None:
                return ring
        return self.signer.public_key_pem().encode()

    def start_console(self, cameras: CameraControl | None = None,
                      metrics_registries: tuple[CollectorRegistry, ...] = ()) -> str:
        app, self.initial_admin_password = console_app(
            self.cfg, self.sessions, self.store, self.verification_keys(), self.catalogue,
            cameras=cameras, metrics_registries=metrics_registries, readiness=self.consumers_readiness,
            bus=self.bus)
        self.console_app = app
        self.console = ConsoleServer(app, self.cfg.console.host, self.cfg.console.port)
        return self.console.start()

    def consumers_readiness(self) -> dict[str, object]:
        """The console's ``/readyz`` check of this node's consumer threads: not ready once one has died."""
        from nonsite.ops.health import run_now, threads_check

        return dict(run_now({"consumers": threads_check(lambda: self.threads)}))

    def backlog(self) -> tuple[object, ...]:
        """What is still to seal and draft: () when nothing (the drain is done), else the figures that shrink as the
        sealer and the drafter work (spooled evidence, unsent messages, the two consumer lags)."""
        from nonsite.bus.events import TOPIC_EVIDENCE, TOPIC_VIOLATIONS

        spooled = self.edge_evidence.pending() if self.edge_evidence is not None else 0
        pending_of = getattr(self.bus, "pending", None)
        unsent = pending_of() if pending_of is not None else 0
        lag = getattr(self.bus, "lag", None)
        lags = (lag(TOPIC_VIOLATIONS, "nonsite-sealer"), lag(TOPIC_EVIDENCE, "nonsite-drafter")) if lag else (0, 0)
        left = (spooled, unsent, *lags)
        return left if any(left) else ()

    def drained(self) -> bool:
        return not self.backlog()

    def wait_drained(self, stall_s: float = 120.0) -> bool:
        """Wait until the sealer and the drafter have caught up; give up only after ``stall_s`` seconds in which
        the backlog did not change (a loaded machine seals slowly, but it seals: only a stuck one is left)."""
        deadline = time.monotonic() + stall_s
        last: tuple[object, ...] | None = None
        while time.monotonic() < deadline:
            try:
                left = self.backlog()
                if not left:
                    return True
                if left != last:
                    last, deadline = left, time.monotonic() + stall_s
            except Exception as e:  # a broker that is down right now: keep waiting
                log.debug("drain check failed: %s", e)
            time.sleep(0.1 if self.cfg.bus.kind == "embedded" else 0.5)
        return False

    def counts(self) -> tuple[int, int]:
        from sqlalchemy import func, select

        from nonsite.cases.db import Case

        sealed = sum(1 for k in self.store.list("events/") if k.endswith("/manifest.json"))
        with self.sessions() as s:
            cases = s.scalar(select(func.count()).select_from(Case)) or 0
        return sealed, int(cases)

    def close(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=10)
        if self.console:
            self.console.stop()
        if self.console_app is not None:
            stop_integration(self.console_app)
        if self.edge_evidence is not None:
            self.edge_evidence.close()
        self.bus.close()


def seal_check(cfg: NonsiteConfig, data_dir: Path, store: object) -> Callable[[object], str | None]:
    """The drafter's check of each ``nonsite.evidence`` message: the manifest it announces is in the store with
    that sha256, signed by a trusted key (``evidence.trusted_keys``, else this deployment's one key). The keys
    are looked up again every minute (a sealer publishes its key on start)."""
    from nonsite.cases.drafter import SealUnavailable
    from nonsite.evidence.signing import SigningError
    from nonsite.evidence.store import BadKeyError, StoreError
    from nonsite.evidence.trust import KeyRing, key_ring
    from nonsite.evidence.verify import check_sealed

    cached: dict[str, tuple[float, KeyRing]] = {}

    def ring() -> KeyRing:
        hit = cached.get("ring")
        if hit is not None and time.monotonic() - hit[0] < 60 and hit[1].keys:
            return hit[1]
        try:
            fresh = key_ring(cfg.evidence, data_dir, store)  # type: ignore[arg-type]
        except SigningError as e:
            raise SealUnavailable(str(e)) from None
        cached["ring"] = (time.monotonic(), fresh)
        return fresh

    def check(sealed: object) -> str | None:
        s = sealed  # an EvidenceSealed
        try:
            return check_sealed(store, ring(), s.event_id, s.manifest_key, s.manifest_sha256,  # type: ignore[arg-type, attr-defined]
                                s.signature_key, s.public_key_fingerprint)  # type: ignore[attr-defined]
        except BadKeyError as e:
            return str(e)
        except StoreError as e:
            raise SealUnavailable(str(e)) from None

    return check


def watched_organisation_of(cfg: NonsiteConfig) -> Any:
    """The organisation for a drafter: the file read again when it changes (an admin's edit in the console routes
    the next case without a restart); None when not configured."""
    from nonsite.cases.organisation import WatchedOrganisation

    return WatchedOrganisation(cfg.cases.organisation) if cfg.cases.organisation else None


def organisation_of(cfg: NonsiteConfig) -> Organisation | None:
    """The bureau's organisation (``cases.organisation``), validated; None when not configured."""
    from nonsite.cases.organisation import load_organisation

    return load_organisation(cfg.cases.organisation) if cfg.cases.organisation else None


def console_app(
    cfg: NonsiteConfig, sessions: sessionmaker[Session], store: Store, public_pem: Keys | None,
    catalogue: Catalogue, *, cameras: CameraControl | None = None,
    metrics_registries: tuple[CollectorRegistry, ...] = (),
    readiness: Callable[[], dict[str, object]] | None = None, public_key: Callable[[], Keys | None] | None = None,
    bus: Bus | None = None,
) -> tuple[FastAPI, str | None]:
    """The console's ASGI app over the case database and the evidence store, and the first-start admin password
    (None when users exist). ``public_pem`` verifies seals: a key ring (every trusted key) or one key's PEM (None:
    the seal check says no key is known); ``public_key``, when given, is asked each time instead (a key that turns
    up later).

    With ``integration.platform.enabled`` the city platform hand-off is built and started here (its delivery
    worker, and with a ``bus`` the relay of the workflow's decisions): ``app.state.console.platform``. With
    ``integration.notifications.enabled`` the notifications too (new alerts, 督办, and the reminder job's
    reminders and overdue escalations: :mod:`nonsite.integration.service`): ``app.state.notifications``. The
    caller stops both (:func:`stop_integration`)."""
    from nonsite.cases.enforcement import load_templates
    from nonsite.console.app import create_app
    from nonsite.console.directory import CasesDirectory, CasesDocuments, ensure_admin, session_secret
    from nonsite.integration.service import build_notification_service

    keys = Path(cfg.data_dir) / "keys"
    password = ensure_admin(sessions, keys / "initial-admin-password")
    documents = CasesDocuments(
        sessions, store, timezone=cfg.timezone, catalogue=catalogue,
        verify=_document_verify(store, public_key or (lambda: public_pem)),
        font_path=cfg.cases.document_font,
    )
    notifications = build_notification_service(cfg, sessions)  # a missing channel secret stops the start here
    reminder_send = notifications.reminder_send() if notifications is not None and cfg.cases.reminders else None
    try:
        app = create_app(
            session_factory=sessions, store=store, timezone=cfg.timezone,
            language=cfg.console.language, public_key_pem=public_pem, auth=CasesDirectory(sessions),
            session_secret=session_secret(keys / "console-session.key"), documents=documents,
            cameras=cameras, metrics_registries=metrics_registries, readiness=readiness,
            secure_cookies=cfg.console.cookies_secure(), metrics_token=_metrics_token(cfg),
            organisation=watched_organisation_of(cfg),
            time_limits=catalogue.time_limit_table() if catalogue else None,
            organisation_path=Path(cfg.cases.organisation) if cfg.cases.organisation else None,
            reminders=cfg.cases.reminders, reminder_interval_s=cfg.cases.reminder_interval_s, recheck=cfg.cases.recheck,
            reminder_send=reminder_send,
            enforcement=load_templates(cfg.cases.documents), document_font=cfg.cases.document_font,
            platform=_platform_hub(cfg, sessions, store, bus),
        )
    except BaseException:
        if notifications is not None:
            notifications.store.close()
        raise
    app.state.notifications = notifications.start() if notifications is not None else None
    return app, password


def _platform_hub(cfg: NonsiteConfig, sessions: sessionmaker[Session], store: Store,
                  bus: Bus | None) -> PlatformHub | None:
    """The started city platform hand-off of ``cfg`` (None when ``integration.platform`` is not enabled); a template
    that does not render is a one-line error, a violation type without an event code a warning."""
    from nonsite.config.manifest import type_names
    from nonsite.integration.hub import build_hub
    from nonsite.integration.platform import ReportError, check_template

    p = cfg.integration.platform
    if p.enabled:
        try:
            check_template(p)
        except ReportError as exc:
            raise ConfigError(f"integration.platform.template: {exc}") from None
        missing = [t for t in type_names() if t not in p.event_codes]
        if missing:
            log.warning("integration.platform.event_codes has no code for %s: their cases are not sent",
                        ", ".join(missing))
    hub = build_hub(cfg, sessions, store)
    return hub.start(bus) if hub is not None else None


def stop_platform(app: FastAPI) -> None:
    """Stop the city platform hand-off a :func:`console_app` started (its worker threads, its database)."""
    hub = getattr(app.state.console, "platform", None)
    if hub is not None:
        hub.close()


def stop_integration(app: FastAPI) -> None:
    """Stop what :func:`console_app` started besides the console: the notifications (their watch thread, then
    one last flush of what waits) and the city platform hand-off."""
    service = getattr(app.state, "notifications", None)
    if service is not None:
        service.stop()
        app.state.notifications = None
    stop_platform(app)


def _metrics_token(cfg: NonsiteConfig) -> str | None:
    """The token of ``console.metrics_token_env`` (None when not configured); a missing or short one is an error."""
    name = cfg.console.metrics_token_env
    if not name:
        return None
    token = os.environ.get(name, "").strip()
    if len(token) < 16:
        raise ConfigError(f"console.metrics_token_env: the environment variable {name} is "
                          f"{'too short' if token else 'not set'}; set it to a random token of at least 16 "
                          "characters (e.g. openssl rand -hex 24), the one Prometheus sends")
    return token


def _document_verify(store: Store, key: Callable[[], Keys | None]) -> Callable[[Case], VerifyResult | None]:
    from nonsite.evidence.verify import verify_package

    def verify(case: Case) -> VerifyResult | None:
        pem = key()
        return None if pem is None else verify_package(store, case.event_id, pem)
    return verify


def load_detectors(cfg: NonsiteConfig) -> CameraDetectors:
    """The process's :class:`~nonsite.models.CameraDetectors`, with the detector of every enabled camera (and the
    default one) loaded now, so missing or altered weights stop the start, not the first frame."""
    from nonsite.models import CameraDetectors

    detectors = CameraDetectors(cfg.detector)
    detectors.get(cfg.detector.model)
    for c in cfg.cameras:
        if c.enabled:
            detectors.for_kinds(z.kind for z in c.zones)
    return detectors


def describe_detectors(edge: EdgeRunner) -> str:
    """``openvino yolo11n-coco (ed9cf38c4a0a)`` per detector in use, with the cameras on it when there are two."""
    by: dict[int, tuple[Detector, list[str]]] = {}
    for r in edge.runs:
        by.setdefault(id(r.detector), (r.detector, []))[1].append(r.camera.id)
    if not by:
        by[id(edge.detector)] = (edge.detector, [])
    parts = [f"{d.backend} {d.weights.name} ({d.weights.sha256[:12]})" + (f" for {', '.join(cams)}" if len(by) > 1
                                                                         else "")
             for d, cams in by.values()]
    return "; ".join(parts)


def run(
    cfg: NonsiteConfig,
    *,
    exit_when_done: bool = False,
    serve: bool = True,
    progress: Callable[[str], None] = print,
    wait_forever: Callable[[], None] | None = None,
    config_path: str | None = None,
) -> RunSummary:
    """Run the cameras of ``cfg`` end to end; serve the console until Ctrl-C unless ``exit_when_done``.

    While serving, the cameras of ``config_path`` are reloaded live when the file changes (``edge.reload``)
    and on SIGHUP, and the edge keeps running after file cameras end so cameras added later run too."""
    from nonsite.ops.health import Health, OpsServer
    from nonsite.pipeline.edge import EdgeRunner
    from nonsite.pipeline.metrics import EdgeMetrics
    from nonsite.pipeline.reload import ConfigWatcher

    detectors = load_detectors(cfg)
    node = Embedded(cfg)
    summary = RunSummary()
    ops_server: OpsServer | None = None
    watcher: ConfigWatcher | None = None
    edge_thread: threading.Thread | None = None
    agent = None
    try:
        node.start_consumers()
        edge = EdgeRunner(cfg, detectors, node.edge_store, node.edge_bus, progress=progress,
                          metrics=EdgeMetrics(process=False))  # process_* come from the default registry
        if not exit_when_done:  # on Kafka, a standalone console elsewhere sees these cameras too
            agent = camera_agent(cfg, node.bus, edge, edge_id(), config_path)
        if serve and not exit_when_done:
            from nonsite.pipeline.control import EdgeCameraControl

            control = EdgeCameraControl(edge, config_path) if config_path else None
            summary.console_url = node.start_console(cameras=control, metrics_registries=(edge.metrics.registry,))
            progress(f"console: {summary.console_url}")
            if node.initial_admin_password:
                progress(f"first start: console user 'admin' created; its password is in "
                         f"{node.data / 'keys' / 'initial-admin-password'} (add users with `nonsite users add`)")
        progress(f"detector: {describe_detectors(edge)}, "
                 f"{len([c for c in cfg.cameras if c.enabled])} cameras, data in {node.data}")
        if cfg.metrics.port is not None:
            from prometheus_client import REGISTRY

            health = Health("node")
            health.add_liveness("consumers", lambda: all(t.is_alive() for t in node.threads))
            health.started()
            ops_server = OpsServer(health, [REGISTRY, edge.metrics.registry], cfg.metrics.host, cfg.metrics.port)
            progress(f"metrics: {ops_server.url}/metrics")
        if config_path and cfg.edge.reload and not exit_when_done:
            watcher = ConfigWatcher(config_path, edge, cfg.edge.reload_poll_s).start()
            watcher.install_sighup()
        if watcher is None:
            stats = edge.run(node.stop)
        else:  # keep the edge running for cameras the file adds later; report once the current ones end
            edge_thread = threading.Thread(target=edge.run, args=(node.stop,), kwargs={"until_done": False},
                                           name="edge", daemon=True)
            edge_thread.start()
            while not node.stop.is_set() and edge_thread.is_alive() and not all(r.finished.is_set()
                                                                                 for r in edge.runs):
                time.sleep(0.2)
            stats = edge.stats()
        summary.record(edge, stats, progress)
        if not node.wait_drained():
            progress("warning: the sealer/drafter made no progress for 120 s; what is left stays queued for their "
                     "next start")
        summary.packages_sealed, summary.case_drafts = node.counts()
        for line in summary.lines():
            progress(line)
        if not exit_when_done and summary.console_url:
            progress("serving the console; press Ctrl-C to stop")
            (wait_forever or _sleep_forever)()
    finally:
        if agent is not None:
            agent.stop()
        if watcher is not None:
            watcher.stop()
        if edge_thread is not None:
            node.stop.set()
            edge_thread.join(timeout=15)
        node.close()
        if ops_server is not None:
            ops_server.stop()
            ops_server.health.stop()
    return summary


def _sleep_forever() -> None:
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass


def _edge_evidence(cfg: NonsiteConfig, data: Path, store: Store, bus: Bus) -> EdgeEvidence | None:
    """The spool between an edge and a remote (S3) store; None for a local store (nothing to spool for)."""
    if cfg.evidence.store == "local":
        return None
    from nonsite.evidence import spool_path
    from nonsite.evidence.spool import EdgeEvidence

    return EdgeEvidence(store, bus, spool_path(cfg.evidence, data), cfg.evidence.spool.max_bytes,
                        cfg.evidence.spool.retry_s)


@dataclass
class _EdgeSide:
    """The store and bus an edge or a pool worker opens, and what its cameras write through: the spool in front
    of a remote store (events held back until their evidence is uploaded), else the store and bus themselves."""

    store: Store
    bus: Bus
    evidence: EdgeEvidence | None

    @property
    def out_store(self) -> Store:
        return self.evidence.edge_store if self.evidence else self.store

    @property
    def out_bus(self) -> Bus:
        return self.evidence.edge_bus if self.evidence else self.bus

    def close(self) -> None:
        if self.evidence is not None:
            self.evidence.close()
        self.bus.close()


def _open_edge_side(cfg: NonsiteConfig, role: str, ops: RoleOps | None) -> _EdgeSide:
    """Open the store (a missing credential fails here, before the model loads), the bus and the spool; register
    the broker and store readiness checks."""
    from nonsite.bus import open_bus
    from nonsite.bus.events import TOPIC_VIOLATIONS
    from nonsite.evidence import open_store
    from nonsite.ops.health import broker_check, store_check

    data = Path(cfg.data_dir)
    private_data_dir(data)
    store = open_store(cfg.evidence, data)
    bus = open_bus(cfg.bus, data, role=role)
    side = _EdgeSide(store, bus, _edge_evidence(cfg, data, store, bus))
    _checks(ops, broker=broker_check(bus, TOPIC_VIOLATIONS), store=store_check(store))
    return side


def _kafka_outbox(bus: Bus) -> KafkaBus | None:
    """The Kafka bus with its outbox to drain, or None (the embedded bus is durable on publish)."""
    if type(bus).__module__ != "nonsite.bus.kafka":  # not loading kafka-python just to ask
        return None
    from nonsite.bus.kafka import KafkaBus

    return bus if isinstance(bus, KafkaBus) else None


class SealerOptions(TypedDict):
    retain_days: int
    retain_mode: str
    verify: bool


def _retention_kwargs(cfg: NonsiteConfig) -> SealerOptions:
    """The sealer's options: retention of each package, and whether it verifies what it sealed."""
    r = cfg.evidence.retention
    return {"retain_days": r.seal_days, "retain_mode": r.mode, "verify": cfg.sealer.verify_after_seal}


# -- distributed roles: one per process ------------------------------------------------------------------


def stop_on_signals(stop: threading.Event) -> None:
    """SIGTERM and SIGINT set ``stop`` (a role then finishes the message in hand and exits cleanly)."""
    import signal

    def handler(signum: int, frame: object) -> None:
        stop.set()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)


class RoleOps:
    """What every distributed role runs beside its work: :class:`~nonsite.ops.health.Health` (liveness and
    readiness checks) and, when a port is configured, the ``/metrics`` ``/healthz`` ``/readyz`` endpoint."""

    def __init__(self, role: str, cfg: NonsiteConfig, host: str, port: int | None) -> None:
        from prometheus_client import REGISTRY

        from nonsite.ops.health import Health, OpsServer
        from nonsite.pipeline.metrics import EdgeMetrics

        self.role = role
        self.health = Health(role)
        #: the per-camera series of an edge or pool worker (the process collector is in the default registry)
        self.edge_metrics = EdgeMetrics(process=False) if role in ("edge", "pool") else None
        registries = [REGISTRY] + ([self.edge_metrics.registry] if self.edge_metrics else [])
        self.server = OpsServer(self.health, registries, host, port) if port is not None else None
        from nonsite.ops.clock import ClockMonitor
        from nonsite.ops.health import clock_check

        #: the clock against cfg.clock.servers (evidence needs it within ~1 s); readiness of the roles that
        #: timestamp evidence depends on it
        self.clock = ClockMonitor(cfg.clock)
        if self.clock.enabled and role in ("edge", "pool", "sealer"):
            self.health.add_check("clock", clock_check(self.clock))

    @property
    def url(self) -> str | None:
        return self.server.url if self.server else None

    def start(self) -> RoleOps:
        self.clock.start()
        self.health.start()
        return self

    def close(self) -> None:
        self.clock.stop()
        self.health.stop()
        if self.server is not None:
            self.server.stop()


def _checks(ops: RoleOps | None, **checks: Callable[[], str | None]) -> None:
    if ops is not None:
        for name, check in checks.items():
            ops.health.add_check(name, check)
        ops.health.started()


def run_sealer_role(
    cfg: NonsiteConfig, stop: threading.Event, *, progress: Callable[[str], None] = print,
    ops: RoleOps | None = None,
) -> None:
    """The evidence sealer alone: consume ``nonsite.violations`` in group nonsite-sealer until ``stop``."""
    from nonsite.bus import open_bus
    from nonsite.evidence import open_store, signing_key_path
    from nonsite.evidence.keys import publish_public_key
    from nonsite.evidence.sealer import run_sealer
    from nonsite.evidence.signing import Signer
    from nonsite.evidence.store import StoreError

    data = Path(cfg.data_dir)
    private_data_dir(data)
    store = open_store(cfg.evidence, data)
    signer = Signer.load_or_create(signing_key_path(cfg.evidence, data))
    bus = open_bus(cfg.bus, data, role="sealer")
    from nonsite.bus.events import TOPIC_VIOLATIONS
    from nonsite.ops.health import broker_check, store_check

    _checks(ops, broker=broker_check(bus, TOPIC_VIOLATIONS), store=store_check(store))
    try:
        delay = 0.5
        while not stop.is_set():
            try:
                key = publish_public_key(store, signer)
                break
            except StoreError as e:
                log.warning("cannot publish the public key yet (%s); retrying in %.0f s", e, delay)
                stop.wait(delay)
                delay = min(delay * 2, 30.0)
        else:
            return
        progress(f"sealer: {bus!r} -> {store!r}; signing key {signer.fingerprint()[:16]}... (public key at {key})")
        run_sealer(bus, store, signer, stop, **_retention_kwargs(cfg))
    finally:
        bus.close()


def run_drafter_role(
    cfg: NonsiteConfig, stop: threading.Event, *, progress: Callable[[str], None] = print,
    sessions: sessionmaker[Session] | None = None, ops: RoleOps | None = None,
) -> None:
    """The case drafter alone (plus the decisions outbox relay) until ``stop`` (``sessions``: the case
    database, default ``cases.database_url`` or DATA_DIR/cases.db)."""
    from nonsite.bus import open_bus
    from nonsite.cases.db import open_db
    from nonsite.cases.drafter import run_drafter
    from nonsite.cases.outbox import run_outbox_relay

    data = Path(cfg.data_dir)
    private_data_dir(data)
    db_url = cfg.cases.database_url or f"sqlite:///{data / 'cases.db'}"
    if sessions is None:
        sessions = open_db(db_url)
    from nonsite.evidence import open_store

    store = open_store(cfg.evidence, data)  # the drafter checks each announced seal against the store
    bus = open_bus(cfg.bus, data, role="drafter")
    relay = threading.Thread(target=run_outbox_relay, args=(bus, sessions, stop), name="decisions", daemon=True)
    relay.start()
    from nonsite.bus.events import TOPIC_EVIDENCE
    from nonsite.ops.health import broker_check, database_check, threads_alive

    _checks(ops, broker=broker_check(bus, TOPIC_EVIDENCE), database=database_check(sessions))
    if ops is not None:
        ops.health.add_liveness("decisions relay", threads_alive([relay]))
    progress(f"drafter: {bus!r} -> cases in {_mask_db(db_url)}")
    try:
        run_drafter(bus, sessions, cfg.cases.number_prefix, stop, timezone=cfg.timezone,
                    check_seal=seal_check(cfg, data, store), organisation=watched_organisation_of(cfg))
    finally:
        stop.set()
        relay.join(timeout=10)
        bus.close()


def _mask_db(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "(database)"


def run_edge(
    cfg: NonsiteConfig,
    stop: threading.Event,
    *,
    exit_when_done: bool = False,
    drain_timeout_s: float = 60.0,
    progress: Callable[[str], None] = print,
    ops: RoleOps | None = None,
    config_path: str | os.PathLike[str] | None = None,
) -> RunSummary:
    """The edge alone: cameras -> detection -> rules -> evidence (store, or spool) -> ``nonsite.violations``.

    On Kafka it publishes its cameras' states on ``nonsite.cameras`` and applies the zone edits of a console
    (``nonsite.camera-control``), writing them into ``config_path`` too (:mod:`nonsite.pipeline.fleet`).

    With ``exit_when_done`` it returns once the file sources end and everything it produced is handed over
    (blobs in the store, events acknowledged by the broker), or ``drain_timeout_s`` passed; what is left
    stays in the spool and the outbox under DATA_DIR and goes out on the next start.
    """
    from nonsite.pipeline.edge import EdgeRunner

    side = _open_edge_side(cfg, "edge", ops)
    store, bus, edge_evidence = side.store, side.bus, side.evidence
    summary = RunSummary()
    agent = None
    try:
        runner = EdgeRunner(cfg, load_detectors(cfg), side.out_store, side.out_bus,
                            progress=progress, metrics=ops.edge_metrics if ops else None)
        agent = camera_agent(cfg, bus, runner, edge_id(), config_path)
        progress(f"edge: detector {describe_detectors(runner)}, "
                 f"{len([c for c in cfg.cameras if c.enabled])} cameras -> {bus!r}, evidence -> {store!r}")
        summary.record(runner, runner.run(stop), progress)
        progress(summary.lines()[0])
        if exit_when_done:
            deadline = time.monotonic() + drain_timeout_s
            if edge_evidence is not None and not edge_evidence.drain(max(0.0, deadline - time.monotonic())):
                progress(f"warning: {edge_evidence.pending()} evidence item(s) still spooled in "
                         f"{edge_evidence.spool.dir}; they upload and publish on the next start")
            outbox = _kafka_outbox(bus)
            if outbox is not None and not outbox.drain(max(0.0, deadline - time.monotonic())):
                progress(f"warning: {outbox.pending()} event(s) still in the outbox; "
                         "they are sent on the next start")
            else:
                progress("edge: every event handed to the bus")
        else:
            stop.wait()
    finally:
        if agent is not None:
            agent.stop()
        side.close()
    return summary


def edge_id() -> str:
    """How an edge names itself in its camera states: NONSITE_EDGE_ID, else edge@<host name>."""
    import socket

    return os.environ.get("NONSITE_EDGE_ID") or f"edge@{socket.gethostname()}"


def camera_agent(cfg: NonsiteConfig, bus: Bus, runner: EdgeRunner, worker_id: str,
                 config_path: str | os.PathLike[str] | None, **hooks: Any) -> Any:
    """The started :class:`~nonsite.pipeline.fleet.CameraAgent` of an edge or pool worker (camera states out, zone
    commands in), or None where there is nothing to talk to: ``camera_status.enabled`` off or an embedded bus."""
    if not cfg.camera_status.enabled or cfg.bus.kind != "kafka":
        return None
    from nonsite.pipeline.fleet import CameraAgent

    state = Path(cfg.data_dir) / "cameras" / "zone-revisions.json"
    return CameraAgent(bus, runner, worker_id, cfg.camera_status, config_path=config_path, state_path=state,
                       **hooks).start()


def run_pool_worker(
    cfg: NonsiteConfig,
    stop: threading.Event,
    *,
    progress: Callable[[str], None] = print,
    ops: RoleOps | None = None,
    config_path: str | os.PathLike[str] | None = None,
) -> None:
    """A detector-pool worker (:mod:`nonsite.pipeline.pool`): runs the cameras of ``cameras:`` that the
    consumer group ``pool.group`` assigns it, until ``stop``; evidence and events go out as from an edge."""
    from nonsite.pipeline.pool import PoolWorker

    if cfg.bus.kind != "kafka":
        raise ValueError("the detector pool shares cameras through Kafka: set bus.kind: kafka")
    side = _open_edge_side(cfg, "pool", ops)
    agent = None
    try:
        detectors = load_detectors(cfg)
        detector = detectors.default
        worker = PoolWorker(cfg, detectors, side.out_store, side.out_bus, progress=progress,
                            metrics=ops.edge_metrics if ops else None)
        progress(f"pool {worker.worker_id}: detector {detector.backend} {detector.weights.name}; evidence -> "
                 f"{side.store!r}; journal {worker.journal.path}")
        if ops is not None:
            ops.health.add_liveness("detector loop", worker.detector_alive)
        agent = camera_agent(cfg, side.bus, worker.runner, worker.worker_id, config_path,
                             known=worker.known_cameras, on_camera=worker.replace_camera)
        worker.run(stop)
    finally:
        if agent is not None:
            agent.stop()
        side.close()


def run_console_role(
    cfg: NonsiteConfig, stop: threading.Event, *, progress: Callable[[str], None] = print,
    ops: RoleOps | None = None, config_path: str | os.PathLike[str] | None = None,
) -> None:
    """The operators' console alone, over ``cases.database_url`` and the evidence store, until ``stop``; it
    serves /metrics, /healthz and /readyz itself on the console port.

    On Kafka, with its ``config_path``, its cameras page shows the states the edges and pool workers publish and its
    zone editor saves into ``config_path`` and sends the zones to the camera's worker
    (:class:`~nonsite.ops.fleet.BusCameraControl`)."""
    from nonsite.cases.db import open_db
    from nonsite.cases.legal_basis import load_catalogue
    from nonsite.evidence import open_store
    from nonsite.evidence.keys import verification_keys

    data = Path(cfg.data_dir)
    private_data_dir(data)
    store = open_store(cfg.evidence, data)
    db_url = cfg.cases.database_url or f"sqlite:///{data / 'cases.db'}"
    sessions = open_db(db_url)
    # The whole trusted ring (evidence.trusted_keys), not only the newest key: packages sealed before a key
    # rotation keep verifying on the case page.
    key: dict[str, Keys | None] = {"pem": verification_keys(cfg.evidence, data, store)}
    clock = ops.clock if ops is not None else None

    def readiness() -> dict[str, object]:
        checks: dict[str, object] = {}
        checks["signing key"] = ({"ok": True, "detail": "seals are verified with the sealer's public key"}
                                 if key["pem"] else
                                 {"ok": False, "detail": "no public key of the sealer found yet: the sealer publishes "
                                  "it in the store when it starts (or set evidence.public_key)"})
        if clock is not None and clock.enabled:
            st = clock.status()
            checks["clock"] = {"ok": bool(st and st.ok), "detail": st.detail if st else "clock not checked yet"}
        if cameras is not None:
            checks["camera states"] = ({"ok": True, "detail": "following nonsite.cameras"} if cameras.alive() else
                                       {"ok": False, "detail": "the reader of nonsite.cameras has stopped"})
        return checks

    bus = None
    cameras: BusCameraControl | None = None
    fleet = cfg.bus.kind == "kafka" and cfg.camera_status.enabled and config_path is not None
    if cfg.integration.platform.enabled or fleet:  # the platform hand-off follows the decisions on the bus
        from nonsite.bus import open_bus

        bus = open_bus(cfg.bus, data, role="console")
    if fleet and bus is not None and config_path is not None:
        from nonsite.ops.fleet import BusCameraControl

        cameras = BusCameraControl(bus, config_path, cfg.camera_status).start()
    app, password = console_app(cfg, sessions, store, key["pem"], load_catalogue(cfg.cases.legal_basis),
                                readiness=readiness, public_key=lambda: key["pem"],
                                bus=bus if cfg.integration.platform.enabled else None, cameras=cameras)
    server = ConsoleServer(app, cfg.console.host, cfg.console.port)
    url = server.start()
    progress(f"console: {url} (cases in {_mask_db(db_url)}, evidence in {store!r})")
    if cameras is not None:
        from nonsite.bus.events import TOPIC_CAMERAS

        progress(f"console: cameras from {TOPIC_CAMERAS}, zone edits saved in {config_path} and sent to the "
                 "cameras' workers")
    if password:
        progress("first start: console user 'admin' created; its password is in "
                 f"{data / 'keys' / 'initial-admin-password'}")
    if key["pem"] is None:  # started before the sealer: pick its key up as soon as it is published
        progress("console: waiting for the sealer to publish its public key; seals show as unchecked until then")
        delay = 1.0
        while key["pem"] is None and not stop.wait(delay):
            key["pem"] = verification_keys(cfg.evidence, data, store)
            delay = min(delay * 2, 30.0)
        if key["pem"] is not None:
            import dataclasses

            state = app.state.console
            app.state.console = dataclasses.replace(state, public_key_pem=key["pem"])
            progress("console: the sealer's public key found; seals are verified")
    try:
        stop.wait()
    finally:
        server.stop()
        stop_integration(app)
        if cameras is not None:
            cameras.close()
        if bus is not None:
            bus.close()
