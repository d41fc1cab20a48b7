"""What Prometheus and an orchestrator see of each role: /metrics, /healthz, /readyz; the evidence metrics the
alerts and dashboards are built on (write latency, verify results, spool capacity); the console's cases gauge."""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client import REGISTRY, CollectorRegistry, Counter
from services.fixtures import make_event, nonsite_process, stop_process, wait_for
from services.servers import Moto, Tansu, free_port
from test_distributed_roles import SetEnv, write_config

from nonsite.bus import EmbeddedBus
from nonsite.bus.events import TOPIC_EVIDENCE, TOPIC_VIOLATIONS
from nonsite.evidence import LocalStore
from nonsite.evidence.sealer import run_sealer
from nonsite.evidence.signing import Signer
from nonsite.evidence.spool import EvidenceSpool
from nonsite.ops.health import Health, OpsServer


def get(url: str, token: str | None = None) -> tuple[int, str]:
    """GET ``url`` (with ``Authorization: Bearer token`` when given): (status, body); (0, "") when unreachable."""
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError:
        return 0, ""


def sample(name: str, **labels: str) -> float:
    v = REGISTRY.get_sample_value(name, labels)
    return 0.0 if v is None else v


def test_ops_endpoint_answers_probes_with_the_failing_check_named() -> None:
    health = Health("unit-test-role", interval_s=0.05)
    store_up = {"ok": True}

    def store() -> str:
        if not store_up["ok"]:
            raise ConnectionError("127.0.0.1:9 refused the connection")
        return "store answers"

    worker_alive = {"ok": True}
    health.add_check("store", store)
    health.add_liveness("worker thread", lambda: worker_alive["ok"])
    registry = CollectorRegistry()
    Counter("nonsite_unit_things", "Things.", registry=registry).inc(3)
    ops = OpsServer(health, [REGISTRY, registry], "127.0.0.1", 0)
    try:
        assert get(ops.url + "/readyz")[0] == 503  # not checked yet: not ready
        health_started = time.time()
        health.start()
        time.sleep(0.2)
        status, body = get(ops.url + "/readyz")
        assert status == 503 and json.loads(body)["checks"]["started"]["ok"] is False  # the role is starting
        health.started()
        status, body = wait_for(lambda: (r := get(ops.url + "/readyz"))[0] == 200 and r, 10, "ready")  # type: ignore[misc]
        store_check = json.loads(body)["checks"]["store"]
        assert store_check["ok"] is True and store_check["detail"] == "store answers"
        assert health_started <= store_check["checked_at"] <= time.time()
        store_up["ok"] = False
        _, body = wait_for(lambda: (r := get(ops.url + "/readyz"))[0] == 503 and r, 10, "not ready")  # type: ignore[misc]
        assert json.loads(body)["checks"]["store"]["detail"] == "127.0.0.1:9 refused the connection"
        assert get(ops.url + "/healthz")[0] == 200  # a dependency outage is no reason to restart the process
        worker_alive["ok"] = False
        status, body = get(ops.url + "/healthz")
        assert status == 503 and json.loads(body)["checks"] == {"worker thread": "failing"}
        _, text = get(ops.url + "/metrics")
        assert "nonsite_unit_things_total 3.0" in text
        assert 'nonsite_role_up{role="unit-test-role"} 1.0' in text
        assert 'nonsite_role_check_ok{check="store",role="unit-test-role"} 0.0' in text
        assert get(ops.url + "/nothing")[0] == 404
    finally:
        health.stop()
        ops.stop()
    assert sample("nonsite_role_up", role="unit-test-role") == 0


def test_a_running_sealer_is_ready_only_while_its_broker_answers(
    moto: Moto, s3_env_of: SetEnv, tmp_path: Path
) -> None:
    s3_env_of(moto)
    broker = Tansu()
    broker.start()
    conf = write_config(tmp_path / "c.yaml", broker, moto, f"ops-{int(time.time() * 1000)}")
    port = free_port()
    log = tmp_path / "sealer.log"
    sealer = nonsite_process(["sealer", "--config", str(conf), "--metrics-port", str(port)],
                             {"NONSITE_DATA_DIR": str(tmp_path / "sealer")}, log)
    base = f"http://127.0.0.1:{port}"
    try:
        _, body = wait_for(lambda: (r := get(base + "/readyz"))[0] == 200 and r, 90, "the sealer ready",  # type: ignore[misc]
                           logs=lambda: log.read_text()[-3000:])
        checks = json.loads(body)["checks"]
        assert checks["broker"]["ok"] and checks["store"]["ok"], checks
        assert get(base + "/healthz")[0] == 200
        text = get(base + "/metrics")[1]
        assert 'nonsite_role_up{role="sealer"} 1.0' in text and "process_resident_memory_bytes" in text

        broker.stop()  # the broker goes away: not ready, naming the broker; still alive
        _, body = wait_for(lambda: (r := get(base + "/readyz"))[0] == 503 and r, 90, "the sealer not ready",  # type: ignore[misc]
                           logs=lambda: log.read_text()[-3000:])
        checks = json.loads(body)["checks"]
        assert not checks["broker"]["ok"] and checks["store"]["ok"], checks
        assert get(base + "/healthz")[0] == 200
    finally:
        broker.close()
        assert stop_process(sealer) == 0, log.read_text()[-3000:]


class CorruptingStore(LocalStore):
    """A real local store whose reads of one file come back altered (bit rot, a broken disk or proxy)."""

    def get(self, key: str) -> bytes:
        data = super().get(key)
        return data[:-1] + bytes([data[-1] ^ 1]) if key.endswith("/closeup.jpg") else data


def test_the_sealer_verifies_what_it_sealed_and_counts_failures(
    tmp_path: Path, clip_frames: list[np.ndarray], caplog: pytest.LogCaptureFixture
) -> None:
    signer = Signer.load_or_create(tmp_path / "keys" / "signing.pem")
    bus = EmbeddedBus(tmp_path / "bus" / "bus.sqlite")
    good, bad = LocalStore(tmp_path / "good"), CorruptingStore(tmp_path / "bad")
    ok0, failed0 = sample("nonsite_evidence_verify_total", result="ok"), sample("nonsite_evidence_verify_total",
                                                                                 result="failed")
    writes0 = sample("nonsite_evidence_write_seconds_count", store="local")
    for n, store in enumerate((good, bad), start=1):
        e = make_event(store, clip_frames, n_clip=2)
        bus.publish(TOPIC_VIOLATIONS, e.camera_id, e.model_dump_json().encode())
        stop = threading.Event()
        t = threading.Thread(target=run_sealer, args=(bus, store, signer, stop), kwargs={"verify": True},
                             daemon=True)
        with caplog.at_level(logging.ERROR, logger="nonsite.evidence.sealer"):
            t.start()
            wait_for(lambda n=n: bus.end_offset(TOPIC_EVIDENCE) >= n, 30, "the event sealed")
            stop.set()
            t.join(timeout=10)
    bus.close()
    assert sample("nonsite_evidence_verify_total", result="ok") == ok0 + 1
    assert sample("nonsite_evidence_verify_total", result="failed") == failed0 + 1
    assert any("does not verify right after sealing" in r.message and "closeup.jpg: sha256 differs" in r.message
               for r in caplog.records)
    # every blob the edge wrote and the sealer's manifest and signature: timed as store writes
    assert sample("nonsite_evidence_write_seconds_count", store="local") >= writes0 + 2 * 3


def test_spool_capacity_is_exported_for_the_80_percent_alert(tmp_path: Path) -> None:
    spool = EvidenceSpool(tmp_path / "spool", 64 * 1024**2)
    try:
        assert sample("nonsite_evidence_spool_max_bytes") == 64 * 1024**2
    finally:
        spool.close()


def test_console_counts_cases_by_status_and_answers_readiness(tmp_path: Path, clip_frames: list[np.ndarray]
                                                              ) -> None:
    from fastapi.testclient import TestClient

    from nonsite.cases import draft_case, open_db
    from nonsite.console import create_app
    from nonsite.evidence.sealer import seal

    sessions = open_db(f"sqlite:///{tmp_path / 'cases.db'}")
    store = LocalStore(tmp_path / "evidence")
    signer = Signer.load_or_create(tmp_path / "keys" / "signing.pem")
    for _ in range(3):
        e = make_event(store, clip_frames, n_clip=2)
        draft_case(sessions, seal(store, signer, e), "NS")
    extra: dict[str, Any] = {"camera link": {"ok": True, "detail": "fine"}}
    app = create_app(session_factory=sessions, store=store, readiness=lambda: dict(extra),
                     metrics_token="prometheus-token-0123456789")
    client = TestClient(app, headers={"Authorization": "Bearer prometheus-token-0123456789"})
    text = client.get("/metrics").text
    assert 'nonsite_cases{status="draft"} 3.0' in text and 'nonsite_cases{status="closed"} 0.0' in text
    r = client.get("/readyz")
    assert r.status_code == 200 and set(r.json()["checks"]) == {"database", "store", "camera link"}
    extra["camera link"] = {"ok": False, "detail": "no public key"}
    r = client.get("/readyz")
    assert r.status_code == 503 and r.json()["checks"]["camera link"]["detail"] == "no public key"
    stranger = TestClient(app)  # the orchestrator's probe: the status only
    r = stranger.get("/readyz")
    assert r.status_code == 503 and r.json() == {"status": "not ready"}
    assert stranger.get("/metrics").status_code == 401


def test_the_console_role_serves_before_the_sealer_and_picks_up_its_key(tmp_path: Path) -> None:
    import yaml

    from nonsite.evidence.keys import publish_public_key

    port = free_port()
    evidence = tmp_path / "evidence"
    conf = tmp_path / "console.yaml"
    conf.write_text(yaml.safe_dump({
        "data_dir": str(tmp_path / "console"),
        "evidence": {"store": "local", "path": str(evidence)},
        "cases": {"database_url": f"sqlite:///{tmp_path / 'cases.db'}"},
        "console": {"port": port, "metrics_token_env": "NONSITE_METRICS_TOKEN"},
    }), encoding="utf-8")
    log = tmp_path / "console.log"
    token = "prometheus-token-0123456789"
    console = nonsite_process(["console", "--config", str(conf)], {"NONSITE_METRICS_TOKEN": token}, log)
    base = f"http://127.0.0.1:{port}"
    try:
        _, body = wait_for(lambda: (r := get(base + "/readyz", token))[0] == 503 and r, 60,  # type: ignore[misc]
                           "the console up, not ready", logs=lambda: log.read_text()[-3000:])
        checks = json.loads(body)["checks"]
        assert checks["database"]["ok"] and checks["store"]["ok"] and not checks["signing key"]["ok"], checks
        assert get(base + "/login")[0] == 200  # operators can log in meanwhile
        assert 'nonsite_cases{status="draft"} 0.0' in get(base + "/metrics", token)[1]
        assert get(base + "/metrics")[0] == 401 and json.loads(get(base + "/readyz")[1]) == {"status": "not ready"}

        publish_public_key(LocalStore(evidence), Signer.load_or_create(tmp_path / "sealer" / "signing.pem"))
        wait_for(lambda: get(base + "/readyz")[0] == 200, 60, "the console ready once the key is published",
                 logs=lambda: log.read_text()[-3000:])
        assert "the sealer's public key found" in log.read_text()
        assert (tmp_path / "console" / "keys" / "initial-admin-password").is_file()
    finally:
        assert stop_process(console) == 0, log.read_text()[-3000:]
