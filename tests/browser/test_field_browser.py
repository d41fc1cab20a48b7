"""The field officers' app on a phone: Debian's headless Chromium in Playwright's mobile emulation (Pixel 7:
viewport, touch, mobile user agent) with the geolocation permission and a set position, against the real
console under uvicorn.

A field officer logs in on /m/, sees the 督办 task pinned first, opens a task, checks in (the phone's position
goes to the server), loses the network, attaches before/after photos and submits (queued on the phone, the
server has nothing), comes back online and sees it delivered and the case rectified; the server holds one
rectify entry with the two photos' hashes. Screenshots under NONSITE_SCREENSHOT_DIR (or the test's tmp dir).
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from console_support import T0, Env, Served, jpeg_of, seed
from playwright import sync_api
from sqlalchemy import select

from nonsite.cases import AuditEntry, Case, open_db
from nonsite.cases.audit import verify_chain
from nonsite.cases.bureau import supervise
from nonsite.cases.field import distance_m
from nonsite.cases.organisation import load_organisation
from nonsite.cases.workflow import apply_action

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("NONSITE_CHROMIUM", "/usr/bin/chromium")
SPECS = [
    ("older", "sidewalk_parking", T0 - timedelta(hours=2), "cam-carpark-01", "停车场入口", "z-1", "人行道", "沪A12345"),
    ("newer", "street_vending", T0 - timedelta(hours=1), "cam-carpark-01", "停车场入口", "z-1", "人行道", None),
]
PHONE_AT = {"latitude": 31.2398, "longitude": 121.4999, "accuracy": 8}  # ~15 m from the camera (31.2397, 121.4998)
OFFICER, PASSWORD = "sun.hao", "field-pass-5521"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, media_dir: Path) -> Iterator[tuple[Env, str]]:
    root = tmp_path_factory.mktemp("field-browser")
    org = load_organisation(ROOT / "examples" / "organisation.yaml")
    env = seed(root, media_dir, SPECS, organisation=org)  # both routed to 演示中队第一班组 (sun.hao's group)
    env.users.add(OFFICER, PASSWORD, "field_officer", "孙浩")
    sf = open_db(env.db_url)
    for key in ("older", "newer"):
        for action, actor, role in (("confirm", "op", "operator"), ("approve", "rev", "reviewer"),
                                    ("dispatch", "op", "operator")):
            apply_action(sf, env.cases[key], action, actor, role=role)
    supervise(sf, env.cases["newer"], "zhou.min", "今天下班前处理", role="supervisor")
    sf.kw["bind"].dispose()
    app, _ = env.make_app(organisation=org)
    with Served(app) as server:
        yield env, server.url


@pytest.fixture(scope="module")
def playwright() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} not found: install Debian's chromium (make system-deps) or set NONSITE_CHROMIUM")
    with sync_api.sync_playwright() as pw:
        yield pw


@pytest.fixture()
def phone(playwright: Any, served: tuple[Env, str]) -> Iterator[Any]:
    browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                         args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
    device = {k: v for k, v in playwright.devices["Pixel 7"].items() if k != "default_browser_type"}
    assert device["is_mobile"] and device["has_touch"]
    ctx = browser.new_context(**device, locale="zh-CN", timezone_id="Asia/Shanghai", geolocation=PHONE_AT,
                              permissions=["geolocation"], service_workers="allow")
    ctx.set_default_timeout(15_000)
    yield ctx
    ctx.close()
    browser.close()


def shot(page: Any, shots: Path, name: str) -> None:
    page.screenshot(path=str(shots / f"field-{name}.png"), full_page=True)


def trail(env: Env, number: str) -> tuple[str, list[AuditEntry]]:
    sf = open_db(env.db_url)
    try:
        with sf() as s:
            case = s.scalars(select(Case).where(Case.number == number)).one()
            entries = list(s.scalars(select(AuditEntry).where(AuditEntry.case_id == case.id).order_by(AuditEntry.id)))
            return case.status.value, entries
    finally:
        sf.kw["bind"].dispose()


def test_a_field_officer_checks_in_and_reports_offline_then_online(phone: Any, served: tuple[Env, str],
                                                                   media_dir: Path, tmp_path: Path) -> None:
    env, url = served
    shots = Path(os.environ.get("NONSITE_SCREENSHOT_DIR") or tmp_path / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    page = phone.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url + "/m/")
    page.wait_for_url(re.compile(r"/login\?next="))
    page.fill("#username", OFFICER)
    page.fill("#password", PASSWORD)
    page.tap("#login-submit")
    page.wait_for_url(url + "/m/")
    assert page.evaluate("window.innerWidth") == 412 and page.evaluate("navigator.maxTouchPoints") > 0

    # 督办 pinned first, then the rest by deadline; each with a geo: link
    cards = page.locator("article.task-card").evaluate_all("els => els.map(e => e.dataset.number)")
    assert cards == [env.cases["newer"], env.cases["older"]]
    assert page.locator("#tasks-supervised").inner_text().count("今天下班前处理") == 1
    assert page.locator("a.map-link").first.get_attribute("href").startswith("geo:31.239700,121.499800")
    # the service worker is this origin's, scope /m/
    script = page.evaluate("navigator.serviceWorker.ready.then(r => r.active.scriptURL)")
    assert script == url + "/m/sw.js"
    assert page.evaluate("navigator.serviceWorker.getRegistration().then(r => r.scope)") == url + "/m/"
    shot(page, shots, "tasks")

    number = env.cases["older"]
    page.tap(f'article.task-card[data-number="{number}"] a.task-link')
    page.wait_for_url(url + f"/m/cases/{number}")
    assert page.locator("#task").get_attribute("data-status") == "dispatched"
    assert page.locator(".still-strip img").count() >= 2

    # arrival check-in with the phone's position
    page.tap("#checkin")
    page.wait_for_selector('#checkin-state[data-state="delivered"]')
    metres = round(distance_m(PHONE_AT["latitude"], PHONE_AT["longitude"], 31.2397, 121.4998))
    assert f"距摄像机 {metres} 米" in page.inner_text("#checkin-state")
    status, entries = trail(env, number)
    (checkin,) = [e for e in entries if e.action == "field_checkin"]
    assert (checkin.actor, checkin.detail["lat"], checkin.detail["lon"], checkin.detail["distance_m"]) == (
        OFFICER, 31.2398, 121.4999, metres)

    # no network: the report is kept on the phone
    phone.set_offline(True)
    page.wait_for_selector('#net-state[data-state="offline"]')
    before, after = tmp_path / "before.jpg", tmp_path / "after.jpg"
    images = sorted((media_dir / "india_road_thela_animal" / "images" / "val").glob("*.jpg"))
    before.write_bytes(jpeg_of(images[7], width=800))
    after.write_bytes(jpeg_of(images[8], width=800))
    page.set_input_files("#photo-before", str(before))
    page.set_input_files("#photo-after", str(after))
    page.wait_for_selector("#preview-after img")
    page.check('input[name="result"][value="rectified"]')
    page.fill("#report-note", "占道车辆已驶离，现场恢复")
    page.tap("#report-submit")
    page.wait_for_selector('#report-state[data-state="queued"]')
    page.wait_for_selector('#queue-count[data-count="1"]')
    assert "待发送 1" in page.inner_text("#queue-count")
    shot(page, shots, "queued-offline")
    status, entries = trail(env, number)
    assert status == "dispatched" and [e for e in entries if e.action == "rectify"] == []
    # the page itself is kept on the phone: reopened offline, it still shows the task and the queued report
    assert page.evaluate("caches.open('nonsite-field-pages').then(c => c.match(location.href)).then(r => !!r)")
    page.reload()
    page.wait_for_selector('#queue-count[data-count="1"]')
    assert page.locator("#task").get_attribute("data-number") == number
    assert page.locator("#outbox-items li").evaluate_all("els => els.map(e => e.dataset.state)") == ["queued"]

    # back online: delivered, the case moved on
    phone.set_offline(False)
    page.wait_for_selector('#report-state[data-state="delivered"]')
    assert "已整改" in page.inner_text("#report-state")
    assert page.inner_text("#task-status") == "已整改"
    page.wait_for_selector('#queue-count[data-count="0"]', state="attached")
    shot(page, shots, "delivered")
    status, entries = trail(env, number)
    assert status == "rectified"
    rectified = [e for e in entries if e.action == "rectify"]
    assert len(rectified) == 1  # however many times the phone sent it
    (entry,) = rectified
    assert entry.actor == OFFICER and entry.detail["result"] == "rectified"
    assert entry.detail["note"] == "占道车辆已驶离，现场恢复"
    assert len(entry.detail["before"]) == len(entry.detail["after"]) == 1
    stored = sorted(env.store.list(f"cases/{number}/feedback/"))
    assert {hashlib.sha256(env.store.get(k)).hexdigest() for k in stored} == set(entry.photos or [])
    sf = open_db(env.db_url)
    assert verify_chain(sf).ok
    sf.kw["bind"].dispose()

    # the task page now lists the records, and the task list no longer holds the case
    page.reload()
    assert page.locator("#records li").count() == 2 and page.locator("#task-closed").count() == 1
    page.goto(url + "/m/")
    assert number not in page.locator("article.task-card").evaluate_all("els => els.map(e => e.dataset.number)")
    # logging out forgets the pages kept on the phone
    assert page.evaluate("caches.has('nonsite-field-pages')")
    page.tap("#field-logout button")
    page.wait_for_url(re.compile(r"/login"))
    assert not page.evaluate("caches.has('nonsite-field-pages')")
    assert errors == []


def test_a_refused_photo_is_shown_with_the_reason_and_can_be_discarded(phone: Any, served: tuple[Env, str],
                                                                       tmp_path: Path) -> None:
    env, url = served
    number = env.cases["newer"]
    page = phone.new_page()
    page.goto(url + f"/m/cases/{number}")
    page.wait_for_url(re.compile(r"/login\?next="))
    page.fill("#username", OFFICER)
    page.fill("#password", PASSWORD)
    page.tap("#login-submit")
    page.wait_for_url(url + f"/m/cases/{number}")
    fake = tmp_path / "photo.jpg"
    fake.write_bytes(b"<html><script>alert(1)</script></html>")  # named like a photo, is not one
    page.set_input_files("#photo-after", str(fake))
    page.fill("#report-note", "已整改")
    page.tap("#report-submit")
    page.wait_for_selector('#report-state[data-state="failed"]')
    assert "JPEG" in page.inner_text("#report-state")  # the server's reason, in the page's language
    item = page.locator('#outbox-items li[data-state="failed"]')
    assert item.count() == 1 and "JPEG" in item.inner_text()
    status, entries = trail(env, number)
    assert status == "dispatched" and not [e for e in entries if e.action in ("rectify", "field_report")]
    assert list(env.store.list(f"cases/{number}/feedback/")) == []
    item.locator("button.discard").tap()
    page.wait_for_selector("#outbox", state="hidden")
