"""Edge evidence capture on real frames of the shared parking-lot video."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from services.fixtures import read_frames

from nonsite.bus.events import BoxRecord
from nonsite.evidence.capture import (
    CameraMeta,
    Still,
    ascii_text,
    encode_clip,
    encode_jpeg,
    local_time_text,
    write_package_blobs,
)
from nonsite.evidence.local import LocalStore

T0 = 1714543402.25  # 2024-05-01 06:03:22.250 UTC = 14:03:22.250 in Asia/Shanghai
ROLES = ["onset", "confirm", "onset_annotated", "confirm_annotated", "closeup", "clip"]


@pytest.fixture(scope="module")
def frames(media_dir: Path) -> list[np.ndarray]:
    return read_frames(media_dir, 24)


def _decode_jpeg(data: bytes) -> np.ndarray:
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert img is not None
    return img


def _write(store: LocalStore, frames: list[np.ndarray], clip: list[tuple[float, bytes]], **kw: object) -> dict:
    box = BoxRecord(xyxy=(100, 120, 220, 200), class_name="car", confidence=0.87, track_id=12)
    args: dict = dict(
        event_id="evt-1",
        violation_type="sidewalk_parking",
        camera=CameraMeta(id="cam-01", name="东门", address="人民路 1 号"),
        zone_id="z-sidewalk",
        zone_polygon=[(0.1, 0.1), (0.9, 0.1), (0.9, 0.9), (0.1, 0.9)],
        onset=Still(T0, frames[0], [box]),
        confirm=Still(T0 + 60.0, frames[-1], [box]),
        closeup_xyxy=(100, 120, 220, 200),
        clip=clip,
        sequence=42,
        timezone="Asia/Shanghai",
    )
    args.update(kw)
    items = write_package_blobs(store, **args)  # type: ignore[arg-type]
    return {i.role: i for i in items}


def test_package_blobs_on_real_frames(tmp_path: Path, frames: list[np.ndarray]) -> None:
    store = LocalStore(tmp_path)
    clip = [(T0 + i * 0.05, encode_jpeg(f, 85)) for i, f in enumerate(frames)]
    items = _write(store, frames, clip)
    assert list(items) == ROLES
    assert sorted(store.list("events/evt-1/")) == sorted(f"events/evt-1/{n}" for n in (
        "onset.jpg", "confirm.jpg", "onset_annotated.jpg", "confirm_annotated.jpg", "closeup.jpg", "clip.mp4"))
    for item in items.values():
        data = store.get(item.key)
        assert item.sha256 == hashlib.sha256(data).hexdigest() and item.bytes == len(data)
        assert item.content_type == ("video/mp4" if item.role == "clip" else "image/jpeg")

    onset = _decode_jpeg(store.get(items["onset"].key))
    confirm = _decode_jpeg(store.get(items["confirm"].key))
    assert onset.shape == frames[0].shape and confirm.shape == frames[-1].shape
    # the original is the untouched frame (up to JPEG loss), not a drawn-on copy
    assert np.abs(confirm.astype(int) - frames[-1].astype(int)).mean() < 3

    annotated = _decode_jpeg(store.get(items["confirm_annotated"].key))
    h, w = frames[-1].shape[:2]
    assert annotated.shape[1] == w and annotated.shape[0] > h  # banner strip below the scene
    assert items["confirm_annotated"].sha256 != items["confirm"].sha256
    diff = np.abs(annotated[:h].astype(int) - confirm.astype(int)).max(axis=2)
    assert diff[118:122, 100:220].mean() > 60  # the box's top edge is drawn
    assert diff[300:400, 250:400].mean() < 5  # the scene away from boxes and zone is untouched
    assert annotated[h:].mean() < 60 and annotated[h:].max() > 200  # black banner with white text

    closeup = _decode_jpeg(store.get(items["closeup"].key))
    assert min(closeup.shape[:2]) >= 256

    c = av.open(io.BytesIO(store.get(items["clip"].key)))
    vs = c.streams.video[0]
    assert vs.codec_context.name == "h264" and vs.codec_context.pix_fmt == "yuv420p"
    decoded = list(c.decode(video=0))
    assert len(decoded) == len(frames)
    assert (decoded[0].width, decoded[0].height) == (w, h)
    times = [float(f.time) for f in decoded]
    assert times == pytest.approx([i * 0.05 for i in range(len(frames))], abs=0.002)
    # The clip shows the scene in its colours: each decoded frame against its source, pixel by pixel (swapped
    # chroma planes: 10.7), and per channel mean (a full / limited range mix-up shifts every mean).
    for got, src in ((decoded[0], frames[0]), (decoded[-1], frames[-1])):
        bgr = got.to_ndarray(format="bgr24").astype(float)
        assert np.abs(bgr - src).mean() < 4  # 1.7 here; 10.7 with the chroma planes swapped
        assert np.abs(bgr.mean(axis=(0, 1)) - src.reshape(-1, 3).mean(axis=0)).max() < 2.5


def test_empty_clip_becomes_two_stills_and_odd_sizes_are_even(tmp_path: Path, frames: list[np.ndarray]) -> None:
    store = LocalStore(tmp_path)
    odd = [f[:359, :637] for f in frames]  # odd width and height
    items = _write(store, odd, [])
    c = av.open(io.BytesIO(store.get(items["clip"].key)))
    decoded = list(c.decode(video=0))
    assert len(decoded) == 2
    assert (decoded[0].width, decoded[0].height) == (638, 360)
    assert c.streams.video[0].codec_context.name == "h264"


def test_corrupt_clip_frames_are_skipped(tmp_path: Path, frames: list[np.ndarray]) -> None:
    store = LocalStore(tmp_path)
    clip = [(T0 + i * 0.1, encode_jpeg(f)) for i, f in enumerate(frames[:6])]
    clip.insert(3, (T0 + 0.25, b"\xff\xd8 not really a jpeg"))
    items = _write(store, frames, list(reversed(clip)))  # out of order on purpose
    c = av.open(io.BytesIO(store.get(items["clip"].key)))
    times = [float(f.time) for f in c.decode(video=0)]
    assert times == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4, 0.5], abs=0.002)


def test_small_box_closeup_is_upscaled(tmp_path: Path, frames: list[np.ndarray]) -> None:
    store = LocalStore(tmp_path)
    items = _write(store, frames, [], closeup_xyxy=(300, 200, 320, 230))
    closeup = _decode_jpeg(store.get(items["closeup"].key))
    assert min(closeup.shape[:2]) >= 256


def test_bad_input_is_refused_before_writing(tmp_path: Path, frames: list[np.ndarray]) -> None:
    store = LocalStore(tmp_path)
    with pytest.raises(ValueError, match="outside"):
        _write(store, frames, [], closeup_xyxy=(5000, 5000, 5100, 5100))
    with pytest.raises(ValueError, match="unknown time zone"):
        _write(store, frames, [], timezone="Mars/Olympus")
    assert list(store.list("")) == []


def test_images_given_by_a_function_are_taken_after_the_clip(tmp_path: Path, frames: list[np.ndarray]) -> None:
    """The plate's crop comes from a reading that may still be under way on another thread: the function that gives
    it is called once the stills and the clip are written, and its image is stored like any other."""
    store = LocalStore(tmp_path)
    order: list[str] = []
    crop = frames[0][100:140, 200:320]

    def video() -> bytes:
        order.append("clip")
        return encode_clip([(T0, frames[0]), (T0 + 0.2, frames[1])])

    def plate() -> list[tuple[str, np.ndarray]]:
        order.append("plate")
        assert {p.name for p in (tmp_path / "events" / "evt-1").iterdir()} >= {"onset.jpg", "closeup.jpg"}
        return [("plate", crop)]

    items = _write(store, frames, [], video=video, extra_images=plate)
    assert order == ["clip", "plate"]
    assert _decode_jpeg(store.get(items["plate"].key)).shape == crop.shape
    with pytest.raises(ValueError, match="unknown evidence role 'licence'"):
        _write(store, frames, [], event_id="evt-2", extra_images=lambda: [("licence", crop)])


def test_local_time_text() -> None:
    from zoneinfo import ZoneInfo

    assert local_time_text(T0, ZoneInfo("Asia/Shanghai")) == "2024-05-01 14:03:22.250 UTC+08:00"
    assert local_time_text(T0, ZoneInfo("UTC")) == "2024-05-01 06:03:22.250 UTC+00:00"
    assert ascii_text("东门 cam") == "\\u4e1c\\u95e8 cam"  # cv2 draws ASCII only
