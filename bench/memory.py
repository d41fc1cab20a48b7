"""Memory per camera of the edge (issue 16: goal <= 150 MB), and the scaling curve over camera counts.

    python bench/memory.py --cameras 1,4,16 --frames 20 [--clips same|mixed] [--detector openvino|null]
                           [--top 0] [--out bench/results/memory.json]

Each camera count runs in a fresh process (memory never goes back to the OS fully, so one count's peak would
leak into the next). In that process: the detector is loaded and warmed up on every frame size and batch
size the run will use (OpenVINO allocates per input shape: a cost per *frame size*, not per camera), its
resident memory is read (the **baseline**), then an :class:`~nonsite.pipeline.edge.EdgeRunner` runs the N file
cameras to their end while a thread reads VmRSS every 50 ms. Figures per count:

- ``rss_baseline_mb``: resident memory with the model loaded and warmed up, no camera.
- ``rss_peak_mb``: the highest VmRSS seen while the cameras ran.
- ``per_camera_mb``: (peak - baseline) / N: what one camera costs at this count.
- ``slope_mb``: how much more (peak - baseline) grew from the previous count, per camera added: what each
  *extra* camera costs (baselines differ between mixes of frame sizes, so peaks alone are not compared).

``--clips same``: every camera reads the same clip (one frame size: a box of identical cameras);
``mixed``: the cameras take the shared clips in turn (bench/run.py's mix, several frame sizes).
``--height 1080``: every camera reads the first 10 s of the first clip scaled to 1080 lines (H.264): the shared
clips are 640x360 and smaller, real cameras' frames are bigger, and so are their decoder, queue and pre-roll.
``--detector null``: a detector that finds nothing (the pipeline's own memory without the runtime's).
``--top K``: also trace Python allocations (tracemalloc; numpy and OpenCV arrays included) and list the K
source lines holding the most at the peak sample.
"""

from __future__ import annotations

import argparse
import json
import subprocess
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


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    raise RuntimeError("no VmRSS in /proc/self/status")


class NullDetector:
    """Finds nothing: the pipeline runs every stage but the runtime's inference."""

    backend = "null"
    class_names = ["person"]

    def __init__(self) -> None:
        from nonsite.models.base import WeightsInfo

        self.weights = WeightsInfo(name="null", version="0", sha256="0" * 64, path="")

    def detect(self, images: list[Any]) -> list[Any]:
        import supervision as sv

        return [sv.Detections.empty() for _ in images]


def upscaled_clip(height: int, out: Path, seconds: float = 10.0) -> Path:
    """The first ``seconds`` of bench/run.py's first clip scaled to ``height`` lines (aspect kept), H.264 at its
    own frame rate: a camera of a real resolution (the shared clips are 640x360 and smaller)."""
    import av
    import cv2

    video = bench.media_dir() / bench.VIDEOS[0][0]
    cap = cv2.VideoCapture(str(video))
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    width = round(cap.get(cv2.CAP_PROP_FRAME_WIDTH) * height / cap.get(cv2.CAP_PROP_FRAME_HEIGHT) / 2) * 2
    with av.open(str(out), mode="w") as container:
        stream = container.add_stream("libx264", rate=round(fps), options={"crf": "23", "preset": "veryfast"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for _ in range(round(seconds * fps)):
            ok, image = cap.read()
            if not ok:
                break
            image = cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="bgr24")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    cap.release()
    return out


def cams_for(n: int, frames: int, clips: str, clip: Path | None = None) -> list[dict[str, Any]]:
    if clip is not None:
        one = {**bench.cameras(1, frames)[0], "fps": round(frames / 10.0, 4), "source": {"url": str(clip)}}
        return [{**one, "id": f"cam{i:02d}"} for i in range(n)]
    if clips == "mixed":
        return bench.cameras(n, frames)
    one = bench.cameras(1, frames)[0]
    return [{**one, "id": f"cam{i:02d}"} for i in range(n)]


def measure(n: int, frames: int, clips: str, detector: str, top: int, max_batch: int,
            clip: Path | None = None) -> dict[str, Any]:
    from nonsite.bus.embedded import EmbeddedBus
    from nonsite.config import NonsiteConfig
    from nonsite.evidence.local import LocalStore
    from nonsite.pipeline.edge import EdgeRunner

    cams = cams_for(n, frames, clips, clip)
    if detector == "null":
        det: Any = NullDetector()
    else:
        det = bench.detector(detector)
        shapes = {c["source"]["url"]: c for c in cams}
        warm = bench.decode(list(shapes.values()), 1)
        bench.warm_up(det, [im for v in warm.values() for im in v], max_batch)
        del warm
    if top:
        import tracemalloc

        tracemalloc.start(1)
    baseline = rss_mb()
    peak = [baseline]
    snap: list[Any] = [None]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.05):
            now = rss_mb()
            if now > peak[0]:
                peak[0] = now
                if top:
                    import tracemalloc

                    snap[0] = tracemalloc.take_snapshot()

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    cpu = time.process_time()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="nonsite-bench-mem-") as tmp:
        cfg = NonsiteConfig.model_validate({"data_dir": tmp, "cameras": cams, "edge": {"max_batch": max_batch}})
        bus = EmbeddedBus(Path(tmp) / "bus.sqlite")
        runner = EdgeRunner(cfg, det, LocalStore(Path(tmp) / "evidence"), bus)
        stats = runner.run(threading.Event())
        bus.close()
    wall = time.perf_counter() - start
    h, w = bench.decode(cams[:1], 1)[cams[0]["id"]][0].shape[:2]
    cpu = time.process_time() - cpu
    done.set()
    sampler.join()
    peak[0] = max(peak[0], rss_mb())
    out: dict[str, Any] = {
        "cameras": n, "clips": clips if clip is None else "same", "detector": detector,
        "frame": f"{w}x{h}" if clips == "same" or clip is not None else "mixed",
        "frames": sum(s.frames for s in stats.values()),
        "rss_baseline_mb": round(baseline, 1), "rss_peak_mb": round(peak[0], 1),
        "per_camera_mb": round((peak[0] - baseline) / n, 1), "wall_s": round(wall, 1), "cpu_s": round(cpu, 1),
    }
    if top and snap[0] is not None:
        stats_top = snap[0].statistics("lineno")[:top]
        out["top"] = [{"where": f"{s.traceback[0].filename}:{s.traceback[0].lineno}", "mb": round(s.size / 2**20, 2),
                       "count": s.count} for s in stats_top]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cameras", default="1,4,16")
    ap.add_argument("--frames", type=int, default=20, help="frames sampled per camera (over its whole clip)")
    ap.add_argument("--clips", choices=("same", "mixed"), default="same")
    ap.add_argument("--detector", default="openvino", help="a detector backend, or null")
    ap.add_argument("--max-batch", type=int, default=4)
    ap.add_argument("--height", type=int, help="every camera reads the first 10 s of the first clip scaled to this "
                    "many lines (e.g. 1080), H.264")
    ap.add_argument("--clip", help=argparse.SUPPRESS)  # child: the scaled clip
    ap.add_argument("--top", type=int, default=0)
    ap.add_argument("--out", help="write the rows as JSON here")
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)  # child: measure this count only
    a = ap.parse_args()
    if a.one:
        clip = Path(a.clip) if a.clip else None
        print(json.dumps(measure(a.one, a.frames, a.clips, a.detector, a.top, a.max_batch, clip)))
        return 0
    with tempfile.TemporaryDirectory(prefix="nonsite-bench-mem-clip-") as tmp:
        clip = upscaled_clip(a.height, Path(tmp) / f"clip{a.height}.mp4") if a.height else None
        return sweep(a, clip)


def sweep(a: argparse.Namespace, clip: Path | None) -> int:
    rows: list[dict[str, Any]] = []
    for n in (int(x) for x in a.cameras.split(",")):
        args = [sys.executable, __file__, "--one", str(n), "--frames", str(a.frames), "--clips", a.clips,
                "--detector", a.detector, "--max-batch", str(a.max_batch), "--top", str(a.top),
                *(["--clip", str(clip)] if clip else [])]
        p = subprocess.run(args, capture_output=True, text=True, check=False)
        if p.returncode:
            print(p.stderr[-3000:], file=sys.stderr)
            return p.returncode
        row = json.loads(p.stdout.strip().splitlines()[-1])
        if rows:
            prev = rows[-1]
            grown = (row["rss_peak_mb"] - row["rss_baseline_mb"]) - (prev["rss_peak_mb"] - prev["rss_baseline_mb"])
            row["slope_mb"] = round(grown / (n - prev["cameras"]), 1)
        rows.append(row)
        print(json.dumps(row), flush=True)
    if a.out:
        Path(a.out).write_text(json.dumps({
            "measured": datetime.now(UTC).isoformat(timespec="seconds"), "command": " ".join(sys.argv),
            "machine": bench.machine(), "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
