"""The embedded mode in one process: edge workers, evidence sealer, case drafter and the console.

Same code path as the distributed roles: the sealer and drafter are bus consumers here too.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from nonsite.config import NonsiteConfig

log = logging.getLogger(__name__)


@dataclass
class RunSummary:
    violations: dict[str, int] = field(default_factory=dict)
    packages_sealed: int = 0
    case_drafts: int = 0
    cameras_failed: dict[str, str] = field(default_factory=dict)
    console_url: str | None = None

    def lines(self) -> list[str]:
        types = ("sidewalk_parking", "street_vending", "stray_dog")
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

    def __init__(self, app: object, host: str, port: int) -> None:
        import uvicorn

        self.server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="off"))
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
        from nonsite.cases.db import open_db
        from nonsite.cases.legal_basis import load_catalogue
        from nonsite.evidence import open_store, signing_key_path
        from nonsite.evidence.signing import Signer
        from nonsite.pipeline.bus import open_bus

        self.cfg = cfg
        self.data = Path(cfg.data_dir)
        self.data.mkdir(parents=True, exist_ok=True)
        self.store = open_store(cfg.evidence, self.data)
        self.bus = open_bus(cfg.bus.kind, self.data)
        self.signer = Signer.load_or_create(signing_key_path(cfg.evidence, self.data))
        self.db_url = cfg.cases.database_url or f"sqlite:///{self.data / 'cases.db'}"
        self.sessions = open_db(self.db_url)
        self.catalogue = load_catalogue(cfg.cases.legal_basis)
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []
        self.console: ConsoleServer | None = None
        self.initial_admin_password: str | None = None

    def start_consumers(self) -> None:
        from nonsite.cases.drafter import run_drafter
        from nonsite.cases.outbox import run_outbox_relay
        from nonsite.evidence.sealer import run_sealer

        self.threads = [
            threading.Thread(target=run_sealer, args=(self.bus, self.store, self.signer, self.stop),
                             name="sealer", daemon=True),
            threading.Thread(target=run_drafter, args=(self.bus, self.sessions, self.cfg.cases.number_prefix,
                                                       self.stop),
                             kwargs={"timezone": self.cfg.timezone, "catalogue": self.catalogue},
                             name="drafter", daemon=True),
            threading.Thread(target=run_outbox_relay, args=(self.bus, self.sessions, self.stop),
                             name="decisions", daemon=True),
        ]
        for t in self.threads:
            t.start()

    def start_console(self, cameras: object | None = None) -> str:
        from nonsite.console.app import create_app
        from nonsite.console.directory import CasesDirectory, CasesDocuments, ensure_admin, session_secret
        from nonsite.evidence.verify import verify_package

        public_pem = self.signer.public_key_pem().encode()
        keys = self.data / "keys"
        self.initial_admin_password = ensure_admin(self.sessions, keys / "initial-admin-password")
        documents = CasesDocuments(
            self.sessions, self.store, timezone=self.cfg.timezone, catalogue=self.catalogue,
            verify=lambda case: verify_package(self.store, case.event_id, public_pem),
            font_path=self.cfg.cases.document_font,
        )
        app = create_app(
            session_factory=self.sessions, store=self.store, timezone=self.cfg.timezone,
            language=self.cfg.console.language, public_key_pem=public_pem, auth=CasesDirectory(self.sessions),
            session_secret=session_secret(keys / "console-session.key"), documents=documents,
            cameras=cameras,  # type: ignore[arg-type]
        )
        self.console = ConsoleServer(app, self.cfg.console.host, self.cfg.console.port)
        return self.console.start()

    def drained(self) -> bool:
        from nonsite.pipeline.events import TOPIC_EVIDENCE, TOPIC_VIOLATIONS

        lag = getattr(self.bus, "lag", None)
        if lag is None:
            return True
        return lag(TOPIC_VIOLATIONS, "nonsite-sealer") == 0 and lag(TOPIC_EVIDENCE, "nonsite-drafter") == 0

    def wait_drained(self, timeout_s: float = 120.0) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.drained():
                return True
            time.sleep(0.1)
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
        self.bus.close()


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
    from nonsite.models import create_detector
    from nonsite.pipeline.edge import EdgeRunner
    from nonsite.pipeline.metrics import MetricsServer
    from nonsite.pipeline.reload import ConfigWatcher

    detector = create_detector(cfg.detector)
    node = Embedded(cfg)
    summary = RunSummary()
    metrics_server: MetricsServer | None = None
    watcher: ConfigWatcher | None = None
    edge_thread: threading.Thread | None = None
    try:
        node.start_consumers()
        edge = EdgeRunner(cfg, detector, node.store, node.bus, progress=progress)
        if serve and not exit_when_done:
            from nonsite.pipeline.control import EdgeCameraControl

            control = EdgeCameraControl(edge, config_path) if config_path else None
            summary.console_url = node.start_console(cameras=control)
            progress(f"console: {summary.console_url}")
            if node.initial_admin_password:
                progress(f"first start: console user 'admin' created; its password is in "
                         f"{node.data / 'keys' / 'initial-admin-password'} (add users with `nonsite users add`)")
        progress(f"detector: {detector.backend} {detector.weights.name} ({detector.weights.sha256[:12]}), "
                 f"{len([c for c in cfg.cameras if c.enabled])} cameras, data in {node.data}")
        if cfg.metrics.port is not None:
            metrics_server = MetricsServer(edge.metrics.registry, cfg.metrics.host, cfg.metrics.port)
            progress(f"metrics: {metrics_server.url}")
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
        for r in edge.runs:
            progress(edge.describe(r))
            if r.error:
                summary.cameras_failed[r.camera.id] = r.error
        for s in stats.values():
            for k, v in s.published.items():
                summary.violations[k] = summary.violations.get(k, 0) + v
        if not node.wait_drained():
            progress("warning: the sealer/drafter did not catch up within 120 s")
        summary.packages_sealed, summary.case_drafts = node.counts()
        for line in summary.lines():
            progress(line)
        if not exit_when_done and summary.console_url:
            progress("serving the console; press Ctrl-C to stop")
            (wait_forever or _sleep_forever)()
    finally:
        if watcher is not None:
            watcher.stop()
        if edge_thread is not None:
            node.stop.set()
            edge_thread.join(timeout=15)
        node.close()
        if metrics_server is not None:
            metrics_server.stop()
    return summary


def _sleep_forever() -> None:
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
