"""The console's side of the camera view guard: a camera whose view moved shows "view moved" with the current
and reference pictures on the camera page and in a banner on the queue; the reference picture is served to the
roles that see the cameras; a shifted view says the zones were re-registered."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from console_support import Env, seed

from nonsite.ops.cameras import ViewChange, ViewStatus


@pytest.fixture()
def env(tmp_path: Path, media_dir: Path) -> Iterator[Env]:
    e = seed(tmp_path, media_dir)
    assert e.cameras is not None
    east, park = (e.cameras._cams[k] for k in ("cam-east", "cam-park"))
    now = time.time()
    east.view = ViewStatus(state="moved", since=now - 60, shift=1.0, inliers=3, matches=40,
                           reference_taken_at=now - 86_400,
                           changes=[ViewChange(now - 60, "moved", "the view no longer matches; rules paused")])
    east.reference = east.frame
    park.view = ViewStatus(state="shifted", since=now - 30, shift=0.034, reference_taken_at=now - 3600)
    yield e


def test_camera_page_shows_view_moved_with_current_and_reference_pictures(env: Env) -> None:
    op, _ = env.app("op")
    page = op.get("/cameras").text
    assert 'data-view="moved"' in page and "视角偏移" in page and "规则已暂停" in page
    assert 'src="/cameras/cam-east/reference.jpg"' in page and "参考画面" in page and "当前画面" in page
    assert 'data-view="shifted"' in page and "重新配准" in page and "偏移 3.4%" in page
    ref = op.get("/cameras/cam-east/reference.jpg")
    assert ref.status_code == 200 and ref.content[:3] == b"\xff\xd8\xff"
    assert op.get("/cameras/cam-park/reference.jpg").status_code == 404  # no reference there
    assert op.get("/cameras/nope/reference.jpg").status_code == 404
    en = op.get("/cameras?lang=en").text
    assert "View moved" in en and "Reference" in en


def test_queue_names_the_cameras_whose_view_moved(env: Env) -> None:
    op, _ = env.app("op")
    page = op.get("/").text
    assert 'id="view-moved"' in page and "1 路摄像机视角偏移" in page
    assert 'href="/cameras#camera-cam-east"' in page and "东门路口" in page
    assert 'href="/cameras#camera-cam-park"' not in page  # shifted: its rules go on
    env.cameras._cams["cam-east"].view = None  # type: ignore[union-attr]
    assert 'id="view-moved"' not in op.get("/").text
