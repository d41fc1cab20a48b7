"""The nonsite benchmark: `make bench` (or `python bench/run.py`) writes bench/results/latest.json and .md.

Every figure is measured on this machine in this run, side by side, each in a fresh process (so one
measurement's memory and warm caches do not leak into the next). See bench/README.md for what each figure
means. Options: --frames N (per camera, default 200), --cameras 1,4,16, --quick (a smoke run: 20 frames),
--gating (only the motion-gating figure: eval video clips with gating off vs on).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"

# (file, duration in seconds): the shared media clips, simulated cameras take them in turn.
VIDEOS = [
    ("street_india_intersection.mp4", 39.0),
    ("parking_lot_cctv_timelapse_a_640x480.mp4", 8.1),
    ("traffic_cctv_indonesia_motorcycles.mp4", 30.1),
    ("dog_alone_fence.mp4", 8.2),
    ("traffic_highway.mp4", 10.4),
]
SOURCE_FPS = {"street_india_intersection.mp4": 30.0, "parking_lot_cctv_timelapse_a_640x480.mp4": 20.0,
              "traffic_cctv_indonesia_motorcycles.mp4": 30.0, "dog_alone_fence.mp4": 30.0,
              "traffic_highway.mp4": 25.1}
STAGES = ("decode", "queue", "detect", "track", "rules", "evidence", "package")


SHARED = HERE.parent.parent / "shared"
if not os.environ.get("NONSITE_MODELS_DIR") and (SHARED / "models").is_dir():
    os.environ["NONSITE_MODELS_DIR"] = str(SHARED / "models")


def media_dir() -> Path:
    d = os.environ.get("NONSITE_MEDIA_DIR") or str(SHARED / "media")
    if not Path(d).is_dir():
        sys.exit(f"error: no media at {d}; set NONSITE_MEDIA_DIR to the shared media folder")
    return Path(d)


def cameras(n: int, frames: int) -> list[dict[str, Any]]:
    """``n`` file cameras over the shared clips, each sampled at the fps that yields about ``frames``
    frames over its clip (every frame when the clip is shorter than that)."""
    out = []
    for i in range(n):
        video, duration = VIDEOS[i % len(VIDEOS)]
        fps = min(SOURCE_FPS[video], frames / duration * 1.0001)
        out.append({
            "id": f"cam{i:02d}", "fps": round(fps, 4), "source": {"url": str(media_dir() / video)},
            "zones": [  # every rule watches the whole picture, so tracking and rules do their full work
                {"id": "walk", "kind": "sidewalk", "polygon": [[0, 0.3], [1, 0.3], [1, 1], [0, 1]]},
                {"id": "stalls", "kind": "no_vending", "polygon": [[0, 0], [1, 0], [1, 1], [0, 1]]},
                {"id": "dogs", "kind": "no_stray_dogs", "polygon": [[0, 0], [1, 0], [1, 1], [0, 1]]},
            ],
        })
    return out


def decode(cams: list[dict[str, Any]], limit: int) -> dict[str, list[np.ndarray]]:
    """The frames each camera's source yields (the pipeline's own sampling), at most ``limit`` each."""
    from nonsite.streams import FileSource

    cache: dict[tuple[str, float], list[np.ndarray]] = {}
    out = {}
    for c in cams:
        key = (c["source"]["url"], c["fps"])
        if key not in cache:
            frames = []
            for f in FileSource(c["id"], key[0], fps=key[1]).frames():
                frames.append(f.image)
                if len(frames) >= limit:
                    break
            cache[key] = frames
        out[c["id"]] = cache[key]
    return out


def detector(backend: str, precision: str = "", model: str = "", streams: str = ""):  # noqa: ANN201
    """The backend's detector; ``precision`` (openvino: fp32, bf16, int8, auto), ``model`` and ``streams`` (openvino:
    0 auto, 1 one request per batch) when given."""
    from nonsite.config import DetectorConfig
    from nonsite.models import create_detector

    cfg: dict[str, Any] = {"backend": backend}
    if model:
        cfg["model"] = model
    if backend == "openvino" and (precision or streams):
        cfg["openvino"] = {**({"precision": precision} if precision else {}),
                           **({"streams": int(streams)} if streams else {})}
    return create_detector(DetectorConfig.model_validate(cfg))


def warm_up(det: Any, images: list[np.ndarray], max_batch: int) -> None:
    """Run every batch size on every input shape once (OpenVINO compiles per shape; first calls are slow)."""
    from nonsite.models.postprocess import rect_shape

    shapes = {rect_shape(im.shape[:2], 640) for im in images}
    hs = sorted({h for h, _ in shapes} | {max(h for h, _ in shapes)})
    ws = sorted({w for _, w in shapes})
    for h in hs:
        for w in ws:
            blank = np.full((h, w, 3), 114, np.uint8)
            for b in range(1, max_batch + 1):
                det.detect([blank] * b)


class Recorder:
    """Passes detect() calls through and records each call's batch size and frame size, so the bare
    detector can be run on the same frames in batches of the same sizes."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.backend, self.weights, self.class_names = inner.backend, inner.weights, inner.class_names
        self.config = getattr(inner, "config", None)
        self.calls: list[tuple[int, tuple[int, ...]]] = []

    def detect(self, images: list[np.ndarray]) -> list[Any]:
        self.calls.append((len(images), images[0].shape))
        return self.inner.detect(images)


def replay(per_cam: dict[str, list[np.ndarray]], calls: list[tuple[int, tuple[int, ...]]]) -> list[list[np.ndarray]]:
    """The recorded batches again: same sizes, same frame sizes, the same frames (taken per frame size in
    round-robin order across cameras)."""
    pools: dict[tuple[int, ...], list[np.ndarray]] = {}
    lists = list(per_cam.values())
    for i in range(max(len(v) for v in lists)):
        for v in lists:
            if i < len(v):
                pools.setdefault(v[i].shape, []).append(v[i])
    taken = dict.fromkeys(pools, 0)
    batches = []
    for n, shape in calls:
        start = taken[shape]
        batches.append(pools[shape][start : start + n])
        taken[shape] = start + n
    return batches


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def quantile(buckets: list[tuple[float, float]], q: float) -> float | None:
    """Linear interpolation inside cumulative Prometheus buckets [(le, count)]."""
    if not buckets or buckets[-1][1] == 0:
        return None
    target = q * buckets[-1][1]
    prev_le, prev_c = 0.0, 0.0
    for le, c in buckets:
        if c >= target:
            if math.isinf(le):
                return prev_le
            return prev_le + (le - prev_le) * ((target - prev_c) / (c - prev_c) if c > prev_c else 1.0)
        prev_le, prev_c = le, c
    return prev_le


def stage_figures(registry: Any, camera_ids: list[str]) -> dict[str, dict[str, float | None]]:
    out: dict[str, dict[str, float | None]] = {}
    for stage in STAGES:
        total = count = 0.0
        buckets: dict[float, float] = {}
        for fam in registry.collect():
            if fam.name != "nonsite_stage_latency_seconds":
                continue
            for s in fam.samples:
                if s.labels.get("stage") != stage or s.labels.get("camera") not in camera_ids:
                    continue
                if s.name.endswith("_sum"):
                    total += s.value
                elif s.name.endswith("_count"):
                    count += s.value
                elif s.name.endswith("_bucket"):
                    le = float(s.labels["le"])
                    buckets[le] = buckets.get(le, 0.0) + s.value
        cum = sorted(buckets.items())
        p95 = quantile(cum, 0.95)
        out[stage] = {"mean_ms": round(total / count * 1000, 2) if count else None,
                      "p95_ms": round(p95 * 1000, 1) if p95 is not None else None, "samples": int(count)}
    return out


# -- the measurements, each run in its own process -----------------------------------------------


def measure_detector(backend: str, batch: int, frames: int, precision: str = "", model: str = "",
                     streams: str = "") -> dict[str, Any]:
    per_video = max(1, frames // len(VIDEOS))
    cams = [{"id": f"v{i}", "fps": min(SOURCE_FPS[v], per_video / d * 1.0001), "source": {"url": str(media_dir() / v)}}
            for i, (v, d) in enumerate(VIDEOS)]
    images = [im for v in decode(cams, per_video).values() for im in v]
    det = detector(backend, precision, model, streams)
    warm_up(det, images, batch)
    batches = [images[i : i + batch] for i in range(0, len(images), batch)]
    cpu = time.process_time()
    from nonsite.pipeline.qualification import time_batches

    seconds, n = time_batches(det, batches, min_s=5.0)
    cores = (time.process_time() - cpu) / seconds
    return {"backend": backend, "batch": batch, "frames": n, "seconds": round(seconds, 3), "precision_asked": precision,
            "cores_used": round(cores, 2),
            "fps": round(n / seconds, 2), "ms_per_frame": round(seconds / n * 1000, 2),
            "precision": getattr(det, "precision", "f32"), "model": det.weights.name,
            "streams": ("one request per batch" if streams == "1" else "throughput streams")
            if backend == "openvino" and batch > 1 else ""}


def measure_pipeline(backend: str, n_cams: int, frames: int, max_batch: int, overlap: bool = True) -> dict[str, Any]:
    from nonsite.bus.embedded import EmbeddedBus
    from nonsite.config import NonsiteConfig
    from nonsite.evidence.local import LocalStore
    from nonsite.pipeline.edge import EdgeRunner

    cams = cameras(n_cams, frames)
    det = Recorder(detector(backend))
    warm = decode(cams[: len(VIDEOS)], 2)
    warm_up(det, [im for v in warm.values() for im in v], max_batch)
    rss_before = peak_rss_mb()
    # Memory per camera: the resident memory while the cameras run over that with the model loaded and warmed up
    # on every frame size of the run (OpenVINO keeps memory per input shape: a cost per frame size, not per
    # camera, which a difference of peaks between runs of different clip mixes would charge to the cameras).
    rss_model = current_rss_mb()
    rss_run = [rss_model]

    cores: list[float] = []

    def pipeline(measure_rss: bool = False) -> tuple[float, Any, dict[str, int]]:
        det.calls.clear()
        if not measure_rss:
            return run_once()
        done = threading.Event()

        def sample() -> None:
            while not done.wait(0.05):
                rss_run[0] = max(rss_run[0], current_rss_mb())

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            return run_once()
        finally:
            done.set()
            sampler.join()

    def run_once() -> tuple[float, Any, dict[str, int]]:
        with tempfile.TemporaryDirectory(prefix="nonsite-bench-") as tmp:
            cfg = NonsiteConfig.model_validate({"data_dir": tmp, "cameras": cams, "edge": {
                "max_batch": max_batch, "gating": {"enabled": False}}})  # every frame: the ratio to the bare detector
            bus = EmbeddedBus(Path(tmp) / "bus.sqlite")
            runner = EdgeRunner(cfg, det, LocalStore(Path(tmp) / "evidence"), bus)
            runner.overlap = overlap
            start = time.perf_counter()
            cpu = time.process_time()
            stats = runner.run(threading.Event())
            wall = time.perf_counter() - start
            cores.append((time.process_time() - cpu) / wall)
            bus.close()
        return wall, runner.metrics, {cid: s.frames for cid, s in stats.items()}

    # Pipeline, bare detector on the very same frames (batched the same way), pipeline again: the two
    # pipeline passes bracket the bare one, so a change in the machine's load during the run shows up
    # on both sides of the ratio.
    wall1, m, per_cam = pipeline(measure_rss=True)  # the second pass runs after the bare run held every frame
    calls_made = list(det.calls)
    rss = peak_rss_mb()  # before the bare run holds all the frames in memory
    processed = sum(per_cam.values())
    dropped = sum(m.value("nonsite_frames_dropped_total", camera=c["id"], where=w)
                  for c in cams for w in ("queue", "source"))
    stages = stage_figures(m.registry, [c["id"] for c in cams])
    calls = len(calls_made)
    per_frames = decode(cams, max(per_cam.values()))
    batches = replay({cid: fr[: per_cam[cid]] for cid, fr in per_frames.items()}, calls_made)
    del per_frames
    cpu = time.process_time()
    from nonsite.pipeline.qualification import time_batches

    bare_s, bare_n = time_batches(det.inner, batches)
    bare_cores = (time.process_time() - cpu) / bare_s
    assert bare_n == processed, (bare_n, processed)
    del batches
    wall2, _, per_cam2 = pipeline()
    assert per_cam2 == per_cam
    fps = 2 * processed / (wall1 + wall2)
    bare_fps = bare_n / bare_s
    return {
        "backend": backend, "cameras": n_cams, "max_batch": max_batch, "frames": processed,
        "loop": "overlapped" if overlap else "serial", "precision": getattr(det.inner, "precision", None),
        "mean_batch": round(processed / calls, 2) if calls else None, "wall_s": [round(wall1, 2), round(wall2, 2)],
        "bare_s": round(bare_s, 2),
        "fps": round(fps, 2), "bare_fps": round(bare_fps, 2), "ratio": round(fps / bare_fps, 3),
        "cores_used": round(sum(cores) / len(cores), 2), "bare_cores_used": round(bare_cores, 2),
        # Frames per CPU second, pipeline over bare: what the ratio is once neither side gets more of a
        # shared machine than the other (the pipeline's extra threads win CPU from other jobs).
        "cpu_ratio": round((fps / (sum(cores) / len(cores))) / (bare_fps / bare_cores), 3),
        "stages": stages, "frames_dropped": int(dropped),
        "peak_rss_mb": round(rss, 1), "rss_before_cameras_mb": round(rss_before, 1),
        "rss_model_mb": round(rss_model, 1), "rss_run_peak_mb": round(rss_run[0], 1),
        "rss_per_camera_mb": round((rss_run[0] - rss_model) / n_cams, 1),
    }


class TimedBus:
    """An embedded bus that notes the wall time each violation is published (the alert's moment at the edge)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.published: list[tuple[float, bytes]] = []

    def publish(self, topic: str, key: str, value: bytes) -> Any:
        from nonsite.bus.events import TOPIC_VIOLATIONS

        if topic == TOPIC_VIOLATIONS:
            self.published.append((time.time(), value))
        return self.inner.publish(topic, key, value)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


PHOTOS = ("street_pedestrians_city.jpg", "generic_bus_ultralytics.jpg")
CAMERA_SIZE = (1920, 1080)
"""The still cameras' photographs are scaled down to fit a 1080p camera's picture."""
LIVE_DWELL = {"stray_dog": 3.0, "sidewalk_parking": 5.0, "street_vending": 5.0}
"""Short dwell times on the live cameras, so alerts (and their delay) happen within a run of seconds."""


def live_cameras(n: int, fps: float, media: Path) -> list[dict[str, Any]]:
    """``n`` simulated live cameras, half busy (the shared clips, decoded at their own frame rate) and half still
    (a photograph as a 5 fps MJPEG file: a still street), paced in real time and looped."""
    cams = cameras(n, 100)
    for i, c in enumerate(cams):
        c["fps"] = fps
        if i % 2 == 1:
            photo = PHOTOS[(i // 2) % len(PHOTOS)]
            c["source"]["url"] = str(still_video(media_dir() / photo, fps, 20.0, media / f"{Path(photo).stem}.avi",
                                                 fit=CAMERA_SIZE))
            c["id"] = f"still{i:02d}"
        else:
            c["id"] = f"busy{i:02d}"
        c["source"].update(realtime=True, loop=True)
        c["rules"] = {k: {"dwell_s": v} for k, v in LIVE_DWELL.items()}
    return cams


class LiveEdge:
    """What :func:`live_edge` sets up: the cameras, their configuration, the edge runner (not started: ``thread``
    runs it until ``stop``), the bus that notes publication times, and the memory with the model warmed up."""

    def __init__(self, cams: list[dict[str, Any]], cfg: Any, runner: Any, bus: TimedBus, rss_model: float) -> None:
        self.cams, self.cfg, self.runner, self.bus, self.rss_model = cams, cfg, runner, bus, rss_model
        self.stop = threading.Event()
        self.thread = threading.Thread(target=runner.run, args=(self.stop,), kwargs={"until_done": False},
                                       name="edge-loop")


@contextlib.contextmanager
def live_edge(det: Any, n_cams: int, fps: float, max_batch: int, plates: str = "onnxruntime") -> Any:
    """``n_cams`` simulated live cameras (:func:`live_cameras`) on an edge runner with ``det`` warmed up on their
    frame sizes (gating on, the default), plates read on ``plates`` (``plates.runtime``); the runner stops and the
    files go when the block ends."""
    from nonsite.bus.embedded import EmbeddedBus
    from nonsite.config import NonsiteConfig
    from nonsite.evidence.local import LocalStore
    from nonsite.pipeline.edge import EdgeRunner

    with tempfile.TemporaryDirectory(prefix="nonsite-bench-live-") as media:
        cams = live_cameras(n_cams, fps, Path(media))
        warm = decode(cams[: len(VIDEOS)], 2)
        warm_up(det, [im for v in warm.values() for im in v], max_batch)
        rss_model = current_rss_mb()
        with tempfile.TemporaryDirectory(prefix="nonsite-bench-") as tmp:
            cfg = NonsiteConfig.model_validate({"data_dir": tmp, "cameras": cams, "edge": {"max_batch": max_batch},
                                                "plates": {"runtime": plates}})
            bus = TimedBus(EmbeddedBus(Path(tmp) / "bus.sqlite"))
            runner = EdgeRunner(cfg, det, LocalStore(Path(tmp) / "evidence"), bus)  # type: ignore[arg-type]
            edge = LiveEdge(cams, cfg, runner, bus, rss_model)
            try:
                yield edge
            finally:
                edge.stop.set()
                if edge.thread.is_alive():
                    edge.thread.join(30)
                bus.inner.close()


def camera_counts(metrics: Any, cams: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Frames sampled, processed, detected and dropped (queue full or the source behind) per camera."""
    return [{
        "id": c["id"],
        **{k: int(metrics.value(f"nonsite_frames_{k}_total", camera=c["id"]))
           for k in ("sampled", "processed", "detected")},
        "dropped": int(metrics.value("nonsite_frames_dropped_total", camera=c["id"], where="queue")
                       + metrics.value("nonsite_frames_dropped_total", camera=c["id"], where="source")),
    } for c in cams]


LIVE_WARMUP_S = 5.0
"""Seconds of a live run before its frames count: the cameras open, each builds its rule engine and takes its view
guard's reference, all in the same second. Drops then are reported (``dropped_pct_with_start``), not judged."""


def thread_cpu() -> dict[int, float]:
    """CPU seconds (user + system) of each thread of this process, by native thread id (/proc/self/task)."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[int, float] = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            stat = Path(f"/proc/self/task/{tid}/stat").read_text()
        except OSError:  # the thread ended
            continue
        fields = stat.rsplit(")", 1)[1].split()
        out[int(tid)] = (int(fields[11]) + int(fields[12])) / tick
    return out


def thread_kind(tid: int, loop: int | None, names: dict[int | None, str]) -> str:
    """What an edge thread is, by its Python name (``names``: native id -> name; the inference runtime's native
    threads have none)."""
    if tid == loop:
        return "loop"
    name = names.get(tid)
    if name is None:
        return "runtime"
    for prefix, kind in (("read-", "readers"), ("detect", "detector"), ("evidence-writer", "writer"),
                         ("evidence-ahead", "writer"), ("preroll", "pre-roll"), ("MainThread", "bench")):
        if name.startswith(prefix):
            return kind
    return "other"


class ThreadCores:
    """Cores used by each kind of edge thread between :meth:`start` and :meth:`stop`: the loop, the detector
    thread and the runtime's own threads, the cameras' readers (decode, motion gate), the pre-roll JPEG encoders,
    the package writer. Threads are named as they are first seen (call :meth:`look` now and then: the writer
    starts late)."""

    def __init__(self, loop: threading.Thread) -> None:
        self.loop = loop
        self.kinds: dict[int, str] = {}

    def look(self) -> None:
        names = {t.native_id: t.name for t in threading.enumerate()}
        self.kinds.update({t: thread_kind(t, self.loop.native_id, names) for t in thread_cpu() if t not in self.kinds})

    def start(self) -> None:
        self.look()
        self.before, self.t0 = thread_cpu(), time.perf_counter()

    def stop(self) -> dict[str, float]:
        after, wall = thread_cpu(), time.perf_counter() - self.t0
        self.look()
        used: dict[str, float] = {}
        for t, cpu in after.items():
            kind = self.kinds.get(t, "other")
            used[kind] = used.get(kind, 0.0) + cpu - self.before.get(t, 0.0)
        return {k: round(v / wall, 2) for k, v in sorted(used.items(), key=lambda kv: -kv[1])}


def measure_live(backend: str, n_cams: int, fps: float, seconds: float, max_batch: int,
                 loop_work: str = "off", plates: str = "onnxruntime") -> dict[str, Any]:
    """Simulated live cameras (:func:`live_cameras`) with motion gating on (the default) for ``seconds`` after
    :data:`LIVE_WARMUP_S`: what the box detects, what it drops, how late frames and alerts are, the memory and
    where the CPU goes. ``loop_work`` "in": the loop encodes the pre-roll and writes the packages itself (as before
    the package writer; ``EdgeRunner.off_loop``); "package": the package writer does all of a package's work when it
    is due, none ahead (as before the clip was encoded while the package waits; ``EdgeRunner.ahead``); for the
    side-by-side figures. ``plates``: the runtime that reads the plates (``plates.runtime``)."""
    from nonsite.bus.events import ViolationEvent

    rss_start = current_rss_mb()
    det = detector(backend)
    with live_edge(det, n_cams, fps, max_batch, plates) as edge:
        cams, cfg, bus, rss_model = edge.cams, edge.cfg, edge.bus, edge.rss_model
        edge.runner.off_loop = loop_work != "in"
        edge.runner.ahead = loop_work != "package"
        threads = ThreadCores(edge.thread)
        edge.thread.start()
        time.sleep(LIVE_WARMUP_S)
        m = edge.runner.metrics
        at_start = {r["id"]: r for r in camera_counts(m, cams)}
        cpu = time.process_time()
        started = time.perf_counter()
        threads.start()
        rss_peak = 0.0
        while time.perf_counter() - started < seconds:
            time.sleep(0.5)
            threads.look()
            rss_peak = max(rss_peak, current_rss_mb())
        cores = (time.process_time() - cpu) / (time.perf_counter() - started)
        by_thread = threads.stop()
        whole = camera_counts(m, cams)
        edge.stop.set()
        edge.thread.join(30)
        rows = [{k: (v - at_start[r["id"]][k] if k != "id" else v) for k, v in r.items()} for r in whole]
        stages = stage_figures(m.registry, [c["id"] for c in cams])
        post_roll, gap = cfg.evidence.post_roll_s, cfg.evidence.min_still_gap_s
    excess = []
    for wall, value in bus.published:
        ev = ViolationEvent.model_validate_json(value)
        # An event goes out at the latest of: onset + dwell + the post-roll recorded on purpose, and onset + the
        # gap between the two overview stills (evidence.min_still_gap_s, 10 s, longer than these short dwells).
        # What it takes beyond that is the box's lag.
        onset = ev.started_at.timestamp()
        excess.append(wall - max(onset + ev.dwell_s + post_roll, onset + gap))
    got = [r["processed"] / seconds for r in rows]
    sampled = sum(r["sampled"] for r in rows)
    dropped = sum(r["dropped"] for r in rows)
    detected = sum(r["detected"] for r in rows)
    processed = sum(r["processed"] for r in rows)
    dropped_pct = round(100 * dropped / sampled, 2) if sampled else 0.0
    sampled_all, dropped_all = sum(r["sampled"] for r in whole), sum(r["dropped"] for r in whole)
    worst = round(max(excess), 2) if excess else None
    return {
        "backend": backend, "cameras": n_cams, "camera_fps": fps, "seconds": seconds, "max_batch": max_batch,
        "loop_work": loop_work, "plates": plates, "warmup_s": LIVE_WARMUP_S,
        "dropped_pct_with_start": round(100 * dropped_all / sampled_all, 2) if sampled_all else 0.0,
        "cores_by_thread": by_thread,
        "still_cameras": sum(1 for c in cams if c["id"].startswith("still")),
        "demand_fps": round(n_cams * fps, 1), "processed_fps": round(sum(got), 2),
        "detector_fps": round(detected / seconds, 2),
        "gated_share": round(1 - detected / processed, 3) if processed else None,
        "per_camera_fps_min": round(min(got), 2), "per_camera_fps_max": round(max(got), 2),
        "frames_sampled": int(sampled), "frames_dropped": int(dropped), "dropped_pct": dropped_pct,
        "queue_wait_ms": stages["queue"]["mean_ms"], "queue_wait_p95_ms": stages["queue"]["p95_ms"],
        "alerts": len(excess), "alert_lag_max_s": worst,
        "alert_lag_median_s": round(sorted(excess)[len(excess) // 2], 2) if excess else None,
        "cores_used": round(cores, 2),
        "rss_model_mb": round(rss_model, 1), "rss_peak_mb": round(max(rss_peak, current_rss_mb()), 1),
        "rss_start_mb": round(rss_start, 1),
        "rss_per_camera_mb": round((max(rss_peak, current_rss_mb()) - rss_model) / n_cams, 1),
        "served": dropped_pct < 1.0 and (worst is None or worst <= 2.0),
    }


def current_rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return peak_rss_mb()


def still_video(image: Path, fps: float, seconds: float, out: Path, fit: tuple[int, int] | None = None) -> Path:
    """A still-image eval clip as a video file (the photograph repeated at ``fps``): a perfectly still scene
    the edge runner can play as a file camera. ``fit`` (width, height): scale the photograph down to fit, as a
    camera's resolution (street_pedestrians_city.jpg is 5388 x 3592, 19 MP: no street camera sends that)."""
    import cv2

    img = cv2.imread(str(image), cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError(f"{image}: not a picture OpenCV can read")
    h, w = img.shape[:2]
    if fit is not None and (w > fit[0] or h > fit[1]):
        scale = min(fit[0] / w, fit[1] / h)
        img = cv2.resize(img, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
        h, w = img.shape[:2]
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
    for _ in range(int(seconds * fps) + 1):
        writer.write(img)
    writer.release()
    return out


def composite_video(clip: Any, out: Path) -> Path:
    """A composite eval clip (a real background with real object crops pasted in: the left-object clips) as a
    video file at the camera's fps, the same frames ``nonsite eval`` generates in memory, so the peer and the
    edge runner read one file."""
    import cv2

    from nonsite.pipeline.composite import composite_frames

    writer: Any = None
    for _, img in composite_frames(clip.composite, clip.camera.fps, clip.media):
        if writer is None:
            h, w = img.shape[:2]
            writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"MJPG"), clip.camera.fps, (w, h))
        writer.write(img)
    if writer is None:
        raise ValueError(f"{clip.name}: the composite made no frames")
    writer.release()
    return out


def measure_gating(backend: str, max_batch: int, quick: bool, peer: bool = False) -> dict[str, Any]:
    """With ``peer``, first the naive ultralytics loop (bench/peer.py) over the same clips at the same sampling, in
    the same process; then nonsite's throughput over it is each run's frames/s over the peer's.

    The eval dataset's clips (tests/data/eval, their zones and fps; a still-image clip as a video of the
    repeated photograph) together through the edge runner as file cameras, gating off then on, in this one
    process after one warm-up: frames, detector frames and alerts per kind of scene (busy videos, still
    scenes), wall time and frames/s of the whole run."""
    from nonsite.bus.embedded import EmbeddedBus
    from nonsite.config import NonsiteConfig
    from nonsite.evidence.local import LocalStore
    from nonsite.pipeline.edge import EdgeRunner
    from nonsite.pipeline.evaluation import load_dataset

    os.environ.setdefault("NONSITE_MEDIA_DIR", str(media_dir()))
    clips = load_dataset(HERE.parent / "tests" / "data" / "eval")
    videos = [c for c in clips if c.video is not None]
    stills = [c for c in clips if c.image is not None and c.composite is None]
    composites = [c for c in clips if c.composite is not None]  # left objects on a real CCTV background
    if quick:
        videos, stills, composites = videos[:1], stills[:2], composites[:1]
    det = detector(backend)
    rows = []
    with tempfile.TemporaryDirectory(prefix="nonsite-bench-media-") as media:
        for c in stills:
            assert c.image is not None and c.duration_s is not None
            c.camera.source.url = str(still_video(c.image, c.camera.fps, c.duration_s, Path(media) / f"{c.name}.avi"))
        for c in composites:
            c.camera.source.url = str(composite_video(c, Path(media) / f"{c.name}.avi"))
        cams = [c.camera.model_dump(mode="json", exclude_none=True) for c in (*videos, *stills, *composites)]
        scenes = {"busy (videos)": {c.camera.id for c in videos}, "still (photographs)": {c.camera.id for c in stills},
                  "left objects (composites)": {c.camera.id for c in composites}}
        peer_row: dict[str, Any] | None = None
        if peer:
            from peer import run_peer

            from nonsite.config import NonsiteConfig as _Cfg
            from nonsite.pipeline.rules import zone_rule_config
            from nonsite.pipeline.violations import watched_by

            rules = _Cfg().rules
            dwell = {c.camera.id: {z.id: zone_rule_config(c.camera, rules, z, vt.name).dwell_s
                                   for z in c.camera.zones if (vt := watched_by(z.kind)) is not None}
                     for c in (*videos, *stills, *composites)}
            peer_row = run_peer(cams, dwell)
        warm_up(det, [im for v in decode(cams, 1).values() for im in v], max_batch)
        for on in (False, True):
            with tempfile.TemporaryDirectory(prefix="nonsite-bench-") as tmp:
                cfg = NonsiteConfig.model_validate({"data_dir": tmp, "cameras": cams, "edge": {
                    "max_batch": max_batch, "gating": {"enabled": on}}})
                bus = EmbeddedBus(Path(tmp) / "bus.sqlite")
                runner = EdgeRunner(cfg, det, LocalStore(Path(tmp) / "evidence"), bus)
                start = time.perf_counter()
                cpu = time.process_time()
                stats = runner.run(threading.Event())
                wall = time.perf_counter() - start
                cpu_s = time.process_time() - cpu
                bus.close()
            m = runner.metrics
            for scene, ids in (*scenes.items(), ("all", set(stats))):
                frames = sum(s.frames for cid, s in stats.items() if cid in ids)
                detected = sum(m.value("nonsite_frames_detected_total", camera=cid) for cid in ids)
                row: dict[str, Any] = {
                    "scene": scene, "gating": "on" if on else "off", "clips": len(ids), "frames": frames,
                    "detector_frames": int(detected),
                    "gated_share": round(1 - detected / frames, 3) if frames else None,
                    "alerts": sum(sum(s.published.values()) for cid, s in stats.items() if cid in ids)}
                if scene == "all":
                    row.update(wall_s=round(wall, 2), fps=round(frames / wall, 2) if wall else None,
                               cpu_s=round(cpu_s, 2), fps_per_cpu=round(frames / cpu_s, 3) if cpu_s else None)
                rows.append(row)
    by = {(r["scene"], r["gating"]): r for r in rows}
    off, on_row = by[("all", "off")], by[("all", "on")]
    if peer_row is not None:
        peer_row["same_frames"] = peer_row["frames"] == off["frames"]
        for r in rows:
            if r["scene"] == "all" and r.get("fps") and peer_row["fps"]:
                r["over_peer"] = round(r["fps"] / peer_row["fps"], 2)
                # per CPU second: what neither side's share of a shared machine changes
                if r.get("fps_per_cpu") and peer_row.get("fps_per_cpu"):
                    r["over_peer_per_cpu"] = round(r["fps_per_cpu"] / peer_row["fps_per_cpu"], 2)
    return {"backend": backend, "max_batch": max_batch, "runs": rows, "peer": peer_row,
            "precision": getattr(det, "precision", None),
            "detector_frames_saved": round(1 - on_row["detector_frames"] / off["detector_frames"], 3)
            if off["detector_frames"] else None,
            "speedup": round(on_row["fps"] / off["fps"], 2) if off["fps"] and on_row["fps"] else None}


def measure_eval(precision: str, model: str, quick: bool) -> dict[str, Any]:
    """``nonsite eval`` on tests/data/eval (every clip; gating as configured by default: on) with the OpenVINO
    detector at ``precision`` on ``model``: the scores per type and the run's wall time."""
    from nonsite.config import NonsiteConfig
    from nonsite.models.qualify import eval_summary
    from nonsite.pipeline.evaluation import evaluate, load_dataset

    os.environ.setdefault("NONSITE_MEDIA_DIR", str(media_dir()))
    clips = load_dataset(HERE.parent / "tests" / "data" / "eval")
    if quick:
        clips = clips[::4]
    cfg = NonsiteConfig.model_validate({"detector": {"backend": "openvino", "model": model or "yolo11n-coco",
                                                     "openvino": {"precision": precision}}})
    det = detector("openvino", precision, model)
    start = time.perf_counter()
    results, scores = evaluate(clips, cfg, det)
    wall = time.perf_counter() - start
    return {"precision": precision, "ran": getattr(det, "precision", None), "model": det.weights.name,
            "clips": len(clips), "wall_s": round(wall, 2), "dataset": "tests/data/eval" + (" (quick: every 4th clip)"
                                                                                        if quick else ""),
            **eval_summary(results, scores)}


def ensure_quantized(models: list[str]) -> dict[str, Any]:
    """The int8 IR of each model, built (``nonsite models quantize``) when not in the cache yet, or when the cached one
    was calibrated on fewer frames than ``nonsite models quantize`` uses (``make test`` builds one on 64 frames
    when the cache has none: the bench measures the model a user builds, not the test's)."""
    from nonsite.models.quantize import DEFAULT_FRAMES, cached_int8, quantize_model
    from nonsite.models.registry import resolve

    os.environ.setdefault("NONSITE_MEDIA_DIR", str(media_dir()))
    out = {}
    for m in models:
        found = cached_int8(resolve(m), 640)
        if found is not None and json.loads(found.with_suffix(".json").read_text(encoding="utf-8")).get(
                "calibration_frames", 0) < DEFAULT_FRAMES * 3 // 4:
            found = None
        if found is not None:
            meta = json.loads(found.with_suffix(".json").read_text(encoding="utf-8"))
            out[m] = {"built_now": False, "path": str(found), "seconds": meta.get("seconds"),
                      "calibration_frames": meta.get("calibration_frames"), "nncf": meta.get("nncf")}
        else:
            r = quantize_model(m)
            out[m] = {"built_now": True, "path": str(r.path), "seconds": round(r.seconds, 1),
                      "calibration_frames": r.frames}
        p = Path(out[m]["path"])
        out[m]["mb"] = round((p.stat().st_size + p.with_suffix(".bin").stat().st_size) / 1e6, 1)
    return out


PLATE_RUNS = (("onnxruntime", "fp32", 1), ("onnxruntime", "fp32", 0), ("openvino", "fp32", 1),
              ("openvino", "bf16", 1))
"""The plate reading runs: runtime, precision, threads (0: all cores); the first is the default."""


def measure_plates(runtime: str, precision: str, threads: int, quick: bool) -> dict[str, Any]:
    from plates import measure

    return measure(runtime, precision, threads, media_dir(), current_rss_mb, repeats=2 if quick else 5,
                   sizes=20 if quick else 120)


def measure_latency(alerts: int) -> dict[str, Any]:
    from latency import measure

    return {"embedded": measure("embedded", media_dir(), alerts), "kafka": measure("kafka", media_dir(), alerts)}


def summary_markdown(res: dict[str, Any]) -> list[str]:
    """Issue 16's figures before and after, each pair measured side by side in this run."""
    rows: list[dict[str, Any]] = []
    pipe = {(p["backend"], p["cameras"], p.get("loop")): p for p in res.get("pipeline", [])}
    for backend, n, _ in sorted((k for k in pipe if k[2] == "serial"), key=lambda k: k[1]):  # measured both ways
        a, b = pipe[(backend, n, "serial")], pipe.get((backend, n, "overlapped"))
        if b:
            rows.append({"figure": f"pipeline / bare detector, {n} camera(s) (goal >= 0.9)", "before": a["ratio"],
                         "after": b["ratio"], "how": "serial loop -> overlapped loop (`ratio`)"})
            rows.append({"figure": f"  the same per CPU second, {n} camera(s)", "before": a["cpu_ratio"],
                         "after": b["cpu_ratio"], "how": "`cpu_ratio`"})
    ov4 = {r.get("streams"): r["fps"] for r in res.get("detectors", []) if r["backend"] == "openvino"
           and r["batch"] == 4}
    if "one request per batch" in ov4 and "throughput streams" in ov4:
        rows.append({"figure": "bare detector frames/s, OpenVINO batch 4", "before": ov4["one request per batch"],
                     "after": ov4["throughput streams"],
                     "how": "one request of the batch on every core -> single-frame requests on throughput streams"})
    g = res.get("gating") or {}
    if g.get("peer"):
        rows.append({"figure": "nonsite over the naive peer (goal >= 1.5x off, >= 3x on)",
                     "before": peer_ratio(g, "off"), "after": peer_ratio(g, "on"),
                     "how": "gating off -> on, frames/s over the peer's"})
        per_cpu = [next((r.get("over_peer_per_cpu") for r in g["runs"] if r["scene"] == "all" and r["gating"] == x),
                        None) for x in ("off", "on")]
        rows.append({"figure": "  the same per CPU second", "before": per_cpu[0], "after": per_cpu[1], "how": ""})
    sp = {(r["model"], r["precision_asked"], r["batch"]): r["fps"] for r in res.get("precision_speed", [])}
    for model in dict.fromkeys(m for m, _, _ in sp):
        if (model, "fp32", 1) in sp and (model, "int8", 1) in sp:
            rows.append({"figure": f"{model} frames/s, batch 1", "before": sp[(model, "fp32", 1)],
                         "after": sp[(model, "int8", 1)], "how": "fp32 -> int8"})
    if res.get("live"):
        rows.append({"figure": "cameras per box (goal >= 16)", "before": None, "after": res.get("cameras_per_box"),
                     "how": "live run, gating on: < 1 % dropped and every alert within dwell + 2 s"})
        rows.append({"figure": "  by frames alone (< 1 % dropped)", "before": None,
                     "after": res.get("cameras_per_box_frames"), "how": "the same runs"})
    side = {r.get("loop_work"): r for r in res.get("live_loop_work", [])}
    if "in" in side and "off" in side:
        n = side["off"]["cameras"]
        rows.append({"figure": f"live frames dropped, {n} cameras (goal < 1 %)", "before": side["in"]["dropped_pct"],
                     "after": side["off"]["dropped_pct"],
                     "how": "pre-roll JPEG and packages in the loop -> encoder threads and the package writer"})
    side = {r.get("loop_work"): r for r in res.get("live_ahead", [])}
    if "package" in side and "off" in side:
        n = side["off"]["cameras"]
        for label, key in (("max", "alert_lag_max_s"), ("median", "alert_lag_median_s")):
            rows.append({"figure": f"live alert lag {label}, {n} cameras (goal <= 2 s)",
                         "before": side["package"][key], "after": side["off"][key],
                         "how": "clip encoded and plate read when the package is due -> while it waits"})
    by_rt = {(r["runtime"], r["precision"], r.get("threads", 0)): r for r in res.get("plates", [])}
    ort, every, ov = (by_rt.get(k) for k in (("onnxruntime", "fp32", 1), ("onnxruntime", "fp32", 0),
                                              ("openvino", "fp32", 1)))
    if ort and every:
        rows.append({"figure": f"plate reading, CPU ms per vehicle ({len(ort['ms'])} regions)",
                     "before": round(every["cpu_ms_total"] / len(every["ms"]), 1),
                     "after": round(ort["cpu_ms_total"] / len(ort["ms"]), 1),
                     "how": "ONNX Runtime on all cores -> plates.threads 1 (the default)"})
    if ort and ov:
        rows.append({"figure": f"plate reading, ms per vehicle ({len(ort['ms'])} regions)",
                     "before": round(ort["ms_total"] / len(ort["ms"]), 1),
                     "after": round(ov["ms_total"] / len(ov["ms"]), 1),
                     "how": "plates.runtime onnxruntime -> openvino, one thread each (readings "
                            + ("identical" if ov["same_as_onnxruntime"] else "DIFFER") + ")"})
    lp = {(r["cameras"], r.get("plates", "onnxruntime")): r for r in res.get("live_plates", [])}
    for n in sorted({c for c, _ in lp}):
        if (n, "onnxruntime") in lp and (n, "openvino") in lp:
            b, o = lp[(n, "onnxruntime")], lp[(n, "openvino")]
            rows.append({"figure": f"live alert lag max, {n} cameras (goal <= 2 s)", "before": b["alert_lag_max_s"],
                         "after": o["alert_lag_max_s"], "how": "plates.runtime onnxruntime -> openvino"})
    for r in (res.get("latency") or {}).values():
        rows.append({"figure": f"alert latency p50 / p95, {r['bus']} bus (goal < 1 / 2 s)", "before": None,
                     "after": f"{r['p50_s']} / {r['p95_s']} s", "how": "new figure"})
    if not rows:
        return []
    return ["## Issue 16: before and after (each pair measured side by side in this run)", "",
            *table(rows, [("figure", "figure"), ("before", "before"), ("after", "after"), ("how", "how")]), ""]


def precision_markdown(res: dict[str, Any]) -> list[str]:
    if not res.get("precision_speed"):
        return []
    lines = ["## Precision (OpenVINO: fp32, bf16, int8 from `nonsite models quantize`)", ""]
    lines += table(res["precision_speed"], [("model", "model"), ("asked", "precision_asked"), ("ran", "precision"),
                                            ("batch", "batch"), ("frames/s", "fps"), ("ms/frame", "ms_per_frame"),
                                            ("cores used", "cores_used")])
    rows = []
    for e in res.get("precision_eval", []):
        a = e["per_type"].get("all", {})
        row = {k: a.get(k) for k in ("tp", "fp", "fn", "recall", "median_delay_s")}
        row.update({"model": e["model"], "prec": e["precision"], "clips": e["clips"], "frames": e["frames"],
                    "wall_s": e["wall_s"], "alerts": len(e["alerts"]), "p": a.get("precision")})
        rows.append(row)
    lines += ["", "`nonsite eval --dataset tests/data/eval` at each precision (gating on, the default):", ""]
    lines += table(rows, [("model", "model"), ("precision", "prec"), ("clips", "clips"), ("frames", "frames"),
                          ("alerts", "alerts"), ("TP", "tp"), ("FP", "fp"), ("FN", "fn"), ("P", "p"),
                          ("R", "recall"), ("median delay s", "median_delay_s"), ("wall s", "wall_s")])
    lines += [""]
    for model, c in res.get("precision_choice", {}).items():
        order = " > ".join(f"{p} {v}" for p, v in c.get("scores", {}).items()) or " > ".join(c["speed_order"])
        lines.append(f"- {model}: eval matches fp32 (same TP/FP/FN per type, every alert within one frame): "
                     f"{', '.join(c['matches_fp32'])}; speed order (geometric mean of batch 1 and 4): {order}; "
                     f"fastest matching: **{c['fastest_matching']}**; `precision: auto` here picks "
                     f"**{c['auto_picks']}** ({c['auto_reason']}).")
    for model, q in res.get("int8_models", {}).items():
        lines.append(f"- int8 model of {model}: {q['mb']} MB, {q.get('calibration_frames')} calibration frames, "
                     f"{'built in this run' if q['built_now'] else 'from the cache'} ({q.get('seconds')} s to build).")
    return [*lines, ""]


def live_markdown(res: dict[str, Any]) -> list[str]:
    lines = ["", "## Live cameras: cameras per box (files paced in real time, half still / half busy, gating on)", ""]
    lines += table(res["live"], [
        ("cameras", "cameras"), ("still", "still_cameras"), ("fps each", "camera_fps"),
        ("asked frames/s", "demand_fps"),
        ("processed frames/s", "processed_fps"), ("detector frames/s", "detector_fps"), ("gated share", "gated_share"),
        ("per camera min", "per_camera_fps_min"), ("dropped %", "dropped_pct"),
        ("dropped % with start", "dropped_pct_with_start"), ("queue wait ms (mean / p95)", "qw"),
        ("alerts", "alerts"), ("alert lag beyond dwell, max s", "alert_lag_max_s"), ("cores used", "cores_used"),
        ("RSS MiB", "rss_peak_mb"), ("RSS per camera MiB", "rss_per_camera_mb"), ("served", "served")])
    lines += ["", f"Cameras per box (the most cameras served: < 1 % dropped after the first {LIVE_WARMUP_S:g} s, and "
              f"every alert within dwell + 2 s): **{res.get('cameras_per_box')}**. By frames alone (< 1 % dropped, "
              f"alerts however late): **{res.get('cameras_per_box_frames')}**.", "",
              "Cores used by each kind of thread (loop; detector thread and the runtime's own threads; the cameras' "
              "readers: decode and motion gate; pre-roll: the JPEG encoder threads; the package writer):", ""]
    runs = [*res["live"], *(r for r in [*res.get("live_loop_work", []), *res.get("live_ahead", [])]
                            if r.get("loop_work") in ("in", "package"))]
    kinds = list(dict.fromkeys(k for r in runs for k in r.get("cores_by_thread", {})))
    named = {"in": ", work in the loop", "package": ", nothing done ahead of a package"}
    trows = [{"run": f"{r['cameras']} cameras" + named.get(r.get("loop_work", ""), ""),
              **r.get("cores_by_thread", {}), "all": r["cores_used"], "dropped": r["dropped_pct"]} for r in runs]
    lines += table(trows, [("run", "run"), *[(k, k) for k in kinds], ("all", "all"), ("dropped %", "dropped")])
    return [*lines, ""]


def plates_markdown(res: dict[str, Any]) -> list[str]:
    lines = ["", "## Plate reading: ONNX Runtime and OpenVINO (`plates.runtime`), one process each", ""]
    rows = [{**r, "what": f"{r['runtime']} {r['precision']}, {r.get('threads') or 'all'} thread(s)",
             "same": "yes" if r["same_as_onnxruntime"] else "no"} for r in res["plates"]]
    n = len(res["plates"][0]["ms"])
    lines += table(rows, [("runtime", "what"), (f"ms, {n} regions", "ms_total"),
                          (f"CPU ms, {n} regions", "cpu_ms_total"), ("ms per random box", "sizes_ms_mean"),
                          ("texts, confidences, boxes as onnxruntime", "same"),
                          ("load s", "load_s"), ("MiB after loading", "rss_load_mb"),
                          ("MiB after the random boxes", "rss_after_sizes_mb"), ("random boxes", "sizes")])
    if res.get("live_plates"):
        lines += ["", "Live cameras with each runtime (the same runs as above otherwise):", ""]
        lines += table(res["live_plates"], [("cameras", "cameras"), ("plates", "plates"), ("alerts", "alerts"),
                                            ("alert lag max s", "alert_lag_max_s"),
                                            ("alert lag median s", "alert_lag_median_s"),
                                            ("dropped %", "dropped_pct"), ("cores used", "cores_used"),
                                            ("RSS per camera MiB", "rss_per_camera_mb"), ("served", "served")])
    return [*lines, ""]


def gating_markdown(g: dict[str, Any]) -> list[str]:
    return [
        "## Motion-gated detection (eval clips through the edge runner, gating off vs on)", "",
        *table(g["runs"], [("scene", "scene"), ("gating", "gating"), ("clips", "clips"), ("frames", "frames"),
                           ("detector frames", "detector_frames"), ("gated share", "gated_share"),
                           ("wall s", "wall_s"), ("frames/s", "fps"), ("alerts", "alerts"),
                           ("CPU s", "cpu_s"), ("x naive peer", "over_peer"),
                           ("x naive peer per CPU second", "over_peer_per_cpu")]),
        "", f"All clips: detector frames saved {g['detector_frames_saved']}; throughput on/off: **{g['speedup']}x** "
        f"({g['backend']} {g.get('precision') or ''}, max batch {g['max_batch']}).", "",
        *([f"Naive peer (bench/peer.py: ultralytics `model.track(persist=True)` + dwell timers, same clips, same "
           f"sampling, same process, run first): {g['peer']['frames']} frames in {g['peer']['wall_s']} s = "
           f"{g['peer']['fps']} frames/s, {g['peer'].get('cpu_s')} CPU s ({g['peer']['alerts']} alerts; same frames "
           "as nonsite: "
           f"{g['peer']['same_frames']}). nonsite over the peer: **{peer_ratio(g, 'off')}x** gating off, "
           f"**{peer_ratio(g, 'on')}x** gating on.", ""] if g.get("peer") else []),
    ]


def peer_ratio(g: dict[str, Any], gating: str) -> Any:
    return next((r.get("over_peer") for r in g["runs"] if r["scene"] == "all" and r["gating"] == gating), None)


# -- orchestration ------------------------------------------------------------------------------


ERRORS: list[dict[str, str]] = []
"""Measurements that failed in this run (the others go on; the results list these)."""


def child(args: list[str], timeout: float = 900) -> Any:
    """One measurement in a fresh process: its JSON, or None when it failed (noted in :data:`ERRORS`)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", *args]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        ERRORS.append({"step": " ".join(args), "error": f"timed out after {timeout:.0f} s"})
        print(f"error: {' '.join(args)} timed out", file=sys.stderr, flush=True)
        return None
    if r.returncode != 0:
        ERRORS.append({"step": " ".join(args), "error": r.stderr[-1500:]})
        print(f"error: {' '.join(args)} failed:\n{r.stderr[-3000:]}", file=sys.stderr, flush=True)
        return None
    return json.loads(r.stdout.strip().splitlines()[-1])


def machine() -> dict[str, Any]:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        flags = next(ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("flags"))
        isa = [f for f in ("avx2", "avx_vnni", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
               if f" {f}" in flags]
    except (OSError, StopIteration):
        isa = []
    mem = None
    with contextlib.suppress(ValueError, OSError):
        mem = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    versions = {}
    for pkg in ("onnxruntime", "openvino", "torch", "ultralytics", "opencv-python-headless", "numpy"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    return {"cpu": cpu, "cores": len(os.sched_getaffinity(0)), "isa": isa, "memory_gb": mem,
            "python": platform.python_version(), "packages": versions}


def table(rows: list[dict[str, Any]], cols: list[tuple[str, str]]) -> list[str]:
    out = ["| " + " | ".join(h for h, _ in cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        out.append("| " + " | ".join("" if r.get(k) is None else str(r.get(k)) for _, k in cols) + " |")
    return out


def markdown(res: dict[str, Any]) -> str:
    m = res["machine"]
    lines = [
        "# nonsite benchmark: latest results", "",
        f"Measured {res['finished_at']} by `make bench` ({res['took_s']:.0f} s). Machine: {m['cpu']}, "
        f"{m['cores']} cores ({', '.join(m['isa'])}), {m['memory_gb']} GiB. Load average before/after: "
        f"{res['load_before']} / {res['load_after']}. {res['frames_per_camera']} frames per camera. "
        f"Command: `{res.get('command', 'bench/run.py')}`. What each figure means: [bench/README.md](../README.md).",
        "",
        *(["**Unfinished**: the run was cut short after the figures below (`complete: false`).", ""]
          if not res.get("complete", True) else []),
        *([f"**Quick mode** (`--quick`): {res['frames_per_camera']} frames per camera, short live runs, a quarter of "
            "the eval clips: a smoke run, not figures to quote.", ""] if res.get("quick") else []),
        *summary_markdown(res),
        "## Bare detector (YOLO11n COCO, 640, every core)", "",
        *table(res["detectors"], [("backend", "backend"), ("batch", "batch"), ("precision", "precision"),
                                  ("how a batch runs", "streams"), ("frames/s", "fps"), ("ms/frame", "ms_per_frame"),
                                  ("cores used", "cores_used")]),
        "", f"Fastest at batch 1: **{res['fastest_backend']}**.", "",
        *precision_markdown(res),
        "## Pipeline from files (decode, detect, track, rules, evidence)", "",
    ]
    rows = []
    for p in res["pipeline"]:
        rows.append({**p, "ratio": f"**{p['ratio']:.2f}**", "rss_per_cam": p.get("rss_per_camera_mb"),
                     "cores": f"{p['cores_used']} / {p['bare_cores_used']}"})
    lines += table(rows, [("backend", "backend"), ("loop", "loop"), ("cameras", "cameras"),
                          ("frames each", "frames_per_camera"),
                          ("max batch", "max_batch"),
                          ("mean batch", "mean_batch"), ("frames", "frames"), ("pipeline frames/s", "fps"),
                          ("bare detector frames/s (same frames)", "bare_fps"), ("ratio", "ratio"),
                          ("cores used (pipeline / bare)", "cores"), ("ratio per CPU second", "cpu_ratio"),
                          ("dropped", "frames_dropped"), ("peak RSS MiB", "peak_rss_mb"),
                          ("RSS per camera MiB", "rss_per_cam")])
    lines += ["", "## Per-stage latency per frame (mean / p95 ms; package: per evidence package, off the loop)", ""]
    srows = []
    for p in res["pipeline"]:
        row: dict[str, Any] = {"run": f"{p['backend']}, {p['cameras']} cameras, {p.get('loop', '')}"}
        for s in STAGES:
            st = p["stages"][s]
            row[s] = f"{st['mean_ms']} / {st['p95_ms']}" if st["mean_ms"] is not None else ""
        srows.append(row)
    lines += table(srows, [("run", "run"), *[(s, s) for s in STAGES]])
    if res.get("gating"):
        lines += ["", *gating_markdown(res["gating"])]
    if res.get("live"):
        for r in res["live"]:
            r["qw"] = f"{r.get('queue_wait_ms')} / {r.get('queue_wait_p95_ms')}"
        lines += live_markdown(res)
    if res.get("plates"):
        lines += plates_markdown(res)
    if res.get("latency"):
        lines += ["", "## Alert latency (edge publication -> case in the queue)", ""]
        lines += table(list(res["latency"].values()), [("bus", "bus"), ("alerts", "alerts"), ("cases", "cases"),
                                                        ("p50 s", "p50_s"), ("p95 s", "p95_s"), ("max s", "max_s")])
        lines += ["", "Plus `evidence.post_roll_s` (2 s) of video recorded after the confirmation before the edge "
                  "publishes (bench/README.md)."]
    if res.get("errors"):
        lines += ["", "## Failed measurements", ""]
        lines += [f"- `{e['step']}`: {e['error'].strip().splitlines()[-1] if e['error'].strip() else '?'}"
                  for e in res["errors"]]
    lines.append("")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=200, help="frames per camera (default 200)")
    ap.add_argument("--cameras", default="1,4,16", help="camera counts of the pipeline runs")
    ap.add_argument("--backends", default="ultralytics,onnx,openvino", help="backends of the bare detector runs")
    ap.add_argument("--live-seconds", type=float, help="seconds of each live run (default 20; --quick 5)")
    ap.add_argument("--quick", action="store_true", help="smoke run: 20 frames per camera, 5 s live")
    ap.add_argument("--out", default=str(RESULTS / "latest"), help="output path without extension")
    ap.add_argument("--gating", action="store_true",
                    help="only the motion-gating figure (eval video clips, gating off vs on), written to "
                    "results/gating.json unless --out is given")
    ap.add_argument("--precision-models", default=",".join(PRECISION_MODELS),
                    help="models of the precision figures (default yolo11n-coco,street-yolo11n)")
    ap.add_argument("--precisions", default=",".join(PRECISIONS), help="precisions compared (default fp32,bf16,int8)")
    ap.add_argument("--eval-models", help="models whose eval runs at each precision (default: --precision-models)")
    ap.add_argument("--live-cameras", help="camera counts of the live runs (default 1,4,16,32; --quick 1,4)")
    ap.add_argument("--child", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        kind, *rest = a.child
        if kind == "detector":
            out = measure_detector(rest[0], int(rest[1]), int(rest[2]), *rest[3:6])
        elif kind == "pipeline":
            out = measure_pipeline(rest[0], int(rest[1]), int(rest[2]), int(rest[3]), rest[4] == "overlapped")
        elif kind == "gating":
            out = measure_gating(rest[0], int(rest[1]), rest[2] == "quick", peer=rest[3:4] == ["peer"])
        elif kind == "quantize":
            out = ensure_quantized(rest)
        elif kind == "eval":
            out = measure_eval(rest[0], rest[1], rest[2] == "quick")
        elif kind == "latency":
            out = measure_latency(int(rest[0]))
        elif kind == "plates":
            out = measure_plates(rest[0], rest[1], int(rest[2]), rest[3] == "quick")
        else:
            out = measure_live(rest[0], int(rest[1]), float(rest[2]), float(rest[3]), int(rest[4]), *rest[5:7])
        print(json.dumps(out))
        return 0

    frames = 20 if a.quick else a.frames
    live_s = a.live_seconds or (5.0 if a.quick else 20.0)
    started = time.time()
    if a.gating:
        return gating_only(a)
    res: dict[str, Any] = {"machine": machine(), "frames_per_camera": frames, "quick": a.quick,
                           "command": " ".join(["bench/run.py", *sys.argv[1:]]),
                           "load_before": [round(x, 2) for x in os.getloadavg()]}

    def step(name: str) -> None:
        res.setdefault("steps", []).append({"step": name, "at_s": round(time.time() - started, 1),
                                            "load": [round(x, 2) for x in os.getloadavg()]})
        print(f"[{time.time() - started:6.0f} s] {name} ...", flush=True)

    models = [m for m in a.precision_models.split(",") if m]
    precisions = [p for p in a.precisions.split(",") if p]
    eval_models = [m for m in (a.eval_models or a.precision_models).split(",") if m]
    def save(final: bool = False) -> None:
        """Write what is measured so far (a run cut short still leaves its figures, marked unfinished)."""
        res["load_after"] = [round(x, 2) for x in os.getloadavg()]
        res["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
        res["took_s"] = round(time.time() - started, 1)
        res["complete"] = final
        res["errors"] = ERRORS
        res.setdefault("detectors", [])
        res.setdefault("fastest_backend", None)
        res.setdefault("pipeline", [])
        out = Path(a.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.with_suffix(".json").write_text(json.dumps(res, indent=2) + "\n", encoding="utf-8")
        out.with_suffix(".md").write_text(markdown(res), encoding="utf-8")

    step("int8 models (nonsite models quantize, when not cached)")
    res["int8_models"] = (child(["quantize", *models], timeout=3600) or {}) if "int8" in precisions else {}
    backends = [b for b in a.backends.split(",") if b]
    det_rows = []
    for b in backends:
        for batch in (1, 4) if b != "ultralytics" else (1,):
            step(f"bare detector: {b}, batch {batch}")
            row = child(["detector", b, str(batch), str(frames)])
            if row:
                det_rows.append(row)
                print(f"  {row['fps']} frames/s ({row['precision']})", flush=True)
            if b == "openvino" and batch > 1:  # side by side: the batch as one request, as before streams
                step(f"bare detector: {b}, batch {batch}, one request per batch (streams: 1)")
                row = child(["detector", b, str(batch), str(frames), "", "", "1"])
                if row:
                    det_rows.append(row)
                    print(f"  {row['fps']} frames/s ({row['precision']})", flush=True)
    res["detectors"] = det_rows
    ones = [r for r in det_rows if r["batch"] == 1]
    fastest = max(ones, key=lambda r: r["fps"])["backend"] if ones else "openvino"
    res["fastest_backend"] = fastest


    from nonsite.config.detectors import DETECTOR_BACKENDS

    def preferred_batch(backend: str) -> int:
        return DETECTOR_BACKENDS[backend].preferred_batch("cpu")

    pipe = []
    counts = [int(x) for x in a.cameras.split(",") if x]
    runs = [(fastest, n, loop) for n in counts for loop in (("serial", "overlapped") if n <= 4 else ("overlapped",))]
    if "onnx" in backends and fastest != "onnx":
        runs.append(("onnx", 4, "overlapped"))  # the other CPU backend, side by side
    for backend, n, loop in runs:
        mb = preferred_batch(backend)
        per_cam = frames if n < 4 else max(1, frames // (2 if n < 16 else 4))  # keeps the run within its budget
        step(f"pipeline: {backend}, {n} cameras x {per_cam} frames, max batch {mb}, {loop} loop")
        row = child(["pipeline", backend, str(n), str(per_cam), str(mb), loop])
        if not row:
            continue
        print(f"  {row['fps']} frames/s, bare {row['bare_fps']}, ratio {row['ratio']}", flush=True)
        row["frames_per_camera"] = round(row["frames"] / row["cameras"])
        pipe.append(row)
        res["pipeline"] = pipe
        save()
    for r in pipe:
        r["frames_per_camera"] = round(r["frames"] / r["cameras"])
    res["pipeline"] = pipe

    res["live"] = []
    live_counts = [int(x) for x in (a.live_cameras or ("1,4" if a.quick else "1,4,16,32")).split(",") if x]
    for n_live in live_counts:
        step(f"live: {fastest}, {n_live} cameras at 5 fps for {live_s:g} s")
        r = child(["live", fastest, str(n_live), "5", str(live_s), str(preferred_batch(fastest))])
        if not r:
            continue
        res["live"].append(r)
        save()
        print(f"  dropped {r['dropped_pct']} %, alert lag max {r['alert_lag_max_s']} s, served {r['served']}",
              flush=True)
    def frames_kept(r: dict[str, Any]) -> bool:
        return bool(r["dropped_pct"] < 1.0)

    for ok in ((lambda r: bool(r["served"])), frames_kept):  # the whole criterion, then frames alone
        for _ in range(0 if a.quick else 4):  # bisect between the most cameras that pass and the fewest that fail
            good = [r["cameras"] for r in res["live"] if ok(r)]
            bad = [r["cameras"] for r in res["live"] if not ok(r) and (not good or r["cameras"] > max(good))]
            if not good or not bad:
                break
            mid = (max(good) + min(bad)) // 2
            if mid in (max(good), min(bad)) or any(r["cameras"] == mid for r in res["live"]):
                break
            step(f"live: {fastest}, {mid} cameras at 5 fps for {live_s:g} s (between)")
            r = child(["live", fastest, str(mid), "5", str(live_s), str(preferred_batch(fastest))])
            if not r:
                break
            res["live"].append(r)
            res["live"].sort(key=lambda r: r["cameras"])
            save()
            print(f"  dropped {r['dropped_pct']} %, alert lag max {r['alert_lag_max_s']} s, served {r['served']}",
                  flush=True)
    res["cameras_per_box_frames"] = max((r["cameras"] for r in res["live"] if frames_kept(r)), default=0)
    res["cameras_per_box"] = max((r["cameras"] for r in res["live"] if r["served"]), default=0)
    n_side = 4
    step(f"live: {fastest}, {n_side} cameras, pre-roll encoding and package writing in the loop (as before)")
    before = child(["live", fastest, str(n_side), "5", str(live_s), str(preferred_batch(fastest)), "in"])
    after = next((r for r in res["live"] if r["cameras"] == n_side), None)
    res["live_loop_work"] = [r for r in (before, after) if r]
    step(f"live: {fastest}, {n_side} cameras, nothing done ahead of a package (as before)")
    before = child(["live", fastest, str(n_side), "5", str(live_s), str(preferred_batch(fastest)), "package"])
    res["live_ahead"] = [r for r in (before, after) if r]
    # Plates read on OpenVINO instead of ONNX Runtime, from the first camera count whose alerts came late.
    n_plates = res["cameras_per_box"] + 1
    res["live_plates"] = [r for r in res["live"] if r["cameras"] == n_plates][:1]
    for n in (n_plates,) if a.quick else (n_plates, n_plates + 1):
        if not any(r["cameras"] == n for r in res["live_plates"]):
            step(f"live: {fastest}, {n} cameras, plates on ONNX Runtime")
            r = child(["live", fastest, str(n), "5", str(live_s), str(preferred_batch(fastest))])
            res["live_plates"] += [r] if r else []
        step(f"live: {fastest}, {n} cameras, plates on OpenVINO (plates.runtime: openvino)")
        r = child(["live", fastest, str(n), "5", str(live_s), str(preferred_batch(fastest)), "off", "openvino"])
        res["live_plates"] += [r] if r else []
    save()

    step(f"gating and the naive peer: {fastest}, eval clips")
    res["gating"] = child(["gating", fastest, str(preferred_batch(fastest)), "quick" if a.quick else "full", "peer"],
                          timeout=3600)
    save()
    step("plate reading: ONNX Runtime on all cores and one thread, OpenVINO fp32 and bf16, one process each")
    res["plates"] = [r for r in (child(["plates", rt, prec, str(threads), "quick" if a.quick else "full"])
                                 for rt, prec, threads in PLATE_RUNS) if r]
    ort = next((r for r in res["plates"] if r["runtime"] == "onnxruntime"), None)
    for r in res["plates"]:
        r["same_as_onnxruntime"] = ort is not None and r["found"] == ort["found"]
    save()
    step("alert latency: embedded and Kafka (Tansu)")
    res["latency"] = child(["latency", "5" if a.quick else "30"])
    # Precision: speed of each precision and its eval scores, side by side.
    prec_rows: list[dict[str, Any]] = []
    res["precision_speed"] = prec_rows
    for model in models:
        for prec in precisions:
            for batch in (1,) if a.quick else (1, 4):
                step(f"precision: {model} {prec}, batch {batch}")
                row = child(["detector", "openvino", str(batch), str(frames), prec, model])
                if row:
                    prec_rows.append(row)
                    print(f"  {row['fps']} frames/s ({row['precision']})", flush=True)
                save()
    res["precision_speed"] = prec_rows
    evals: list[dict[str, Any]] = []
    res["precision_eval"] = evals
    for model in eval_models:
        for prec in precisions:
            ran = next((r["precision"] for r in prec_rows
                        if r["model"] == model and r["precision_asked"] == prec), None)
            if prec != "fp32" and ran == "f32":  # the CPU lacks it: OpenVINO ran fp32, the very same numbers
                step(f"eval: {model} {prec} skipped: this CPU runs it as f32 (the fp32 eval stands for it)")
                continue
            step(f"eval: {model} {prec}")
            row = child(["eval", prec, model, "quick" if a.quick else "full"], timeout=3600)
            if row:
                evals.append(row)
                print(f"  {row['wall_s']} s", flush=True)
            save()
    res["precision_eval"] = evals
    res["precision_choice"] = precision_choice(prec_rows, evals)
    save(final=True)
    out = Path(a.out)
    print(markdown(res))
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")
    return 0


PRECISION_MODELS = ("yolo11n-coco", "street-yolo11n")
PRECISIONS = ("fp32", "bf16", "int8")


def precision_choice(speed: list[dict[str, Any]], evals: list[dict[str, Any]]) -> dict[str, Any]:
    """Per model: which precisions' eval matches fp32's (alerts confirmed within one frame of their clip), their
    speed order, the fastest matching one, and what ``precision: auto`` picks on this CPU. The measurements are
    a model's qualification on this CPU (what ``nonsite models qualify`` measures): written where ``auto`` reads
    it, and ``auto_picks`` is the backend's own choice from it."""
    from nonsite.models.qualify import auto_precision, build_record, qualification_path, save_record
    from nonsite.models.quantize import cached_int8
    from nonsite.models.registry import resolve

    out: dict[str, Any] = {}
    for model in dict.fromkeys(r["model"] for r in speed):
        ev = {e["precision"]: e for e in evals if e["model"] == model}
        if "fp32" not in ev:
            continue
        rows = [r for r in speed if r["model"] == model]
        fps: dict[str, dict[int, float]] = {}
        for r in rows:
            fps.setdefault(r["precision_asked"], {})[r["batch"]] = r["fps"]
        ran = {r["precision_asked"]: r["precision"] for r in rows}
        weights = resolve(model)
        int8 = cached_int8(weights, 640)
        dataset = next(iter(ev.values())).get("dataset", "tests/data/eval")
        record = build_record(weights, 640, int8_xml=int8, dataset=dataset, speeds=fps, ran=ran, evals=ev)
        full = "quick" not in dataset
        if full:  # a --quick run's eval (every 4th clip) does not qualify a model
            save_record(record, qualification_path(weights, 640))
        q = record["precisions"]
        # a precision the CPU ran as f32 computed the very same numbers as fp32
        matches = [p for p in PRECISIONS if (p in q and q[p]["matches_fp32"]) or (p != "fp32" and ran.get(p) == "f32")]
        order = sorted(q, key=lambda p: -q[p]["score"])
        fastest = next((p for p in order if q[p]["matches_fp32"]), "fp32")
        auto, why = auto_precision(weights, 640, int8)  # a quick run's record is not saved: the one on disk, or flags
        out[model] = {"matches_fp32": matches, "speed_order": order, "fastest_matching": fastest,
                      "scores": {p: q[p]["score"] for p in order}, "auto_picks": auto, "auto_reason": why,
                      "qualification": str(qualification_path(weights, 640)) if full else None}
    return out


def gating_only(a: argparse.Namespace) -> int:
    """``--gating``: just the motion-gating figure, on the OpenVINO backend (the default one)."""
    from nonsite.config.detectors import DETECTOR_BACKENDS

    backend = "openvino"
    g = child(["gating", backend, str(DETECTOR_BACKENDS[backend].preferred_batch("cpu")),
               "quick" if a.quick else "full"])
    g.update(machine=machine(), finished_at=datetime.now(UTC).isoformat(timespec="seconds"),
             load=[round(x, 2) for x in os.getloadavg()])
    out = Path(a.out) if a.out != str(RESULTS / "latest") else RESULTS / "gating"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(g, indent=2) + "\n", encoding="utf-8")
    print("\n".join(gating_markdown(g)))
    print(f"wrote {out.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
