"""``nonsite bus status`` shows every consumer group that can be known (the sealer's and drafter's, the city platform
relay's, each camera re-check desk's) and the message count of every topic, the camera topics included: on the real
Kafka-protocol broker (Tansu) the suite starts and on the embedded bus."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from edge_helpers import wait_until
from services.servers import Tansu

from nonsite.bus import EmbeddedBus
from nonsite.bus.base import Bus, Consumer
from nonsite.bus.events import TOPIC_CAMERA_CONTROL, TOPIC_CAMERAS, TOPIC_CASES, TOPIC_RECHECK
from nonsite.bus.kafka import KafkaBus
from nonsite.bus.status import PLATFORM_GROUP, RECHECK_PREFIX, bus_status
from nonsite.config import load_config
from nonsite.integration.relay import PLATFORM_GROUP as RELAY_GROUP
from nonsite.pipeline.recheck import default_group


def _config(tmp_path: Path, bus: dict[str, object], platform: bool = False) -> Path:
    path = tmp_path / "nonsite.yaml"
    doc: dict[str, object] = {"data_dir": str(tmp_path / "data"), "bus": bus}
    if platform:
        doc["integration"] = {"platform": {"enabled": True, "url": "https://platform.city.local/cases"}}
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


def _read(consumer: Consumer, n: int) -> list[object]:
    got: list[object] = []
    wait_until(lambda: bool(got.extend(consumer.poll(timeout_s=0.5))) or len(got) >= n, 60, f"{n} message(s)")
    return got


def _traffic(bus: Bus, data_dir: Path) -> tuple[str, str]:
    """Two re-check requests, one camera state, three zone commands, one decision; an edge's desk that took both
    requests, a pool worker's that took one, the platform relay that took the decision."""
    for key in ("cam-1", "cam-1"):
        bus.publish(TOPIC_RECHECK, key, b'{"request": 1}')
    bus.publish(TOPIC_CAMERAS, "cam-1", b'{"state": "up"}')
    for _ in range(3):
        bus.publish(TOPIC_CAMERA_CONTROL, "cam-1", b'{"zones": []}')
    bus.publish(TOPIC_CASES, "NS-1", b'{"decision": 1}')
    edge, pool = default_group(str(data_dir)), default_group(str(data_dir), "pool-7")
    for group, take in ((edge, 2), (pool, 1)):
        c = bus.consumer(TOPIC_RECHECK, group)
        msgs = _read(c, 2)
        c.commit(msgs[take - 1])  # type: ignore[arg-type]
        c.close()
    relay = bus.consumer(TOPIC_CASES, PLATFORM_GROUP)
    relay.commit(_read(relay, 1)[0])  # type: ignore[arg-type]
    relay.close()
    return edge, pool


def test_the_group_names_are_those_the_desks_and_the_relay_use() -> None:
    assert PLATFORM_GROUP == RELAY_GROUP
    assert default_group("/var/lib/nonsite", "pool-1").startswith(RECHECK_PREFIX)


def test_kafka_status_lists_the_recheck_desks_the_platform_relay_and_the_camera_topics(
        tansu: Tansu, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _config(tmp_path, {"kind": "kafka", "kafka": {"bootstrap_servers": tansu.bootstrap, "partitions": 2,
                                                         "session_timeout_ms": 6000, "publish_timeout_s": 3}})
    cfg = load_config(path)
    bus = KafkaBus(cfg.bus.kafka, tmp_path / "bus", role="test")
    try:
        bus.ensure_topics()
        edge, pool = _traffic(bus, Path(cfg.data_dir))
    finally:
        bus.close()
    capsys.readouterr()
    assert bus_status(cfg, Path(cfg.data_dir)) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert "  nonsite.recheck: 2 partition(s), 2 message(s)" in lines, out
    assert "  nonsite.cameras: 2 partition(s), 1 message(s)" in lines
    assert "  nonsite.camera-control: 2 partition(s), 3 message(s)" in lines
    assert "  group nonsite-sealer on nonsite.violations: lag 0" in lines
    assert f"  group {edge} on nonsite.recheck: lag 0" in lines
    assert f"  group {pool} on nonsite.recheck: lag 1" in lines
    assert "  group nonsite-platform on nonsite.cases: lag 0" in lines
    assert not any("on nonsite.cameras" in line or "on nonsite.camera-control" in line for line in lines)


def test_embedded_status_lists_every_topic_and_the_groups_it_knows(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = load_config(_config(tmp_path, {"kind": "embedded"}, platform=True))
    data = Path(cfg.data_dir)
    bus = EmbeddedBus(data / "bus" / "bus.sqlite")
    try:
        bus.publish(TOPIC_RECHECK, "cam-1", b"{}")
        bus.publish(TOPIC_CAMERA_CONTROL, "cam-1", b"{}")
        c = bus.consumer(TOPIC_RECHECK, default_group(str(data)))
        c.commit(c.poll(timeout_s=0.1)[0])
        bus.publish(TOPIC_RECHECK, "cam-1", b"{}")  # one the desk has not taken yet
        bus.publish(TOPIC_CASES, "NS-1", b"{}")
    finally:
        bus.close()
    capsys.readouterr()
    assert bus_status(cfg, data) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "  nonsite.recheck: 2 message(s)" in lines and "  nonsite.camera-control: 1 message(s)" in lines
    assert "  nonsite.cameras: 0 message(s)" in lines
    assert f"  group {default_group(str(data))} on nonsite.recheck: lag 1" in lines
    # the platform is enabled: its relay's group shows before it committed anything (all of nonsite.cases waiting)
    assert "  group nonsite-platform on nonsite.cases: lag 1" in lines
    assert "  group nonsite-drafter on nonsite.evidence: lag 0" in lines
