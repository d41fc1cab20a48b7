"""Build the "street" training set: COCO pseudo-labels plus a vendor-cart class, for one detector pass.

``nonsite models build-street-dataset --out DIR`` -> :func:`build_street_dataset`.

A dataset such as ``india_road_obstacles`` labels vendor carts (``thela``) but not the people, cars and dogs
around them. Fine-tuning a COCO model on its labels alone would teach it that those are background. So:

1. the base COCO model (``yolo11n-coco``) labels every train/val image with its 80 classes (conf >= ``conf``);
   these pseudo-labels stand in for COCO ground truth;
2. the dataset's cart boxes are added as class 80, ``vendor_cart``; a pseudo-label of a vehicle or furniture
   class that overlaps a cart box (IoU >= ``CART_OVERLAP_IOU``) is dropped: it is the cart, seen as a truck
   or a bench by the COCO model;
3. images are symlinked (never copied) into ``DIR/images/<split>``, labels written to ``DIR/labels/<split>``,
   a ``data.yaml`` (80 COCO names + ``vendor_cart``) and a ``MANIFEST.sha256`` (sha256 of every image and
   label file); the sha256 of that manifest is the dataset's hash, quoted by the model card.

``DIR`` must be outside the repository: the images' rights are not cleared for redistribution.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from nonsite.models.registry import resolve, sha256_file
from nonsite.models.train import IMAGE_SUFFIXES, TrainError, _label_for, offline_ultralytics

log = logging.getLogger(__name__)

CART_NAME = "vendor_cart"
CART_OVERLAP_IOU = 0.5
"""A pseudo-label of a class in :data:`CART_LOOKALIKES` overlapping a cart box this much is the cart itself."""
CART_LOOKALIKES = {"bicycle", "car", "motorcycle", "bus", "truck", "bench", "chair", "dining table", "umbrella"}


def default_source() -> Path:
    """``$NONSITE_MEDIA_DIR/india_road_obstacles/data.yaml`` (default: the shared media beside the repository)."""
    media = os.environ.get("NONSITE_MEDIA_DIR") or str(Path(__file__).resolve().parents[2] / "shared" / "media")
    return Path(media) / "india_road_obstacles" / "data.yaml"


@dataclass(frozen=True)
class StreetDataset:
    yaml_path: Path
    names: list[str]
    images: dict[str, int]
    boxes: dict[str, dict[str, int]]
    """Per split: boxes per class name."""
    dropped: int
    """Pseudo-labels dropped because they were the cart."""
    manifest_sha256: str
    seconds: float


def _xywhn_to_xyxy(b: np.ndarray) -> np.ndarray:
    return np.stack([b[:, 0] - b[:, 2] / 2, b[:, 1] - b[:, 3] / 2, b[:, 0] + b[:, 2] / 2, b[:, 1] + b[:, 3] / 2], 1)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix (len(a), len(b)) of xyxy boxes."""
    if not len(a) or not len(b):
        return np.zeros((len(a), len(b)))
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(2)
    area_a = (a[:, 2:] - a[:, :2]).prod(1)
    area_b = (b[:, 2:] - b[:, :2]).prod(1)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-12)


def _read_cart_boxes(label: Path, cart_class: int) -> np.ndarray:
    rows = []
    if label.is_file():
        for line in label.read_text(encoding="utf-8").splitlines():
            p = line.split()
            if len(p) >= 5 and int(float(p[0])) == cart_class:
                rows.append([float(v) for v in p[1:5]])
    return np.array(rows, dtype=np.float64).reshape(-1, 4)


def merge_labels(
    pseudo_cls: np.ndarray, pseudo_xywhn: np.ndarray, carts_xywhn: np.ndarray, names: list[str]
) -> tuple[list[str], int]:
    """YOLO label lines for one image: the pseudo-labels (minus cart look-alikes on a cart) and the carts as
    class ``len(names)``. Returns the lines and how many pseudo-labels were dropped."""
    keep = np.ones(len(pseudo_cls), dtype=bool)
    if len(carts_xywhn) and len(pseudo_cls):
        iou = box_iou(_xywhn_to_xyxy(pseudo_xywhn), _xywhn_to_xyxy(carts_xywhn)).max(1)
        lookalike = np.array([names[int(c)] in CART_LOOKALIKES for c in pseudo_cls], dtype=bool)
        keep = ~(lookalike & (iou >= CART_OVERLAP_IOU))
    lines = [
        f"{int(c)} {x:.6f} {y:.6f} {w:.6f} {h:.6f}"
        for c, (x, y, w, h) in zip(pseudo_cls[keep], pseudo_xywhn[keep], strict=True)
    ]
    lines += [f"{len(names)} {x:.6f} {y:.6f} {w:.6f} {h:.6f}" for x, y, w, h in carts_xywhn]
    return lines, int((~keep).sum())


def _source_splits(source: Path) -> tuple[Path, dict[str, Path], int]:
    raw: Any = yaml.safe_load(source.read_text(encoding="utf-8")) or {}
    names = raw.get("names")
    names = list(names.values()) if isinstance(names, dict) else list(names or [])
    if "thela" not in names:
        raise TrainError(f"{source}: names has no 'thela' class to become {CART_NAME}; pass one that labels carts.")
    root = Path(str(raw.get("path") or "."))
    root = root if root.is_absolute() else (source.parent / root).resolve()
    splits = {}
    for key in ("train", "val"):
        if not raw.get(key):
            raise TrainError(f"{source}: '{key}:' is missing.")
        d = root / str(raw[key])
        if not d.is_dir():
            raise TrainError(f"{source}: {key}: {d} is not a folder of images; fix the path.")
        splits[key] = d
    return root, splits, names.index("thela")


def build_street_dataset(
    out: str | Path,
    source: str | Path | None = None,
    base: str = "yolo11n-coco",
    *,
    conf: float = 0.35,
    imgsz: int = 640,
) -> StreetDataset:
    """Write the street dataset (see the module docstring) to ``out``; returns counts and its hash."""
    t0 = time.perf_counter()
    src = Path(source or default_source()).expanduser().resolve()
    if not src.is_file():
        raise TrainError(f"dataset yaml {source} not found; pass --source PATH/TO/india_road_obstacles/data.yaml.")
    out_dir = Path(out).expanduser().resolve()
    repo = Path(__file__).resolve().parents[1]
    if out_dir == repo or repo in out_dir.parents:
        raise TrainError(f"--out {out_dir} is inside the repository; the images must not be committed: pick a folder "
                         f"outside it (e.g. /work/street_ds).")
    _root, splits, cart_class = _source_splits(src)
    weights = resolve(base)
    images: dict[str, int] = {}
    boxes: dict[str, dict[str, int]] = {}
    dropped = 0
    manifest: list[str] = []
    with offline_ultralytics() as YOLO:
        model = YOLO(str(weights.path), task="detect")
        names = [str(model.names[i]) for i in range(len(model.names))]
        all_names = [*names, CART_NAME]
        for split, img_dir in splits.items():
            (out_dir / "images" / split).mkdir(parents=True, exist_ok=True)
            (out_dir / "labels" / split).mkdir(parents=True, exist_ok=True)
            files = sorted(f for f in img_dir.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())
            counts = dict.fromkeys(all_names, 0)
            for i in range(0, len(files), 16):
                chunk = files[i : i + 16]
                results = model.predict([str(f) for f in chunk], imgsz=imgsz, conf=conf, verbose=False, device="cpu")
                for f, r in zip(chunk, results, strict=True):
                    cls = r.boxes.cls.numpy().astype(int)
                    xywhn = r.boxes.xywhn.numpy().astype(np.float64)
                    carts = _read_cart_boxes(_label_for(f), cart_class)
                    lines, n_drop = merge_labels(cls, xywhn, carts, names)
                    dropped += n_drop
                    for line in lines:
                        counts[all_names[int(line.split()[0])]] += 1
                    link = out_dir / "images" / split / f.name
                    link.unlink(missing_ok=True)
                    link.symlink_to(f.resolve())
                    label = out_dir / "labels" / split / f"{f.stem}.txt"
                    label.write_text("\n".join(lines) + ("\n" if lines else ""), encoding="utf-8")
                    manifest.append(f"{sha256_file(f)}  images/{split}/{f.name}")
                    manifest.append(f"{sha256_file(label)}  labels/{split}/{label.name}")
                log.info("%s: %d/%d images pseudo-labelled", split, min(i + 16, len(files)), len(files))
            images[split] = len(files)
            boxes[split] = {k: v for k, v in counts.items() if v}
    text = "\n".join(manifest) + "\n"
    (out_dir / "MANIFEST.sha256").write_text(text, encoding="utf-8")
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    data = {
        "path": str(out_dir),
        "train": "images/train",
        "val": "images/val",
        "nc": len(all_names),
        "names": dict(enumerate(all_names)),
    }
    (out_dir / "data.yaml").write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    seconds = time.perf_counter() - t0
    info = {
        "source": str(src),
        "base": {"name": weights.name, "version": weights.version, "sha256": weights.sha256},
        "conf": conf,
        "imgsz": imgsz,
        "cart_class_in_source": cart_class,
        "cart_overlap_iou": CART_OVERLAP_IOU,
        "cart_lookalikes": sorted(CART_LOOKALIKES),
        "images": images,
        "boxes": boxes,
        "dropped_pseudo_labels_on_carts": dropped,
        "manifest_sha256": digest,
        "seconds": round(seconds, 1),
    }
    (out_dir / "build.json").write_text(json.dumps(info, indent=2), encoding="utf-8")
    return StreetDataset(out_dir / "data.yaml", all_names, images, boxes, dropped, digest, seconds)
