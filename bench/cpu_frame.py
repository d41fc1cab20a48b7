"""CPU seconds per frame of the edge pipeline against the bare detector on the same frames (issue 16: the
pipeline / bare ratio at 1 camera).

    python bench/cpu_frame.py [--frames 40] [--backend openvino] [--max-batch 4] [--profile 15]

CPU time (``time.process_time``: every thread of the process) hardly depends on how loaded the machine is,
unlike wall time, so these figures can be compared between runs on a shared box. One camera (bench/run.py's
first clip and zones), motion gating off (every frame detected), in one process:

- ``bare_cpu_ms``: the detector alone on the decoded frames, in batches of ``--max-batch``.
- ``pipeline_cpu_ms``: the :class:`~nonsite.pipeline.edge.EdgeRunner` on the same camera (decode, detector,
  tracking, rules, pre-roll, evidence), the overlapped loop.
- ``overhead_cpu_ms``: the same runner with a detector that replays the detections recorded in the bare run
  at no cost: everything the pipeline adds to the detector, per frame.
- ``decode_cpu_ms``: the camera's source alone (``open_source``: decoding and sampling the clip), per sampled
  frame: part of the overhead, paid in the reader thread. A clip sampled far below its frame rate decodes
  every frame in between (H.264 frames depend on each other): bench/run.py's 20 frames over a 39 s clip at
  30 fps decode 58 frames per frame detected.
- ``cpu_ratio`` = bare / pipeline CPU per frame: the pipeline / bare ratio a machine whose cores the runtime
  fills would show (bench/README.md, ``cpu_ratio``).

``--profile K``: the K functions of the overhead run with the most CPU time of their own (cProfile, the loop
thread: tracking, rules, evidence; the reader thread's decoding is in ``decode_wall_ms``).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import run as bench  # noqa: E402  (bench/run.py: clips, cameras, detector, warm-up)


class Replay:
    """Returns the detections recorded for each frame (by frame content), at no cost."""

    def __init__(self, inner: Any, found: dict[bytes, Any]) -> None:
        self.backend, self.weights, self.class_names = inner.backend, inner.weights, inner.class_names
        self.config = getattr(inner, "config", None)
        self.found = found

    def detect(self, images: list[Any]) -> list[Any]:
        return [self.found[_key(im)] for im in images]


def _key(image: Any) -> bytes:
    return bytes(image[::37, ::41].tobytes())


def run_pipeline(cams: list[dict[str, Any]], det: Any, max_batch: int,
                 profile: cProfile.Profile | None = None) -> tuple[float, float, int, float]:
    """CPU seconds, wall seconds, frames, and the seconds the reader spent decoding (grab + retrieve)."""
    from nonsite.bus.embedded import EmbeddedBus
    from nonsite.config import NonsiteConfig
    from nonsite.evidence.local import LocalStore
    from nonsite.pipeline.edge import EdgeRunner

    with tempfile.TemporaryDirectory(prefix="nonsite-bench-cpu-") as tmp:
        cfg = NonsiteConfig.model_validate({"data_dir": tmp, "cameras": cams, "edge": {
            "max_batch": max_batch, "gating": {"enabled": False}}})
        bus = EmbeddedBus(Path(tmp) / "bus.sqlite")
        runner = EdgeRunner(cfg, det, LocalStore(Path(tmp) / "evidence"), bus)
        cpu, wall = time.process_time(), time.perf_counter()
        if profile is not None:
            profile.enable()
        stats = runner.run(threading.Event())
        if profile is not None:
            profile.disable()
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        decode = sum(runner.metrics.value("nonsite_stage_latency_seconds_sum", camera=c["id"], stage="decode")
                     for c in cams)
        bus.close()
    return cpu, wall, sum(s.frames for s in stats.values()), decode


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=40)
    ap.add_argument("--backend", default="openvino")
    ap.add_argument("--max-batch", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=2, help="pipeline and overhead runs each (the lowest CPU counts)")
    ap.add_argument("--profile", type=int, default=0)
    ap.add_argument("--out", help="write the figures as JSON here")
    a = ap.parse_args()
    from nonsite.config import CameraConfig
    from nonsite.streams import open_source

    cams = bench.cameras(1, a.frames)
    det = bench.detector(a.backend)
    frames = bench.decode(cams, a.frames)[cams[0]["id"]]
    bench.warm_up(det, frames[:1], a.max_batch)
    found: dict[bytes, Any] = {}
    cpu = time.process_time()
    for i in range(0, len(frames), a.max_batch):
        batch = frames[i : i + a.max_batch]
        for im, d in zip(batch, det.detect(batch), strict=True):
            found[_key(im)] = d
    bare = (time.process_time() - cpu) / len(frames)

    decode_cpu = []
    for _ in range(a.repeat):
        src = bench.cameras(1, a.frames)[0]
        cpu = time.process_time()
        n = sum(1 for _ in open_source(CameraConfig.model_validate(src)).frames())
        decode_cpu.append((time.process_time() - cpu) / n)
    pipe = min(run_pipeline(cams, det, a.max_batch)[0] / len(frames) for _ in range(a.repeat))
    runs = []
    prof = cProfile.Profile() if a.profile else None
    for i in range(a.repeat):
        c, w, n, dec = run_pipeline(cams, Replay(det, found), a.max_batch, prof if i == 0 else None)
        assert n == len(frames), (n, len(frames))
        runs.append((c / n, dec / n))
    over, dec = min(runs)
    out = {
        "measured": datetime.now(UTC).isoformat(timespec="seconds"), "command": " ".join(sys.argv),
        "backend": a.backend, "frames": len(frames), "frame_shape": list(frames[0].shape), "max_batch": a.max_batch,
        "bare_cpu_ms": round(1000 * bare, 1), "pipeline_cpu_ms": round(1000 * pipe, 1),
        "overhead_cpu_ms": round(1000 * over, 1), "decode_cpu_ms": round(1000 * min(decode_cpu), 1),
        "decode_wall_ms": round(1000 * dec, 1),
        "cpu_ratio": round(bare / pipe, 3), "cpu_ratio_from_overhead": round(bare / (bare + over), 3),
    }
    print(json.dumps(out), flush=True)
    if prof is not None:
        s = io.StringIO()
        pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(a.profile)
        print(s.getvalue())
    if a.out:
        Path(a.out).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
