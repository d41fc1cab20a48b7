"""From the workflow to the platform and the chat, end to end on real parts: a case approved in a real case
database → its decision relayed over the embedded bus → a signed report at a local HTTP server; new drafts →
notices; the admin commands."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from http_receiver import Reply, Seen, receiving
from platform_simulator import platform
from sqlalchemy.orm import Session, sessionmaker

from nonsite.bus.embedded import EmbeddedBus
from nonsite.bus.events import TOPIC_CASES, TOPIC_DEAD_LETTER
from nonsite.cases.db import Case, CaseStatus, open_db, write_session
from nonsite.cases.deadlines import STEPS, Due
from nonsite.cases.outbox import relay_outbox
from nonsite.cases.reminders import Notice as ReminderNotice
from nonsite.cases.workflow import Action, apply_action, approve, confirm, dispatch, rectify
from nonsite.cli import main
from nonsite.config import ConfigError, NonsiteConfig, load_config
from nonsite.config.integration import CASE_STATUSES, WORKFLOW_ACTIONS
from nonsite.integration.inbound import CallbackRejected, handle_callback
from nonsite.integration.notify import Notifier
from nonsite.integration.outbox import DeliveryState
from nonsite.integration.platform import report_from_case
from nonsite.integration.relay import (
    STEP_NAMES,
    build_connector,
    notice_from_reminder,
    notify_new_alerts,
    open_store,
    relay_decisions,
    run_platform_relay,
)
from nonsite.integration.signing import secret_from_env, verify_signature

AT = datetime(2026, 1, 5, 2, 0, tzinfo=UTC)


def add_case(db: sessionmaker[Session], number: str, type_: str = "street_vending") -> None:
    with write_session(db) as s:
        s.add(Case(number=number, event_id=f"ev-{number}", type=type_, camera_id="cam-junction-03",
                   camera_name="路口", zone_id="z", address="演示路3号", lat=31.2301, lon=121.4741, started_at=AT,
                   confirmed_at=AT, dwell_s=120, confidence=0.8, manifest_key="m", manifest_sha256="0" * 64,
                   evidence=[{"role": "closeup", "key": f"{number}/closeup.jpg", "sha256": "1" * 64}],
                   legal_basis={"name": {"zh": "占道经营"}}))


def platform_side_verify() -> Callable[[bytes, dict[str, str], bytes], bool]:
    doc = (Path(__file__).resolve().parents[1] / "docs" / "integration.md").read_text(encoding="utf-8")
    (snippet,) = [b for b in re.findall(r"```python\n(.*?)```", doc, re.S) if "def verify(" in b]
    scope: dict[str, Any] = {}
    exec(compile(snippet, "docs/integration.md", "exec"), scope)  # noqa: S102 - our own documentation
    return scope["verify"]


def write_config(tmp_path: Path, url: str, extra: str = "") -> Path:
    p = tmp_path / "nonsite.yaml"
    p.write_text(f"data_dir: data\nintegration:\n  platform:\n    enabled: true\n    url: {url}\n"
                 f"    timeout_s: 0.5\n{extra}", encoding="utf-8")
    return p


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NONSITE_PLATFORM_SECRET", "s3cret")
    monkeypatch.delenv("NONSITE_DATA_DIR", raising=False)


def test_approved_case_reaches_the_platform_signed(tmp_path: Path, env: None) -> None:
    db = open_db(f"sqlite:///{tmp_path / 'data' / 'cases.db'}")
    bus = EmbeddedBus(tmp_path / "data" / "bus")
    add_case(db, "NS-2026-000031")
    confirm(db, "NS-2026-000031", "op1")
    approve(db, "NS-2026-000031", "rev1")
    assert relay_outbox(bus, db) == 2  # confirmed, approved
    with receiving(lambda req, i: Reply(200)) as srv:
        cfg = load_config(write_config(tmp_path, srv.url + "/report"))
        store = open_store(cfg)
        conn = build_connector(cfg, store)
        consumer = bus.consumer(TOPIC_CASES, "nonsite-platform")
        batch = consumer.poll(timeout_s=0.1)
        assert relay_decisions(batch, db, conn, bus) == 1  # push_on: approved only
        assert relay_decisions(batch, db, conn, bus) == 0  # redelivered: same revision, nothing new
        assert [o.result for o in conn.deliver_due()] == ["delivered"]
        store.close()
    (req,) = srv.seen
    verify_signature(b"s3cret", req.headers["x-nonsite-timestamp"], req.headers["x-nonsite-signature"], req.body,
                     now=float(req.headers["x-nonsite-timestamp"]))
    verify = platform_side_verify()  # the snippet docs/integration.md gives the platform's developers
    assert verify(b"s3cret", req.headers, req.body)
    assert not verify(b"s3cret", req.headers, req.body + b" ") and not verify(b"other", req.headers, req.body)
    body = json.loads(req.body)
    assert body["externalCaseNo"] == "NS-2026-000031" and body["status"] == "approved"
    assert body["eventTypeCode"] == "0501" and body["images"] == []  # local store, no link_base_url: no links
    assert (tmp_path / "data" / "integration.db").is_file()


def test_relay_thread_and_poison_on_the_cases_topic(tmp_path: Path, env: None) -> None:
    db = open_db(f"sqlite:///{tmp_path / 'data' / 'cases.db'}")
    bus = EmbeddedBus(tmp_path / "data" / "bus")
    add_case(db, "NS-2026-000032")
    bus.publish(TOPIC_CASES, "x", b"not json")
    confirm(db, "NS-2026-000032", "op1")
    approve(db, "NS-2026-000032", "rev1")
    relay_outbox(bus, db)
    cfg = load_config(write_config(tmp_path, "http://127.0.0.1:9/report"))
    store = open_store(cfg)
    conn = build_connector(cfg, store)
    stop = threading.Event()
    t = threading.Thread(target=run_platform_relay, args=(bus, db, conn, stop), kwargs={"poll_timeout_s": 0.05})
    t.start()
    try:
        for _ in range(200):
            if bus.lag(TOPIC_CASES, "nonsite-platform") == 0:
                break
            stop.wait(0.02)
    finally:
        stop.set()
        t.join(5)
    assert not t.is_alive() and bus.lag(TOPIC_CASES, "nonsite-platform") == 0
    assert [d.case_number for d in store.deliveries("city", DeliveryState.PENDING)] == ["NS-2026-000032"]
    dead = bus.consumer(TOPIC_DEAD_LETTER, "t").poll(timeout_s=0.1)
    assert len(dead) == 1 and "not a case decision" in json.loads(dead[0].value)["reason"]
    store.close()


def test_new_drafts_become_notices_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case_db_url: str) -> None:
    monkeypatch.setenv("TEST_WECOM_URL", "http://127.0.0.1:9/cgi-bin/webhook/send?key=k")
    handoff_url = case_db_url  # the hand-off database on SQLite and on PostgreSQL
    db = open_db(f"sqlite:///{tmp_path / 'cases-sqlite.db'}")
    add_case(db, "NS-2026-000040")  # before the first round: history, not news
    cfg = NonsiteConfig.model_validate({"data_dir": str(tmp_path), "integration": {
        "platform": {"database_url": handoff_url},
        "notifications": {"enabled": True, "channels": [{"id": "w", "kind": "wecom", "url_env": "TEST_WECOM_URL"}]}}})
    store = open_store(cfg)
    notifier = Notifier(cfg.integration.notifications)
    assert notify_new_alerts(db, notifier, store) == 0
    add_case(db, "NS-2026-000041")
    add_case(db, "NS-2026-000042")
    confirm(db, "NS-2026-000042", "op1")  # triaged before the round: not a new alert any more
    assert notify_new_alerts(db, notifier, store) == 1
    assert notify_new_alerts(db, notifier, store) == 0
    pending = notifier.channels["w"].pending["new_alert"]
    assert [n.case_number for _, n in pending] == ["NS-2026-000041"]
    assert pending[0][1].summary == "占道经营 · 演示路3号"
    store.close()


def test_reminders_and_escalations_become_notices() -> None:
    due = Due(start=AT, at=datetime(2026, 1, 6, 2, 0, tzinfo=UTC))
    esc = ReminderNotice("k", "escalation", "NS-2026-000050", "rectify", due.at, 2, ("li.qiang",), since=due.at)
    rem = ReminderNotice("k2", "reminder", "NS-2026-000050", "rectify", due.at, 1, ("sun.hao",), since=AT)
    a, b = notice_from_reminder(esc, "流浪犬 · 围栏"), notice_from_reminder(rem, "流浪犬 · 围栏")
    assert (a.kind, a.detail, a.at) == ("overdue", "整改环节已超期（第2级督促）", due.at)
    assert (b.kind, b.detail) == ("reminder", "整改环节即将到期")


def test_the_config_lists_match_the_workflow() -> None:
    assert tuple(s.value for s in CaseStatus) == CASE_STATUSES
    assert set(WORKFLOW_ACTIONS) == {a.value for a in Action}
    assert set(STEP_NAMES) == set(STEPS)


def test_bad_integration_config_is_one_line_with_file_and_key(tmp_path: Path) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text("integration:\n  platform:\n    enabled: true\n    timeout: 3\n", encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_config(p)
    assert f"{p}:4: integration.platform.timeout: unknown key" in str(err.value)
    p.write_text("integration:\n  platform:\n    push_on: [aproved]\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bad.yaml:3: integration.platform.push_on: unknown case status 'aproved'"):
        load_config(p)


def test_admin_commands_list_and_requeue_dead_letters(tmp_path: Path, env: None,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    db = open_db(f"sqlite:///{tmp_path / 'cases.db'}")
    add_case(db, "NS-2026-000060")
    with db() as s:
        case = s.query(Case).one()
    with receiving(lambda req, i: Reply(422, b'{"msg":"address required"}')) as srv:
        path = write_config(tmp_path, srv.url)
        cfg = load_config(path)
        store = open_store(cfg)
        conn = build_connector(cfg, store)
        conn.enqueue(report_from_case(case), 1)
        assert [o.result for o in conn.deliver_due()] == ["dead"]
        store.close()
    assert main(["platform", "dead-letters", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "NS-2026-000060:1" in out and "status=422" in out and "address required" in out
    assert main(["platform", "requeue", "--config", str(path)]) == 2  # says what to name
    assert main(["platform", "requeue", "--config", str(path), "--all"]) == 0
    assert "1 report(s) requeued" in capsys.readouterr().out
    assert main(["platform", "status", "--config", str(path)]) == 0
    assert capsys.readouterr().out.strip() == "pending=1 delivered=0 dead=0"
    assert main(["platform", "check", "--config", str(path)]) == 0
    assert json.loads(capsys.readouterr().out)["eventTypeCode"] == "0505"


def test_the_loop_case_to_platform_and_its_status_change_back(tmp_path: Path, env: None,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """rectified case → report (push_on rectified) → the platform files it → it closes the case through a signed
    callback to an HTTP endpoint doing what the console route will → closed, audited as platform:city."""
    monkeypatch.setenv("NONSITE_PLATFORM_CALLBACK_SECRET", "cb-secret")
    db = open_db(f"sqlite:///{tmp_path / 'data' / 'cases.db'}")
    bus = EmbeddedBus(tmp_path / "data" / "bus")
    add_case(db, "NS-2026-000070")
    confirm(db, "NS-2026-000070", "op1")
    approve(db, "NS-2026-000070", "rev1")
    dispatch(db, "NS-2026-000070", "op1", assignee="一中队")
    rectify(db, "NS-2026-000070", "op1", note="摊位已撤离")
    relay_outbox(bus, db)
    with platform(b"s3cret", b"cb-secret") as sim:
        cfg = load_config(write_config(tmp_path, sim.url, "    push_on: [approved, rectified]\n"))
        store = open_store(cfg)
        conn = build_connector(cfg, store)
        relay_decisions(bus.consumer(TOPIC_CASES, "nonsite-platform").poll(timeout_s=0.1), db, conn, bus)
        assert [o.result for o in conn.deliver_due()] == ["delivered", "delivered"]
        assert sim.refused == [] and sorted(r["status"] for r in sim.cases.values()) == ["approved", "rectified"]

        def respond(req: Seen, i: int) -> Reply:  # what the console's callback route will do
            try:
                d = handle_callback(req.headers, req.body, cfg=cfg.integration.platform,
                                    secret=secret_from_env(cfg.integration.platform.callback_secret_env), store=store)
            except CallbackRejected as exc:
                return Reply(exc.status_code, json.dumps({"error": str(exc)}).encode())
            if d.duplicate:
                return Reply(200, b'{"duplicate":true}')
            if d.action:
                apply_action(db, d.case_number, d.action, d.actor, note=d.note)
            return Reply(200, b'{"ok":true}')

        with receiving(respond) as ours:
            callback = ours.url + "/api/platform/city/callback"
            assert sim.send_status(callback, "NS-2026-000070", "accepted", "CY-E1") == (200, {"ok": True})
            assert sim.send_status(callback, "NS-2026-000070", "closed", "CY-E2", "核查结案") == (200, {"ok": True})
            assert sim.send_status(callback, "NS-2026-000070", "closed", "CY-E2") == (200, {"duplicate": True})
            status, answer = sim.send_status(callback, "NS-2026-000070", "reopened", "CY-E3")
            assert status == 422 and "unknown platform status" in answer["error"]
        store.close()
    with db() as s:
        case = s.query(Case).filter_by(number="NS-2026-000070").one()
        last = case.audit[-1]
    assert case.status is CaseStatus.CLOSED
    assert (last.actor, last.action, last.detail["note"]) == ("platform:city", "close", "[city] 核查结案")
