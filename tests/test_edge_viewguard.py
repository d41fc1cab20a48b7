"""Camera view guard on real footage: a clip whose view is shifted or cropped part-way (made on the fly from
../shared/media with OpenCV), and a file whose frames switch to another street mid-stream. The detector is
scripted (a parked car in the zone on every frame, so the rules would alert whenever they run); the frames, the
feature matching, the runner, the rules, the metrics and the camera control are the real ones."""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import supervision as sv
from edge_helpers import FULL, runner, sample, scrape
from prometheus_client import generate_latest

from nonsite.config import NonsiteConfig
from nonsite.models.base import WeightsInfo
from nonsite.models.postprocess import make_detections
from nonsite.pipeline.control import EdgeCameraControl
from nonsite.pipeline.edge import EdgeRunner
from nonsite.pipeline.viewguard import zones_hash

PARKING = "parking_lot_cctv_timelapse_a_640x480.mp4"  # 640x480, 20 fps, fixed camera
HIGHWAY = "traffic_highway.mp4"  # another street
CAR = (250.0, 300.0, 330.0, 360.0)
FPS = 10


class ParkedCar:
    """A detector that sees the same parked car on every frame."""

    backend = "scripted"
    weights = WeightsInfo(name="scripted", version="1", sha256="0" * 64, path=Path("scripted"))
    class_names = ["car"]

    def detect(self, images: Sequence[np.ndarray]) -> list[sv.Detections]:
        return [make_detections(np.array([CAR]), np.array([0.9]), np.array([0]), self.class_names) for _ in images]


def _frames(path: Path, n: int, size: tuple[int, int] = (640, 480)) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    out = []
    while len(out) < n:
        ok, img = cap.read()
        if not ok:
            cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            continue
        out.append(cv2.resize(img, size) if img.shape[1::-1] != size else img)
    cap.release()
    return out


def shifted(img: np.ndarray, dx: float, dy: float) -> np.ndarray:
    h, w = img.shape[:2]
    return cv2.warpAffine(img, np.float32([[1, 0, dx * w], [0, 1, dy * h]]), (w, h), borderMode=cv2.BORDER_REFLECT)


def cropped(img: np.ndarray, f: float) -> np.ndarray:
    """The camera zoomed in a little: the middle (1 - 2f) of the view, scaled back to the full size."""
    h, w = img.shape[:2]
    return cv2.resize(img[int(h * f):h - int(h * f), int(w * f):w - int(w * f)], (w, h))


def write_video(path: Path, segments: list[list[np.ndarray]]) -> Path:
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (640, 480))
    for seg in segments:
        for img in seg:
            out.write(img)
    out.release()
    return path


def config(tmp_path: Path, video: Path, **camera: object) -> NonsiteConfig:
    return NonsiteConfig.model_validate({
        "data_dir": str(tmp_path / "data"),
        "rules": {"sidewalk_parking": {"dwell_s": 4, "max_gap_s": 1}},
        "view_guard": {"check_interval_s": 0.4, "confirm_checks": 2},
        "evidence": {"pre_roll_s": 0.5, "post_roll_s": 0.3},
        "cameras": [{"id": "dome", "fps": 5, "source": {"url": str(video)},
                     "zones": [{"id": "walk", "kind": "sidewalk", "polygon": [[0.2, 0.4], [0.7, 0.4], [0.7, 0.9],
                                                                                [0.2, 0.9]]}], **camera}],
    })


def run(cfg: NonsiteConfig) -> EdgeRunner:
    r = runner(cfg, ParkedCar())
    r.run(threading.Event())
    return r


def metrics(r: EdgeRunner) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return scrape(generate_latest(r.metrics.registry).decode())


def test_a_switch_to_another_street_pauses_the_rules_until_the_view_comes_back(
        tmp_path: Path, media_dir: Path) -> None:
    home = _frames(media_dir / PARKING, 100)
    other = _frames(media_dir / HIGHWAY, 60)
    # 2 s home (the car's dwell is 4 s: no alert yet), 6 s another street, 8 s home again
    video = write_video(tmp_path / "switch.mp4", [home[:20], other, home[20:100]])
    r = run(config(tmp_path, video))
    w = r.runs[0].worker
    # one alert, after the view came back; none while it looked at the other street
    assert sum(r.stats()["dome"].published.values()) == 1
    view = w.view_status()
    assert view is not None and view.reference_taken_at is not None
    assert [c.state for c in reversed(view.changes)] == ["moved", "ok"]
    moved_at, back_at = (c.ts - view.reference_taken_at for c in reversed(view.changes))
    assert 2.0 <= moved_at <= 3.5 and 8.0 <= back_at <= 9.5  # noticed within a few checks of each switch
    assert w.paused_frames > 0
    m = metrics(r)
    assert sample(m, "nonsite_camera_view_changes_total", camera="dome", state="moved") == 1
    assert sample(m, "nonsite_camera_view_changes_total", camera="dome", state="ok") == 1
    assert sample(m, "nonsite_camera_view_moved", camera="dome") == 0


def test_a_camera_left_looking_elsewhere_shows_view_moved_and_sets_the_metric(
        tmp_path: Path, media_dir: Path) -> None:
    home = _frames(media_dir / PARKING, 20)
    other = _frames(media_dir / HIGHWAY, 80)
    r = run(config(tmp_path, write_video(tmp_path / "away.mp4", [home, other])))
    assert sum(r.stats()["dome"].published.values()) == 0  # 8 s of a parked car, but not where the zones are
    control = EdgeCameraControl(r, tmp_path / "unused.yaml")
    status = control.cameras()[0]
    assert status.view is not None and status.view.state == "moved"
    assert "rules paused" in status.view.changes[0].message
    assert sample(metrics(r), "nonsite_camera_view_moved", camera="dome") == 1
    ref = control.reference("dome")
    assert ref is not None and ref.startswith(b"\xff\xd8")
    # the reference is kept per camera under the data dir, with the zones' hash
    folder = Path(r.cfg.data_dir) / "edge" / "views" / "dome"
    meta = json.loads((folder / "reference.json").read_text())
    assert meta["zones_hash"] == zones_hash(r.cameras[0])
    assert (folder / "reference.jpg").read_bytes() == ref


def test_a_small_shift_or_zoom_reregisters_the_zones_and_the_rules_go_on(tmp_path: Path, media_dir: Path) -> None:
    home = _frames(media_dir / PARKING, 100)
    for name, moved in (("shift", [shifted(f, 0.04, 0.02) for f in home[10:]]),
                        ("zoom", [cropped(f, 0.04) for f in home[10:]])):
        r = run(config(tmp_path / name, write_video(tmp_path / f"{name}.mp4", [home[:10], moved])))
        w = r.runs[0].worker
        assert w.view_status().state == "shifted", name  # type: ignore[union-attr]
        assert "re-registered" in w.view_status().changes[0].message  # type: ignore[union-attr]
        assert sample(metrics(r), "nonsite_camera_view_shifted", camera="dome") == 1
        assert sample(metrics(r), "nonsite_camera_view_moved", camera="dome") == 0
        assert sum(r.stats()["dome"].published.values()) == 1, name  # the parked car still alerts
        drawn = np.array(r.cameras[0].zones[0].polygon)
        now = np.array(w._zones_camera.zones[0].polygon)
        if name == "shift":  # the zone followed the view: 4% right, 2% down
            assert np.allclose(now - drawn, [0.04, 0.02], atol=0.01)
        else:  # zoomed in about the centre: the zone grew
            assert np.ptp(now[:, 0]) > np.ptp(drawn[:, 0]) * 1.03


def test_the_reference_survives_a_restart_with_the_same_zones_and_is_retaken_for_new_zones(
        tmp_path: Path, media_dir: Path) -> None:
    home = _frames(media_dir / PARKING, 30)
    video = write_video(tmp_path / "home.mp4", [home])
    cfg = config(tmp_path, video)
    run(cfg)
    meta_path = Path(cfg.data_dir) / "edge" / "views" / "dome" / "reference.json"
    first = json.loads(meta_path.read_text())
    # a restart on a view that moved does not replace the reference with the moved view
    away = write_video(tmp_path / "away.mp4", [_frames(media_dir / HIGHWAY, 30)])
    r = run(cfg.model_copy(update={"cameras": [cfg.cameras[0].model_copy(
        update={"source": cfg.cameras[0].source.model_copy(update={"url": str(away)})})]}))
    assert json.loads(meta_path.read_text()) == first
    assert r.runs[0].worker.view_status().state == "moved"  # type: ignore[union-attr]
    # new zones: a new reference, taken on the view they were drawn on
    zones = [{"id": "walk2", "kind": "sidewalk", "polygon": FULL}]
    run(config(tmp_path, away, zones=zones))
    second = json.loads(meta_path.read_text())
    assert second["zones_hash"] != first["zones_hash"]


def test_view_guard_off_for_a_camera_leaves_its_rules_alone(tmp_path: Path, media_dir: Path) -> None:
    video = write_video(tmp_path / "away.mp4", [_frames(media_dir / PARKING, 20), _frames(media_dir / HIGHWAY, 80)])
    r = run(config(tmp_path, video, view_guard=False))
    assert r.runs[0].worker.view_status() is None
    assert sum(r.stats()["dome"].published.values()) == 1
    assert not (Path(r.cfg.data_dir) / "edge" / "views" / "dome").exists()


def test_an_object_alerted_before_the_view_moved_does_not_alert_again_when_it_returns(
        tmp_path: Path, media_dir: Path) -> None:
    """A dome camera visits another preset and comes back: the car it already reported is still parked there."""
    # the lot as a still (the clip is a time-lapse: its cars change within seconds, this one must look the same)
    home = _frames(media_dir / PARKING, 1) * 60
    video = write_video(tmp_path / "visit.mp4", [home, _frames(media_dir / HIGHWAY, 40), home])
    r = run(config(tmp_path, video))
    view = r.runs[0].worker.view_status()
    assert view is not None and [c.state for c in reversed(view.changes)] == ["moved", "ok"]
    assert sum(r.stats()["dome"].published.values()) == 1


def test_a_view_without_texture_is_never_called_moved(tmp_path: Path) -> None:
    """A blank reference (a lens cap, a test pattern) or a dark frame cannot tell where the camera looks: the rules
    go on."""
    from nonsite.config.edge import ViewGuardConfig
    from nonsite.pipeline.viewguard import ViewGuard

    blank = np.full((480, 640, 3), 90, np.uint8)
    rng = np.random.default_rng(0)
    busy = rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)
    guard = ViewGuard(ViewGuardConfig(check_interval_s=0.1, confirm_checks=1), None, "cam", "hash")
    for i in range(10):
        assert guard.observe(blank if i == 0 else busy, i * 0.2) is None
    assert guard.state == "ok"
    guard = ViewGuard(ViewGuardConfig(check_interval_s=0.1, confirm_checks=1), None, "cam", "hash")
    guard.observe(busy, 0.0)
    for i in range(1, 10):
        assert guard.observe(np.zeros_like(busy), i * 0.2) is None  # the lights went out
    assert guard.state == "ok"



def _night(img: np.ndarray, t: float, rng: np.random.Generator) -> np.ndarray:
    """The view as the evening falls (t: 0 day .. 1 night): the light drops to a twentieth outside three lamp
    pools, the shadows deepen (gamma), the sensor noise rises."""
    h, w = img.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    pools = sum(np.exp(-((xx - cx * w) ** 2 + (yy - cy * h) ** 2) / (2 * (0.12 * w) ** 2))
                for cx, cy in ((0.2, 0.3), (0.6, 0.5), (0.85, 0.2)))
    gain = (1 - t) + t * (0.05 + 0.9 * np.clip(pools, 0, 1))
    lit = (img.astype(np.float32) / 255) ** (1 + 1.5 * t) * gain[..., None] * 255
    return np.clip(lit + rng.normal(0, 1 + 4 * t, img.shape), 0, 255).astype(np.uint8)


def test_nightfall_is_not_a_moved_camera_but_another_street_at_night_is(media_dir: Path) -> None:
    """Checked every 30 s through the evening, the lot stays "ok" (its rules go on at night); the same night on
    another street is a moved camera."""
    from nonsite.config.edge import ViewGuardConfig
    from nonsite.pipeline.viewguard import ViewGuard

    rng = np.random.default_rng(1)
    home = _frames(media_dir / PARKING, 1)[0]
    other = _frames(media_dir / HIGHWAY, 1)[0]
    guard = ViewGuard(ViewGuardConfig(check_interval_s=30), None, "cam", "hash")
    guard.observe(home, 0.0)
    changes = [guard.observe(_night(home, t, rng), 30.0 * (i + 1)) for i, t in enumerate(np.linspace(0, 1, 40))]
    assert [c for c in changes if c is not None] == [] and guard.state == "ok"
    later = [guard.observe(_night(other, 1.0, rng), 30.0 * (41 + i)) for i in range(3)]
    assert "moved" in later and guard.state == "moved"
