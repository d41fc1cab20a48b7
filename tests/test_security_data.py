"""Attacks on the console's data path (issue 11): uploads that stall the server, forged note tags, files
readable by every local user, tampered evidence served as the original. Each test performs the attack and
sees it fail."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import stat
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from console_support import Env, Served, seed
from sqlalchemy import inspect, select, text
from sqlalchemy.exc import DBAPIError

import nonsite.cases.attachments as attachments
from nonsite.cases import open_db
from nonsite.cases.db import AuditEntry, head_revision
from nonsite.evidence import package_prefix


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


# --- notes: the team and the photos are fields, never read from the note's text -------------------------


def test_tags_typed_into_a_note_are_text_and_dispatch_nowhere(env: Env, media_dir: Path) -> None:
    """The attack: a note ``[team:X] [photos:<sha>]`` typed by a user showed as a dispatch to X with photos."""
    op, _ = env.api("op")
    rev, _ = env.api("rev")
    n = env.cases["stray_dog"]
    someone_elses = "ab" * 32
    forged = f"[team:street_office] [photos:{someone_elses}] 已核实"
    assert op.post(f"/api/cases/{n}/confirm", json={"note": forged}).status_code == 200
    assert rev.post(f"/api/cases/{n}/approve", json={"note": "[team:street_office] ok"}).status_code == 200
    r = op.post(f"/api/cases/{n}/dispatch", json={"team": "capture_team", "note": "[team:street_office] 今日处理"})
    assert r.status_code == 200
    photo = _photo(media_dir)
    r = op.post(f"/api/cases/{n}/feedback", data={"note": f"[photos:{someone_elses}] 已整改"},
                files=[("photos", ("after.jpg", photo, "image/jpeg"))])
    assert r.status_code == 200
    audit = {a["action"]: a for a in op.get(f"/api/cases/{n}").json()["audit"]}
    assert (audit["confirm"]["note"], audit["confirm"]["team"], audit["confirm"]["photos"]) == (forged, None, [])
    assert audit["approve"]["team"] is None
    assert audit["dispatch"]["team"] == "capture_team"  # the form's team, not the note's
    assert audit["dispatch"]["note"] == "[team:street_office] 今日处理"
    stored = [k.rsplit("/", 1)[1].removesuffix(".jpg") for k in env.store.list(f"cases/{n}/feedback/")]
    assert [u.rsplit("/", 1)[1].removesuffix(".jpg") for u in audit["rectify"]["photos"]] == stored
    assert someone_elses not in stored and audit["rectify"]["note"] == f"[photos:{someone_elses}] 已整改"
    page, _ = env.app("op")
    html = page.get(f"/cases/{n}").text
    assert "[team:street_office] [photos:" in html  # shown as the literal text it is
    assert f"/feedback/{someone_elses}.jpg" not in html
    shown = re.findall(r'<dd class="dispatched-to">(.*?)</dd>', page.get("/tasks").text, re.S)
    assert len(shown) == 1 and shown[0].startswith("犬只收容队")  # capture_team
    assert "街道办事处" not in shown[0] and "[team:street_office] 今日处理" in shown[0]  # street_office: text


def _insert_case(conn: Any, dialect: str) -> int:
    when = datetime(2026, 11, 21, 11, 3, 12, tzinfo=UTC) if dialect != "sqlite" else "2026-11-21 11:03:12.000000"
    conn.execute(text(
        "INSERT INTO cases (number, event_id, type, camera_id, camera_name, zone_id, zone_name, address, "
        "started_at, confirmed_at, dwell_s, confidence, track_ids, evidence, manifest_key, manifest_sha256, "
        "signature_key, seal_problems, violation, status, dismiss_note, created_at, updated_at) VALUES "
        "('NS-2026-000001', 'e-1', 'stray_dog', 'cam', '', 'z', '', '', :t, :t, 5, 0.9, '[]', '[]', 'm', 'h', "
        "'s', '[]', '{}', 'rectified', '', :t, :t)"), {"t": when})
    return int(conn.execute(text("SELECT id FROM cases")).scalar_one())


def test_migration_moves_the_consoles_tags_into_columns_and_leaves_forged_ones_as_text(case_db_url: str) -> None:
    """Rows written before 0003_note_columns: the tag the console wrote (it matches what the workflow
    recorded) becomes the column; a tag a user typed stays in the note as text."""
    from alembic import command

    from nonsite.cases.db import _alembic_config, migrate

    sf = open_db(case_db_url, upgrade=False)
    engine = sf.kw["bind"]
    try:
        migrate(engine, "0002")
        sha = "cd" * 32
        when = datetime(2026, 11, 21, 12, tzinfo=UTC) if engine.dialect.name != "sqlite" else "2026-11-21 12:00:00"
        rows = [  # (action, detail as the console and the workflow wrote it)
            ("confirm", {"role": "operator", "note": "[team:street_office] [photos:" + "ef" * 32 + "] 已核实"}),
            ("dispatch", {"role": "operator", "note": "[team:capture_team] [team:street_office] 今日处理",
                          "assignee": "capture_team"}),
            ("rectify", {"role": "operator", "note": f"[photos:{sha}] 已整改",
                         "attachments": [{"key": f"cases/NS-2026-000001/feedback/{sha}.jpg", "sha256": sha}]}),
            ("dispatch", {"note": "[team:street_office] x", "assignee": "capture_team"}),  # forged, not the team
        ]
        with engine.begin() as conn:
            cid = _insert_case(conn, engine.dialect.name)
            for action, detail in rows:
                conn.execute(text("INSERT INTO audit_entries (case_id, at, actor, action, detail) "
                                  "VALUES (:c, :t, 'li', :a, :d)"),
                             {"c": cid, "t": when, "a": action, "d": json.dumps(detail, ensure_ascii=False)})
        assert migrate(engine)[1] == head_revision()
        with sf() as s:
            got = [(e.action, e.team, e.photos, e.detail.get("note")) for e in s.scalars(
                select(AuditEntry).order_by(AuditEntry.id))]
        assert got == [
            ("confirm", None, None, rows[0][1]["note"]),
            ("dispatch", "capture_team", None, "[team:street_office] 今日处理"),
            ("rectify", None, [sha], "已整改"),
            ("dispatch", "capture_team", None, "[team:street_office] x"),
        ]
        for sql in ("UPDATE audit_entries SET actor = 'x'", "DELETE FROM audit_entries"):
            with pytest.raises(DBAPIError, match="append-only"), engine.begin() as conn:  # lifted only to move
                conn.execute(text(sql))
        with engine.begin() as conn:  # and back: the columns go, the rows stay
            command.downgrade(_alembic_config(conn), "0002")
        assert "team" not in {c["name"] for c in inspect(engine).get_columns("audit_entries")}
        for sql in ("UPDATE audit_entries SET actor = 'x'", "DELETE FROM audit_entries"):
            with pytest.raises(DBAPIError, match="append-only"), engine.begin() as conn:  # triggers still there
                conn.execute(text(sql))
    finally:
        engine.dispose()


# --- evidence: what is served is what was hashed ---------------------------------------------------------


def test_a_tampered_evidence_file_is_refused_not_served_as_the_original(
        env: Env, caplog: pytest.LogCaptureFixture) -> None:
    """The attack: a still replaced in the store after sealing was served with the sealed hash as its ETag."""
    client, _ = env.app("op")
    eid, n = env.events["sidewalk_parking"], env.cases["sidewalk_parking"]
    sealed = env.blobs[(eid, "confirm.jpg")]
    ok = client.get(f"/evidence/{eid}/confirm.jpg")
    assert ok.status_code == 200 and ok.content == sealed
    assert ok.headers["etag"] == f'"{hashlib.sha256(sealed).hexdigest()}"'
    forged = env.blobs[(eid, "onset.jpg")]  # another real photo put in its place
    env.store.put(f"{package_prefix(eid)}confirm.jpg", forged, "image/jpeg")
    with caplog.at_level(logging.ERROR, logger="nonsite.console.views"):
        for method in ("GET", "HEAD"):
            r = client.request(method, f"/evidence/{eid}/confirm.jpg", headers={"Range": "bytes=0-99"})
            assert r.status_code == 409 and forged[:100] not in r.content
            assert "etag" not in r.headers
    body = client.get(f"/evidence/{eid}/confirm.jpg").json()["error"]
    assert body["code"] == "evidence_altered" and "nonsite evidence verify" in body["message"]
    assert n in body["message"] and "篡改" in body["text"]
    assert any("evidence altered" in rec.getMessage() and hashlib.sha256(forged).hexdigest() in rec.getMessage()
               for rec in caplog.records)
    # The rest of the package is still served, each with the hash of what is sent.
    clip = client.get(f"/evidence/{eid}/clip.mp4", headers={"Range": "bytes=0-99"})
    assert clip.status_code == 206 and clip.content == env.blobs[(eid, "clip.mp4")][:100]
    assert clip.headers["etag"] == f'"{hashlib.sha256(env.blobs[(eid, "clip.mp4")]).hexdigest()}"'


def test_a_tampered_feedback_photo_is_refused(env: Env, media_dir: Path) -> None:
    n = _dispatched(env, "stray_dog")
    op, _ = env.api("op")
    r = op.post(f"/api/cases/{n}/feedback", data={"note": "ok"}, files=[("photos", ("a.jpg", _photo(media_dir),
                                                                                     "image/jpeg"))])
    assert r.status_code == 200
    page, _ = env.app("op")
    (key,) = env.store.list(f"cases/{n}/feedback/")
    url = f"/cases/{n}/feedback/{key.rsplit('/', 1)[1]}"
    assert page.get(url).status_code == 200
    env.store.put(key, env.blobs[(env.events["stray_dog"], "onset.jpg")], "image/jpeg")
    r = page.get(url)
    assert r.status_code == 409 and "篡改" in r.text and r.headers["content-type"].startswith("text/html")


# --- the data directory: for this user only ---------------------------------------------------------------


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_the_data_directory_and_what_nonsite_writes_in_it_are_for_this_user_only(tmp_path: Path) -> None:
    """The attack: any local user could read cases.db, the evidence and the spools (created 0644/0755 under a
    usual umask of 022). Now every folder is 0700 and every file 0600, from their creation on."""
    from nonsite.app import Embedded
    from nonsite.bus.outbox import Outbox
    from nonsite.config import NonsiteConfig
    from nonsite.evidence.spool import EvidenceSpool

    old = os.umask(0o022)  # the usual umask, which the old code relied on
    data = tmp_path / "data"
    try:
        cfg = NonsiteConfig.model_validate({"data_dir": str(data), "cameras": []})
        node = Embedded(cfg)
        spool = EvidenceSpool(data / "spool", max_bytes=1 << 20)
        outbox = Outbox(data / "outbox", "edge")
        try:
            node.store.put("events/e-1/onset.jpg", b"\xff\xd8\xff still", "image/jpeg")
            node.bus.publish("nonsite.violations", "cam", b"{}")
            with node.sessions() as s:  # the database is written (its WAL file appears)
                s.execute(text("CREATE TABLE IF NOT EXISTS probe (x INTEGER)"))
                s.commit()
            spool.add_blob("events/e-2/onset.jpg", b"still", "image/jpeg")
            outbox.append("nonsite.violations", "cam", b"{}")
            made = sorted(data.rglob("*"))  # while everything is open (SQLite's WAL files exist)
            modes = {p: _mode(p) for p in made}
        finally:
            spool.close()
            outbox.close()
            node.close()
    finally:
        os.umask(old)
    assert {p.name for p in made} >= {"cases.db", "cases.db-wal", "evidence", "onset.jpg", "keys", "signing.pem",
                                      "bus", "bus.sqlite", "bus.sqlite-wal", "spool", "spool.sqlite", "spool.lock",
                                      "blobs", "outbox", "edge.sqlite", "edge.lock"}
    assert _mode(data) == 0o700
    open_to_others = [f"{p.relative_to(data)} {m:o}" for p, m in modes.items()
                      if p.name != "signing.pub.pem" and m & 0o077]
    assert open_to_others == []
    assert all(m == 0o700 for p, m in modes.items() if p.is_dir())
