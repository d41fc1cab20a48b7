"""End to end: the demo config over the real shared media, as `make run` does, then the console."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import av
import pytest
from console_support import standard_users
from fastapi.testclient import TestClient
from sqlalchemy import select

from nonsite.cases.db import AuditEntry, Case, open_db
from nonsite.console.app import create_app
from nonsite.evidence.local import LocalStore

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory, media_dir: Path, models_dir: Path) -> tuple[Path, str]:
    data = tmp_path_factory.mktemp("demo") / "data"
    env = {**os.environ, "NONSITE_DATA_DIR": str(data), "NONSITE_MEDIA_DIR": str(media_dir),
           "NONSITE_MODELS_DIR": str(models_dir)}
    r = subprocess.run([sys.executable, "-m", "nonsite", "run", "--config", "examples/demo.yaml", "--exit-when-done"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout + r.stderr
    return data, r.stdout


def test_demo_prints_progress_per_camera_and_a_summary(demo_run: tuple[Path, str]) -> None:
    _, out = demo_run
    for cam in ("cam-carpark-01", "cam-fence-02", "cam-junction-03", "cam-lane-04"):
        assert f"[{cam}]" in out
    assert "violations: sidewalk_parking" in out and "street_vending" in out and "stray_dog" in out
    summary = next(line for line in out.splitlines() if line.startswith("violations: "))
    assert "piled_materials 1" in summary and "mobile_hawker 0" in summary, summary
    # the junction (a vending zone) runs on the street model, the other cameras on the base model
    detector = next(line for line in out.splitlines() if line.startswith("detector: "))
    assert "street-yolo11n" in detector and "for cam-junction-03" in detector, detector
    assert "yolo11n-coco" in detector, detector
    assert "evidence packages sealed:" in out and "case drafts:" in out


def test_demo_finds_sidewalk_parking_and_a_stray_dog_as_case_drafts(demo_run: tuple[Path, str]) -> None:
    data, _ = demo_run
    sessions = open_db(f"sqlite:///{data / 'cases.db'}")
    with sessions() as s:
        cases = s.scalars(select(Case)).all()
    kinds = Counter(c.type for c in cases)
    assert kinds["sidewalk_parking"] >= 1, kinds
    assert kinds["stray_dog"] >= 1, kinds
    assert {c.camera_id for c in cases if c.type == "stray_dog"} == {"cam-fence-02"}
    piled = [c for c in cases if c.type == "piled_materials"]  # the composite camera: a new type in the demo
    assert [c.camera_id for c in piled] == ["cam-lane-04"]
    assert "reference" in {e["role"] for e in piled[0].evidence}  # the clean lane before the crates came
    assert all(c.status == "draft" for c in cases)
    for c in cases:
        assert c.started_at <= c.confirmed_at
        roles = {e["role"] for e in c.evidence}
        assert {"onset", "confirm", "onset_annotated", "confirm_annotated", "closeup", "clip"} <= roles


def test_every_evidence_package_verifies_and_tampering_is_named(demo_run: tuple[Path, str], tmp_path: Path) -> None:
    data, _ = demo_run
    env = {**os.environ, "NONSITE_DATA_DIR": str(data)}
    r = subprocess.run([sys.executable, "-m", "nonsite", "evidence", "verify", "--all"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    sessions = open_db(f"sqlite:///{data / 'cases.db'}")
    with sessions() as s:
        n = len(s.scalars(select(Case)).all())
    assert r.stdout.count("OK ") == n

    # A copy of the data with one byte of one still changed: verify names exactly that file.
    import shutil

    copy = tmp_path / "data"
    shutil.copytree(data, copy)
    pkg = next((copy / "evidence" / "events").iterdir())
    blob = pkg / "confirm.jpg"
    raw = bytearray(blob.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    blob.write_bytes(bytes(raw))
    r = subprocess.run([sys.executable, "-m", "nonsite", "evidence", "verify", pkg.name],
                       cwd=ROOT, env={**os.environ, "NONSITE_DATA_DIR": str(copy)},
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1
    assert "confirm.jpg" in r.stdout and "sha256" in r.stdout


def test_clip_is_playable_h264_and_originals_are_untouched(demo_run: tuple[Path, str]) -> None:
    data, _ = demo_run
    pkg = next((data / "evidence" / "events").iterdir())
    with av.open(str(pkg / "clip.mp4")) as f:
        stream = f.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert sum(1 for _ in f.decode(stream)) >= 2
    import cv2

    onset, annotated = cv2.imread(str(pkg / "onset.jpg")), cv2.imread(str(pkg / "onset_annotated.jpg"))
    assert onset is not None and annotated is not None
    assert onset.shape[1] == annotated.shape[1] and onset.shape[0] < annotated.shape[0]  # banner below


def test_console_lists_the_cases_and_decisions_persist_across_restart(demo_run: tuple[Path, str]) -> None:
    data, _ = demo_run
    url = f"sqlite:///{data / 'cases.db'}"
    store = LocalStore(data / "evidence")
    pub = (data / "keys" / "signing.pub.pem").read_bytes()
    users = standard_users()  # the console needs a user directory; an admin's API token opens it
    bearer = {"Authorization": f"Bearer {users.issue_token('adm')}"}
    client = TestClient(create_app(session_factory=open_db(url), store=store, public_key_pem=pub, auth=users),
                        headers=bearer)
    page = client.get("/").text
    sessions = open_db(url)
    with sessions() as s:
        cases = sorted(s.scalars(select(Case)).all(), key=lambda c: c.confirmed_at, reverse=True)
    for c in cases:
        assert c.number in page
    assert "人行道违停" in page and "流浪犬" in page
    assert page.index(cases[0].number) < page.index(cases[-1].number)  # newest first

    detail = client.get(f"/cases/{cases[0].number}")
    assert detail.status_code == 200
    assert "clip.mp4" in detail.text and "confirm_annotated.jpg" in detail.text
    assert client.get(f"/evidence/{cases[0].event_id}/clip.mp4").headers["content-type"] == "video/mp4"

    first, second = cases[0], cases[-1]
    assert client.post(f"/api/cases/{first.number}/confirm", json={}).status_code == 200
    r = client.post(f"/api/cases/{second.number}/dismiss", json={"reason": "false_positive", "note": "shadow"})
    assert r.status_code == 200

    restarted = TestClient(create_app(session_factory=open_db(url), store=store, public_key_pem=pub, auth=users),
                           headers=bearer)
    assert restarted.get(f"/api/cases/{first.number}").json()["status"] == "confirmed"
    again = restarted.get(f"/api/cases/{second.number}").json()
    assert again["status"] == "dismissed"
    with open_db(url)() as s:
        actions = [a.action for a in s.scalars(select(AuditEntry)).all()]
    assert "confirm" in actions and "dismiss" in actions
