"""Edge side of evidence: write a violation's blobs (stills, annotated copies, close-up, clip) to the store.

Called by the pipeline worker before it publishes the :class:`~nonsite.bus.events.ViolationEvent`
that names these blobs by key and sha256 (claim-check). The sealer later adds ``manifest.json`` and
``manifest.sig`` to the same prefix.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import statistics
import tempfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from fractions import Fraction
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import av
import cv2
import numpy as np

from nonsite.bus.events import BoxRecord, EvidenceItem
from nonsite.evidence.package import ROLE_FILES, package_prefix
from nonsite.evidence.store import Store

log = logging.getLogger(__name__)

JPEG = "image/jpeg"
MP4 = "video/mp4"
CLOSEUP_MIN_SIDE = 256
CLOSEUP_MARGIN = 0.3  # of the box's width/height, on each side
STILLS_CLIP_FRAME_S = 1.0  # each still's duration when the clip falls back to the two stills
_MS = Fraction(1, 1000)  # the clip's time base


@dataclass
class Still:
    ts: float  # epoch seconds UTC
    image: np.ndarray  # BGR original, stored untouched
    boxes: list[BoxRecord] = field(default_factory=list)  # pixels of this image
    jpegs: dict[int, bytes] | None = None
    """The image's JPEG by quality, shared by every still of one picture (the edge worker's stills of one frame,
    which nobody changes): packages confirmed together (cars parked in a row) encode their common stills once.
    None: encoded for each package."""

    def jpeg(self, quality: int) -> bytes:
        """The image as JPEG at ``quality``: the shared encoding when there is one."""
        data = None if self.jpegs is None else self.jpegs.get(quality)
        if data is None:
            data = encode_jpeg(_bgr(self.image, "a still"), quality)
            if self.jpegs is not None:  # two threads may both encode it: the same bytes, and either is kept
                self.jpegs[quality] = data
        return data


@dataclass
class CameraMeta:
    id: str
    name: str = ""
    address: str = ""


def ascii_text(s: str) -> str:
    """``s`` made ASCII for cv2.putText (non-ASCII characters become ``\\uXXXX`` escapes)."""
    return s.encode("ascii", "backslashreplace").decode("ascii")


def _bgr(image: np.ndarray, what: str) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.size == 0:
        raise ValueError(f"{what} is not an image (expected a non-empty numpy array)")
    if image.dtype != np.uint8:
        raise ValueError(f"{what} has dtype {image.dtype}; expected uint8 BGR")
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.ndim == 3 and image.shape[2] == 3:
        return image
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    raise ValueError(f"{what} has shape {image.shape}; expected HxWx3 BGR")


def encode_jpeg(image: np.ndarray, quality: int = 92) -> bytes:
    ok, buf = cv2.imencode(".jpg", image, [int(cv2.IMWRITE_JPEG_QUALITY), int(quality)])
    if not ok:
        raise ValueError(f"OpenCV could not JPEG-encode an image of shape {image.shape}")
    return buf.tobytes()


def _zone(timezone: str) -> ZoneInfo:
    try:
        return ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone '{timezone}'; use an IANA name such as Asia/Shanghai") from None


def local_time_text(ts: float, tz: ZoneInfo) -> str:
    """``2024-05-01 14:03:22.123 UTC+08:00`` for epoch seconds ``ts`` in ``tz``."""
    t = datetime.fromtimestamp(ts, UTC).astimezone(tz)
    off = t.strftime("%z")  # +0800
    return f"{t.strftime('%Y-%m-%d %H:%M:%S')}.{t.microsecond // 1000:03d} UTC{off[:3]}:{off[3:]}"


# Distinct BGR colours, picked per class name so the same class keeps its colour across stills.
_PALETTE = [
    (0, 0, 255), (255, 128, 0), (0, 200, 0), (255, 0, 255), (0, 165, 255),
    (255, 255, 0), (128, 0, 255), (0, 255, 128), (80, 80, 255), (255, 80, 80),
]
_ZONE_COLOUR = (0, 255, 255)
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def _colour(name: str) -> tuple[int, int, int]:
    return _PALETTE[zlib.crc32(name.encode("utf-8")) % len(_PALETTE)]


def _label(img: np.ndarray, text: str, x: int, y: int, colour: tuple[int, int, int], scale: float, th: int) -> None:
    (tw, tht), base = cv2.getTextSize(text, _FONT, scale, th)
    h, w = img.shape[:2]
    x = max(0, min(x, w - tw - 4))
    top = y - tht - base - 4
    if top < 0:  # no room above the box: put the label inside it
        top = min(max(0, y), max(0, h - tht - base - 4))
    cv2.rectangle(img, (x, top), (x + tw + 4, top + tht + base + 4), colour, -1)
    luminance = 0.114 * colour[0] + 0.587 * colour[1] + 0.299 * colour[2]
    ink = (0, 0, 0) if luminance > 140 else (255, 255, 255)
    cv2.putText(img, text, (x + 2, top + tht + 2), _FONT, scale, ink, max(1, th // 2 + 1), cv2.LINE_AA)


def _banner(width: int, fields: list[str], scale: float, th: int) -> np.ndarray:
    """A black strip as wide as the image carrying ``fields`` packed into as few lines as fit."""
    sep = "  |  "
    pad = max(4, int(8 * scale))
    max_w = width - 2 * pad
    lines: list[str] = []
    cur = ""
    for f in fields:
        cand = f if not cur else cur + sep + f
        if cv2.getTextSize(cand, _FONT, scale, th)[0][0] <= max_w or not cur:
            cur = cand
        else:
            lines.append(cur)
            cur = f
    if cur:
        lines.append(cur)
    # A single field wider than the image (a very long id) is cut, keeping its start.
    fitted = []
    for line in lines:
        while len(line) > 4 and cv2.getTextSize(line, _FONT, scale, th)[0][0] > max_w:
            line = line[:-2] + "~"
        fitted.append(line)
    (_, lh), base = cv2.getTextSize("Ag", _FONT, scale, th)
    step = lh + base + pad
    strip = np.zeros((pad + step * len(fitted), width, 3), np.uint8)
    for i, line in enumerate(fitted):
        cv2.putText(strip, line, (pad, pad + lh + i * step), _FONT, scale, (255, 255, 255), th, cv2.LINE_AA)
    return strip


def annotate(
    image: np.ndarray,
    boxes: list[BoxRecord],
    zone_polygon: list[tuple[float, float]] | None,
    banner_fields: list[str],
) -> np.ndarray:
    """A copy of ``image`` with the zone outline, labelled boxes, and a text banner added below it.

    The banner is a strip under the picture, so no pixel of the scene is covered and box coordinates
    stay valid on the annotated copy.
    """
    img = image.copy()
    h, w = img.shape[:2]
    th = max(1, round(min(h, w) / 360))
    scale = float(np.clip(min(h, w) / 900, 0.4, 1.4))
    if zone_polygon and len(zone_polygon) >= 2:
        pts = np.array(
            [(round(float(np.clip(x, 0, 1)) * (w - 1)), round(float(np.clip(y, 0, 1)) * (h - 1)))
             for x, y in zone_polygon],
            np.int32,
        )
        cv2.polylines(img, [pts.reshape(-1, 1, 2)], True, _ZONE_COLOUR, th + 1, cv2.LINE_AA)
    for b in boxes:
        x1, y1, x2, y2 = (int(round(v)) for v in b.xyxy)
        x1, x2 = sorted((int(np.clip(x1, 0, w - 1)), int(np.clip(x2, 0, w - 1))))
        y1, y2 = sorted((int(np.clip(y1, 0, h - 1)), int(np.clip(y2, 0, h - 1))))
        colour = _colour(b.class_name)
        cv2.rectangle(img, (x1, y1), (x2, y2), colour, th + 1)
        text = ascii_text(b.class_name)
        if b.track_id is not None:
            text += f" #{b.track_id}"
        text += f" {b.confidence:.2f}"
        _label(img, text, x1, y1, colour, scale, th)
    strip = _banner(w, [ascii_text(f) for f in banner_fields], float(np.clip(w / 1100, 0.4, 1.2)), th)
    return np.vstack([img, strip])


def closeup_crop(image: np.ndarray, xyxy: tuple[float, float, float, float]) -> np.ndarray:
    """The region ``xyxy`` of ``image`` with a margin, upscaled to ``CLOSEUP_MIN_SIDE`` on its short side when
    smaller."""
    h, w = image.shape[:2]
    x1, y1, x2, y2 = (float(v) for v in xyxy)
    x1, x2 = sorted((x1, x2))
    y1, y2 = sorted((y1, y2))
    mx = max(12.0, (x2 - x1) * CLOSEUP_MARGIN)
    my = max(12.0, (y2 - y1) * CLOSEUP_MARGIN)
    cx1, cy1 = int(max(0, np.floor(x1 - mx))), int(max(0, np.floor(y1 - my)))
    cx2, cy2 = int(min(w, np.ceil(x2 + mx))), int(min(h, np.ceil(y2 + my)))
    if cx2 - cx1 < 2 or cy2 - cy1 < 2:
        raise ValueError(f"close-up box {tuple(xyxy)} lies outside the {w}x{h} confirm still")
    crop = image[cy1:cy2, cx1:cx2]
    short = min(crop.shape[:2])
    if short < CLOSEUP_MIN_SIDE:
        f = CLOSEUP_MIN_SIDE / short
        crop = cv2.resize(crop, None, fx=f, fy=f, interpolation=cv2.INTER_CUBIC)
    return np.ascontiguousarray(crop)


def _even(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``img`` resized to ``size`` (w, h of the first frame) then padded to even dimensions (yuv420p)."""
    w, h = size
    if (img.shape[1], img.shape[0]) != (w, h):
        img = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
    if w % 2 or h % 2:
        img = cv2.copyMakeBorder(img, 0, h % 2, 0, w % 2, cv2.BORDER_REPLICATE)
    return img


X264_PARAMS = "bframes=0"
"""No B-frames in clip.mp4. A clip encoded while its package waits keeps an open encoder per waiting violation, and
x264's B-frame machinery is half of one: at 1620 x 1080, superfast, 100 MiB -> 48 MiB per open encoder, 15 % less
CPU, a file 3-5 % larger (60 frames of a busy street, this box, 2026-12-06). A clip without B-frames also plays and
seeks frame-accurately in every browser (no reordering)."""


class ClipEncoder:
    """clip.mp4 made frame by frame: H.264 (yuv420p, CRF 21, x264 ``preset``, no B-frames) of BGR frames pushed as
    (epoch seconds, image) in time order, into a temporary file until :meth:`close` returns the video (or
    :meth:`discard` drops it).
    Frames are sized like the first one. Presentation times follow the timestamps (millisecond time base, variable
    frame rate); the moov atom is placed first (faststart) so browsers start playing before the whole file arrives.
    One thread at a time."""

    def __init__(self, preset: str = "superfast") -> None:
        self.preset = preset
        self.frames = 0
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._container: Any = None
        self._stream: Any = None
        self._t0 = 0.0
        self._size = (0, 0)
        self._durations: dict[int, int] = {}
        self._intervals: list[int] = []
        self._last_pts: int | None = None

    def _open(self, ts: float, img: np.ndarray) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="nonsite-clip-")
        self._t0, self._size = ts, (img.shape[1], img.shape[0])
        self._container = av.open(os.path.join(self._tmp.name, "clip.mp4"), mode="w", format="mp4",
                                  options={"movflags": "+faststart"})
        stream = self._container.add_stream("libx264", rate=30, options={"crf": "21", "preset": self.preset,
                                                                          "x264-params": X264_PARAMS})
        stream.width = self._size[0] + self._size[0] % 2
        stream.height = self._size[1] + self._size[1] % 2
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = _MS
        stream.time_base = _MS
        self._stream = stream

    def _mux(self, packets: list[av.Packet]) -> None:
        for p in packets:
            if p.pts is not None and p.pts in self._durations:
                p.duration = self._durations[p.pts]
            self._container.mux(p)

    def push(self, ts: float, img: np.ndarray) -> None:
        if self._container is None:
            self._open(ts, img)
        pts = int(round((ts - self._t0) * 1000))
        if self._last_pts is not None:
            pts = max(pts, self._last_pts + 1)  # strictly increasing even for equal timestamps
            self._durations[self._last_pts] = pts - self._last_pts
            self._intervals.append(pts - self._last_pts)
        # OpenCV's BGR -> I420 (BT.601, limited range, as swscale's default for bgr24 -> yuv420p) takes a third of
        # the time swscale takes when the encoder converts a bgr24 frame itself: ~3 ms of ~30 per 1080p frame.
        frame = av.VideoFrame.from_ndarray(cv2.cvtColor(_even(img, self._size), cv2.COLOR_BGR2YUV_I420),
                                           format="yuv420p")
        frame.pts = pts
        frame.time_base = _MS
        self._last_pts = pts
        self.frames += 1
        self._mux(self._stream.encode(frame))

    def close(self, last_frame_s: float | None = None) -> bytes:
        """The video; the last frame lasts ``last_frame_s`` (default: the median interval, or 1 s)."""
        if self._container is None or self._last_pts is None:
            raise ValueError("a clip needs at least one frame")
        try:
            if last_frame_s is not None:
                self._durations[self._last_pts] = max(1, int(round(last_frame_s * 1000)))
            else:
                self._durations[self._last_pts] = int(statistics.median(self._intervals)) if self._intervals else 1000
            self._mux(self._stream.encode(None))
            self._container.close()
            self._container = None
            with open(os.path.join(self._tmp.name, "clip.mp4"), "rb") as f:  # type: ignore[union-attr]
                return f.read()
        finally:
            self.discard()

    def discard(self) -> None:
        """Drop the video (and its temporary file)."""
        if self._container is not None:
            with contextlib.suppress(Exception):
                self._container.close()
            self._container = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


def encode_clip(frames: Iterator[tuple[float, np.ndarray]] | list[tuple[float, np.ndarray]],
                last_frame_s: float | None = None, preset: str = "superfast") -> bytes:
    """clip.mp4 of BGR ``frames`` given as (epoch seconds, image) in time order (:class:`ClipEncoder`)."""
    encoder = ClipEncoder(preset)
    try:
        for ts, img in frames:
            encoder.push(ts, img)
        return encoder.close(last_frame_s)
    finally:
        encoder.discard()


def decode_clip_frame(ts: float, data: bytes) -> np.ndarray | None:
    """A clip frame's JPEG as BGR; None (logged) when it does not decode: the clip skips it."""
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        log.warning("skipping a clip frame at ts=%.3f that does not decode as JPEG (%d bytes)", ts, len(data))
    return img


def _decoded_clip(clip: list[tuple[float, bytes]]) -> Iterator[tuple[float, np.ndarray]]:
    """Decode the JPEG frames one by one (never the whole clip in memory), in time order; skip corrupt ones."""
    for ts, data in sorted(clip, key=lambda c: c[0]):
        img = decode_clip_frame(ts, data)
        if img is not None:
            yield ts, img


def write_package_blobs(
    store: Store,
    *,
    event_id: str,
    violation_type: str,
    camera: CameraMeta,
    zone_id: str,
    zone_polygon: list[tuple[float, float]] | None,
    onset: Still,
    confirm: Still,
    closeup_xyxy: tuple[float, float, float, float],
    clip: Sequence[tuple[float, bytes]] = (),
    sequence: int,
    timezone: str,
    jpeg_quality: int = 92,
    extra_stills: Sequence[tuple[str, Still]] = (),
    extra_images: Callable[[], Sequence[tuple[str, np.ndarray]]] | None = None,
    clip_preset: str = "superfast",
    video: Callable[[], bytes | None] | None = None,
) -> list[EvidenceItem]:
    """Write the event's blobs under ``events/<event_id>/`` and describe them.

    Blobs: ``onset.jpg`` / ``confirm.jpg`` (the untouched frames, JPEG), ``onset_annotated.jpg`` /
    ``confirm_annotated.jpg`` (boxes, zone outline and a banner with local time, camera, zone, type and
    sequence number), ``closeup.jpg`` (crop of the confirm frame) and ``clip.mp4`` (H.264; the two stills
    as a 2-frame clip when ``clip`` holds no decodable frame).

    ``extra_stills``: more overview stills as (role, still), e.g. ``("overview_2", still)`` taken during the
    episode so that two overview stills lie at least a set time apart; each is written as ``<role>.jpg``
    and ``<role>_annotated.jpg``. ``extra_images``: a function giving more images as (role, image), written as they
    are, e.g. ``[("plate", crop)]``: called last, after the clip, so that work they wait for (the plate reading,
    done ahead on another thread) goes on meanwhile; its roles are checked then. Roles must be listed in
    :data:`~nonsite.evidence.package.ROLE_FILES`. ``clip_preset``: the x264 preset of the clip
    (``evidence.clip_preset``). ``video``: makes clip.mp4 instead of :func:`clip_video` of ``clip`` (the edge
    worker's :class:`~nonsite.pipeline.worker.EpisodeClip`, encoded while the package waited for its post-roll);
    None from it, as from :func:`clip_video`, means no clip frame decodes.
    """
    prefix = package_prefix(event_id)
    tz = _zone(timezone)
    onset_img = _bgr(onset.image, "the onset still")
    confirm_img = _bgr(confirm.image, "the confirm still")
    for role, _ in extra_stills:
        if role not in ROLE_FILES or f"{role}_annotated" not in ROLE_FILES:
            raise ValueError(f"unknown still role {role!r}; add it and {role}_annotated to ROLE_FILES")

    extras = [(role, s, _bgr(s.image, f"the {role} still")) for role, s in extra_stills]
    items: list[EvidenceItem] = []

    def put(role: str, data: bytes, content_type: str) -> None:
        key = prefix + ROLE_FILES[role]
        store.put(key, data, content_type)
        items.append(
            EvidenceItem(
                role=role, key=key, sha256=hashlib.sha256(data).hexdigest(), bytes=len(data), content_type=content_type
            )
        )

    # Build everything that can fail on bad input before writing anything.
    closeup = closeup_crop(confirm_img, closeup_xyxy)

    def fields(still: Still, label: str) -> list[str]:
        return [
            local_time_text(still.ts, tz),
            f"CAM {camera.id}",
            f"ZONE {zone_id}",
            violation_type.upper(),
            f"SEQ {sequence:06d}",
            label,
        ]

    put("onset", onset.jpeg(jpeg_quality), JPEG)
    put("confirm", confirm.jpeg(jpeg_quality), JPEG)
    put("onset_annotated",
        encode_jpeg(annotate(onset_img, onset.boxes, zone_polygon, fields(onset, "ONSET")), jpeg_quality), JPEG)
    put("confirm_annotated",
        encode_jpeg(annotate(confirm_img, confirm.boxes, zone_polygon, fields(confirm, "CONFIRM")), jpeg_quality),
        JPEG)
    put("closeup", encode_jpeg(closeup, jpeg_quality), JPEG)
    for role, still, img in extras:
        put(role, still.jpeg(jpeg_quality), JPEG)
        put(f"{role}_annotated",
            encode_jpeg(annotate(img, still.boxes, zone_polygon, fields(still, role.upper())), jpeg_quality), JPEG)

    mp4 = clip_video(list(clip), clip_preset) if video is None else video()
    if mp4 is None:
        if clip or video is not None:
            log.warning("event %s: no clip frame decodes; writing the two stills as the clip", event_id)
        mp4 = encode_clip([(0.0, onset_img), (STILLS_CLIP_FRAME_S, confirm_img)], last_frame_s=STILLS_CLIP_FRAME_S,
                          preset=clip_preset)
    put("clip", mp4, MP4)
    images = list(extra_images()) if extra_images is not None else []
    for role, _ in images:
        if role not in ROLE_FILES:
            raise ValueError(f"unknown evidence role {role!r}; add it to ROLE_FILES")
    for role, img in [(role, _bgr(img, f"the {role} image")) for role, img in images]:  # all checked, then written
        put(role, encode_jpeg(img, jpeg_quality), JPEG)
    return items


def clip_video(clip: list[tuple[float, bytes]], preset: str = "superfast") -> bytes | None:
    """clip.mp4 of the JPEG frames of ``clip`` (corrupt frames skipped); None when no frame decodes."""
    decoded = _decoded_clip(clip)
    first = next(decoded, None)
    if first is None:
        return None

    def frames() -> Iterator[tuple[float, np.ndarray]]:
        yield first
        yield from decoded

    return encode_clip(frames(), preset=preset)
