"""Command-line helpers of the models package (the lead's ``nonsite`` CLI wires argparse to these).

- ``nonsite detect IMAGE_OR_VIDEO [--save OUT] [--every N]`` -> :func:`detect_command`
- ``nonsite models list`` -> :func:`list_command`
- ``nonsite models train --data DATASET.yaml --base MODEL --epochs N`` -> :func:`train_command`
- ``nonsite models export --model NAME --format onnx|openvino`` -> :func:`export_command`
"""

from __future__ import annotations

import sys
from collections import Counter
from fractions import Fraction
from pathlib import Path
from typing import Any, TextIO

import cv2
import numpy as np
import supervision as sv

from nonsite.config.detector import DetectorConfig
from nonsite.models.registry import WeightsError, list_models

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
VIDEO_SUFFIXES = {".mp4", ".mkv", ".mov"}


def _err(msg: str) -> int:
    print(f"error: {msg}", file=sys.stderr)
    return 2


def format_detections(det: sv.Detections) -> list[str]:
    """One line per detection: class, confidence, box (x1, y1, x2, y2 in pixels)."""
    names = det.data.get("class_name", np.array([], dtype=str))
    lines = []
    for (x1, y1, x2, y2), conf, name in zip(det.xyxy, det.confidence, names, strict=False):
        lines.append(f"  {name:<14} {float(conf):.2f}  [{x1:.0f}, {y1:.0f}, {x2:.0f}, {y2:.0f}]")
    return lines


def annotate(image: np.ndarray, det: sv.Detections) -> np.ndarray:
    """A copy of ``image`` with boxes and ``class confidence`` labels drawn."""
    names = det.data.get("class_name", np.array([], dtype=str))
    labels = [f"{n} {float(c):.2f}" for n, c in zip(names, det.confidence, strict=False)]
    out = sv.BoxAnnotator().annotate(image.copy(), det)
    return sv.LabelAnnotator(text_scale=0.5, text_padding=4).annotate(out, det, labels=labels)


def detect_command(
    path: str, cfg: DetectorConfig, save: str | None, every: int = 1, *, out: TextIO | None = None
) -> int:
    """Detect objects in an image or a video and print them; with ``save`` write an annotated copy
    (image -> image, video -> H.264 mp4). ``every``: detect on every Nth video frame (boxes are held on
    the frames between). Returns 0, or 2 after a one-line error on stderr."""
    out = out or sys.stdout
    src = Path(path).expanduser()
    if not src.exists():
        return _err(f"{path} does not exist; pass the path of an image or a video file.")
    if not src.is_file():
        return _err(f"{path} is not a file; pass the path of an image or a video file.")
    if every < 1:
        return _err(f"--every must be 1 or more, got {every}.")
    is_image = src.suffix.lower() in IMAGE_SUFFIXES
    image = cv2.imread(str(src)) if is_image else None
    cap: Any = None
    if image is None:
        cap = cv2.VideoCapture(str(src))
        if not cap.isOpened() or not cap.read()[0]:
            cap.release()
            return _err(f"cannot read {path} as an image or a video; pass a JPEG/PNG image or a video file.")
        cap.release()
        cap = cv2.VideoCapture(str(src))  # reopened: start again at the first frame
    if save:
        save_path = Path(save).expanduser()
        bad = (
            "an annotated image needs an image file name (.jpg or .png)"
            if image is not None and save_path.suffix.lower() not in IMAGE_SUFFIXES
            else f"an annotated video needs a video file name ({', '.join(sorted(VIDEO_SUFFIXES))})"
            if image is None and save_path.suffix.lower() not in VIDEO_SUFFIXES
            else ""
        )
        if bad:
            if cap is not None:
                cap.release()
            return _err(f"--save {save}: {bad}.")
        save_path.parent.mkdir(parents=True, exist_ok=True)

    try:
        from nonsite.models import create_detector

        detector = create_detector(cfg)
    except WeightsError as e:
        if cap is not None:
            cap.release()
        return _err(str(e))

    print(
        f"{src.name}: model {detector.weights.name} ({detector.weights.version}, sha256 "
        f"{detector.weights.sha256[:12]}), backend {detector.backend}, imgsz {getattr(detector, 'imgsz', cfg.imgsz)}",
        file=out,
    )
    if image is not None:
        det = detector.detect([image])[0]
        print(f"{src.name}: {len(det)} detections", file=out)
        for line in format_detections(det):
            print(line, file=out)
        if save and not cv2.imwrite(str(save_path), annotate(image, det)):
            return _err(f"could not write {save}; check the folder exists and is writable.")
        if save:
            print(f"saved {save_path}", file=out)
        return 0
    return _detect_video(cap, src, detector, save_path if save else None, every, out)


def _detect_video(cap: Any, src: Path, detector: Any, save: Path | None, every: int, out: TextIO) -> int:
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    writer = _VideoWriter(save, fps) if save else None
    totals: Counter[str] = Counter()
    det: sv.Detections | None = None
    n = 0
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            if n % every == 0:
                det = detector.detect([frame])[0]
                totals.update(str(c) for c in det.data["class_name"])
                print(f"frame {n} ({n / fps:.2f} s): {len(det)} detections", file=out)
                for line in format_detections(det):
                    print(line, file=out)
            if writer and det is not None:
                writer.write(annotate(frame, det))
            n += 1
    finally:
        cap.release()
        if writer:
            writer.close()
    summary = ", ".join(f"{k} {v}" for k, v in totals.most_common()) or "nothing"
    print(f"{src.name}: {n} frames, detected on every {every}: {summary}", file=out)
    if save:
        print(f"saved {save}", file=out)
    return 0


class _VideoWriter:
    """H.264 (libx264, yuv420p) writer through PyAV; frames are cropped to even sizes."""

    def __init__(self, path: Path, fps: float) -> None:
        import av

        self._av = av
        self.container = av.open(str(path), mode="w")
        self.stream: Any = None
        self.rate = Fraction(fps).limit_denominator(1001)

    def write(self, bgr: np.ndarray) -> None:
        h, w = bgr.shape[:2]
        h2, w2 = h - h % 2, w - w % 2
        if self.stream is None:
            self.stream = self.container.add_stream("libx264", rate=self.rate)
            self.stream.width, self.stream.height = w2, h2
            self.stream.pix_fmt = "yuv420p"
            self.stream.options = {"crf": "23", "preset": "veryfast"}
        frame = self._av.VideoFrame.from_ndarray(np.ascontiguousarray(bgr[:h2, :w2]), format="bgr24")
        for packet in self.stream.encode(frame):
            self.container.mux(packet)

    def close(self) -> None:
        if self.stream is not None:
            for packet in self.stream.encode():
                self.container.mux(packet)
        self.container.close()


def list_command(out: TextIO | None = None) -> int:
    """Print the weights registry (built-in and locally registered models)."""
    out = out or sys.stdout
    try:
        entries = list_models()
    except WeightsError as e:
        return _err(str(e))
    for e in entries:
        print(
            f"{e.name:<24} {e.format:<8} {e.version:<28} {len(e.classes):>3} classes  sha256 {e.sha256[:12]}  "
            f"{e.file}{'  (local)' if e.origin == 'local' else ''}",
            file=out,
        )
    return 0


def train_command(
    data: str,
    base: str,
    epochs: int,
    *,
    imgsz: int = 640,
    name: str | None = None,
    batch: int = 8,
    freeze: int | None = None,
    hours: float | None = None,
    cache: bool = False,
    lr0: float | None = None,
    out: TextIO | None = None,
) -> int:
    """``nonsite models train``: fine-tune, register, print what a camera config needs. 0, or 2 after a
    one-line error."""
    from nonsite.models.train import train

    out = out or sys.stdout
    try:
        r = train(data, base, epochs, imgsz=imgsz, name=name, batch=batch, freeze=freeze, hours=hours, cache=cache,
                  lr0=lr0)
    except WeightsError as e:
        return _err(str(e))
    m = r.metrics
    per_epoch = r.seconds / max(r.epochs, 1)
    print(
        f"trained {r.name} from {r.base} on {r.dataset.source}: {r.dataset.images.get('train', 0)} train / "
        f"{r.dataset.images.get('val', 0)} val images, {r.epochs} epochs at imgsz {r.imgsz} in {r.seconds:.0f} s "
        f"({per_epoch:.1f} s/epoch)",
        file=out,
    )
    print(
        "val: " + ", ".join(f"{k} {v:.3f}" for k, v in m.items()) if m else "val: no metrics reported",
        file=out,
    )
    print(
        f"registered {r.name}: {r.weights} (sha256 {r.entry.sha256[:12]}, version {r.entry.version}, classes "
        f"{', '.join(r.classes)})",
        file=out,
    )
    print(f"use it: detector.model: {r.name}   (ultralytics run files: {r.run_dir})", file=out)
    return 0


def val_command(model: str, data: str, *, imgsz: int = 640, out: TextIO | None = None) -> int:
    """``nonsite models val``: a table of per-class metrics (markdown). 0, or 2 after a one-line error."""
    from nonsite.models.train import validate

    out = out or sys.stdout
    try:
        rows = validate(model, data, imgsz=imgsz)
    except WeightsError as e:
        return _err(str(e))
    print(f"{model} on {data} (val split), imgsz {imgsz}", file=out)
    print("| class | images | boxes | precision | recall | mAP50 | mAP50-95 |", file=out)
    print("|---|---:|---:|---:|---:|---:|---:|", file=out)
    for r in rows:
        print(f"| {r.name} | {r.images} | {r.boxes} | {r.precision:.3f} | {r.recall:.3f} | {r.mAP50:.3f} | "
              f"{r.mAP50_95:.3f} |", file=out)
    return 0


def build_street_command(
    out_dir: str, source: str | None, base: str, *, conf: float = 0.35, out: TextIO | None = None
) -> int:
    """``nonsite models build-street-dataset``: COCO pseudo-labels + vendor_cart. 0, or 2 after a one-line error."""
    from nonsite.models.street import build_street_dataset

    out = out or sys.stdout
    try:
        r = build_street_dataset(out_dir, source, base, conf=conf)
    except WeightsError as e:
        return _err(str(e))
    for split, n in r.images.items():
        top = sorted(r.boxes[split].items(), key=lambda kv: -kv[1])[:8]
        print(f"{split}: {n} images; boxes " + ", ".join(f"{k} {v}" for k, v in top), file=out)
    print(f"dropped {r.dropped} pseudo-labels that were a cart; {len(r.names)} classes; built in {r.seconds:.0f} s",
          file=out)
    print(f"wrote {r.yaml_path} (dataset sha256 {r.manifest_sha256}, the sha256 of MANIFEST.sha256)", file=out)
    return 0


def export_command(
    model: str, fmt: str, *, imgsz: int | None = None, name: str | None = None, out: TextIO | None = None
) -> int:
    """``nonsite models export``: export a .pt to ONNX or OpenVINO and register it. 0, or 2 after a
    one-line error."""
    from nonsite.models.export import export_model

    out = out or sys.stdout
    try:
        r = export_model(model, fmt, imgsz=imgsz, name=name)
    except WeightsError as e:
        return _err(str(e))
    sizes = ", ".join(f"{f} {b / 1e6:.1f} MB" for f, b in r.files.items() if b > 10_000)
    print(
        f"exported {r.source.name} to {fmt} at imgsz {r.imgsz} (dynamic batch and size) in {r.seconds:.0f} s: "
        f"{r.path} ({sizes})",
        file=out,
    )
    print(
        f"registered {r.name} (sha256 {r.entry.sha256[:12]}, version {r.entry.version}); use it: "
        f"detector.backend: {fmt}, detector.model: {r.name}",
        file=out,
    )
    return 0


def quantize_command(model: str, *, imgsz: int = 640, frames: int = 300, out: TextIO | None = None) -> int:
    """``nonsite models quantize``: build the int8 OpenVINO IR into the cache. 0, or 2 after a one-line error."""
    from nonsite.models.quantize import quantize_model

    out = out or sys.stdout
    try:
        r = quantize_model(model, imgsz=imgsz, frames=frames)
    except WeightsError as e:
        return _err(str(e))
    print(f"quantized {r.source.name} to int8 at imgsz {r.imgsz} on {r.frames} frames ({', '.join(r.media)}) in "
          f"{r.seconds:.0f} s: {r.path} ({r.bytes / 1e6:.1f} MB); use it: detector.openvino.precision: int8 (or "
          "auto)", file=out)
    return 0
