"""The JSON API end to end: the whole case workflow, feedback uploads, documents, cameras and zones, the live
stream, and bad input of every kind answering a clear 4xx."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import cv2
import httpx
import numpy as np
import pytest
from console_support import T0, Env, Served, add_case, seed

from nonsite.cases.db import AuditEntry


@pytest.fixture()
def env(tmp_path: Path, media_dir: Path) -> Iterator[Env]:
    yield seed(tmp_path, media_dir)


def _frame(media_dir: Path, i: int = 1) -> bytes:
    return sorted((media_dir / "india_road_thela_animal" / "images" / "val").glob("*.jpg"))[i].read_bytes()


def _error(r: httpx.Response, status: int, code: str) -> dict[str, str]:
    assert r.status_code == status, (r.status_code, r.text[:300])
    body = r.json()["error"]
    assert body["code"] == code, body
    assert body["message"] and "Traceback" not in r.text
    return body  # type: ignore[no-any-return]


def test_the_whole_workflow_by_api(env: Env, media_dir: Path) -> None:
    op, _ = env.api("op")
    rev, sf = env.api("rev")
    n = env.cases["sidewalk_parking"]
    assert op.post(f"/api/cases/{n}/confirm", json={"note": "车牌清晰"}).json()["status"] == "confirmed"
    assert op.get(f"/api/cases/{n}").json()["permitted_actions"] == ["dismiss"]
    assert sorted(rev.get(f"/api/cases/{n}").json()["permitted_actions"]) == ["approve", "dismiss", "return"]

    _error(rev.post(f"/api/cases/{n}/return", json={}), 422, "comment_required")
    _error(rev.post(f"/api/cases/{n}/return", json={"note": "   "}), 422, "comment_required")
    assert rev.post(f"/api/cases/{n}/return", json={"note": "补充车牌特写"}).json()["status"] == "returned"
    assert op.post(f"/api/cases/{n}/confirm", json={"note": "已补充"}).json()["status"] == "confirmed"
    assert rev.post(f"/api/cases/{n}/approve", json={"note": "证据充分"}).json()["status"] == "approved"

    _error(op.post(f"/api/cases/{n}/dispatch", json={}), 422, "team_required")
    body = _error(op.post(f"/api/cases/{n}/dispatch", json={"team": "swat"}), 422, "unknown_team")
    assert "capture_team" in body["message"]
    _error(op.post(f"/api/cases/{n}/approve", json={"team": "x"}), 403, "forbidden")
    _error(op.post(f"/api/cases/{n}/confirm", json={"team": "capture_team"}), 422, "bad_request")
    r = op.post(f"/api/cases/{n}/dispatch", json={"team": "enforcement_team", "note": "请今日处理"})
    assert r.status_code == 200 and r.json()["status"] == "dispatched"

    _error(op.post(f"/api/cases/{n}/feedback", data={"note": ""}), 422, "feedback_empty")
    jpeg = _frame(media_dir)
    png = cv2.imencode(".png", cv2.imdecode(np.frombuffer(_frame(media_dir, 2), np.uint8), cv2.IMREAD_COLOR))[1]
    files = [("photos", ("after.jpg", jpeg, "image/jpeg")), ("photos", ("after2.png", png.tobytes(), "image/png"))]
    r = op.post(f"/api/cases/{n}/feedback", data={"note": "车辆已驶离"}, files=files)
    assert r.status_code == 200 and r.json()["status"] == "rectified"
    _error(rev.post(f"/api/cases/{n}/close", json={"reason": "false_positive"}), 422, "bad_request")
    assert rev.post(f"/api/cases/{n}/close", json={"note": "结案"}).json()["status"] == "closed"
    _error(rev.post(f"/api/cases/{n}/close", json={}), 409, "invalid_transition")

    detail = rev.get(f"/api/cases/{n}").json()
    steps = [(a["actor"], a["action"], a["after_status"]) for a in detail["audit"]]
    assert steps == [("system:drafter", "created", "draft"), ("op", "confirm", "confirmed"),
                     ("rev", "return", "returned"), ("op", "confirm", "confirmed"), ("rev", "approve", "approved"),
                     ("op", "dispatch", "dispatched"), ("op", "rectify", "rectified"), ("rev", "close", "closed")]
    dispatch = detail["audit"][5]
    assert dispatch["team"] == "enforcement_team" and dispatch["note"] == "请今日处理"
    feedback = detail["audit"][6]
    assert feedback["note"] == "车辆已驶离" and len(feedback["photos"]) == 2
    # the photos are stored re-encoded as JPEG under the case's prefix, named by their sha256
    for url in feedback["photos"]:
        sha = url.rsplit("/", 1)[1].removesuffix(".jpg")
        stored = env.store.get(f"cases/{n}/feedback/{sha}.jpg")
        assert hashlib.sha256(stored).hexdigest() == sha and stored[:3] == b"\xff\xd8\xff"
        assert cv2.imdecode(np.frombuffer(stored, np.uint8), cv2.IMREAD_COLOR).shape[1] > 100
        served = op.get(url)
        assert served.status_code == 200 and served.content == stored and served.headers["content-type"] == "image/jpeg"
    with sf() as s:
        assert s.query(AuditEntry).count() == 3 + 7


def test_uploads_are_checked_for_type_and_size(env: Env, media_dir: Path) -> None:
    op, _ = env.api("op", max_upload_bytes=120_000)
    rev, _ = env.api("rev")
    n = env.cases["stray_dog"]
    op.post(f"/api/cases/{n}/confirm", json={})
    rev.post(f"/api/cases/{n}/approve", json={})
    op.post(f"/api/cases/{n}/dispatch", json={"team": "capture_team"})

    def send(name: str, data: bytes, ctype: str = "image/jpeg") -> httpx.Response:
        return op.post(f"/api/cases/{n}/feedback", data={"note": "x"}, files=[("photos", (name, data, ctype))])

    body = _error(send("evil.jpg", b"<script>alert(1)</script>"), 415, "not_an_image")
    assert "JPEG or PNG" in body["message"] and "evil.jpg" in body["message"]
    _error(send("x.jpg", b"\xff\xd8\xff\xe0" + b"\x00" * 64), 415, "bad_image")
    _error(send("x.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40), 415, "bad_image")
    gif = b"GIF89a" + b"\x00" * 100
    _error(send("x.gif", gif, "image/gif"), 415, "not_an_image")
    # a PNG header declaring a 100000 x 100000 canvas is refused before decoding
    bomb = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\x0dIHDR" + (100_000).to_bytes(4, "big") * 2 + b"\x08\x02\x00\x00\x00"
    _error(send("bomb.png", bomb), 415, "image_too_large")
    big = _frame(media_dir, 1)  # 160 kB > 120 kB
    assert len(big) > 120_000
    body = _error(send("big.jpg", big), 413, "too_large")
    assert "at most 117 KB" in body["message"] and body["text"].startswith("上传内容")

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit is counted as the body arrives
        for _ in range(40):
            yield b"x" * 8192

    r = op.post(f"/api/cases/{n}/feedback", content=chunks(),
                headers={"Content-Type": "multipart/form-data; boundary=zz"})
    _error(r, 413, "too_large")
    many = [("photos", (f"p{i}.jpg", _frame(media_dir, 0)[:100], "image/jpeg")) for i in range(6)]
    _error(op.post(f"/api/cases/{n}/feedback", files=many), 422, "too_many_photos")
    assert op.get(f"/api/cases/{n}").json()["status"] == "dispatched"
    assert list(env.store.list(f"cases/{n}/")) == []  # nothing refused was stored
    ok = send("small.jpg", _frame(media_dir, 0))  # 61 kB
    assert ok.status_code == 200 and ok.json()["status"] == "rectified"
    # other requests have their own (1 MB) cap
    _error(op.post(f"/api/cases/{n}/confirm", content=b"{" + b" " * 1_100_000 + b"}",
                   headers={"Content-Type": "application/json"}), 413, "too_large")


BAD_STRINGS = ["' OR '1'='1", "1; DROP TABLE cases; --", "<script>alert(1)</script>", "%", "2026_0000", "\\", "沪A%",
               "../../etc/passwd"]


def test_bad_input_answers_clear_4xx(env: Env) -> None:
    client, _ = env.api("adm")
    parking = env.cases["sidewalk_parking"]
    for s in BAD_STRINGS:
        r = client.get("/api/cases", params={"q": s})
        assert r.status_code == 200 and r.json()["total"] == 0, s
        r = client.get("/api/cases", params={"type": s, "camera": s})
        assert r.status_code == 200 and r.json()["total"] == 0, s
        assert client.get(f"/api/cases/{quote(s, safe='')}").status_code in (404, 405), s  # '/' splits a path
        r = client.post(f"/api/cases/{parking}/dismiss", json={"reason": s})
        _error(r, 422, "invalid_reason")
    _error(client.get("/api/cases", params={"q": "\u0000"}), 422, "bad_filter")  # SQLite would end the pattern
    _error(client.get("/api/cases", params={"camera": "a\nb"}), 422, "bad_filter")
    _error(client.get("/api/cases?status=<b>"), 422, "bad_filter")
    _error(client.get("/api/cases?from=yesterday"), 422, "bad_filter")
    _error(client.get("/api/cases?date=2026-13-01"), 422, "bad_filter")
    _error(client.get("/api/cases?q=" + "x" * 201), 422, "bad_filter")
    _error(client.get("/api/cases?limit=abc"), 422, "bad_request")
    _error(client.get("/api/cases?offset=-1"), 422, "bad_request")
    _error(client.post(f"/api/cases/{parking}/confirm", json={"note": 123}), 422, "bad_request")
    _error(client.post(f"/api/cases/{parking}/confirm", json={"note": "x", "admin": True}), 422, "bad_request")
    _error(client.post(f"/api/cases/{parking}/confirm", json=["note"]), 422, "bad_request")
    body = _error(client.post(f"/api/cases/{parking}/confirm", content=b"{not json",
                              headers={"Content-Type": "application/json"}), 422, "bad_request")
    assert "not valid JSON" in body["message"]
    _error(client.post(f"/api/cases/{parking}/confirm", json={"note": "x" * 2001}), 422, "bad_request")
    _error(client.post(f"/api/cases/{parking}/explode", json={}), 404, "unknown_action")
    _error(client.post(f"/api/cases/{parking}/rectify", json={}), 404, "unknown_action")
    _error(client.post("/api/cases/NS-1999-000001/approve", json={}), 404, "not_found")
    _error(client.get("/api/nothing-here"), 404, "not_found")
    _error(client.delete(f"/api/cases/{parking}"), 405, "method_not_allowed")
    _error(client.get("/api/events?since=20260101T000000.000000~x"), 422, "bad_cursor")
    _error(client.get("/api/events?status=nope"), 422, "bad_filter")
    assert client.get(f"/api/cases/{parking}").json()["status"] == "draft"  # nothing changed


def test_filters_and_search(env: Env, media_dir: Path) -> None:
    client, _ = env.api("op")
    parking, dog, vending = env.cases["sidewalk_parking"], env.cases["stray_dog"], env.cases["street_vending"]

    def numbers(**params: str) -> list[str]:
        r = client.get("/api/cases", params=params)
        assert r.status_code == 200, r.text
        return [c["number"] for c in r.json()["items"]]

    assert numbers(q="沪A12345") == [parking]
    assert numbers(q="a123") == [parking]  # plates match regardless of case
    # ...and of the separators people type (the normalised plate column, as the case queries search it)
    assert numbers(q="沪A·12345") == [parking]
    assert numbers(q="沪a 123-45") == [parking]
    assert numbers(q=dog) == [dog]
    assert numbers(q="公园北门") == [dog]
    assert numbers(q="南京东路") == [parking, dog, vending]
    assert numbers(camera="cam-stray_dog") == [dog]
    # times are the city's (T0 is 19:03:12 in Shanghai; the others 18:03 and 17:03)
    assert numbers(**{"from": "2026-11-21T18:00"}) == [parking, dog]
    assert numbers(to="2026-11-21T18:00") == [vending]
    assert numbers(date="2026-11-21") == [parking, dog, vending]
    assert numbers(date="2026-11-22") == []
    assert numbers(**{"from": "2026-11-21T10:30:00Z"}) == [parking]  # ISO with an offset is taken as given
    assert numbers(status="draft", type="stray_dog", q="公园") == [dog]
    # the parameters of the case queries' one reader: lists, the plate alone, repeats
    assert numbers(type="stray_dog,street_vending") == [dog, vending]
    assert numbers(plate="沪a·12345") == [parking] and numbers(plate="苏E") == []
    assert numbers(number=parking[-6:]) == [parking] and numbers(repeats="1") == []
    r = client.get("/api/cases", params={"from": "2026-11-22", "to": "2026-11-21"})
    assert r.status_code == 422 and "swap them" in r.json()["error"]["message"]


def test_case_documents(env: Env) -> None:
    client, _ = env.app("rev")
    n = env.cases["stray_dog"]
    r = client.get(f"/cases/{n}/document")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert f'<p id="number">{n}</p>' in r.text and "非现场执法案件材料" in r.text
    assert "script-src" not in r.headers["content-security-policy"]
    assert "default-src 'none'" in r.headers["content-security-policy"]
    assert "Non-site enforcement case file" in client.get(f"/cases/{n}/document?lang=en").text
    pdf = client.get(f"/cases/{n}/document.pdf")
    assert pdf.status_code == 200 and pdf.headers["content-type"] == "application/pdf"
    assert pdf.content.startswith(b"%PDF-") and f'filename="{n}.pdf"' in pdf.headers["content-disposition"]
    assert client.get("/cases/NS-1999-000001/document").status_code == 404
    assert client.get("/cases/NS-1999-000001/document.pdf").status_code == 404
    page = client.get(f"/cases/{n}").text
    assert f'href="/cases/{n}/document"' in page and f'href="/cases/{n}/document.pdf"' in page

    bare, _ = env.app("rev", documents=None)
    r = bare.get(f"/cases/{n}/document")
    assert r.status_code == 404 and "未配置案件材料" in r.text
    assert 'id="document-link"' not in bare.get(f"/cases/{n}").text

    class Broken:
        def html(self, case: object, lang: str) -> str:
            raise RuntimeError("font missing")

        def pdf(self, case: object, lang: str) -> bytes:
            raise RuntimeError("font missing")

    broken, _ = env.app("rev", documents=Broken())
    r = broken.get(f"/cases/{n}/document.pdf")
    assert r.status_code == 500 and "材料生成失败" in r.text and "font missing" not in r.text


def test_cameras_and_zones(env: Env, media_dir: Path) -> None:
    assert env.cameras is not None
    admin, _ = env.api("adm")
    cams = admin.get("/api/cameras").json()["items"]
    assert [(c["id"], c["state"]) for c in cams] == [("cam-east", "up"), ("cam-park", "down")]
    snap = admin.get("/api/cameras/cam-east/snapshot")
    assert snap.status_code == 200 and snap.headers["content-type"] == "image/jpeg"
    assert snap.content == env.cameras.snapshot("cam-east")
    _error(admin.get("/api/cameras/cam-park/snapshot"), 404, "no_frame")
    _error(admin.get("/api/cameras/nope/snapshot"), 404, "camera_not_found")

    zone = {"id": "walk-2", "name": "西侧人行道 <i>", "kind": "no_parking",
            "polygon": [[0.1, 0.5], [0.4, 0.5], [0.4, 0.9], [0.1, 0.9]], "dwell_s": 60}
    r = admin.put("/api/cameras/cam-east/zones", json={"zones": [zone]})
    assert r.status_code == 200, r.text
    saved_camera, saved_zones = env.cameras.saved[-1]
    assert saved_camera == "cam-east" and len(saved_zones) == 1
    assert {k: saved_zones[0][k] for k in zone} == zone  # validated; defaults (e.g. schedule) may be added
    listed = admin.get("/api/cameras").json()["items"][0]["zones"]
    assert [{k: z[k] for k in zone} for z in listed] == [zone]

    def problems(zones: object) -> list[str]:
        body = _error(admin.put("/api/cameras/cam-east/zones", json={"zones": zones}), 422, "invalid_zones")
        return [p["code"] for p in body["problems"]]  # type: ignore[index]

    assert problems([{**zone, "polygon": [[0.1, 0.1], [0.2, 0.2]]}]) == ["too_few_points"]
    assert problems([{**zone, "polygon": [[0.1, 0.1], [1.2, 0.2], [0.3, 0.3]]}]) == ["out_of_range"]
    assert problems([{**zone, "polygon": [[0.1, 0.1], ["a", 0.2], [0.3, 0.3]]}]) == ["bad_point"]
    nan = json.dumps({"zones": [{**zone, "polygon": [[0.1, 0.1], [float("nan"), 0.2], [0.3, 0.3]]}]})
    r = admin.put("/api/cameras/cam-east/zones", content=nan, headers={"Content-Type": "application/json"})
    assert [p["code"] for p in _error(r, 422, "invalid_zones")["problems"]] == ["bad_point"]  # type: ignore[index]
    assert problems([{**zone, "kind": "lava"}]) == ["unknown_kind"]
    assert problems([{**zone, "id": "bad id!"}]) == ["bad_id"]
    assert problems([{**zone, "id": "<script>"}]) == ["bad_id"]
    assert problems([zone, zone]) == ["duplicate_id"]
    assert problems([{**zone, "dwell_s": -1}]) == ["bad_dwell"]
    assert problems([{**zone, "color": "red"}]) == ["unknown_field"]
    assert problems("zones") == ["not_a_list"]
    assert problems([zone] * 65) == ["too_many_zones"]
    body = _error(admin.put("/api/cameras/cam-east/zones", json={"zones": [{**zone, "polygon": [[0, 0]]}]}),
                  422, "invalid_zones")
    assert body["problems"][0]["text"] == "区域 1（walk-2）：至少需要 3 个顶点，现在只有 1 个。"  # type: ignore[index]
    _error(admin.put("/api/cameras/cam-east/zones", json=[zone]), 422, "bad_request")
    _error(admin.put("/api/cameras/cam-east/zones", json={"zones": [], "extra": 1}), 422, "bad_request")
    _error(admin.put("/api/cameras/nope/zones", json={"zones": []}), 404, "camera_not_found")
    env.cameras.refuse = "zone walk-2 overlaps the road"
    body = _error(admin.put("/api/cameras/cam-east/zones", json={"zones": [zone]}), 422, "rejected_by_camera")
    assert "overlaps the road" in body["message"]
    assert len(env.cameras.saved) == 1  # nothing invalid reached the camera

    unmanaged, _ = env.api("adm", cameras=None)
    _error(unmanaged.get("/api/cameras"), 404, "cameras_unmanaged")


def _events(lines: Iterator[str], count: int) -> list[tuple[str, dict[str, object]]]:
    """The next ``count`` events of a server-sent event stream (event id, data)."""
    out: list[tuple[str, dict[str, object]]] = []
    ident, data = "", ""
    for line in lines:
        if line.startswith("id: "):
            ident = line[4:]
        elif line.startswith("data: "):
            data = line[6:]
        elif line == "" and data:
            out.append((ident, json.loads(data)))
            data = ""
            if len(out) == count:
                return out
    raise AssertionError(f"the stream ended after {len(out)} events")


def test_live_updates_stream_new_cases_and_status_changes(env: Env, media_dir: Path) -> None:
    app, _ = env.make_app(live_poll_s=0.1)
    dog, parking = env.cases["stray_dog"], env.cases["sidewalk_parking"]
    op_token = env.users.issue_token("op")
    with Served(app) as served:
        auth = {"Authorization": f"Bearer {op_token}"}
        actor = httpx.Client(base_url=served.url, headers=auth, timeout=10)
        watcher = httpx.Client(base_url=served.url, headers=auth, timeout=10)
        with watcher.stream("GET", "/api/events", params={"type": "stray_dog", "lang": "en"}) as r:
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
            lines = r.iter_lines()
            assert next(lines).startswith("retry: ")
            assert actor.post(f"/api/cases/{dog}/confirm", json={}).status_code == 200
            assert actor.post(f"/api/cases/{parking}/dismiss", json={"reason": "duplicate"}).status_code == 200
            new = add_case(env, media_dir, ("dog2", "stray_dog", T0 + timedelta(minutes=5), "cam-stray_dog", "公园北门",
                                            "z-park", "公园入口", None), 4)
            (id1, first), (id2, second), (_, third) = _events(lines, 3)
        assert first["number"] == dog and first["status"] == "confirmed" and first["matches"] is True
        assert first["status_label"] == "Confirmed" and first["type_label"] == "Stray dog"
        assert second["number"] == parking and second["matches"] is False  # not a stray dog
        assert third["number"] == new.number and third["status"] == "draft" and third["matches"] is True
        assert third["time"] == "2026-11-21 19:08:12 (UTC+08:00)" and str(third["url"]).startswith("/cases/")
        # a reconnecting browser sends the last id it saw and gets what came after it
        with watcher.stream("GET", "/api/events", params={"type": "stray_dog"},
                            headers={"Last-Event-ID": id1}) as r:
            (resumed_id, resumed), = _events(r.iter_lines(), 1)
        assert resumed["number"] == parking and resumed_id == id2
        # strangers get no stream
        assert httpx.get(served.url + "/api/events", timeout=60).status_code == 401
        actor.close()
        watcher.close()


def _set_recheck(sf: Any, number: str, state: str | None) -> None:
    """What the re-check desk does to a case (cases/recheck.py): its newest re-check's state, a new updated_at."""
    from datetime import UTC, datetime

    from sqlalchemy import select

    from nonsite.cases import Case

    with sf() as session:
        case = session.scalars(select(Case).where(Case.number == number)).one()
        case.recheck_state = state
        case.updated_at = datetime.now(UTC)
        session.commit()


def test_the_live_stream_carries_the_camera_recheck_state_and_its_label(env: Env) -> None:
    app, sf = env.make_app(live_poll_s=0.1)
    dog = env.cases["stray_dog"]
    with Served(app) as served:
        watcher = httpx.Client(base_url=served.url, timeout=10,
                               headers={"Authorization": f"Bearer {env.users.issue_token('op')}"})
        with watcher.stream("GET", "/api/events", params={"lang": "en"}) as r:
            lines = r.iter_lines()
            assert next(lines).startswith("retry: ")
            _set_recheck(sf, dog, "pending")
            (_, pending), = _events(lines, 1)
            _set_recheck(sf, dog, "present")
            (_, present), = _events(lines, 1)
            _set_recheck(sf, dog, None)
            (_, cleared), = _events(lines, 1)
        watcher.close()
    assert (pending["number"], pending["recheck_state"], pending["recheck_label"]) == (dog, "pending",
                                                                                       "Waiting for the camera")
    assert pending["recheck_title"] == "Camera re-check"
    assert (present["recheck_state"], present["recheck_label"]) == ("present", "Still there: back to the team")
    assert (cleared["recheck_state"], cleared["recheck_label"]) == (None, None)
