"""The bureau's lists and figures on the real ``cases`` table as it grows to 100,000 cases (issue 14): does their
cost stay flat?

    .venv/bin/python bench/bureau_100k.py [--sizes 1000,10000,100000] [--dialects sqlite,postgresql]
                                          [--pg-admin postgresql+psycopg://postgres@127.0.0.1:5432/postgres]
                                          [--json bench/results/bureau_100k.json]

For each dialect it opens a fresh case database through ``open_db`` (the migrations, so the schema and indexes
are the shipped ones; PostgreSQL: a throwaway database created and dropped on the server of ``--pg-admin``),
seeds cases in steps up to each size (a year of history, 30 teams, 12 types, 200 cameras; the newest 2 % still
open with a deadline, so the open work stays a city's, not the history's; 1 in 500 open ones under a 督办),
and at each size times, median of five runs after a warm-up, the code the console runs:

- the queue sorted by due (``search_cases(CaseFilter(sort="due"))``, one page and the total), the queue of
  drafts by due, the default queue (newest first);
- one team's task lists (approved, dispatched, rectified; by due) and its 督办-pinned list;
- the statistics counts of one month in SQL (per type, per team, per local day: ``counts_sql`` and
  ``counts_by_period_sql`` over the ``cases`` table);
- the leader's dashboard (``console.bureau_pages.dashboard``) and one round of the reminder job's reading
  (``notifications.open_steps``).

EXPLAIN (``EXPLAIN QUERY PLAN`` / ``EXPLAIN``) of the queue and task queries at the largest size goes to the
JSON too, so the index each uses is on record. Not a test; nothing asserts a speed.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import secrets
import sys
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, insert, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bureau_queries import _median_ms  # noqa: E402 - this folder's helper

from nonsite.cases.db import Case, CaseStatus, Supervision, open_db  # noqa: E402
from nonsite.cases.notifications import open_steps  # noqa: E402
from nonsite.cases.queries import CaseFilter, search_cases  # noqa: E402
from nonsite.cases.statistics import counts_by_period_sql, counts_sql  # noqa: E402
from nonsite.console.bureau_pages import dashboard  # noqa: E402

START = datetime(2025, 12, 1, tzinfo=UTC)
SPAN = timedelta(days=365)
NOW = START + SPAN  # the instant the lists are judged at
MONTH = (NOW - timedelta(days=31), NOW)
OPEN_SHARE = 0.02
TEAMS = [f"team-{i:02d}" for i in range(30)]
OPEN_STATUSES = (CaseStatus.DRAFT, CaseStatus.CONFIRMED, CaseStatus.APPROVED, CaseStatus.DISPATCHED,
                 CaseStatus.RECTIFIED)


def _case_rows(first: int, last: int, total: int, rnd: random.Random) -> list[dict[str, Any]]:
    """Cases ``first``..``last - 1`` of a history of ``total`` (oldest first; the newest OPEN_SHARE open)."""
    out = []
    step = SPAN / total
    for i in range(first, last):
        t = START + step * i
        open_ = i >= total * (1 - OPEN_SHARE)
        if open_:
            status = rnd.choice(OPEN_STATUSES)
            due = t + timedelta(hours=rnd.randint(1, 72))
            due_soon = due - timedelta(hours=2)
            step_name = {"draft": "confirm", "confirmed": "review", "approved": "dispatch", "dispatched": "rectify",
                         "rectified": "close"}[status.value]
        else:
            status = CaseStatus.CLOSED if rnd.random() < 0.8 else CaseStatus.DISMISSED
            due = due_soon = None
            step_name = None
        out.append({
            "number": f"NS-B-{i:07d}", "event_id": f"ev-{i:07d}", "type": f"type_{i % 12}",
            "camera_id": f"cam-{rnd.randrange(200):03d}", "camera_name": "", "zone_id": "z", "zone_name": "",
            "address": "", "started_at": t, "confirmed_at": t, "dwell_s": 60.0, "confidence": 0.9,
            "track_ids": [], "evidence": [], "manifest_key": f"events/ev-{i:07d}/manifest.json",
            "manifest_sha256": "0" * 64, "signature_key": "", "seal_problems": [], "violation": {},
            "status": status, "dismiss_note": "", "created_at": t, "updated_at": t, "repeat_count": 0,
            "suggested_disposition": "manual", "disposition": {}, "legal_basis": {}, "dispatched_to": "",
            "team": TEAMS[i % len(TEAMS)], "grid": f"grid-{i % 90}", "street": f"street-{i % 9}",
            "due_at": due, "due_soon_at": due_soon, "due_step": step_name,
            "step_started_at": t if open_ else None, "decision_reason": "",
        })
    return out


def _seed(sf: sessionmaker[Session], have: int, want: int, total: int) -> None:
    """Grow the table from ``have`` to ``want`` cases (the newest OPEN_SHARE of ``total`` open)."""
    rnd = random.Random(want)
    with sf.begin() as session:
        for i in range(have, want, 5000):
            rows = _case_rows(i, min(want, i + 5000), total, rnd)
            session.execute(insert(Case), rows)
    with sf.begin() as session:  # 督办 on one in 500 open cases, issued a day before NOW
        ids = session.scalars(select(Case.id).where(Case.status.in_(OPEN_STATUSES), Case.id > have)).all()
        session.execute(insert(Supervision), [
            {"case_id": cid, "instruction": "速办", "issued_by": "sup", "issued_at": NOW - timedelta(days=1),
             "new_deadline": NOW + timedelta(hours=4), "answer": ""} for cid in ids[::500]])


def _measure(sf: sessionmaker[Session]) -> dict[str, float]:
    team = TEAMS[3]
    out: dict[str, float] = {}
    with sf() as s:
        def page(flt: CaseFilter) -> Callable[[], Any]:
            return lambda: search_cases(s, flt, limit=50)

        out["queue_by_due_ms"] = _median_ms(page(CaseFilter(sort="due", now=NOW)))
        out["queue_drafts_by_due_ms"] = _median_ms(page(CaseFilter(statuses=(CaseStatus.DRAFT,), sort="due",
                                                                   now=NOW)))
        out["queue_newest_ms"] = _median_ms(page(CaseFilter(now=NOW)))
        out["queue_overdue_ms"] = _median_ms(page(CaseFilter(due="overdue", sort="due", now=NOW)))

        def tasks() -> None:
            for st in (CaseStatus.APPROVED, CaseStatus.DISPATCHED, CaseStatus.RECTIFIED):
                search_cases(s, CaseFilter(statuses=(st,), teams=(team,), sort="due", now=NOW), limit=200)
            search_cases(s, CaseFilter(teams=(team,), supervised=True, sort="due", now=NOW), limit=200)

        out["team_tasks_ms"] = _median_ms(tasks)
        conn = s.connection()
        table = Case.__table__
        out["stats_month_by_type_ms"] = _median_ms(lambda: counts_sql(conn, table, "type", since=MONTH[0],
                                                                      until=MONTH[1]))
        out["stats_month_by_team_ms"] = _median_ms(lambda: counts_sql(conn, table, "team", since=MONTH[0],
                                                                      until=MONTH[1]))
        out["stats_month_per_day_ms"] = _median_ms(lambda: counts_by_period_sql(
            conn, table, "day", "Asia/Shanghai", since=MONTH[0], until=MONTH[1]))
        out["leader_dashboard_ms"] = _median_ms(lambda: dashboard(s, NOW))
        out["reminder_open_steps_ms"] = _median_ms(lambda: open_steps(s, None))
    return out


def _plans(sf: sessionmaker[Session]) -> dict[str, list[str]]:
    """EXPLAIN of the queue and task queries (the index each uses)."""
    from sqlalchemy.dialects import postgresql, sqlite

    bind = sf.kw["bind"]
    dialect = bind.dialect.name
    queries = {
        "queue_by_due": CaseFilter(sort="due", now=NOW),
        "queue_drafts_by_due": CaseFilter(statuses=(CaseStatus.DRAFT,), sort="due", now=NOW),
        "team_tasks_dispatched": CaseFilter(statuses=(CaseStatus.DISPATCHED,), teams=(TEAMS[3],), sort="due",
                                            now=NOW),
        "queue_newest": CaseFilter(now=NOW),
    }
    out: dict[str, list[str]] = {}
    compiler = postgresql.dialect() if dialect == "postgresql" else sqlite.dialect()
    with bind.connect() as conn:
        for name, flt in queries.items():
            stmt = select(Case.id).where(*flt.conditions()).order_by(*flt.order()).limit(50)
            sql = str(stmt.compile(dialect=compiler, compile_kwargs={"literal_binds": True}))
            prefix = "EXPLAIN QUERY PLAN " if dialect == "sqlite" else "EXPLAIN "
            out[name] = [" | ".join(str(c) for c in row) for row in conn.execute(text(prefix + sql))]
    return out


def run_dialect(url: str, sizes: list[int]) -> dict[str, Any]:
    sf = open_db(url)
    result: dict[str, Any] = {"dialect": sf.kw["bind"].dialect.name, "sizes": {}}
    try:
        have = 0
        total = sizes[-1]
        for size in sizes:
            # each size is its own history (the newest 2 % of *that* history open): re-seed from empty
            with sf.begin() as session:
                session.execute(text("DELETE FROM supervisions"))
                session.execute(text("DELETE FROM cases"))
            have, total = 0, size
            _seed(sf, have, size, total)
            if result["dialect"] == "postgresql":
                with sf.begin() as session:
                    session.execute(text("ANALYZE cases"))
                    session.execute(text("ANALYZE supervisions"))
            else:
                with sf.begin() as session:
                    session.execute(text("ANALYZE"))
            figures = _measure(sf)
            figures["open_cases"] = int(size * OPEN_SHARE)
            result["sizes"][str(size)] = figures
            print(result["dialect"], size, figures, flush=True)
        result["explain_at_largest"] = _plans(sf)
    finally:
        sf.kw["bind"].dispose()
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000,10000,100000")
    ap.add_argument("--dialects", default="sqlite,postgresql")
    ap.add_argument("--pg-admin", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres",
                    help="a PostgreSQL server's admin URL: a throwaway database is created there and dropped")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    sizes = sorted(int(s) for s in args.sizes.split(","))
    out: dict[str, Any] = {"python": platform.python_version(), "machine": platform.machine(), "now": NOW.isoformat(),
                           "open_share": OPEN_SHARE, "teams": len(TEAMS), "results": []}
    for dialect in args.dialects.split(","):
        if dialect == "sqlite":
            with tempfile.TemporaryDirectory() as tmp:
                out["results"].append(run_dialect(f"sqlite:///{Path(tmp) / 'cases.db'}", sizes))
        elif dialect == "postgresql":
            name = f"nonsite_bench_{secrets.token_hex(4)}"
            admin = create_engine(args.pg_admin, isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
                out["postgresql_version"] = conn.scalar(text("SHOW server_version"))
            try:
                url = make_url(args.pg_admin).set(database=name).render_as_string(hide_password=False)
                out["results"].append(run_dialect(url, sizes))
            finally:
                with admin.connect() as conn:
                    conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                admin.dispose()
        else:
            raise SystemExit(f"unknown dialect {dialect!r}; use sqlite or postgresql")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
