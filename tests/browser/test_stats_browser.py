"""The statistics page in Debian's headless Chromium (Playwright) over the seeded November (tests/stats_support.py):
a supervisor opens /stats, ECharts (served by the console itself) draws every chart, the hotspots lie on the base
map, and the Excel export, opened with openpyxl, holds the numbers the page shows."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from console_support import Served, standard_users
from openpyxl import load_workbook
from playwright import sync_api
from stats_support import NOW, base_map, seed_november

from nonsite.cases import open_db
from nonsite.cases.organisation import load_organisation
from nonsite.console.app import create_app
from nonsite.console.stats import ECHARTS
from nonsite.evidence import LocalStore

CHROMIUM = os.environ.get("NONSITE_CHROMIUM", "/usr/bin/chromium")


def test_supervisor_sees_the_charts_and_the_excel_holds_the_page_numbers(tmp_path: Path) -> None:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} not found: install Debian's chromium (make system-deps) or set NONSITE_CHROMIUM")
    if not ECHARTS.is_file():
        pytest.fail(f"{ECHARTS} is missing: run make setup (npm ci in console/vendor copies ECharts there)")
    sf = open_db(f"sqlite:///{tmp_path / 'cases.db'}")
    seed_november(sf)
    users = standard_users()
    users.add("du.cha", "du.cha-pass-123", "supervisor", "督查员")
    app = create_app(session_factory=sf, store=LocalStore(tmp_path / "evidence"), auth=users,
                     organisation=load_organisation(base_map(tmp_path)), clock=lambda: NOW, session_secret="s" * 32)
    shots = Path(os.environ.get("NONSITE_SCREENSHOT_DIR") or tmp_path)
    with Served(app) as served, sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                     args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        try:
            ctx = browser.new_context(locale="zh-CN", timezone_id="Asia/Shanghai", accept_downloads=True,
                                      viewport={"width": 1440, "height": 900})
            ctx.set_default_timeout(15_000)
            page = ctx.new_page()
            requests: list[str] = []
            problems: list[str] = []
            page.on("request", lambda r: requests.append(r.url))
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" and "404" not in m.text else None)
            page.on("response", lambda r: problems.append(f"{r.status} {r.url}")
                    if r.status >= 400 and not r.url.endswith("/favicon.ico") else None)
            page.goto(served.url + "/stats")
            page.wait_for_url(re.compile(r"/login\?next="))
            page.fill("#username", "du.cha")
            page.fill("#password", "du.cha-pass-123")
            page.click("#login-submit")
            page.wait_for_url(served.url + "/stats")
            page.wait_for_selector("body[data-charts]")
            drawn = page.locator(".chart[data-drawn='1']")
            # every figure with a chart and rows is drawn (the empty "no penalty" slice still counts in its pie)
            assert drawn.count() == int(page.get_attribute("body", "data-charts") or 0) >= 10
            assert page.locator("#chart-by_type canvas").count() >= 1
            assert page.locator("#chart-ranking canvas").count() >= 1
            # ECharts came from this console, nothing from anywhere else
            assert any(u == served.url + "/static/vendor/echarts.min.js" for u in requests)
            assert all(u.startswith(served.url) or u.startswith("data:") for u in requests), requests
            assert page.locator("#hotspot-map circle.spot").count() == 7  # 4 cameras, 3 grids
            assert page.locator("#hotspot-map image").count() == 1
            page.screenshot(path=str(shots / "zh-stats.png"), full_page=True)
            assert not problems, problems

            def cells(table: str) -> list[list[str]]:
                return [[c.get_attribute("data-value") or c.inner_text() for c in r.locator("td").all()]
                        for r in page.locator(f"table[data-table='{table}'] tbody tr").all()]

            shown = {t: cells(t) for t in ("by_type", "by_camera", "fp_camera", "summary", "ranking")}
            with page.expect_download() as download:
                page.click("#export-all")
            filename = download.value.suggested_filename
            download.value.save_as(tmp_path / "export.xlsx")
            workbook = load_workbook(tmp_path / "export.xlsx")
        finally:
            browser.close()
    sf.kw["bind"].dispose()
    assert filename == "nonsite-stats-all-2026-11-01-2026-11-28.xlsx"
    for table, rows in shown.items():
        sheet = [list(r) for r in workbook[table].iter_rows(min_row=4, values_only=True)]
        assert len(sheet) == len(rows), table
        for page_row, xl_row in zip(rows, sheet, strict=True):
            for text, xl in zip(page_row, xl_row, strict=True):
                if isinstance(xl, (int, float)):
                    assert float(text) == pytest.approx(xl, rel=1e-12), (table, page_row, xl_row)
                else:
                    assert text.strip() in ("", "—") if xl is None else text.strip() == str(xl), (table, text, xl)
    # the figures a person reads off the page: 21 alerts, the fence camera's 2 false positives of 3
    assert shown["summary"][0][1] == "21"
    fence = next(r for r in shown["fp_camera"] if r[0] == "cam-fence-02")
    assert (fence[2], fence[3]) == ("2", "3")
