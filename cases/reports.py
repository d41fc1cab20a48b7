"""The statistics a bureau reads, as tables with their charts: one builder for the console's ``/stats`` page, its
Excel and CSV exports, the ``/api/stats`` JSON for the city's big screen and the monthly PDF (统计月报), so the
four always hold the same numbers.

:func:`build_figures` turns :class:`~nonsite.cases.statistics.CaseRow` values (already narrowed to a period and an
area) into :class:`Figure` values: a :class:`~nonsite.cases.statistics.StatTable` (what the page lists and the
exports write) and a :class:`Chart` (which columns to draw, and how). The definitions of every figure are those of
:mod:`nonsite.cases.statistics` (docs/bureau.md, "The figures").

:func:`overdue_report` is the weekly/monthly overdue report (cases open past their deadline at the end of the
period, per team, and the list of them); :func:`hotspots` places cameras and grids with their counts on the
organisation's base map; :func:`monthly_pdf` renders the 统计月报 with charts drawn by reportlab (already the case
PDF's library, with the same embedded CJK font).
"""

from __future__ import annotations

import io
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

from nonsite.cases.statistics import (
    CaseRow,
    Column,
    StatTable,
    Unit,
    _bucket,
    counts_by_period,
    decisions,
    dismissal_reasons,
    disposal_rate,
    false_positive_rates,
    on_time_rate,
    overdue_by_team,
    period_label,
    ranking_table,
    step_durations,
    summary_table,
    team_ranking,
)
from nonsite.config.manifest import CONSOLE_LOCALES, locale_strings

__all__ = [
    "FIGURE_NAMES",
    "Chart",
    "Figure",
    "Hotspot",
    "Labels",
    "build_figures",
    "camera_places",
    "load_rows",
    "monthly_report",
    "figure_json",
    "hotspots",
    "month_period",
    "monthly_pdf",
    "overdue_report",
    "report_period",
    "table_json",
]

ChartKind = Literal["bar", "line", "pie"]
#: The figures :func:`build_figures` returns, in page order (also the names of the export files and JSON
#: endpoints: ``/api/stats/<name>``).
FIGURE_NAMES: tuple[str, ...] = (
    "summary", "by_period", "rates_by_period", "by_type", "by_street", "by_grid", "by_camera", "steps", "dismissals",
    "fp_camera", "fp_type", "decisions", "ranking",
)
#: At most this many categories are drawn in a chart (the table lists them all).
CHART_MAX = 15


@dataclass(frozen=True)
class Chart:
    """How a table is drawn: ``category`` is the column of the x axis (or the pie's slices), ``series`` the value
    columns; ``percent``: the values are fractions shown as percentages."""

    kind: ChartKind
    category: str
    series: tuple[str, ...]
    percent: bool = False


@dataclass(frozen=True)
class Figure:
    table: StatTable
    chart: Chart | None = None

    @property
    def name(self) -> str:
        return self.table.name


class Labels:
    """Names of ids in both languages: violation types, dismissal reasons, decisions and steps from the console's
    catalogues (``console/locales``), streets, grids and teams from the organisation, cameras from the cases."""

    def __init__(self, organisation: Any = None, camera_names: Mapping[str, str] | None = None) -> None:
        self.zh = locale_strings(CONSOLE_LOCALES, "zh")
        self.en = locale_strings(CONSOLE_LOCALES, "en")
        self.org = organisation
        self.cameras = dict(camera_names or {})

    def catalogue(self, group: str, value: str | None) -> tuple[str, str]:
        if value is None:
            return self.none()
        key = f"{group}.{value}"
        return self.zh.get(key, value), self.en.get(key, value)

    def none(self) -> tuple[str, str]:
        return self.zh.get("stats.none", "（未划分）"), self.en.get("stats.none", "(none)")

    def area(self, kind: str, value: str | None) -> tuple[str, str]:
        """A street, grid or team id (its organisation name), or a camera id (its name)."""
        if value is None:
            return self.none()
        name: str | None = None
        if kind == "camera_id":
            name = self.cameras.get(value) or None
        elif self.org is not None:
            if kind == "team_id":
                t = self.org.team(value)
                name = t.name if t else None
            elif kind == "grid_id":
                g = self.org.grid(value)
                name = g.name if g else None
            elif kind == "street_id":
                name = next((s.name for d in self.org.districts for s in d.streets if s.id == value), None)
        name = name or value
        return name, name

    def of(self, by: str, value: str | None) -> tuple[str, str]:
        if by == "type":
            return self.catalogue("type", value)
        return self.area(by, value)


# -- periods ---------------------------------------------------------------------------------------------------


def _zone(tz: str | ZoneInfo) -> ZoneInfo:
    return tz if isinstance(tz, ZoneInfo) else ZoneInfo(tz)


def _midnight(day: date, zone: ZoneInfo) -> datetime:
    return datetime.combine(day, time(0), tzinfo=zone).astimezone(UTC)


def report_period(kind: Literal["week", "month"], day: date, tz: str | ZoneInfo) -> tuple[datetime, datetime, str]:
    """[since, until) in UTC of the local ISO week (Monday first) or month holding ``day``, and its label
    (``2026-W44``, ``2026-11``)."""
    zone = _zone(tz)
    start = _bucket(day, kind)
    end = start + timedelta(days=7) if kind == "week" else (start.replace(day=28) + timedelta(days=4)).replace(day=1)
    return _midnight(start, zone), _midnight(end, zone), period_label(start, kind)


def month_period(month: str, tz: str | ZoneInfo) -> tuple[datetime, datetime, str]:
    """``2026-11`` -> [since, until) of that local month; ValueError with the expected form otherwise."""
    try:
        day = datetime.strptime(month, "%Y-%m").date()
    except ValueError:
        raise ValueError(f"month {month!r} is not YYYY-MM (e.g. 2026-11)") from None
    return report_period("month", day, tz)


# -- the figures -------------------------------------------------------------------------------------------------


_ID = Column("id", "编号", "Id")
_NAME = Column("name", "名称", "Name")
_ALERTS = Column("alerts", "告警数", "Alerts", "int")
_CASES = Column("cases", "立案数", "Cases", "int")
_SHARE = Column("share", "占比", "Share", "percent")
_TITLES: Mapping[str, tuple[str, str]] = {
    "by_type": ("按违法类型", "By violation type"),
    "by_street": ("按街道", "By street"),
    "by_grid": ("按网格", "By grid"),
    "by_camera": ("按摄像头", "By camera"),
}
_BY = {"by_type": "type", "by_street": "street_id", "by_grid": "grid_id", "by_camera": "camera_id"}


def _keyed(name: str, rows: Sequence[CaseRow], by: str, labels: Labels, as_of: datetime) -> Figure:
    alerts: Counter[str | None] = Counter(getattr(r, by) for r in rows)
    cases: Counter[str | None] = Counter(getattr(r, by) for r in rows if r.case_by(as_of))
    order = sorted(alerts, key=lambda k: (-alerts[k], -cases[k], k is None, k or ""))
    total = sum(alerts.values())
    body = tuple((k or "", labels.of(by, k), alerts[k], cases[k], alerts[k] / total if total else None) for k in order)
    zh, en = _TITLES[name]
    return Figure(StatTable(name, zh, en, (_ID, _NAME, _ALERTS, _CASES, _SHARE), body),
                  Chart("bar", "name", ("alerts", "cases")))


def _by_period(rows: Sequence[CaseRow], unit: Unit, tz: ZoneInfo, since: datetime | None, until: datetime | None,
               as_of: datetime) -> list[Figure]:
    alerts = counts_by_period(rows, unit, tz, since=since, until=until)
    cases = counts_by_period([r for r in rows if r.case_by(as_of)], unit, tz, since=since, until=until)
    unit_zh = {"day": "日", "week": "周", "month": "月"}[unit]
    counts = StatTable("by_period", f"按{unit_zh}趋势", f"Per {unit}", (
        Column("period", "时段", "Period"), _ALERTS, _CASES),
        tuple((p, n, cases.get(p, 0)) for p, n in alerts.items()))
    groups: dict[str, list[CaseRow]] = defaultdict(list)
    for r in rows:
        groups[period_label(_bucket(r.detected_at.astimezone(tz).date(), unit), unit)].append(r)
    rates = []
    for p in alerts:
        rs = groups.get(p, [])
        d, o = disposal_rate(rs, as_of), on_time_rate(rs, as_of)
        rates.append((p, d.denominator, d.numerator, d.value, o.numerator, o.denominator, o.value))
    rate_table = StatTable("rates_by_period", f"处置率与按时办结率（按{unit_zh}）",
                           f"Disposal and on-time rates per {unit}", (
        Column("period", "时段", "Period"), _CASES, Column("disposed", "已处置", "Disposed", "int"),
        Column("disposal", "处置率", "Disposal rate", "percent"),
        Column("on_time", "按时办结", "Finished on time", "int"),
        Column("decided", "应办结", "Due or finished", "int"),
        Column("on_time_rate", "按时办结率", "On-time rate", "percent")), tuple(rates))
    return [Figure(counts, Chart("line", "period", ("alerts", "cases"))),
            Figure(rate_table, Chart("line", "period", ("disposal", "on_time_rate"), percent=True))]


def _steps(rows: Sequence[CaseRow], labels: Labels, as_of: datetime) -> Figure:
    body = tuple((s.step, labels.catalogue("stats.step", s.step), s.n, s.mean_hours, s.median_hours)
                 for s in step_durations(rows, as_of))
    return Figure(StatTable("steps", "各环节平均用时（小时）", "Average time per step (hours)", (
        Column("id", "环节", "Step"), _NAME, Column("n", "完成数", "Completed", "int"),
        Column("mean_h", "平均小时", "Mean hours", "float"), Column("median_h", "中位小时", "Median hours", "float")),
        body), Chart("bar", "name", ("mean_h", "median_h")))


def _fp(name: str, rows: Sequence[CaseRow], by: str, labels: Labels) -> Figure:
    rates = false_positive_rates(rows, (by,))
    body = tuple((k[0] or "", labels.of(by, k[0]), r.numerator, r.denominator, r.value) for k, r in rates.items())
    zh, en = ("摄像头误报率", "False-positive rate per camera") if by == "camera_id" else \
        ("违法类型误报率", "False-positive rate per type")
    return Figure(StatTable(name, zh, en, (
        _ID, _NAME, Column("false_positives", "误报数", "False positives", "int"),
        Column("triaged", "已研判", "Triaged", "int"), Column("rate", "误报率", "False-positive rate", "percent")),
        body), Chart("bar", "name", ("rate",), percent=True))


def _shares(name: str, title: tuple[str, str], counts: Mapping[str, int], group: str, labels: Labels,
            key_title: tuple[str, str]) -> Figure:
    total = sum(counts.values())
    body = tuple((k, labels.catalogue(group, k), n, n / total if total else None) for k, n in counts.items())
    return Figure(StatTable(name, title[0], title[1], (
        Column("id", *key_title), _NAME, Column("count", "数量", "Count", "int"), _SHARE), body),
        Chart("pie", "name", ("count",)))


def build_figures(
    rows: Sequence[CaseRow], *, as_of: datetime, tz: str | ZoneInfo, unit: Unit = "day",
    since: datetime | None = None, until: datetime | None = None, labels: Labels | None = None,
    min_cases: int = 5,
) -> list[Figure]:
    """Every figure of :data:`FIGURE_NAMES` over ``rows`` (already selected by period and area), progress as of
    ``as_of``, the trend per ``unit`` over [since, until)."""
    labels = labels or Labels()
    zone = _zone(tz)
    rows = list(rows)
    out = [Figure(summary_table(rows, as_of))]
    out += _by_period(rows, unit, zone, since, until, as_of)
    out += [_keyed(name, rows, by, labels, as_of) for name, by in _BY.items()]
    out.append(_steps(rows, labels, as_of))
    out.append(_shares("dismissals", ("不予立案原因", "Dismissal reasons"), dismissal_reasons(rows), "reason", labels,
                       ("原因", "Reason")))
    out.append(_fp("fp_camera", rows, "camera_id", labels))
    out.append(_fp("fp_type", rows, "type", labels))
    decided, _ = decisions(rows)
    out.append(_shares("decisions", ("首违不罚：警告与处罚", "First offences: warnings vs penalties"), decided,
                       "decision", labels, ("决定", "Decision")))
    names = {s: labels.area("team_id", s)[0] for s in {r.team_id for r in rows if r.team_id}}
    ranking = ranking_table(team_ranking(rows, as_of, min_cases=min_cases), names)
    out.append(Figure(ranking, Chart("bar", "team", ("on_time", "disposal"), percent=True)))
    assert tuple(f.name for f in out) == FIGURE_NAMES
    return out


# -- the overdue report -------------------------------------------------------------------------------------------


def overdue_report(
    rows: Iterable[CaseRow], as_of: datetime, *, since: datetime, labels: Labels | None = None,
    tz: str | ZoneInfo = "Asia/Shanghai",
) -> tuple[StatTable, StatTable]:
    """The weekly/monthly overdue report (超期未办结): cases open at ``as_of`` (the end of the period, or now when
    it has not ended) past their deadline, per team (how many, how many of them fell due within the period
    [since, as_of), the longest overdue in days), and the list of those cases (most overdue first per team)."""
    labels = labels or Labels()
    zone = _zone(tz)
    per_team = overdue_by_team(rows, as_of)
    teams = []
    cases = []
    for team, rs in per_team.items():
        name = labels.area("team_id", team)
        new = sum(1 for r in rs if r.due_at is not None and r.due_at >= since)
        worst = max(((as_of - r.due_at).total_seconds() / 86400 for r in rs if r.due_at is not None), default=None)
        teams.append((team or "", name, len(rs), new, round(worst, 2) if worst is not None else None))
        for r in rs:
            assert r.due_at is not None
            cases.append((r.number, name, labels.catalogue("type", r.type), labels.area("grid_id", r.grid_id),
                          labels.catalogue("status", r.status),
                          r.due_at.astimezone(zone).strftime("%Y-%m-%d %H:%M"),
                          round((as_of - r.due_at).total_seconds() / 86400, 2)))
    by_team = StatTable("overdue_teams", "超期未办结（按队伍）", "Overdue open cases per team", (
        Column("id", "队伍编号", "Team id"), Column("team", "队伍", "Team"),
        Column("overdue", "超期未结", "Overdue open", "int"),
        Column("new", "本期新增超期", "Fell due in the period", "int"),
        Column("max_days", "最长超期(天)", "Longest overdue (days)", "float")), tuple(teams))
    listing = StatTable("overdue_cases", "超期未办结案件", "Overdue open cases", (
        Column("number", "案件编号", "Case"), Column("team", "队伍", "Team"), Column("type", "类型", "Type"),
        Column("grid", "网格", "Grid"), Column("status", "状态", "Status"),
        Column("due", "办结期限", "Deadline"), Column("days", "超期(天)", "Overdue (days)", "float")), tuple(cases))
    return by_team, listing


# -- the hotspot view ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Hotspot:
    kind: Literal["camera", "grid"]
    id: str
    name: str
    count: int
    x: float | None
    """Pixel position on the base map (None: it could not be placed)."""
    y: float | None


def hotspots(
    rows: Sequence[CaseRow], organisation: Any, camera_places: Mapping[str, tuple[float, float]],
    labels: Labels | None = None,
) -> list[Hotspot]:
    """Cameras and grids with their alert counts and their place on the organisation's base map (most first):
    ``points`` of the base map first, else a camera's ``camera_places`` (lat, lon) or a grid's polygon (the mean of
    its points) through the map's bounds."""
    labels = labels or Labels(organisation)
    base = organisation.base_map if organisation is not None else None
    out: list[Hotspot] = []

    def place(id_: str, lon_lat: tuple[float, float] | None) -> tuple[float | None, float | None]:
        if base is None:
            return None, None
        if id_ in base.points:
            x, y = base.points[id_]
            return float(x), float(y)
        p = base.pixel(*lon_lat) if lon_lat is not None else None
        return (round(p[0], 1), round(p[1], 1)) if p else (None, None)

    for cam, n in Counter(r.camera_id for r in rows).most_common():
        lat_lon = camera_places.get(cam)
        out.append(Hotspot("camera", cam, labels.area("camera_id", cam)[0], n,
                           *place(cam, (lat_lon[1], lat_lon[0]) if lat_lon else None)))
    for grid_id, n in Counter(r.grid_id for r in rows if r.grid_id).most_common():
        grid = organisation.grid(grid_id) if organisation is not None else None
        centre = None
        if grid is not None and grid.polygon:
            centre = (sum(p[0] for p in grid.polygon) / len(grid.polygon),
                      sum(p[1] for p in grid.polygon) / len(grid.polygon))
        assert grid_id is not None
        out.append(Hotspot("grid", grid_id, labels.area("grid_id", grid_id)[0], n, *place(grid_id, centre)))
    return out


# -- JSON ------------------------------------------------------------------------------------------------------


def _json_cell(value: Any, lang: str) -> Any:
    if isinstance(value, tuple) and len(value) == 2 and all(isinstance(x, str) for x in value):
        return value[1] if lang == "en" else value[0]
    return value


def table_json(table: StatTable, lang: str = "zh") -> dict[str, Any]:
    """A table as JSON: name, title, columns (key, label, kind: rates are fractions), rows as objects."""
    return {
        "name": table.name,
        "title": table.title(lang),
        "columns": [{"key": c.key, "label": c.label(lang), "kind": c.kind} for c in table.columns],
        "rows": [{c.key: _json_cell(v, lang) for c, v in zip(table.columns, row, strict=True)} for row in table.rows],
    }


def figure_json(figure: Figure, lang: str = "zh") -> dict[str, Any]:
    out = table_json(figure.table, lang)
    c = figure.chart
    out["chart"] = None if c is None else {"kind": c.kind, "category": c.category, "series": list(c.series),
                                           "percent": c.percent}
    return out


# -- the monthly PDF -------------------------------------------------------------------------------------------

_COLOURS = ("#2f6fb0", "#e07b39", "#3a9a5b", "#c0392b", "#8e44ad", "#16a085", "#d4ac0d", "#7f8c8d")


def _fmt(value: Any, kind: str, lang: str) -> str:
    value = _json_cell(value, lang)
    if value is None:
        return "—" if kind in ("percent", "float") else ""
    if kind == "percent":
        return f"{value * 100:.1f}%"
    if kind == "float":
        return f"{value:.2f}"
    return str(value)


def _chart_drawing(figure: Figure, font: str, lang: str, width: float) -> Any:
    """A reportlab Drawing of the figure's chart (None when there is nothing to draw)."""
    from reportlab.graphics.charts.barcharts import VerticalBarChart
    from reportlab.graphics.charts.legends import Legend
    from reportlab.graphics.charts.linecharts import HorizontalLineChart
    from reportlab.graphics.charts.piecharts import Pie
    from reportlab.graphics.shapes import Drawing
    from reportlab.lib import colors

    chart, table = figure.chart, figure.table
    if chart is None or not table.rows:
        return None
    keys = [c.key for c in table.columns]
    cols = {c.key: c for c in table.columns}
    rows = table.rows[:CHART_MAX] if chart.kind != "line" else table.rows
    cats = [str(_json_cell(r[keys.index(chart.category)], lang)) for r in rows]
    scale = 100.0 if chart.percent else 1.0
    data = [[(None if r[keys.index(s)] is None else float(r[keys.index(s)]) * scale) for r in rows]
            for s in chart.series]
    if all(v is None or v == 0 for series in data for v in series):
        return None
    height = 170.0
    d = Drawing(width, height)
    if chart.kind == "pie":
        pie = Pie()
        pie.x, pie.y, pie.width, pie.height = 30, 15, 140, 140
        pie.data = [v or 0 for v in data[0]]
        pie.labels = None
        for i in range(len(pie.data)):
            pie.slices[i].fillColor = colors.HexColor(_COLOURS[i % len(_COLOURS)])
            pie.slices[i].strokeColor = colors.white
        d.add(pie)
        legend = Legend()
        legend.x, legend.y, legend.fontName, legend.fontSize = 200, 140, font, 8
        legend.colorNamePairs = [(colors.HexColor(_COLOURS[i % len(_COLOURS)]), f"{c}  {int(v or 0)}")
                                 for i, (c, v) in enumerate(zip(cats, data[0], strict=True))]
        d.add(legend)
        return d
    plot = VerticalBarChart() if chart.kind == "bar" else HorizontalLineChart()
    plot.x, plot.y, plot.width, plot.height = 40, 45, width - 160, height - 60
    plot.data = [[v if v is not None else (0 if chart.kind == "bar" else None) for v in s] for s in data]
    step = max(1, -(-len(cats) // 16))  # at most ~16 labels under the axis
    plot.categoryAxis.categoryNames = [c if i % step == 0 else "" for i, c in enumerate(cats)]
    plot.categoryAxis.labels.fontName = font
    plot.categoryAxis.labels.fontSize = 6.5
    plot.categoryAxis.labels.angle = 30 if len(cats) > 6 else 0
    plot.categoryAxis.labels.boxAnchor = "ne" if len(cats) > 6 else "n"
    plot.valueAxis.valueMin = 0
    if chart.percent:
        plot.valueAxis.valueMax = 100
    plot.valueAxis.labels.fontName = font
    plot.valueAxis.labels.fontSize = 7
    for i in range(len(chart.series)):
        colour = colors.HexColor(_COLOURS[i % len(_COLOURS)])
        if chart.kind == "bar":
            plot.bars[i].fillColor = colour
            plot.bars[i].strokeColor = None
        else:
            plot.lines[i].strokeColor = colour
            plot.lines[i].strokeWidth = 1.5
    d.add(plot)
    legend = Legend()
    legend.x, legend.y, legend.fontName, legend.fontSize = width - 110, height - 20, font, 8
    legend.colorNamePairs = [(colors.HexColor(_COLOURS[i % len(_COLOURS)]),
                              cols[s].label(lang) + (" (%)" if chart.percent else ""))
                             for i, s in enumerate(chart.series)]
    d.add(legend)
    return d


def monthly_pdf(
    figures: Sequence[Figure], overdue: Sequence[StatTable], *, title: str, subtitle: str, lang: str = "zh",
    font_path: str | Path | None = None, hotspot_list: Sequence[Hotspot] = (),
) -> bytes:
    """The 统计月报 as PDF: the title and scope, then each figure's chart (reportlab graphics) and table, the overdue
    report and the hotspot ranking, with the embedded CJK font of the case documents."""
    from xml.sax.saxutils import escape

    from reportlab.lib import colors
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.styles import ParagraphStyle
    from reportlab.lib.units import mm
    from reportlab.platypus import KeepTogether, Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

    from nonsite.cases.document import _register_fonts, find_cjk_font

    font_file, regular, mono = find_cjk_font(font_path)
    font, _ = _register_fonts(str(font_file), regular, mono)
    h1 = ParagraphStyle("h1", fontName=font, fontSize=18, leading=24, spaceAfter=4)
    h2 = ParagraphStyle("h2", fontName=font, fontSize=12.5, leading=17, spaceBefore=10, spaceAfter=4)
    body = ParagraphStyle("body", fontName=font, fontSize=9, leading=13)
    cell = ParagraphStyle("cell", fontName=font, fontSize=7.5, leading=9.5)
    buf = io.BytesIO()
    doc = SimpleDocTemplate(buf, pagesize=A4, leftMargin=16 * mm, rightMargin=16 * mm, topMargin=16 * mm,
                            bottomMargin=16 * mm, title=title, author="nonsite")
    width = A4[0] - 32 * mm
    story: list[Any] = [Paragraph(escape(title), h1), Paragraph(escape(subtitle), body), Spacer(1, 6)]

    def table_flow(table: StatTable, limit: int = 40) -> Any:
        head = [Paragraph(escape(c.label(lang)), cell) for c in table.columns]
        data = [head] + [[Paragraph(escape(_fmt(v, c.kind, lang)), cell) for v, c in
                          zip(r, table.columns, strict=True)] for r in table.rows[:limit]]
        if not table.rows:
            data.append([Paragraph("—", cell)] + [""] * (len(head) - 1))
        t = Table(data, repeatRows=1, hAlign="LEFT")
        t.setStyle(TableStyle([
            ("GRID", (0, 0), (-1, -1), 0.3, colors.HexColor("#b0b7c0")),
            ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#e8edf3")),
            ("VALIGN", (0, 0), (-1, -1), "MIDDLE"),
        ]))
        return t

    for f in figures:
        parts: list[Any] = [Paragraph(escape(f.table.title(lang)), h2)]
        drawing = _chart_drawing(f, font, lang, width)
        if drawing is not None:
            parts.append(drawing)
        parts.append(table_flow(f.table))
        if len(f.table.rows) > 40:
            parts.append(Paragraph(escape(f"…（共 {len(f.table.rows)} 行，完整数据见 Excel 导出）" if lang != "en" else
                                          f"… ({len(f.table.rows)} rows; the Excel export has them all)"), body))
        story.append(KeepTogether(parts[:2]) if drawing is not None else parts[0])
        story.extend(parts[2:] if drawing is not None else parts[1:])
    for t in overdue:
        story += [Paragraph(escape(t.title(lang)), h2), table_flow(t, limit=200)]
    if hotspot_list:
        hs = StatTable("hotspots", "热点（摄像头与网格，按告警数）", "Hotspots (cameras and grids by alerts)", (
            Column("kind", "类别", "Kind"), Column("name", "名称", "Name"), Column("count", "告警数", "Alerts", "int")),
            tuple(((("摄像头", "camera") if h.kind == "camera" else ("网格", "grid")), h.name, h.count)
                  for h in hotspot_list))
        story += [Paragraph(escape(hs.title(lang)), h2), table_flow(hs)]
    doc.build(story)
    return buf.getvalue()


# -- from the case database ------------------------------------------------------------------------------------


def camera_places(session: Any) -> tuple[dict[str, str], dict[str, tuple[float, float]]]:
    """Camera names and where each camera's cases were (mean lat, lon), from the cases table (one query)."""
    from sqlalchemy import func, select

    from nonsite.cases.db import Case

    names: dict[str, str] = {}
    places: dict[str, tuple[float, float]] = {}
    q = select(Case.camera_id, func.max(Case.camera_name), func.avg(Case.lat), func.avg(Case.lon)) \
        .group_by(Case.camera_id)
    for cam, name, lat, lon in session.execute(q):
        names[cam] = name or ""
        if lat is not None and lon is not None:
            places[cam] = (float(lat), float(lon))
    return names, places


def load_rows(
    session: Any, since: datetime | None, until: datetime | None, *, organisation: Any = None,
    time_limits: Any = None, tz: str | ZoneInfo = "Asia/Shanghai", streets: Sequence[str] = (),
    grids: Sequence[str] = (), open_at: datetime | None = None,
) -> list[CaseRow]:
    """The case rows detected in [since, until) in the given streets/grids (empty: everywhere); with ``open_at``
    only those that may have been open at that instant (what the overdue report needs)."""
    from nonsite.cases.statistics import case_rows, select_rows

    rows = case_rows(session, since, until, organisation=organisation, time_limits=time_limits, tz=tz,
                     open_at=open_at)
    return select_rows(rows, streets=streets, grids=grids)


def monthly_report(
    session: Any, month: str, *, as_of: datetime, tz: str | ZoneInfo = "Asia/Shanghai", organisation: Any = None,
    time_limits: Any = None, streets: Sequence[str] = (), grids: Sequence[str] = (), lang: str = "zh",
    font_path: str | Path | None = None, area_text: str = "",
) -> bytes:
    """The 统计月报 of ``month`` (YYYY-MM) as PDF: the figures of the month's alerts (progress as of ``as_of``, as on
    the statistics page), the month's overdue report (as of the month's end, or ``as_of`` before it ends) and the
    hotspots."""
    zone = _zone(tz)
    since, until, label = month_period(month, zone)
    names, places = camera_places(session)
    labels = Labels(organisation, names)
    rows = load_rows(session, since, until, organisation=organisation, time_limits=time_limits, tz=zone,
                     streets=streets, grids=grids)
    figures = build_figures(rows, as_of=as_of, tz=zone, unit="day", since=since, until=until, labels=labels)
    end = min(until, as_of)
    before_end = load_rows(session, None, until, organisation=organisation, time_limits=time_limits, tz=zone,
                           streets=streets, grids=grids, open_at=end)
    overdue = overdue_report(before_end, end, since=since, labels=labels, tz=zone)
    spots = hotspots(rows, organisation, places, labels)
    if lang == "en":
        title = f"Monthly statistics {label}"
        subtitle = (f"Alerts detected {label} ({area_text or 'all areas'}); progress as of "
                    f"{as_of.astimezone(zone):%Y-%m-%d %H:%M}; overdue as of {end.astimezone(zone):%Y-%m-%d %H:%M}.")
    else:
        title = f"统计月报 {label}"
        subtitle = (f"统计范围：{label} 检测到的告警（{area_text or '全部区域'}）；办理进度截至 "
                    f"{as_of.astimezone(zone):%Y-%m-%d %H:%M}；超期统计截至 {end.astimezone(zone):%Y-%m-%d %H:%M}。")
    return monthly_pdf(figures, overdue, title=title, subtitle=subtitle, lang=lang, font_path=font_path,
                       hotspot_list=spots)
