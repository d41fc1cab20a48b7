"""The bureau's side of the console in a real browser (Debian's headless Chromium, Playwright; issue 14).

uvicorn serves the console over a SQLite file with examples/organisation.yaml as the bureau and a clock the
test moves (the National Day holiday of 2026 lies between the confirmation and the review's deadline). The walk:
a case is routed to the team of its camera's grid; a field officer sees only their team's tasks; a case goes
overdue on the working-day clock across the holiday and the console's reminder job puts the reminder, then the
escalation, in the right people's notifications; a supervisor issues a 督办 that the team answers; a reviewer
sees the legal basis on the review page and approves with a decision. Screenshots under the test's tmp dir (or
NONSITE_SCREENSHOT_DIR).
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from console_support import MemoryUsers, Served
from playwright import sync_api
from sqlalchemy.orm import Session, sessionmaker

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from test_bureau_wiring import ORG_FILE, T0, draft  # noqa: E402 - the wiring tests' drafting helper

from nonsite.cases import open_db  # noqa: E402
from nonsite.cases.organisation import load_organisation  # noqa: E402
from nonsite.cases.workflow import apply_action  # noqa: E402
from nonsite.console.app import create_app  # noqa: E402
from nonsite.evidence import LocalStore  # noqa: E402

CHROMIUM = os.environ.get("NONSITE_CHROMIUM", "/usr/bin/chromium")
USERS = {"op": "operator", "rev": "reviewer", "sun.hao": "field_officer", "zhao.lei": "field_officer",
         "li.qiang": "field_officer", "zhou.min": "supervisor", "boss": "leader", "adm": "admin"}


def password(user: str) -> str:
    return f"pw-{user}-2026"


def local(y: int, m: int, d: int, hh: int = 0, mm: int = 0) -> datetime:
    return datetime(y, m, d, hh, mm, tzinfo=UTC) - timedelta(hours=8)


@dataclass
class Site:
    url: str
    sf: sessionmaker[Session]
    app: Any
    clock: dict[str, datetime]
    cases: dict[str, str]
    shots: Path

    def at(self, when: datetime) -> None:
        """Move the console's clock (due states, the reminder job, 督办 deadlines)."""
        self.clock["now"] = when

    def reminders_round(self) -> Any:
        """One round of the console's own reminder job, at the console's clock."""
        return self.app.state.reminders.run_once()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("bureau-browser")
    sf = open_db(f"sqlite:///{root / 'cases.db'}")
    org = load_organisation(ORG_FILE)
    cases = {
        "east": draft(sf, org, "cam-carpark-01", at=T0 - timedelta(minutes=40)),  # listed in 演示路东网格
        "jie": draft(sf, org, "cam-junction-03", at=T0 - timedelta(minutes=30)),  # inside 示范街网格's polygon
        "holiday": draft(sf, org, "cam-carpark-01", at=T0 - timedelta(minutes=20)),
        "review": draft(sf, org, "cam-carpark-01", at=T0 - timedelta(minutes=10)),
    }
    users = MemoryUsers()
    for name, role in USERS.items():
        users.add(name, password(name), role)
    clock = {"now": T0}
    app = create_app(session_factory=sf, store=LocalStore(root / "evidence"), auth=users,
                     session_secret="bureau-browser-" + "z" * 20, organisation=org, clock=lambda: clock["now"],
                     reminders=True)
    shots = Path(os.environ.get("NONSITE_SCREENSHOT_DIR") or tmp_path_factory.mktemp("screenshots"))
    shots.mkdir(parents=True, exist_ok=True)
    with Served(app) as served:
        yield Site(served.url, sf, app, clock, {k: c.number for k, c in cases.items()}, shots)
    sf.kw["bind"].dispose()


@pytest.fixture(scope="module")
def browser(site: Site) -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} not found: install Debian's chromium (make system-deps) or set NONSITE_CHROMIUM")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                               args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        yield b
        b.close()


def page_as(browser: Any, site: Site, user: str, path: str = "/") -> Any:
    ctx = browser.new_context(locale="zh-CN", timezone_id="Asia/Shanghai", viewport={"width": 1440, "height": 900})
    ctx.set_default_timeout(10_000)
    page = ctx.new_page()
    page.goto(site.url + path)
    page.wait_for_url(re.compile(r"/login\?next="))
    page.fill("#username", user)
    page.fill("#password", password(user))
    page.click("#login-submit")
    page.wait_for_url(re.compile(re.escape(site.url + path.split("?")[0])))
    return page


def test_a_case_goes_to_the_team_of_its_cameras_grid(site: Site, browser: Any) -> None:
    page = page_as(browser, site, "op", f"/cases/{site.cases['east']}")
    assert "演示中队第一班组" in page.inner_text("main")
    page.goto(f"{site.url}/cases/{site.cases['jie']}")
    assert "演示中队第二班组" in page.inner_text("main")  # the camera is in no grid's list: its location decides
    page.screenshot(path=str(site.shots / "bureau-routed.png"))
    page.context.close()


def test_a_field_officer_sees_only_their_teams_tasks(site: Site, browser: Any) -> None:
    site.at(T0)
    for key in ("east", "jie"):
        apply_action(site.sf, site.cases[key], "confirm", "op", role="operator", now=T0)
        apply_action(site.sf, site.cases[key], "approve", "rev", role="reviewer", now=T0,
                     decision={"kind": "warning"})
    page = page_as(browser, site, "sun.hao", "/tasks")
    tasks = page.inner_text("main")
    assert site.cases["east"] in tasks and site.cases["jie"] not in tasks
    response = page.goto(f"{site.url}/cases/{site.cases['jie']}")
    assert response.status == 404
    page.goto(site.url + "/")
    assert site.cases["jie"] not in page.inner_text("main")
    page.screenshot(path=str(site.shots / "bureau-field-officer-tasks.png"))
    page.context.close()


def notification_rows(page: Any, number: str) -> list[str]:
    rows = page.locator(f'tr.notification[data-case="{number}"]')
    return [rows.nth(i).get_attribute("data-kind") or "" for i in range(rows.count())]


def test_overdue_across_the_holiday_reminds_then_escalates(site: Site, browser: Any) -> None:
    number = site.cases["holiday"]
    site.at(T0)
    apply_action(site.sf, number, "confirm", "op", role="operator", now=T0)  # review: 1 working day
    site.at(local(2026, 10, 2, 10))  # a holiday; a calendar day would be over, a working day is not
    site.reminders_round()
    sun = page_as(browser, site, "sun.hao", "/notifications")
    assert notification_rows(sun, number) == []
    page = sun.context.new_page()
    page.goto(f"{site.url}/cases/{number}")
    assert "按时" in page.inner_text("main") and "已超期" not in page.inner_text("main")

    site.at(local(2026, 10, 5, 10))  # past half-time: a reminder to the team
    site.reminders_round()
    sun.reload()
    assert notification_rows(sun, number) == ["reminder"]
    assert "到期提醒（第1次）" in sun.inner_text("#notifications")
    assert int(sun.inner_text("#bell-count")) >= 1

    site.at(local(2026, 10, 9, 0, 30))  # the end of Thursday 8 October, the first working day after, has passed
    site.reminders_round()
    leader = page_as(browser, site, "li.qiang", "/notifications")
    assert notification_rows(leader, number)[0] == "escalation"  # newest first
    assert "超期督促（第1级）" in leader.inner_text(f'tr.notification[data-case="{number}"][data-kind="escalation"]')
    leader.screenshot(path=str(site.shots / "bureau-escalation.png"))
    leader.goto(f"{site.url}/cases/{number}")
    assert "已超期" in leader.inner_text("main")
    leader.goto(f"{site.url}/notifications")
    leader.locator(f'tr.notification[data-case="{number}"][data-kind="escalation"] .mark-read').click()
    leader.wait_for_url(re.compile(r"/notifications$"))
    assert "unread" not in (leader.locator(
        f'tr.notification[data-case="{number}"][data-kind="escalation"]').get_attribute("class") or "")
    zhao = page_as(browser, site, "zhao.lei", "/notifications")  # another team: nothing about this case
    assert notification_rows(zhao, number) == []
    for p in (sun, leader, zhao):
        p.context.close()


def test_a_supervisor_issues_a_supervision_order_and_the_team_answers(site: Site, browser: Any) -> None:
    number = site.cases["jie"]
    site.at(local(2026, 10, 9, 9))
    sup = page_as(browser, site, "zhou.min", f"/cases/{number}")
    form = sup.locator(".supervise-form")
    form.locator("textarea[name=instruction]").fill("示范街占道请今日处理完毕")
    form.locator("input[name=new_deadline]").fill("2026-10-09T17:00")
    form.locator("button").click()
    sup.wait_for_url(re.compile(r"notice=supervise"))
    sup.goto(f"{site.url}/supervision")
    row = sup.locator(f'tr.supervision-row[data-case="{number}"]')
    assert "示范街占道请今日处理完毕" in row.inner_text() and "演示中队第二班组" in row.inner_text()
    sup.screenshot(path=str(site.shots / "bureau-supervision.png"))

    team = page_as(browser, site, "zhao.lei", "/tasks")
    pinned = team.locator("#tasks-supervised")
    assert number in pinned.inner_text() and "示范街占道请今日处理完毕" in pinned.inner_text()
    pinned.locator(".answer-form textarea[name=answer]").fill("已到场劝离，恢复通行")
    pinned.locator(".answer-form button").click()
    team.wait_for_url(re.compile(r"notice=answer_supervision"))
    assert team.locator("#tasks-supervised").count() == 0

    sup.reload()
    assert sup.locator(f'tr.supervision-row[data-case="{number}"]').count() == 0
    sup.goto(f"{site.url}/cases/{number}")
    assert "已到场劝离，恢复通行" in sup.inner_text("main")
    boss = page_as(browser, site, "boss", "/leader")
    assert boss.inner_text("#total-supervisions") == "0" and int(boss.inner_text("#total-open")) >= 3
    boss.screenshot(path=str(site.shots / "bureau-leader.png"))
    for p in (sup, team, boss):
        p.context.close()


def test_a_reviewer_approves_with_a_decision_after_seeing_the_legal_basis(site: Site, browser: Any) -> None:
    number = site.cases["review"]
    site.at(local(2026, 10, 9, 9))
    apply_action(site.sf, number, "confirm", "op", role="operator", now=site.clock["now"])
    page = page_as(browser, site, "rev", "/review")
    card = page.locator(f"#review-{number}")
    legal = card.locator(f"#legal-{number}")
    assert "道路交通安全法" in legal.inner_text() and "罚款" in legal.inner_text()
    page.screenshot(path=str(site.shots / "bureau-review-legal.png"))
    form = card.locator(".approve-form")
    form.locator("select[name=decision]").select_option("penalty")
    form.locator("input[name=amount_yuan]").fill("100")
    form.locator("input[name=decision_reason]").fill("占用人行道，证据清楚")
    form.locator("button.primary").click()
    page.wait_for_url(re.compile(r"/review\?notice=approve"))
    page.goto(f"{site.url}/cases/{number}")
    decision = page.inner_text(f"#legal-{number} .decision")
    assert "100 元" in decision and "占用人行道，证据清楚" in decision
    page.context.close()
