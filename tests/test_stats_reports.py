"""The statistics page, its exports, /api/stats, the overdue report and the monthly PDF over a seeded November
(tests/stats_support.py): the numbers on the page, in the Excel file, in the CSV and in the JSON are the same, the
figures a person can check by hand are right, spreadsheet formulas in names stay text, and only the roles that see
every team's cases get in."""

from __future__ import annotations

import csv
import io
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from html import unescape
from pathlib import Path
from typing import Any

import pytest
from console_support import PASSWORDS, MemoryUsers, login, standard_users
from fastapi.testclient import TestClient
from openpyxl import load_workbook
from sqlalchemy.orm import Session, sessionmaker
from stats_support import EVIL_NAME, NOW, base_map, seed_november

from nonsite.cases import open_db
from nonsite.cases.legal_basis import default_catalogue
from nonsite.cases.organisation import Organisation, load_organisation
from nonsite.cases.reports import FIGURE_NAMES, Labels, build_figures, load_rows, overdue_report, report_period
from nonsite.cases.statistics import Column, StatTable, to_csv, to_xlsx
from nonsite.console.app import create_app
from nonsite.evidence import LocalStore

ROOT = Path(__file__).resolve().parents[1]
EXTRA = {"du.cha": "supervisor", "ling.dao": "leader", "sun.hao": "field_officer", "ban.zhang": "field_officer"}


@dataclass
class Site:
    root: Path
    db_url: str
    org: Organisation
    org_file: Path
    users: MemoryUsers
    sf: sessionmaker[Session]

    def client(self, user: str | None = "adm", **kw: Any) -> TestClient:
        kw.setdefault("organisation", self.org)
        app = create_app(session_factory=self.sf, store=LocalStore(self.root / "evidence"), auth=self.users,
                         clock=lambda: NOW, session_secret="s" * 32, **kw)
        c = TestClient(app)
        if user is not None:
            r = login(c, user, PASSWORDS.get(user) or f"{user}-pass-123")
            assert r.status_code == 303, r.text[:300]
        return c

    def api(self, user: str = "adm", scopes: tuple[str, ...] = ("stats:read",)) -> TestClient:
        c = self.client(None)
        c.headers["Authorization"] = f"Bearer {self.users.issue_token(user, scopes)}"
        return c


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("stats")
    url = f"sqlite:///{root / 'cases.db'}"
    sf = open_db(url)
    seed_november(sf)
    org_file = base_map(root)
    users = standard_users()
    for name, role in EXTRA.items():
        users.add(name, f"{name}-pass-123", role, name)
    yield Site(root, url, load_organisation(org_file), org_file, users, sf)
    sf.kw["bind"].dispose()


def page_tables(html: str) -> dict[str, list[dict[str, str]]]:
    """``data-table`` name -> rows of ``data-key`` -> ``data-value`` (numbers) or the cell's text."""
    out: dict[str, list[dict[str, str]]] = {}
    for name, body in re.findall(r'<table class="stats-table" data-table="([^"]+)">(.*?)</table>', html, re.S):
        rows = []
        for tr in re.findall(r"<tr>(.*?)</tr>", body.split("<tbody>")[1], re.S):
            cells = {}
            for key, value, text in re.findall(r'<td data-key="([^"]+)"[^>]*?(?: data-value="([^"]*)")?>(.*?)</td>',
                                               tr, re.S):
                cells[key] = unescape(value) if value else unescape(text)
            rows.append(cells)
        out[name] = rows
    return out


def sheet_rows(ws: Any) -> tuple[list[str], list[list[Any]]]:
    """The header and the rows of a statistics sheet (title, note, header, rows)."""
    values = [list(r) for r in ws.iter_rows(values_only=True)]
    return values[2], values[3:]


def _num(v: Any) -> float | None:
    return None if v in (None, "") else float(v)


# --- the figures -------------------------------------------------------------------------------------------


def test_the_seeded_month_by_hand(site: Site) -> None:
    """The numbers of November 1-28 a person can count in tests/stats_support.py's plan."""
    data = site.api().get("/api/stats").json()
    assert (data["from"], data["to"], data["unit"], data["as_of"]) == ("2026-11-01", "2026-11-28", "day",
                                                                        NOW.isoformat())
    figs = {f["name"]: f for f in data["figures"]}
    assert list(figs) == list(FIGURE_NAMES)
    summary = {r["figure"]: r for r in figs["summary"]["rows"]}
    assert summary["告警数"]["count"] == 21 and summary["立案数"]["count"] == 15  # the 30th's draft is after NOW
    # disposed: 6 closed fast, 1 closed late, the penalty and the transfer (closed), 1 rectified = 10 of 15 cases
    assert (summary["处置率"]["numerator"], summary["处置率"]["denominator"]) == (10, 15)
    # first offences: 9 warnings, 1 penalty (the transfer is neither)
    assert (summary["首违警告占比"]["numerator"], summary["首违警告占比"]["denominator"]) == (9, 10)
    cams = {r["id"]: (r["alerts"], r["cases"]) for r in figs["by_camera"]["rows"]}
    assert cams == {"cam-carpark-01": (7, 6), "cam-junction-03": (6, 5), "cam-fence-02": (4, 1),
                    "cam-xincheng-04": (4, 3)}
    fp = {r["id"]: (r["false_positives"], r["triaged"]) for r in figs["fp_camera"]["rows"]}
    assert fp == {"cam-fence-02": (2, 3), "cam-xincheng-04": (1, 4), "cam-carpark-01": (1, 7),
                  "cam-junction-03": (0, 6)}
    assert figs["fp_camera"]["rows"][0]["name"] == "围栏东侧"  # the camera to fix first (2 of 3 false)
    assert {r["id"]: r["count"] for r in figs["dismissals"]["rows"]} == {"false_positive": 4, "duplicate": 1}
    assert {r["id"]: r["count"] for r in figs["decisions"]["rows"]} == {"warning": 9, "penalty": 1,
                                                                       "no_penalty": 0, "transfer": 1}
    grids = {r["id"]: r["alerts"] for r in figs["by_grid"]["rows"]}
    assert grids == {"yanshi-east": 11, "shifan-jie": 6, "xincheng-1": 4}
    streets = {r["name"]: r["alerts"] for r in figs["by_street"]["rows"]}
    assert streets == {"演示街道": 17, "新城街道": 4}
    days = {r["period"]: r["alerts"] for r in figs["by_period"]["rows"]}
    assert len(days) == 28 and days["2026-11-02"] == 2 and days["2026-11-07"] == 0 and sum(days.values()) == 21
    ranking = figs["ranking"]["rows"]
    assert ranking[0]["rank"] == 1 and ranking[0]["team"] == "演示中队第一班组"  # the only team with 5+ cases
    assert all(r["rank"] is None for r in ranking[1:])


def test_period_and_area_filters(site: Site) -> None:
    c = site.api()
    october = c.get("/api/stats/summary", params={"month": "2026-10"}).json()
    assert october["from"] == "2026-10-01" and october["to"] == "2026-10-31"
    assert {r["figure"]: r["count"] for r in october["rows"]}["告警数"] == 2
    both = c.get("/api/stats/by_camera", params={"from": "2026-10-01", "to": "2026-11-30",
                                                  "grid": "xincheng-1"}).json()
    assert [(r["id"], r["alerts"]) for r in both["rows"]] == [("cam-xincheng-04", 5)]  # 1 in October, 4 in November
    street = c.get("/api/stats/by_grid", params={"street": "yanshi-jd"}).json()
    assert {r["id"] for r in street["rows"]} == {"yanshi-east", "shifan-jie"}
    weeks = c.get("/api/stats/by_period", params={"unit": "week"}).json()
    assert [r["period"] for r in weeks["rows"]] == ["2026-W44", "2026-W45", "2026-W46", "2026-W47", "2026-W48"]
    bad = c.get("/api/stats", params={"from": "2026-13-01", "street": "<script>", "unit": "hour"}).json()
    assert len(bad["problems"]) == 3 and bad["street"] == [] and bad["unit"] == "day"
    assert c.get("/api/stats/nope").status_code == 404


def test_page_excel_csv_and_json_hold_the_same_numbers(site: Site) -> None:
    c = site.client("du.cha")
    html = c.get("/stats").text
    tables = page_tables(html)
    data = {f["name"]: f for f in c.get("/api/stats").json()["figures"]}
    wb = load_workbook(io.BytesIO(c.get("/stats/export", params={"table": "all"}).content))
    assert set(FIGURE_NAMES) | {"hotspots"} == set(wb.sheetnames)
    for name in FIGURE_NAMES:
        fig = data[name]
        header, rows = sheet_rows(wb[name])
        assert header == [col["label"] for col in fig["columns"]], name
        assert len(rows) == len(fig["rows"]) == len(tables[name]), name
        for json_row, xl_row, page_row in zip(fig["rows"], rows, tables[name], strict=True):
            for col, xl in zip(fig["columns"], xl_row, strict=True):
                want = json_row[col["key"]]
                if col["kind"] == "text":
                    assert (xl or "") == (want or ""), (name, col["key"])
                    assert page_row[col["key"]] == ("" if want is None else str(want)), (name, col["key"])
                else:
                    shown = page_row[col["key"]]
                    if want is None:
                        assert xl is None and shown in ("", "—"), (name, col["key"], xl, shown)
                    else:  # Excel keeps 15 significant digits
                        assert _num(xl) == pytest.approx(want, rel=1e-12), (name, col["key"], xl, want)
                        assert _num(shown) == pytest.approx(want, rel=1e-12), (name, col["key"], shown, want)
        one = list(csv.reader(io.StringIO(c.get("/stats/export", params={"table": name, "format": "csv"})
                                          .content.decode("utf-8-sig"))))
        assert one[0] == header and len(one) == len(rows) + 1
        for csv_row, xl_row in zip(one[1:], rows, strict=True):
            for col, cell, xl in zip(fig["columns"], csv_row, xl_row, strict=True):
                if col["kind"] != "text":
                    assert _num(cell) == pytest.approx(_num(xl), abs=5e-5) if xl is not None else cell == ""
    # percentages on the page are the fractions of the export, shown with one decimal
    assert "66.7%" in html and wb["summary"]["C6"].number_format == "0.0%" and wb["summary"]["A6"].value == "处置率"


def test_formulas_in_names_stay_text(site: Site, tmp_path: Path) -> None:
    """The attack: a camera named ``=HYPERLINK(...)`` (anyone who edits the camera configuration) must not become
    a live formula in the bureau's spreadsheet: CSV cells get a leading apostrophe, Excel cells are strings."""
    c = site.client()
    text = c.get("/stats/export", params={"table": "by_camera", "format": "csv"}).content.decode("utf-8-sig")
    names = [r[1] for r in csv.reader(io.StringIO(text))]
    assert "'" + EVIL_NAME in names and EVIL_NAME not in names
    listing = c.get("/export/cases", params={"format": "csv"}).content.decode("utf-8-sig")
    assert all(not cell.startswith(("=", "+", "-", "@")) for r in csv.reader(io.StringIO(listing)) for cell in r)
    wb = load_workbook(io.BytesIO(c.get("/stats/export", params={"table": "by_camera"}).content))
    cell = next(row[1] for row in wb["by_camera"].iter_rows(min_row=4) if row[0].value == "cam-xincheng-04")
    assert cell.value == EVIL_NAME and cell.data_type == "s"  # text, not a formula
    # every dangerous first character, and numbers (negative ones too) left alone
    table = StatTable("t", "t", "t", (Column("name", "名称", "Name"), Column("v", "值", "Value", "float")),
                      (("+1+2", -1.5), ("-2", None), ("@SUM(A1)", 0.25), ("\t=1", 1.0), ("普通", 2.0)))
    rows = list(csv.reader(io.StringIO(to_csv(table))))[1:]
    assert rows == [["'+1+2", "-1.5000"], ["'-2", ""], ["'@SUM(A1)", "0.2500"], ["'\t=1", "1.0000"],
                    ["普通", "2.0000"]]
    to_xlsx([table], tmp_path / "t.xlsx")
    ws = load_workbook(tmp_path / "t.xlsx")["t"]
    assert [c.data_type for c in ws["A"][2:]] == ["s"] * 5 and ws["B3"].value == -1.5


def test_hotspots_on_the_base_map(site: Site) -> None:
    c = site.client()
    spots = c.get("/api/stats/hotspots").json()
    assert spots["base_map"] == {"url": "/stats/basemap", "size": [800, 600]}
    by_id = {h["id"]: h for h in spots["hotspots"]}
    # cam-xincheng-04 at (31.2425, 121.4825): x = (121.4825-121.4720)/0.0140*800 = 600, y = (31.2460-31.2425)/0.0170*600
    assert (by_id["cam-xincheng-04"]["x"], by_id["cam-xincheng-04"]["y"]) == (600.0, 123.5)
    assert (by_id["shifan-jie"]["x"], by_id["shifan-jie"]["y"], by_id["shifan-jie"]["alerts"]) == (300.0, 420.0, 6)
    html = c.get("/stats").text
    assert html.count('<circle class="spot') == len(spots["hotspots"])
    assert c.get("/stats/basemap").headers["content-type"] == "image/png"
    # names are data: the camera's name is escaped in the SVG's title
    assert "&#34;http://evil.example/x&#34;" in html or "&quot;http://evil.example/x&quot;" in html


def test_the_page_without_the_chart_library(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    from nonsite.console import stats

    monkeypatch.setattr(stats, "ECHARTS", site.root / "missing.js")
    html = site.client().get("/stats").text
    assert "echarts.min.js" not in html and 'id="no-charts"' in html
    assert len(page_tables(html)["by_type"]) == 3  # the tables are all there


def test_a_console_without_an_organisation(site: Site) -> None:
    """No organisation file: no area menus, no base map, grids and streets as stored on the cases (routed when
    they were drafted), the hotspot ranking without a map."""
    c = site.client(organisation=None)
    html = c.get("/stats").text
    assert 'id="f-street"' not in html and 'id="hotspot-map"' not in html and "未配置底图" in html
    assert c.get("/stats/basemap").status_code == 404
    data = c.get("/api/stats/by_grid", params={"grid": "yanshi-east"}).json()
    # without an organisation to check it against, a well-formed id filters by the grid stored on the cases
    assert [r["id"] for r in data["rows"]] == ["yanshi-east"] and data["problems"] == []
    assert c.get("/stats/report.pdf", params={"month": "2026-11"}).status_code == 200


def test_overdue_report_weekly_and_monthly(site: Site) -> None:
    c = site.client("ling.dao")
    week = c.get("/api/stats/overdue").json()  # the week of NOW: 23-29 November, as of NOW
    assert week["label"] == "2026-W48" and week["as_of"] == NOW.isoformat()
    teams = {r["id"]: (r["overdue"], r["new"]) for r in week["teams"]["rows"]}
    # still open past the deadline: October's xincheng case (due 31 Oct) and the two cases confirmed on 12 and 13
    # November and left there (their 限时办结 ran out on 24 and 25 November, inside the week)
    assert teams == {"xincheng-squad": (1, 0), "yanshi-group-1": (1, 1), "yanshi-group-2": (1, 1)}
    assert [r["due"] for r in week["cases"]["rows"]] == ["2026-10-31 00:00", "2026-11-24 00:00", "2026-11-25 00:00"]
    earlier = c.get("/api/stats/overdue", params={"date": "2026-11-10"}).json()  # as of the end of 9-15 November
    assert earlier["label"] == "2026-W46" and [r["id"] for r in earlier["teams"]["rows"]] == ["xincheng-squad"]
    month = c.get("/api/stats/overdue", params={"period": "month", "grid": "shifan-jie"}).json()
    assert [r["id"] for r in month["teams"]["rows"]] == ["yanshi-group-2"]
    page = c.get("/stats/overdue", params={"period": "week"}).text
    assert "超期未办结报表 2026-W48" in page and page_tables(page)["overdue_teams"][0]["overdue"] == "1"
    prev = unescape(re.search(r'href="([^"]+)" id="overdue-prev"', c.get(  # type: ignore[union-attr]
        "/stats/overdue", params={"grid": "shifan-jie"}).text).group(1))
    assert "grid=shifan-jie" in prev and "超期未办结报表 2026-W47" in c.get(prev).text
    wb = load_workbook(io.BytesIO(c.get("/stats/overdue/export").content))
    assert wb.sheetnames == ["overdue_teams", "overdue_cases"]
    assert sum(r[2] for r in sheet_rows(wb["overdue_teams"])[1]) == 3
    text = c.get("/stats/overdue/export", params={"format": "csv", "table": "overdue_cases"}).content
    assert text.startswith(b"\xef\xbb\xbf") and len(text.decode("utf-8-sig").strip().splitlines()) == 4


# --- the PDF ---------------------------------------------------------------------------------------------


def _pdf_text_and_image(pdf: bytes, tmp_path: Path) -> tuple[str, Path]:
    path = tmp_path / "report.pdf"
    path.write_bytes(pdf)
    text = subprocess.run(["pdftotext", "-layout", str(path), "-"], check=True, capture_output=True,
                          text=True).stdout
    subprocess.run(["pdftoppm", "-r", "60", "-png", "-f", "1", "-l", "1", str(path), str(tmp_path / "p")],
                   check=True)
    return text, next(tmp_path.glob("p*.png"))


def test_monthly_pdf_has_the_charts_and_the_tables(site: Site, tmp_path: Path) -> None:
    import cv2
    import numpy as np

    r = site.client("du.cha").get("/stats/report.pdf", params={"month": "2026-11"})
    assert r.status_code == 200 and r.headers["content-type"] == "application/pdf"
    text, png = _pdf_text_and_image(r.content, tmp_path)
    for words in ("统计月报 2026-11", "汇总", "按日趋势", "处置率与按时办结率", "摄像头误报率", "龙虎榜",
                  "超期未办结（按队伍）", "演示中队第一班组", "围栏东侧", "66.7%"):
        assert words in text, words
    # the first page draws the trend chart: pixels of the first series' colour (#2f6fb0)
    img = cv2.imread(str(png))
    blue = np.all(np.abs(img.astype(int) - (176, 111, 47)) < 30, axis=2).sum()
    assert blue > 200, blue
    english = site.client().get("/stats/report.pdf", params={"month": "2026-11", "lang": "en"})
    (tmp_path / "en").mkdir()
    en_text, _ = _pdf_text_and_image(english.content, tmp_path / "en")
    assert "Monthly statistics 2026-11" in en_text and "Team ranking" in en_text
    assert site.client().get("/stats/report.pdf", params={"month": "2026-1"}).status_code == 422


def test_monthly_pdf_from_the_command_line(site: Site, tmp_path: Path) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"cases:\n  organisation: {site.org_file}\n", encoding="utf-8")
    out = tmp_path / "m.pdf"
    run = subprocess.run([sys.executable, "-m", "nonsite", "cases", "report", "monthly", "--config", str(cfg),
                          "--database-url", site.db_url, "--month", "2026-11", "--grid", "xincheng-1", "--out",
                          str(out)], capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    text, _ = _pdf_text_and_image(out.read_bytes(), tmp_path)
    assert "统计月报 2026-11" in text and "新城第一网格" in text and "演示中队第一班组" not in text
    bad = subprocess.run([sys.executable, "-m", "nonsite", "cases", "report", "monthly", "--config", str(cfg),
                          "--database-url", site.db_url, "--month", "11/2026", "--out", str(out)],
                         capture_output=True, text=True, cwd=tmp_path)
    assert bad.returncode == 2 and "YYYY-MM" in bad.stderr
    xlsx = tmp_path / "o.xlsx"
    run = subprocess.run([sys.executable, "-m", "nonsite", "cases", "report", "overdue", "--config", str(cfg),
                          "--database-url", site.db_url, "--period", "week", "--date", "2026-11-10", "--out",
                          str(xlsx)], capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert [r[0] for r in sheet_rows(load_workbook(xlsx)["overdue_teams"])[1]] == ["xincheng-squad"]


def test_figures_over_the_database(case_db_url: str) -> None:
    """The same figures on SQLite and PostgreSQL (the rows come from the one query layer)."""
    sf = open_db(case_db_url)
    try:
        seeded = seed_november(sf, october=False)
        limits = default_catalogue().time_limit_table()
        since, until, _ = report_period("month", NOW.date(), "Asia/Shanghai")
        with sf() as s:
            rows = load_rows(s, since, until, organisation=seeded.org, time_limits=limits, grids=["yanshi-east"])
            everything = load_rows(s, None, until, organisation=seeded.org, time_limits=limits)
    finally:
        sf.kw["bind"].dispose()
    figs = {f.name: f.table for f in build_figures(rows, as_of=NOW, tz="Asia/Shanghai", labels=Labels(seeded.org),
                                                   since=since, until=until)}
    assert sum(r[2] for r in figs["by_camera"].rows) == 12  # carpark 8 (the 30th's draft too) + fence 4
    teams, listing = overdue_report(everything, NOW, since=since, labels=Labels(seeded.org))
    assert [r[0] for r in teams.rows] == ["yanshi-group-1", "yanshi-group-2"]
    # reading only the cases that may be open at the report's instant gives the same report, past instants too
    for day in (5, 10, 16, 23, 28):
        at = NOW.replace(day=day)
        sf = open_db(case_db_url)
        try:
            with sf() as s:
                some = load_rows(s, None, until, organisation=seeded.org, time_limits=limits, open_at=at)
        finally:
            sf.kw["bind"].dispose()
        assert len(some) < len(everything)
        assert overdue_report(some, at, since=since) == overdue_report(everything, at, since=since), day


# --- who may --------------------------------------------------------------------------------------------


STATS_PATHS = ["/stats", "/stats/export?table=by_type", "/stats/overdue", "/stats/overdue/export",
               "/stats/report.pdf?month=2026-11", "/stats/basemap", "/api/stats", "/api/stats/by_type",
               "/api/stats/hotspots", "/api/stats/overdue"]


def test_roles_and_scopes(site: Site) -> None:
    officer = site.client("sun.hao")
    for path in STATS_PATHS:
        r = officer.get(path, follow_redirects=False)
        assert r.status_code == 403, (path, r.status_code)
    assert 'id="nav-stats"' not in officer.get("/tasks").text
    for user in ("du.cha", "ling.dao", "rev", "op", "adm"):
        c = site.client(user)
        assert c.get("/stats").status_code == 200, user
        assert 'id="nav-stats"' in c.get("/tasks").text, user
    stranger = site.client(None)
    assert stranger.get("/stats", follow_redirects=False).status_code == 303
    assert stranger.get("/api/stats").status_code == 401
    # a token needs stats:read; one with only stats:read reads no cases
    no_scope = site.api("adm", ("cases:read",))
    r = no_scope.get("/api/stats")
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden_scope"
    screen = site.api("ling.dao", ("stats:read",))
    assert screen.get("/api/stats/summary").status_code == 200
    assert screen.get("/api/cases").status_code == 403
    assert site.api("sun.hao", ("stats:read",)).get("/api/stats").status_code == 403


def test_case_list_export_follows_what_the_user_sees(site: Site) -> None:
    everyone = list(csv.reader(io.StringIO(site.client("op").get("/export/cases", params={"format": "csv"})
                                           .content.decode("utf-8-sig"))))
    assert everyone[0][:3] == ["案件编号", "类型", "状态"] and len(everyone) == 1 + 24
    officer = load_workbook(io.BytesIO(site.client("sun.hao").get("/export/cases").content))["cases"]
    teams = {row[5] for row in sheet_rows(officer)[1]}
    assert teams == {"演示中队第一班组"}  # sun.hao is in yanshi-group-1 only
    op = site.client("op")
    queue = op.get("/", params={"type": "stray_dog"}).text
    link = unescape(re.search(r'href="([^"]+)" id="export-list-csv"', queue).group(1))  # type: ignore[union-attr]
    dogs = list(csv.reader(io.StringIO(op.get(link).content.decode("utf-8-sig"))))
    assert len(dogs) == 1 + 2 and {r[1] for r in dogs[1:]} == {"流浪犬"}


def test_the_base_map_is_validated(tmp_path: Path) -> None:
    from nonsite.config import ConfigError

    text = (ROOT / "examples" / "organisation.yaml").read_text(encoding="utf-8")
    path = tmp_path / "organisation.yaml"
    path.write_text(text + "\nbase_map:\n  image: map.png\n  size: [800, 600]\n"
                    "  bounds: [121.49, 31.22, 121.47, 31.25]\n", encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_organisation(path)
    assert "organisation.yaml:" in str(err.value) and "bounds" in str(err.value) and "west < east" in str(err.value)
    path.write_text(text + "\nbase_map:\n  image: map.png\n  size: [800, 600]\n  zoom: 3\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="zoom"):
        load_organisation(path)
