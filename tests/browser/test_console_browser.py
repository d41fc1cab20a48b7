"""The console as people use it: Debian's headless Chromium (Playwright) against the real server.

uvicorn serves the console on a free loopback port over a SQLite file holding cases drafted from sealed
packages of the shared media. An operator triages three alerts by keyboard and opens the evidence, a
reviewer approves a case, an admin draws and saves a zone, the wrong role is refused, and every page is
looked at in Chinese and in English (screenshots under the test's tmp dir, or NONSITE_SCREENSHOT_DIR).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from console_support import PASSWORDS, T0, Env, Served, add_case, seed
from playwright import sync_api

CHROMIUM = os.environ.get("NONSITE_CHROMIUM", "/usr/bin/chromium")

# (key, type, confirmed, camera id, camera name, zone id, zone name, plate); the first three are triaged
SPECS = [
    ("t-vend", "street_vending", T0 - timedelta(minutes=30), "cam-triage", "南京东路口", "z-1", "人行道北段", None),
    ("t-dog", "stray_dog", T0 - timedelta(minutes=20), "cam-triage", "南京东路口", "z-1", "人行道北段", None),
    ("t-park", "sidewalk_parking", T0 - timedelta(minutes=10), "cam-triage", "南京东路口", "z-1", "人行道北段",
     "沪A12345"),
    ("r-park", "sidewalk_parking", T0 - timedelta(hours=3), "cam-review", "西藏中路", "z-2", "非机动车道", "沪B67890"),
    ("r-dog", "stray_dog", T0 - timedelta(hours=4), "cam-review", "西藏中路", "z-2", "非机动车道", None),
    ("x-vend", "street_vending", T0 - timedelta(hours=5), "cam-other", "人民广场", "z-3", "广场入口", None),
]


@dataclass
class Site:
    env: Env
    url: str
    shots: Path
    media_dir: Path

    def token(self, user: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.env.users.issue_token(user)}"}

    def api(self, user: str, method: str, path: str, **kw: Any) -> httpx.Response:
        r = httpx.request(method, self.url + path, headers=self.token(user), timeout=10, **kw)
        assert r.status_code < 400, r.text
        return r


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, media_dir: Path) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("console-browser")
    env = seed(root, media_dir, SPECS)
    app, _ = env.make_app(live_poll_s=0.25)
    shots = Path(os.environ.get("NONSITE_SCREENSHOT_DIR") or tmp_path_factory.mktemp("screenshots"))
    shots.mkdir(parents=True, exist_ok=True)
    with Served(app) as served:
        yield Site(env, served.url, shots, media_dir)


@pytest.fixture(scope="module")
def browser(site: Site) -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} not found: install Debian's chromium (make system-deps) or set NONSITE_CHROMIUM")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                               args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        yield b
        b.close()


@pytest.fixture()
def context(browser: Any) -> Iterator[Any]:
    ctx = browser.new_context(locale="zh-CN", timezone_id="Asia/Shanghai", viewport={"width": 1440, "height": 900})
    ctx.set_default_timeout(10_000)
    yield ctx
    ctx.close()


def log_in(page: Any, site: Site, user: str, path: str = "/") -> None:
    page.goto(site.url + path)
    page.wait_for_url(re.compile(r"/login\?next="))
    page.fill("#username", user)
    page.fill("#password", PASSWORDS[user])
    page.click("#login-submit")
    page.wait_for_url(re.compile(re.escape(site.url + path.split("?")[0])))


def status_of(site: Site, key: str) -> dict[str, Any]:
    data: dict[str, Any] = site.api("adm", "GET", f"/api/cases/{site.env.cases[key]}").json()
    return data


def row(page: Any, number: str) -> Any:
    return page.locator(f'tr.case-row[data-number="{number}"]')


def test_operator_triages_three_alerts_by_keyboard_and_opens_the_evidence(site: Site, context: Any) -> None:
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    log_in(page, site, "op", "/?camera=cam-triage")
    numbers = page.locator("tr.case-row a.case-link").all_inner_texts()
    assert numbers == [site.env.cases[k] for k in ("t-park", "t-dog", "t-vend")]  # newest first
    page.wait_for_selector('#live-status[data-state="on"]')
    first, second, third = numbers
    assert "selected" in (row(page, first).get_attribute("class") or "")
    assert page.inner_text("#preview-number") == first and page.inner_text("#preview-plate") == "沪A12345"
    preview = page.locator("#preview-image")
    assert preview.get_attribute("src", timeout=2000).endswith("/confirm_annotated.jpg")  # type: ignore[union-attr]
    page.keyboard.press("b")
    assert preview.get_attribute("src").endswith("/confirm.jpg")  # type: ignore[union-attr]
    page.keyboard.press("b")

    page.keyboard.press("c")  # 1: confirm
    page.wait_for_selector(f'tr.case-row[data-number="{first}"][data-status="confirmed"]')
    assert f"已确认案件 {first}" in page.inner_text("#toast")
    assert "selected" in (row(page, second).get_attribute("class") or "")  # moved on by itself

    page.keyboard.press("d")  # 2: dismiss, reason 1 (false positive)
    assert page.is_visible("#reason-picker") and "误报" in page.inner_text("#reason-picker")
    page.screenshot(path=str(site.shots / "zh-queue-reason-picker.png"))
    page.keyboard.press("1")
    page.wait_for_selector(f'tr.case-row[data-number="{second}"][data-status="dismissed"]')
    assert page.is_hidden("#reason-picker")

    page.keyboard.press("d")  # 3: dismiss as "other", which needs a note
    page.keyboard.press("4")
    assert page.evaluate("document.activeElement.id") == "picker-note"
    page.keyboard.type("占道的是快递车，已驶离")
    page.keyboard.press("Enter")
    page.wait_for_selector(f'tr.case-row[data-number="{third}"][data-status="dismissed"]')
    assert row(page, third).locator(".badge").inner_text() == "已排除"
    page.screenshot(path=str(site.shots / "zh-queue-after-triage.png"))

    states = [status_of(site, k) for k in ("t-park", "t-dog", "t-vend")]
    assert [s["status"] for s in states] == ["confirmed", "dismissed", "dismissed"]
    assert [s["dismiss_reason"] for s in states] == [None, "false_positive", "other"]
    assert states[2]["dismiss_note"] == "占道的是快递车，已驶离"
    assert all(s["audit"][-1]["actor"] == "op" for s in states)

    # a new alert and another user's decision arrive without a reload
    new = add_case(site.env, site.media_dir, ("t-new", "stray_dog", T0, "cam-triage", "南京东路口", "z-1", "人行道北段",
                                              None), 7)
    page.wait_for_selector(f'tr.case-row[data-number="{new.number}"]')
    assert page.locator("tr.case-row a.case-link").first.inner_text() == new.number
    assert "新告警" in page.inner_text("#toast")
    site.api("adm", "POST", f"/api/cases/{new.number}/dismiss", json={"reason": "duplicate"})
    page.wait_for_selector(f'tr.case-row[data-number="{new.number}"][data-status="dismissed"]')

    # Enter opens the selected case: the evidence viewer
    page.keyboard.press("k")
    page.keyboard.press("k")
    page.keyboard.press("k")
    assert page.inner_text("#preview-number") == new.number
    page.keyboard.press("j")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(rf"/cases/{first}"))
    page.wait_for_selector('#seal-status[data-seal="ok"]')
    assert "校验通过" in page.inner_text("#seal-status")
    still = page.locator("img.boxed").first
    assert still.get_attribute("src").endswith("/onset_annotated.jpg")  # type: ignore[union-attr]
    assert page.evaluate("Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
    page.keyboard.press("b")
    assert still.get_attribute("src").endswith("/onset.jpg")  # type: ignore[union-attr]
    assert page.get_attribute("#boxes-toggle", "aria-pressed") == "false"
    duration = page.evaluate("""() => new Promise((ok, fail) => {
        const v = document.querySelector('video');
        if (v.readyState >= 1) { ok(v.duration); return; }
        v.addEventListener('loadedmetadata', () => ok(v.duration));
        v.addEventListener('error', () => fail(new Error('video error ' + (v.error && v.error.code))));
        v.load();
    })""")
    assert duration > 1.0
    page.screenshot(path=str(site.shots / "zh-case.png"), full_page=True)
    assert not errors, errors


def test_reviewer_approves_and_the_wrong_role_is_refused(site: Site, context: Any, browser: Any) -> None:
    number = site.env.cases["r-park"]
    site.api("op", "POST", f"/api/cases/{number}/confirm", json={"note": "车牌清楚"})

    # the operator may not open the review queue
    op_ctx = browser.new_context(locale="zh-CN")
    op_page = op_ctx.new_page()
    log_in(op_page, site, "op")
    response = op_page.goto(site.url + "/review")
    assert response.status == 403
    assert "您的角色（值班员）无权访问此页面，需要法制审核员或管理员。" in op_page.inner_text("#error-message")
    op_page.screenshot(path=str(site.shots / "zh-denied-review.png"))
    op_ctx.close()

    page = context.new_page()
    log_in(page, site, "rev", "/?camera=cam-review")
    # a reviewer cannot confirm alerts: the key is refused with the reason
    page.wait_for_selector('#live-status[data-state="on"]')
    page.keyboard.press("j")
    draft = page.inner_text("#preview-number")
    assert draft == site.env.cases["r-dog"]
    page.keyboard.press("c")
    page.wait_for_selector("#toast.error")
    assert "您的角色（法制审核员）不能执行“确认”，需要值班员或管理员。" in page.inner_text("#toast")
    assert status_of(site, "r-dog")["status"] == "draft"

    page.click("#nav-review")
    card = page.locator(f"#review-{number}")
    assert "车牌清楚" in card.inner_text() and "沪B67890" in card.inner_text()
    card.locator(".approve-form input[name=note]").fill("证据充分，同意立案")
    card.locator(".approve-form button").click()
    page.wait_for_url(re.compile(r"/review\?notice=approve"))
    assert f"案件 {number} 已审核通过。" in page.inner_text("main")
    assert page.locator(f"#review-{number}").count() == 0
    page.goto(f"{site.url}/cases/{number}")
    assert page.inner_text("#case-status") == "审核通过"
    assert "证据充分，同意立案" in page.inner_text(".audit")
    state = status_of(site, "r-park")
    assert state["status"] == "approved" and state["audit"][-1]["actor"] == "rev"


def _set_recheck(site: Site, key: str, state: str | None) -> None:
    """What the re-check desk does to a case (cases/recheck.py): its newest re-check's state, a new updated_at."""
    from datetime import UTC, datetime

    from sqlalchemy import select

    from nonsite.cases import Case, open_db

    with open_db(site.env.db_url)() as session:
        case = session.scalars(select(Case).where(Case.number == site.env.cases[key])).one()
        case.recheck_state = state
        case.updated_at = datetime.now(UTC)
        session.commit()


def test_the_live_queue_shows_the_camera_recheck_badge_as_the_page_does(site: Site, context: Any) -> None:
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    number = site.env.cases["x-vend"]
    log_in(page, site, "op", "/?camera=cam-other")
    page.wait_for_selector('#live-status[data-state="on"]')
    status = row(page, number).locator(".c-status")
    recheck_badges = status.locator("[class*='recheck-']")
    assert recheck_badges.count() == 0  # no re-check asked yet
    try:
        _set_recheck(site, "x-vend", "pending")
        page.wait_for_selector(f'tr.case-row[data-number="{number}"] .badge.recheck-pending')
        live = status.locator(".badge.recheck-pending")
        assert live.inner_text() == "等待摄像头复核" and live.get_attribute("title") == "摄像头复核"

        _set_recheck(site, "x-vend", "present")  # the camera still sees it: the badge follows
        page.wait_for_selector(f'tr.case-row[data-number="{number}"] .badge.recheck-present')
        assert status.locator(".badge.recheck-pending").count() == 0
        live_html = status.inner_html()
        page.reload()  # the server-rendered row shows the same badges
        page.wait_for_selector(f'tr.case-row[data-number="{number}"] .badge.recheck-present')
        rendered = status.locator(".badge.recheck-present").inner_text()
        page.wait_for_selector('#live-status[data-state="on"]')
        page.keyboard.press("c")  # confirming it keeps the re-check badge on the row
        page.wait_for_selector(f'tr.case-row[data-number="{number}"][data-status="confirmed"]')
        assert status.locator(".badge.recheck-present").inner_text() == rendered == "仍有违章物：已退回中队"
        assert f'class="badge recheck-present" title="摄像头复核">{rendered}<' in live_html

        # a state that is none of the four (anyone who can write the database could put one) is no badge, no markup
        _set_recheck(site, "x-vend", "<img src=x>")
        page.wait_for_function(f"""() => {{
            const r = document.querySelector('tr.case-row[data-number="{number}"]');
            return r && r.dataset.recheck === "<img src=x>"; }}""")
        assert recheck_badges.count() == 0 and status.locator("img").count() == 0 and "<img" not in status.inner_html()
    finally:
        _set_recheck(site, "x-vend", None)
    assert not errors, errors


def test_admin_draws_and_saves_a_zone(site: Site, context: Any) -> None:
    cams = site.env.cameras
    assert cams is not None
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    log_in(page, site, "adm", "/cameras")
    assert "在线" in page.inner_text("#camera-cam-east") and "离线" in page.inner_text("#camera-cam-park")
    page.screenshot(path=str(site.shots / "zh-cameras.png"), full_page=True)
    page.click("#camera-cam-east a.edit-zones")
    page.wait_for_selector("body[data-editor-ready='1']")
    page.wait_for_function("document.getElementById('snapshot').naturalWidth > 0")
    assert page.locator(".zone-item").count() == 1  # the existing sidewalk zone

    box = page.locator("#snapshot").bounding_box()

    def click(fx: float, fy: float) -> None:
        page.mouse.click(box["x"] + fx * box["width"], box["y"] + fy * box["height"])

    page.click("#zone-add")
    click(0.55, 0.2)
    click(0.9, 0.2)
    page.fill(".zone-item.current .zone-id", "vend-1")
    page.fill(".zone-item.current .zone-name", "西侧摊位区")
    page.select_option(".zone-item.current .zone-kind", "no_vending")
    page.click("#zone-save")  # two corners only: refused with the reason, nothing saved
    page.wait_for_selector("#zone-result.error")
    assert "区域 2（vend-1）：至少需要 3 个顶点，现在只有 2 个。" in page.inner_text("#zone-result")
    assert page.locator(".zone-item.invalid").count() == 1 and cams.saved == []
    page.screenshot(path=str(site.shots / "zh-zone-error.png"))

    page.click(".zone-item.invalid .zone-select")
    click(0.9, 0.6)
    click(0.55, 0.6)
    # drag the first corner a little to the left
    handle = page.locator("#zone-svg circle.handle").first
    hb = handle.bounding_box()
    page.mouse.move(hb["x"] + hb["width"] / 2, hb["y"] + hb["height"] / 2)
    page.mouse.down()
    page.mouse.move(box["x"] + 0.5 * box["width"], box["y"] + 0.2 * box["height"], steps=5)
    page.mouse.up()
    page.click("#zone-save")
    page.wait_for_selector("#zone-result.ok")
    assert "已保存 2 个区域" in page.inner_text("#zone-result")
    page.screenshot(path=str(site.shots / "zh-zone-editor.png"), full_page=True)

    camera_id, zones = cams.saved[-1]
    assert camera_id == "cam-east" and [z["id"] for z in zones] == ["walk", "vend-1"]
    vend = zones[1]
    assert vend["kind"] == "no_vending" and vend["name"] == "西侧摊位区"
    expected = [(0.5, 0.2), (0.9, 0.2), (0.9, 0.6), (0.55, 0.6)]
    assert len(vend["polygon"]) == 4
    for (x, y), (ex, ey) in zip(vend["polygon"], expected, strict=True):
        assert abs(x - ex) < 0.01 and abs(y - ey) < 0.01, vend["polygon"]
    page.goto(site.url + "/cameras")
    assert "西侧摊位区 (禁止摆摊区)" in page.inner_text("#camera-cam-east")
    assert not errors, errors


PAGES = [
    ("queue", "/", {"zh": "告警队列", "en": "Alert queue"}),
    ("search", "/search?q=%E6%B2%AA", {"zh": "案件查询", "en": "Case search"}),
    ("review", "/review", {"zh": "审核队列", "en": "Review queue"}),
    ("tasks", "/tasks", {"zh": "待派遣", "en": "To dispatch"}),
    ("cameras", "/cameras", {"zh": "共 2 路，在线 1 路", "en": "2 cameras, 1 up"}),
    ("zones", "/cameras/cam-east/zones", {"zh": "新建区域", "en": "New zone"}),
]


def test_the_same_pages_in_chinese_and_english(site: Site, context: Any) -> None:
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(site.url + "/login")
    assert page.inner_text("h1") == "登录"
    page.screenshot(path=str(site.shots / "zh-login.png"))
    log_in(page, site, "adm")
    case = site.env.cases["x-vend"]
    for lang in ("zh", "en"):
        for name, path, marker in [*PAGES, ("case", f"/cases/{case}", {"zh": "占道经营", "en": "Street vending"})]:
            page.goto(site.url + path + ("&" if "?" in path else "?") + f"lang={lang}")
            assert page.get_attribute("html", "lang") == ("zh-CN" if lang == "zh" else "en")
            text = page.inner_text("body")
            assert marker[lang] in text, (lang, name)
            if lang == "en":
                assert "告警队列" not in text and "退出登录" not in text, name
            else:
                assert "Alert queue" not in text and "Log out" not in text, name
            page.screenshot(path=str(site.shots / f"{lang}-{name}.png"), full_page=True)
    # the time of a case is on Shanghai's clock in both languages
    assert "2026-11-21 14:03:12 (UTC+08:00)" in page.inner_text("#confirmed-at")
    assert not errors, errors
    print(f"screenshots: {site.shots}")
