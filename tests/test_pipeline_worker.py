"""The edge worker on synthetic frames and scripted detections, through the real tracker, rules, evidence
store and embedded bus: two-stage stills, plate reading by an injected reader, one alert per episode.

Every test of the ``world`` fixture runs twice: packages written inside ``process`` (no writer: ``nonsite eval``)
and handed to a :class:`PackageWriter` (the runner's way); the evidence and events must come out the same."""

from __future__ import annotations

import hashlib
import io
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
import pytest

from nonsite.bus.embedded import EmbeddedBus
from nonsite.bus.events import TOPIC_VIOLATIONS, ModelInfo, ViolationEvent
from nonsite.config import CameraConfig, NonsiteConfig
from nonsite.evidence import capture as capture_module
from nonsite.evidence.local import LocalStore
from nonsite.pipeline import worker as worker_module
from nonsite.pipeline.detections import make_detections
from nonsite.pipeline.violations import models
from nonsite.pipeline.worker import EdgeWorker, PackageWriter, PlateReader, SequenceCounter
from nonsite.streams.base import Frame

T0 = 1_715_000_000.0
FPS = 5.0
CAR = (200.0, 250.0, 420.0, 380.0)
GREY, RED = (128, 128, 128), (40, 40, 220)


def config(**evidence: object) -> NonsiteConfig:
    return models().config.model_validate({
        "rules": {"sidewalk_parking": {"dwell_s": 2}},
        "evidence": {"pre_roll_s": 1, "post_roll_s": 0.4, **evidence},
        "cameras": [{"id": "cam-1", "source": {"url": "x.mp4"}, "fps": FPS,
                     "zones": [{"id": "walk", "kind": "sidewalk", "polygon": [[0, 0], [1, 0], [1, 1], [0, 1]]}]}],
    })


def image(index: int, car: tuple[int, int, int] | None) -> np.ndarray:
    """A frame with the car painted in, and its index written as the grey level of the top-left block."""
    img = np.full((480, 640, 3), 60, np.uint8)
    img[:40, :40] = min(index * 2, 255)
    if car is not None:
        x1, y1, x2, y2 = (int(v) for v in CAR)
        img[y1:y2, x1:x2] = car
        cv2.rectangle(img, (x1 + 20, y2 - 30), (x1 + 120, y2 - 8), (240, 240, 240), -1)  # a plate-ish patch
    return img


def frame_index(jpeg: bytes) -> int:
    img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    return round(float(img[5:35, 5:35].mean()) / 2)


@dataclass
class World:
    worker: EdgeWorker
    store: LocalStore
    bus: EmbeddedBus
    published: list[tuple[int, ViolationEvent]]

    def play(self, script: Callable[[int], tuple[int, int, int] | None], frames: int, start: int = 0) -> None:
        for i in range(start, start + frames):
            colour = script(i)
            n = 1 if colour else 0
            dets = make_detections([CAR] * n, ["car"] * n, confidence=[0.9] * n)
            f = Frame("cam-1", i, T0 + i / FPS, image(i, colour))
            self.published += [(i, e) for e in self.worker.process(f, dets)]
        if frames:  # with a writer: what was handed over by now is written before the test looks
            self.published += [(start + frames - 1, e) for e in self.worker.drain()]

    def finish(self) -> None:
        self.published += [(-1, e) for e in self.worker.finish()]

    def roles(self, event: ViolationEvent) -> dict[str, bytes]:
        return {item.role: self.store.get(item.key) for item in event.evidence}


@pytest.fixture(params=["inline", "writer"])
def world(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Callable[..., World]]:
    buses: list[EmbeddedBus] = []
    writer = PackageWriter() if request.param == "writer" else None

    def make(cfg: NonsiteConfig | None = None, plate_reader: PlateReader | None = None) -> World:
        cfg = cfg or config()
        store = LocalStore(tmp_path / "evidence")
        bus = EmbeddedBus(tmp_path / "bus.sqlite")
        buses.append(bus)
        w = EdgeWorker(cfg.cameras[0], cfg, store, bus, ModelInfo(name="m", version="1", sha256="0" * 64),
                       SequenceCounter(tmp_path / "seq.json"), plate_reader=plate_reader, writer=writer)
        return World(w, store, bus, [])

    yield make
    if writer is not None:
        writer.close()
    for b in buses:
        b.close()


def test_second_overview_still_is_taken_min_still_gap_after_onset_and_publishing_waits_for_it(
        world: Callable[..., World]) -> None:
    w = world(config(min_still_gap_s=3.0))
    w.play(lambda i: GREY, 40)  # 8 s parked; dwell 2 s
    assert len(w.published) == 1
    published_at, event = w.published[0]
    blobs = w.roles(event)
    assert {"onset", "confirm", "overview_2", "overview_2_annotated", "closeup", "clip"} <= set(blobs)
    onset_i, confirm_i, second_i = (frame_index(blobs[r]) for r in ("onset", "confirm", "overview_2"))
    assert (second_i - onset_i) / FPS >= 3.0 - 1e-6  # two overview stills at least min_still_gap_s apart
    assert (confirm_i - onset_i) / FPS == pytest.approx(2.0)
    assert published_at >= second_i  # the event waited for the second still
    assert set(event.boxes) == {"onset", "confirm", "overview_2"}
    assert event.boxes["overview_2"][0].class_name == "car"
    # the bus carries it (claim-check: names and hashes, no pixels)
    msgs = w.bus.consumer(TOPIC_VIOLATIONS, "t").poll(timeout_s=0.1)
    assert [ViolationEvent.model_validate_json(m.value).event_id for m in msgs] == [event.event_id]


def test_vehicle_leaving_before_the_second_still_is_published_without_it(world: Callable[..., World]) -> None:
    w = world(config(min_still_gap_s=10.0))
    w.play(lambda i: GREY if i < 20 else None, 40)  # stands 4 s (dwell 2 s), gone long before 10 s
    assert len(w.published) == 1
    assert "overview_2" not in w.roles(w.published[0][1])


def test_no_second_still_when_switched_off(world: Callable[..., World]) -> None:
    w = world(config(min_still_gap_s=0))
    w.play(lambda i: GREY, 20)
    (_, event), = w.published
    assert "overview_2" not in w.roles(event)


@dataclass
class Reading:
    text: str
    confidence: float
    format: str
    crop: np.ndarray
    crop_xyxy: tuple[float, float, float, float]


def test_injected_plate_reader_reads_the_confirmed_vehicle_into_the_event(world: Callable[..., World]) -> None:
    calls: list[tuple[tuple[int, ...], tuple[float, ...]]] = []

    def reader(img: np.ndarray, xyxy: tuple[float, float, float, float]) -> Reading | None:
        calls.append((img.shape, tuple(xyxy)))
        x1, y2 = int(xyxy[0]), int(xyxy[3])
        crop = img[y2 - 30:y2 - 8, x1 + 20:x1 + 120].copy()
        return Reading("沪A12345", 0.91 if len(calls) == 1 else 0.97, "cn_standard", crop,
                       (x1 + 20, y2 - 30, x1 + 120, y2 - 8))

    w = world(config(min_still_gap_s=3.0), plate_reader=reader)
    w.play(lambda i: GREY, 40)
    (_, event), = w.published
    assert len(calls) == 2  # the confirm still and the second overview still; the more confident reading wins
    assert all(shape == (480, 640, 3) for shape, _ in calls)
    assert calls[0][1] == pytest.approx(CAR, abs=3)
    hint = event.offender_hint
    assert hint is not None
    assert (hint.plate, hint.plate_confidence, hint.plate_format, hint.plate_role) == \
        ("沪A12345", 0.97, "cn_standard", "plate")
    plate = cv2.imdecode(np.frombuffer(w.roles(event)["plate"], np.uint8), cv2.IMREAD_COLOR)
    assert plate.shape[:2] == (22, 100)
    assert float(plate.mean()) > 200  # the white patch, not the car body


def test_no_plate_is_invented(world: Callable[..., World]) -> None:
    w = world(config(min_still_gap_s=0), plate_reader=lambda img, xyxy: None)
    w.play(lambda i: GREY, 30)
    (_, event), = w.published
    assert event.offender_hint is None and "plate" not in w.roles(event)


def test_plate_reader_failure_does_not_cost_the_violation(world: Callable[..., World]) -> None:
    def broken(img: np.ndarray, xyxy: tuple[float, float, float, float]) -> Reading | None:
        raise RuntimeError("OCR model missing")

    w = world(config(min_still_gap_s=0), plate_reader=broken)
    w.play(lambda i: GREY, 30)
    (_, event), = w.published
    assert event.offender_hint is None and event.type == "sidewalk_parking"


def test_plate_reading_switched_off_in_the_config(world: Callable[..., World]) -> None:
    calls: list[int] = []
    cfg = config(min_still_gap_s=0)
    cfg.rules.sidewalk_parking.read_plates = False

    def reader(img: np.ndarray, xyxy: tuple[float, float, float, float]) -> Reading | None:
        calls.append(1)
        return None

    w = world(cfg, plate_reader=reader)
    w.play(lambda i: GREY, 30)
    assert len(w.published) == 1 and calls == []


def test_car_hidden_long_enough_to_lose_its_track_is_not_alerted_twice(world: Callable[..., World]) -> None:
    # Parked, alerted, hidden 6 s (the tracker keeps lost tracks 3 s: it comes back under a new id), then a
    # different (red) car takes the spot after the grey one left: that one is a new violation.
    w = world(config(min_still_gap_s=0))

    def script(i: int) -> tuple[int, int, int] | None:
        if i < 30 or 60 <= i < 100:
            return GREY
        if i >= 140:
            return RED
        return None

    w.play(script, 180)
    w.finish()
    events = [e for _, e in w.published]
    assert len(events) == 2, [(i, e.track_ids) for i, e in w.published]
    first, second = events
    assert first.started_at < second.started_at
    assert (second.started_at.timestamp() - T0) * FPS == pytest.approx(141, abs=2)  # the red car's own onset
    assert w.worker.stats.onsets == 2


def test_the_runner_drives_a_worker_through_its_methods(world: Callable[..., World]) -> None:
    """What the edge runner uses: the stage-time hook, the latest picture, and new zones without a restart."""
    w = world()
    stages: list[tuple[str, float]] = []
    w.worker.on_stage = lambda stage, seconds: stages.append((stage, seconds))
    assert w.worker.snapshot() is None
    w.play(lambda i: RED, 3)
    # The first frame builds the rule engine: only the tracker's time is a fair sample of it.
    assert [s for s, _ in stages] == ["track", "track", "rules", "evidence", "track", "rules", "evidence"]
    assert all(seconds >= 0 for _, seconds in stages)
    assert frame_index(w.worker.snapshot() or b"") == 2
    tracker, old_hash = w.worker.tracker, w.worker.rule_hash
    w.play(lambda i: RED, 15, start=3)  # confirmed after the 2 s dwell; publishing waits for the second still
    assert w.published == []
    curb = CameraConfig.model_validate({**config().cameras[0].model_dump(), "zones": [
        {"id": "curb", "kind": "sidewalk", "polygon": [[0, 0.5], [1, 0.5], [1, 1], [0, 1]]}]})
    events = w.worker.replace_zones(curb)
    # The episode open under the old zones is closed and its confirmed violation published now.
    assert [(e.type, e.zone_id) for e in events] == [("sidewalk_parking", "walk")]
    assert w.worker.engine is None and w.worker.rule_hash != old_hash
    assert [z.id for z in w.worker.camera.zones] == ["curb"]
    w.play(lambda i: RED, 1, start=18)
    assert w.worker.engine is not None and w.worker.tracker is tracker  # same tracks, new rules
    assert frame_index(w.worker.snapshot() or b"") == 18


# -- the package writer: packages written off the detection loop ------------------------------------------------


def writer_world(tmp_path: Path, writer: PackageWriter, plate_reader: PlateReader | None = None) -> World:
    cfg = config(min_still_gap_s=0)
    w = EdgeWorker(cfg.cameras[0], cfg, LocalStore(tmp_path / "evidence"), EmbeddedBus(tmp_path / "bus.sqlite"),
                   ModelInfo(name="m", version="1", sha256="0" * 64), SequenceCounter(tmp_path / "seq.json"),
                   plate_reader=plate_reader, writer=writer)
    return World(w, w.store, w.bus, [])  # type: ignore[arg-type]


def test_a_package_being_written_does_not_hold_the_camera(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The store is slow (a package held until the test lets it go): the camera's next frames are processed all
    the same, and the event comes out once its package is written, with the evidence it would have had."""
    entered, release, returned = threading.Event(), threading.Event(), threading.Event()
    write = worker_module.write_package_blobs
    seen: dict[str, Any] = {}

    def held(*args: Any, **kw: Any) -> Any:
        seen["thread"] = threading.current_thread().name
        entered.set()
        release.wait(60)
        try:
            return write(*args, **kw)
        finally:
            returned.set()

    monkeypatch.setattr(worker_module, "write_package_blobs", held)
    readers: list[str] = []

    def reader(img: np.ndarray, xyxy: tuple[float, float, float, float]) -> Reading | None:
        readers.append(threading.current_thread().name)
        return None

    writer = PackageWriter()
    try:
        w = writer_world(tmp_path, writer, reader)
        for i in range(40):  # confirmed at 2 s (frame 10), due after the post-roll: handed over around frame 12
            dets = make_detections([CAR], ["car"], confidence=[0.9])
            w.published += [(i, e) for e in w.worker.process(Frame("cam-1", i, T0 + i / FPS, image(i, GREY)), dets)]
        assert entered.wait(30)
        # 40 frames processed while the package is still being written: the write did not stop the camera
        assert w.worker.stats.frames == 40 and not returned.is_set()
        assert w.published == [] and w.worker.stats.published == {}
        release.set()
        events = w.worker.finish()
    finally:
        release.set()
        writer.close()
    assert [e.type for e in events] == ["sidewalk_parking"] and w.worker.stats.published == {"sidewalk_parking": 1}
    assert seen["thread"].startswith("evidence-writer")
    assert readers and set(readers) <= {seen["thread"], "evidence-ahead-plates_0"}  # off the loop: ahead or with it
    assert {"onset", "confirm", "closeup", "clip"} <= {item.role for item in events[0].evidence}
    onset = [frame_index(w.store.get(i.key)) for i in events[0].evidence if i.role == "onset"]
    assert onset == [round((events[0].started_at.timestamp() - T0) * FPS)]
    msgs = w.bus.consumer(TOPIC_VIOLATIONS, "t").poll(timeout_s=0.1)
    assert [ViolationEvent.model_validate_json(m.value).event_id for m in msgs] == [events[0].event_id]


def test_a_package_that_cannot_be_written_is_the_cameras_error_and_the_next_one_goes_out(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write = worker_module.write_package_blobs
    calls: list[int] = []

    def first_fails(*args: Any, **kw: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise OSError(28, "No space left on device")
        return write(*args, **kw)

    monkeypatch.setattr(worker_module, "write_package_blobs", first_fails)
    writer = PackageWriter()
    try:
        w = writer_world(tmp_path, writer)
        # a grey car parked 4 s, gone 8 s, then a red one: two violations
        w.play(lambda i: GREY if i < 20 else (RED if i >= 60 else None), 100)
        w.finish()
    finally:
        writer.close()
    assert len(calls) == 2
    assert [e.type for _, e in w.published] == ["sidewalk_parking"]
    assert w.worker.error is not None and "No space left on device" in w.worker.error
    assert w.worker.stats.published == {"sidewalk_parking": 1}


def test_the_writer_keeps_the_order_and_bounds_what_waits() -> None:
    writer = PackageWriter(max_pending=2)
    gate = threading.Event()
    order: list[int] = []
    threads: set[str] = set()

    def job(n: int) -> Callable[[], Any]:
        def run() -> Any:
            gate.wait(60)
            order.append(n)
            threads.add(threading.current_thread().name)
            return n
        return run

    try:
        first = [writer.submit(job(0)), writer.submit(job(1))]
        third: list[Any] = []
        t = threading.Thread(target=lambda: third.append(writer.submit(job(2))))
        t.start()
        t.join(0.5)
        assert t.is_alive() and third == []  # a third hand-off waits for a free place: the clips do not pile up
        gate.set()
        t.join(30)
        assert not t.is_alive()
        assert [f.result(30) for f in [*first, *third]] == [0, 1, 2]
    finally:
        gate.set()
        writer.close()
    assert order == [0, 1, 2] and len(threads) == 1
    writer.submit(job(3)).result(30)  # closed: a later hand-off starts the thread again
    writer.close()
    with pytest.raises(ValueError, match="at least 1"):
        PackageWriter(max_pending=0)


def test_a_frame_encoded_before_it_is_processed_is_the_pre_roll_as_given(world: Callable[..., World]) -> None:
    w = world()
    picture = image(7, None)
    jpeg = w.worker.encode_preroll(picture)
    w.worker.process(Frame("cam-1", 7, T0, picture), make_detections([], []), jpeg=jpeg)
    assert w.worker.snapshot() == jpeg and frame_index(jpeg) == 7


def test_one_cameras_packages_are_written_side_by_side_and_published_in_order(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two writer threads: the camera's second package is written while its first is still held, but the first is
    numbered and published first."""
    write = worker_module.write_package_blobs
    release = threading.Event()
    entered: list[tuple[str, int]] = []
    second_written = threading.Event()

    def held_first(*args: Any, **kw: Any) -> Any:
        entered.append((kw["event_id"], kw["sequence"]))
        if len(entered) == 1:
            release.wait(60)
        out = write(*args, **kw)
        if len(entered) == 2:
            second_written.set()
        return out

    monkeypatch.setattr(worker_module, "write_package_blobs", held_first)
    writer = PackageWriter(threads=2)
    try:
        w = writer_world(tmp_path, writer)
        for i in range(100):  # a grey car parked 4 s, gone 8 s, then a red one: two violations
            colour = GREY if i < 20 else (RED if i >= 60 else None)
            dets = make_detections([CAR] * bool(colour), ["car"] * bool(colour), confidence=[0.9] * bool(colour))
            w.worker.process(Frame("cam-1", i, T0 + i / FPS, image(i, colour)), dets)
        assert second_written.wait(30)  # the red car's package is in the store while the grey one's is held
        assert w.bus.consumer(TOPIC_VIOLATIONS, "early").poll(timeout_s=0.2) == []  # ... and not published before it
        release.set()
        events = w.worker.finish()
    finally:
        release.set()
        writer.close()
    assert [e.event_id for e in events] == [event_id for event_id, _ in entered]
    assert [seq for _, seq in entered] == [1, 2]
    msgs = w.bus.consumer(TOPIC_VIOLATIONS, "t").poll(timeout_s=0.1)
    assert [ViolationEvent.model_validate_json(m.value).event_id for m in msgs] == [e.event_id for e in events]
    with pytest.raises(ValueError, match="at least 1"):
        PackageWriter(threads=0)


def x264_options(mp4: bytes) -> bytes:
    """The encoder settings x264 writes into its stream (an SEI message)."""
    start = mp4.index(b"options: ") + len(b"options: ")
    return mp4[start:mp4.index(b"\0", start)]


@pytest.mark.parametrize(("preset", "mark"), [("superfast", b"subme=1"), ("ultrafast", b"subme=0"),
                                               ("veryfast", b"subme=2")])
def test_the_clip_is_encoded_with_the_configured_preset(world: Callable[..., World], preset: str,
                                                        mark: bytes) -> None:
    w = world(config(min_still_gap_s=0) if preset == "superfast" else config(min_still_gap_s=0, clip_preset=preset))
    w.play(lambda i: GREY, 30)
    (_, event), = w.published
    options = x264_options(w.roles(event)["clip"])
    assert mark in options.split(), options  # superfast is the default
    assert b"bframes=0" in options.split(), options  # half the memory of an encoder open while a package waits


class CountingEncoder(worker_module.ClipEncoder):  # type: ignore[name-defined,misc]
    """The real clip encoder, noting each clip made and each frame pushed (with the thread that pushed it)."""

    made: list[int] = []
    pushes: list[str] = []

    def push(self, ts: float, img: np.ndarray) -> None:
        CountingEncoder.pushes.append(threading.current_thread().name)
        super().push(ts, img)

    def close(self, last_frame_s: float | None = None) -> bytes:
        CountingEncoder.made.append(self.frames)
        return super().close(last_frame_s)


@pytest.fixture
def counting(monkeypatch: pytest.MonkeyPatch) -> type[CountingEncoder]:
    CountingEncoder.made, CountingEncoder.pushes = [], []
    monkeypatch.setattr(worker_module, "ClipEncoder", CountingEncoder)
    return CountingEncoder


def clip_frames(mp4: bytes) -> tuple[float, list[int]]:
    """A clip's first frame index (:func:`image`: by its grey level, which H.264 moves by a fraction) and each
    frame's distance from it in frames (by the presentation times: the camera's timestamps, in ms)."""
    with av.open(io.BytesIO(mp4)) as container:
        frames = list(container.decode(video=0))
    return (float(frames[0].to_ndarray(format="bgr24")[5:35, 5:35].mean()) / 2,
            [round(float(f.time) * FPS) for f in frames])


def assert_clip(mp4: bytes, expected: list[int]) -> None:
    """The clip holds exactly the frames ``expected``, in order."""
    first, offsets = clip_frames(mp4)
    assert offsets == [i - expected[0] for i in expected]
    assert abs(first - expected[0]) < 1.0, (first, expected[0])


def test_objects_confirmed_together_share_one_clip_encoding(world: Callable[..., World],
                                                            counting: type[CountingEncoder]) -> None:
    """Two cars parked side by side from the first frame: two violations, two complete packages, one clip encoded
    (the same frames); a third car later gets its own."""
    w = world(config(min_still_gap_s=0))
    left, right, late = (40.0, 250.0, 180.0, 380.0), (400.0, 250.0, 600.0, 380.0), (220.0, 60.0, 380.0, 200.0)
    for i in range(60):
        boxes = [left, right] + ([late] if i >= 30 else [])
        img = image(i, None)
        for x1, y1, x2, y2 in boxes:
            img[int(y1):int(y2), int(x1):int(x2)] = GREY
        dets = make_detections(boxes, ["car"] * len(boxes), confidence=[0.9] * len(boxes))
        w.published += [(i, e) for e in w.worker.process(Frame("cam-1", i, T0 + i / FPS, img), dets)]
    w.finish()
    events = [e for _, e in w.published]
    assert len(events) == 3 and len({e.event_id for e in events}) == 3
    clips = [w.roles(e)["clip"] for e in events]
    assert len(counting.made) == 2  # the pair's clip once, the late car's once
    first_two = sorted(events, key=lambda e: e.started_at)[:2]
    assert w.roles(first_two[0])["clip"] == w.roles(first_two[1])["clip"]
    assert len(set(clips)) == 2
    for e in events:  # each package names its clip by the bytes stored under its own key
        item = next(i for i in e.evidence if i.role == "clip")
        assert hashlib.sha256(w.store.get(item.key)).hexdigest() == item.sha256


def test_objects_confirmed_together_share_their_stills_encoding(world: Callable[..., World],
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Two cars parked side by side from the first frame: their onset and confirm pictures are the same frames,
    JPEG-encoded once for both packages (each package still stores and hashes them under its own keys)."""
    encoded: list[int] = []
    real = capture_module.encode_jpeg

    def counting_jpeg(img: np.ndarray, quality: int = 92) -> bytes:
        encoded.append(frame_index(real(img[:40, :40], quality)) if img.shape == (480, 640, 3) else -1)
        return real(img, quality)

    monkeypatch.setattr(capture_module, "encode_jpeg", counting_jpeg)
    w = world(config(min_still_gap_s=0))
    left, right = (40.0, 250.0, 180.0, 380.0), (400.0, 250.0, 600.0, 380.0)
    for i in range(30):
        img = image(i, None)
        for x1, y1, x2, y2 in (left, right):
            img[int(y1):int(y2), int(x1):int(x2)] = GREY
        dets = make_detections([left, right], ["car"] * 2, confidence=[0.9] * 2)
        w.published += [(i, e) for e in w.worker.process(Frame("cam-1", i, T0 + i / FPS, img), dets)]
    w.finish()
    a, b = (w.roles(e) for _, e in w.published)
    assert a["onset"] == b["onset"] and a["confirm"] == b["confirm"]
    onset_i, confirm_i = frame_index(a["onset"]), frame_index(a["confirm"])
    # the untouched stills: each picture once (annotated copies and close-ups differ per package and are not shared)
    assert encoded.count(onset_i) == 1 and encoded.count(confirm_i) == 1, encoded


def test_the_clip_runs_from_the_pre_roll_to_the_frame_the_package_was_due(world: Callable[..., World]) -> None:
    """A car parked from frame 10 (dwell 2 s, pre-roll 1 s, post-roll 0.4 s at 5 fps): the clip holds every frame
    from 1 s before it came to 0.4 s after the confirmation, in order, written the same with or without a writer."""
    w = world(config(min_still_gap_s=0))
    w.play(lambda i: GREY if i >= 10 else None, 40)
    (_, event), = w.published
    confirm_i = frame_index(w.roles(event)["confirm"])
    assert_clip(w.roles(event)["clip"], list(range(10 - 5, confirm_i + 3)))  # the car came at frame 10


def test_a_long_episode_keeps_its_start_and_end_then_every_frame_after_the_confirmation(
        world: Callable[..., World]) -> None:
    """max_clip_s 2: a 6 s dwell keeps the clip's first and last second up to the confirmation; the post-roll
    after it is whole."""
    cfg = models().config.model_validate({**config(min_still_gap_s=0, max_clip_s=2, pre_roll_s=0).model_dump(
        mode="json", exclude_defaults=True), "rules": {"sidewalk_parking": {"dwell_s": 6}}})
    w = world(cfg)
    w.play(lambda i: GREY, 50)
    (_, event), = w.published
    blobs = w.roles(event)
    onset_i, confirm_i = frame_index(blobs["onset"]), frame_index(blobs["confirm"])
    assert (confirm_i - onset_i) / FPS == pytest.approx(6.0)
    head = list(range(onset_i, onset_i + 6))  # the first second (both ends)
    tail = list(range(confirm_i - 5, confirm_i + 1))  # the last second up to the confirmation
    posted = len(clip_frames(blobs["clip"])[1]) - len(head) - len(tail)
    assert posted in (2, 3)  # post-roll 0.4 s: 2 frames, or 3 where the float timestamps fall a hair short of it
    assert_clip(blobs["clip"], head + tail + list(range(confirm_i + 1, confirm_i + 1 + posted)))


def test_with_a_writer_the_clip_is_encoded_while_the_package_waits(tmp_path: Path,
                                                                  counting: type[CountingEncoder]) -> None:
    """The package waits 3 s after the confirmation for its second still: the writer encodes the clip's frames
    meanwhile, off the loop, so when the package is due what is left to encode is the last few frames."""
    writer = PackageWriter()
    cfg = config(min_still_gap_s=5.0)  # onset + 5 s: 3 s after the confirmation (dwell 2 s)
    store, bus = LocalStore(tmp_path / "evidence"), EmbeddedBus(tmp_path / "bus.sqlite")
    w = World(EdgeWorker(cfg.cameras[0], cfg, store, bus, ModelInfo(name="m", version="1", sha256="0" * 64),
                         SequenceCounter(tmp_path / "seq.json"), writer=writer), store, bus, [])
    try:
        for i in range(24):  # confirmed on frame 11; due on frame 26 (the second still)
            dets = make_detections([CAR], ["car"], confidence=[0.9])
            w.worker.process(Frame("cam-1", i, T0 + i / FPS, image(i, GREY)), dets)
        assert w.worker.pending and w.worker.pending[0].video is not None
        writer.soon(lambda: None).result(30)  # the work ahead is done
        ahead = len(counting.pushes)
        assert ahead >= 24 - 5 - worker_module.EpisodeClip.BATCH  # all but the last few frames (pre-roll from frame 0)
        assert set(counting.pushes) == {"evidence-ahead-clips_0"}  # off the loop
        w.play(lambda i: GREY, 16, start=24)
    finally:
        writer.close()
        w.bus.close()
    (_, event), = w.published
    assert counting.made == [len(clip_frames(w.roles(event)["clip"])[1])]
    assert counting.made[0] - ahead <= 5  # frames 24 to 26 (and one more at most), with the package


def test_the_plate_reader_is_loaded_when_a_parking_camera_starts(world: Callable[..., World]) -> None:
    calls: list[tuple[int, ...]] = []

    def reader(img: np.ndarray, xyxy: tuple[float, float, float, float]) -> Reading | None:
        calls.append(img.shape)
        return None

    w = world(plate_reader=reader)
    assert w.worker.reads_plates()
    w.worker.warm_up()  # the runner does this on its writer thread when the camera starts
    assert len(calls) == 1
    dogs = models().config.model_validate({"cameras": [{"id": "cam-1", "source": {"url": "x.mp4"}, "zones": [
        {"id": "all", "kind": "no_stray_dogs", "polygon": [[0, 0], [1, 0], [1, 1], [0, 1]]}]}]})
    d = world(dogs, plate_reader=reader)
    assert not d.worker.reads_plates()
    d.worker.warm_up()
    assert len(calls) == 1  # a camera without a plate-reading type loads nothing


def meet(writer: PackageWriter, lanes: tuple[str, str], wait_s: float = 30) -> bool:
    """Whether two jobs handed to ``writer`` ahead, in these lanes, run at once (each waits for the other)."""
    both = threading.Barrier(2, timeout=wait_s)
    jobs = [writer.soon(both.wait, lane) for lane in lanes]  # type: ignore[arg-type]
    try:
        return sorted(job.result(60) for job in jobs) == [0, 1]
    except threading.BrokenBarrierError:
        return False


def test_work_ahead_runs_on_as_many_threads_as_write_packages() -> None:
    """A burst of confirmations brings clips' frames and plate readings together: clips run on as many threads as
    write packages, and plate readings (one reader, one still at a time) on a lane of their own, so neither queues
    behind the other. On one thread, the first job would wait alone for the second and give up."""
    two, one = PackageWriter(threads=2), PackageWriter(threads=1)
    try:
        assert meet(two, ("clips", "clips"))
        assert meet(one, ("clips", "plates"))
        assert not meet(one, ("clips", "clips"), wait_s=0.5)
        assert not meet(two, ("plates", "plates"), wait_s=0.5)
    finally:
        two.close()
        one.close()


def test_a_clip_being_encoded_elsewhere_does_not_hold_up_a_thread(counting: type[CountingEncoder]) -> None:
    """A second job for a clip that another thread is encoding returns at once (that thread takes the frames), and
    the clip still holds every frame."""
    clip = worker_module.EpisodeClip([(T0 + i / FPS, cv2.imencode(".jpg", image(i, GREY))[1].tobytes())
                                      for i in range(6)], "ultrafast", None)
    with clip._lock:  # another thread is encoding this clip
        other = threading.Thread(target=clip._encode_some)
        other.start()
        other.join(30)
        assert not other.is_alive()
        assert counting.pushes == []
    clip.add(T0 + 6 / FPS, cv2.imencode(".jpg", image(6, GREY))[1].tobytes())
    clip.seal()
    video = clip.video()
    assert video is not None
    assert_clip(video, list(range(7)))


def test_a_package_the_writer_no_longer_takes_is_written_by_the_camera(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The interpreter shutting down under a running edge: the writer refuses new work; the package is written
    where it was due and its event goes out, not lost."""
    writer = PackageWriter()

    def refused(job: Any) -> Any:
        raise RuntimeError("cannot schedule new futures after interpreter shutdown")

    monkeypatch.setattr(writer, "submit", refused)
    w = writer_world(tmp_path, writer)
    w.play(lambda i: GREY, 30)
    assert [e.type for _, e in w.published] == ["sidewalk_parking"]
    assert w.worker.error is None
    msgs = w.bus.consumer(TOPIC_VIOLATIONS, "t").poll(timeout_s=0.1)
    assert [ViolationEvent.model_validate_json(m.value).event_id for m in msgs] == [w.published[0][1].event_id]
