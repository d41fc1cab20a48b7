"""Alert latency: from the edge's publication of a confirmed violation to its case in the queue.

An embedded node (:class:`nonsite.app.Embedded`: evidence store, bus, sealer, drafter, case database in one
process, as ``nonsite run`` starts it) with the embedded bus, or with Kafka (the Tansu broker the tests start,
``tests/services/servers.py``). For each alert: the edge's publication step as the worker does it (the evidence
package's blobs written into the store from real frames, then the event on ``nonsite.violations``), timed from
its start; the case's ``created_at`` (the drafter's insert) is the end. Alerts are spaced ``gap_s`` apart
(a city's alerts do not come in bursts); the first one warms the path up and is not counted.

What it leaves out on purpose: the ``evidence.post_roll_s`` seconds of video the worker records after the
confirmation before it publishes (2 s by default, a setting: the clip needs them).
"""

from __future__ import annotations

import statistics
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np


def _frames(media: Path, n: int) -> list[np.ndarray]:
    import cv2

    cap = cv2.VideoCapture(str(media / "parking_lot_cctv_timelapse_a_640x480.mp4"))
    out = []
    while len(out) < n:
        ok, f = cap.read()
        if not ok:
            break
        out.append(f)
    cap.release()
    return out


def _publish_one(store: Any, bus: Any, frames: list[np.ndarray], seq: int) -> tuple[str, float]:
    from nonsite.bus.events import TOPIC_VIOLATIONS, BoxRecord, Location, ModelInfo, ViolationEvent, new_event_id
    from nonsite.evidence.capture import CameraMeta, Still, encode_jpeg, write_package_blobs

    t0 = time.time()
    event_id = new_event_id()
    box = BoxRecord(xyxy=(100, 120, 220, 200), class_name="car", confidence=0.87, track_id=12)
    items = write_package_blobs(
        store, event_id=event_id, violation_type="sidewalk_parking",
        camera=CameraMeta(id="bench-01", name="东门", address="人民路 1 号"), zone_id="z-sidewalk",
        zone_polygon=[(0.1, 0.1), (0.9, 0.1), (0.9, 0.9), (0.1, 0.9)],
        onset=Still(t0 - 60, frames[0], [box]), confirm=Still(t0, frames[-1], [box]), closeup_xyxy=box.xyxy,
        clip=[(t0 - 60 + i * 0.2, encode_jpeg(f, 85)) for i, f in enumerate(frames)], sequence=seq,
        timezone="Asia/Shanghai",
    )
    start = datetime.fromtimestamp(t0 - 60, UTC)
    event = ViolationEvent(
        event_id=event_id, type="sidewalk_parking", camera_id="bench-01", camera_name="东门", zone_id="z-sidewalk",
        started_at=start, confirmed_at=datetime.fromtimestamp(t0, UTC), track_ids=[12],
        boxes={"onset": [box], "confirm": [box]}, confidence=0.87, dwell_s=60.0,
        model=ModelInfo(name="yolo11n-coco", version="1", sha256="ab" * 32, backend="openvino"),
        rule_config_hash="cd" * 32, evidence=items, location=Location(address="人民路 1 号", lat=31.23, lon=121.47),
    )
    bus.publish(TOPIC_VIOLATIONS, "bench-01", event.model_dump_json().encode())
    return event_id, t0


def measure(kind: str, media: Path, alerts: int, gap_s: float = 0.5) -> dict[str, Any]:
    """Latency figures of ``alerts`` alerts through an embedded node on the ``kind`` bus (embedded or kafka)."""
    from sqlalchemy import select

    from nonsite.app import Embedded
    from nonsite.cases.db import Case
    from nonsite.config import NonsiteConfig

    frames = _frames(media, 10)
    broker = None
    with tempfile.TemporaryDirectory(prefix="nonsite-bench-latency-") as tmp:
        bus_cfg: dict[str, Any] = {"kind": "embedded"}
        if kind == "kafka":
            import sys

            sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
            from services.servers import Tansu  # the broker the tests use

            broker = Tansu().__enter__()
            bus_cfg = {"kind": "kafka", "kafka": {"bootstrap_servers": broker.bootstrap, "partitions": 3,
                                                   "session_timeout_ms": 6000, "publish_timeout_s": 5.0}}
        try:
            node = Embedded(NonsiteConfig.model_validate({"data_dir": tmp, "bus": bus_cfg}))
            node.start_consumers()
            sent: dict[str, float] = {}
            try:
                for i in range(alerts + 1):
                    eid, t0 = _publish_one(node.edge_store, node.edge_bus, frames, i + 1)
                    if i == 0:  # warm-up: wait for the first case (consumer groups join, tables load)
                        deadline = time.monotonic() + 60
                        while time.monotonic() < deadline:
                            with node.sessions() as s:
                                if s.scalar(select(Case.id).where(Case.event_id == eid)) is not None:
                                    break
                            time.sleep(0.05)
                        continue
                    sent[eid] = t0
                    time.sleep(gap_s)
                deadline = time.monotonic() + 60
                got: dict[str, float] = {}
                while time.monotonic() < deadline and len(got) < len(sent):
                    with node.sessions() as s:
                        for eid, created in s.execute(select(Case.event_id, Case.created_at)
                                                      .where(Case.event_id.in_(list(sent)))):
                            c = created if created.tzinfo else created.replace(tzinfo=UTC)
                            got[eid] = c.timestamp()
                    time.sleep(0.1)
            finally:
                stop = threading.Thread(target=node.close, daemon=True)
                stop.start()
                stop.join(30)
        finally:
            if broker is not None:
                broker.__exit__(None, None, None)
    lat = sorted(got[e] - sent[e] for e in got)
    q = statistics.quantiles(lat, n=20, method="inclusive") if len(lat) >= 2 else lat
    return {"bus": kind, "alerts": len(sent), "cases": len(got), "gap_s": gap_s,
            "p50_s": round(statistics.median(lat), 3) if lat else None,
            "p95_s": round(q[18], 3) if len(lat) >= 2 else (round(lat[0], 3) if lat else None),
            "max_s": round(lat[-1], 3) if lat else None}
