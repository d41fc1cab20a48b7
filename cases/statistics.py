"""The figures a bureau is graded on, over plain case rows, and their export to Excel and CSV.

Every figure is computed from :class:`CaseRow` values (one per alert/case; the wiring builds them from the
``cases`` table and the audit trail) that the caller has already narrowed to a period and an area with
:func:`select_rows`. The period is **by detection time** (``detected_at``: when the violation was confirmed
by the pipeline, ``Case.confirmed_at``); a figure about progress is taken **as of** a moment (``as_of``),
so a report for October run on 5 November counts what had happened by 5 November. Days, weeks and months
are those of the city's time zone.

Words used in the definitions:

- **alert** (告警): every row (every drafted violation, whatever became of it);
- **case** (立案): an alert an operator confirmed (it has a ``confirmed`` time, by ``as_of`` where a figure
  has one) — alerts dismissed in triage are not cases;
- **triaged** (已研判): an alert an operator confirmed or that was dismissed;
- **finished** (办结): a case closed (结案) or dismissed after confirmation (不予立案/撤销), at or before
  ``as_of``; its finishing time is that of the first of the two;
- **disposed** (已处置): a case that reached ``rectified`` (the field team's disposal and feedback) or
  finished, at or before ``as_of``;
- **deadline** (``due_at``): the time by which the case should be finished (限时办结: the due of its last
  step, or a 督办's new deadline); finishing before ``due_at`` is on time (``due_at`` is the first late
  instant, as in :mod:`nonsite.cases.deadlines`).

The figures (each a :class:`Ratio` where it is a rate; a rate with a zero denominator is None, shown "—"):

- **counts** (:func:`counts`, :func:`counts_by_period`): alerts (or cases) per type, street, grid, camera,
  team, status, day / ISO week (Monday first) / month;
- **处置率 disposal rate** (:func:`disposal_rate`) = disposed cases / cases;
- **结案率 closure rate** (:func:`closure_rate`) = cases closed by ``as_of`` / cases;
- **按时办结率 on-time rate** (:func:`on_time_rate`) = cases finished before their deadline / (cases finished
  + cases still open whose deadline has passed), counting only cases with a deadline. Open cases past their
  deadline count against the rate, so leaving a late case open does not improve it; open cases not yet due
  are left out (undecided);
- **average time per step** (:func:`step_durations`): for each step, the mean and median hours from the
  first time a case entered the step's status to the first time it left it forward (confirm: drafted →
  confirmed or dismissed in triage; review: confirmed → approved, returned or dismissed; dispatch: approved →
  dispatched; rectify: dispatched → rectified; close: rectified → closed); elapsed time, round the clock;
- **dismissal reasons** (:func:`dismissal_reasons`): dismissed alerts per reason;
- **误报率 false-positive rate** (:func:`false_positive_rates`) per camera and/or type = alerts dismissed as
  ``false_positive`` / triaged alerts (untriaged drafts are left out);
- **首违不罚 warnings vs penalties** (:func:`decisions`): cases per recorded decision (warning, penalty,
  no_penalty, transfer); first-offence share = warnings / (warnings + penalties);
- **龙虎榜 team ranking** (:func:`team_ranking`): per team (cases routed to it), on-time rate, then disposal
  rate, then mean rectify hours (shorter first), then more cases; teams with fewer than ``min_cases`` cases
  are listed unranked;
- **overdue report** (:func:`overdue_by_team`): cases open at ``as_of`` past their deadline, per team.

Pure Python (and, for :func:`counts_sql`, SQLAlchemy Core over a table passed in); ``openpyxl`` is imported
only by :func:`to_xlsx`.
"""

from __future__ import annotations

import csv
import io
import os
import re
import statistics as stats
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import IO, Any, Literal
from zoneinfo import ZoneInfo

__all__ = [
    "DIMENSIONS",
    "FORMULA_START",
    "CaseRow",
    "case_rows",
    "Column",
    "Ratio",
    "StatTable",
    "StepDuration",
    "TeamScore",
    "closure_rate",
    "counts",
    "counts_by_period",
    "counts_by_period_sql",
    "counts_sql",
    "decisions",
    "disposal_rate",
    "dismissal_reasons",
    "false_positive_rates",
    "on_time_rate",
    "overdue_by_team",
    "period_label",
    "ranking_table",
    "select_rows",
    "step_durations",
    "summary_table",
    "table_from_counts",
    "team_ranking",
    "to_csv",
    "to_xlsx",
]

#: What counts can be grouped by (attributes of :class:`CaseRow`).
DIMENSIONS: tuple[str, ...] = ("type", "street_id", "grid_id", "camera_id", "team_id", "status")
Unit = Literal["day", "week", "month"]
DECISIONS: tuple[str, ...] = ("warning", "penalty", "no_penalty", "transfer")
#: Each step: the status that starts it and the statuses that end it (the first reached of them).
STEP_SPANS: Mapping[str, tuple[str, tuple[str, ...]]] = {
    "confirm": ("draft", ("confirmed", "dismissed")),
    "review": ("confirmed", ("approved", "returned", "dismissed")),
    "dispatch": ("approved", ("dispatched",)),
    "rectify": ("dispatched", ("rectified",)),
    "close": ("rectified", ("closed",)),
}


@dataclass(frozen=True)
class CaseRow:
    """One alert/case as the statistics need it. ``times`` maps a status (``draft`` = drafted, ``confirmed``,
    ``returned``, ``approved``, ``dispatched``, ``rectified``, ``closed``, ``dismissed``) to the first time the
    case reached it (UTC), from the audit trail."""

    number: str
    type: str
    camera_id: str
    detected_at: datetime
    status: str
    times: Mapping[str, datetime] = field(default_factory=dict)
    street_id: str | None = None
    grid_id: str | None = None
    team_id: str | None = None
    dismiss_reason: str | None = None
    decision: str | None = None
    due_at: datetime | None = None

    def at(self, status: str, as_of: datetime | None = None) -> datetime | None:
        """When the case first reached ``status``, if it did by ``as_of``."""
        t = self.times.get(status)
        return t if t is not None and (as_of is None or t <= as_of) else None

    @property
    def is_case(self) -> bool:
        return "confirmed" in self.times

    def case_by(self, as_of: datetime | None) -> bool:
        """Whether an operator had confirmed it by ``as_of``."""
        return self.at("confirmed", as_of) is not None

    def triaged(self) -> bool:
        return "confirmed" in self.times or "dismissed" in self.times

    def finished_at(self, as_of: datetime | None = None) -> datetime | None:
        if not self.case_by(as_of):
            return None
        ends = [t for t in (self.at("closed", as_of), self.at("dismissed", as_of)) if t is not None]
        return min(ends) if ends else None

    def disposed(self, as_of: datetime | None = None) -> bool:
        return self.case_by(as_of) and (self.at("rectified", as_of) is not None or self.finished_at(as_of) is not None)


@dataclass(frozen=True)
class Ratio:
    numerator: int
    denominator: int

    @property
    def value(self) -> float | None:
        return self.numerator / self.denominator if self.denominator else None

    def percent(self, digits: int = 1) -> str:
        v = self.value
        return "—" if v is None else f"{v * 100:.{digits}f}%"


def select_rows(
    rows: Iterable[CaseRow],
    since: datetime | None = None,
    until: datetime | None = None,
    *,
    types: Sequence[str] = (),
    streets: Sequence[str] = (),
    grids: Sequence[str] = (),
    cameras: Sequence[str] = (),
    teams: Sequence[str] = (),
) -> list[CaseRow]:
    """Rows detected in [since, until) (UTC-aware) and in the given types/areas (empty: no filter)."""
    for name, v in (("since", since), ("until", until)):
        if v is not None and v.tzinfo is None:
            raise ValueError(f"{name} must be timezone-aware (UTC)")
    out = []
    for r in rows:
        if (since is not None and r.detected_at < since) or (until is not None and r.detected_at >= until):
            continue
        if (types and r.type not in types) or (streets and r.street_id not in streets) \
                or (grids and r.grid_id not in grids) or (cameras and r.camera_id not in cameras) \
                or (teams and r.team_id not in teams):
            continue
        out.append(r)
    return out


def _scope(rows: Iterable[CaseRow], scope: Literal["alerts", "cases"]) -> list[CaseRow]:
    if scope not in ("alerts", "cases"):
        raise ValueError(f"scope must be 'alerts' or 'cases', not {scope!r}")
    return [r for r in rows if scope == "alerts" or r.is_case]


def counts(
    rows: Iterable[CaseRow], by: str, scope: Literal["alerts", "cases"] = "alerts"
) -> dict[str | None, int]:
    """Alerts (or cases) per value of ``by`` (one of :data:`DIMENSIONS`), most first, then by value."""
    if by not in DIMENSIONS:
        raise ValueError(f"cannot count by {by!r}; use one of {', '.join(DIMENSIONS)}")
    c = Counter(getattr(r, by) for r in _scope(rows, scope))
    return dict(sorted(c.items(), key=lambda kv: (-kv[1], kv[0] is None, kv[0] or "")))


def _bucket(day: date, unit: Unit) -> date:
    if unit == "day":
        return day
    if unit == "week":
        return day - timedelta(days=day.weekday())
    if unit == "month":
        return day.replace(day=1)
    raise ValueError(f"unit must be day, week or month, not {unit!r}")


def _next_bucket(start: date, unit: Unit) -> date:
    if unit == "day":
        return start + timedelta(days=1)
    if unit == "week":
        return start + timedelta(days=7)
    return (start.replace(day=28) + timedelta(days=4)).replace(day=1)


def period_label(start: date, unit: Unit) -> str:
    """``2026-10-01`` (day), ``2026-W40`` (ISO week), ``2026-10`` (month)."""
    if unit == "week":
        y, w, _ = start.isocalendar()
        return f"{y}-W{w:02d}"
    return start.strftime("%Y-%m") if unit == "month" else start.isoformat()


def counts_by_period(
    rows: Iterable[CaseRow],
    unit: Unit,
    tz: str | ZoneInfo,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    scope: Literal["alerts", "cases"] = "alerts",
) -> dict[str, int]:
    """Alerts (or cases) per local day, ISO week or month, in time order, with the empty periods between
    the first and the last (or over [since, until) when given) as 0."""
    zone = _zone(tz)
    c: Counter[date] = Counter(_bucket(r.detected_at.astimezone(zone).date(), unit) for r in _scope(rows, scope))
    first = _bucket(since.astimezone(zone).date(), unit) if since else min(c, default=None)
    last = _bucket((until - timedelta(microseconds=1)).astimezone(zone).date(), unit) if until else max(c, default=None)
    return _fill(c, unit, first, last)


def _zone(tz: str | ZoneInfo) -> ZoneInfo:
    return tz if isinstance(tz, ZoneInfo) else ZoneInfo(tz)


def _fill(c: Mapping[date, int], unit: Unit, first: date | None, last: date | None) -> dict[str, int]:
    out: dict[str, int] = {}
    if first is None or last is None:
        return out
    b = first
    while b <= last:
        out[period_label(b, unit)] = c.get(b, 0)
        b = _next_bucket(b, unit)
    return out


def disposal_rate(rows: Iterable[CaseRow], as_of: datetime) -> Ratio:
    """处置率: cases disposed (rectified or finished) by ``as_of`` / cases (confirmed by ``as_of``)."""
    cases = [r for r in rows if r.case_by(as_of)]
    return Ratio(sum(r.disposed(as_of) for r in cases), len(cases))


def closure_rate(rows: Iterable[CaseRow], as_of: datetime) -> Ratio:
    """结案率: cases closed by ``as_of`` / cases (confirmed by ``as_of``)."""
    cases = [r for r in rows if r.case_by(as_of)]
    return Ratio(sum(r.at("closed", as_of) is not None for r in cases), len(cases))


def on_time_rate(rows: Iterable[CaseRow], as_of: datetime) -> Ratio:
    """按时办结率: cases finished before their deadline / (finished cases + open cases past their deadline),
    over cases with a deadline."""
    on_time = decided = 0
    for r in rows:
        if not r.case_by(as_of) or r.due_at is None:
            continue
        done = r.finished_at(as_of)
        if done is not None:
            decided += 1
            on_time += done < r.due_at
        elif r.due_at <= as_of:
            decided += 1
    return Ratio(on_time, decided)


@dataclass(frozen=True)
class StepDuration:
    step: str
    n: int
    mean_hours: float | None
    median_hours: float | None


def step_durations(rows: Iterable[CaseRow], as_of: datetime | None = None) -> list[StepDuration]:
    """Mean and median hours of each step (see the module's definition), over the cases that completed it."""
    spans: dict[str, list[float]] = {s: [] for s in STEP_SPANS}
    for r in rows:
        for step, (begin, ends) in STEP_SPANS.items():
            start = r.at(begin, as_of)
            if start is None:
                continue
            done = [t for e in ends if (t := r.at(e, as_of)) is not None and t >= start]
            if done:
                spans[step].append((min(done) - start).total_seconds() / 3600)
    return [StepDuration(s, len(v), stats.fmean(v) if v else None, stats.median(v) if v else None)
            for s, v in spans.items()]


def dismissal_reasons(rows: Iterable[CaseRow]) -> dict[str, int]:
    """Dismissed alerts per reason, most first."""
    c = Counter(r.dismiss_reason or "unknown" for r in rows if "dismissed" in r.times)
    return dict(sorted(c.items(), key=lambda kv: (-kv[1], kv[0])))


def false_positive_rates(
    rows: Iterable[CaseRow], by: Sequence[str] = ("camera_id",)
) -> dict[tuple[Any, ...], Ratio]:
    """误报率 per group of ``by`` (e.g. ``("camera_id",)``, ``("type",)``, ``("camera_id", "type")``): alerts
    dismissed as false_positive / triaged alerts; highest rate first (then more alerts)."""
    groups: dict[tuple[Any, ...], list[int]] = defaultdict(lambda: [0, 0])
    for r in rows:
        if not r.triaged():
            continue
        g = groups[tuple(getattr(r, k) for k in by)]
        g[1] += 1
        g[0] += r.dismiss_reason == "false_positive" and "dismissed" in r.times
    out = {k: Ratio(fp, n) for k, (fp, n) in groups.items()}
    return dict(sorted(out.items(), key=lambda kv: (-(kv[1].value or 0), -kv[1].denominator, str(kv[0]))))


def decisions(rows: Iterable[CaseRow]) -> tuple[dict[str, int], Ratio]:
    """Cases per recorded decision (every decision listed, 0 included) and the first-offence share
    (warnings / (warnings + penalties))."""
    c = Counter(r.decision for r in rows if r.is_case and r.decision)
    out = {d: c.get(d, 0) for d in DECISIONS}
    out.update({d: n for d, n in c.items() if d not in out})
    return out, Ratio(out["warning"], out["warning"] + out["penalty"])


@dataclass(frozen=True)
class TeamScore:
    team_id: str
    cases: int
    disposal: Ratio
    on_time: Ratio
    overdue_open: int
    mean_rectify_hours: float | None
    rank: int | None


def team_ranking(rows: Iterable[CaseRow], as_of: datetime, *, min_cases: int = 5) -> list[TeamScore]:
    """龙虎榜: teams ranked by on-time rate, disposal rate, mean rectify hours (shorter first), cases (more
    first); a team with fewer than ``min_cases`` cases is listed after the ranked ones without a rank."""
    by_team: dict[str, list[CaseRow]] = defaultdict(list)
    for r in rows:
        if r.case_by(as_of) and r.team_id:
            by_team[r.team_id].append(r)
    scores = []
    for team, rs in by_team.items():
        rectify = next(s for s in step_durations(rs, as_of) if s.step == "rectify")
        overdue = sum(1 for r in rs if r.finished_at(as_of) is None and r.due_at is not None and r.due_at <= as_of)
        scores.append(TeamScore(team, len(rs), disposal_rate(rs, as_of), on_time_rate(rs, as_of), overdue,
                                rectify.mean_hours, None))

    def key(s: TeamScore) -> tuple[Any, ...]:
        return (s.on_time.value is None, -(s.on_time.value or 0), -(s.disposal.value or 0),
                s.mean_rectify_hours is None, s.mean_rectify_hours or 0, -s.cases, s.team_id)

    ranked = sorted((s for s in scores if s.cases >= min_cases), key=key)
    unranked = sorted((s for s in scores if s.cases < min_cases), key=key)
    return [replace(s, rank=i) for i, s in enumerate(ranked, 1)] + unranked


def overdue_by_team(rows: Iterable[CaseRow], as_of: datetime) -> dict[str | None, list[CaseRow]]:
    """Cases open at ``as_of`` past their deadline, per team (most overdue first within a team)."""
    out: dict[str | None, list[CaseRow]] = defaultdict(list)
    for r in rows:
        if r.case_by(as_of) and r.finished_at(as_of) is None and r.due_at is not None and r.due_at <= as_of:
            out[r.team_id].append(r)
    return {t: sorted(v, key=lambda r: (r.due_at, r.number)) for t, v in
            sorted(out.items(), key=lambda kv: (-len(kv[1]), kv[0] or ""))}


def counts_sql(
    conn: Any, table: Any, by: str, *, since: datetime | None = None, until: datetime | None = None,
    time_column: str = "confirmed_at", where: Any = None,
) -> dict[Any, int]:
    """:func:`counts` in the database: rows of ``table`` (a SQLAlchemy Core ``Table``) per value of column
    ``by``, with ``time_column`` in [since, until); most first. One ``GROUP BY`` query."""
    from sqlalchemy import func, select

    col, tcol = table.c[by], table.c[time_column]
    stmt = select(col, func.count()).group_by(col)
    if since is not None:
        stmt = stmt.where(tcol >= _db_time(conn, tcol, since))
    if until is not None:
        stmt = stmt.where(tcol < _db_time(conn, tcol, until))
    if where is not None:
        stmt = stmt.where(where)
    rows = conn.execute(stmt).all()
    return dict(sorted(((k, int(n)) for k, n in rows), key=lambda kv: (-kv[1], kv[0] is None, str(kv[0]))))


def counts_by_period_sql(
    conn: Any, table: Any, unit: Unit, tz: str | ZoneInfo, *, since: datetime, until: datetime,
    time_column: str = "confirmed_at", where: Any = None,
) -> dict[str, int]:
    """:func:`counts_by_period` in the database (one ``GROUP BY`` over the local day/week/month): PostgreSQL
    truncates in the zone (``date_trunc`` of ``timezone(tz, …)``, DST-correct); SQLite shifts the stored UTC by
    the zone's offset, so it refuses a zone whose offset changes within [since, until) (Asia/Shanghai never does)."""
    from sqlalchemy import func, literal_column, select

    zone = _zone(tz)
    col = table.c[time_column]
    if unit not in ("day", "week", "month"):
        raise ValueError(f"unit must be day, week or month, not {unit!r}")
    if conn.dialect.name == "postgresql":
        # Inlined (a fixed word and a validated IANA name), so the SELECT and the GROUP BY are the same expression.
        if not re.fullmatch(r"[A-Za-z0-9_+\-/]+", zone.key):
            raise ValueError(f"unexpected time zone name {zone.key!r}")
        bucket = func.date_trunc(literal_column(f"'{unit}'"), func.timezone(literal_column(f"'{zone.key}'"), col))
    else:
        offsets = {(since + timedelta(days=i)).astimezone(zone).utcoffset() for i in range((until - since).days + 1)}
        offsets.add((until - timedelta(microseconds=1)).astimezone(zone).utcoffset())
        if len(offsets) != 1:
            raise ValueError(f"{zone.key} changes its UTC offset within the period; SQLite cannot group by its local "
                             "days in SQL: use counts_by_period over the rows")
        shift = f"{int((offsets.pop() or timedelta(0)).total_seconds() // 60):+d} minutes"
        if unit == "day":
            bucket = func.date(col, shift)
        elif unit == "week":
            bucket = func.date(col, shift, "weekday 0", "-6 days")  # the Monday of the ISO week
        else:
            bucket = func.strftime("%Y-%m-01", col, shift)
    stmt = select(bucket, func.count()).where(col >= _db_time(conn, col, since), col < _db_time(conn, col, until))
    if where is not None:
        stmt = stmt.where(where)
    c: dict[date, int] = {}
    for b, n in conn.execute(stmt.group_by(bucket)).all():
        day = b.date() if isinstance(b, datetime) else date.fromisoformat(str(b)[:10])
        c[day] = c.get(day, 0) + int(n)
    first = _bucket(since.astimezone(zone).date(), unit)
    last = _bucket((until - timedelta(microseconds=1)).astimezone(zone).date(), unit)
    return _fill(c, unit, first, last)


def case_rows(
    session: Any,
    since: datetime | None = None,
    until: datetime | None = None,
    *,
    organisation: Any = None,
    time_limits: Any = None,
    tz: str | ZoneInfo = "Asia/Shanghai",
    open_at: datetime | None = None,
) -> list[CaseRow]:
    """:class:`CaseRow` values of the case database (with ``open_at``: only the cases that may have been open at
    that instant, i.e. not closed or dismissed, or changed after it, for the overdue report):
    cases confirmed by the pipeline in [since, until); the first time each reached each status, from the audit
    trail (``draft`` = drafted; in time order); grid and street from ``organisation`` (an ``Organisation``:
    the camera's grid) unless the case was routed (then the stored snapshot); the team the case is routed to
    (else ``dispatched_to``); the reviewer's decision; the deadline from ``time_limits`` (a ``TimeLimitTable``:
    ``finish_due`` from the operator's confirmation: the one stored on the case when it was confirmed once, else
    computed). Two queries (the cases, then the first and last time per case and status of the same cases, in
    one join), each read from indexes (``confirmed_at``; the open statuses or ``updated_at``; the audit entries'
    ``(case_id, after_status, at)``), so the cost follows the period's cases, not the whole history."""
    from sqlalchemy import func, select, union

    from nonsite.cases.db import AuditEntry, Case, CaseStatus
    from nonsite.cases.organisation import Location

    conds: list[Any] = []
    if since is not None:
        conds.append(Case.confirmed_at >= since)
    if until is not None:
        conds.append(Case.confirmed_at < until)
    if open_at is not None:  # a case finished by then was last changed (closed, dismissed) at or before it
        # Two index reads (the open statuses; changed after the instant) rather than a scan of every case.
        open_statuses = [st for st in CaseStatus if st not in (CaseStatus.CLOSED, CaseStatus.DISMISSED)]
        maybe_open = union(select(Case.id).where(Case.status.in_(open_statuses)),
                           select(Case.id).where(Case.updated_at > open_at))
        conds.append(Case.id.in_(select(maybe_open.subquery().c.id)))
    stmt = select(Case.id, Case.number, Case.type, Case.camera_id, Case.lat, Case.lon, Case.confirmed_at,
                  Case.created_at, Case.status, Case.dismiss_reason, Case.dispatched_to, Case.team, Case.grid,
                  Case.street, Case.decision, Case.finish_due).where(*conds)
    conn = session.connection()  # Core rows: the ORM's row handling costs more than the figures here
    cases = conn.execute(stmt.order_by(Case.confirmed_at, Case.id)).all()
    reached: dict[int, dict[str, datetime]] = defaultdict(dict)
    confirmed_again: set[int] = set()
    q = (select(AuditEntry.case_id, AuditEntry.after_status, func.min(AuditEntry.at), func.max(AuditEntry.at))
         .join(Case, Case.id == AuditEntry.case_id)
         .where(*conds, AuditEntry.after_status.is_not(None))
         .group_by(AuditEntry.case_id, AuditEntry.after_status))
    for case_id, status, first, last in conn.execute(q):
        reached[case_id][str(status)] = first
        if str(status) == "confirmed" and last != first:
            confirmed_again.add(case_id)
    grids: dict[tuple[str, Any, Any], tuple[str | None, str | None]] = {}
    out = []
    for c in cases:
        times = dict(sorted({"draft": c.created_at, **reached.get(c.id, {})}.items(), key=lambda kv: kv[1]))
        grid_id, street_id = c.grid, c.street  # the snapshot taken when the case was routed
        if organisation is not None and grid_id is None:
            key = (c.camera_id, c.lat, c.lon)
            if key not in grids:
                loc = Location(lat=c.lat, lon=c.lon) if c.lat is not None and c.lon is not None else None
                grid = organisation.grid_of(c.camera_id, loc)[0]
                street = organisation.street_of(grid.id) if grid is not None else None
                grids[key] = (grid.id if grid else None, street.id if street else None)
            grid_id, street_id = grids[key]
        due = None
        if time_limits is not None and "confirmed" in times:
            if c.finish_due is not None and c.id not in confirmed_again:
                due = c.finish_due  # stored by the workflow from this very confirmation (since 0007)
            else:
                finish = time_limits.finish_due(c.type, times["confirmed"], tz)
                due = finish.at if finish is not None else None
        out.append(CaseRow(
            number=c.number, type=c.type, camera_id=c.camera_id, detected_at=c.confirmed_at,
            status=getattr(c.status, "value", str(c.status)), times=times, street_id=street_id, grid_id=grid_id,
            team_id=c.team or c.dispatched_to or None, dismiss_reason=c.dismiss_reason, due_at=due,
            decision=c.decision,
        ))
    return out


def _db_time(conn: Any, col: Any, value: datetime) -> datetime:
    """A bound time for ``col``: UTC-aware, or naive UTC for a plain DateTime column on SQLite (the case
    database's UtcDateTime does that conversion itself)."""
    from sqlalchemy import TypeDecorator

    value = value.astimezone(UTC)
    naive = conn.dialect.name == "sqlite" and not isinstance(col.type, TypeDecorator)
    return value.replace(tzinfo=None) if naive else value


# -- tables and their export ----------------------------------------------------------------------------


ColumnKind = Literal["text", "int", "float", "percent"]


@dataclass(frozen=True)
class Column:
    key: str
    zh: str
    en: str
    kind: ColumnKind = "text"

    def label(self, lang: str) -> str:
        return self.en if lang == "en" else self.zh


@dataclass(frozen=True)
class StatTable:
    """A statistics table as the page shows it and the exports write it (percent cells hold fractions)."""

    name: str  # sheet name / file stem (ASCII)
    title_zh: str
    title_en: str
    columns: tuple[Column, ...]
    rows: tuple[tuple[Any, ...], ...]

    def title(self, lang: str) -> str:
        return self.title_en if lang == "en" else self.title_zh


def summary_table(rows: Sequence[CaseRow], as_of: datetime) -> StatTable:
    """The headline figures of a period and area (统计月报's first table)."""
    _, first = decisions(rows)
    fp = Ratio(sum(1 for r in rows if r.dismiss_reason == "false_positive" and "dismissed" in r.times),
               sum(1 for r in rows if r.triaged()))
    figures: list[tuple[str, str, Ratio | int]] = [
        ("告警数", "Alerts", len(rows)),
        ("立案数", "Cases", sum(r.case_by(as_of) for r in rows)),
        ("处置率", "Disposal rate", disposal_rate(rows, as_of)),
        ("结案率", "Closure rate", closure_rate(rows, as_of)),
        ("按时办结率", "On-time rate", on_time_rate(rows, as_of)),
        ("误报率", "False-positive rate", fp),
        ("首违警告占比", "First-offence warning share", first),
    ]
    cols = (Column("figure", "指标", "Figure"), Column("count", "数量", "Count", "int"),
            Column("rate", "比率", "Rate", "percent"), Column("numerator", "分子", "Numerator", "int"),
            Column("denominator", "分母", "Denominator", "int"))
    out = []
    for zh, en, v in figures:
        if isinstance(v, Ratio):
            out.append(((zh, en), None, v.value, v.numerator, v.denominator))
        else:
            out.append(((zh, en), v, None, None, None))
    return StatTable("summary", "汇总", "Summary", cols, tuple(out))


def _cell(value: Any, lang: str) -> Any:
    if isinstance(value, tuple) and len(value) == 2 and all(isinstance(x, str) for x in value):
        return value[1] if lang == "en" else value[0]  # a (zh, en) label
    return value


#: First characters that make a spreadsheet read a cell as a formula (CSV/formula injection, OWASP): a text cell
#: starting with one of them is written with a leading apostrophe, so ``=HYPERLINK(...)`` in a camera name stays text.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _defused(text: str) -> str:
    return "'" + text if text.startswith(FORMULA_START) else text


def _csv_value(value: Any, kind: ColumnKind) -> str:
    if value is None:
        return ""
    if kind in ("percent", "float") and isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, str):  # text from users or configuration (names, notes): never a formula
        return _defused(value)
    return str(value)


def to_csv(table: StatTable, out: str | os.PathLike[str] | IO[str] | None = None, lang: str = "zh") -> str:
    """The table as CSV (a header row of labels in ``lang``, then the rows; rates as fractions with four
    decimals, empty for none). Written UTF-8 with a BOM when ``out`` is a path (so Excel reads the Chinese);
    returns the text. A text cell starting with ``= + - @``, a tab or a carriage return gets a leading apostrophe
    (:data:`FORMULA_START`: a spreadsheet would run it as a formula); numbers are written as numbers."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow([c.label(lang) for c in table.columns])
    for row in table.rows:
        w.writerow([_csv_value(_cell(v, lang), c.kind) for v, c in zip(row, table.columns, strict=True)])
    text = buf.getvalue()
    if isinstance(out, (str, os.PathLike)):
        Path(out).write_text(text, encoding="utf-8-sig", newline="")
    elif out is not None:
        out.write(text)
    return text


_FORMATS: Mapping[str, str] = {"percent": "0.0%", "float": "0.00", "int": "0"}


def to_xlsx(
    tables: Sequence[StatTable], out: str | os.PathLike[str] | IO[bytes], lang: str = "zh",
    *, note: str | None = None,
) -> None:
    """Write ``tables`` to an Excel workbook, one sheet each: the title, an optional note (period, area,
    as-of), the header, the rows (numbers as numbers, rates as fractions formatted as percentages). Text is
    stored as text: a name starting with ``=`` is a string cell, never a formula."""
    from openpyxl import Workbook
    from openpyxl.styles import Font
    from openpyxl.utils import get_column_letter

    wb = Workbook()
    wb.remove(wb.active)  # type: ignore[arg-type]
    for table in tables:
        ws = wb.create_sheet(table.name[:31])
        ws.append([table.title(lang)])
        ws["A1"].font = Font(bold=True, size=13)
        if note:
            ws.append([note])
        ws.append([c.label(lang) for c in table.columns])
        header_row = ws.max_row
        for cell in ws[header_row]:
            cell.font = Font(bold=True)
        for row in table.rows:
            ws.append([_cell(v, lang) for v in row])
            for cell, col, v in zip(ws[ws.max_row], table.columns, row, strict=True):
                fmt = _FORMATS.get(col.kind)
                if fmt and isinstance(cell.value, (int, float)):
                    cell.number_format = fmt
                text = _cell(v, lang)
                if isinstance(text, str) and text.startswith("="):  # openpyxl would store it as a formula
                    cell.value = text
                    cell.data_type = "s"
        ws.freeze_panes = ws.cell(row=header_row + 1, column=1)
        for i, col in enumerate(table.columns, 1):
            width = max([len(str(col.label(lang))) * 2] + [len(str(_cell(r[i - 1], lang) or "")) for r in table.rows])
            ws.column_dimensions[get_column_letter(i)].width = min(60, max(10, width + 2))
    wb.save(out)  # type: ignore[arg-type]


def table_from_counts(
    name: str, title: tuple[str, str], key: Column, data: Mapping[Any, int],
    label: Callable[[Any], Any] | None = None,
) -> StatTable:
    """A two-column table (a key, a count) with the share of the total."""
    total = sum(data.values())
    rows = tuple((label(k) if label else k, n, (n / total) if total else None) for k, n in data.items())
    return StatTable(name, title[0], title[1],
                     (key, Column("count", "数量", "Count", "int"), Column("share", "占比", "Share", "percent")), rows)


def ranking_table(scores: Sequence[TeamScore], names: Mapping[str, str] | None = None) -> StatTable:
    """龙虎榜 as a table (team names from ``names``, ids otherwise)."""
    cols = (
        Column("rank", "名次", "Rank", "int"), Column("team", "队伍", "Team"),
        Column("cases", "案件数", "Cases", "int"),
        Column("on_time", "按时办结率", "On-time rate", "percent"),
        Column("disposal", "处置率", "Disposal rate", "percent"),
        Column("rectify_h", "平均整改时长(小时)", "Mean rectify hours", "float"),
        Column("overdue", "超期未结", "Overdue open", "int"),
    )
    rows = tuple((s.rank, (names or {}).get(s.team_id, s.team_id), s.cases, s.on_time.value, s.disposal.value,
                  s.mean_rectify_hours, s.overdue_open) for s in scores)
    return StatTable("ranking", "龙虎榜", "Team ranking", cols, rows)
