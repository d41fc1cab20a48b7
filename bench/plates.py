"""Plate reading: what one OCR runtime (``plates.runtime``, ``plates.precision``, ``plates.threads``) costs in time,
CPU and memory.

One child process per runtime (memory is per process), all in the same bench run:

- speed: the plate search of fixed regions, each read ``repeats`` times after one warm-up: four synthetic mainland
  plates pasted on a real car (the test suite's), that car's real Indian plate, and three vehicle boxes of a 1080p
  street photograph without plates (the OCR finds signs there: what a busy camera mostly feeds it). Wall time, and
  the CPU time of the whole process: a runtime's threads that wait for each other spend CPU the detector lacks;
- the readings: every text found with its confidence (three decimals) and box, to compare between runtimes;
- memory: the process's resident memory after loading the OCR, then after ``sizes`` reads of vehicle boxes of
  random sizes and places on the photograph (the same seed for every runtime): a camera's vehicles come in every
  size, and a runtime that keeps working memory per input size grows with them.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

STREET = "street_pedestrians_city.jpg"
STREET_BOXES = ((400, 500, 900, 800), (100, 600, 300, 750), (1000, 300, 1700, 1000))


def _regions(media: Path, street: np.ndarray) -> list[tuple[str, np.ndarray, tuple[int, int, int, int]]]:
    import cv2

    from nonsite.tests.test_models_plates import HONDA, HONDA_PLATE_QUAD, SYNTHETIC, _grow, paste_plate, render_plate

    honda = cv2.imread(str(media / HONDA[0]))
    out = [(plate, paste_plate(honda, render_plate(plate, kind), _grow(HONDA_PLATE_QUAD, 1.12, 1.25)), HONDA[1])
           for plate, kind, _ in SYNTHETIC[:4]]
    out.append(("indian plate", honda, HONDA[1]))
    out += [(f"street {i + 1}", street, box) for i, box in enumerate(STREET_BOXES)]
    return out


def measure(runtime: str, precision: str, threads: int, media: Path, rss_mb: Callable[[], float], repeats: int = 5,
            sizes: int = 120) -> dict[str, Any]:
    """``rss_mb``: the process's resident memory now (bench/run.py's ``current_rss_mb``)."""
    import cv2

    from nonsite.config.plates import PlatesConfig
    from nonsite.models.plates import PlateReader

    street = cv2.resize(cv2.imread(str(media / STREET)), (1920, 1080))
    regions = _regions(media, street)
    rss0 = rss_mb()
    t = time.perf_counter()
    reader = PlateReader(PlatesConfig(runtime=runtime, precision=precision, threads=threads))  # type: ignore[arg-type]
    load_s = time.perf_counter() - t
    rss_loaded = rss_mb()
    found: dict[str, list[Any]] = {}
    ms: dict[str, float] = {}
    cpu = 0.0
    for name, img, box in regions:
        reader.scan(img, box)
        t, cpu_t = time.perf_counter(), time.process_time()
        for _ in range(repeats):
            cands = reader.scan(img, box)
        cpu += time.process_time() - cpu_t
        ms[name] = round((time.perf_counter() - t) / repeats * 1000, 1)
        found[name] = [[c.text, round(c.confidence, 3), [round(v) for v in c.xyxy]] for c in cands]
    rng = random.Random(16)
    t = time.perf_counter()
    for _ in range(sizes):
        x, y = rng.randint(0, 1400), rng.randint(200, 700)
        w, h = rng.randint(60, 500), rng.randint(40, 350)
        reader.scan(street, (x, y, min(1919, x + w), min(1079, y + h)))
    sizes_s = time.perf_counter() - t
    return {
        "runtime": runtime, "precision": precision, "threads": threads, "repeats": repeats,
        "load_s": round(load_s, 2),
        "ms": ms, "ms_total": round(sum(ms.values()), 1), "cpu_ms_total": round(cpu / repeats * 1000, 1),
        "found": found,
        "sizes": sizes, "sizes_ms_mean": round(sizes_s / sizes * 1000, 1),
        "rss_load_mb": round(rss_loaded - rss0, 1),
        "rss_after_sizes_mb": round(rss_mb() - rss0, 1),
    }
