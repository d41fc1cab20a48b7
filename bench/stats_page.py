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


def timed(fn: Callable[[], Any], runs: int = 3) -> tuple[float, Any]:
    out = fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=100_000)
    ap.add_argument("--url", help="database URL (default: a SQLite file in a temporary folder)")
    ap.add_argument("--json", help="write the results here")
    a = ap.parse_args()
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
