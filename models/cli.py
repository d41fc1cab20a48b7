"""Command-line helpers of the models package (the lead's ``nonsite`` CLI wires argparse to these).

- ``nonsite detect IMAGE_OR_VIDEO [--save OUT] [--every N]`` -> :func:`detect_command`
- ``nonsite models list`` -> :func:`list_command`
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
            f"{e.name:<24} {e.format:<5} {e.version:<28} {len(e.classes):>3} classes  sha256 {e.sha256[:12]}  "
            f"{e.file}{'  (local)' if e.origin == 'local' else ''}",
            file=out,
        )
    return 0
