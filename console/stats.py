"""The statistics page (``/stats``), its exports, the overdue report, the monthly PDF and ``/api/stats`` for the
city's big screen. Every number comes from :func:`nonsite.cases.reports.build_figures` over the same rows, so the
page, the Excel/CSV files, the JSON and the PDF agree.

Filters (query parameters, all optional): ``from``/``to`` (local dates, ``to`` included; default: this month so
far) or ``month=YYYY-MM``; ``street`` and ``grid`` (organisation ids); ``unit`` (day | week | month: the trend's
step; default by the length of the period). Progress (处置率, 按时办结率, overdue) is judged now (the console's
clock).

Who: supervisors, leaders, admins, reviewers and operators (the statistics cover every team's cases); field
officers do not (they see only their teams' cases). API tokens need the scope ``stats:read``. The case-list export
(``/export/cases``) follows the queue's filters and visibility (a field officer's own teams), scope ``cases:read``.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse, JSONResponse, Response

from nonsite.cases.organisation import base_map_file
from nonsite.cases.queries import search_cases
from nonsite.cases.reports import (
    FIGURE_NAMES,
    Figure,
    Hotspot,
    Labels,
    build_figures,
    camera_places,
    figure_json,
    hotspots,
    load_rows,
    monthly_report,
    overdue_report,
    report_period,
    table_json,
)
from nonsite.cases.statistics import Column, StatTable, to_csv, to_xlsx
from nonsite.console.auth import authorize, principal_of
from nonsite.console.render import render, resolve_lang
from nonsite.console.views import ConsoleState, parse_filter, root_path, scoped, state_of

pages = APIRouter(include_in_schema=False, dependencies=[Depends(authorize)])
api = APIRouter(prefix="/api", dependencies=[Depends(authorize)], tags=["statistics"])

HERE = Path(__file__).resolve().parent
#: The charting library, copied here by ``make setup`` from console/vendor (npm); the page lists its tables
#: without it.
ECHARTS = HERE / "static" / "vendor" / "echarts.min.js"
XLSX_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_MAX_DAYS = 3 * 366
EXPORT_ROWS = 10_000


@dataclass(frozen=True)
class StatsScope:
    """The period and area of a statistics request, and what was wrong with its parameters."""

    since: datetime
    until: datetime
    first: date
    last: date
    unit: Literal["day", "week", "month"]
    streets: tuple[str, ...]
    grids: tuple[str, ...]
    problems: tuple[str, ...]

    def query(self) -> dict[str, str]:
        q = {"from": self.first.isoformat(), "to": self.last.isoformat(), "unit": self.unit}
        if self.streets:
            q["street"] = self.streets[0]
        if self.grids:
            q["grid"] = self.grids[0]
        return q


def _day(text: str) -> date:
    """A date of the years 2000-2099 (YYYY-MM-DD); ValueError otherwise."""
    day = date.fromisoformat(text[:10]) if len(text) == 10 else date.fromisoformat("x")
    if not 2000 <= day.year <= 2099:
        raise ValueError(f"{text}: a year from 2000 to 2099")
    return day


def parse_scope(params: Any, state: ConsoleState) -> StatsScope:
    """The period and area of ``params`` (bad values are reported and replaced by the defaults)."""
    zone = state.zone
    today = state.clock().astimezone(zone).date()
    problems: list[str] = []
    first, last = today.replace(day=1), today
    month = params.get("month")
    if month:
        try:
            m = datetime.strptime(month, "%Y-%m").date()
            if not 2000 <= m.year <= 2099:
                raise ValueError(month)
            first = m
            last = (m.replace(day=28) + timedelta(days=4)).replace(day=1) - timedelta(days=1)
        except ValueError:
            problems.append(f"month={month!r}: write YYYY-MM (e.g. 2026-11)")
    else:
        for key in ("from", "to"):
            value = params.get(key)
            if not value:
                continue
            try:
                if key == "from":
                    first = _day(value)
                else:
                    last = _day(value)
            except ValueError:
                problems.append(f"{key}={value!r}: write a date YYYY-MM-DD")
    if last < first:
        problems.append("the period ends before it starts; showing this month")
        first, last = today.replace(day=1), today
    if (last - first).days > _MAX_DAYS:
        problems.append(f"at most {_MAX_DAYS} days at once; showing the last {_MAX_DAYS}")
        first = last - timedelta(days=_MAX_DAYS)
    span = (last - first).days + 1
    unit = params.get("unit") or ("day" if span <= 62 else "week" if span <= 370 else "month")
    if unit not in ("day", "week", "month"):
        problems.append(f"unit={unit!r}: use day, week or month")
        unit = "day" if span <= 62 else "week"
    org = state.organisation
    areas: dict[str, tuple[str, ...]] = {}
    for key, known in (("street", {s.id for d in org.districts for s in d.streets} if org else None),
                       ("grid", {g.id for d in org.districts for s in d.streets for g in s.grids} if org else None)):
        value = params.get(key) or ""
        if value and (not _ID.match(value) or (known is not None and value not in known)):
            problems.append(f"{key}={value[:64]!r}: not a {key} of the organisation")
            value = ""
        areas[key] = (value,) if value else ()
    since = datetime.combine(first, datetime.min.time(), tzinfo=zone).astimezone(UTC)
    until = datetime.combine(last + timedelta(days=1), datetime.min.time(), tzinfo=zone).astimezone(UTC)
    return StatsScope(since, until, first, last, unit, areas["street"], areas["grid"], tuple(problems))  # type: ignore[arg-type]


@dataclass
class Computed:
    figures: list[Figure]
    hotspots: list[Hotspot]
    labels: Labels
    as_of: datetime


def compute(state: ConsoleState, scope: StatsScope) -> Computed:
    as_of = state.clock()
    with state.session_factory() as session:
        names, places = camera_places(session)
        labels = Labels(state.organisation, names)
        rows = load_rows(session, scope.since, scope.until, organisation=state.organisation,
                         time_limits=state.time_limits, tz=state.zone, streets=scope.streets, grids=scope.grids)
    figures = build_figures(rows, as_of=as_of, tz=state.zone, unit=scope.unit, since=scope.since,
                            until=scope.until, labels=labels)
    return Computed(figures, hotspots(rows, state.organisation, places, labels), labels, as_of)


def hotspot_table(spots: list[Hotspot]) -> StatTable:
    return StatTable("hotspots", "热点（摄像头与网格）", "Hotspots (cameras and grids)", (
        Column("kind", "类别", "Kind"), Column("id", "编号", "Id"), Column("name", "名称", "Name"),
        Column("alerts", "告警数", "Alerts", "int"), Column("x", "图上X", "Map x", "float"),
        Column("y", "图上Y", "Map y", "float")),
        tuple(((("摄像头", "camera") if h.kind == "camera" else ("网格", "grid")), h.id, h.name, h.count, h.x, h.y)
              for h in spots))


def area_text(state: ConsoleState, scope: StatsScope, lang: str) -> str:
    labels = Labels(state.organisation)
    parts = [labels.area("street_id", s)[0] for s in scope.streets] + [labels.area("grid_id", g)[0]
                                                                         for g in scope.grids]
    return "、".join(parts) if parts else ("全部区域" if lang != "en" else "all areas")


def _note(state: ConsoleState, scope: StatsScope, as_of: datetime, lang: str) -> str:
    at = as_of.astimezone(state.zone).strftime("%Y-%m-%d %H:%M")
    if lang == "en":
        return f"Period {scope.first} to {scope.last} · area: {area_text(state, scope, lang)} · as of {at}"
    return f"统计期间 {scope.first} 至 {scope.last} · 区域：{area_text(state, scope, lang)} · 截至 {at}"


def _download(data: bytes, filename: str, media_type: str) -> Response:
    ascii_name = re.sub(r"[^A-Za-z0-9_.-]", "_", filename)
    return Response(data, media_type=media_type, headers={
        "Content-Disposition": f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename)}",
        "Cache-Control": "no-store"})


def export_response(tables: list[StatTable], fmt: str, stem: str, lang: str, note: str) -> Response:
    if fmt == "csv":
        if len(tables) != 1:
            raise ValueError("CSV holds one table; name it (table=...)")
        text = to_csv(tables[0], lang=lang)
        return _download(("\ufeff" + text).encode("utf-8"), f"{stem}.csv", "text/csv; charset=utf-8")
    buf = io.BytesIO()
    to_xlsx(tables, buf, lang, note=note)
    return _download(buf.getvalue(), f"{stem}.xlsx", XLSX_TYPE)


def _bad(request: Request, message: str, status: int = 422) -> JSONResponse:
    from nonsite.console.api import err

    return err(request, status, "bad_request", message, "error.bad_text", {"param": "", "message": message})  # type: ignore[no-any-return]


def _figure_url(request: Request, scope: StatsScope, **extra: str) -> str:
    return f"{root_path(request)}/stats/export?" + urlencode({**scope.query(), **extra})


def _area_choices(state: ConsoleState) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    org = state.organisation
    if org is None:
        return [], []
    streets = [(s.id, s.name) for d in org.districts for s in d.streets]
    grids = [(g.id, f"{s.name} · {g.name}") for d in org.districts for s in d.streets for g in s.grids]
    return streets, grids


@pages.get("/stats", name="stats")
def stats_page(request: Request) -> Response:
    """Charts and tables of the period and area; exports per chart; the hotspot map."""
    state = state_of(request)
    scope = parse_scope(request.query_params, state)
    lang = resolve_lang(request, state)[0]
    done = compute(state, scope)
    data = [figure_json(f, lang) for f in done.figures]
    payload = {"figures": data, "lang": lang}
    base = state.organisation.base_map if state.organisation is not None else None
    placed = [h for h in done.hotspots if h.x is not None and h.y is not None]
    top = max((h.count for h in placed), default=0)
    streets, grids = _area_choices(state)
    return render(request, "stats.html", {
        "scope": scope, "figures": done.figures, "tables": {f.name: d for f, d in zip(done.figures, data, strict=True)},
        "summary": data[0], "stats_json": _script_json(payload), "echarts": ECHARTS.is_file(),
        "export_url": lambda **kw: _figure_url(request, scope, **kw),
        "pdf_url": f"{root_path(request)}/stats/report.pdf?" + urlencode(
            {"month": scope.first.strftime("%Y-%m"), **{k: v for k, v in scope.query().items()
                                                        if k in ("street", "grid")}}),
        "base_map": base, "spots": done.hotspots, "placed": placed,
        "radius": lambda n: round(6 + 22 * (n / top) ** 0.5, 1) if top else 6,
        "streets": streets, "grids": grids, "note": _note(state, scope, done.as_of, lang),
        "overdue_url": f"{root_path(request)}/stats/overdue",
    })


def _script_json(payload: Any) -> str:
    import json

    return json.dumps(payload, ensure_ascii=False).replace("<", "\\u003c").replace(">", "\\u003e") \
        .replace("&", "\\u0026")


@pages.get("/stats/export", name="stats_export")
def stats_export(request: Request, table: str = Query("all", max_length=32),
                 format: str = Query("xlsx", pattern="^(xlsx|csv)$")) -> Response:  # noqa: A002
    """One figure's table (``table=by_type``…, ``hotspots``), or every table (``all``, Excel only)."""
    state = state_of(request)
    scope = parse_scope(request.query_params, state)
    lang = resolve_lang(request, state)[0]
    done = compute(state, scope)
    tables = {f.name: f.table for f in done.figures}
    tables["hotspots"] = hotspot_table(done.hotspots)
    if table == "all":
        chosen = [*tables.values()]
    elif table in tables:
        chosen = [tables[table]]
    else:
        return _bad(request, f"no statistics table {table!r}; use all or one of {', '.join(tables)}", 404)
    if format == "csv" and len(chosen) != 1:
        return _bad(request, "CSV holds one table: name it (table=by_type, ...), or use format=xlsx")
    stem = f"nonsite-stats-{table}-{scope.first}-{scope.last}"
    return export_response(chosen, format, stem, lang, _note(state, scope, done.as_of, lang))


@dataclass(frozen=True)
class OverdueScope:
    kind: Literal["week", "month"]
    day: date
    since: datetime
    until: datetime
    label: str
    as_of: datetime
    problems: tuple[str, ...]


def parse_overdue(params: Any, state: ConsoleState) -> OverdueScope:
    problems = []
    kind = params.get("period") or "week"
    if kind not in ("week", "month"):
        problems.append(f"period={kind!r}: use week or month")
        kind = "week"
    now = state.clock()
    day = now.astimezone(state.zone).date()
    if params.get("date"):
        try:
            day = _day(params["date"])
        except ValueError:
            problems.append(f"date={params['date']!r}: write a date YYYY-MM-DD")
    since, until, label = report_period(kind, day, state.zone)
    return OverdueScope(kind, day, since, until, label, min(until, now), tuple(problems))  # type: ignore[arg-type]


def overdue_tables(state: ConsoleState, scope: StatsScope, period: OverdueScope) -> tuple[StatTable, StatTable]:
    with state.session_factory() as session:
        names, _ = camera_places(session)
        rows = load_rows(session, None, period.until, organisation=state.organisation,
                         time_limits=state.time_limits, tz=state.zone, streets=scope.streets, grids=scope.grids,
                         open_at=period.as_of)
    return overdue_report(rows, period.as_of, since=period.since, labels=Labels(state.organisation, names),
                          tz=state.zone)


@pages.get("/stats/overdue", name="stats_overdue")
def overdue_page(request: Request) -> Response:
    """The weekly / monthly overdue report: cases open past their deadline at the period's end, per team."""
    state = state_of(request)
    scope = parse_scope(request.query_params, state)
    period = parse_overdue(request.query_params, state)
    lang = resolve_lang(request, state)[0]
    teams, listing = overdue_tables(state, scope, period)
    area = {k: v for k, v in scope.query().items() if k in ("street", "grid")}
    q = {"period": period.kind, "date": period.day.isoformat(), **area}
    streets, grids = _area_choices(state)
    return render(request, "stats_overdue.html", {
        "period": period, "teams": table_json(teams, lang), "cases": table_json(listing, lang),
        "problems": (*scope.problems, *period.problems), "scope": scope, "streets": streets, "grids": grids,
        "xlsx_url": f"{root_path(request)}/stats/overdue/export?" + urlencode({**q, "format": "xlsx"}),
        "csv_url": f"{root_path(request)}/stats/overdue/export?" + urlencode({**q, "format": "csv"}),
        "prev_url": f"{root_path(request)}/stats/overdue?" + urlencode({
            **q, "date": (period.since.astimezone(state.zone).date() - timedelta(days=1)).isoformat()}),
        "next_url": f"{root_path(request)}/stats/overdue?" + urlencode({
            **q, "date": period.until.astimezone(state.zone).date().isoformat()}),
    })


@pages.get("/stats/overdue/export", name="stats_overdue_export")
def overdue_export(request: Request, format: str = Query("xlsx", pattern="^(xlsx|csv)$"),  # noqa: A002
                   table: str = Query("overdue_teams", pattern="^(overdue_teams|overdue_cases)$")) -> Response:
    """The overdue report as Excel (both tables) or CSV (``table=overdue_teams`` or ``overdue_cases``)."""
    state = state_of(request)
    scope = parse_scope(request.query_params, state)
    period = parse_overdue(request.query_params, state)
    lang = resolve_lang(request, state)[0]
    teams, listing = overdue_tables(state, scope, period)
    at = period.as_of.astimezone(state.zone).strftime("%Y-%m-%d %H:%M")
    note = (f"超期未办结 {period.label} · 区域：{area_text(state, scope, lang)} · 截至 {at}" if lang != "en" else
            f"Overdue {period.label} · area: {area_text(state, scope, lang)} · as of {at}")
    chosen = [teams, listing] if format == "xlsx" else [teams if table == "overdue_teams" else listing]
    return export_response(chosen, format, f"nonsite-overdue-{period.label}", lang, note)


@pages.get("/stats/report.pdf", name="stats_report_pdf")
def report_pdf(request: Request, month: str = Query("", max_length=7)) -> Response:
    """统计月报: the month's figures with their charts, the overdue report and the hotspots, as PDF."""
    state = state_of(request)
    scope = parse_scope(request.query_params, state)
    lang = resolve_lang(request, state)[0]
    month = month or state.clock().astimezone(state.zone).strftime("%Y-%m")
    if not re.fullmatch(r"\d{4}-\d{2}", month):
        return _bad(request, f"month {month!r} is not YYYY-MM (e.g. 2026-11)")
    from nonsite.cases.document import FontMissing

    try:
        with state.session_factory() as session:
            pdf = monthly_report(session, month, as_of=state.clock(), tz=state.zone, organisation=state.organisation,
                                 time_limits=state.time_limits, streets=scope.streets, grids=scope.grids, lang=lang,
                                 font_path=getattr(state.documents, "font_path", None),
                                 area_text=area_text(state, scope, lang))
    except ValueError as exc:
        return _bad(request, str(exc))
    except FontMissing as exc:
        return _bad(request, str(exc), 503)
    return _download(pdf, f"nonsite-monthly-{month}.pdf", "application/pdf")


@pages.get("/stats/basemap", name="stats_basemap")
def basemap(request: Request) -> Response:
    """The organisation's base-map picture (the hotspot view's background)."""
    state = state_of(request)
    path = base_map_file(state.organisation) if state.organisation is not None else None
    if path is None or not path.is_file() or path.suffix.lower() not in (".png", ".jpg", ".jpeg"):
        return _bad(request, "no base map is configured (organisation: base_map.image, a PNG or JPEG)", 404)
    media = "image/png" if path.suffix.lower() == ".png" else "image/jpeg"
    return FileResponse(path, media_type=media, headers={"Cache-Control": "private, max-age=300"})


# -- the case list export ----------------------------------------------------------------------------------


@pages.get("/export/cases", name="cases_export")
def cases_export(request: Request, format: str = Query("xlsx", pattern="^(xlsx|csv)$")) -> Response:  # noqa: A002
    """The queue / search list (its filters, what the user may see) as Excel or CSV, at most 10,000 cases."""
    state = state_of(request)
    lang = resolve_lang(request, state)[0]
    sel, _ = parse_filter(request.query_params, state.zone)
    flt = scoped(state, principal_of(request), sel.filter)
    labels = Labels(state.organisation)
    rows = []
    with state.session_factory() as session:
        offset = 0
        while offset < EXPORT_ROWS:
            page = search_cases(session, flt, limit=1000, offset=offset)
            for c in page.items:
                rows.append((c.number, labels.catalogue("type", c.type), labels.catalogue("status", c.status.value),
                             c.camera_name or c.camera_id, c.address or "", labels.area("team_id", c.team),
                             c.confirmed_at.astimezone(state.zone).strftime("%Y-%m-%d %H:%M:%S"),
                             c.due_at.astimezone(state.zone).strftime("%Y-%m-%d %H:%M") if c.due_at else ""))
            offset += len(page.items)
            if len(page.items) < 1000:
                break
    table = StatTable("cases", "案件列表", "Cases", (
        Column("number", "案件编号", "Case"), Column("type", "类型", "Type"), Column("status", "状态", "Status"),
        Column("camera", "摄像头", "Camera"), Column("address", "地址", "Address"), Column("team", "队伍", "Team"),
        Column("detected", "检测时间", "Detected"), Column("due", "当前环节期限", "Current step due")), tuple(rows))
    stamp = state.clock().astimezone(state.zone).strftime("%Y%m%d-%H%M")
    return export_response([table], format, f"nonsite-cases-{stamp}", lang, sel.query())


# -- JSON for the big screen -------------------------------------------------------------------------------


def _scope_params(
    from_: str = Query("", alias="from", max_length=32, description="First day (YYYY-MM-DD, city time; default: "
                       "the first of this month)."),
    to: str = Query("", max_length=32, description="Last day, included (YYYY-MM-DD; default: today)."),
    month: str = Query("", max_length=16, description="A whole month (YYYY-MM) instead of from/to."),
    street: str = Query("", max_length=64, description="Only this street (organisation id)."),
    grid: str = Query("", max_length=64, description="Only this grid (organisation id)."),
    unit: str = Query("", max_length=8, description="Trend step: day, week or month (default by the period's "
                      "length)."),
) -> None:
    """The period and area parameters of every ``/api/stats`` call (read by :func:`parse_scope`; a bad value is
    ignored and named in ``problems``)."""


def _overdue_params(
    period: str = Query("week", max_length=8, description="week (ISO, Monday first) or month."),
    date_: str = Query("", alias="date", max_length=32, description="A day in the week or month (YYYY-MM-DD; "
                       "default: today)."),
) -> None:
    """The period of the overdue report (read by :func:`parse_overdue`)."""


def _meta(state: ConsoleState, scope: StatsScope, as_of: datetime) -> dict[str, Any]:
    return {"from": scope.first.isoformat(), "to": scope.last.isoformat(), "unit": scope.unit,
            "since": scope.since.isoformat(), "until": scope.until.isoformat(), "as_of": as_of.isoformat(),
            "timezone": state.zone.key, "street": list(scope.streets), "grid": list(scope.grids),
            "problems": list(scope.problems)}


@api.get("/stats", name="api_stats", dependencies=[Depends(_scope_params)])
def api_stats(request: Request) -> JSONResponse:
    """Every figure of the period and area (``from``, ``to`` or ``month``; ``street``, ``grid``; ``unit``): each
    a table (columns with key, label, kind; rows as objects; rates as fractions, null when undefined) and how the
    page charts it."""
    state = state_of(request)
    scope = parse_scope(request.query_params, state)
    lang = resolve_lang(request, state)[0]
    done = compute(state, scope)
    return JSONResponse({**_meta(state, scope, done.as_of), "figures": [figure_json(f, lang) for f in done.figures]})


@api.get("/stats/hotspots", name="api_stats_hotspots", dependencies=[Depends(_scope_params)])
def api_stats_hotspots(request: Request) -> JSONResponse:
    """Cameras and grids with their alert counts and pixel positions on the base map (null: not placed)."""
    state = state_of(request)
    scope = parse_scope(request.query_params, state)
    done = compute(state, scope)
    base = state.organisation.base_map if state.organisation is not None else None
    return JSONResponse({**_meta(state, scope, done.as_of),
                         "base_map": None if base is None else {"url": f"{root_path(request)}/stats/basemap",
                                                                "size": list(base.size)},
                         "hotspots": [{"kind": h.kind, "id": h.id, "name": h.name, "alerts": h.count, "x": h.x,
                                       "y": h.y} for h in done.hotspots]})


@api.get("/stats/overdue", name="api_stats_overdue",
         dependencies=[Depends(_scope_params), Depends(_overdue_params)])
def api_stats_overdue(request: Request) -> JSONResponse:
    """The overdue report (``period=week|month``, ``date`` within it; ``street``, ``grid``)."""
    state = state_of(request)
    scope = parse_scope(request.query_params, state)
    period = parse_overdue(request.query_params, state)
    lang = resolve_lang(request, state)[0]
    teams, listing = overdue_tables(state, scope, period)
    return JSONResponse({"period": period.kind, "label": period.label, "since": period.since.isoformat(),
                         "until": period.until.isoformat(), "as_of": period.as_of.isoformat(),
                         "problems": [*scope.problems, *period.problems],
                         "teams": table_json(teams, lang), "cases": table_json(listing, lang)})


@api.get("/stats/{name}", name="api_stats_figure", dependencies=[Depends(_scope_params)])
def api_stats_figure(request: Request, name: str) -> JSONResponse:
    """One figure (``summary``, ``by_type``, ``by_street``, ``by_grid``, ``by_camera``, ``by_period``,
    ``rates_by_period``, ``steps``, ``dismissals``, ``fp_camera``, ``fp_type``, ``decisions``, ``ranking``)."""
    state = state_of(request)
    if name not in FIGURE_NAMES:
        return _bad(request, f"no figure {name[:40]!r}; use one of {', '.join(FIGURE_NAMES)}", 404)
    scope = parse_scope(request.query_params, state)
    lang = resolve_lang(request, state)[0]
    done = compute(state, scope)
    figure = next(f for f in done.figures if f.name == name)
    return JSONResponse({**_meta(state, scope, done.as_of), **figure_json(figure, lang)})


__all__ = ["ECHARTS", "api", "compute", "pages", "parse_scope"]
