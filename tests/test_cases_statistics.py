"""The bureau's figures over a hand-made October of eleven alerts, every expected number computed by hand
(the comments show the arithmetic), and the Excel and CSV exports holding the same numbers."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from bureau_support import SH, local
from openpyxl import load_workbook
from sqlalchemy import Column as SqlColumn
from sqlalchemy import Engine, MetaData, String, Table, create_engine, insert
from test_cases_drafter import make_sealed

from nonsite.cases import approve, close, confirm, dismiss, dispatch, draft_case, open_db, rectify
from nonsite.cases.db import UtcDateTime
from nonsite.cases.legal_basis import default_catalogue
from nonsite.cases.organisation import load_organisation
from nonsite.cases.statistics import (
    CaseRow,
    Column,
    Ratio,
    case_rows,
    closure_rate,
    counts,
    counts_by_period,
    counts_by_period_sql,
    counts_sql,
    decisions,
    dismissal_reasons,
    disposal_rate,
    false_positive_rates,
    on_time_rate,
    overdue_by_team,
    ranking_table,
    select_rows,
    step_durations,
    summary_table,
    table_from_counts,
    team_ranking,
    to_csv,
    to_xlsx,
)


def L(m: int, d: int, hh: int = 0, mm: int = 0) -> datetime:  # noqa: N802 - a Shanghai wall-clock time in 2026, UTC
    return local(2026, m, d, hh, mm)


CARPARK, FENCE, JUNCTION = "cam-carpark-01", "cam-fence-02", "cam-junction-03"
GRID = {CARPARK: "yanshi-east", FENCE: "yanshi-east", JUNCTION: "shifan-jie"}
T1, T2, T3 = "yanshi-group-1", "yanshi-group-2", "dog-capture"


def row(n: int, type_: str, cam: str, times: dict[str, datetime], **kw: object) -> CaseRow:
    status = max(times, key=lambda s: times[s])
    return CaseRow(number=f"NS-2026-{n:06d}", type=type_, camera_id=cam, detected_at=times["draft"], status=status,
                   times=times, street_id="yanshi-jd", grid_id=GRID[cam], **kw)  # type: ignore[arg-type]


ROWS = [
    # A1: closed on time (due end of 12 Oct), warning.
    row(1, "sidewalk_parking", CARPARK, {"draft": L(10, 8, 9), "confirmed": L(10, 8, 9, 10),
        "approved": L(10, 8, 15, 10), "dispatched": L(10, 9, 9, 10), "rectified": L(10, 9, 15, 10),
        "closed": L(10, 10, 9, 10)}, team_id=T1, decision="warning", due_at=L(10, 13)),
    # A2: closed late (14 Oct 10:30 after the end of 13 Oct), penalty.
    row(2, "sidewalk_parking", CARPARK, {"draft": L(10, 8, 10), "confirmed": L(10, 8, 10, 30),
        "approved": L(10, 9, 10, 30), "dispatched": L(10, 9, 12, 30), "rectified": L(10, 12, 12, 30),
        "closed": L(10, 14, 10, 30)}, team_id=T1, decision="penalty", due_at=L(10, 14)),
    # A3: a false positive dismissed in triage (not a case).
    row(3, "sidewalk_parking", CARPARK, {"draft": L(10, 9, 11), "dismissed": L(10, 9, 11, 5)},
        dismiss_reason="false_positive"),
    # A4: rectified on 3 Nov, never closed, due 19 Oct: overdue and open; warning.
    row(4, "street_vending", JUNCTION, {"draft": L(10, 10, 14), "confirmed": L(10, 10, 14, 20),
        "approved": L(10, 12, 14, 20), "dispatched": L(10, 12, 16, 20), "rectified": L(11, 3, 16, 20)},
        team_id=T2, decision="warning", due_at=L(10, 20)),
    # A5: confirmed, then dismissed by the reviewer (finished, on time).
    row(5, "street_vending", JUNCTION, {"draft": L(10, 15, 9), "confirmed": L(10, 15, 9, 30),
        "dismissed": L(10, 15, 15, 30)}, team_id=T2, dismiss_reason="not_a_violation", due_at=L(10, 20)),
    # A6: never triaged.
    row(6, "street_vending", JUNCTION, {"draft": L(10, 20, 9)}),
    # A7: a false positive.
    row(7, "street_vending", JUNCTION, {"draft": L(10, 21, 9), "dismissed": L(10, 21, 9, 10)},
        dismiss_reason="false_positive"),
    # A8: a stray dog late on 31 Oct, dispatched, due 2 Nov 15:00: overdue and open; transferred.
    row(8, "stray_dog", FENCE, {"draft": L(10, 31, 23, 30), "confirmed": L(10, 31, 23, 40),
        "approved": L(11, 2, 10), "dispatched": L(11, 2, 11)}, team_id=T3, decision="transfer", due_at=L(11, 2, 15)),
    # A9: a duplicate, on a holiday.
    row(9, "stray_dog", FENCE, {"draft": L(10, 5, 8), "dismissed": L(10, 5, 8, 2)}, dismiss_reason="duplicate"),
    # A10: 00:30 on 1 November in Shanghai (still 31 October in UTC): outside October.
    row(10, "stray_dog", JUNCTION, {"draft": L(11, 1, 0, 30)}),
    # A11: rectified, no deadline.
    row(11, "stray_dog", FENCE, {"draft": L(10, 25, 10), "confirmed": L(10, 25, 10, 5), "approved": L(10, 25, 11, 5),
        "dispatched": L(10, 25, 11, 35), "rectified": L(10, 25, 13, 35)}, team_id=T3),
]
OCT = select_rows(ROWS, L(10, 1), L(11, 1))
AS_OF = L(11, 5)


def test_the_period_is_by_local_detection_time() -> None:
    assert [r.number[-2:] for r in OCT] == ["01", "02", "03", "04", "05", "06", "07", "08", "09", "11"]
    assert [r.number[-2:] for r in select_rows(ROWS, types=["stray_dog"], grids=["shifan-jie"])] == ["10"]
    with pytest.raises(ValueError, match="timezone-aware"):
        select_rows(ROWS, datetime(2026, 10, 1))


def test_counts_by_type_camera_grid_street() -> None:
    assert counts(OCT, "type") == {"street_vending": 4, "sidewalk_parking": 3, "stray_dog": 3}
    assert counts(OCT, "type", scope="cases") == {"sidewalk_parking": 2, "stray_dog": 2, "street_vending": 2}
    assert counts(OCT, "camera_id") == {JUNCTION: 4, CARPARK: 3, FENCE: 3}
    assert counts(OCT, "grid_id") == {"yanshi-east": 6, "shifan-jie": 4}
    assert counts(OCT, "street_id") == {"yanshi-jd": 10}
    # Most first; equal counts by value (no team last among equals, but here it has the most).
    assert list(counts(OCT, "team_id").items()) == [(None, 4), (T3, 2), (T1, 2), (T2, 2)]
    assert list(counts(OCT, "type")) == ["street_vending", "sidewalk_parking", "stray_dog"]
    with pytest.raises(ValueError, match="cannot count by"):
        counts(OCT, "colour")


def test_counts_per_day_week_month_in_the_city_zone() -> None:
    assert counts_by_period(OCT, "month", SH) == {"2026-10": 10}
    # ISO weeks (Monday first): W40 = 28 Sep-4 Oct (none), W41 = 5-11 Oct (A9, A1, A2, A3, A4),
    # W42 = 12-18 (A5), W43 = 19-25 (A6, A7, A11), W44 = 26 Oct-1 Nov (A8).
    assert counts_by_period(OCT, "week", SH, since=L(10, 1), until=L(11, 1)) == {
        "2026-W40": 0, "2026-W41": 5, "2026-W42": 1, "2026-W43": 3, "2026-W44": 1}
    days = counts_by_period(OCT, "day", SH, since=L(10, 1), until=L(11, 1))
    assert len(days) == 31 and days["2026-10-08"] == 2 and days["2026-10-31"] == 1 and days["2026-10-01"] == 0
    assert counts_by_period([ROWS[9]], "day", SH) == {"2026-11-01": 1}  # UTC says 31 Oct; Shanghai says 1 Nov
    assert counts_by_period([], "day", SH) == {}
    assert counts_by_period(OCT, "month", SH, scope="cases") == {"2026-10": 6}


def test_disposal_closure_and_on_time_rates() -> None:
    # Cases: A1, A2, A4, A5, A8, A11. Disposed: A1, A2 (closed), A4, A11 (rectified), A5 (dismissed) = 5.
    assert disposal_rate(OCT, AS_OF) == Ratio(5, 6)
    assert closure_rate(OCT, AS_OF) == Ratio(2, 6)
    # With a deadline: A1 on time, A2 late, A4 open past due, A5 on time, A8 open past due (A11 has none).
    assert on_time_rate(OCT, AS_OF) == Ratio(2, 5)
    assert on_time_rate(OCT, AS_OF).percent() == "40.0%"
    # As of the end of October: A4 not yet rectified, A8 not yet due; A2 already late.
    end = L(11, 1)
    assert disposal_rate(OCT, end) == Ratio(4, 6)
    assert on_time_rate(OCT, end) == Ratio(2, 4)  # A1, A2, A4 (open, due 20 Oct), A5
    assert disposal_rate(OCT, L(10, 8, 9, 5)) == Ratio(0, 0) and Ratio(0, 0).percent() == "—"


def test_average_time_per_step() -> None:
    got = {s.step: (s.n, s.mean_hours, s.median_hours) for s in step_durations(OCT)}
    # confirm (minutes): 10, 30, 5, 20, 30, 10, 10, 2, 5 -> mean 122/9, median 10.
    assert got["confirm"][0] == 9
    assert got["confirm"][1] == pytest.approx(122 / 9 / 60) and got["confirm"][2] == pytest.approx(10 / 60)
    # review (hours): 6, 24, 48, 6 (dismissed), 34h20, 1 -> mean 119h20/6, median (6 + 24)/2.
    assert got["review"] == (6, pytest.approx((119 + 1 / 3) / 6), pytest.approx(15.0))
    assert got["dispatch"] == (5, pytest.approx(23.5 / 5), pytest.approx(2.0))  # 18, 2, 2, 1, 0.5
    assert got["rectify"] == (4, pytest.approx(152.0), pytest.approx(39.0))  # 6, 72, 528, 2
    assert got["close"] == (2, pytest.approx(32.0), pytest.approx(32.0))  # 18, 46


def test_dismissals_and_false_positive_rates() -> None:
    assert dismissal_reasons(OCT) == {"false_positive": 2, "duplicate": 1, "not_a_violation": 1}
    # Triaged per camera: carpark A1-A3 (A3 false), junction A4, A5, A7 (A7 false; A6 untriaged), fence A8, A9, A11.
    assert list(false_positive_rates(OCT).items()) == [
        ((CARPARK,), Ratio(1, 3)), ((JUNCTION,), Ratio(1, 3)), ((FENCE,), Ratio(0, 3))]
    assert list(false_positive_rates(OCT, by=("type",)).items())[-1] == (("stray_dog",), Ratio(0, 3))
    both = false_positive_rates(OCT, by=("camera_id", "type"))
    assert both[(JUNCTION, "street_vending")] == Ratio(1, 3)


def test_first_offence_warnings_and_penalties() -> None:
    per, share = decisions(OCT)
    assert per == {"warning": 2, "penalty": 1, "no_penalty": 0, "transfer": 1}
    assert share == Ratio(2, 3)


def test_team_ranking_and_the_overdue_report() -> None:
    ranking = team_ranking(OCT, AS_OF, min_cases=1)
    # T1: on time 1/2, disposed 2/2, rectify (6 + 72)/2 = 39 h. T2: on time 1/2 (A4 overdue), disposed 2/2,
    # rectify 528 h. T3: on time 0/1 (A8; A11 has no deadline), disposed 1/2, rectify 2 h.
    assert [(s.rank, s.team_id, s.on_time, s.disposal, s.mean_rectify_hours, s.overdue_open) for s in ranking] == [
        (1, T1, Ratio(1, 2), Ratio(2, 2), 39.0, 0),
        (2, T2, Ratio(1, 2), Ratio(2, 2), 528.0, 1),
        (3, T3, Ratio(0, 1), Ratio(1, 2), 2.0, 1),
    ]
    assert all(s.rank is None for s in team_ranking(OCT, AS_OF))  # two cases each: below the default five
    report = overdue_by_team(OCT, AS_OF)
    assert {t: [r.number for r in v] for t, v in report.items()} == {T3: ["NS-2026-000008"], T2: ["NS-2026-000004"]}


def test_summary_and_the_exports_hold_the_same_numbers(tmp_path: Path) -> None:
    table = summary_table(OCT, AS_OF)
    figures = {r[0][1]: r[1:] for r in table.rows}
    assert figures["Alerts"] == (10, None, None, None) and figures["Cases"] == (6, None, None, None)
    assert figures["On-time rate"] == (None, 0.4, 2, 5)
    assert figures["False-positive rate"] == (None, 2 / 9, 2, 9)  # A3, A7 of the nine triaged
    ranking = ranking_table(team_ranking(OCT, AS_OF, min_cases=1), {T1: "演示中队第一班组"})
    types = table_from_counts("types", ("违法类型", "Types"), Column("type", "类型", "Type"), counts(OCT, "type"))
    xlsx = tmp_path / "report.xlsx"
    to_xlsx([table, ranking, types], xlsx, note="2026年10月 演示街道 统计截至2026-11-05")
    wb = load_workbook(xlsx)
    assert wb.sheetnames == ["summary", "ranking", "types"]
    ws = wb["summary"]
    assert ws["A1"].value == "汇总" and ws["A2"].value.startswith("2026年10月")
    assert [c.value for c in ws[3]] == ["指标", "数量", "比率", "分子", "分母"]
    cells = {r[0]: r[1:] for r in ws.iter_rows(min_row=4, values_only=True)}
    assert cells["告警数"] == (10, None, None, None)
    assert cells["按时办结率"][1:] == (0.4, 2, 5) and cells["处置率"][1] == pytest.approx(5 / 6)
    assert ws.cell(row=4 + 4, column=3).number_format == "0.0%"
    rk = list(wb["ranking"].iter_rows(min_row=4, values_only=True))
    assert rk[0] == (1, "演示中队第一班组", 2, 0.5, 1.0, 39.0, 0) and rk[2][1] == T3
    csv_path = tmp_path / "summary.csv"
    text = to_csv(table, csv_path, lang="en")
    raw = csv_path.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")  # the BOM Excel needs to read UTF-8
    back = list(csv.reader(io.StringIO(raw.decode("utf-8-sig"))))
    assert back == list(csv.reader(io.StringIO(text)))
    assert back[0] == ["Figure", "Count", "Rate", "Numerator", "Denominator"]
    assert ["On-time rate", "", "0.4000", "2", "5"] in back and ["Alerts", "10", "", "", ""] in back
    zh = to_csv(types)
    assert zh.splitlines()[:2] == ["类型,数量,占比", "street_vending,4,0.4000"]


@pytest.fixture(params=["sqlite", "postgresql"])
def alerts_db(request: pytest.FixtureRequest) -> Iterator[tuple[Engine, Table]]:
    """The eleven alerts in a table of the case database's time type, on SQLite and on PostgreSQL."""
    url = "sqlite://" if request.param == "sqlite" else request.getfixturevalue("postgres_database")
    md = MetaData()
    alerts = Table("bureau_alerts", md, SqlColumn("number", String(32), primary_key=True),
                   SqlColumn("type", String(64)), SqlColumn("camera_id", String(64)),
                   SqlColumn("confirmed_at", UtcDateTime()))
    engine = create_engine(url)
    md.create_all(engine)
    with engine.begin() as conn:
        conn.execute(insert(alerts), [{"number": r.number, "type": r.type, "camera_id": r.camera_id,
                                       "confirmed_at": r.detected_at} for r in ROWS])
    yield engine, alerts
    md.drop_all(engine)
    engine.dispose()


def test_counts_in_the_database_match_the_rows(alerts_db: tuple[Engine, Table]) -> None:
    engine, alerts = alerts_db
    with engine.connect() as conn:
        for by in ("type", "camera_id"):
            assert counts_sql(conn, alerts, by, since=L(10, 1), until=L(11, 1)) == counts(OCT, by)
        assert counts_sql(conn, alerts, "type", where=alerts.c.camera_id == FENCE) == {"stray_dog": 3}
        for unit in ("day", "week", "month"):
            expected = counts_by_period(OCT, unit, SH, since=L(10, 1), until=L(11, 1))  # type: ignore[arg-type]
            got = counts_by_period_sql(conn, alerts, unit, SH, since=L(10, 1), until=L(11, 1))  # type: ignore[arg-type]
            assert got == expected, unit
        # A10 (00:30 on 1 November in Shanghai, 31 October in UTC) falls on 1 November.
        nov = counts_by_period_sql(conn, alerts, "day", SH, since=L(10, 31), until=L(11, 2))
        assert nov == {"2026-10-31": 1, "2026-11-01": 1}
        assert counts_by_period_sql(conn, alerts, "month", "Asia/Shanghai", since=L(9, 1), until=L(12, 1)) == {
            "2026-09": 0, "2026-10": 10, "2026-11": 1}


def test_sqlite_refuses_a_zone_whose_offset_changes() -> None:
    md = MetaData()
    t = Table("t", md, SqlColumn("confirmed_at", UtcDateTime()))
    engine = create_engine("sqlite://")
    md.create_all(engine)
    with engine.connect() as conn, pytest.raises(ValueError, match="changes its UTC offset"):
        counts_by_period_sql(conn, t, "day", "Europe/Berlin", since=L(10, 1), until=L(11, 1))  # DST ends 25 Oct


def test_rows_from_the_case_database(case_db_url: str) -> None:
    """The figures over the case database as it is today: statuses from the audit trail, grids from the
    organisation, deadlines from the catalogue (SQLite and PostgreSQL)."""
    sf = open_db(case_db_url)
    try:
        def draft(type_: str, camera: str, day: int) -> int:
            sealed = make_sealed(type_=type_, camera_id=camera, confirmed_at=datetime(2026, 11, day, 3, tzinfo=UTC))
            return draft_case(sf, sealed, "NS")[0].id

        c1 = draft("sidewalk_parking", CARPARK, 21)
        c2 = draft("street_vending", CARPARK, 22)
        draft("stray_dog", "cam-x", 23)  # its location (make_sealed's) lies in no grid of the example
        draft("stray_dog", CARPARK, 30)  # 30 November 11:00 Shanghai: after the window's end (30 Nov 00:00)
        confirm(sf, c1, "chen.jing")
        approve(sf, c1, "fa.zhi")
        dispatch(sf, c1, "chen.jing", assignee=T1)
        rectify(sf, c1, "sun.hao", note="车辆已驶离")
        close(sf, c1, "fa.zhi")
        dismiss(sf, c2, "chen.jing", "false_positive")
        org = load_organisation(Path(__file__).resolve().parents[1] / "examples" / "organisation.yaml")
        limits = default_catalogue().time_limit_table()
        with sf() as session:
            rows = case_rows(session, L(11, 1), L(11, 30), organisation=org, time_limits=limits, tz=SH)
    finally:
        sf.kw["bind"].dispose()
    assert [(r.type, r.status) for r in rows] == [
        ("sidewalk_parking", "closed"), ("street_vending", "dismissed"), ("stray_dog", "draft")]
    first, second, third = rows
    assert list(first.times) == ["draft", "confirmed", "approved", "dispatched", "rectified", "closed"]
    assert sorted(first.times.values()) == list(first.times.values())
    assert (first.grid_id, first.street_id, first.team_id) == ("yanshi-east", "yanshi-jd", T1)
    finish = limits.finish_due("sidewalk_parking", first.times["confirmed"], SH)
    assert finish is not None and first.due_at == finish.at
    assert (set(second.times), second.dismiss_reason, second.due_at) == ({"draft", "dismissed"}, "false_positive",
                                                                         None)
    assert (third.grid_id, third.street_id, third.team_id, list(third.times)) == (None, None, None, ["draft"])
    now = datetime.now(UTC)
    assert disposal_rate(rows, now) == Ratio(1, 1) and on_time_rate(rows, now) == Ratio(1, 1)
    assert false_positive_rates(rows) == {(CARPARK,): Ratio(1, 2)}
    assert counts(rows, "grid_id") == {"yanshi-east": 2, None: 1}


def test_deadline_and_open_cases_from_the_case_database(case_db_url: str) -> None:
    """A case confirmed again after being returned is held to the deadline of its first confirmation (as the
    figures always counted it), one confirmed once to the deadline stored on confirmation; the overdue report's
    read (``open_at``) takes the cases open at the instant and those finished after it, not those finished before."""
    from nonsite.cases import apply_action
    from nonsite.cases.db import Case

    sf = open_db(case_db_url)
    limits = default_catalogue().time_limit_table()
    try:
        def draft(day: int) -> int:
            sealed = make_sealed(type_="sidewalk_parking", camera_id=CARPARK,
                                 confirmed_at=datetime(2026, 11, day, 3, tzinfo=UTC))
            return draft_case(sf, sealed, "NS")[0].id

        def act(case_id: int, action: str, actor: str, at: datetime, **kw: object) -> None:
            apply_action(sf, case_id, action, actor, now=at, time_limits=limits, timezone="Asia/Shanghai",
                         **kw)  # type: ignore[arg-type]

        again, once, closed_before, closed_after = draft(2), draft(3), draft(4), draft(5)
        act(again, "confirm", "chen.jing", local(2026, 11, 2, 14))
        act(again, "return", "fa.zhi", local(2026, 11, 4, 10), note="证据不足")
        act(again, "confirm", "chen.jing", local(2026, 11, 9, 10))
        act(once, "confirm", "chen.jing", local(2026, 11, 3, 14))
        for cid, day in ((closed_before, 10), (closed_after, 20)):
            act(cid, "confirm", "chen.jing", local(2026, 11, 4, 14))
            act(cid, "dismiss", "fa.zhi", local(2026, 11, day, 10), reason="false_positive")
        with sf() as session:
            stored = {c.id: c.finish_due for c in session.query(Case)}
            rows = {r.number: r for r in case_rows(session, L(11, 1), L(12, 1), time_limits=limits, tz=SH)}
            open_rows = case_rows(session, None, L(12, 1), time_limits=limits, tz=SH, open_at=local(2026, 11, 15, 0))
            numbers = {c.id: c.number for c in session.query(Case)}
    finally:
        sf.kw["bind"].dispose()
    first = limits.finish_due("sidewalk_parking", local(2026, 11, 2, 14), SH)
    last = limits.finish_due("sidewalk_parking", local(2026, 11, 9, 10), SH)
    assert first is not None and last is not None and first.at != last.at
    assert stored[again] == last.at  # the workflow stores the latest confirmation's deadline ...
    assert rows[numbers[again]].due_at == first.at  # ... the figures count from the first, as before
    assert rows[numbers[once]].due_at == stored[once] is not None
    assert sorted(r.number for r in open_rows) == sorted(numbers[c] for c in (again, once, closed_after))
