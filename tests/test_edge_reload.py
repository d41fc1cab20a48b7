"""Live cameras from a real RTSP server (tests/rtsp_server.py): latest-frame semantics when the detector is
slower than the stream, and the config file edited while the node runs (zones swapped without
reconnecting, cameras added and removed, a broken file ignored, SIGHUP applying at once)."""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from edge_helpers import PARKING, FixedLatencyDetector, Running, config, runner, wait_until
from rtsp_helpers import PASSWORD, USER, RtspServer, serve_rtsp

from nonsite.config import DetectorConfig, load_config
from nonsite.config.writer import update_camera_zones
from nonsite.models import create_detector
from nonsite.pipeline.reload import ConfigWatcher
from nonsite.streams import LiveSource, SourceState


@pytest.fixture(scope="module")
def rtsp_server(media_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RtspServer]:
    yield from serve_rtsp(media_dir, tmp_path_factory.mktemp("rtsp"))


@pytest.fixture(scope="module")
def yolo(models_dir: Path):
    return create_detector(DetectorConfig(backend="onnx"))


def live_source(url: str, **extra: object) -> dict[str, object]:
    return {"url": url, "open_timeout_s": 3, "read_timeout_s": 2, "reconnect_initial_s": 0.2, "reconnect_max_s": 1,
            **extra}


def test_a_slow_detector_sees_the_newest_frames_and_the_drops_are_counted(
    tmp_path: Path, rtsp_server: RtspServer, yolo
) -> None:
    cam = {"id": "cam-rtsp", "fps": 25, "source": live_source(rtsp_server.url())}
    r = runner(config(tmp_path, [cam]), FixedLatencyDetector(yolo, 0.2), max_batch=1)  # 5 frames/s of 25
    run = Running(r)
    m = r.metrics
    wait_until(lambda: m.value("nonsite_frames_processed_total", camera="cam-rtsp") >= 10, 15, "frames")
    h = r.run_of("cam-rtsp").health
    run.stop()
    done = m.value("nonsite_frames_processed_total", camera="cam-rtsp")
    queue_drops = m.value("nonsite_frames_dropped_total", camera="cam-rtsp", where="queue")
    source_drops = m.value("nonsite_frames_dropped_total", camera="cam-rtsp", where="source")
    assert h.state is SourceState.up and isinstance(r.run_of("cam-rtsp").source, LiveSource)
    # Most of the 25 frames/s are dropped, and counted; the detector always gets a fresh one: every sampled
    # frame is processed or dropped but for the few in flight, and no backlog builds up in the queue.
    assert queue_drops + source_drops >= 2 * done
    assert done + queue_drops + source_drops == pytest.approx(h.frames_sampled, abs=4)
    assert len(r.run_of("cam-rtsp").frames) <= r.cfg.edge.queue_frames + 1  # + the end marker, once stopped


CONFIG = """\
# A node with one RTSP camera and one simulated camera (a file paced in real time).
data_dir: data
edge:
  reload_poll_s: 0.2   # check often: this is a test
cameras:
  - id: cam-rtsp       # the road
    fps: 5
    source:
      url: "rtsp://{user}:${{TEST_RTSP_PASSWORD}}@127.0.0.1:{port}/live/ch1"
      open_timeout_s: 5    # generous: on a loaded machine the test server's encoder can pause for seconds, and a
      read_timeout_s: 5    # stall would reconnect the stream for a reason that is not the reload under test
    zones:
      - id: road
        kind: no_parking
        polygon: [[0, 0.5], [1, 0.5], [1, 1], [0, 1]]

  - id: cam-file
    fps: 5
    source: {{url: "{video}", realtime: true, loop: true}}
"""

SECOND = """
  - id: cam-rtsp-2     # the same road from a second client
    fps: 3
    source:
      url: "rtsp://{user}:${{TEST_RTSP_PASSWORD}}@127.0.0.1:{port}/live/ch1"
      open_timeout_s: 5
      read_timeout_s: 5
"""


def processed(r, cid: str) -> float:
    return r.metrics.value("nonsite_frames_processed_total", camera=cid)


def test_config_file_edits_apply_while_running(tmp_path: Path, media_dir: Path, rtsp_server: RtspServer, yolo,
                                               monkeypatch: pytest.MonkeyPatch,
                                               caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    monkeypatch.setenv("TEST_RTSP_PASSWORD", PASSWORD)
    path = tmp_path / "node.yaml"
    path.write_text(CONFIG.format(user=USER, port=rtsp_server.port, video=media_dir / PARKING), encoding="utf-8")
    r = runner(load_config(path), FixedLatencyDetector(yolo, 0.01))
    run = Running(r)
    watcher = ConfigWatcher(path, r, poll_s=0.2).start()
    try:
        wait_until(lambda: processed(r, "cam-rtsp") >= 3 and processed(r, "cam-file") >= 3, 15, "first frames")
        rtsp_src = r.run_of("cam-rtsp").source
        file_src = r.run_of("cam-file").source

        # 1. New zones, saved the way the console saves them: swapped live, no reconnection.
        zones = [{"id": "kerb", "kind": "sidewalk", "polygon": [[0, 0.6], [1, 0.6], [1, 0.8], [0, 0.8]]},
                 {"id": "verge", "kind": "no_stray_dogs", "polygon": [[0, 0], [0.3, 0], [0.3, 0.3]]}]
        update_camera_zones(path, "cam-rtsp", zones)
        wait_until(lambda: [z.id for z in r.run_of("cam-rtsp").camera.zones] == ["kerb", "verge"], 5, "new zones")
        n = processed(r, "cam-rtsp")
        wait_until(lambda: processed(r, "cam-rtsp") >= n + 3, 10, "frames after the zone change")
        h = r.run_of("cam-rtsp").health
        assert r.run_of("cam-rtsp").source is rtsp_src and h.reconnects == 0 and h.open_failures == 0
        assert "# the road" in path.read_text(encoding="utf-8")

        # 2. A camera appended to the file starts; the others keep their connections.
        path.write_text(path.read_text(encoding="utf-8") + SECOND.format(user=USER, port=rtsp_server.port),
                        encoding="utf-8")
        wait_until(lambda: processed(r, "cam-rtsp-2") >= 3, 15, "frames of the added RTSP camera")
        assert r.run_of("cam-rtsp").source is rtsp_src and r.run_of("cam-file").source is file_src

        # 3. A camera deleted from the file stops.
        text = path.read_text(encoding="utf-8")
        start = text.index("  - id: cam-file")
        end = text.index("  - id: cam-rtsp-2")
        path.write_text(text[:start] + text[end:], encoding="utf-8")
        wait_until(lambda: r.run_of("cam-file") is None, 10, "the removed camera to stop")
        wait_until(lambda: file_src.health.state is SourceState.finished, 10, "its source to close")

        # 4. A broken edit is reported and ignored: everything keeps running as it was.
        good = path.read_text(encoding="utf-8")
        path.write_text(good.replace("[0.3, 0], [0.3, 0.3]]", "[0.3, 0]]"), encoding="utf-8")
        wait_until(lambda: watcher.last_error is not None, 5, "the broken file to be noticed")
        assert f"{path}:" in watcher.last_error and "at least 3 points" in watcher.last_error
        n1, n2 = processed(r, "cam-rtsp"), processed(r, "cam-rtsp-2")
        wait_until(lambda: processed(r, "cam-rtsp") >= n1 + 3 and processed(r, "cam-rtsp-2") >= n2 + 2, 10,
                   "frames while the file is broken")
        assert [z.id for z in r.run_of("cam-rtsp").camera.zones] == ["kerb", "verge"]
        path.write_text(good, encoding="utf-8")
        wait_until(lambda: watcher.last_error is None, 5, "the fixed file to be accepted")
    finally:
        watcher.stop()
        stats = run.stop()
    assert r.run_of("cam-rtsp").health.reconnects == 0
    assert stats["cam-file"].frames >= 3 and stats["cam-rtsp-2"].frames >= 3
    assert PASSWORD not in caplog.text and f"{USER}:***@" in caplog.text


def test_sighup_applies_the_file_at_once(tmp_path: Path, media_dir: Path, yolo) -> None:
    cams = [{"id": "cam-a", "fps": 5, "source": {"url": str(media_dir / PARKING), "realtime": True, "loop": True}}]
    path = tmp_path / "node.yaml"
    path.write_text("# test node\ncameras:\n  - id: cam-a\n    fps: 5\n"
                    f"    source: {{url: '{media_dir / PARKING}', realtime: true, loop: true}}\n", encoding="utf-8")
    r = runner(config(tmp_path, cams), FixedLatencyDetector(yolo, 0.01))
    run = Running(r)
    watcher = ConfigWatcher(path, r, poll_s=3600).start()  # polling would take an hour
    previous = signal.getsignal(signal.SIGHUP)
    try:
        assert watcher.install_sighup()
        wait_until(lambda: processed(r, "cam-a") >= 2, 10, "first frames")
        update_camera_zones(path, "cam-a", [{"id": "all", "kind": "no_parking", "polygon": [[0, 0], [1, 0], [1, 1]]}])
        time.sleep(0.5)
        assert r.run_of("cam-a").camera.zones == []  # not yet: nobody looked at the file
        os.kill(os.getpid(), signal.SIGHUP)
        # The reload counts once apply_config has returned; the zones show while it still runs, so the wait is
        # on the count (waiting on the zones and then reading the count raced the watcher thread under load).
        wait_until(lambda: watcher.reloads >= 1, 3, "SIGHUP to apply the file")
        assert [z.id for z in r.run_of("cam-a").camera.zones] == ["all"]
        assert watcher.reloads == 1
    finally:
        signal.signal(signal.SIGHUP, previous)
        watcher.stop()
        run.stop()


class RecordingRunner:
    """What the watcher drives: ``apply_config``, recorded (the camera ids of each config applied)."""

    def __init__(self) -> None:
        self.applied: list[list[str]] = []

    def apply_config(self, cfg) -> dict[str, str]:
        self.applied.append([c.id for c in cfg.cameras])
        return {}


def node_file(*ids: str) -> str:
    return "cameras:\n" + "".join(f"  - id: {cid}\n    source: {{url: 'rtsp://127.0.0.1:1/{cid}'}}\n" for cid in ids)


def test_a_file_caught_between_truncate_and_write_stops_no_camera(tmp_path: Path) -> None:
    path = tmp_path / "node.yaml"
    path.write_text(node_file("cam-a", "cam-b"), encoding="utf-8")
    r = RecordingRunner()
    watcher = ConfigWatcher(path, r, poll_s=3600)  # checked by hand: no thread
    # A save in place (an editor, write_text) truncates, then writes: a look in between finds an empty file,
    # which would load as a config without cameras.
    with path.open("w", encoding="utf-8"):
        assert watcher.check() is None and watcher.check(force=True) is None
    assert r.applied == [] and watcher.reloads == 0 and watcher.last_error is None
    path.write_text(node_file("cam-a", "cam-c"), encoding="utf-8")
    assert watcher.check() == {}
    assert r.applied == [["cam-a", "cam-c"]] and watcher.reloads == 1


def test_an_edit_within_the_same_mtime_tick_and_size_is_applied(tmp_path: Path) -> None:
    path = tmp_path / "node.yaml"
    path.write_text(node_file("cam-a"), encoding="utf-8")
    r = RecordingRunner()
    watcher = ConfigWatcher(path, r, poll_s=3600)
    path.write_text(node_file("cam-b"), encoding="utf-8")
    assert watcher.check() == {} and r.applied == [["cam-b"]]
    st = path.stat()
    # A second save of the same size within the same tick of a coarse file system: mtime and size as they were.
    path.write_text(node_file("cam-c"), encoding="utf-8")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (path.stat().st_mtime_ns, path.stat().st_size) == (st.st_mtime_ns, st.st_size)
    assert watcher.check() == {}
    assert r.applied == [["cam-b"], ["cam-c"]] and watcher.reloads == 2
    assert watcher.check() is None  # nothing new: not applied again


def test_a_sighup_just_after_a_poll_timed_out_is_not_lost(tmp_path: Path) -> None:
    path = tmp_path / "node.yaml"
    path.write_text(node_file("cam-a"), encoding="utf-8")
    r = RecordingRunner()
    watcher = ConfigWatcher(path, r, poll_s=3600)
    looks: list[bool] = []
    real_check, real_wait = watcher.check, watcher._wake.wait

    def wait_then_signal(timeout: float | None = None) -> bool:
        woken = real_wait(0)  # the poll's wait times out...
        watcher.trigger()  # ...and SIGHUP lands before the turn looks at the file
        return woken

    def check(force: bool = False) -> object:
        looks.append(force)
        watcher._stop.set()  # one turn
        return real_check(force)

    watcher._wake.wait = wait_then_signal  # type: ignore[method-assign]
    watcher.check = check  # type: ignore[method-assign]
    watcher._run()
    assert looks == [True]  # the turn's look is the forced one SIGHUP asks for
    assert r.applied == [["cam-a"]] and watcher.reloads == 1
