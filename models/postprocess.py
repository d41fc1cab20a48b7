"""Pre- and post-processing shared by the backends: letterbox, YOLO output decoding, NMS, Detections."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import supervision as sv

PAD_VALUE = 114
MAX_NMS = 30000
"""Candidates kept (by confidence) before NMS, as ultralytics does."""
MAX_DET = 300
"""Detections kept per image after NMS."""


@dataclass(frozen=True)
class Letterbox:
    """How one image was placed in the network input: ``net = orig * gain + (left, top)``."""

    gain: float
    left: int
    top: int
    orig_hw: tuple[int, int]


def rect_shape(hw: tuple[int, int], imgsz: int, stride: int = 32) -> tuple[int, int]:
    """Smallest stride-multiple input holding the image scaled to fit ``imgsz`` (ultralytics' rect mode)."""
    h, w = hw
    r = min(imgsz / h, imgsz / w)
    uh, uw = round(h * r), round(w * r)
    return math.ceil(uh / stride) * stride, math.ceil(uw / stride) * stride


def letterbox(img: np.ndarray, shape: tuple[int, int], imgsz: int | None = None) -> tuple[np.ndarray, Letterbox]:
    """Resize keeping the aspect ratio and pad (grey 114, centred) to ``shape`` (h, w).

    The scale is ``min(imgsz / h, imgsz / w)`` when ``imgsz`` is given (the same scale as ultralytics for a
    rect batch), else the largest that fits ``shape``."""
    h, w = img.shape[:2]
    th, tw = shape
    r = min(imgsz / h, imgsz / w) if imgsz else min(th / h, tw / w)
    r = min(r, th / h, tw / w)
    uw, uh = round(w * r), round(h * r)
    dw, dh = (tw - uw) / 2, (th - uh) / 2
    if (uw, uh) != (w, h):
        img = cv2.resize(img, (uw, uh), interpolation=cv2.INTER_LINEAR)
    top, bottom = round(dh - 0.1), round(dh + 0.1)
    left, right = round(dw - 0.1), round(dw + 0.1)
    if top or bottom or left or right:
        img = cv2.copyMakeBorder(img, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(PAD_VALUE,) * 3)
    return img, Letterbox(gain=r, left=left, top=top, orig_hw=(h, w))


def batch_shape(images: Sequence[np.ndarray], imgsz: int, stride: int, fixed_hw: tuple[int, int] | None
                ) -> tuple[int, int]:
    """The input (h, w) of a batch: ``fixed_hw`` for a model with a fixed input, else the smallest stride-multiple
    shape holding every image scaled to ``imgsz`` (ultralytics' rect mode, the same scale for every image)."""
    if fixed_hw:
        return fixed_hw
    shapes = [rect_shape(im.shape[:2], imgsz, stride) for im in images]
    return max(s[0] for s in shapes), max(s[1] for s in shapes)


def prepare_one(image: np.ndarray, shape: tuple[int, int], imgsz: int | None) -> tuple[np.ndarray, Letterbox]:
    """One image of a batch of input ``shape`` as a 1 x 3 x h x w float32 RGB blob, and where it was placed
    (``imgsz`` None for a model with a fixed input: the largest scale that fits)."""
    check_image(image)
    padded, lb = letterbox(image, shape, imgsz)
    return cv2.dnn.blobFromImage(padded, scalefactor=1 / 255.0, swapRB=True), lb


def prepare_batch(images: Sequence[np.ndarray], imgsz: int, stride: int, fixed_hw: tuple[int, int] | None
                  ) -> tuple[np.ndarray, list[Letterbox]]:
    """One NCHW float32 RGB blob for a batch of BGR images and where each image was placed in it (input shape:
    :func:`batch_shape`)."""
    shape = batch_shape(images, imgsz, stride, fixed_hw)
    padded: list[np.ndarray] = []
    lbs: list[Letterbox] = []
    for im in images:
        check_image(im)
        p, lb = letterbox(im, shape, None if fixed_hw else imgsz)
        padded.append(p)
        lbs.append(lb)
    return cv2.dnn.blobFromImages(padded, scalefactor=1 / 255.0, swapRB=True), lbs


def decode_yolo(
    pred: np.ndarray,
    lb: Letterbox,
    conf: float,
    iou: float,
    class_names: Sequence[str],
    max_det: int = MAX_DET,
) -> sv.Detections:
    """Decode one image's ultralytics YOLO output ``(4 + nc, anchors)`` (cx, cy, w, h, class scores) into
    Detections in original image pixels, with class-aware NMS (best class per box)."""
    p = pred.T  # (anchors, 4 + nc)
    scores = p[:, 4:]
    class_id = scores.argmax(axis=1)
    confidence = scores[np.arange(len(p)), class_id]
    keep = confidence > conf
    if not keep.any():
        return make_detections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, int), class_names)
    p, class_id, confidence = p[keep], class_id[keep], confidence[keep]
    if len(p) > MAX_NMS:
        top = np.argsort(-confidence, kind="stable")[:MAX_NMS]
        p, class_id, confidence = p[top], class_id[top], confidence[top]
    cx, cy, bw, bh = p[:, 0], p[:, 1], p[:, 2], p[:, 3]
    xyxy = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1)
    idx = nms_batched(xyxy, confidence, class_id, iou)[:max_det]
    xyxy, confidence, class_id = xyxy[idx], confidence[idx], class_id[idx]
    # Back to original pixels.
    xyxy = (xyxy - np.array([lb.left, lb.top, lb.left, lb.top], np.float32)) / lb.gain
    h, w = lb.orig_hw
    xyxy[:, [0, 2]] = xyxy[:, [0, 2]].clip(0, w)
    xyxy[:, [1, 3]] = xyxy[:, [1, 3]].clip(0, h)
    return make_detections(xyxy, confidence, class_id, class_names)


def nms_batched(xyxy: np.ndarray, scores: np.ndarray, class_id: np.ndarray, iou: float) -> np.ndarray:
    """Class-aware greedy NMS; indices of kept boxes by decreasing score."""
    if len(xyxy) == 0:
        return np.zeros(0, dtype=np.int64)
    xywh = np.concatenate([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], axis=1).astype(np.float64)
    idx = cv2.dnn.NMSBoxesBatched(xywh.tolist(), scores.astype(float).tolist(), class_id.tolist(), 0.0, iou)
    idx = np.asarray(idx, dtype=np.int64).reshape(-1)
    return idx[np.argsort(-scores[idx], kind="stable")]


def make_detections(
    xyxy: np.ndarray, confidence: np.ndarray, class_id: np.ndarray, class_names: Sequence[str]
) -> sv.Detections:
    """Detections with ``class_id``, ``confidence`` and ``data['class_name']`` (np.array of str)."""
    class_id = np.asarray(class_id, dtype=int)
    names = np.array([_name(class_names, int(c)) for c in class_id], dtype=str)
    return sv.Detections(
        xyxy=np.asarray(xyxy, dtype=np.float32).reshape(-1, 4),
        confidence=np.asarray(confidence, dtype=np.float32),
        class_id=class_id,
        data={"class_name": names},
    )


def _name(class_names: Sequence[str], i: int) -> str:
    return class_names[i] if 0 <= i < len(class_names) else f"class{i}"


def check_image(im: np.ndarray) -> None:
    """Refuse what is not a BGR uint8 (H, W, 3) image, with a sentence saying what came instead."""
    if not isinstance(im, np.ndarray) or im.ndim != 3 or im.shape[2] != 3 or im.dtype != np.uint8:
        desc = f"{im.dtype} {im.shape}" if isinstance(im, np.ndarray) else type(im).__name__
        raise ValueError(f"detect() takes BGR uint8 images of shape (H, W, 3), got {desc}.")


def run_in_batches(run: Callable[[list[np.ndarray]], list[sv.Detections]], images: Sequence[np.ndarray],
                   fixed_batch: int | None) -> list[sv.Detections]:
    """``run`` over ``images`` in one call, or in chunks of ``fixed_batch`` when the model has a fixed batch."""
    images = list(images)
    if not images:
        return []
    step = fixed_batch or len(images)
    out: list[sv.Detections] = []
    for i in range(0, len(images), step):
        out.extend(run(images[i : i + step]))
    return out
