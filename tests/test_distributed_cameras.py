"""Cameras in the distributed mode (issue 15): an edge publishes its cameras' states and snapshots on
``nonsite.cameras``; a standalone console (its own process in production, its own bus client here) shows them on the
cameras page; a zone edit saved there travels on ``nonsite.camera-control`` to the edge, which writes it into its own
config file and applies it live. Against the real Kafka-protocol broker (Tansu) the suite starts."""

from __future__ import annotations

import base64
import json
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from console_support import Env, seed
from edge_helpers import DOG, FixedLatencyDetector, Running, wait_until
from fastapi.testclient import TestClient
from services.fixtures import kafka_config
from services.servers import Tansu

from nonsite.bus import EmbeddedBus, tail
from nonsite.bus.base import Message
from nonsite.bus.events import (
    TOPIC_CAMERA_CONTROL,
    TOPIC_CAMERAS,
    TOPIC_DEAD_LETTER,
    CameraState,
    CameraZonesCommand,
)
from nonsite.bus.kafka import KafkaBus
from nonsite.config import DetectorConfig, load_config
from nonsite.config.roles import CameraStatusConfig
from nonsite.evidence import LocalStore
from nonsite.models import create_detector
from nonsite.ops.fleet import BusCameraControl
from nonsite.pipeline.edge import EdgeRunner
from nonsite.pipeline.fleet import CameraAgent
from nonsite.pipeline.violations import load_config as load_typed_config

CONFIG = """\
# edge near the fence; the console has its own copy of this file
data_dir: {data}
bus:
  kind: kafka
  kafka: {{bootstrap_servers: "{bootstrap}", partitions: 2, session_timeout_ms: 6000, publish_timeout_s: 3}}
camera_status: {{interval_s: 0.5, snapshot_interval_s: 1, stale_after_s: 10}}
edge:
  gating: {{enabled: false}}
cameras:
  - id: cam-dog     # fence camera
    name: 围栏北侧
    fps: 5
    source: {{url: "{clip}", realtime: true, loop: true}}
    zones:
      - id: all
        kind: no_stray_dogs
        polygon: [[0, 0], [1, 0], [1, 1], [0, 1]]
"""

NEW_ZONE = {"id": "path", "name": "<b>小路</b> ${HOME}", "kind": "no_stray_dogs",
            "polygon": [[0.1, 0.1], [0.9, 0.1], [0.9, 0.9]], "dwell_s": 20}


@dataclass
class Fleet:
    edge_path: Path
    console_path: Path
    runner: EdgeRunner
    running: Running
    agent: CameraAgent
    edge_bus: KafkaBus
    console_bus: KafkaBus
    control: BusCameraControl
    env: Env

    def client(self, user: str) -> TestClient:
        """A browser logged in as ``user`` (op | adm)."""
        client, _ = self.env.app(user, cameras=self.control)
        return client

    def api(self, user: str) -> TestClient:
        """An API client with a token of ``user`` carrying every scope (its role still decides)."""
        client, _ = self.env.api(user, cameras=self.control)
        return client

    def state(self) -> Any:
        return next(c for c in self.control.cameras() if c.id == "cam-dog")


@pytest.fixture()
def fleet(tansu: Tansu, tmp_path: Path, media_dir: Path, models_dir: Path) -> Iterator[Fleet]:
    edge_path = tmp_path / "edge.yaml"
    edge_path.write_text(CONFIG.format(data=tmp_path / "edge-data", bootstrap=tansu.bootstrap, clip=media_dir / DOG),
                         encoding="utf-8")
    console_path = tmp_path / "console.yaml"
    shutil.copy(edge_path, console_path)
    cfg = load_typed_config(edge_path)
    edge_bus = KafkaBus(cfg.bus.kafka, tmp_path / "edge-bus", role="edge")
    console_bus = KafkaBus(kafka_config(tansu), tmp_path / "console-bus", role="console")
    detector = FixedLatencyDetector(create_detector(DetectorConfig(backend="onnx")), 0.01)
    runner = EdgeRunner(cfg, detector, LocalStore(tmp_path / "edge-data" / "evidence"), edge_bus)  # type: ignore[arg-type]
    running = Running(runner)
    agent = CameraAgent(edge_bus, runner, "edge-north", cfg.camera_status, config_path=edge_path).start()
    control = BusCameraControl(console_bus, console_path, load_config(console_path).camera_status).start()
    env = seed(tmp_path / "console", media_dir, specs=[])
    fleet = Fleet(edge_path, console_path, runner, running, agent, edge_bus, console_bus, control, env)
    try:
        wait_until(lambda: agent.listening.is_set() and control.listening.is_set(), 30, "both sides on the bus")
        yield fleet
    finally:
        agent.stop()
        running.stop()
        control.close()
        edge_bus.close()
        console_bus.close()


def _camera_article(html: str) -> str:
    m = re.search(r'<article class="panel camera" id="camera-cam-dog".*?</article>', html, re.S)
    assert m, html[:2000]
    return m.group(0)


def test_the_console_shows_the_edges_camera_and_a_zone_edit_reaches_the_edge_live(fleet: Fleet) -> None:
    wait_until(lambda: fleet.state().state == "up" and fleet.state().fps > 0, 20, "the camera up on the console")
    op = fleet.client("op")
    card = _camera_article(op.get("/cameras").text)
    assert 'data-state="up"' in card and "围栏北侧" in card and "edge-north" in card
    assert "This console does not manage the cameras" not in card

    wait_until(lambda: fleet.control.snapshot("cam-dog") is not None, 20, "a snapshot on the console")
    r = op.get("/cameras/cam-dog/snapshot.jpg")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    image = cv2.imdecode(np.frombuffer(r.content, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None and image.shape == (360, 360, 3) and image.std() > 10  # the fence clip, not a blank
    item = op.get("/api/cameras").json()["items"][0]
    assert (item["id"], item["state"], item["worker"]) == ("cam-dog", "up", "edge-north")
    assert item["last_frame_ts"] is not None  # the worker has reported a frame (its rate is a bench figure)

    # an operator may look but not edit: refused before anything is written or sent
    before = (fleet.console_path.read_bytes(), fleet.edge_path.read_bytes())
    zones = [NEW_ZONE]
    r = fleet.api("op").put("/api/cameras/cam-dog/zones", json={"zones": zones})
    assert r.status_code == 403 and r.json()["error"]["code"] != "csrf", r.text
    assert (fleet.console_path.read_bytes(), fleet.edge_path.read_bytes()) == before
    assert fleet.agent.applied == []

    source = fleet.runner.run_of("cam-dog").source  # type: ignore[union-attr]
    r = fleet.api("adm").put("/api/cameras/cam-dog/zones", json={"zones": zones})
    assert r.status_code == 200, r.text
    # the console's file first (the source of truth) ...
    assert [(z.id, z.name) for z in load_config(fleet.console_path).cameras[0].zones] == [("path", NEW_ZONE["name"])]
    # ... then the edge: its own file and its running camera, without a restart
    wait_until(lambda: [z.id for z in fleet.runner.run_of("cam-dog").camera.zones] == ["path"], 20,  # type: ignore
               "the zones applied on the edge")
    edge_cam = load_typed_config(fleet.edge_path).cameras[0]
    assert [(z.id, z.name, z.dwell_s) for z in edge_cam.zones] == [("path", NEW_ZONE["name"], 20.0)]
    assert "# fence camera" in fleet.edge_path.read_text(encoding="utf-8")  # the edge's comments kept
    assert fleet.runner.run_of("cam-dog").source is source  # type: ignore[union-attr]
    wait_until(lambda: fleet.runner.run_of("cam-dog").worker.engine is not None  # type: ignore[union-attr]
               and [z.id for z in fleet.runner.run_of("cam-dog").worker.engine.zones] == ["path"],  # type: ignore
               20, "the new rule engine")
    # the console learns from the edge's next state that the revision is applied
    wait_until(lambda: not fleet.state().zones_pending, 20, "the edge reporting the new zones")
    card = _camera_article(op.get("/cameras").text)
    assert "zones-pending" not in card and "zones-refused" not in card
    assert "&lt;b&gt;小路&lt;/b&gt; ${HOME}" in card and "<b>小路" not in card  # data, escaped, never expanded
    assert [c.revision for c in fleet.agent.applied] == [fleet.agent.applied[0].revision]


def test_bad_messages_go_to_the_dead_letters_and_both_readers_carry_on(fleet: Fleet) -> None:
    wait_until(lambda: fleet.state().state == "up", 20, "the camera up on the console")
    dead = tail(fleet.console_bus, TOPIC_DEAD_LETTER)
    try:
        wait_until(lambda: dead.ready(), 20, "the dead-letter reader")  # type: ignore[attr-defined]
        fleet.console_bus.publish(TOPIC_CAMERA_CONTROL, "cam-dog", b"{not json")
        forged = CameraZonesCommand(camera_id="cam-dog", zones=[NEW_ZONE], revision=1)
        fleet.console_bus.publish(TOPIC_CAMERA_CONTROL, "cam-other", forged.model_dump_json().encode())
        fleet.console_bus.publish(TOPIC_CAMERAS, "cam-dog", json.dumps({"camera_id": "cam-dog"}).encode())
        # a zone set the edge's loader refuses (2 corners) though it is well-formed: refused, reported, dead-lettered
        bad = CameraZonesCommand(camera_id="cam-dog", revision=2, zones=[
            {"id": "line", "kind": "no_stray_dogs", "polygon": [[0, 0], [1, 1]]}])
        fleet.console_bus.publish(TOPIC_CAMERA_CONTROL, "cam-dog", bad.model_dump_json().encode())

        records: list[dict[str, Any]] = []

        def four() -> bool:
            records.extend(json.loads(m.value) for m in dead.poll(timeout_s=0.5))
            return len(records) >= 4

        wait_until(four, 30, "four dead letters")
    finally:
        dead.close()
    by = sorted((r["topic"], r["key"], r["consumer_group"].split(":")[0]) for r in records)
    assert by == [("nonsite.camera-control", "cam-dog", "nonsite-camera-control"),
                  ("nonsite.camera-control", "cam-dog", "nonsite-camera-control"),
                  ("nonsite.camera-control", "cam-other", "nonsite-camera-control"),
                  ("nonsite.cameras", "cam-dog", "nonsite-console-cameras")]
    reasons = " | ".join(r["reason"] for r in records)
    assert "not a zone command" in reasons and "not the command's camera" in reasons
    assert "refused by worker edge-north" in reasons and "not a camera state" in reasons
    assert fleet.agent.applied == [] and [z.id for z in fleet.runner.run_of("cam-dog").camera.zones] == ["all"]  # type: ignore[union-attr]

    # both readers live on: the next real edit goes through and the camera is still shown up
    fleet.control.set_zones("cam-dog", [NEW_ZONE])
    wait_until(lambda: [z.id for z in fleet.runner.run_of("cam-dog").camera.zones] == ["path"], 20,  # type: ignore
               "the valid edit applied after the bad ones")
    wait_until(lambda: not fleet.state().zones_pending and fleet.state().state == "up", 20, "the console up to date")


def test_a_camera_whose_worker_stops_is_shown_down_then_not_reporting(fleet: Fleet) -> None:
    wait_until(lambda: fleet.state().state == "up", 20, "the camera up on the console")
    fleet.agent.stop()  # the edge's last word: its cameras are down
    wait_until(lambda: fleet.state().state == "down", 20, "the camera down on the console")
    assert fleet.state().last_error == "worker edge-north stopped"
    op = fleet.client("op")
    card = _camera_article(op.get("/cameras").text)
    assert 'data-state="down"' in card and "worker edge-north stopped" in card
    # nothing more arrives: after camera_status.stale_after_s the console says the camera is not reporting
    wait_until(lambda: fleet.state().state == "stale", 20, "the camera not reporting")
    card = _camera_article(op.get("/cameras").text)
    assert 'data-state="stale"' in card and "state-stale" in card


# -- the console's reader alone, on the embedded bus (no broker) -------------------------------------------------


def _state(**over: Any) -> CameraState:
    values: dict[str, Any] = {"camera_id": "cam-dog", "worker_id": "edge-north", "state": "up", "fps": 4.9,
                              "last_frame_ts": 1_760_000_000.0, "interval_s": 2.0}
    values.update(over)
    return CameraState.model_validate(values)


def _msg(st: CameraState | bytes, key: str = "cam-dog", offset: int = 0) -> Message:
    value = st if isinstance(st, bytes) else st.model_dump_json().encode()
    return Message(TOPIC_CAMERAS, offset, key, value)


def test_the_console_keeps_the_newest_state_and_marks_silence_stale(tmp_path: Path, media_dir: Path) -> None:
    path = tmp_path / "console.yaml"
    path.write_text(CONFIG.format(data=tmp_path / "d", bootstrap="127.0.0.1:1", clip=media_dir / DOG), encoding="utf-8")
    bus = EmbeddedBus(tmp_path / "bus.sqlite")
    now = [1000.0]
    control = BusCameraControl(bus, path, CameraStatusConfig(stale_after_s=10), clock=lambda: now[0])
    (cam,) = control.cameras()
    assert (cam.state, cam.worker, cam.reported_at) == ("stale", "", None)  # configured, never reported
    assert control.snapshot("cam-dog") is None
    with pytest.raises(KeyError):
        control.snapshot("cam-nowhere")

    jpeg = cv2.imencode(".jpg", np.full((48, 64, 3), 120, np.uint8))[1].tobytes()
    assert control.handle(_msg(_state(snapshot_jpeg=base64.b64encode(jpeg).decode()))) == "state"
    assert control.handle(_msg(_state(fps=3.0))) == "state"  # a state without a picture keeps the last one
    (cam,) = control.cameras()
    assert (cam.state, cam.fps, cam.worker, cam.reported_at) == ("up", 3.0, "edge-north", 1000.0)
    assert control.snapshot("cam-dog") == jpeg
    now[0] += 9.0
    assert control.cameras()[0].state == "up"
    now[0] += 2.0  # 11 s of silence: more than stale_after_s and three intervals
    assert (control.cameras()[0].state, control.cameras()[0].fps) == ("stale", 0.0)

    # what is not a camera state is dead-lettered, and changes nothing
    fake = base64.b64encode(b"<svg onload=alert(1)>").decode()
    assert control.handle(_msg(_state(snapshot_jpeg=fake), offset=7)) == "dead_letter"
    assert control.handle(_msg(_state(), key="cam-other", offset=8)) == "dead_letter"
    assert control.handle(_msg(b"\xff\xfe", offset=9)) == "dead_letter"
    assert control.snapshot("cam-dog") == jpeg and control.rejected == 3
    letters = tail(bus, TOPIC_DEAD_LETTER)
    letters._position = 0  # type: ignore[attr-defined]
    records = [json.loads(m.value) for m in letters.poll(timeout_s=0.1)]
    assert [(r["offset"], r["consumer_group"]) for r in records] == [(7, "nonsite-console-cameras"),
                                                                     (8, "nonsite-console-cameras"),
                                                                     (9, "nonsite-console-cameras")]
    assert "not a JPEG" in records[0]["reason"]

    # a zone edit the loader refuses leaves the file as it was and sends nothing
    before = path.read_bytes()
    with pytest.raises(ValueError, match="polygon"):
        control.set_zones("cam-dog", [{"id": "x", "kind": "no_stray_dogs", "polygon": [[0, 0], [1, 1]]}])
    with pytest.raises(KeyError):
        control.set_zones("cam-nowhere", [NEW_ZONE])
    assert path.read_bytes() == before and bus.end_offset(TOPIC_CAMERA_CONTROL) == 0

    control.set_zones("cam-dog", [NEW_ZONE])
    (sent,) = [CameraZonesCommand.model_validate_json(m.value) for m in
               bus.consumer(TOPIC_CAMERA_CONTROL, "t").poll(timeout_s=0.1)]
    assert (sent.camera_id, sent.revision, sent.zones[0]["name"]) == ("cam-dog", 1_011_000, NEW_ZONE["name"])
    assert control.cameras()[0].zones_pending and [z["id"] for z in control.cameras()[0].zones] == ["path"]
    # the worker refuses it: the console says why
    control.handle(_msg(_state(zone_error="cameras[0].zones[0]: no", zone_error_revision=sent.revision)))
    cam = control.cameras()[0]
    assert (cam.zones_pending, cam.zones_error) == (False, "cameras[0].zones[0]: no")
    # a later state with the revision applied clears both
    control.handle(_msg(_state(zone_revision=sent.revision)))
    cam = control.cameras()[0]
    assert (cam.zones_pending, cam.zones_error) == (False, None)
    bus.close()


def test_a_hostile_state_is_shown_as_text_and_a_reported_only_camera_cannot_be_edited(
        tmp_path: Path, media_dir: Path) -> None:
    """Anyone who can write to the bus could publish a state: its values are data on the page (escaped), a camera
    password in it is masked, and a camera missing from the console's config file cannot get zones from here."""
    path = tmp_path / "console.yaml"
    path.write_text(CONFIG.format(data=tmp_path / "d", bootstrap="127.0.0.1:1", clip=media_dir / DOG), encoding="utf-8")
    bus = EmbeddedBus(tmp_path / "bus.sqlite")
    control = BusCameraControl(bus, path, CameraStatusConfig())
    now = time.time()
    hostile = _state(camera_id="cam-x", camera_name="<img src=x onerror=alert(1)>", worker_id="<script>w</script>",
                     last_error="<script>alert(1)</script> rtsp://admin:Hunter2-pw@10.0.0.7/live", last_frame_ts=now,
                     zones=[{"id": "z", "name": "<svg/onload=alert(2)>", "kind": "no_parking",
                             "polygon": [[0, 0], [1, 0], [1, 1]]}])
    assert control.handle(_msg(hostile, key="cam-x")) == "state"
    env = seed(tmp_path / "console", media_dir, specs=[])
    op, _ = env.app("op", cameras=control)
    page = op.get("/cameras").text
    for raw in ("<script>alert(1)", "<script>w", "<img src=x", "<svg/onload", "Hunter2-pw"):
        assert raw not in page, raw
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "rtsp://admin:***@10.0.0.7/live" in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page
    assert "Hunter2-pw" not in op.get("/api/cameras").text

    before = path.read_bytes()
    adm, _ = env.api("adm", cameras=control)
    r = adm.put("/api/cameras/cam-x/zones", json={"zones": [NEW_ZONE]})
    assert r.status_code == 404 and r.json()["error"]["code"] == "camera_not_found"
    assert path.read_bytes() == before and bus.end_offset(TOPIC_CAMERA_CONTROL) == 0
    bus.close()


def test_camera_states_are_kept_an_hour_and_zone_commands_as_long_as_events() -> None:
    from nonsite.bus.kafka import TOPICS, topic_specs
    from nonsite.config.services import KafkaConfig

    specs = topic_specs(KafkaConfig(retention_hours=72))
    assert {TOPIC_CAMERAS, TOPIC_CAMERA_CONTROL} <= set(TOPICS) <= set(specs)
    assert specs[TOPIC_CAMERAS]["configs"]["retention.ms"] == str(3600 * 1000)
    assert specs[TOPIC_CAMERA_CONTROL]["configs"]["retention.ms"] == str(72 * 3600 * 1000)


# -- a worker that was down during a zone edit catches up at start -----------------------------------------------


def _zone(zid: str) -> dict[str, Any]:
    return {"id": zid, "kind": "no_stray_dogs", "polygon": [[0.2, 0.2], [0.8, 0.2], [0.8, 0.8]]}


def test_a_worker_started_after_a_zone_edit_catches_up_and_an_older_command_never_undoes_a_newer_edit(
        fleet: Fleet, tmp_path: Path) -> None:
    from nonsite.config.writer import update_camera_zones

    state = tmp_path / "edge-data" / "cameras" / "zone-revisions.json"
    cfg = load_typed_config(fleet.edge_path)
    running: list[CameraAgent] = []

    def start() -> CameraAgent:
        # what the console published is on the broker first: on a loaded machine a send can time out and wait in the
        # console's outbox, and a worker starting before it is relayed would meet it live instead of in its catch-up
        assert fleet.console_bus.drain(120), "the console's outbox did not drain"
        agent = CameraAgent(fleet.edge_bus, fleet.runner, "edge-north", cfg.camera_status,
                            config_path=fleet.edge_path, state_path=state).start()
        running.append(agent)
        wait_until(agent.listening.is_set, 30, "the worker caught up and listening")
        return agent

    def file_zones() -> list[str]:
        return [z.id for z in load_typed_config(fleet.edge_path).cameras[0].zones]

    def live_zones() -> list[str]:
        return [z.id for z in fleet.runner.run_of("cam-dog").camera.zones]  # type: ignore[union-attr]

    def publish(zid: str, revision: int) -> CameraZonesCommand:
        cmd = CameraZonesCommand(camera_id="cam-dog", zones=[_zone(zid)], revision=revision, issued_by="test")
        fleet.console_bus.publish(TOPIC_CAMERA_CONTROL, "cam-dog", cmd.model_dump_json().encode())
        return cmd

    try:
        wait_until(lambda: fleet.state().state == "up", 20, "the camera up on the console")
        fleet.agent.stop()  # the fixture's worker goes; this test's workers keep their revisions in `state`
        first = start()
        fleet.control.set_zones("cam-dog", [_zone("first")])
        wait_until(lambda: live_zones() == ["first"], 20, "the first edit applied live")
        assert file_zones() == ["first"] and state.is_file()
        rev1 = first.applied[-1].revision

        # the worker is down while the console saves a new edit, and an older command lands after it on the topic
        first.stop()
        fleet.control.set_zones("cam-dog", [_zone("second")])
        rev2 = fleet.control._last_revision
        publish("older", rev1 + 1)  # older than the second edit though published later
        assert file_zones() == ["first"] and live_zones() == ["first"]

        second = start()
        assert [c.revision for c in second.replayed] == [rev2]  # only the newest, once
        assert file_zones() == ["second"] and live_zones() == ["second"]
        wait_until(lambda: not fleet.state().zones_pending and fleet.state().state == "up", 20,
                   "the console sees the caught-up revision")
        assert json.loads(state.read_text())["cameras"]["cam-dog"]["revision"] == rev2

        # a restart replays nothing more: idempotent
        second.stop()
        third = start()
        assert third.replayed == [] and third.applied == [] and file_zones() == ["second"]

        # an edit of the worker's file by hand is newer than every command issued before it
        third.stop()
        update_camera_zones(fleet.edge_path, "cam-dog", [_zone("by-hand")], load_typed_config)
        edited_ms = fleet.edge_path.stat().st_mtime_ns // 1_000_000
        publish("before-hand", rev2 + 1)  # newer than what the worker applied, older than the hand edit
        fourth = start()
        assert fourth.replayed == [] and file_zones() == ["by-hand"]
        assert fourth.baseline("cam-dog") >= edited_ms

        # ... and a command issued after the hand edit wins over it
        fourth.stop()
        after = publish("after-hand", edited_ms + 1)
        fifth = start()
        assert [c.command_id for c in fifth.replayed] == [after.command_id]
        assert file_zones() == ["after-hand"] and live_zones() == ["after-hand"]
    finally:
        for agent in running:
            agent.stop()
