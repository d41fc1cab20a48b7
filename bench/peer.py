"""The naive peer of `make bench`: what a team would write first with ultralytics, over the same clips.

One loop per camera, frame by frame: decode the file at the camera's sampling fps (the same
:class:`~nonsite.streams.FileSource` sampling nonsite's edge uses, so both see the very same frames),
``model.track(frame, persist=True)`` (YOLO11n ``.pt`` through ultralytics/PyTorch, ByteTrack, the same
confidence, IoU and input size as nonsite's detector), then a dwell timer per track and zone: a track whose box
foot point stays inside a zone for the zone's dwell time (``dwell_s`` of the camera's rule) raises one alert.
The classes each zone kind watches are a plain list (:data:`WATCH`): no class merging, no appearance checks, no
evidence, no view guard. The tracker is reset between cameras.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

WATCH: dict[str, set[str]] = {
    "sidewalk": {"car", "truck", "bus", "motorcycle"},
    "no_stray_dogs": {"dog"},
    "no_vending": {"umbrella", "bench", "vendor_cart", "cart"},
}
"""Zone kind -> COCO classes the naive loop times; other kinds time every class but people."""


def _inside(poly: np.ndarray, x: float, y: float) -> bool:
    import cv2

    return cv2.pointPolygonTest(poly, (float(x), float(y)), False) >= 0


def run_peer(cams: list[dict[str, Any]], dwell: dict[str, dict[str, float]], imgsz: int = 640,
             conf: float = 0.3, iou: float = 0.45) -> dict[str, Any]:
    """Run the naive loop over ``cams`` (camera dicts: id, fps, source.url, zones) one after the other;
    ``dwell[camera][zone]`` = seconds. Returns frames, wall seconds, frames/s and the alerts raised."""
    import logging

    from nonsite.models.torch_compat import ensure_torchvision_ops

    ensure_torchvision_ops()  # this project's torchvision wheels need it on CPU torch (models/torch_compat.py)
    from ultralytics import YOLO

    from nonsite.models.registry import resolve
    from nonsite.streams import FileSource

    logging.getLogger("ultralytics").setLevel(logging.WARNING)
    model = YOLO(str(resolve("yolo11n-coco").path))
    frames = 0
    alerts = 0
    warm = np.full((480, 640, 3), 114, np.uint8)
    model.track(warm, persist=True, verbose=False, imgsz=imgsz, conf=conf, iou=iou)
    start = time.perf_counter()
    cpu = time.process_time()
    for cam in cams:
        if model.predictor is not None:
            for t in getattr(model.predictor, "trackers", []):
                t.reset()
        zones = []
        first: dict[tuple[int, str], float] = {}
        alerted: set[tuple[int, str]] = set()
        for frame in FileSource(cam["id"], cam["source"]["url"], fps=cam["fps"]).frames():
            h, w = frame.image.shape[:2]
            if not zones:
                zones = [(z["id"], WATCH.get(z["kind"]), np.array([[x * w, y * h] for x, y in z["polygon"]],
                                                                    np.float32))
                         for z in cam["zones"]]
            r = model.track(frame.image, persist=True, verbose=False, imgsz=imgsz, conf=conf, iou=iou)[0]
            frames += 1
            boxes = r.boxes
            if boxes is None or boxes.id is None:
                continue
            names = r.names
            seen: set[tuple[int, str]] = set()
            for (x1, _y1, x2, y2), tid, cls in zip(boxes.xyxy.tolist(), boxes.id.int().tolist(),
                                                  boxes.cls.int().tolist(), strict=True):
                name = names[cls]
                for zid, watch, poly in zones:
                    if (name == "person" if watch is None else name not in watch):
                        continue
                    if not _inside(poly, (x1 + x2) / 2, y2):
                        continue
                    key = (tid, zid)
                    seen.add(key)
                    since = first.setdefault(key, frame.ts)
                    if key not in alerted and frame.ts - since >= dwell.get(cam["id"], {}).get(zid, 60.0):
                        alerted.add(key)
                        alerts += 1
            for key in [k for k in first if k not in seen]:
                del first[key]  # left the zone (or lost): the dwell timer starts again
    wall = time.perf_counter() - start
    cpu_s = time.process_time() - cpu
    return {"frames": frames, "wall_s": round(wall, 2), "fps": round(frames / wall, 2) if wall else None,
            "cpu_s": round(cpu_s, 2), "fps_per_cpu": round(frames / cpu_s, 3) if cpu_s else None, "alerts": alerts}
