"""How long the bureau's statistics take on many cases: SQL counts with and without an index, and the
row figures in Python (cases/statistics.py).

    .venv/bin/python bench/bureau_queries.py [--cases 100000] [--url sqlite:///tmp/x.db | postgresql://...]
                                             [--json bench/results/bureau.json]

Seeds a table of ``--cases`` alerts over a year (12 types, 200 cameras, 30 teams; times spread evenly, a
fixed random seed) into a fresh table of the given database (default: a SQLite file in a temporary folder),
then times each figure (median of five runs, after one warm-up). Not a test; nothing asserts a speed.
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

from sqlalchemy import Column as SqlColumn
from sqlalchemy import Index, MetaData, String, Table, create_engine, insert

from nonsite.cases.db import UtcDateTime
from nonsite.cases.statistics import (
    CaseRow,
    counts,
    counts_by_period,
    counts_by_period_sql,
    counts_sql,
    summary_table,
    team_ranking,
)

START = datetime(2026, 1, 1, tzinfo=UTC)
MONTH = (datetime(2026, 10, 1, tzinfo=UTC), datetime(2026, 11, 1, tzinfo=UTC))


def _median_ms(fn: Callable[[], Any], runs: int = 5) -> float:
    fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return round(statistics.median(times), 2)


def _rows(n: int) -> list[CaseRow]:
    rnd = random.Random(14)
    out = []
    step = timedelta(days=365) / n
    for i in range(n):
        t = START + step * i
        times = {"draft": t}
        if rnd.random() < 0.8:
            times["confirmed"] = t + timedelta(minutes=rnd.randint(1, 60))
            if rnd.random() < 0.9:
                times["approved"] = times["confirmed"] + timedelta(hours=rnd.randint(1, 30))
                times["dispatched"] = times["approved"] + timedelta(hours=rnd.randint(1, 20))
                if rnd.random() < 0.85:
                    times["rectified"] = times["dispatched"] + timedelta(hours=rnd.randint(1, 100))
                    times["closed"] = times["rectified"] + timedelta(hours=rnd.randint(1, 40))
        else:
            times["dismissed"] = t + timedelta(minutes=rnd.randint(1, 60))
        out.append(CaseRow(
            number=f"NS-2026-{i:06d}", type=f"type_{i % 12}", camera_id=f"cam-{rnd.randrange(200):03d}",
            detected_at=t, status=max(times, key=lambda s: times[s]), times=times, team_id=f"team-{i % 30}",
            dismiss_reason="false_positive" if "dismissed" in times else None,
            decision=rnd.choice(["warning", "penalty"]) if "approved" in times else None,
            due_at=t + timedelta(days=5),
        ))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=100_000)
    ap.add_argument("--url", default=None, help="SQLAlchemy URL (default: a SQLite file in a temporary folder)")
    ap.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        url = args.url or f"sqlite:///{Path(tmp) / 'bench.db'}"
        engine = create_engine(url)
        md = MetaData()
        alerts = Table("bench_bureau_alerts", md, SqlColumn("number", String(32), primary_key=True),
                       SqlColumn("type", String(64)), SqlColumn("camera_id", String(64)),
                       SqlColumn("confirmed_at", UtcDateTime()))
        md.drop_all(engine)
        md.create_all(engine)
        rows = _rows(args.cases)
        with engine.begin() as conn:
            for i in range(0, len(rows), 10_000):
                conn.execute(insert(alerts), [{"number": r.number, "type": r.type, "camera_id": r.camera_id,
                                               "confirmed_at": r.detected_at} for r in rows[i:i + 10_000]])
        figures: dict[str, Any] = {"cases": args.cases, "dialect": engine.dialect.name,
                                   "python": platform.python_version(), "machine": platform.machine()}

        def sql_figures(tag: str) -> None:
            with engine.connect() as conn:
                figures[f"sql_counts_by_type_month_ms_{tag}"] = _median_ms(
                    lambda: counts_sql(conn, alerts, "type", since=MONTH[0], until=MONTH[1]))
                figures[f"sql_counts_by_camera_year_ms_{tag}"] = _median_ms(
                    lambda: counts_sql(conn, alerts, "camera_id"))
                figures[f"sql_counts_per_day_month_ms_{tag}"] = _median_ms(
                    lambda: counts_by_period_sql(conn, alerts, "day", "Asia/Shanghai", since=MONTH[0],
                                                 until=MONTH[1]))

        sql_figures("no_index")
        Index("ix_bench_bureau_time_type", alerts.c.confirmed_at, alerts.c.type).create(engine)
        sql_figures("indexed")
        as_of = datetime(2027, 1, 1, tzinfo=UTC)
        month_rows = [r for r in rows if MONTH[0] <= r.detected_at < MONTH[1]]
        figures["py_month_rows"] = len(month_rows)
        figures["py_summary_month_ms"] = _median_ms(lambda: summary_table(month_rows, as_of))
        figures["py_summary_year_ms"] = _median_ms(lambda: summary_table(rows, as_of))
        figures["py_ranking_year_ms"] = _median_ms(lambda: team_ranking(rows, as_of))
        figures["py_counts_by_type_year_ms"] = _median_ms(lambda: counts(rows, "type"))
        figures["py_counts_per_day_year_ms"] = _median_ms(lambda: counts_by_period(rows, "day", "Asia/Shanghai"))
        md.drop_all(engine)
        engine.dispose()
    width = max(map(len, figures))
    for k, v in figures.items():
        print(f"{k:<{width}}  {v}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
