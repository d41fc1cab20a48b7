"""How long ``/healthz`` takes while three large PNG feedback uploads are decoded (issue 11: uploads blocked the
event loop). Not a test: a figure to read next to the load average.

    NONSITE_MEDIA_DIR=../shared/media .venv/bin/python bench/console_uploads.py

Seeds three cases (tests/console_support.py: real frames, sealed packages), serves the console on loopback,
asks ``/healthz`` in a loop while three 7000x5000 PNGs (~18 MB each) are uploaded at once, and prints the
median and worst answer times idle and during the uploads, and how many answers came back meanwhile.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2
import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from console_support import Served, seed  # noqa: E402


def large_png() -> bytes:
    y, x = np.mgrid[0:5000, 0:7000]
    image = np.dstack([x % 256, y % 256, (x + y) % 256]).astype(np.uint8)
    return bytes(cv2.imencode(".png", image)[1].tobytes())


def main() -> None:
    media = Path(os.environ.get("NONSITE_MEDIA_DIR") or ROOT.parent / "shared" / "media")
    env = seed(Path(tempfile.mkdtemp(prefix="nonsite-bench-")), media)
    png = large_png()
    app, _ = env.make_app(max_upload_bytes=64 * 1024 * 1024)
    op, rev = env.users.issue_token("op"), env.users.issue_token("rev")
    with Served(app) as served:
        url = served.url

        def auth(token: str) -> dict[str, str]:
            return {"Authorization": f"Bearer {token}"}

        for n in env.cases.values():
            httpx.post(f"{url}/api/cases/{n}/confirm", headers=auth(op), json={})
            httpx.post(f"{url}/api/cases/{n}/approve", headers=auth(rev), json={})
            httpx.post(f"{url}/api/cases/{n}/dispatch", headers=auth(op), json={"team": "capture_team"})

        def health() -> float:
            t = time.perf_counter()
            httpx.get(f"{url}/healthz", timeout=120)
            time.sleep(0.02)
            return time.perf_counter() - t - 0.02

        idle = [health() for _ in range(30)]
        statuses: list[int] = []

        def upload(number: str) -> None:
            r = httpx.post(f"{url}/api/cases/{number}/feedback", headers=auth(op), timeout=300, data={"note": "x"},
                           files=[("photos", ("big.png", png, "image/png"))])
            statuses.append(r.status_code)

        uploads = [threading.Thread(target=upload, args=(n,)) for n in env.cases.values()]
        for t in uploads:
            t.start()
        busy = []
        while any(t.is_alive() for t in uploads):
            busy.append(health())
        for t in uploads:
            t.join()
    print(f"3 uploads of a {len(png) / 1e6:.1f} MB 7000x5000 PNG: {statuses}; load average {os.getloadavg()[0]:.1f}")
    print(f"/healthz idle:            median {statistics.median(idle) * 1000:6.1f} ms  max {max(idle) * 1000:7.1f} ms")
    print(f"/healthz during uploads:  median {statistics.median(busy) * 1000:6.1f} ms  max {max(busy) * 1000:7.1f} ms"
          f"  ({len(busy)} answers)")


if __name__ == "__main__":
    main()
