"""Attacks on the console's data path (issue 11): uploads that stall the server, forged note tags, files
readable by every local user, tampered evidence served as the original. Each test performs the attack and
sees it fail."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from console_support import Env, Served, seed

import nonsite.cases.attachments as attachments


@pytest.fixture()
def env(tmp_path: Path, media_dir: Path) -> Iterator[Env]:
    yield seed(tmp_path, media_dir)


def _photo(media_dir: Path) -> bytes:
    return sorted((media_dir / "india_road_thela_animal" / "images" / "val").glob("*.jpg"))[0].read_bytes()


def _dispatched(env: Env, key: str) -> str:
    """The case ``key`` moved to dispatched (ready for feedback) through the API."""
    op, _ = env.api("op")
    rev, _ = env.api("rev")
    n = env.cases[key]
    assert op.post(f"/api/cases/{n}/confirm", json={}).status_code == 200
    assert rev.post(f"/api/cases/{n}/approve", json={}).status_code == 200
    assert op.post(f"/api/cases/{n}/dispatch", json={"team": "capture_team"}).status_code == 200
    return n


def test_a_photo_being_decoded_does_not_stall_other_requests(
        env: Env, media_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The attack: large PNG uploads whose decoding ran on the event loop stalled ``/healthz`` and every page.
    Here the decode is held (it waits on an event) while ``/healthz`` and a page are asked for on the same
    live server: they must answer while the upload is still being decoded."""
    n = _dispatched(env, "stray_dog")
    entered, release = threading.Event(), threading.Event()
    real = attachments._decode_and_reencode

    def held_decode(data: bytes) -> bytes | None:
        entered.set()
        assert release.wait(60), "the test never released the decode"
        return real(data)

    monkeypatch.setattr(attachments, "_decode_and_reencode", held_decode)
    app, _ = env.make_app()
    token = env.users.issue_token("op")
    result: dict[str, httpx.Response] = {}
    with Served(app) as served:
        headers = {"Authorization": f"Bearer {token}"}

        def upload() -> None:
            result["upload"] = httpx.post(f"{served.url}/api/cases/{n}/feedback", headers=headers, timeout=60,
                                          data={"note": "已整改"}, files=[("photos", ("after.jpg", _photo(media_dir),
                                                                                     "image/jpeg"))])

        uploader = threading.Thread(target=upload)
        uploader.start()
        try:
            assert entered.wait(30), "the upload never reached the decoder"
            # The decode is in progress (held): the server still answers others.
            health = httpx.get(f"{served.url}/healthz", timeout=10)
            case = httpx.get(f"{served.url}/api/cases/{n}", headers=headers, timeout=10)
            assert health.status_code == 200 and health.json()["status"] == "ok"
            assert case.status_code == 200 and case.json()["status"] == "dispatched"  # not rectified yet
            assert uploader.is_alive() and not release.is_set()
        finally:
            release.set()
            uploader.join(60)
    assert result["upload"].status_code == 200, result["upload"].text[:300]
    assert result["upload"].json()["status"] == "rectified"


def test_concurrent_decodes_are_bounded(monkeypatch: pytest.MonkeyPatch, media_dir: Path) -> None:
    """Many photos decoded at once (memory: a 40-megapixel decode is ~120 MB) never exceed the bound."""
    running, peak, lock = 0, 0, threading.Lock()
    gate = threading.Barrier(attachments.MAX_CONCURRENT_DECODES, timeout=30)
    real = attachments._decode_and_reencode

    def counted(data: bytes) -> bytes | None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        try:
            gate.wait()  # MAX_CONCURRENT_DECODES at a time meet here: the bound is reached, not just respected
            return real(data)
        finally:
            with lock:
                running -= 1

    monkeypatch.setattr(attachments, "_decode_and_reencode", counted)
    photo = _photo(media_dir)
    out: list[str] = []
    threads = [threading.Thread(target=lambda: out.append(attachments.prepare_photo(photo).sha256))
               for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(out) == 6 and len(set(out)) == 1
    assert peak == attachments.MAX_CONCURRENT_DECODES
