"""CPU cost of the camera view guard (``pipeline/viewguard.py``): one check per camera every
``view_guard.check_interval_s``. Measures CPU seconds per check on the shared media clips (640-960 px frames,
the default 320-pixel grey copy and 1000 ORB features), side by side with the bare detector's CPU per frame,
and prints the share of one core a camera's guard takes at the default interval.

    .venv/bin/python bench/view_guard.py [--checks 40] [--json bench/results/view_guard.json]

Nothing here is a test; the figures depend on how busy the machine is (the load average is printed).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import cv2
import numpy as np

CLIPS = ("parking_lot_cctv_timelapse_a_640x480.mp4", "traffic_cctv_indonesia_motorcycles.mp4",
         "street_india_intersection.mp4", "traffic_highway.mp4", "dog_alone_fence.mp4")


def frames(path: Path, n: int) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) or n
    out = []
    for i in np.linspace(0, total - 1, n).astype(int):
        cap.set(cv2.CAP_PROP_POS_FRAMES, int(i))
        ok, img = cap.read()
        if ok:
            out.append(img)
    cap.release()
    return out


def main() -> None:
    from nonsite.config.detector import DetectorConfig
    from nonsite.config.edge import ViewGuardConfig
    from nonsite.models import create_detector
    from nonsite.pipeline.viewguard import ViewGuard

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checks", type=int, default=40, help="checks per clip")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    media = Path(os.environ.get("NONSITE_MEDIA_DIR", "../shared/media"))
    cfg = ViewGuardConfig(check_interval_s=1e-6, confirm_checks=1)
    detector = create_detector(DetectorConfig(backend="onnx"))
    load_before = os.getloadavg()
    rows = []
    for clip in CLIPS:
        imgs = frames(media / clip, args.checks)
        guard = ViewGuard(cfg, None, clip, "bench")
        guard.observe(imgs[0], 0.0)  # the reference
        cpu = []
        for i, img in enumerate(imgs[1:], 1):
            guard.observe(img, float(i))
            cpu.append(guard.check_seconds)
        detector.detect([imgs[0]])  # warm-up
        t = time.process_time()
        for img in imgs[:10]:
            detector.detect([img])
        detect_cpu = (time.process_time() - t) / 10
        check = float(np.median(cpu))
        size = f"{imgs[0].shape[1]}x{imgs[0].shape[0]}"
        rows.append({"clip": clip, "size": size, "check_cpu_ms": round(check * 1e3, 2),
                     "detect_cpu_ms": round(detect_cpu * 1e3, 1), "check_vs_detect": round(check / detect_cpu, 4),
                     "core_share_at_default_interval": round(check / ViewGuardConfig().check_interval_s, 5)})
    result = {"load_before": load_before, "load_after": os.getloadavg(), "rows": rows}
    print(f"load average before {load_before[0]:.2f}, after {result['load_after'][0]:.2f}")
    print(f"{'clip':45} {'size':>9} {'check ms':>9} {'detect ms':>10} {'ratio':>7} {'core share':>11}")
    for r in rows:
        print(f"{r['clip']:45} {r['size']:>9} {r['check_cpu_ms']:>9} {r['detect_cpu_ms']:>10} "
              f"{r['check_vs_detect']:>7} {r['core_share_at_default_interval']:>11}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
