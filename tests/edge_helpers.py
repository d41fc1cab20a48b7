"""Helpers for the edge-runner tests: configs over the shared media, a runner in a thread, a detector that is
of fixed speed (an accelerator at capacity), and reading Prometheus text."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import supervision as sv
from prometheus_client.parser import text_string_to_metric_families

from nonsite.bus.embedded import EmbeddedBus
from nonsite.config import NonsiteConfig
from nonsite.evidence.local import LocalStore
from nonsite.models.base import Detector
from nonsite.models.postprocess import make_detections
from nonsite.pipeline.edge import EdgeRunner

PARKING = "parking_lot_cctv_timelapse_a_640x480.mp4"  # 640x480, 20 fps, 162 frames
DOG = "dog_alone_fence.mp4"  # 360x360, 30 fps, 8 s
JUNCTION = "street_india_intersection.mp4"  # 640x360, 30 fps, 39 s

FULL = [[0, 0], [1, 0], [1, 1], [0, 1]]


def camera(cid: str, video: Path, fps: float = 5, *, live: bool = False, zones: list[dict[str, Any]] | None = None,
           **source: Any) -> dict[str, Any]:
    """A camera dict; ``live`` = the file paced in real time and looped: a simulated camera."""
    src: dict[str, Any] = {"url": str(video), **({"realtime": True, "loop": True} if live else {}), **source}
    return {"id": cid, "fps": fps, "source": src,
            "zones": zones if zones is not None else [{"id": "all", "kind": "no_stray_dogs", "polygon": FULL}]}


def config(tmp_path: Path, cameras: list[dict[str, Any]], **sections: Any) -> NonsiteConfig:
    """Motion gating is off unless ``edge`` asks for it: these tests count frames the detector sees (scheduling,
    fairness, metrics); tests/test_gating.py covers the gate."""
    edge = {"gating": {"enabled": False}, **sections.pop("edge", {})}
    return NonsiteConfig.model_validate({"data_dir": str(tmp_path / "data"), "cameras": cameras,
                                         "evidence": {"pre_roll_s": 1, "post_roll_s": 0.5}, "edge": edge,
                                         **sections})


def runner(cfg: NonsiteConfig, detector: Detector, **kw: Any) -> EdgeRunner:
    data = Path(cfg.data_dir)
    data.mkdir(parents=True, exist_ok=True)
    return EdgeRunner(cfg, detector, LocalStore(data / "evidence"), EmbeddedBus(data / "bus" / "bus.sqlite"), **kw)


class Running:
    """``runner.run(stop, until_done=False)`` in a thread until :meth:`stop`."""

    def __init__(self, r: EdgeRunner, until_done: bool = False) -> None:
        self.runner = r
        self.stop_event = threading.Event()
        self.result: dict[str, Any] = {}
        self.thread = threading.Thread(target=self._run, args=(until_done,), daemon=True)
        self.thread.start()

    def _run(self, until_done: bool) -> None:
        self.result.update(self.runner.run(self.stop_event, until_done=until_done))

    def stop(self, timeout: float = 20) -> dict[str, Any]:
        self.stop_event.set()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the runner did not stop"
        return self.result


class FixedLatencyDetector:
    """An accelerator at a known speed: every call takes ``latency_s`` and finds nothing. The scheduling
    tests measure who gets the detector and how often, which must not depend on how busy the test
    machine's CPU is; the detections themselves are tested with the real models elsewhere."""

    def __init__(self, like: Detector, latency_s: float) -> None:
        self.latency_s = latency_s
        self.backend, self.weights, self.class_names = like.backend, like.weights, like.class_names
        self.calls: list[int] = []

    def detect(self, images: Sequence[np.ndarray]) -> list[sv.Detections]:
        self.calls.append(len(images))
        time.sleep(self.latency_s)
        return [make_detections(np.zeros((0, 4)), np.zeros(0), np.zeros(0, int), self.class_names) for _ in images]


#: How much longer than its nominal budget a wait may take before it counts as a failure. A wait ends as soon as
#: its condition holds, so the slack costs nothing when things work; it keeps a loaded CI machine (whole suites
#: side by side) from turning "slow" into "failed" (test_edge_reload failed there with the nominal 10 s).
PATIENCE = 6.0


def wait_until(cond: Callable[[], bool], timeout: float, what: str) -> None:
    budget = timeout * PATIENCE
    deadline = time.monotonic() + budget
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {budget:g} s waiting for {what}")
        time.sleep(0.02)


def scrape(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Prometheus text -> {(sample name, labels): value}."""
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def sample(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)
