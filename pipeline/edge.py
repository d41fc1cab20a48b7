"""Runs the edge for a set of cameras: one reader thread per camera, one detector loop that batches
frames across cameras (round-robin, one frame per camera per batch, so a busy camera cannot starve
another), and an :class:`EdgeWorker` per camera for tracking, rules and evidence."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from nonsite.config import CameraConfig, NonsiteConfig, mask_url
from nonsite.evidence.store import Store
from nonsite.models.base import Detector
from nonsite.pipeline.bus.base import Bus
from nonsite.pipeline.events import ModelInfo
from nonsite.pipeline.worker import EdgeWorker, SequenceCounter, WorkerStats
from nonsite.streams import open_source
from nonsite.streams.base import Frame, Source, SourceError

log = logging.getLogger(__name__)

_END = object()


@dataclass
class CameraRun:
    camera: CameraConfig
    source: Source
    worker: EdgeWorker
    frames: queue.Queue[object] = field(default_factory=lambda: queue.Queue(maxsize=4))
    done: bool = False
    error: str | None = None
    started: float = field(default_factory=time.monotonic)


def model_info(detector: Detector) -> ModelInfo:
    w = detector.weights
    return ModelInfo(name=w.name, version=w.version, sha256=w.sha256, backend=detector.backend)


class EdgeRunner:
    def __init__(
        self,
        cfg: NonsiteConfig,
        detector: Detector,
        store: Store,
        bus: Bus,
        progress: Callable[[str], None] | None = None,
        progress_every_s: float = 5.0,
        max_batch: int = 8,
    ) -> None:
        self.cfg, self.detector, self.store, self.bus = cfg, detector, store, bus
        self.progress = progress
        self.progress_every_s = progress_every_s
        self.max_batch = max_batch
        sequence = SequenceCounter(Path(cfg.data_dir) / "edge" / "sequence.json")
        info = model_info(detector)
        self.runs = [
            CameraRun(c, open_source(c), EdgeWorker(c, cfg, store, bus, info, sequence))
            for c in cfg.cameras if c.enabled
        ]

    def _read(self, run: CameraRun, stop: threading.Event) -> None:
        try:
            for frame in run.source.frames():
                while not stop.is_set():
                    try:
                        run.frames.put(frame, timeout=0.2)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    break
        except SourceError as e:
            run.error = str(e)
            log.error("camera %s: %s", run.camera.id, e)
        except Exception as e:  # a broken camera never stops the others
            run.error = f"{type(e).__name__}: {e}"
            log.exception("camera %s (%s) failed", run.camera.id, mask_url(run.camera.source.url))
        finally:
            run.frames.put(_END)

    def run(self, stop: threading.Event) -> dict[str, WorkerStats]:
        """Process every camera until its source ends or ``stop`` is set; returns per-camera stats."""
        readers_stop = threading.Event()
        readers = [threading.Thread(target=self._read, args=(r, readers_stop), name=f"read-{r.camera.id}",
                                    daemon=True) for r in self.runs]
        for t in readers:
            t.start()
        last_progress = time.monotonic()
        try:
            while not stop.is_set() and not all(r.done for r in self.runs):
                batch: list[tuple[CameraRun, Frame]] = []
                for r in self.runs:
                    if r.done or len(batch) >= self.max_batch:
                        continue
                    try:
                        item = r.frames.get_nowait()
                    except queue.Empty:
                        continue
                    if item is _END:
                        r.done = True
                        r.worker.finish()
                    else:
                        batch.append((r, item))  # type: ignore[arg-type]
                if not batch:
                    time.sleep(0.005)
                    continue
                dets = self.detector.detect([f.image for _, f in batch])
                for (r, frame), d in zip(batch, dets, strict=True):
                    try:
                        r.worker.process(frame, d)
                    except Exception as e:  # one camera's failure (a bad frame, a full disk) is its own
                        r.error = f"{type(e).__name__}: {e}"
                        log.exception("camera %s: frame %d failed", r.camera.id, frame.index)
                if self.progress and time.monotonic() - last_progress >= self.progress_every_s:
                    last_progress = time.monotonic()
                    for r in self.runs:
                        if not r.done:
                            self.progress(self.describe(r))
        finally:
            readers_stop.set()
            for r in self.runs:
                r.source.close()
            for t in readers:
                t.join(timeout=5)
        return {r.camera.id: r.worker.stats for r in self.runs}

    def describe(self, r: CameraRun) -> str:
        s = r.worker.stats
        elapsed = max(time.monotonic() - r.started, 1e-6)
        state = "error: " + r.error if r.error else ("done" if r.done else "running")
        found = ", ".join(f"{k} {v}" for k, v in sorted(s.published.items())) or "none yet"
        return (f"[{r.camera.id}] {state}: {s.frames} frames ({s.frames / elapsed:.1f}/s), "
                f"{s.onsets} onsets, {s.retracted} retracted, violations: {found}")

