"""The detector pool against a real Kafka-protocol broker (Tansu): three `nonsite pool` worker processes share
twelve looping file cameras; one is killed with SIGKILL; every camera keeps being processed, and the workers'
assignment journals show no camera processed by two workers at once.

Also, without a broker: the camera -> partition placement and the lease arithmetic.
"""

from __future__ import annotations

import os
import signal
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from services.fixtures import nonsite_process, stop_process, wait_for
from services.servers import Tansu, free_port

from nonsite.config import NonsiteConfig
from nonsite.pipeline.pool import Lease, cameras_by_partition, partition_of, read_journal

MEDIA = Path(os.environ.get("NONSITE_MEDIA_DIR") or Path(__file__).resolve().parents[2] / "shared" / "media")
CLIP = MEDIA / "dog_alone_fence.mp4"
CAMERAS = [f"cam-{i:02d}" for i in range(12)]
PARTITIONS = 12
SESSION_MS = 6000


def test_cameras_are_placed_by_kafkas_key_hash_and_stay_put() -> None:
    # murmur2 as Kafka's default partitioner: the same id lands in the same partition on every worker
    assert [partition_of(c, PARTITIONS) for c in CAMERAS] == [partition_of(c, PARTITIONS) for c in CAMERAS]
    from kafka.partitioner.default import murmur2

    assert partition_of("cam-07", 24) == (murmur2(b"cam-07") & 0x7FFFFFFF) % 24
    cfg = NonsiteConfig.model_validate({"cameras": [
        {"id": c, "source": {"url": str(CLIP)}, "enabled": c != "cam-03"} for c in CAMERAS]})
    placed = cameras_by_partition(cfg.cameras, PARTITIONS)
    assert sorted(c.id for cams in placed.values() for c in cams) == sorted(set(CAMERAS) - {"cam-03"})
    assert all(0 <= p < PARTITIONS for p in placed)


class _Heartbeat:
    def __init__(self, last_receive: float, last_reset: float) -> None:
        self.last_receive, self.last_reset = last_receive, last_reset


class _Coordinator:
    def __init__(self, hb: _Heartbeat) -> None:
        self.heartbeat = hb


class _Consumer:
    def __init__(self, hb: _Heartbeat) -> None:
        self._coordinator = _Coordinator(hb)


def test_the_lease_ends_before_the_broker_could_expire_the_session() -> None:
    now = time.monotonic()
    fresh = Lease(_Consumer(_Heartbeat(now - 1.0, now - 30)), session_timeout_s=6.0)
    assert fresh.valid()
    # 1.5 s margin on a 6 s session: 4.6 s without an answered heartbeat is already too long
    stale = Lease(_Consumer(_Heartbeat(now - 4.6, now - 30)), session_timeout_s=6.0)
    assert not stale.valid()
    joined = Lease(_Consumer(_Heartbeat(float("-inf"), now - 0.5)), session_timeout_s=6.0)
    assert joined.valid()  # just joined the group: the join itself proves membership


def _metrics(port: int) -> dict[tuple[str, str], float]:
    """{(name, camera-or-worker label): value} of the samples this test reads."""
    out: dict[tuple[str, str], float] = {}
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=3) as r:
            text = r.read().decode()
    except OSError:
        return out
    for line in text.splitlines():
        for name in ("nonsite_frames_processed_total", "nonsite_pool_cameras"):
            if line.startswith(name + "{"):
                labels, value = line[len(name) + 1:].rsplit("} ", 1)
                key = labels.split('"')[1]
                out[(name, key)] = float(value)
    return out


def _config(path: Path, broker: Tansu) -> Path:
    path.write_text(yaml.safe_dump({
        "detector": {"imgsz": 320},
        "bus": {"kind": "kafka", "kafka": {"bootstrap_servers": broker.bootstrap, "partitions": 2,
                                           "session_timeout_ms": SESSION_MS, "publish_timeout_s": 3}},
        "pool": {"partitions": PARTITIONS, "stop_timeout_s": 10},
        "edge": {"reload": False},
        "cameras": [{"id": c, "fps": 2, "source": {"url": str(CLIP), "loop": True, "realtime": True}}
                    for c in CAMERAS],
    }), encoding="utf-8")
    return path


def _intervals(journals: dict[str, list[dict[str, Any]]], killed: str, killed_at: float
               ) -> dict[str, list[tuple[float, float, str]]]:
    """camera -> [(start, end, worker)]: from a start line to its stop line; the killed worker's open ones end
    at the kill (nothing runs in a SIGKILLed process)."""
    out: dict[str, list[tuple[float, float, str]]] = {}
    for worker, lines in journals.items():
        open_: dict[str, float] = {}
        for e in lines:
            if e["action"] == "start":
                assert e["camera"] not in open_, f"{worker} started {e['camera']} twice"
                open_[e["camera"]] = e["t"]
            elif e["action"] == "stop":
                start = open_.pop(e["camera"])
                assert e["last_frame"] is None or start <= e["last_frame"] <= e["t"]
                out.setdefault(e["camera"], []).append((start, e["t"], worker))
        for cam, start in open_.items():
            assert worker == killed, f"{worker} never wrote the stop of {cam}"
            out.setdefault(cam, []).append((start, killed_at, worker))
    return out


@pytest.mark.timeout(420)
def test_three_workers_share_twelve_cameras_and_survive_a_killed_one(tmp_path: Path) -> None:
    assert CLIP.is_file(), f"test media missing: {CLIP} (set NONSITE_MEDIA_DIR)"
    with Tansu() as broker:
        conf = _config(tmp_path / "pool.yaml", broker)
        workers = ["w1", "w2", "w3"]
        ports = {w: free_port() for w in workers}
        procs = {}
        logs = {w: tmp_path / f"{w}.log" for w in workers}
        for w in workers:
            env = {"NONSITE_DATA_DIR": str(tmp_path / w), "NONSITE_POOL_WORKER_ID": w}
            procs[w] = nonsite_process(["pool", "--config", str(conf), "--metrics-port", str(ports[w])], env, logs[w])

        def tails() -> str:
            return "\n".join(f"--- {w}\n{logs[w].read_text(errors='replace')[-3000:]}" for w in workers)

        def held(alive: list[str]) -> dict[str, float]:
            return {w: _metrics(ports[w]).get(("nonsite_pool_cameras", w), 0.0) for w in alive}

        def processed(alive: list[str]) -> dict[str, float]:
            total = dict.fromkeys(CAMERAS, 0.0)
            for w in alive:
                for (name, cam), v in _metrics(ports[w]).items():
                    if name == "nonsite_frames_processed_total":
                        total[cam] += v
            return total

        try:
            # Every worker gets a share (12 partitions, 4 each) and together they run every camera once.
            wait_for(lambda: (h := held(workers)) and sum(h.values()) == 12 and min(h.values()) >= 1, 180,
                     "three workers sharing the twelve cameras", every_s=1.0, logs=tails)
            before = processed(workers)
            wait_for(lambda: all(v > before[c] for c, v in processed(workers).items()), 90,
                     "every camera processed by its worker", every_s=1.0, logs=tails)

            victim = max(workers, key=lambda w: held(workers)[w])
            victim_cameras = {e["camera"] for e in read_journal(tmp_path / victim / "pool" / "journal.jsonl")
                              if e["action"] == "start"}
            os.kill(procs[victim].pid, signal.SIGKILL)
            killed_at = time.time()
            procs[victim].wait(timeout=10)
            alive = [w for w in workers if w != victim]

            # Its cameras move to the living ones once the session timeout has passed.
            wait_for(lambda: sum(held(alive).values()) == 12, SESSION_MS / 1000 + 60,
                     "the survivors taking over every camera", every_s=0.5, logs=tails)
            print(f"takeover: the survivors ran all 12 cameras {time.time() - killed_at:.1f} s after the SIGKILL "
                  f"(session timeout {SESSION_MS / 1000:.0f} s)")
            after = processed(alive)
            wait_for(lambda: all(v > after[c] for c, v in processed(alive).items()), 90,
                     "every camera processed again after the kill", every_s=1.0, logs=tails)
        finally:
            codes = {w: stop_process(p) for w, p in procs.items()}
        assert all(codes[w] == 0 for w in alive), (codes, tails())

    journals = {w: read_journal(tmp_path / w / "pool" / "journal.jsonl") for w in workers}
    intervals = _intervals(journals, victim, killed_at)
    assert sorted(intervals) == CAMERAS
    for cam, spans in intervals.items():
        spans.sort()
        for (_s1, e1, w1), (s2, _e2, w2) in zip(spans, spans[1:], strict=False):
            assert e1 <= s2, f"{cam} ran on {w1} until {e1:.3f} and on {w2} from {s2:.3f}: processed twice"
    for cam in victim_cameras:
        taken = [s for s, _e, w in intervals[cam] if w != victim and s > killed_at]
        assert taken, f"{cam} of the killed {victim} was never taken over"
    stops = [e for lines in journals.values() for e in lines if e["action"] == "stop"]
    assert stops and all(e["frames"] >= 0 for e in stops)
    assert any(e["reason"] == "shutdown" for e in stops)
