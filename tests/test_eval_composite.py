"""`composite:` clips of the eval dataset: generated at run time from real media, nothing stored as video."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from nonsite.config import ConfigError
from nonsite.pipeline.evaluation import EvalError, clip_frames, load_clip

ZONE = "fps: 2\nzones:\n  - {id: lane, kind: no_piling_area, polygon: [[0, 0.5], [1, 0.5], [1, 1], [0, 1]]}\n"
SOURCE = """composite:
  background: ${NONSITE_MEDIA_DIR}/parking_lot_cctv_timelapse_a_640x480.mp4
  still: true
  duration_s: 6
  noise: 0
  pastes:
    - {image: "${NONSITE_MEDIA_DIR}/generic_bus_ultralytics.jpg", crop: [0.3, 0.3, 0.6, 0.6], at: [0.5, 0.9],
       width: 0.25, start_s: 2, end_s: 4}
  lights:
    - keys: [[5, 1.0], [5.01, 0.5]]
"""


def write(root: Path, source: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "camera.yaml").write_text(ZONE, encoding="utf-8")
    (root / "truth.yaml").write_text("episodes:\n  - {type: piled_materials, zone: lane, start_s: 2, end_s: 4}\n",
                                     encoding="utf-8")
    (root / "source.yaml").write_text(source, encoding="utf-8")
    return root


def test_a_composite_clip_pastes_the_object_for_its_time_and_changes_the_light(tmp_path: Path,
                                                                             media_dir: Path) -> None:
    clip = load_clip(write(tmp_path / "c", SOURCE))
    assert clip.duration_s == 6 and clip.truth[0].type == "piled_materials"
    frames = list(clip_frames(clip))
    assert [round(f.ts - clip.start_ts, 2) for f in frames] == [k / 2 for k in range(13)]
    images = [f.image.astype(np.float32) for f in frames]
    spot = (slice(250, 420), slice(250, 390))  # inside where the crop lands (160 x 213 px, bottom centre 320, 432)
    assert np.abs(images[0][spot] - images[1][spot]).mean() == 0  # a still: nothing changes by itself
    assert np.abs(images[5][spot] - images[0][spot]).mean() > 20  # 2.5 s: the object is there
    assert np.abs(images[9][spot] - images[0][spot]).mean() == 0  # 4.5 s: gone again
    assert images[11].mean() == pytest.approx(images[0].mean() * 0.5, rel=0.02)  # 5.5 s: the light halved


@pytest.mark.parametrize(("source", "expected"), [
    ("composite:\n  background: ${NONSITE_MEDIA_DIR}/nothing.mp4\n  duration_s: 5\n", "nothing.mp4 not found"),
    ("image: a.jpg\nduration_s: 3\ncomposite:\n  background: b.mp4\n  duration_s: 5\n",
     "give exactly one of video:, image: or composite:"),
    ("composite:\n  background: b.mp4\n  duration_s: 5\n  pastes:\n"
     "    - {image: a.jpg, at: [0.5, 0.5], width: 0.1, start_s: 4, end_s: 2}\n", "end_s 2.0 is not after start_s 4.0"),
])
def test_a_broken_composite_is_one_clear_error(tmp_path: Path, media_dir: Path, source: str, expected: str) -> None:
    with pytest.raises((ConfigError, EvalError)) as e:
        load_clip(write(tmp_path / "c", source))
    assert expected in str(e.value)
