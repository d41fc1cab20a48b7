"""A camera whose source is a ``*.composite.yaml`` file (the demo's piled crates): frames of the composite clip at
the camera's fps, media paths from NONSITE_MEDIA_DIR or relative to the file, problems named as SourceError."""

from __future__ import annotations

from pathlib import Path

import pytest

from nonsite.config import CameraConfig
from nonsite.streams import CompositeSource, SourceError, open_source

ROOT = Path(__file__).resolve().parents[1]


def cam(url: str, fps: float = 1, **source: object) -> CameraConfig:
    return CameraConfig.model_validate({"id": "lane", "fps": fps, "source": {"url": url, **source}, "zones": []})


def test_the_demo_composite_yields_the_clip_at_the_camera_fps(media_dir: Path, monkeypatch: pytest.MonkeyPatch
                                                             ) -> None:
    monkeypatch.setenv("NONSITE_MEDIA_DIR", str(media_dir))
    src = open_source(cam(str(ROOT / "examples" / "demo-piled-crates.composite.yaml"), fps=0.5))
    assert isinstance(src, CompositeSource)
    assert src.decode_threads == 1  # the default
    two = open_source(cam(str(ROOT / "examples" / "demo-piled-crates.composite.yaml"), fps=0.5, decode_threads=2))
    assert isinstance(two, CompositeSource) and two.decode_threads == 2  # the camera's setting reaches the decoder
    frames = list(src.frames())
    assert len(frames) == 48  # 95 s at 0.5 fps, both ends included
    assert [f.index for f in frames] == list(range(48))
    assert frames[1].ts - frames[0].ts == pytest.approx(2.0)
    assert frames[0].image.shape == (480, 640, 3)
    assert abs(frames[20].image.astype(int) - frames[0].image.astype(int)).mean() > 1  # the crates are down at 40 s


def test_a_missing_media_file_or_a_bad_key_is_a_source_error(tmp_path: Path) -> None:
    spec = tmp_path / "x.composite.yaml"
    spec.write_text("composite:\n  background: nowhere.jpg\n  duration_s: 5\n", encoding="utf-8")
    with pytest.raises(SourceError, match="nowhere.jpg not found"):
        open_source(cam(str(spec)))
    spec.write_text("composite:\n  background: nowhere.jpg\n  duration: 5\n", encoding="utf-8")
    with pytest.raises(SourceError, match=r"x.composite.yaml:3"):
        open_source(cam(str(spec)))


def test_every_decoding_source_refuses_a_negative_thread_count_when_made(media_dir: Path) -> None:
    from nonsite.streams import FileSource, LiveSource
    from nonsite.streams.base import decoder_params

    assert decoder_params(0) == [] and decoder_params(3)[1] == 3
    spec = ROOT / "examples" / "demo-piled-crates.composite.yaml"
    for make in (lambda: FileSource("f", media_dir / "dog_alone_fence.mp4", fps=1, decode_threads=-1),
                 lambda: LiveSource("l", "rtsp://127.0.0.1:9/x", fps=1, decode_threads=-1),
                 lambda: CompositeSource("c", spec, 1, decode_threads=-1)):
        with pytest.raises(ValueError, match="decode_threads must be 0 or more, got -1"):
            make()
