"""The roles of the distributed mode as a user meets them: one clear line for a mistake, the all-in-one
process on Kafka + S3, the bus status command, metrics over HTTP."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import numpy as np
import yaml
from services.fixtures import ROOT, bucket_name, make_event, nonsite_process, stop_process, wait_for
from services.servers import Moto, S3rver, Tansu, free_port

from nonsite.app import Embedded
from nonsite.bus.events import TOPIC_VIOLATIONS
from nonsite.config import load_config

SetEnv = Callable[[Moto | S3rver], None]


def write_config(path: Path, broker: Tansu, moto: Moto, bucket: str) -> Path:
    path.write_text(yaml.safe_dump({
        "data_dir": str(path.parent / "data"),
        "bus": {"kind": "kafka", "kafka": {"bootstrap_servers": broker.bootstrap, "partitions": 2,
                                           "session_timeout_ms": 6000, "publish_timeout_s": 3}},
        "evidence": {"store": "s3", "s3": {"endpoint": moto.endpoint, "bucket": bucket, "timeout_s": 3}},
    }), encoding="utf-8")
    return path


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "nonsite", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env={**os.environ, **(env or {})})


def test_a_sealer_without_store_credentials_says_which_variables_to_export(tmp_path: Path, moto: Moto) -> None:
    conf = write_config(tmp_path / "c.yaml", Tansu(), moto, bucket_name())  # broker never started
    env = {k: v for k, v in os.environ.items() if not k.startswith("NONSITE_S3_")}
    r = subprocess.run([sys.executable, "-m", "nonsite", "sealer", "--config", str(conf)], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        "error: the S3 credentials are not set: export NONSITE_S3_ACCESS_KEY and NONSITE_S3_SECRET_KEY "
        "(evidence.s3.access_key_env / secret_key_env name other variables)"]


def test_an_edge_without_store_credentials_is_one_line_too(tmp_path: Path, moto: Moto) -> None:
    conf = write_config(tmp_path / "c.yaml", Tansu(), moto, bucket_name())
    env = {k: v for k, v in os.environ.items() if not k.startswith("NONSITE_S3_")}
    r = subprocess.run([sys.executable, "-m", "nonsite", "edge", "--config", str(conf), "--exit-when-done"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.startswith("error: the S3 credentials are not set: export NONSITE_S3_ACCESS_KEY")


def test_a_sasl_protocol_without_mechanism_is_a_config_error(tmp_path: Path) -> None:
    conf = tmp_path / "c.yaml"
    conf.write_text("bus:\n  kind: kafka\n  kafka:\n    security_protocol: SASL_SSL\n")
    r = run("config", "check", str(conf))
    assert r.returncode == 2 and "needs sasl_mechanism" in r.stderr and "c.yaml:3: bus.kafka:" in r.stderr


def test_all_roles_in_one_process_on_kafka_and_s3(
    tansu: Tansu, moto: Moto, s3_env_of: SetEnv, tmp_path: Path, clip_frames: list[np.ndarray]
) -> None:
    """`nonsite run` with the distributed config: the same Embedded node, on Kafka and S3."""
    s3_env_of(moto)
    cfg = load_config(write_config(tmp_path / "c.yaml", tansu, moto, bucket_name()))
    node = Embedded(cfg)
    try:
        assert type(node.bus).__name__ == "KafkaBus" and type(node.store).__name__ == "S3Store"
        node.start_consumers()
        events = [make_event(node.edge_store, clip_frames, f"cam-{i}", n_clip=2) for i in range(3)]
        for e in events:
            node.edge_bus.publish(TOPIC_VIOLATIONS, e.camera_id, e.model_dump_json().encode())
        wait_for(lambda: node.counts() == (3, 3), 90, "3 sealed packages and 3 cases")
        assert node.wait_drained(30)
        retention = node.store.retention(f"events/{events[0].event_id}/clip.mp4")  # type: ignore[attr-defined]
        assert retention is not None and retention[0] == "COMPLIANCE"  # seal_days from the config
    finally:
        node.close()


def test_bus_status_and_metrics_of_a_running_sealer(
    tansu: Tansu, moto: Moto, s3_env_of: SetEnv, tmp_path: Path, clip_frames: list[np.ndarray]
) -> None:
    s3_env_of(moto)
    conf = write_config(tmp_path / "c.yaml", tansu, moto, bucket_name())
    port = free_port()
    sealer = nonsite_process(["sealer", "--config", str(conf), "--metrics-port", str(port)],
                             {"NONSITE_DATA_DIR": str(tmp_path / "sealer")}, tmp_path / "sealer.log")
    try:
        def metrics() -> str:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
                    return r.read().decode()
            except OSError:
                return ""

        series = 'nonsite_bus_outbox_depth{client="nonsite-sealer"} 0.0'
        text = wait_for(lambda: series in (m := metrics()) and m, 60, "the sealer's outbox metric")
        assert 'nonsite_bus_broker_up{client="nonsite-sealer"}' in str(text)
        time.sleep(1)
        r = run("bus", "status", "--config", str(conf), env={"NONSITE_DATA_DIR": str(tmp_path / "sealer")})
        assert r.returncode == 0, r.stdout + r.stderr
        assert "nonsite.violations: 2 partition(s), 0 message(s)" in r.stdout
        assert "group nonsite-sealer on nonsite.violations: lag 0" in r.stdout
        assert "outbox-sealer.sqlite: 0 message(s) waiting" in r.stdout
    finally:
        assert stop_process(sealer) == 0, (tmp_path / "sealer.log").read_text()[-3000:]
