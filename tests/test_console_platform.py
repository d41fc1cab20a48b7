"""The city platform hand-off wired into the console: the platform's signed status changes through the real
route (over HTTP, from the platform simulator), the relay and delivery worker the console process starts, and
the admins' dead-letter page and API."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from platform_simulator import PlatformSimulator, platform
from sqlalchemy import select

from nonsite.bus.embedded import EmbeddedBus
from nonsite.cases import Case, CaseStatus
from nonsite.cases.db import AuditEntry
from nonsite.cases.outbox import relay_outbox
from nonsite.integration.hub import PlatformHub
from tests.console_support import Env, Served, csrf_of, login
from tests.platform_support import CALLBACK_SECRET, REPORT_SECRET, platform_env, platform_hub


@pytest.fixture
def env(tmp_path: Path, media_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Env:
    return platform_env(tmp_path, media_dir, monkeypatch)


@pytest.fixture
def sim() -> Iterator[PlatformSimulator]:
    with platform(REPORT_SECRET, CALLBACK_SECRET) as s:
        yield s


def _hub(env: Env, sim: PlatformSimulator, extra: str = "") -> PlatformHub:
    return platform_hub(env, sim, "    push_on: [approved]\n" + extra)


def _work(env: Env, number: str, until: str) -> None:
    """Take a case through the workflow (API tokens of op and rev) up to ``until``."""
    app, _ = env.make_app()
    op = TestClient(app, headers={"Authorization": f"Bearer {env.users.issue_token('op')}"})
    rev = TestClient(app, headers={"Authorization": f"Bearer {env.users.issue_token('rev')}"})
    steps = [(op, "confirm", {}), (rev, "approve", {"decision": "warning"}),
             (op, "dispatch", {"team": "enforcement_team"})]
    for client, action, body in steps:
        assert client.post(f"/api/cases/{number}/{action}", json=body).status_code == 200, action
        if action == until:
            return
    r = op.post(f"/api/cases/{number}/feedback", data={"note": "摊位已撤离"})
    assert r.status_code == 200, r.text


def _case(env: Env, number: str) -> tuple[Case, list[AuditEntry]]:
    _, sf = env.make_app()
    with sf() as s:
        case = s.scalar(select(Case).where(Case.number == number))
        assert case is not None
        trail = list(s.scalars(select(AuditEntry).where(AuditEntry.case_id == case.id).order_by(AuditEntry.id)))
    return case, trail


def test_the_platforms_status_changes_through_the_console_route(env: Env, sim: PlatformSimulator) -> None:
    hub = _hub(env, sim)
    rectified, draft = env.cases["street_vending"], env.cases["stray_dog"]
    _work(env, rectified, "rectify")
    app, _ = env.make_app(platform=hub)
    try:
        with Served(app) as served:
            url = served.url + "/api/platform/city/callback"
            assert sim.send_status(url, rectified, "accepted", "CY-1") == (200, {"ok": True, "applied": None})
            assert sim.send_status(url, rectified, "closed", "CY-2", "核查结案") == (
                200, {"ok": True, "applied": "close"})
            assert sim.send_status(url, rectified, "closed", "CY-2") == (200, {"duplicate": True})
            status, answer = sim.send_status(url, rectified, "reopened", "CY-3")
            assert status == 422 and "unknown platform status" in answer["error"]["message"]
            # a close that does not fit the case's status is noted on the case, not applied, not retried
            status, answer = sim.send_status(url, draft, "closed", "CY-4")
            assert status == 200 and answer["applied"] is None and "cannot" in answer["noted"]
            status, _ = sim.send_status(url, "NS-2099-000001", "closed", "CY-5")
            assert status == 404
            status, _ = sim.send_status(served.url + "/api/platform/other/callback", rectified, "closed", "CY-6")
            assert status == 404
            # signed with another secret: refused before anything is read
            forged = PlatformSimulator(REPORT_SECRET, b"not-the-secret")
            status, answer = forged.send_status(url, draft, "closed", "CY-7")
            assert status == 401 and "signature" in answer["error"]["message"]
    finally:
        hub.close()
    case, trail = _case(env, rectified)
    assert case.status is CaseStatus.CLOSED
    platform_entries = [(e.actor, e.action, e.detail.get("platform_status")) for e in trail
                        if e.actor == "platform:city"]
    assert platform_entries == [("platform:city", "platform_status", "accepted"),
                                ("platform:city", "close", None)]
    assert trail[-1].detail["note"] == "[city] 核查结案"
    case, trail = _case(env, draft)
    assert case.status is CaseStatus.DRAFT
    assert trail[-1].action == "platform_status" and "not_applied" in trail[-1].detail


def test_a_bad_callback_body_is_refused(env: Env, sim: PlatformSimulator) -> None:
    hub = _hub(env, sim)
    app, _ = env.make_app(platform=hub)
    client = TestClient(app)
    try:
        r = client.post("/api/platform/city/callback", content=b"x" * 70_000)
        assert r.status_code == 413
        r = client.post("/api/platform/city/callback", json={"case_number": env.cases["stray_dog"]})
        assert r.status_code == 401  # unsigned
    finally:
        hub.close()
    plain, _ = env.make_app()
    assert TestClient(plain).post("/api/platform/city/callback", json={}).status_code == 404


def test_the_console_process_relays_decisions_and_delivers_them(env: Env, sim: PlatformSimulator) -> None:
    hub = _hub(env, sim)
    bus = EmbeddedBus(env.root / "bus" / "bus.sqlite")
    hub.start(bus, interval_s=0.1)
    try:
        number = env.cases["street_vending"]
        _work(env, number, "approve")
        _, sf = env.make_app()
        relay_outbox(bus, sf)  # the workflow's decisions onto nonsite.cases (the node's relay thread does this)
        deadline = time.monotonic() + 60
        while not sim.cases and time.monotonic() < deadline:
            time.sleep(0.1)
        assert hub.running
    finally:
        hub.close()
        bus.close()
    [(key, report)] = sim.cases.items()
    assert key.startswith(f"{number}:") and report["externalCaseNo"] == number and report["status"] == "approved"
    assert sim.refused == []


def test_dead_letters_for_admins(env: Env, sim: PlatformSimulator) -> None:
    hub = _hub(env, sim, "    event_codes: {sidewalk_parking: '0505'}\n")
    number = env.cases["street_vending"]  # no event code: refused at once, a dead letter with the reason
    case, _ = _case(env, number)
    assert hub.connector.enqueue(case, 1)
    assert [o.result for o in hub.connector.deliver_due()] == ["dead"]
    try:
        app, _ = env.make_app(platform=hub)
        adm = TestClient(app)
        assert login(adm, "adm").status_code == 303
        page = adm.get("/admin/platform")
        assert page.status_code == 200 and 'id="nav-platform"' in page.text
        assert f"{number}:1" in page.text and "event" in page.text
        d_id = re.search(r'name="ids" value="(\d+)"', page.text)
        assert d_id
        r = adm.post("/admin/platform/requeue", data={"csrf": csrf_of(adm, "/admin/platform"), "ids": d_id.group(1)},
                     follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"].endswith("requeued=1")
        assert hub.connector.counts()["pending"] == 1
        assert [o.result for o in hub.connector.deliver_due()] == ["dead"]

        op = TestClient(app)
        assert login(op, "op").status_code == 303
        assert op.get("/admin/platform").status_code == 403
        assert 'id="nav-platform"' not in op.get("/").text
        token = env.users.issue_token("adm", ("cases:read",))
        r = TestClient(app, headers={"Authorization": f"Bearer {token}"}).get("/api/platform/dead-letters")
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden_scope"
        assert TestClient(app, headers={"Authorization": f"Bearer {token}"}).get("/admin/platform").status_code == 403
        api = TestClient(app, headers={"Authorization": f"Bearer {env.users.issue_token('adm', ('platform:admin',))}"})
        body = api.get("/api/platform/dead-letters").json()
        assert body["counts"]["dead"] == 1 and body["dead_letters"][0]["key"] == f"{number}:1"
        assert "event" in body["dead_letters"][0]["error"]
        assert api.post("/api/platform/requeue", json={}).status_code == 422
        assert api.post("/api/platform/requeue", json={"all": True}).json() == {"requeued": 1}
        rev = TestClient(app, headers={"Authorization": f"Bearer {env.users.issue_token('rev', ('platform:admin',))}"})
        assert rev.post("/api/platform/requeue", json={"all": True}).status_code == 403
    finally:
        hub.close()
    plain, _ = env.make_app()
    assert TestClient(plain, headers={"Authorization": f"Bearer {env.users.issue_token('adm')}"}).get(
        "/api/platform/dead-letters").status_code == 404


def test_the_app_starts_and_stops_the_hand_off_with_the_console(env: Env, sim: PlatformSimulator,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from nonsite.app import console_app, stop_platform
    from nonsite.cases.legal_basis import load_catalogue
    from nonsite.config import ConfigError, load_config

    _hub(env, sim).close()  # writes the config
    cfg = load_config(env.root / "nonsite.yaml")
    _, sf = env.make_app()
    bus = EmbeddedBus(env.root / "bus" / "bus.sqlite")
    try:
        app, _ = console_app(cfg, sf, env.store, env.public_key, load_catalogue(), bus=bus)
        hub = app.state.console.platform
        assert hub is not None and hub.running and hub.name == "city"
        stop_platform(app)
        assert not hub.running
        monkeypatch.delenv("NONSITE_PLATFORM_CALLBACK_SECRET")
        with pytest.raises(ConfigError, match="NONSITE_PLATFORM_CALLBACK_SECRET is not set"):
            console_app(cfg, sf, env.store, env.public_key, load_catalogue(), bus=bus)
        cfg.integration.platform.enabled = False
        app, _ = console_app(cfg, sf, env.store, env.public_key, load_catalogue(), bus=bus)
        assert app.state.console.platform is None
    finally:
        bus.close()
