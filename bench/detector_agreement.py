"""Does a fine-tuned detector still find what the base model finds? Side by side on the shared media clips.

    python bench/detector_agreement.py --base yolo11n-coco --model street-yolo11n [--every 15]

For every sampled frame of the shared clips (real CCTV and street video, none of them trained on) both
models run through the project's detector (backend openvino, imgsz 640, conf 0.3). Per class, with the
base model's confident boxes (conf >= 0.5) as the reference: how many the model finds again (same class,
IoU >= 0.5), and how many of the model's confident boxes the base model has (same class, IoU >= 0.5, at
conf 0.3). Also counts the model's boxes of classes the base model does not have (e.g. vendor_cart) per
clip: on clips without carts each one is a false alarm. Prints a markdown table; not a test.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import Counter
from pathlib import Path

import av

ROOT = Path(__file__).resolve().parents[1]
CLIPS = (
    "street_india_intersection.mp4",
    "parking_lot_cctv_timelapse_a_640x480.mp4",
    "dog_alone_fence.mp4",
    "traffic_cctv_indonesia_motorcycles.mp4",
    "traffic_highway.mp4",
)
CLASSES = ("person", "car", "motorcycle", "bus", "truck", "dog")


def _frames(path: Path, every: int):  # type: ignore[no-untyped-def]
    with av.open(str(path)) as c:
        for i, f in enumerate(c.decode(video=0)):
            if i % every == 0:
                yield f.to_ndarray(format="bgr24")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", default="yolo11n-coco")
    ap.add_argument("--model", required=True)
    ap.add_argument("--every", type=int, default=15, help="sample every Nth frame (default 15)")
    a = ap.parse_args()
    from nonsite.config.detector import DetectorConfig
    from nonsite.models import create_detector
    from nonsite.models.street import box_iou

    media = Path(os.environ.get("NONSITE_MEDIA_DIR") or ROOT.parent / "shared" / "media")
    base = create_detector(DetectorConfig(model=a.base))
    model = create_detector(DetectorConfig(model=a.model))
    extra = [n for n in model.class_names if n not in set(base.class_names)]
    ref, found, mine, agreed = Counter(), Counter(), Counter(), Counter()
    extra_per_clip: dict[str, Counter] = {}
    frames = 0
    for clip in CLIPS:
        extra_per_clip[clip] = Counter()
        for im in _frames(media / clip, a.every):
            frames += 1
            (b,), (m,) = base.detect([im]), model.detect([im])
            for cls in CLASSES:
                bb, mb = b.xyxy[b.data["class_name"] == cls], m.xyxy[m.data["class_name"] == cls]
                bconf = b.confidence[b.data["class_name"] == cls]
                mconf = m.confidence[m.data["class_name"] == cls]
                ref[cls] += int((bconf >= 0.5).sum())
                found[cls] += int((box_iou(bb[bconf >= 0.5], mb).max(1, initial=0) >= 0.5).sum())
                mine[cls] += int((mconf >= 0.5).sum())
                agreed[cls] += int((box_iou(mb[mconf >= 0.5], bb).max(1, initial=0) >= 0.5).sum())
            for n in extra:
                extra_per_clip[clip][n] += int((m.data["class_name"] == n).sum())
    print(f"{a.model} against {a.base}: {frames} frames (every {a.every}th) of {len(CLIPS)} clips, openvino 640\n")
    print(f"| class | {a.base} boxes (conf>=0.5) | found again by {a.model} | {a.model} boxes (conf>=0.5) "
          f"| also found by {a.base} |")
    print("|---|---:|---:|---:|---:|")
    for cls in CLASSES:
        if ref[cls] or mine[cls]:
            r = f"{found[cls] / ref[cls]:.3f}" if ref[cls] else "-"
            p = f"{agreed[cls] / mine[cls]:.3f}" if mine[cls] else "-"
            print(f"| {cls} | {ref[cls]} | {found[cls]} ({r}) | {mine[cls]} | {agreed[cls]} ({p}) |")
    if extra:
        print(f"\nboxes of classes only {a.model} has (conf >= 0.3), per clip:")
        for clip, c in extra_per_clip.items():
            print(f"- {clip}: " + (", ".join(f"{k} {v}" for k, v in c.items() if v) or "none"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
