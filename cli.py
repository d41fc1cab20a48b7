"""The `nonsite` command line."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from nonsite.config import ConfigError, NonsiteConfig, config_schema, load_config, mask_url

DEFAULT_CONFIG = "examples/demo.yaml"


class UserError(Exception):
    """Bad input from the user: printed as one line, exit code 2."""


class _MaskSecrets(logging.Filter):
    """Camera credentials never reach a log line, whoever logs them."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        masked = mask_url(msg)
        if masked != msg:
            record.msg, record.args = masked, None
        return True


def _setup_logging(verbose: bool) -> None:
    handler = logging.StreamHandler()
    handler.addFilter(_MaskSecrets())
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, handlers=[handler], force=True)


def _load(path: str) -> NonsiteConfig:
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


def cmd_run(a: argparse.Namespace) -> int:
    from nonsite.app import run

    cfg = _load(a.config)
    if a.port is not None:
        cfg.console.port = a.port
    preflight(cfg, a.config)
    summary = run(cfg, exit_when_done=a.exit_when_done, serve=not a.no_console, config_path=a.config)
    return 1 if summary.cameras_failed and len(summary.cameras_failed) == len(cfg.cameras) else 0


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


def cmd_verify(a: argparse.Namespace) -> int:
    from nonsite.evidence import open_store, signing_key_path
    from nonsite.evidence.signing import public_key_path
    from nonsite.evidence.verify import verify_command

    if not a.all and not a.event_id:
        raise UserError("name an EVENT_ID to verify, or pass --all")
    cfg, data = _data_dir(a)
    pub = public_key_path(signing_key_path(cfg.evidence, data))
    if a.public_key:
        pub = Path(a.public_key)
    if not pub.is_file():
        raise UserError(f"public key not found at {pub}; pass --public-key FILE (the console publishes it)")
    return verify_command(open_store(cfg.evidence, data), pub.read_bytes(), a.event_id, a.all)


def cmd_config_check(a: argparse.Namespace) -> int:
    cfg = _load(a.config)
    print(f"{a.config}: OK ({len(cfg.cameras)} cameras, "
          f"{sum(len(c.zones) for c in cfg.cameras)} zones, data in {cfg.data_dir})")
    return 0


def cmd_config_schema(a: argparse.Namespace) -> int:
    text = json.dumps(config_schema(), indent=2, ensure_ascii=False) + "\n"
    if a.out:
        Path(a.out).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


def cmd_models_list(a: argparse.Namespace) -> int:
    from nonsite.models.cli import list_command

    return list_command()


def cmd_cameras_probe(a: argparse.Namespace) -> int:
    from nonsite.streams.probe import ProbeError, probe, save_snapshot

    if a.timeout <= 0:
        raise UserError(f"--timeout must be positive, got {a.timeout}")
    if a.snapshot and not Path(a.snapshot).resolve().parent.is_dir():
        raise UserError(f"--snapshot {a.snapshot}: folder {Path(a.snapshot).resolve().parent} does not exist")
    try:
        result = probe(a.url, timeout_s=a.timeout, transport=a.transport)
    except ProbeError as e:
        print(f"error: {e.kind.replace('_', ' ')}: {e}", file=sys.stderr)
        return e.exit_code
    for line in result.lines():
        print(line)
    if a.snapshot:
        print(f"snapshot: {save_snapshot(result.snapshot, a.snapshot)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="nonsite", description="Non-site (AI camera) enforcement pipeline.")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="run the cameras of a config end to end (embedded mode)")
    r.add_argument("--config", default=DEFAULT_CONFIG, help=f"YAML config (default {DEFAULT_CONFIG})")
    r.add_argument("--exit-when-done", action="store_true", help="exit once file sources end (no console)")
    r.add_argument("--no-console", action="store_true", help="do not serve the console")
    r.add_argument("--port", type=int, help="console port (overrides console.port)")
    r.set_defaults(fn=cmd_run)

    d = sub.add_parser("detect", help="print detections of an image or video")
    d.add_argument("path", help="image or video file")
    d.add_argument("--save", help="write an annotated copy here")
    d.add_argument("--config", help="take detector settings from this config")
    d.add_argument("--backend", choices=["openvino", "onnx", "ultralytics"])
    d.add_argument("--model", help="registry name or weights path")
    d.add_argument("--imgsz", type=int)
    d.add_argument("--conf", type=float, help="confidence threshold")
    d.add_argument("--every", type=int, default=1, help="videos: every Nth frame")
    d.set_defaults(fn=cmd_detect)

    e = sub.add_parser("evidence", help="evidence packages").add_subparsers(dest="evidence_cmd", required=True)
    v = e.add_parser("verify", help="recompute hashes and the signature of evidence packages")
    v.add_argument("event_id", nargs="?", help="event id of the package")
    v.add_argument("--all", action="store_true", help="verify every package")
    v.add_argument("--config", default=DEFAULT_CONFIG if Path(DEFAULT_CONFIG).is_file() else None)
    v.add_argument("--data-dir", help="data directory (default: from the config or NONSITE_DATA_DIR)")
    v.add_argument("--public-key", help="PEM public key (default: the node's own)")
    v.set_defaults(fn=cmd_verify)

    c = sub.add_parser("config", help="configuration").add_subparsers(dest="config_cmd", required=True)
    cc = c.add_parser("check", help="validate a config file")
    cc.add_argument("config")
    cc.set_defaults(fn=cmd_config_check)
    cs = c.add_parser("schema", help="print the JSON schema of the config file")
    cs.add_argument("--out", help="write it here")
    cs.set_defaults(fn=cmd_config_schema)

    m = sub.add_parser("models", help="detector weights").add_subparsers(dest="models_cmd", required=True)
    ml = m.add_parser("list", help="list the weights registry and where each file resolves")
    ml.set_defaults(fn=cmd_models_list)

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
