"""Camera re-check on Kafka and S3 (docs/recheck.md): the request leaves the case database's outbox over a real
Kafka-protocol broker, the edge runner answers for its camera, the sealer signs the after package in S3, the
drafter records it, and the reviewer closes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import yaml
from edge_helpers import Running
from recheck_helpers import ZONE, BrightBoxDetector, scene
from services.fixtures import bucket_name, wait_for
from services.servers import Moto, S3rver, Tansu
from sqlalchemy import select
from test_cases_drafter import make_sealed

from nonsite.app import Embedded
from nonsite.cases import CaseStatus, approve, close, confirm, dispatch, draft_case, rectify
from nonsite.cases.db import Case, CaseRecheck
from nonsite.config import load_config
from nonsite.evidence.verify import verify_package
from nonsite.pipeline.edge import EdgeRunner

SetEnv = Callable[[Moto | S3rver], None]


def test_recheck_travels_over_kafka_to_the_camera_and_back(
        tansu: Tansu, moto: Moto, s3_env_of: SetEnv, tmp_path: Path) -> None:
    s3_env_of(moto)
    video = scene(tmp_path / "clear.mp4", False)
    conf = tmp_path / "c.yaml"
    conf.write_text(yaml.safe_dump({
        "data_dir": str(tmp_path / "data"),
        "bus": {"kind": "kafka", "kafka": {"bootstrap_servers": tansu.bootstrap, "partitions": 2,
                                           "session_timeout_ms": 6000, "publish_timeout_s": 3}},
        "evidence": {"store": "s3", "s3": {"endpoint": moto.endpoint, "bucket": bucket_name(), "timeout_s": 3}},
        "edge": {"gating": {"enabled": False}},
        "cases": {"recheck": {"enabled": True, "clear_s": 1, "timeout_s": 120}},
        "cameras": [{"id": "cam-01", "fps": 5, "zones": ZONE,
                     "source": {"url": str(video), "realtime": True, "loop": True}}],
    }), encoding="utf-8")
    cfg = load_config(conf)
    node = Embedded(cfg)
    running: Running | None = None
    try:
        node.start_consumers()
        sf = node.sessions
        case = draft_case(sf, make_sealed(camera_id="cam-01"), "NS")[0]
        confirm(sf, case.number, "op-1")
        approve(sf, case.number, "rev-1")
        dispatch(sf, case.number, "op-1")
        rectify(sf, case.number, "field-1", note="车已驶离", recheck=cfg.cases.recheck)

        edge = EdgeRunner(cfg, BrightBoxDetector(), node.edge_store, node.edge_bus)  # type: ignore[arg-type]
        running = Running(edge)

        def state() -> str | None:
            with sf() as s:
                return s.scalar(select(Case.recheck_state).where(Case.id == case.id))

        wait_for(lambda: state() == "clear", 120, "the after package recorded on the case")
        with sf() as s:
            rc = s.scalar(select(CaseRecheck).where(CaseRecheck.case_id == case.id))
            assert rc is not None and rc.after_event_id == rc.request_id
        assert verify_package(node.store, rc.request_id, node.verification_keys()).ok
        assert close(sf, case.number, "rev-1").status is CaseStatus.CLOSED
    finally:
        if running is not None:
            running.stop()
        node.close()
