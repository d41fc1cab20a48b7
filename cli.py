"""The `nonsite` command line."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias

from nonsite.config import ConfigError, NonsiteConfig, load_config
from nonsite.config.cameras import scrub
from nonsite.config.detectors import DETECTOR_BACKENDS

if TYPE_CHECKING:
    from nonsite.app import RoleOps
    from nonsite.evidence.retention import CaseState
    from nonsite.evidence.store import Store

DEFAULT_CONFIG = "examples/demo.yaml"

Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
"""What ``add_subparsers()`` returns: where each command (group) registers its parser."""


class UserError(Exception):
    """Bad input from the user: printed as one line, exit code 2."""


class _MaskSecrets(logging.Filter):
    """Camera credentials never reach a log line, whoever logs them."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        masked = scrub(msg)
        if masked != msg:
            record.msg, record.args = masked, None
        return True


def _setup_logging(verbose: bool) -> None:
    handler = logging.StreamHandler()
    handler.addFilter(_MaskSecrets())
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, handlers=[handler], force=True)


def _load(path: str, typed: bool = False) -> NonsiteConfig:
    """The config file; ``typed``: with every violation type's own settings checked (where rules run)."""
    if typed:
        from nonsite.pipeline.violations import load_config as load_typed

        return load_typed(path)
    return load_config(path)


def preflight(cfg: NonsiteConfig, config_path: str) -> None:
    """Check what would fail half-way (missing videos, weights) before anything is written."""
    from nonsite.models import WeightsError, resolve

    for i, cam in enumerate(cfg.cameras):
        url = cam.source.url
        if cam.enabled and "://" not in url and not url.startswith("device:") and not Path(url).is_file():
            raise UserError(f"{config_path}: cameras[{i}].source.url: video file not found: {url}; "
                            "fix the path or set NONSITE_MEDIA_DIR to the folder holding the media")
    try:
        resolve(cfg.detector.model)
    except WeightsError as e:
        raise UserError(f"{config_path}: detector.model: {e}") from None
    from nonsite.cases.legal_basis import load_catalogue

    load_catalogue(cfg.cases.legal_basis)  # a bad catalogue stops the run here, as file:line: key: fix


def cmd_run(a: argparse.Namespace) -> int:
    from nonsite.app import run

    cfg = _load(a.config, typed=True)
    if a.port is not None:
        cfg.console.port = a.port
    preflight(cfg, a.config)
    with _service_errors():
        summary = run(cfg, exit_when_done=a.exit_when_done, serve=not a.no_console, config_path=a.config)
    return 1 if summary.cameras_failed and len(summary.cameras_failed) == len(cfg.cameras) else 0


@contextlib.contextmanager
def _service_errors() -> Iterator[None]:
    """A store, key or outbox that cannot be used at start (no credentials, an unreadable key file, ...) is
    one line for the user, not a traceback."""
    from nonsite.bus.outbox import OutboxBusyError
    from nonsite.evidence.signing import SigningError
    from nonsite.evidence.store import StoreError

    try:
        yield
    except (StoreError, SigningError, OutboxBusyError) as e:
        raise UserError(str(e)) from None


def cmd_detect(a: argparse.Namespace) -> int:
    from nonsite.config import DetectorConfig
    from nonsite.models.cli import detect_command

    cfg = _load(a.config).detector if a.config else DetectorConfig()
    over = {k: v for k, v in (("backend", a.backend), ("model", a.model), ("imgsz", a.imgsz),
                              ("confidence", a.conf)) if v is not None}
    cfg = DetectorConfig.model_validate({**cfg.model_dump(), **over})
    return detect_command(a.path, cfg, a.save, every=a.every)


def _data_dir(a: argparse.Namespace) -> tuple[NonsiteConfig, Path]:
    cfg = _load(a.config) if a.config else NonsiteConfig()
    data = Path(a.data_dir or os.environ.get("NONSITE_DATA_DIR") or cfg.data_dir).resolve()
    if not data.is_dir():
        raise UserError(f"no data directory at {data}; run `nonsite run` first or pass --data-dir")
    return cfg, data


def _store_data_dir(a: argparse.Namespace) -> tuple[NonsiteConfig, Path]:
    """Like :func:`_data_dir`, but a remote (S3) store needs no local data directory."""
    cfg = _load(a.config) if a.config else NonsiteConfig()
    if cfg.evidence.store == "local":
        return _data_dir(a)
    return cfg, Path(a.data_dir or os.environ.get("NONSITE_DATA_DIR") or cfg.data_dir).resolve()


def _open_store(cfg: NonsiteConfig, data: Path) -> Store:
    from nonsite.evidence import open_store
    from nonsite.evidence.store import StoreError

    try:
        return open_store(cfg.evidence, data)
    except StoreError as e:
        raise UserError(str(e)) from None


def cmd_verify(a: argparse.Namespace) -> int:
    from nonsite.evidence.signing import SigningError
    from nonsite.evidence.trust import key_ring
    from nonsite.evidence.verify import verify_command

    if not a.all and not a.event_id:
        raise UserError("name an EVENT_ID to verify, or pass --all")
    cfg, data = _store_data_dir(a)
    store = _open_store(cfg, data)
    given: bytes | None = None
    if a.public_key:
        pub = Path(a.public_key)
        if not pub.is_file():
            raise UserError(f"public key not found at {pub}; pass --public-key FILE (the console publishes it)")
        given = pub.read_bytes()
    try:
        ring = key_ring(cfg.evidence, data, store, given)
    except SigningError as e:
        raise UserError(str(e)) from None
    if not ring.keys and not ring.pinned:
        raise UserError("no public key found (no signing key in the data directory, none in evidence.public_key, "
                        "not exactly one published in the store); pin the sealer's key in evidence.trusted_keys "
                        "or pass --public-key FILE (`nonsite evidence public-key` prints it)")
    if not ring.pinned:
        print(f"note: the signing key is not pinned (set evidence.trusted_keys to its fingerprint, "
              f"{ring.keys[0].fingerprint})", file=sys.stderr)
    return verify_command(store, ring, a.event_id, a.all, known=_known_events(cfg, data))


def _known_events(cfg: NonsiteConfig, data: Path) -> dict[str, str] | None:
    """Event id -> case number of every case the case database knows (None, with a note, when it cannot be read:
    then ``verify --all`` cannot tell that a package vanished)."""
    from sqlalchemy import select
    from sqlalchemy.exc import SQLAlchemyError

    from nonsite.cases.db import Case, open_db

    url = cfg.cases.database_url or f"sqlite:///{data / 'cases.db'}"
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).is_file():
        print("note: no case database here; a package that vanished from the store cannot be noticed",
              file=sys.stderr)
        return None
    try:
        sessions = open_db(url, upgrade=False)
        try:
            with sessions() as s:
                return {str(e): str(n) for e, n in s.execute(select(Case.event_id, Case.number)).all()}
        finally:
            sessions.kw["bind"].dispose()
    except (SQLAlchemyError, ValueError) as e:
        print(f"note: cannot read the case database ({type(e).__name__}); a package that vanished from the store "
              "cannot be noticed", file=sys.stderr)
        return None


def case_states(db_url: str) -> list[CaseState]:
    """Every case's status for the retention job, read (only read) from the case database."""
    from sqlalchemy import func, select

    from nonsite.cases.db import AuditEntry, Case, CaseStatus, open_db
    from nonsite.evidence.retention import CaseState

    sessions = open_db(db_url)
    with sessions() as s:
        dismissed = {int(cid): at for cid, at in s.execute(
            select(AuditEntry.case_id, func.max(AuditEntry.at))
            .where(AuditEntry.after_status == CaseStatus.DISMISSED.value).group_by(AuditEntry.case_id)
        ).all()}
        return [CaseState(c.event_id, c.number, str(c.status.value if hasattr(c.status, "value") else c.status),
                          c.created_at, dismissed.get(c.id) or (c.updated_at if c.status == CaseStatus.DISMISSED
                                                                 else None))
                for c in s.scalars(select(Case).order_by(Case.id))]


def cmd_retention(a: argparse.Namespace) -> int:
    from nonsite.evidence.retention import apply_retention, print_report

    cfg, data = _store_data_dir(a)
    store = _open_store(cfg, data)
    db_url = cfg.cases.database_url or f"sqlite:///{data / 'cases.db'}"
    if db_url.startswith("sqlite:///") and not Path(db_url.removeprefix("sqlite:///")).is_file():
        raise UserError(f"no case database at {db_url.removeprefix('sqlite:///')}; pass --data-dir or set "
                        "cases.database_url")
    from nonsite.evidence import signing_key_path
    from nonsite.evidence.signing import Signer

    key = signing_key_path(cfg.evidence, data)
    if not key.is_file() and not a.dry_run:
        raise UserError(f"no signing key at {key}: a deletion must leave a record signed by the sealer's key; run "
                        "retention where the sealer's key is (or set evidence.signing_key)")
    with _service_errors():
        signer = Signer.load_or_create(key) if key.is_file() else None
    actions = apply_retention(store, case_states(db_url), cfg.evidence.retention, dry_run=a.dry_run, signer=signer)
    return print_report(actions, dry_run=a.dry_run)


def cmd_public_key(a: argparse.Namespace) -> int:
    from nonsite.evidence.keys import public_key_pem
    from nonsite.evidence.signing import SigningError, public_key_fingerprint

    cfg, data = _store_data_dir(a)
    store = _open_store(cfg, data) if cfg.evidence.store != "local" else None
    try:
        pem = public_key_pem(cfg.evidence, data, store)
    except SigningError as e:
        raise UserError(str(e)) from None
    if pem is None:
        raise UserError(f"no signing key under {data} and none published in the store; run the sealer first")
    fp = public_key_fingerprint(pem)
    pin = (f"# pin it where seals are verified (key rotation: add the new key, set valid_until on the old):\n"
           f"#   evidence:\n#     trusted_keys:\n#       - fingerprint: {fp}\n"
           f"#         description: sealer key\n#         valid_from: {_utc_now_iso()}")
    if a.out:
        Path(a.out).write_bytes(pem)
        print(f"wrote {a.out} (Ed25519, sha256 fingerprint {fp})")
        print(pin)
    else:
        sys.stdout.write(pem.decode("ascii"))
        print(f"# sha256 fingerprint {fp}\n{pin}", file=sys.stderr)
    return 0


def _utc_now_iso() -> str:
    from datetime import UTC, datetime

    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


@contextlib.contextmanager
def _role(a: argparse.Namespace, role: str) -> Iterator[tuple[NonsiteConfig, RoleOps, threading.Event]]:
    """Load the config, start the role's ops endpoint and health checks, stop on SIGTERM/SIGINT."""
    from nonsite.app import RoleOps, stop_on_signals

    cfg = _load(a.config, typed=role in ("edge", "pool"))
    if role == "console":  # the console serves /metrics, /healthz and /readyz on its own port
        host, port = cfg.console.host, None
    else:
        section = getattr(cfg, role).metrics
        port = a.metrics_port if a.metrics_port is not None else section.port
        host = a.metrics_addr or section.host
    try:
        ops = RoleOps(role, cfg, host, port)
    except OSError as e:
        raise UserError(f"{a.config}: {role}.metrics: cannot listen on {host}:{port} ({e.strerror}); "
                        "choose another port") from None
    if ops.url:
        print(f"{role}: /metrics /healthz /readyz on {ops.url}", flush=True)
    stop = threading.Event()
    stop_on_signals(stop)
    try:
        with _service_errors():
            yield cfg, ops.start(), stop
    finally:
        ops.close()


def cmd_edge(a: argparse.Namespace) -> int:
    from nonsite.app import run_edge

    with _role(a, "edge") as (cfg, ops, stop):
        preflight(cfg, a.config)
        summary = run_edge(cfg, stop, exit_when_done=a.exit_when_done, drain_timeout_s=a.drain_timeout, ops=ops,
                           config_path=a.config)
    return 1 if summary.cameras_failed and len(summary.cameras_failed) == len(cfg.cameras) else 0


def cmd_pool(a: argparse.Namespace) -> int:
    from nonsite.app import run_pool_worker

    with _role(a, "pool") as (cfg, ops, stop):
        if cfg.bus.kind != "kafka":
            raise UserError(f"{a.config}: bus.kind: the detector pool shares cameras through Kafka; "
                            "set bus.kind: kafka (and bus.kafka.bootstrap_servers)")
        preflight(cfg, a.config)
        run_pool_worker(cfg, stop, ops=ops, config_path=a.config)
    return 0


def cmd_console(a: argparse.Namespace) -> int:
    from nonsite.app import run_console_role

    with _role(a, "console") as (cfg, ops, stop):
        if a.port is not None:
            cfg.console.port = a.port
        if a.host is not None:
            cfg.console.host = a.host
        run_console_role(cfg, stop, ops=ops, config_path=a.config)
    return 0


def cmd_sealer(a: argparse.Namespace) -> int:
    from nonsite.app import run_sealer_role

    with _role(a, "sealer") as (cfg, ops, stop):
        run_sealer_role(cfg, stop, ops=ops)
    return 0


def cmd_drafter(a: argparse.Namespace) -> int:
    from nonsite.app import run_drafter_role

    with _role(a, "drafter") as (cfg, ops, stop):
        from nonsite.cases.db import open_db

        db_url = cfg.cases.database_url or f"sqlite:///{Path(cfg.data_dir) / 'cases.db'}"
        try:
            sessions = open_db(db_url)
        except ValueError as e:  # open_db says what is wrong with the URL or its folder
            raise UserError(f"{a.config}: cases.database_url: {e}") from None
        run_drafter_role(cfg, stop, sessions=sessions, ops=ops)
    return 0


def cmd_bus_schemas(a: argparse.Namespace) -> int:
    from nonsite.bus.schemas import check_schemas, write_schemas

    out = Path(a.out)
    if a.check:
        stale = check_schemas(out)
        for name in stale:
            print(f"{out / name}: out of date; run `nonsite bus schemas --out {out}` (make schema)", file=sys.stderr)
        return 1 if stale else 0
    for path in write_schemas(out):
        print(f"wrote {path}")
    return 0


def cmd_bus_status(a: argparse.Namespace) -> int:
    from nonsite.bus.status import bus_status

    cfg = _load(a.config)
    return bus_status(cfg, Path(cfg.data_dir))


def cmd_config_check(a: argparse.Namespace) -> int:
    from nonsite.cases.legal_basis import load_catalogue

    cfg = _load(a.config, typed=True)
    load_catalogue(cfg.cases.legal_basis)
    print(f"{a.config}: OK ({len(cfg.cameras)} cameras, "
          f"{sum(len(c.zones) for c in cfg.cameras)} zones, data in {cfg.data_dir})")
    return 0


def cmd_config_schema(a: argparse.Namespace) -> int:
    from nonsite.pipeline.violations import config_schema

    text = json.dumps(config_schema(), indent=2, ensure_ascii=False) + "\n"
    if a.out:
        Path(a.out).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


def cmd_clock_check(a: argparse.Namespace) -> int:
    from nonsite.config.clock import ClockConfig, split_server
    from nonsite.ops.clock import check

    cfg = _load(a.config).clock if a.config else ClockConfig()
    if a.server:
        for s in a.server:
            try:
                split_server(s)
            except ValueError as e:
                raise UserError(f"--server {e}") from None
        cfg = cfg.model_copy(update={"servers": [s.strip() for s in a.server]})
    if not cfg.servers:
        raise UserError(f"{a.config or 'no --config'}: clock.servers is empty; "
                        "name the city's time server there or pass --server HOST[:PORT]")
    st = check(cfg)
    for s in st.samples:
        print(f"{s.server}: offset {s.offset_s:+.3f} s, delay {s.delay_s * 1000:.1f} ms, stratum {s.stratum}")
    for server, why in st.errors.items():
        print(f"{server}: error: {why}")
    print(f"{st.state.upper()}: {st.detail}")
    return 0 if st.ok else 1


def cmd_models_list(a: argparse.Namespace) -> int:
    from nonsite.models.cli import list_command

    return list_command()


def cmd_eval(a: argparse.Namespace) -> int:
    from nonsite.models import CameraDetectors, WeightsError
    from nonsite.pipeline.evaluation import (
        EvalError,
        evaluate,
        load_dataset,
        report_lines,
        to_json,
        write_json,
    )

    cfg = _load(a.config, typed=True) if a.config else NonsiteConfig()
    if a.gating is not None:
        cfg.edge.gating.enabled = a.gating == "on"
    root = Path(a.dataset).resolve()
    try:
        clips = load_dataset(root)  # every clip's files are checked before the detector loads
        if a.gating is not None:  # the flag wins over a clip's own camera.yaml gating:
            for clip in clips:
                clip.camera.gating = None
        detector = CameraDetectors(cfg.detector)  # each clip's camera gets the weights its zones call for
        models = {detector.model_for(z.kind for z in c.camera.zones) for c in clips}
        loaded = [detector.get(m) for m in sorted(models, key=lambda m: (m != cfg.detector.model, m))]  # weights
        # missing or altered fail here, before the first clip
        print("detector: " + "; ".join(f"{d.backend} {d.weights.name} ({d.weights.sha256[:12]})" for d in loaded)
              + f", {len(clips)} clips in {root}", flush=True)
        results, scores = evaluate(clips, cfg, detector,
                                   evidence_dir=Path(a.evidence_dir).resolve() if a.evidence_dir else None,
                                   progress=lambda line: print(line, flush=True))
    except EvalError as e:
        raise UserError(str(e)) from None
    except WeightsError as e:
        raise UserError(f"detector.model: {e}") from None
    print()
    for line in report_lines(results, scores):
        print(line)
    if a.json:
        write_json(Path(a.json), to_json(root, results, scores, cfg, detector))
        print(f"scores written to {a.json}")
    return 0


def cmd_models_train(a: argparse.Namespace) -> int:
    from nonsite.models.cli import train_command

    return train_command(a.data, a.base, a.epochs, imgsz=a.imgsz, name=a.name, batch=a.batch, freeze=a.freeze,
                         hours=a.hours, cache=a.cache, lr0=a.lr0)


def cmd_models_val(a: argparse.Namespace) -> int:
    from nonsite.models.cli import val_command

    return val_command(a.model, a.data, imgsz=a.imgsz)


def cmd_models_build_street(a: argparse.Namespace) -> int:
    from nonsite.models.cli import build_street_command

    return build_street_command(a.out, a.source, a.base, conf=a.conf)


def cmd_models_export(a: argparse.Namespace) -> int:
    from nonsite.models.cli import export_command

    return export_command(a.model, a.format, imgsz=a.imgsz, name=a.name)


def cmd_models_quantize(a: argparse.Namespace) -> int:
    from nonsite.models.cli import quantize_command

    return quantize_command(a.model, imgsz=a.imgsz, frames=a.frames)


def cmd_models_qualify(a: argparse.Namespace) -> int:
    from nonsite.pipeline.qualification import qualify_command

    return qualify_command(a.model, imgsz=a.imgsz, dataset=Path(a.dataset),
                           precisions=[p.strip() for p in a.precisions.split(",") if p.strip()])


def cmd_cameras_probe(a: argparse.Namespace) -> int:
    from nonsite.config import cliargs
    from nonsite.streams.probe import ProbeError, probe, save_snapshot

    try:
        timeout_s = cliargs.seconds("--timeout", a.timeout)
        url = cliargs.source_url(a.url)
    except ValueError as e:
        raise UserError(str(e)) from None
    if a.snapshot and not Path(a.snapshot).resolve().parent.is_dir():
        raise UserError(f"--snapshot {a.snapshot}: folder {Path(a.snapshot).resolve().parent} does not exist")
    try:
        result = probe(url, timeout_s=timeout_s, transport=a.transport)
    except ProbeError as e:
        print(f"error: {e.kind.replace('_', ' ')}: {e}", file=sys.stderr)
        return e.exit_code
    for line in result.lines():
        print(line)
    if a.snapshot:
        print(f"snapshot: {save_snapshot(result.snapshot, a.snapshot)}")
    return 0


def _add_run(sub: Subparsers) -> None:
    r = sub.add_parser("run", help="run the cameras of a config end to end (embedded mode)")
    r.add_argument("--config", default=DEFAULT_CONFIG, help=f"YAML config (default {DEFAULT_CONFIG})")
    r.add_argument("--exit-when-done", action="store_true", help="exit once file sources end (no console)")
    r.add_argument("--no-console", action="store_true", help="do not serve the console")
    r.add_argument("--port", type=int, help="console port (overrides console.port)")
    r.set_defaults(fn=cmd_run)


def _add_detect(sub: Subparsers) -> None:
    d = sub.add_parser("detect", help="print detections of an image or video")
    d.add_argument("path", help="image or video file")
    d.add_argument("--save", help="write an annotated copy here")
    d.add_argument("--config", help="take detector settings from this config")
    d.add_argument("--backend", choices=list(DETECTOR_BACKENDS))
    d.add_argument("--model", help="registry name or weights path")
    d.add_argument("--imgsz", type=int)
    d.add_argument("--conf", type=float, help="confidence threshold")
    d.add_argument("--every", type=int, default=1, help="videos: every Nth frame")
    d.set_defaults(fn=cmd_detect)


def _add_evidence(sub: Subparsers) -> None:
    e = sub.add_parser("evidence", help="evidence packages").add_subparsers(dest="evidence_cmd", required=True)
    v = e.add_parser("verify", help="recompute hashes and the signature of evidence packages")
    v.add_argument("event_id", nargs="?", help="event id of the package")
    v.add_argument("--all", action="store_true", help="verify every package")
    v.add_argument("--config", default=DEFAULT_CONFIG if Path(DEFAULT_CONFIG).is_file() else None)
    v.add_argument("--data-dir", help="data directory (default: from the config or NONSITE_DATA_DIR)")
    v.add_argument("--public-key", help="PEM public key (default: the node's own)")
    v.set_defaults(fn=cmd_verify)
    rt = e.add_parser("retention", help="delete dismissed cases' evidence after its period; extend confirmed locks")
    rt.add_argument("--dry-run", action="store_true", help="report what would be done, change nothing")
    rt.add_argument("--config", default=DEFAULT_CONFIG if Path(DEFAULT_CONFIG).is_file() else None)
    rt.add_argument("--data-dir", help="data directory (default: from the config or NONSITE_DATA_DIR)")
    rt.set_defaults(fn=cmd_retention)
    pk = e.add_parser("public-key", help="print (or write) the public key that verifies evidence signatures")
    pk.add_argument("--out", help="write the PEM here (e.g. docs/keys/<city>.pub.pem)")
    pk.add_argument("--config", default=DEFAULT_CONFIG if Path(DEFAULT_CONFIG).is_file() else None)
    pk.add_argument("--data-dir", help="data directory (default: from the config or NONSITE_DATA_DIR)")
    pk.set_defaults(fn=cmd_public_key)


def _add_roles(sub: Subparsers) -> None:
    """The distributed mode: one role per process."""
    for name, fn, what in (
        ("edge", cmd_edge, "distributed mode: run the cameras, publish violations to the bus"),
        ("sealer", cmd_sealer, "distributed mode: the evidence sealer (consumer group nonsite-sealer)"),
        ("drafter", cmd_drafter, "distributed mode: the case drafter (consumer group nonsite-drafter)"),
        ("pool", cmd_pool, "distributed mode: a detector-pool worker; runs the cameras the group nonsite-pool "
                           "assigns it"),
    ):
        rp = sub.add_parser(name, help=what)
        rp.add_argument("--config", default=DEFAULT_CONFIG, help=f"YAML config (default {DEFAULT_CONFIG})")
        rp.add_argument("--metrics-port", type=int,
                        help=f"serve /metrics, /healthz and /readyz on this port (default {name}.metrics.port)")
        rp.add_argument("--metrics-addr", help=f"address of that port (default {name}.metrics.host)")
        if name == "edge":
            rp.add_argument("--exit-when-done", action="store_true",
                            help="exit once file sources end and every event is handed to the bus")
            rp.add_argument("--drain-timeout", type=float, default=120.0,
                            help="with --exit-when-done: seconds to wait for the store and broker (default 120)")
        rp.set_defaults(fn=fn)

    co = sub.add_parser("console", help="distributed mode: the operators' console (also /metrics, /healthz, /readyz)")
    co.add_argument("--config", default=DEFAULT_CONFIG, help=f"YAML config (default {DEFAULT_CONFIG})")
    co.add_argument("--port", type=int, help="listen on this port (default console.port)")
    co.add_argument("--host", help="listen on this address (default console.host)")
    co.set_defaults(fn=cmd_console)


def _add_bus(sub: Subparsers) -> None:
    b = sub.add_parser("bus", help="event bus").add_subparsers(dest="bus_cmd", required=True)
    bs = b.add_parser("schemas", help="write the JSON Schema of every topic (docs/schemas)")
    bs.add_argument("--out", default="docs/schemas", help="directory (default docs/schemas)")
    bs.add_argument("--check", action="store_true", help="exit 1 when the files there are not current")
    bs.set_defaults(fn=cmd_bus_schemas)
    bst = b.add_parser("status", help="topics, consumer-group lag and outbox depth")
    bst.add_argument("--config", default=DEFAULT_CONFIG, help=f"YAML config (default {DEFAULT_CONFIG})")
    bst.set_defaults(fn=cmd_bus_status)


def _add_config(sub: Subparsers) -> None:
    c = sub.add_parser("config", help="configuration").add_subparsers(dest="config_cmd", required=True)
    cc = c.add_parser("check", help="validate a config file")
    cc.add_argument("config")
    cc.set_defaults(fn=cmd_config_check)
    cs = c.add_parser("schema", help="print the JSON schema of the config file")
    cs.add_argument("--out", help="write it here")
    cs.set_defaults(fn=cmd_config_schema)


def _add_clock(sub: Subparsers) -> None:
    clk = sub.add_parser("clock", help="clock health").add_subparsers(dest="clock_cmd", required=True)
    ck = clk.add_parser("check", help="compare the device clock with the (S)NTP servers of clock.servers",
                        description="Exit status: 0 within clock.max_offset_s, 1 drifted or no server answered, "
                        "2 bad config or no server named.")
    ck.add_argument("--config", help="YAML config whose clock section to use (default: built-in defaults)")
    ck.add_argument("--server", action="append", metavar="HOST[:PORT]",
                    help="time server to ask instead of clock.servers (repeat for several)")
    ck.set_defaults(fn=cmd_clock_check)


def _add_eval(sub: Subparsers) -> None:
    ev = sub.add_parser("eval", help="run the pipeline over a labelled dataset of clips and score the alerts")
    ev.add_argument("--dataset", required=True,
                    help="folder with one folder per clip: video.mp4|avi (or source.yaml), camera.yaml, truth.yaml")
    ev.add_argument("--json", help="also write the scores and every alert as JSON here")
    ev.add_argument("--config", help="take detector, tracker, rule and evidence settings from this config")
    ev.add_argument("--evidence-dir", help="keep the evidence packages of the alerts here (default: discarded)")
    ev.add_argument("--gating", choices=("on", "off"),
                    help="motion-gated detection on or off for every clip (default: edge.gating.enabled)")
    ev.set_defaults(fn=cmd_eval)


def _add_models(sub: Subparsers) -> None:
    m = sub.add_parser("models", help="detector weights").add_subparsers(dest="models_cmd", required=True)
    ml = m.add_parser("list", help="list the weights registry and where each file resolves")
    ml.set_defaults(fn=cmd_models_list)
    mt = m.add_parser("train", help="fine-tune a detector on a YOLO dataset (CPU) and register it by name")
    mt.add_argument("--data", required=True, help="YOLO dataset yaml (path, train, val, names)")
    mt.add_argument("--base", default="yolo11n-coco", help="registry name or .pt to start from (default yolo11n-coco)")
    mt.add_argument("--epochs", type=int, required=True, help="training epochs")
    mt.add_argument("--imgsz", type=int, default=640, help="training image size (multiple of 32, default 640)")
    mt.add_argument("--batch", type=int, default=8, help="batch size (default 8)")
    mt.add_argument("--name", help="registry name of the result (default <dataset>-<base>)")
    mt.add_argument("--freeze", type=int, help="keep the first N layers fixed (10: a YOLO11's backbone)")
    mt.add_argument("--hours", type=float, help="cap the training time; the epochs are fitted into it")
    mt.add_argument("--cache", action="store_true", help="keep decoded training images in RAM")
    mt.add_argument("--lr0", type=float, help="AdamW learning rate (default: ultralytics' automatic choice)")
    mt.set_defaults(fn=cmd_models_train)
    mv = m.add_parser("val", help="per-class precision, recall and mAP of a model on a YOLO dataset's val split")
    mv.add_argument("--model", required=True, help="registry name or .pt/.onnx path")
    mv.add_argument("--data", required=True, help="YOLO dataset yaml (path, train, val, names)")
    mv.add_argument("--imgsz", type=int, default=640, help="image size (multiple of 32, default 640)")
    mv.set_defaults(fn=cmd_models_val)
    mb = m.add_parser("build-street-dataset",
                      help="pseudo-label COCO classes on a cart dataset and add vendor_cart (class 80)")
    mb.add_argument("--out", required=True, help="output folder, outside the repository (images are symlinked)")
    mb.add_argument("--source",
                    help="YOLO dataset yaml with a 'thela' class (default: $NONSITE_MEDIA_DIR/india_road_obstacles)")
    mb.add_argument("--base", default="yolo11n-coco", help="the COCO model that pseudo-labels (default yolo11n-coco)")
    mb.add_argument("--conf", type=float, default=0.35, help="pseudo-label confidence threshold (default 0.35)")
    mb.set_defaults(fn=cmd_models_build_street)
    me = m.add_parser("export", help="export a .pt model to ONNX or OpenVINO and register the export")
    me.add_argument("--model", required=True, help="registry name or .pt path")
    me.add_argument("--format", required=True, choices=["onnx", "openvino"])
    me.add_argument("--imgsz", type=int, help="export image size (default: the model's)")
    me.add_argument("--name", help="registry name of the export (default <model>-<format>)")
    me.set_defaults(fn=cmd_models_export)
    mq = m.add_parser("quantize", help="post-training int8 quantization for OpenVINO (NNCF), calibrated on the "
                      "frames of $NONSITE_MEDIA_DIR, into the weights cache (detector.openvino.precision: int8)")
    mq.add_argument("--model", default="yolo11n-coco", help="registry name or .pt/.onnx path (default yolo11n-coco)")
    mq.add_argument("--imgsz", type=int, default=640, help="the detector's imgsz (default 640)")
    mq.add_argument("--frames", type=int, default=300, help="calibration frames (default 300)")
    mq.set_defaults(fn=cmd_models_quantize)
    mqa = m.add_parser("qualify", help="eval and time each precision of a model on this CPU; precision: auto then "
                       "runs the fastest whose eval matches fp32")
    mqa.add_argument("--model", default="yolo11n-coco", help="registry name or .pt/.onnx path (default yolo11n-coco)")
    mqa.add_argument("--imgsz", type=int, default=640, help="the detector's imgsz (default 640)")
    mqa.add_argument("--dataset", default=str(Path(__file__).resolve().parent / "tests" / "data" / "eval"),
                     help="the eval set (nonsite eval's layout; default tests/data/eval)")
    mqa.add_argument("--precisions", default="fp32,bf16,int8",
                     help="precisions to qualify, those this CPU runs natively (default fp32,bf16,int8)")
    mqa.set_defaults(fn=cmd_models_qualify)


def _add_cameras(sub: Subparsers) -> None:
    cam = sub.add_parser("cameras", help="cameras").add_subparsers(dest="cameras_cmd", required=True)
    cp = cam.add_parser(
        "probe", help="connect to a camera once: codec, resolution, fps, time to first frame, a snapshot",
        description="Exit status: 0 video received, 1 unreadable stream, 3 unreachable, 4 authentication "
        "failed, 5 no stream at that path, 6 no video track, 7 timeout.",
    )
    cp.add_argument("url", help="rtsp://user:pass@host/path, http(s):// (MJPEG), a video file, or device:N")
    cp.add_argument("--snapshot", metavar="OUT.jpg", help="save the newest frame here")
    cp.add_argument("--timeout", type=float, default=10.0, metavar="S", help="give up after S seconds (default 10)")
    cp.add_argument("--transport", choices=["tcp", "udp"], default="tcp", help="RTSP transport (default tcp)")
    cp.set_defaults(fn=cmd_cameras_probe)


def build_parser() -> argparse.ArgumentParser:
    """The `nonsite` command line: each command (group) registers its own subparsers."""
    from nonsite.cases.cli import add_parsers as add_cases_parsers  # nonsite cases ..., nonsite users ...
    from nonsite.cases.enforcement_cli import add_parsers as add_documents_parsers  # nonsite documents ...
    from nonsite.integration.cli import add_parsers as add_integration_parsers  # nonsite platform/notify ...

    p = argparse.ArgumentParser(prog="nonsite", description="Non-site (AI camera) enforcement pipeline.")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)
    for add in (_add_run, _add_detect, _add_evidence, _add_roles, _add_bus, _add_config, _add_clock, _add_eval,
                _add_models, add_cases_parsers, add_integration_parsers, _add_cameras):
        add(sub)
    add_documents_parsers(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(args.verbose)
    try:
        return int(args.fn(args))
    except (ConfigError, UserError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
