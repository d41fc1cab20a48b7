"""How long the statistics page's figures take on many cases in the real case schema (console/stats.py's work:
``load_rows`` = ``case_rows`` over the cases and their audit trail, then ``build_figures`` and the hotspots; and the
overdue report over every case up to the period's end).

    .venv/bin/python bench/stats_page.py [--cases 100000] [--url sqlite:///tmp/x.db | postgresql://...]
                                         [--json bench/results/stats_page.json]

Seeds ``--cases`` cases over the year before 28 November 2026 (4 types, 200 cameras in the example organisation's
grids, a fixed random seed) with their audit entries (created, then confirm/dismiss, approve, dispatch, rectify,
close as far as each got) straight into a fresh database (default: a SQLite file in a temporary folder), then times
one month, the whole year, and the monthly overdue report (median of three runs after a warm-up). Not a test;
nothing asserts a speed.

``--history 1000,10000,100000 [--per-month 800]`` (issue 14): what a bureau sees as its history grows. For each size
N a database holding N cases at a constant ``--per-month`` (the newest at the same instant, so the current month holds
the same cases at every size and only older history grows; cases older than 60 days are finished except 1%, as in a
bureau where old cases get closed), then the current month's page and its overdue report are timed. Databases are kept
in ``--workdir`` (SQLite files) and as PostgreSQL databases ``nonsite_stats_<N>`` on ``--pg-admin``'s server, so a
second run with ``--reuse`` measures the same data (e.g. before and after a change); ``--drop`` removes them.

    .venv/bin/python bench/stats_page.py --history 1000,10000,100000 --dialects sqlite,postgresql \
        --workdir /tmp/stats-history --reuse --label after --json bench/results/stats_100k.json
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import insert, select

from nonsite.cases import open_db
from nonsite.cases.db import AuditEntry, Case, CaseStatus
from nonsite.cases.legal_basis import default_catalogue
from nonsite.cases.organisation import load_organisation
from nonsite.cases.reports import (
    Labels,
    build_figures,
    camera_places,
    hotspots,
    load_rows,
    overdue_report,
    report_period,
)

ROOT = Path(__file__).resolve().parents[1]
LIMITS = default_catalogue().time_limit_table()
NOW = datetime(2026, 11, 28, 2, 0, tzinfo=UTC)
TYPES = ("sidewalk_parking", "street_vending", "stray_dog", "piled_materials")
GRIDS = {"yanshi-east": ("yanshi-jd", "yanshi-group-1"), "shifan-jie": ("yanshi-jd", "yanshi-group-2"),
         "xincheng-1": ("xincheng-jd", "xincheng-squad")}
PATHS = [("draft",), ("dismissed",), ("confirmed",), ("confirmed", "approved", "dispatched"),
         ("confirmed", "approved", "dispatched", "rectified", "closed")]
WEIGHTS = [5, 20, 5, 10, 60]


def seed(url: str, n: int) -> None:
    rnd = random.Random(14)
    sf = open_db(url)
    cams = [(f"cam-{i:03d}", list(GRIDS)[i % 3]) for i in range(200)]
    with sf() as s:
        batch_cases: list[dict[str, Any]] = []
        batch_audit: list[dict[str, Any]] = []
        next_id = 1
        for i in range(n):
            at = NOW - timedelta(seconds=rnd.uniform(0, 365 * 86400))
            cam, grid = cams[rnd.randrange(len(cams))]
            street, team = GRIDS[grid]
            path = rnd.choices(PATHS, WEIGHTS)[0]
            status = path[-1] if path != ("draft",) else "draft"
            batch_cases.append({
                "id": next_id, "number": f"NS-B-{i:07d}", "event_id": f"ev-{i:07d}", "type": rnd.choice(TYPES),
                "camera_id": cam, "camera_name": f"摄像头{cam[-3:]}", "zone_id": "z", "lat": 31.23, "lon": 121.47,
                "started_at": at - timedelta(seconds=90), "confirmed_at": at, "dwell_s": 90.0, "confidence": 0.9,
                "manifest_key": "m", "manifest_sha256": "0" * 64, "status": CaseStatus(status),
                "dismiss_reason": rnd.choice(["false_positive", "duplicate"]) if status == "dismissed" else None,
                "created_at": at, "updated_at": at, "team": team, "grid": grid, "street": street,
                "decision": rnd.choice(["warning", "warning", "penalty"]) if "approved" in path else None,
            })
            t = at
            batch_audit.append({"case_id": next_id, "at": t, "actor": "drafter", "action": "created",
                                "after_status": "draft"})
            for step in path:
                if step == "draft":
                    continue
                t = t + timedelta(hours=rnd.uniform(0.1, 60))
                batch_audit.append({"case_id": next_id, "at": t, "actor": "op", "action": step,
                                    "before_status": None, "after_status": step})
            batch_cases[-1]["updated_at"] = t  # the workflow stamps each change
            next_id += 1
            if len(batch_cases) >= 5000:
                s.execute(insert(Case), batch_cases)
                s.execute(insert(AuditEntry), batch_audit)
                batch_cases, batch_audit = [], []
        if batch_cases:
            s.execute(insert(Case), batch_cases)
            s.execute(insert(AuditEntry), batch_audit)
        s.commit()
        assert s.scalar(select(Case.id).order_by(Case.id.desc()).limit(1)) == n
    sf.kw["bind"].dispose()


OLD_PATHS = [("dismissed",), ("confirmed", "approved", "dispatched", "rectified", "closed")]


def seed_history(url: str, n: int, per_month: int) -> None:
    """Cases 0..n-1, case i detected about i / per_month months before NOW (so the newest ones are the same at every
    size): each drawn from its own ``Random(i)``."""
    sf = open_db(url)
    cams = [(f"cam-{i:03d}", list(GRIDS)[i % 3]) for i in range(200)]
    step = 30 * 86400 / per_month
    with sf() as s:
        batch_cases: list[dict[str, Any]] = []
        batch_audit: list[dict[str, Any]] = []
        for i in range(n):
            rnd = random.Random(i)
            at = NOW - timedelta(seconds=(i + rnd.random()) * step)
            cam, grid = cams[rnd.randrange(len(cams))]
            street, team = GRIDS[grid]
            old = NOW - at > timedelta(days=60)
            path = rnd.choices(OLD_PATHS, [25, 75])[0] if old and rnd.random() >= 0.01 \
                else rnd.choices(PATHS, WEIGHTS)[0]
            status = path[-1] if path != ("draft",) else "draft"
            vtype = rnd.choice(TYPES)
            batch_cases.append({"finish_due": None,
                "id": i + 1, "number": f"NS-H-{i:07d}", "event_id": f"eh-{i:07d}", "type": vtype,
                "camera_id": cam, "camera_name": f"摄像头{cam[-3:]}", "zone_id": "z", "lat": 31.23, "lon": 121.47,
                "started_at": at - timedelta(seconds=90), "confirmed_at": at, "dwell_s": 90.0, "confidence": 0.9,
                "manifest_key": "m", "manifest_sha256": "0" * 64, "status": CaseStatus(status),
                "dismiss_reason": rnd.choice(["false_positive", "duplicate"]) if status == "dismissed" else None,
                "created_at": at, "updated_at": at, "team": team, "grid": grid, "street": street,
                "decision": rnd.choice(["warning", "warning", "penalty"]) if "approved" in path else None,
            })
            t = at
            batch_audit.append({"case_id": i + 1, "at": t, "actor": "drafter", "action": "created",
                                "after_status": "draft"})
            for stp in path:
                if stp == "draft":
                    continue
                t = t + timedelta(hours=rnd.uniform(0.1, 60))
                batch_audit.append({"case_id": i + 1, "at": t, "actor": "op", "action": stp,
                                    "before_status": None, "after_status": stp})
                if stp == "confirmed":  # stored by the workflow since 0007
                    finish = LIMITS.finish_due(vtype, t, "Asia/Shanghai")
                    batch_cases[-1]["finish_due"] = finish.at if finish is not None else None
            batch_cases[-1]["updated_at"] = t
            if len(batch_cases) >= 5000:
                s.execute(insert(Case), batch_cases)
                s.execute(insert(AuditEntry), batch_audit)
                batch_cases, batch_audit = [], []
        if batch_cases:
            s.execute(insert(Case), batch_cases)
            s.execute(insert(AuditEntry), batch_audit)
        s.commit()
    sf.kw["bind"].dispose()


def timed(fn: Callable[[], Any], runs: int = 3) -> tuple[float, Any]:
    out = fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def measure_month(url: str, runs: int = 3) -> dict[str, Any]:
    """The current month's page (rows, figures, hotspots, as console/stats.py) and the month's overdue report; and
    ``camera_places`` alone (part of both: it reads every case's camera, from an index since 0009)."""
    org = load_organisation(ROOT / "examples" / "organisation.yaml")
    sf = open_db(url)
    month_since, month_until, _ = report_period("month", NOW.date(), "Asia/Shanghai")

    def page() -> int:
        with sf() as s:
            names, places = camera_places(s)
            rows = load_rows(s, month_since, month_until, organisation=org, time_limits=LIMITS)
        labels = Labels(org, names)
        build_figures(rows, as_of=NOW, tz="Asia/Shanghai", unit="day", since=month_since, until=month_until,
                      labels=labels)
        hotspots(rows, org, places, labels)
        return len(rows)

    def overdue() -> tuple[int, int]:
        with sf() as s:
            names, _ = camera_places(s)
            rows = load_rows(s, None, month_until, organisation=org, time_limits=LIMITS, open_at=NOW)
        teams, _ = overdue_report(rows, NOW, since=month_since, labels=Labels(org, names))
        return len(rows), sum(r[2] for r in teams.rows)

    def places() -> int:
        with sf() as s:
            return len(camera_places(s)[0])

    out: dict[str, Any] = {}
    secs, n = timed(places, runs)
    out["camera_places"] = {"seconds": round(secs, 3), "cameras": n}
    secs, n = timed(page, runs)
    out["stats_month"] = {"seconds": round(secs, 3), "rows": n}
    secs, (read, n_over) = timed(overdue, runs)
    out["overdue_month"] = {"seconds": round(secs, 3), "rows_read": read, "overdue": n_over}
    sf.kw["bind"].dispose()
    return out


def history(a: argparse.Namespace) -> int:
    import os

    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    sizes = sorted(int(x) for x in a.history.split(","))
    work = Path(a.workdir or tempfile.mkdtemp(prefix="stats-history-"))
    work.mkdir(parents=True, exist_ok=True)
    admin = create_engine(a.pg_admin, isolation_level="AUTOCOMMIT")
    res: dict[str, Any] = {"label": a.label, "per_month": a.per_month, "now": NOW.isoformat(),
                           "python": platform.python_version(), "machine": platform.machine(),
                           "load_before": list(os.getloadavg()), "results": []}
    for dialect in a.dialects.split(","):
        for n in sizes:
            if dialect == "sqlite":
                path = work / f"stats_{n}.db"
                fresh = not (a.reuse and path.exists())
                if fresh and path.exists():
                    path.unlink()
                url = f"sqlite:///{path}"
            else:
                name = f"nonsite_stats_{n}"
                with admin.connect() as conn:
                    exists = conn.scalar(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name})
                    fresh = not (a.reuse and exists)
                    if fresh:
                        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                        conn.execute(text(f'CREATE DATABASE "{name}"'))
                    res["postgresql_version"] = conn.scalar(text("SHOW server_version"))
                url = make_url(a.pg_admin).set(database=name).render_as_string(hide_password=False)
            t0 = time.perf_counter()
            if fresh:
                seed_history(url, n, a.per_month)
            if dialect == "postgresql":
                with create_engine(url, isolation_level="AUTOCOMMIT").connect() as conn:
                    conn.execute(text("VACUUM ANALYZE"))
            else:
                with create_engine(url).connect() as conn:
                    conn.execute(text("ANALYZE"))
            seed_s = time.perf_counter() - t0
            r = {"dialect": dialect, "cases": n, "seeded_s" if fresh else "reused_s": round(seed_s, 1),
                 **measure_month(url), "load": list(os.getloadavg())}
            print(json.dumps(r, ensure_ascii=False), flush=True)
            res["results"].append(r)
            if dialect == "postgresql" and a.drop:
                with admin.connect() as conn:
                    conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()
    if a.json:
        p = Path(a.json)
        doc = json.loads(p.read_text(encoding="utf-8")) if p.exists() else {}
        doc[a.label] = res
        p.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=100_000)
    ap.add_argument("--url", help="database URL (default: a SQLite file in a temporary folder)")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--history", help="sizes, e.g. 1000,10000,100000: the month page as history grows (see above)")
    ap.add_argument("--per-month", type=int, default=800, help="--history: cases per 30 days")
    ap.add_argument("--dialects", default="sqlite,postgresql", help="--history: sqlite and/or postgresql")
    ap.add_argument("--pg-admin", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres",
                    help="--history: a PostgreSQL server's admin URL (databases nonsite_stats_<N> are made there)")
    ap.add_argument("--workdir", help="--history: where the SQLite files are kept")
    ap.add_argument("--reuse", action="store_true", help="--history: measure the databases already seeded")
    ap.add_argument("--drop", action="store_true", help="--history: drop each PostgreSQL database after it")
    ap.add_argument("--label", default="run", help="--history: the key of this run in the JSON (before, after)")
    a = ap.parse_args()
    if a.history:
        return history(a)
    tmp = tempfile.mkdtemp(prefix="stats-bench-")
    url = a.url or f"sqlite:///{tmp}/cases.db"
    t0 = time.perf_counter()
    seed(url, a.cases)
    seeded_s = time.perf_counter() - t0
    org = load_organisation(ROOT / "examples" / "organisation.yaml")
    limits = default_catalogue().time_limit_table()
    sf = open_db(url)
    results: dict[str, Any] = {"cases": a.cases, "dialect": url.split(":")[0], "seed_s": round(seeded_s, 1),
                               "python": platform.python_version(), "machine": platform.machine()}

    def page(since: datetime, until: datetime, unit: str) -> int:
        with sf() as s:
            names, places = camera_places(s)
            rows = load_rows(s, since, until, organisation=org, time_limits=limits)
        labels = Labels(org, names)
        build_figures(rows, as_of=NOW, tz="Asia/Shanghai", unit=unit, since=since, until=until,  # type: ignore[arg-type]
                      labels=labels)
        hotspots(rows, org, places, labels)
        return len(rows)

    month_since, month_until, _ = report_period("month", NOW.date(), "Asia/Shanghai")
    year_since = month_until - timedelta(days=365)
    for name, since, until, unit in (("stats_month", month_since, month_until, "day"),
                                     ("stats_year", year_since, month_until, "month")):
        secs, n = timed(lambda s=since, u=until, un=unit: page(s, u, un))
        results[name] = {"seconds": round(secs, 3), "rows": n}

    def overdue() -> int:
        with sf() as s:
            rows = load_rows(s, None, month_until, organisation=org, time_limits=limits, open_at=NOW)
        teams, _ = overdue_report(rows, NOW, since=month_since, labels=Labels(org))
        return sum(r[2] for r in teams.rows)

    secs, n = timed(overdue)
    results["overdue_month"] = {"seconds": round(secs, 3), "overdue": n}
    sf.kw["bind"].dispose()
    print(json.dumps(results, indent=2, ensure_ascii=False))
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
