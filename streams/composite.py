"""Composite clips: a real background (video or still) with real object imagery pasted in for a time.

No labelled footage of piled goods, street-side drying, posters or goods outside shops exists that this
project can reach, so the left-object types are tested on composites: frames of a real CCTV clip (played
forwards and backwards to last as long as needed), a crop of a real photograph pasted into them between two
times (standing, or carried along a path: a transient), and lighting changes (a gain over time, on the
whole frame or a region: ramps, sudden switches, shadows), small camera shake and rain streaks. Everything is
generated in memory from a declarative :class:`CompositeSpec` (the ``composite:`` entry of an eval clip's
``source.yaml``, or a camera whose source is a ``*.composite.yaml`` file: :class:`CompositeSource`, the demo's
left-object camera); nothing is written as video.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
from pydantic import Field, model_validator

from nonsite.config.base import Section
from nonsite.streams.base import Frame, SourceError, decoder_params

SPEC_SUFFIX = ".composite.yaml"

Box = tuple[float, float, float, float]


class Paste(Section):
    """A crop of a real photograph pasted into the frames between ``start_s`` and ``end_s``."""

    image: str = Field(description="Photograph the object is cut from (path; ${NONSITE_MEDIA_DIR} allowed).")
    crop: tuple[float, float, float, float] | None = Field(
        None, description="x1, y1, x2, y2 of the object in the photograph, normalised 0..1; default the whole image."
    )
    at: tuple[float, float] = Field(description="Where the crop's bottom centre goes in the frame (normalised x, y).")
    width: float = Field(gt=0, le=1, description="Width of the pasted crop as a fraction of the frame width.")
    start_s: float = Field(ge=0, description="Seconds into the clip when the object appears.")
    end_s: float = Field(ge=0, description="Seconds into the clip when it is gone.")
    to: tuple[float, float] | None = Field(
        None, description="When set, the object moves in a straight line from `at` (start_s) to `to` (end_s): "
        "carried through, never standing."
    )

    @model_validator(mode="after")
    def _times(self) -> Paste:
        if self.end_s <= self.start_s:
            raise ValueError(f"end_s {self.end_s} is not after start_s {self.start_s}")
        return self


class Light(Section):
    """A brightness gain over time: piecewise linear through ``keys`` ([seconds, gain], ...); 1 before the first
    key, the last gain after the last one. Two keys a moment apart make a sudden change."""

    keys: list[tuple[float, float]] = Field(min_length=1, description="[[seconds, gain], ...] in time order.")
    region: tuple[float, float, float, float] | None = Field(
        None, description="x1, y1, x2, y2 (normalised) it applies to, with soft edges (a shadow); default the whole "
        "frame."
    )

    def gain(self, t: float) -> float:
        ts = [k[0] for k in self.keys]
        gs = [k[1] for k in self.keys]
        return float(np.interp(t, ts, gs, left=1.0, right=gs[-1]))


class CompositeSpec(Section):
    """A composite clip (see the module docstring)."""

    background: str = Field(description="Real video or still the clip is made of (path; ${NONSITE_MEDIA_DIR}).")
    background_start_s: float = Field(0.0, ge=0, description="Where in the background video the clip starts.")
    still: bool = Field(False, description="Use one frame of the background video (at background_start_s) as a still.")
    width: int | None = Field(
        None, ge=64, le=4096, description="Resize the background to this width (large photographs); default as is."
    )
    duration_s: float = Field(gt=0, le=3600, description="Length of the clip in seconds.")
    pastes: list[Paste] = Field(default_factory=list, description="Objects pasted in.")
    lights: list[Light] = Field(default_factory=list, description="Lighting changes (gains over time).")
    shake_px: float = Field(0.0, ge=0, le=20, description="Camera shake: random shift of up to this many pixels.")
    rain: float = Field(0.0, ge=0, le=1, description="Rain streaks: 0 none, 1 heavy.")
    noise: float = Field(
        2.0, ge=0, le=20, description="Sensor noise added to every frame (standard deviation, grey levels): a still "
        "background is never the same twice on a real camera."
    )
    seed: int = Field(0, description="Seed of the shake and rain (a clip is the same every run).")


def _read_background(path: Path, fps: float, start_s: float, duration_s: float, decode_threads: int = 1
                     ) -> list[np.ndarray]:
    """Frames of the background at ``fps`` (a still gives one frame); ``decode_threads`` as for a file camera
    (0: FFmpeg's choice)."""
    img = cv2.imread(str(path), cv2.IMREAD_COLOR) if path.suffix.lower() in (".jpg", ".jpeg", ".png") else None
    if img is not None:
        return [img]
    cap = cv2.VideoCapture(str(path), cv2.CAP_ANY, decoder_params(decode_threads))
    if not cap.isOpened():
        raise ValueError(f"{path}: not a video or image OpenCV can read")
    src_fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    frames: list[np.ndarray] = []
    k = 0
    next_t = start_s
    while len(frames) < max(1, int(duration_s * fps) + 1):
        ok, frame = cap.read()
        if not ok:
            break
        t = k / src_fps
        k += 1
        if t + 1e-9 >= next_t:
            frames.append(frame)
            next_t += 1.0 / fps
    cap.release()
    if not frames:
        raise ValueError(f"{path}: no frame at {start_s} s")
    return frames


def _pingpong(n: int, k: int) -> int:
    """Index ``k`` into a sequence of ``n`` frames played forwards, backwards, forwards..."""
    if n <= 1:
        return 0
    period = 2 * (n - 1)
    k %= period
    return k if k < n else period - k


def load_crop(image: str | Path, crop: tuple[float, float, float, float] | None) -> np.ndarray:
    img = cv2.imread(str(image), cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError(f"{image}: not an image OpenCV can read")
    if crop is None:
        return img
    h, w = img.shape[:2]
    x1, y1, x2, y2 = int(crop[0] * w), int(crop[1] * h), int(np.ceil(crop[2] * w)), int(np.ceil(crop[3] * h))
    if x2 - x1 < 2 or y2 - y1 < 2:
        raise ValueError(f"{image}: crop {crop} is empty")
    return img[y1:y2, x1:x2].copy()


def paste(frame: np.ndarray, obj: np.ndarray, bottom_centre: tuple[float, float], width: float) -> Box:
    """Paste ``obj`` (BGR) into ``frame`` in place, its bottom centre at the normalised point, ``width`` of the
    frame wide, with feathered edges; returns the pasted box in pixels."""
    h, w = frame.shape[:2]
    ow = max(2, int(round(width * w)))
    oh = max(2, int(round(obj.shape[0] * ow / obj.shape[1])))
    patch = cv2.resize(obj, (ow, oh), interpolation=cv2.INTER_AREA).astype(np.float32)
    cx, by = bottom_centre[0] * w, bottom_centre[1] * h
    x1, y1 = int(round(cx - ow / 2)), int(round(by - oh))
    fx1, fy1, fx2, fy2 = max(0, x1), max(0, y1), min(w, x1 + ow), min(h, y1 + oh)
    if fx2 <= fx1 or fy2 <= fy1:
        return (0.0, 0.0, 0.0, 0.0)
    feather = max(1, min(ow, oh) // 12)
    alpha = np.zeros((oh, ow), np.float32)
    alpha[feather:oh - feather, feather:ow - feather] = 1.0
    alpha = cv2.blur(alpha, (2 * feather + 1, 2 * feather + 1))[..., None]
    sub = patch[fy1 - y1:fy2 - y1, fx1 - x1:fx2 - x1]
    a = alpha[fy1 - y1:fy2 - y1, fx1 - x1:fx2 - x1]
    region = frame[fy1:fy2, fx1:fx2].astype(np.float32)
    frame[fy1:fy2, fx1:fx2] = np.clip(a * sub + (1 - a) * region, 0, 255).astype(np.uint8)
    return (float(fx1), float(fy1), float(fx2), float(fy2))


def apply_gain(frame: np.ndarray, gain: float, region: tuple[float, float, float, float] | None = None) -> np.ndarray:
    """``frame`` with its brightness multiplied by ``gain`` (in ``region`` only, soft-edged, when given)."""
    if region is None:
        return np.clip(frame.astype(np.float32) * gain, 0, 255).astype(np.uint8)
    h, w = frame.shape[:2]
    m = np.zeros((h, w), np.float32)
    x1, y1, x2, y2 = (int(round(v * s)) for v, s in zip(region, (w, h, w, h), strict=True))
    m[y1:y2, x1:x2] = 1.0
    k = max(3, (min(x2 - x1, y2 - y1) // 6) | 1)
    m = cv2.GaussianBlur(m, (k, k), 0)[..., None]
    return np.clip(frame.astype(np.float32) * (1 + (gain - 1) * m), 0, 255).astype(np.uint8)


def shift(frame: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """``frame`` moved by (dx, dy) pixels (camera shake), borders replicated."""
    m = np.float32([[1, 0, dx], [0, 1, dy]])
    return cv2.warpAffine(frame, m, (frame.shape[1], frame.shape[0]), borderMode=cv2.BORDER_REPLICATE)


def add_rain(frame: np.ndarray, rng: np.random.Generator, amount: float) -> np.ndarray:
    """Bright slanted streaks, different every frame."""
    h, w = frame.shape[:2]
    layer = np.zeros((h, w), np.float32)
    n = int(amount * w * h / 400)
    xs, ys = rng.integers(0, w, n), rng.integers(0, h, n)
    length = max(4, h // 30)
    for x, y in zip(xs, ys, strict=True):
        cv2.line(layer, (int(x), int(y)), (int(x) + length // 4, int(y) + length), 1.0, 1)
    layer = cv2.blur(layer, (3, 3))[..., None]
    return np.clip(frame.astype(np.float32) * (1 - 0.35 * layer) + 200 * 0.35 * layer, 0, 255).astype(np.uint8)


def media_paths(spec: CompositeSpec) -> list[str]:
    """The files a spec names (background first), as written."""
    return [spec.background, *(p.image for p in spec.pastes)]


def composite_frames(spec: CompositeSpec, fps: float, resolve: dict[str, Path] | None = None, *,
                     decode_threads: int = 1) -> Iterator[tuple[float, np.ndarray]]:
    """(seconds into the clip, BGR frame) at ``fps`` for ``duration_s``. ``resolve`` maps the spec's path strings
    to files (the caller expands variables); a path not in it is used as it is. ``decode_threads``: of the
    background video's decoder."""
    paths = resolve or {}
    bg = _read_background(paths.get(spec.background, Path(spec.background)), fps, spec.background_start_s,
                          spec.duration_s, decode_threads)
    if spec.still:
        bg = bg[:1]
    if spec.width is not None:
        bg = [cv2.resize(b, (spec.width, round(b.shape[0] * spec.width / b.shape[1])), interpolation=cv2.INTER_AREA)
              for b in bg]
    crops = [load_crop(paths.get(p.image, Path(p.image)), p.crop) for p in spec.pastes]
    rng = np.random.default_rng(spec.seed)
    n = int(np.floor(spec.duration_s * fps + 1e-9)) + 1
    for k in range(n):
        t = k / fps
        frame = bg[_pingpong(len(bg), k)].copy()
        for p, crop in zip(spec.pastes, crops, strict=True):
            if p.start_s <= t < p.end_s:
                at = p.at
                if p.to is not None:
                    f = (t - p.start_s) / (p.end_s - p.start_s)
                    at = (p.at[0] + f * (p.to[0] - p.at[0]), p.at[1] + f * (p.to[1] - p.at[1]))
                paste(frame, crop, at, p.width)
        for light in spec.lights:
            g = light.gain(t)
            if abs(g - 1.0) > 1e-6:
                frame = apply_gain(frame, g, light.region)
        if spec.shake_px > 0:
            dx, dy = rng.uniform(-spec.shake_px, spec.shake_px, 2)
            frame = shift(frame, float(dx), float(dy))
        if spec.rain > 0:
            frame = add_rain(frame, rng, spec.rain)
        if spec.noise > 0:
            frame = np.clip(frame.astype(np.float32) + rng.normal(0, spec.noise, frame.shape), 0, 255).astype(np.uint8)
        yield t, frame


class CompositeFile(Section):
    """A ``*.composite.yaml`` camera source: one ``composite:`` entry, as in an eval clip's source.yaml."""

    composite: CompositeSpec = Field(description="The composite clip the camera shows.")


class CompositeSource:
    """A camera whose frames are a composite clip generated from real media (``source.url`` a ``*.composite.yaml``
    file; its paths may use ``${NONSITE_MEDIA_DIR}`` and are relative to its folder). Like a file source it ends
    with the clip (``loop`` starts it again); frames are stamped from the time the clip was opened plus the clip
    time, and with ``realtime`` held back until then."""

    def __init__(self, camera_id: str, spec_path: str | os.PathLike[str], fps: float, *, loop: bool = False,
                 realtime: bool = False, decode_threads: int = 1) -> None:
        from nonsite.config.loader import ConfigError, load_model

        decoder_params(decode_threads)  # refuses a negative count here, not at the first frame
        self.camera_id, self.fps, self.loop, self.realtime = camera_id, fps, loop, realtime
        self.decode_threads = decode_threads
        path = Path(spec_path)
        try:
            self.spec = load_model(path, CompositeFile, what="a composite source must be a mapping with composite:"
                                   ).composite
        except ConfigError as e:
            raise SourceError(f"camera {camera_id}: {e}") from None
        self.files = {m: (p if p.is_absolute() else (path.parent / p).resolve()) for m in media_paths(self.spec)
                      for p in [Path(m)]}
        for m, f in self.files.items():
            if not f.is_file():
                raise SourceError(f"camera {camera_id}: {path}: composite: {m} not found ({f}); fix the path or set "
                                  "NONSITE_MEDIA_DIR")
        self._stop = threading.Event()

    def frames(self) -> Iterator[Frame]:
        start, index = time.time(), 0
        while not self._stop.is_set():
            for t, img in composite_frames(self.spec, self.fps, self.files, decode_threads=self.decode_threads):
                ts = start + index / self.fps
                if self.realtime and (wait := ts - time.time()) > 0 and self._stop.wait(wait):
                    return
                if self._stop.is_set():
                    return
                yield Frame(self.camera_id, index, ts, img)
                index += 1
                del t
            if not self.loop:
                return

    def close(self) -> None:
        self._stop.set()


__all__ = [
    "SPEC_SUFFIX", "CompositeFile", "CompositeSource", "CompositeSpec", "Light", "Paste", "add_rain", "apply_gain",
    "composite_frames", "load_crop", "media_paths", "paste", "shift",
]
