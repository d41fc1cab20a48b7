"""`nonsite detect IMAGE_OR_VIDEO [--save OUT]` on real media."""

from __future__ import annotations

import io
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from nonsite.config.detector import DetectorConfig
from nonsite.models.cli import detect_command


def test_detect_image_prints_and_saves_annotated_copy(media_dir: Path, models_dir: Path, tmp_path: Path) -> None:
    src = media_dir / "generic_bus_ultralytics.jpg"
    out_path = tmp_path / "out" / "bus.jpg"
    buf = io.StringIO()
    assert detect_command(str(src), DetectorConfig(), str(out_path), out=buf) == 0
    text = buf.getvalue()
    assert "model yolo11n-coco" in text and "backend openvino" in text
    lines = [ln.split() for ln in text.splitlines() if ln.startswith("  ")]
    assert [ln[0] for ln in lines].count("bus") == 1 and [ln[0] for ln in lines].count("person") >= 3
    assert all(0.3 <= float(ln[1]) <= 1 for ln in lines)
    original, annotated = cv2.imread(str(src)), cv2.imread(str(out_path))
    assert annotated is not None and annotated.shape == original.shape
    # Boxes were drawn: a visible share of pixels changed, the rest is the same photo (JPEG noise aside).
    diff = np.abs(annotated.astype(int) - original.astype(int)).max(axis=2)
    assert 0.01 < (diff > 60).mean() < 0.3


def test_detect_video_every_nth_frame_writes_h264(media_dir: Path, models_dir: Path, tmp_path: Path) -> None:
    out_path = tmp_path / "dog.mp4"
    buf = io.StringIO()
    assert (
        detect_command(str(media_dir / "dog_alone_fence.mp4"), DetectorConfig(), str(out_path), every=40, out=buf) == 0
    )
    text = buf.getvalue()
    frame_lines = [ln for ln in text.splitlines() if ln.startswith("frame ")]
    assert [ln.split()[1] for ln in frame_lines] == ["0", "40", "80", "120", "160", "200", "240"]
    assert "dog" in text.splitlines()[-2]  # the summary counts dogs
    with av.open(str(out_path)) as c:
        s = c.streams.video[0]
        assert s.codec_context.name == "h264" and (s.width, s.height) == (360, 360)
        assert sum(1 for _ in c.decode(s)) == 245


def test_missing_file_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.jpg"
    assert detect_command(str(missing), DetectorConfig(), None) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(missing) in err and "does not exist" in err


def test_unreadable_file_and_wrong_save_name(tmp_path: Path, media_dir: Path, capsys) -> None:
    junk = tmp_path / "notes.txt"
    junk.write_text("not a picture")
    assert detect_command(str(junk), DetectorConfig(), None) == 2
    assert "cannot read" in capsys.readouterr().err
    img = media_dir / "generic_bus_ultralytics.jpg"
    assert detect_command(str(img), DetectorConfig(), str(tmp_path / "bus.mp4")) == 2
    assert "image file name" in capsys.readouterr().err


def test_missing_weights_is_a_clear_error(media_dir: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("NONSITE_MODELS_DIR", str(tmp_path))
    monkeypatch.setenv("NONSITE_WEIGHTS_CACHE", str(tmp_path))
    cfg = DetectorConfig(model="yolo11n-coco-int8-320")
    monkeypatch.setattr("nonsite.models.registry._download", lambda entry, looked: looked.append("download: off"))
    assert detect_command(str(media_dir / "generic_bus_ultralytics.jpg"), cfg, None) == 2
    err = capsys.readouterr().err
    assert "yolo11n-coco-int8-320.onnx" in err and "NONSITE_MODELS_DIR" in err
