"""The notifications in the running process (issue 15): the console app (``app.console_app``, what ``nonsite run``
and the distributed console role serve) watches the case database and sends new alerts, 督办 and overdue cases to
a WeCom and a signed DingTalk robot — here one real local HTTP receiver that checks DingTalk's signature and
WeCom's payload as the services do. A burst of drafts is one message; a 督办 issued by a supervisor through the
console names the case; nothing is sent twice after a restart (the cursors); no key or secret reaches the logs."""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from console_support import login
from edge_helpers import wait_until
from fastapi.testclient import TestClient
from http_receiver import Receiver, Reply, Seen, receiving
from sqlalchemy.orm import Session, sessionmaker
from test_bureau_wiring import ORG_FILE, draft
from test_integration_notify import DING_SECRET, DING_TOKEN, WECOM_KEY, dingtalk_ok, wecom_ok

from nonsite.app import console_app, stop_integration
from nonsite.cases import open_db
from nonsite.cases.db import utcnow
from nonsite.cases.legal_basis import load_catalogue
from nonsite.cases.organisation import Organisation, load_organisation
from nonsite.cases.users import create_user
from nonsite.config import NonsiteConfig
from nonsite.config.loader import ConfigError
from nonsite.evidence import LocalStore

WECOM_PATH, DING_PATH = "/cgi-bin/webhook/send", "/robot/send"


class Robots:
    """WeCom and DingTalk as one receiver: the services' checks; the first DingTalk request answers 500."""

    def __init__(self) -> None:
        self.refusals: list[str] = []

    def __call__(self, req: Seen, i: int) -> Reply:
        why = dingtalk_ok(req, time.time() * 1000) if req.path == DING_PATH else wecom_ok(req)
        if why:
            self.refusals.append(f"{req.path}: {why}")
            return Reply(200, json.dumps({"errcode": 310000, "errmsg": why}).encode())
        if req.path == DING_PATH and not any(r.path == DING_PATH for r in self.srv.seen[:i]):
            return Reply(500, b"busy")  # one failure: the retry goes through, the warning names the masked URL
        return Reply(200, b'{"errcode":0,"errmsg":"ok"}')

    srv: Receiver


@pytest.fixture
def robots(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Robots, Receiver]]:
    r = Robots()
    with receiving(r) as srv:
        r.srv = srv
        monkeypatch.setenv("TEST_WECOM_URL", f"{srv.url}{WECOM_PATH}?key={WECOM_KEY}")
        monkeypatch.setenv("TEST_DING_URL", f"{srv.url}{DING_PATH}?access_token={DING_TOKEN}")
        monkeypatch.setenv("TEST_DING_SECRET", DING_SECRET)
        yield r, srv


def config(tmp_path: Path, **notifications: Any) -> NonsiteConfig:
    n: dict[str, Any] = {
        # five notices go out at once; fewer wait for the window (here: until the stop flushes them)
        "enabled": True, "window_s": 3600, "max_items": 5, "poll_s": 0.2, "backoff_base_s": 0.1,
        "backoff_max_s": 0.5, "timeout_s": 2,
        "channels": [
            {"id": "duty-wecom", "kind": "wecom", "url_env": "TEST_WECOM_URL",
             "console_url": "https://console.example"},
            {"id": "leaders-ding", "kind": "dingtalk", "url_env": "TEST_DING_URL", "secret_env": "TEST_DING_SECRET"},
        ],
        **notifications,
    }
    return NonsiteConfig.model_validate({
        "data_dir": str(tmp_path / "data"),
        "cases": {"organisation": str(ORG_FILE), "reminders": True},
        "integration": {"notifications": n}})


@pytest.fixture
def db(tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    sf = open_db(f"sqlite:///{tmp_path / 'cases.db'}")
    yield sf
    sf.kw["bind"].dispose()


def delivered(srv: Receiver, path: str) -> list[str]:
    """The texts the robot accepted (not the one it answered 500 to)."""
    seen = [r for r in srv.seen if r.path == path]
    first_ding_failed = path == DING_PATH
    msgs = []
    for i, r in enumerate(seen):
        if first_ding_failed and i == 0:
            continue
        m = json.loads(r.body)["markdown"]
        msgs.append(m.get("content") or m["text"])
    return msgs


def start(tmp_path: Path, db: sessionmaker[Session]) -> Any:
    app, _ = console_app(config(tmp_path), db, LocalStore(tmp_path / "evidence"), None, load_catalogue())
    service = app.state.notifications
    assert service is not None and service.running
    wait_until(lambda: service.rounds >= 1, 30, "the notifications' first round")
    return app


def test_new_alerts_supervision_and_overdue_reach_the_robots_once(
        tmp_path: Path, db: sessionmaker[Session], robots: tuple[Robots, Receiver],
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    r, srv = robots
    org: Organisation = load_organisation(ORG_FILE)
    now = utcnow()
    history = draft(db, org, "cam-carpark-01", at=now - timedelta(hours=2))  # before the start: overdue, not news
    create_user(db, "zhou.min", "pw-zhou.min-123456", "supervisor")
    app = start(tmp_path, db)
    service = app.state.notifications
    burst = [draft(db, org, "cam-junction-03", at=now).number for _ in range(5)]
    wait_until(lambda: len(delivered(srv, WECOM_PATH)) >= 1 and len(delivered(srv, DING_PATH)) >= 1, 60,
               "the burst's message on both robots (DingTalk after one retry)")
    for path in (WECOM_PATH, DING_PATH):
        [message] = delivered(srv, path)
        assert "新告警 5 条" in message, message
        assert all(n in message for n in burst) and history.number not in message
    assert "https://console.example/cases/" + burst[0] in delivered(srv, WECOM_PATH)[0]

    # A supervisor issues a 督办 on the case page; the overdue case is escalated by the reminder job.
    sup = TestClient(app)
    assert login(sup, "zhou.min", "pw-zhou.min-123456").status_code == 303
    m = re.search(r'name="csrf" value="([^"]+)"', sup.get(f"/cases/{burst[2]}").text)
    assert m
    res = sup.post(f"/cases/{burst[2]}/supervise", data={"csrf": m.group(1), "instruction": "今日内清理完毕"},
                   follow_redirects=False)
    assert res.status_code == 303, res.text[:500]
    app.state.reminders.run_once()
    wait_until(lambda: service.notifier.waiting() >= 4, 60, "the 督办 and the escalation queued on both channels")
    stop_integration(app)  # the watch thread ends; what waits for its window is flushed
    assert not service.running and app.state.notifications is None
    for path in (WECOM_PATH, DING_PATH):
        sent = delivered(srv, path)
        assert len(sent) == 3, sent
        [supervision] = [m for m in sent if "督办" in m]
        assert burst[2] in supervision and "今日内清理完毕" in supervision and "zhou.min" in supervision
        assert not any(n in supervision for n in burst if n != burst[2])
        [overdue] = [m for m in sent if "案件超期" in m]
        assert history.number in overdue and "研判确认环节已超期" in overdue
    assert r.refusals == []

    # Restarted: nothing is sent again (the cursors and the reminders' own record); a new draft is.
    before = len(srv.seen)
    app = start(tmp_path, db)
    service = app.state.notifications
    app.state.reminders.run_once()
    wait_until(lambda: service.rounds >= 3, 30, "three rounds after the restart")
    assert service.notifier.waiting() == 0 and len(srv.seen) == before
    fresh = draft(db, org, "cam-junction-03", at=utcnow()).number
    wait_until(lambda: service.notifier.waiting() >= 2, 60, "the new draft queued on both channels")
    stop_integration(app)
    for path in (WECOM_PATH, DING_PATH):
        last = [r for r in srv.seen[before:] if r.path == path]
        assert len(last) == 1
        text = json.loads(last[0].body)["markdown"]
        text = text.get("content") or text["text"]
        assert "新告警 1 条" in text and fresh in text and not any(n in text for n in burst)

    logged = caplog.text + "".join(str(rec.args) for rec in caplog.records)
    assert "notify duty-wecom" in logged and "retrying" in logged  # the notifier did log, and the failure too
    for secret in (WECOM_KEY, DING_TOKEN, DING_SECRET):
        assert secret not in logged


def test_off_or_misconfigured_notifications(tmp_path: Path, db: sessionmaker[Session],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    store = LocalStore(tmp_path / "evidence")
    app, _ = console_app(config(tmp_path, enabled=False), db, store, None, load_catalogue())
    assert app.state.notifications is None and app.state.reminders.send is None
    stop_integration(app)
    monkeypatch.delenv("TEST_DING_SECRET", raising=False)
    monkeypatch.setenv("TEST_WECOM_URL", "http://127.0.0.1:9/cgi-bin/webhook/send?key=k")
    monkeypatch.setenv("TEST_DING_URL", "http://127.0.0.1:9/robot/send?access_token=t")
    with pytest.raises(ConfigError, match="TEST_DING_SECRET"):  # one line naming the variable, at the start
        console_app(config(tmp_path), db, store, None, load_catalogue())


def test_poll_interval_is_configured_with_bounds() -> None:
    from pydantic import ValidationError

    from nonsite.config.integration import NotificationsConfig

    assert NotificationsConfig().poll_s == 5.0
    with pytest.raises(ValidationError):
        NotificationsConfig(poll_s=0)
    with pytest.raises(ValidationError):
        NotificationsConfig.model_validate({"poll_interval": 5})  # extra="forbid"


def test_the_served_console_runs_the_reminder_job_and_stops_it(tmp_path: Path, db: sessionmaker[Session],
                                                               robots: tuple[Robots, Receiver]) -> None:
    """What ``nonsite run`` and the console role serve: the app's lifespan starts the reminder job (its overdue
    notices go to the channels) and the server's stop ends it."""
    from nonsite.app import ConsoleServer

    org = load_organisation(ORG_FILE)
    overdue = draft(db, org, "cam-carpark-01", at=utcnow() - timedelta(hours=2))
    app, _ = console_app(config(tmp_path), db, LocalStore(tmp_path / "evidence"), None, load_catalogue())
    server = ConsoleServer(app, "127.0.0.1", 0)
    try:
        server.start(timeout_s=60)
        job = app.state.reminders
        wait_until(lambda: job.rounds >= 1 and job._thread is not None, 30, "the reminder job's first round")
        wait_until(lambda: app.state.notifications.notifier.waiting() >= 2, 30, "the escalation queued")
    finally:
        server.stop()
        stop_integration(app)
    assert app.state.reminders._thread is None
    _, srv = robots
    assert any(overdue.number in m and "案件超期" in m for m in delivered(srv, WECOM_PATH))


def test_supervision_orders_become_notices_once_on_both_databases(tmp_path: Path, case_db_url: str,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """``notify_new_supervisions`` alone: the case database and the hand-off database on SQLite and on
    PostgreSQL; history before the first round is not news; each order once; the deadline in city time."""
    from datetime import UTC, datetime

    from nonsite.cases.bureau import supervise
    from nonsite.integration.notify import Notifier
    from nonsite.integration.relay import notify_new_supervisions, open_store

    monkeypatch.setenv("TEST_WECOM_URL", "http://127.0.0.1:9/cgi-bin/webhook/send?key=k")
    sf = open_db(case_db_url)
    org = load_organisation(ORG_FILE)
    now = utcnow()
    old, new = (draft(sf, org, "cam-carpark-01", at=now - timedelta(minutes=5)) for _ in range(2))
    supervise(sf, old.number, "zhou.min", "history", role="supervisor")
    cfg = NonsiteConfig.model_validate({"data_dir": str(tmp_path), "integration": {
        "platform": {"database_url": case_db_url},
        "notifications": {"enabled": True, "channels": [{"id": "w", "kind": "wecom", "url_env": "TEST_WECOM_URL"}]}}})
    store = open_store(cfg)
    notifier = Notifier(cfg.integration.notifications)
    try:
        assert notify_new_supervisions(sf, notifier, store) == 0  # the first round starts at the newest order
        deadline = datetime(2099, 1, 2, 8, 30, tzinfo=UTC)  # 16:30 in Shanghai
        supervise(sf, new.number, "zhou.min", "限时清理", new_deadline=deadline, role="supervisor")
        assert notify_new_supervisions(sf, notifier, store) == 1
        assert notify_new_supervisions(sf, notifier, store) == 0
        [(_, notice)] = notifier.channels["w"].pending["supervision"]
        assert (notice.kind, notice.case_number) == ("supervision", new.number)
        assert notice.detail == "限时清理，限01-02 16:30前（zhou.min）"
    finally:
        store.close()
        sf.kw["bind"].dispose()


def _clone(case: Any, suffix: str, **fields: Any) -> Any:
    """A new draft with ``case``'s columns (its own number and event id): what a drafter inserts."""
    from nonsite.cases.db import Case

    values = {c.key: getattr(case, c.key) for c in Case.__table__.columns if c.key != "id"}
    values.update(number=f"{case.number}-{suffix}", event_id=f"{case.event_id}-{suffix}", **fields)
    return Case(**values)


def test_a_row_committed_after_a_higher_id_is_notified_once(tmp_path: Path, case_db_url: str,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Two drafters: the one holding id N commits after the one holding N+1, and a round runs in between. On
    PostgreSQL two open transactions take their ids from the sequence; on SQLite (one writer at a time) the ids are
    given in that order. The late draft and the late 督办 are each sent once; a gap that never fills (a rolled-back
    insert) is forgotten after its time."""
    from sqlalchemy import func, select

    from nonsite.cases.db import Case, Supervision
    from nonsite.integration.notify import Notifier
    from nonsite.integration.relay import cursor_gaps, notify_new_alerts, notify_new_supervisions, open_store

    monkeypatch.setenv("TEST_WECOM_URL", "http://127.0.0.1:9/cgi-bin/webhook/send?key=k")
    sf = open_db(case_db_url)
    postgres = sf.kw["bind"].dialect.name == "postgresql"
    org = load_organisation(ORG_FILE)
    template = draft(sf, org, "cam-carpark-01", at=utcnow())
    cfg = NonsiteConfig.model_validate({"data_dir": str(tmp_path), "integration": {
        "platform": {"database_url": case_db_url},
        "notifications": {"enabled": True, "channels": [{"id": "w", "kind": "wecom", "url_env": "TEST_WECOM_URL"}]}}})
    store = open_store(cfg)
    notifier = Notifier(cfg.integration.notifications)
    t = 1_000_000.0

    def rounds(at: float) -> tuple[int, int]:
        return (notify_new_alerts(sf, notifier, store, now=at),
                notify_new_supervisions(sf, notifier, store, now=at))

    def order(case_id: int, text: str, id_: int | None = None) -> Supervision:
        return Supervision(id=id_, case_id=case_id, instruction=text, issued_by="zhou.min", issued_at=utcnow())

    def gaps() -> list[tuple[str, int]]:
        with store.engine.connect() as conn:
            return sorted((r.name, r.row_id) for r in conn.execute(select(cursor_gaps)))

    try:
        assert rounds(t) == (0, 0)  # the first round: the cursors start at the newest rows
        late, early = Session(sf.kw["bind"]), Session(sf.kw["bind"])
        if postgres:  # the late drafter takes ids N first, then the early one takes N+1 and commits
            late.add(late_case := _clone(template, "late"))
            late.flush()
            late.add(late_order := order(template.id, "late order"))
            late.flush()
            early.add(early_case := _clone(template, "early"))
            early.flush()
            early.add(early_order := order(template.id, "early order"))
            early.flush()
        else:
            with sf() as s:
                top_order = s.scalar(select(func.max(Supervision.id))) or 0
            late_case, late_order = _clone(template, "late", id=template.id + 1), order(template.id, "late order",
                                                                                       top_order + 1)
            early_case, early_order = _clone(template, "early", id=template.id + 2), order(template.id, "early order",
                                                                                         top_order + 2)
            early.add_all([early_case, early_order])
            early.flush()
        assert (late_case.id, late_order.id) == (early_case.id - 1, early_order.id - 1)
        early.commit()
        assert rounds(t + 5) == (1, 1)  # N+1 is read; N is not committed yet
        assert gaps() == [("new_alerts", late_case.id), ("supervisions", late_order.id)]
        if not postgres:
            late.add_all([late_case, late_order])
        late.commit()
        assert rounds(t + 10) == (1, 1)  # N, committed late, is read through the gap
        assert rounds(t + 15) == (0, 0) and gaps() == []
        sent = {kind: [n.case_number if kind == "new_alert" else n.detail for _, n in items]
                for kind, items in notifier.channels["w"].pending.items()}
        assert sent == {"new_alert": [early_case.number, late_case.number],
                        "supervision": ["early order（zhou.min）", "late order（zhou.min）"]}
        late.close()
        early.close()

        # An id skipped for good (a rolled-back insert on PostgreSQL, a gap left in the ids on SQLite).
        with Session(sf.kw["bind"]) as lost:
            if postgres:
                lost.add(_clone(template, "lost"))
                lost.flush()
                lost.rollback()
            with sf() as s:
                next_id = int(s.scalar(select(func.max(Case.id))) or 0) + (1 if postgres else 2)
            lost.add(_clone(template, "after", **({} if postgres else {"id": next_id})))
            lost.commit()
        assert rounds(t + 20) == (1, 0) and [name for name, _ in gaps()] == ["new_alerts"]
        assert rounds(t + 20 + 3599) == (0, 0) and len(gaps()) == 1  # still watched within the hour
        assert rounds(t + 20 + 3601) == (0, 0) and gaps() == []  # then forgotten
        assert [n.case_number for _, n in notifier.channels["w"].pending["new_alert"]][-1] == template.number + "-after"
    finally:
        store.close()
        sf.kw["bind"].dispose()


SMS_AUTH = "Bearer sms-gateway-credential-7f3a"


def test_admins_send_a_test_message_to_the_channels_from_the_console(
        tmp_path: Path, db: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """/admin/platform lists the channels (kind, masked URL, notices, counts, last error, last test) and
    POST /admin/notifications/test sends a 连通测试 through the running notifier: to every channel, or one. Only an
    admin's browser session with the form's CSRF token may; the robots' answers are shown as text, secrets
    never."""
    from nonsite.cases.users import create_token

    caplog.set_level(logging.INFO)
    ding_answers = [Reply(400, b'{"errmsg": "<script>alert(1)</script> token ' + DING_TOKEN.encode() + b'"}')]

    def respond(req: Seen, i: int) -> Reply:
        if req.path == DING_PATH:
            assert dingtalk_ok(req, time.time() * 1000) is None
            return ding_answers.pop(0) if ding_answers else Reply(200, b'{"errcode":0,"errmsg":"ok"}')
        if req.path == WECOM_PATH:
            assert wecom_ok(req) is None
            return Reply(200, b'{"errcode":0,"errmsg":"ok"}')
        assert req.headers["authorization"] == SMS_AUTH
        return Reply(200, b'{"code":0}')

    with receiving(respond) as srv:
        monkeypatch.setenv("TEST_WECOM_URL", f"{srv.url}{WECOM_PATH}?key={WECOM_KEY}")
        monkeypatch.setenv("TEST_DING_URL", f"{srv.url}{DING_PATH}?access_token={DING_TOKEN}")
        monkeypatch.setenv("TEST_DING_SECRET", DING_SECRET)
        monkeypatch.setenv("TEST_SMS_URL", f"{srv.url}/sms/send")
        monkeypatch.setenv("TEST_SMS_AUTH", SMS_AUTH)
        cfg = config(tmp_path, channels=[
            {"id": "duty-wecom", "kind": "wecom", "url_env": "TEST_WECOM_URL", "events": ["new_alert"]},
            {"id": "leaders-ding", "kind": "dingtalk", "url_env": "TEST_DING_URL", "secret_env": "TEST_DING_SECRET",
             "events": ["supervision", "overdue"]},
            {"id": "sms-gw", "kind": "sms", "url_env": "TEST_SMS_URL", "auth_env": "TEST_SMS_AUTH",
             "phones": ["13800000000"]}])
        app, password = console_app(cfg, db, LocalStore(tmp_path / "evidence"), None, load_catalogue())
        try:
            assert password
            create_user(db, "zhou.min", "pw-zhou.min-123456", "supervisor")
            token, _ = create_token(db, "adm-all", role="admin", owner="admin",
                                    scopes=("cases:read", "platform:admin"))
            adm, sup = TestClient(app), TestClient(app)
            assert login(adm, "admin", password).status_code == 303
            assert login(sup, "zhou.min", "pw-zhou.min-123456").status_code == 303
            page = adm.get("/admin/platform")
            assert page.status_code == 200 and 'id="nav-platform"' in page.text  # the menu leads here
            csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
            assert csrf
            rows = {cid: row(page.text, cid) for cid in ("duty-wecom", "leaders-ding", "sms-gw")}
            assert "key=***" in rows["duty-wecom"] and "access_token=***" in rows["leaders-ding"]
            assert "督办" in rows["leaders-ding"] and "案件超期" in rows["leaders-ding"]
            assert "督办" not in rows["duty-wecom"] and "新告警" in rows["duty-wecom"]
            assert "短信网关" in rows["sms-gw"] and "/sms/send" in rows["sms-gw"]

            # The refused: a supervisor, an admin's API token, an admin's form without its CSRF token.
            data = {"csrf": csrf.group(1)}
            assert sup.get("/admin/platform").status_code == 403
            assert sup.post("/admin/notifications/test", data={"csrf": re.search(
                r'name="csrf" value="([^"]+)"', sup.get("/").text).group(1)},  # type: ignore[union-attr]
                follow_redirects=False).status_code == 403
            bearer = TestClient(app, headers={"Authorization": f"Bearer {token}"})
            assert bearer.post("/admin/notifications/test", follow_redirects=False).status_code == 403
            assert adm.post("/admin/notifications/test", data={}, follow_redirects=False).status_code == 403
            assert adm.post("/admin/notifications/test", data={**data, "channel": "nope"},
                            follow_redirects=False).status_code == 404
            assert srv.seen == []

            res = adm.post("/admin/notifications/test", data=data, follow_redirects=False)
            assert res.status_code == 303 and res.headers["location"].endswith("/admin/platform?tested=3#notifications")
            assert sorted(r.path for r in srv.seen) == sorted([WECOM_PATH, DING_PATH, "/sms/send"])
            wecom_text = json.loads(next(r for r in srv.seen if r.path == WECOM_PATH).body)["markdown"]["content"]
            assert "连通测试" in wecom_text and "admin" in wecom_text
            page = adm.get("/admin/platform?tested=3").text
            assert 'id="tested"' in page
            rows = {cid: row(page, cid) for cid in ("duty-wecom", "leaders-ding", "sms-gw")}
            assert "测试消息已送达" in rows["duty-wecom"] and "测试消息已送达" in rows["sms-gw"]
            assert cell(rows["duty-wecom"], "sent") == "1" and cell(rows["duty-wecom"], "failed") == "0"
            ding = rows["leaders-ding"]
            assert "测试失败" in ding and "answered 400" in ding and cell(ding, "sent") == "0"
            assert cell(ding, "failed") == "1" and "answered 400" in ding.split('class="last-error"')[1]
            assert "&lt;script&gt;alert(1)&lt;/script&gt;" in ding and "<script>alert" not in page
            for secret in (WECOM_KEY, DING_TOKEN, DING_SECRET, SMS_AUTH, "sms-gateway-credential"):
                assert secret not in page

            # One channel again: only it is sent to; now it answers.
            before = len(srv.seen)
            res = adm.post("/admin/notifications/test", data={**data, "channel": "leaders-ding"},
                           follow_redirects=False)
            assert res.status_code == 303 and "tested=1" in res.headers["location"]
            assert [r.path for r in srv.seen[before:]] == [DING_PATH]
            ding = row(adm.get("/admin/platform").text, "leaders-ding")
            assert "测试消息已送达" in ding and cell(ding, "sent") == "1" and cell(ding, "failed") == "1"
            assert "answered 400" in ding.split('class="last-error"')[1]  # the last error stays shown
        finally:
            stop_integration(app)
    logged = caplog.text + "".join(str(rec.args) for rec in caplog.records)
    assert "admin sent a test message" in logged
    for secret in (WECOM_KEY, DING_TOKEN, DING_SECRET, SMS_AUTH):
        assert secret not in logged


def row(page: str, channel: str) -> str:
    """The table row of one channel on /admin/platform."""
    m = re.search(rf'<tr id="channel-{re.escape(channel)}">(.*?)</tr>', page, re.S)
    assert m, f"no row for channel {channel}"
    return m.group(1)


def cell(row_html: str, name: str) -> str:
    m = re.search(rf'<td class="{name}">([^<]*)</td>', row_html)
    assert m, f"no {name} cell"
    return m.group(1).strip()
