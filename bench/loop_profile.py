"""Where the edge's detection loop spends its time with live cameras (issue 16: cameras per box).

    python bench/loop_profile.py --cameras 4 --seconds 20 [--top 15] [--out bench/results/loop_profile.json]

Runs bench/run.py's live mix (half busy clips, half still photographs scaled to 1080p, paced in real time, 5 fps
each, gating on, the live run's short dwells so alerts happen) and samples the loop thread's stack every 10 ms
(``sys._current_frames``: no profiler to install, nothing attached from outside). Prints and writes:

- ``share``: for the innermost four frames of each stack seen, the share of samples: where the loop *is*, waiting
  or working. Waiting for frames shows as ``threading:wait`` under ``edge:run``'s idle wait, waiting for the
  detector under ``_base:wait`` (the batch in flight), and work as the worker's calls.
- ``cameras``: frames sampled, processed, detected and dropped per camera, and ``cores_used`` of the process.
- ``threads``: the cores each kind of thread used over the sampled seconds (``run.ThreadCores``): the loop, the
  detector thread and the runtime's own threads, the cameras' readers (decode, motion gate), the pre-roll JPEG
  encoders, the package writer: where the box's CPU goes.

A loop that waits for frames while cameras drop theirs is blocked in bursts: the stacks say by what.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import run as bench  # noqa: E402  (bench/run.py: the live mix and the detector set-up)


def profile(n_cams: int, seconds: float, top: int) -> dict[str, Any]:
    det = bench.detector("openvino")
    with bench.live_edge(det, n_cams, 5.0, 4) as edge:
        edge.thread.start()
        time.sleep(3.0)  # past the cameras' start
        seen: collections.Counter[str] = collections.Counter()
        samples = 0
        threads = bench.ThreadCores(edge.thread)
        threads.start()
        start, cpu = time.perf_counter(), time.process_time()
        while time.perf_counter() - start < seconds:
            time.sleep(0.01)
            if samples % 50 == 0:  # threads come and go (the writer starts at the first package)
                threads.look()
            frame = sys._current_frames().get(edge.thread.ident or -1)
            if frame is None:
                continue
            stack = traceback.extract_stack(frame)[-4:][::-1]
            seen[" < ".join(f"{Path(f.filename).stem}:{f.name}:{f.lineno}" for f in stack)] += 1
            samples += 1
        cores = (time.process_time() - cpu) / (time.perf_counter() - start)
        by_thread = threads.stop()
        per_camera = bench.camera_counts(edge.runner.metrics, edge.cams)
    return {"cameras": n_cams, "seconds": seconds, "samples": samples, "cores_used": round(cores, 2),
            "share": [{"share": round(v / samples, 3), "stack": k} for k, v in seen.most_common(top)] if samples
            else [], "threads": by_thread, "per_camera": per_camera}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cameras", type=int, default=4, help="live cameras (half busy, half still)")
    ap.add_argument("--seconds", type=float, default=20.0, help="seconds sampled (after 3 s of start)")
    ap.add_argument("--top", type=int, default=15, help="stacks listed")
    ap.add_argument("--out", default=str(HERE / "results" / "loop_profile.json"), help="JSON written")
    a = ap.parse_args()
    res = profile(a.cameras, a.seconds, a.top)
    Path(a.out).write_text(json.dumps(res, indent=2) + "\n", encoding="utf-8")
    print(f"{a.cameras} cameras, {res['samples']} samples, {res['cores_used']} cores used")
    print("cores by thread: " + ", ".join(f"{k} {v}" for k, v in res["threads"].items()))
    for row in res["share"]:
        print(f"{100 * row['share']:5.1f} %  {row['stack']}")
    for c in res["per_camera"]:
        print(f"  {c['id']}: sampled {c['sampled']}, processed {c['processed']}, detected {c['detected']}, "
              f"dropped {c['dropped']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
