"""pytest fixtures and helpers for the distributed-mode tests: real servers on loopback, real evidence.

Loaded for every test module by ``pytest_plugins`` in tests/conftest.py; the servers start only for the
tests that ask for them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cv2
import numpy as np
import pytest

from nonsite.bus.events import BoxRecord, Location, ModelInfo, ViolationEvent, new_event_id
from nonsite.config.services import KafkaConfig, S3Config
from nonsite.evidence.capture import CameraMeta, Still, encode_jpeg, write_package_blobs
from nonsite.evidence.store import Store

from .servers import Moto, S3rver, Tansu, s3_env

ROOT = Path(__file__).resolve().parents[2]
T0 = 1714543402.25


@pytest.fixture()
def tansu() -> Iterator[Tansu]:
    """A fresh in-memory Kafka-protocol broker per test."""
    with Tansu() as broker:
        yield broker


@pytest.fixture(scope="session")
def moto() -> Iterator[Moto]:
    """One moto S3 server for the session (tests use their own buckets)."""
    with Moto() as server:
        yield server


@pytest.fixture()
def s3rver(tmp_path: Path) -> Iterator[S3rver]:
    with S3rver(tmp_path / "s3rver") as server:
        yield server


@pytest.fixture()
def s3_env_of(monkeypatch: pytest.MonkeyPatch) -> Callable[[Moto | S3rver], None]:
    """Export the credentials of a server into this test's environment (NONSITE_S3_*)."""
    def apply(server: Moto | S3rver) -> None:
        for k, v in s3_env(server).items():
            monkeypatch.setenv(k, v)
    return apply


def bucket_name() -> str:
    return f"ev-{uuid.uuid4().hex[:12]}"


def kafka_config(broker: Tansu, **over: object) -> KafkaConfig:
    """Settings for the test broker: few partitions, short timeouts (Tansu joins groups in ~3 s)."""
    values: dict[str, object] = {
        "bootstrap_servers": broker.bootstrap, "partitions": 3, "session_timeout_ms": 6000,
        "publish_timeout_s": 3.0,
    }
    values.update(over)
    return KafkaConfig.model_validate(values)


def s3_config(server: Moto | S3rver, bucket: str | None = None, **over: object) -> S3Config:
    values: dict[str, object] = {"endpoint": server.endpoint, "bucket": bucket or bucket_name(), "timeout_s": 3.0}
    values.update(over)
    return S3Config.model_validate(values)


def read_frames(media_dir: Path, n: int) -> list[np.ndarray]:
    """The first ``n`` frames of the parking-lot clip (evidence made of real pictures)."""
    cap = cv2.VideoCapture(str(media_dir / "parking_lot_cctv_timelapse_a_640x480.mp4"))
    out = []
    while len(out) < n:
        ok, f = cap.read()
        assert ok, f"could not read {n} frames from the parking-lot video"
        out.append(f)
    cap.release()
    return out


@pytest.fixture(scope="session")
def clip_frames(media_dir: Path) -> list[np.ndarray]:
    """Eight real frames of the parking-lot clip."""
    return read_frames(media_dir, 8)


def make_event(store: Store, frames: list[np.ndarray], camera_id: str = "cam-01",
               violation_type: str = "sidewalk_parking", n_clip: int = 4) -> ViolationEvent:
    """Write a real evidence package's blobs through ``store`` (as an edge does) and return its event."""
    event_id = new_event_id()
    box = BoxRecord(xyxy=(100, 120, 220, 200), class_name="car", confidence=0.87, track_id=12)
    items = write_package_blobs(
        store, event_id=event_id, violation_type=violation_type,
        camera=CameraMeta(id=camera_id, name="东门", address="人民路 1 号"), zone_id="z-sidewalk",
        zone_polygon=[(0.1, 0.1), (0.9, 0.1), (0.9, 0.9), (0.1, 0.9)],
        onset=Still(T0, frames[0], [box]), confirm=Still(T0 + 0.35, frames[-1], [box]), closeup_xyxy=box.xyxy,
        clip=[(T0 + i * 0.05, encode_jpeg(f, 70)) for i, f in enumerate(frames[:n_clip])],
        sequence=7, timezone="Asia/Shanghai",
    )
    start = datetime.fromtimestamp(T0, UTC)
    return ViolationEvent(
        event_id=event_id, type=violation_type, camera_id=camera_id, camera_name="东门", zone_id="z-sidewalk",
        started_at=start, confirmed_at=start + timedelta(seconds=0.35), track_ids=[12],
        boxes={"onset": [box], "confirm": [box]}, confidence=0.87, dwell_s=0.35,
        model=ModelInfo(name="yolo11n-coco", version="1", sha256="ab" * 32, backend="onnx"),
        rule_config_hash="cd" * 32, evidence=items, location=Location(address="人民路 1 号", lat=31.23, lon=121.47),
    )


def wait_for(predicate: Callable[[], object], timeout_s: float, what: str, every_s: float = 0.2,
             logs: Callable[[], str] | None = None) -> object:
    """Poll ``predicate`` until it is truthy; fail the test naming ``what`` (and ``logs()``) after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    last: object = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(every_s)
    pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what} (last: {last!r})"
                + (f"\n{logs()}" if logs else ""))


def nonsite_process(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """``python -m nonsite ARGS`` in the repository root, output to ``log``."""
    out = open(log, "ab")  # noqa: SIM115 (the child keeps it)
    try:
        return subprocess.Popen([sys.executable, "-m", "nonsite", *args], cwd=ROOT, env={**os.environ, **env},
                                stdout=out, stderr=subprocess.STDOUT)
    finally:
        out.close()


def stop_process(proc: subprocess.Popen[bytes], timeout_s: float = 20) -> int:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    return int(proc.returncode)
