"""`nonsite eval`: run the pipeline over a labelled dataset of clips and score its alerts.

Dataset layout (one folder per clip)::

    DIR/<clip>/video.mp4 | video.avi   the clip (or see source.yaml)
    DIR/<clip>/camera.yaml             one camera block, same schema as cameras[] of the main config
                                       (zones, rules overrides, fps); id and source may be left out
    DIR/<clip>/truth.yaml              episodes: [{type, zone, start_s, end_s}, ...]  ([] = no violation)
    DIR/<clip>/source.yaml             optional, when there is no video.* file: video: PATH, or
                                       image: PATH + duration_s (a still repeated: a perfectly stationary
                                       scene), or composite: a clip generated in memory from real media
                                       (:mod:`nonsite.pipeline.composite`: a background with object crops
                                       pasted in for a time, light changes, shake, rain); start_time: when
                                       the clip was recorded (schedules use it)

Paths in source.yaml and camera.yaml may use ``${NONSITE_MEDIA_DIR}`` and are relative to the clip folder.

Each clip runs through the production path: detector -> :class:`~nonsite.pipeline.worker.EdgeWorker`
(class merge, ByteTrack, appearance, :class:`~nonsite.pipeline.rules.RuleEngine`, evidence into a scratch
store, publish on an embedded bus); frames carry video time. A published event matches an episode of the
same type and zone whose [start_s, end_s] contains its confirmation time (each episode at most once);
unmatched events are false alerts, unmatched episodes misses.

Motion gating (``edge.gating``, ``nonsite eval --gating on|off``) applies as on the edge: the clip's frames the
gate holds back are processed with the last detections; the scores report the detector calls and gated share.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import supervision as sv
from pydantic import Field, ValidationInfo, field_validator, model_validator

from nonsite.bus.events import ViolationEvent
from nonsite.config import CameraConfig, ConfigError, NonsiteConfig
from nonsite.config.base import Section
from nonsite.config.loader import load_model
from nonsite.models import CameraDetectors
from nonsite.models.base import Detector
from nonsite.pipeline.composite import CompositeSpec, composite_frames, media_paths
from nonsite.pipeline.gating import gate_for
from nonsite.pipeline.rules import zone_rule_config
from nonsite.pipeline.violations import models, violation_types, watched_by
from nonsite.streams.base import Frame

VIDEO_NAMES = ("video.mp4", "video.avi")
DEFAULT_START = "2024-05-06T10:00:00+08:00"


class EvalError(Exception):
    """A dataset problem the user can fix; ``str()`` is the one-line message."""


class TruthEpisode(Section):
    type: str = Field(description="Violation type: a registered type's name, e.g. sidewalk_parking.")
    zone: str = Field(description="Zone id in the clip's camera.yaml where it happens.")
    start_s: float = Field(
        ge=0, description="Seconds into the clip when the violation begins (the dwell counts from here)."
    )
    end_s: float = Field(ge=0, description="Seconds into the clip when it ends (or the clip's end).")

    @field_validator("type")
    @classmethod
    def _type(cls, v: str) -> str:
        names = [t.name for t in violation_types()]
        if v not in names:
            raise ValueError(f"unknown type '{v}'; use one of {', '.join(names)}")
        return v

    @model_validator(mode="after")
    def _zone_and_times(self, info: ValidationInfo) -> TruthEpisode:
        if self.end_s < self.start_s:
            raise ValueError(f"end_s {self.end_s} is before start_s {self.start_s}; swap them")
        zones: dict[str, str | None] = (info.context or {}).get("zones", {})
        if zones and self.zone not in zones:
            raise ValueError(f"zone '{self.zone}' is not in camera.yaml (zones: {', '.join(sorted(zones))})")
        if zones and zones[self.zone] != self.type:
            raise ValueError(f"zone '{self.zone}' is watched by {zones[self.zone] or 'no rule'}, not {self.type}; "
                             "fix the type or the zone")
        return self


class Truth(Section):
    episodes: list[TruthEpisode] = Field(description="The violations in the clip; an empty list means none.")


class ClipSource(Section):
    video: str | None = Field(None, description="Video file of the clip (relative to the clip folder).")
    image: str | None = Field(None, description="A still image repeated for duration_s (a stationary scene).")
    duration_s: float | None = Field(None, gt=0, le=3600, description="Length of a still-image clip in seconds.")
    composite: CompositeSpec | None = Field(
        None, description="A composite clip generated from real media at run time (nothing is stored as video)."
    )
    start_time: datetime | None = Field(
        None, description="When the clip's first frame was recorded (ISO 8601 with a UTC offset); schedules "
        f"are evaluated at this time plus the video time. Default {DEFAULT_START}.",
    )

    @model_validator(mode="after")
    def _one_source(self) -> ClipSource:
        if sum(x is not None for x in (self.video, self.image, self.composite)) != 1:
            raise ValueError("give exactly one of video:, image: or composite:")
        if self.image is not None and self.duration_s is None:
            raise ValueError("a still-image clip needs duration_s (seconds to repeat it)")
        if self.video is not None and self.duration_s is not None:
            raise ValueError("duration_s is for image: clips; a video lasts as long as it lasts")
        if self.start_time is not None and self.start_time.tzinfo is None:
            raise ValueError("start_time needs a UTC offset, e.g. 2024-05-06T19:30:00+08:00")
        return self


@dataclass
class Clip:
    name: str
    folder: Path
    camera: CameraConfig
    truth: list[TruthEpisode]
    video: Path | None
    image: Path | None
    duration_s: float | None
    start_ts: float
    composite: CompositeSpec | None = None
    media: dict[str, Path] = field(default_factory=dict)
    """The composite's files as written in source.yaml -> where they are."""


def _expand_path(value: str, folder: Path, where: str) -> Path:
    def sub(m: re.Match[str]) -> str:
        name, default = m["name"], m["default"]
        if name in os.environ:
            return os.environ[name]
        if default is not None:
            return default
        raise EvalError(f"{where}: environment variable {name} is not set; export {name}=...")

    p = Path(re.sub(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}", sub, value))
    return p if p.is_absolute() else (folder / p).resolve()


def _camera_id(name: str) -> str:
    cid = re.sub(r"[^A-Za-z0-9_.-]", "-", name).strip("-.") or "clip"
    return cid[:64]


def load_clip(folder: Path) -> Clip:
    """Read one clip folder; :class:`ConfigError` / :class:`EvalError` name the file, line and fix."""
    cam_file, truth_file, src_file = folder / "camera.yaml", folder / "truth.yaml", folder / "source.yaml"
    for f in (cam_file, truth_file):
        if not f.is_file():
            raise EvalError(f"{folder}: {f.name} is missing; every clip folder needs camera.yaml and truth.yaml")
    video = next((folder / n for n in VIDEO_NAMES if (folder / n).is_file()), None)
    src = load_model(src_file, ClipSource) if src_file.is_file() else None
    image = duration = None
    composite, files = None, {}
    if video is None and src is not None:
        if src.video is not None:
            video = _expand_path(src.video, folder, f"{src_file}: video")
        elif src.composite is not None:
            composite, duration = src.composite, src.composite.duration_s
            files = {m: _expand_path(m, folder, f"{src_file}: composite") for m in media_paths(composite)}
            for m, path in files.items():
                if not path.is_file():
                    raise EvalError(f"{src_file}: composite: {m} not found ({path}); fix the path or set "
                                    "NONSITE_MEDIA_DIR")
            image = files[composite.background]
        else:
            assert src.image is not None
            image, duration = _expand_path(src.image, folder, f"{src_file}: image"), src.duration_s
    camera = load_model(cam_file, models().camera, what="camera.yaml must be one camera block (a mapping)",
                        defaults={"id": _camera_id(folder.name), "source": {"url": str(video or image or "")}})
    zones = {z.id: _watcher(z.kind) for z in camera.zones}
    truth = load_model(truth_file, Truth, what="truth.yaml must be a mapping with episodes:",
                       context={"zones": zones})
    if video is None and image is None:
        url = camera.source.url
        if not url or "://" in url:
            raise EvalError(f"{folder}: no clip: add video.mp4 (or .avi), a source.yaml with video: or image:, "
                            "or a file path as source.url in camera.yaml")
        video = _expand_path(url, folder, f"{cam_file}: source.url")
    media = video or image
    assert media is not None
    if not media.is_file():
        raise EvalError(f"{folder}: clip media not found: {media}; fix the path or set NONSITE_MEDIA_DIR")
    camera.source.url = str(media)
    start = (src.start_time if src and src.start_time else datetime.fromisoformat(DEFAULT_START)).timestamp()
    return Clip(folder.name, folder, camera, truth.episodes, video, image, duration, start, composite, files)


def load_dataset(root: Path) -> list[Clip]:
    if not root.is_dir():
        raise EvalError(f"dataset folder not found: {root}; pass --dataset DIR with one folder per clip")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and (p / "truth.yaml").exists())
    if not folders:
        raise EvalError(f"{root}: no clip folders (a folder per clip with camera.yaml and truth.yaml)")
    return [load_clip(f) for f in folders]


# -- running --------------------------------------------------------------------------------------


@dataclass
class Alert:
    type: str
    zone: str
    onset_s: float
    confirm_s: float
    event_id: str
    episode: int | None = None
    """Index of the matched truth episode; None = false alert."""
    delay_s: float | None = None
    """confirm_s - (episode start + dwell) when matched."""


@dataclass
class ClipResult:
    name: str
    media: str
    frames: int
    seconds: float
    episodes: list[dict[str, Any]]
    alerts: list[Alert]
    dwell_s: dict[str, float] = field(default_factory=dict)
    seconds_run: float = 0.0
    detector_calls: int = 0
    """Frames the detector was asked about (a still-image clip's repeated frame is computed once but counted
    each time, as a camera would detect it); with motion gating, the frames the gate let through."""
    gated: int = 0
    """Frames the motion gate held back (processed with the last detections)."""
    model: str = ""
    """The weights the clip's camera ran on."""
    frame_s: float = 0.0
    """Seconds between the clip's frames (1 / the camera's fps): how finely its alerts' times are measured."""

    @property
    def tp(self) -> int:
        return sum(a.episode is not None for a in self.alerts)

    @property
    def fp(self) -> int:
        return sum(a.episode is None for a in self.alerts)

    @property
    def fn(self) -> int:
        return len(self.episodes) - self.tp


def clip_frames(clip: Clip) -> Iterator[Frame]:
    """The clip's frames at the camera's fps, stamped with video time from ``clip.start_ts``."""
    fps = clip.camera.fps
    if clip.composite is not None:
        try:
            for t, img in composite_frames(clip.composite, fps, clip.media):
                yield Frame(clip.camera.id, int(round(t * fps)), clip.start_ts + t, img)
        except ValueError as e:
            raise EvalError(f"{clip.folder}: composite: {e}") from None
        return
    if clip.image is not None:
        img = cv2.imread(str(clip.image), cv2.IMREAD_COLOR)
        if img is None:
            raise EvalError(f"{clip.folder}: {clip.image} is not an image OpenCV can read")
        n = int(np.floor((clip.duration_s or 0) * fps + 1e-9)) + 1
        for k in range(n):
            yield Frame(clip.camera.id, k, clip.start_ts + k / fps, img)
        return
    from nonsite.streams.opencv_source import FileSource

    assert clip.video is not None
    first: float | None = None
    for f in FileSource(clip.camera.id, clip.video, fps=fps).frames():
        if first is None:
            first = f.ts
        yield Frame(f.camera_id, f.index, clip.start_ts + (f.ts - first), f.image)


def _watcher(kind: str) -> str | None:
    vt = watched_by(kind)
    return vt.name if vt else None


def run_clip(clip: Clip, cfg: NonsiteConfig, detector: Detector | CameraDetectors, work: Path) -> ClipResult:
    """Run one clip through the edge worker; evidence goes to ``work``. With :class:`CameraDetectors` the clip's
    camera gets the weights its zone kinds call for (``detector.zone_models``), as on the edge."""
    from nonsite.bus.embedded import EmbeddedBus
    from nonsite.evidence.local import LocalStore
    from nonsite.pipeline.edge import model_info
    from nonsite.pipeline.worker import EdgeWorker, SequenceCounter

    if isinstance(detector, CameraDetectors):
        detector = detector.for_kinds(z.kind for z in clip.camera.zones)
    work.mkdir(parents=True, exist_ok=True)
    bus = EmbeddedBus(work / "bus.sqlite")
    worker = EdgeWorker(clip.camera, cfg, LocalStore(work / "evidence"), bus, model_info(detector),
                        SequenceCounter(work / "sequence.json"))
    events: list[ViolationEvent] = []
    frames, last_ts, cached = 0, clip.start_ts, None
    gate = gate_for(clip.camera, cfg)
    calls = 0
    started = time.monotonic()
    try:
        for frame in clip_frames(clip):
            dets: sv.Detections | None = None
            if gate is not None and not gate.decide(frame.image, frame.ts):
                pass  # gated: the worker reuses the last detections
            elif clip.image is not None and clip.composite is None:  # the same picture every frame: detect once
                calls += 1
                if cached is None:
                    cached = detector.detect([frame.image])[0]
                dets = cached[np.arange(len(cached))]
            else:
                calls += 1
                dets = detector.detect([frame.image])[0]
            events += worker.process(frame, dets)
            frames += 1
            last_ts = frame.ts
        events += worker.finish()
    finally:
        bus.close()
    seconds = clip.duration_s if clip.image is not None else (last_ts - clip.start_ts + 1.0 / clip.camera.fps)
    dwell = {z.id: zone_rule_config(clip.camera, cfg.rules, z, rule).dwell_s
             for z in clip.camera.zones if (rule := _watcher(z.kind)) is not None}
    alerts = [Alert(e.type, e.zone_id, round(e.started_at.timestamp() - clip.start_ts, 3),
                    round(e.confirmed_at.timestamp() - clip.start_ts, 3), e.event_id) for e in events]
    result = ClipResult(clip.name, str(clip.camera.source.url), frames, round(float(seconds or 0.0), 3),
                        [ep.model_dump() for ep in clip.truth], alerts, dwell,
                        round(time.monotonic() - started, 2), calls, frames - calls, detector.weights.name,
                        1.0 / clip.camera.fps)
    match(result)
    return result


def match(result: ClipResult) -> None:
    """Match alerts to episodes: same type and zone, confirmation inside [start_s, end_s], each episode once
    (alerts in time order take the open episode that ends first: the most matches possible)."""
    used: set[int] = set()
    for a in sorted(result.alerts, key=lambda a: a.confirm_s):
        cands = [
            (ep["end_s"], i) for i, ep in enumerate(result.episodes)
            if i not in used and ep["type"] == a.type and ep["zone"] == a.zone
            and ep["start_s"] - 1e-6 <= a.confirm_s <= ep["end_s"] + 1e-6
        ]
        if cands:
            _, i = min(cands)
            used.add(i)
            a.episode = i
            ep = result.episodes[i]
            a.delay_s = round(a.confirm_s - (ep["start_s"] + result.dwell_s.get(ep["zone"], 0.0)), 3)


# -- scoring --------------------------------------------------------------------------------------


def score(results: list[ClipResult]) -> dict[str, Any]:
    """Per type and overall: episodes, TP, FP, FN, precision, recall, false alerts per camera-hour, median delay."""
    hours = sum(r.seconds for r in results) / 3600.0
    rows: dict[str, Any] = {}
    for t in (*(vt.name for vt in violation_types()), "all"):
        eps = sum(1 for r in results for e in r.episodes if t in ("all", e["type"]))
        alerts = [a for r in results for a in r.alerts if t in ("all", a.type)]
        tp = sum(a.episode is not None for a in alerts)
        fp = len(alerts) - tp
        delays = [a.delay_s for a in alerts if a.delay_s is not None]
        rows[t] = {
            "episodes": eps, "tp": tp, "fp": fp, "fn": eps - tp,
            "precision": round(tp / (tp + fp), 4) if tp + fp else None,
            "recall": round(tp / eps, 4) if eps else None,
            "false_alerts_per_camera_hour": round(fp / hours, 2) if hours else None,
            "median_delay_s": round(statistics.median(delays), 3) if delays else None,
        }
    frames = sum(r.frames for r in results)
    gated = sum(r.gated for r in results)
    return {"camera_hours": round(hours, 5), "clips": len(results), "per_type": rows,
            "frames": frames, "detector_calls": sum(r.detector_calls for r in results),
            "gated_share": round(gated / frames, 4) if frames else None}


def _fmt(v: float | int | None, spec: str = "") -> str:
    return "-" if v is None else format(v, spec)


def report_lines(results: list[ClipResult], scores: dict[str, Any]) -> list[str]:
    out = [f"{'clip':<34} {'frames':>6} {'video s':>8} {'episodes':>8} {'alerts':>6} {'TP':>3} {'FP':>3} {'FN':>3}"]
    for r in results:
        out.append(f"{r.name:<34} {r.frames:>6} {r.seconds:>8.1f} {len(r.episodes):>8} {len(r.alerts):>6} "
                   f"{r.tp:>3} {r.fp:>3} {r.fn:>3}")
    out.append("")
    out.append(f"{'type':<17} {'episodes':>8} {'TP':>4} {'FP':>4} {'FN':>4} {'precision':>9} {'recall':>7} "
               f"{'FA/cam-h':>9} {'median delay s':>15}")
    for t, row in scores["per_type"].items():
        out.append(f"{t:<17} {row['episodes']:>8} {row['tp']:>4} {row['fp']:>4} {row['fn']:>4} "
                   f"{_fmt(row['precision'], '.3f'):>9} {_fmt(row['recall'], '.3f'):>7} "
                   f"{_fmt(row['false_alerts_per_camera_hour'], '.1f'):>9} {_fmt(row['median_delay_s'], '.2f'):>15}")
    out.append(f"{scores['clips']} clips, {scores['camera_hours'] * 3600:.1f} s of video "
               f"({scores['camera_hours']:.4f} camera-hours)")
    if "detector_calls" in scores:
        out.append(f"detector calls: {scores['detector_calls']} for {scores['frames']} frames "
                   f"(gated share {_fmt(scores['gated_share'], '.1%')})")
    return out


def evaluate(
    clips: list[Clip],
    cfg: NonsiteConfig,
    detector: Detector | CameraDetectors,
    *,
    evidence_dir: Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> tuple[list[ClipResult], dict[str, Any]]:
    """Run and score the clips of a dataset; evidence packages are kept under ``evidence_dir`` when given."""
    results = []
    with tempfile.TemporaryDirectory(prefix="nonsite-eval-") as tmp:
        base = evidence_dir or Path(tmp)
        for clip in clips:
            r = run_clip(clip, cfg, detector, base / clip.name)
            results.append(r)
            if progress:
                progress(f"[{r.name}] {r.model}: {r.frames} frames, {r.seconds:.1f} s video in {r.seconds_run:.1f} s: "
                     f"{len(r.alerts)} alerts (TP {r.tp}, FP {r.fp}), {len(r.episodes)} episodes (FN {r.fn})")
    return results, score(results)


def to_json(root: Path, results: list[ClipResult], scores: dict[str, Any], cfg: NonsiteConfig,
            detector: Detector | CameraDetectors) -> dict[str, Any]:
    dets = detector.loaded() if isinstance(detector, CameraDetectors) else [detector]
    dets.sort(key=lambda d: d.weights.name != cfg.detector.model)  # detector.model's first
    w = dets[0].weights
    return {
        "dataset": str(root),
        "detector": {"backend": dets[0].backend, "name": w.name, "sha256": w.sha256,
                     "imgsz": cfg.detector.imgsz, "confidence": cfg.detector.confidence,
                     "models": {d.weights.name: d.weights.sha256 for d in dets},
                     "zone_models": dict(cfg.detector.zone_models)},
        "gating": cfg.edge.gating.model_dump(mode="json"),
        **scores,
        "results": [{**asdict(r), "tp": r.tp, "fp": r.fp, "fn": r.fn} for r in results],
    }


def write_json(path: Path, doc: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


__all__ = [
    "Alert", "Clip", "ClipResult", "ClipSource", "ConfigError", "EvalError", "Truth", "TruthEpisode",
    "clip_frames", "evaluate", "load_clip", "load_dataset", "match", "report_lines", "run_clip", "score",
    "to_json", "write_json",
]
