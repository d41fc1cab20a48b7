"""Prometheus metrics of a real run: two file cameras through the real detector, scraped over HTTP; every
counter matches what was processed."""

from __future__ import annotations

import threading
import urllib.request
from pathlib import Path

import pytest
from edge_helpers import DOG, PARKING, camera, config, runner, sample, scrape

from nonsite.config import DetectorConfig
from nonsite.models import create_detector
from nonsite.ops.health import Health, OpsServer, metrics_text
from nonsite.pipeline.metrics import STAGES, EdgeMetrics


@pytest.fixture(scope="module")
def detector(models_dir: Path):
    return create_detector(DetectorConfig(backend="onnx"))


def test_counters_match_what_was_processed(tmp_path: Path, media_dir: Path, detector) -> None:
    cfg = config(tmp_path, [camera("cam-park", media_dir / PARKING, fps=5), camera("cam-dog", media_dir / DOG, fps=6)],
                 rules={"stray_dog": {"dwell_s": 3, "max_gap_s": 1.5}})
    r = runner(cfg, detector, max_batch=2)
    server = OpsServer(Health("test-edge"), [r.metrics.registry], "127.0.0.1", 0)
    try:
        stats = r.run(threading.Event())
        text = urllib.request.urlopen(server.url + "/metrics", timeout=10).read().decode()
    finally:
        server.stop()
    m = scrape(text)
    health = {run.camera.id: run.health for run in r.runs}
    assert stats["cam-park"].frames == 41 and health["cam-park"].frames_decoded == 162  # 8.1 s at 5 of 20 fps
    total = 0
    for cid, s in stats.items():
        h = health[cid]
        assert h is not None
        total += s.frames
        assert sample(m, "nonsite_frames_decoded_total", camera=cid) == h.frames_decoded
        assert sample(m, "nonsite_frames_sampled_total", camera=cid) == h.frames_sampled == s.frames
        assert sample(m, "nonsite_frames_processed_total", camera=cid) == s.frames
        assert sample(m, "nonsite_frames_dropped_total", camera=cid, where="queue") == 0  # files wait, never drop
        assert sample(m, "nonsite_frames_dropped_total", camera=cid, where="source") == 0
        assert sample(m, "nonsite_queue_depth", camera=cid) == 0
        assert sample(m, "nonsite_camera_up", camera=cid) == 0
        assert sample(m, "nonsite_camera_state", camera=cid, state="finished") == 1
        assert sample(m, "nonsite_reconnects_total", camera=cid) == 0
        for stage in ("decode", "queue", "detect", "track"):
            assert sample(m, "nonsite_stage_latency_seconds_count", camera=cid, stage=stage) == s.frames, stage
        for stage in ("rules", "evidence"):  # the first frame also builds the rule engine: not sampled
            assert sample(m, "nonsite_stage_latency_seconds_count", camera=cid, stage=stage) == s.frames - 1
        assert sample(m, "nonsite_stage_latency_seconds_sum", camera=cid, stage="decode") > 0
        for kind, n in s.published.items():
            assert sample(m, "nonsite_events_published_total", camera=cid, type=kind) == n
        if s.published:  # one package written (off the loop) per event published
            assert sample(m, "nonsite_stage_latency_seconds_count", camera=cid,
                          stage="package") == sum(s.published.values())
    # The dog camera publishes its stray dog: the events counter is exercised on real video.
    assert sample(m, "nonsite_events_published_total", camera="cam-dog", type="stray_dog") >= 1
    # Detector calls: the batch sizes add up to every processed frame (batches of at most two).
    calls = {int(dict(k[1])["batch_size"]): v for k, v in m.items()
             if k[0] == "nonsite_detector_latency_seconds_count" and dict(k[1])["backend"] == "onnx"}
    assert sum(size * n for size, n in calls.items()) == total and set(calls) <= {1, 2}
    assert sample(m, "nonsite_cameras") == 2
    assert sample(m, "process_resident_memory_bytes") > 50e6
    assert set(STAGES) == {"decode", "queue", "detect", "track", "rules", "evidence", "package"}


def test_registries_are_independent() -> None:
    a, b = EdgeMetrics(), EdgeMetrics(process=False)  # no duplicate-registration errors
    a.frames_processed.labels(camera="x").inc(3)
    a.detector_call("onnx", 4, 0.04)
    body = metrics_text([a.registry]).decode()
    m = scrape(body)
    assert sample(m, "nonsite_frames_processed_total", camera="x") == 3
    assert sample(m, "nonsite_detector_latency_seconds_count", backend="onnx", batch_size="4") == 1
    assert 'nonsite_frames_processed_total{camera="x"}' not in metrics_text([b.registry]).decode()
    assert b.value("nonsite_frames_processed_total", camera="x") == 0 and a.value(
        "nonsite_frames_processed_total", camera="x") == 3
