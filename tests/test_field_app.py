"""The field officers' mobile app (issue 15) through its API and pages: check-ins, results with before/after
photos, idempotency, another team's cases, photo checks, the audit trail, the installable app's files.

The bureau is examples/organisation.yaml: sun.hao is in 演示中队第一班组 (the carpark camera's cases), zhao.lei in
the second group (the junction camera's)."""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from console_support import MemoryUsers, jpeg_of, login
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from test_bureau_wiring import ORG_FILE, T0, draft

from nonsite.cases import AuditEntry, Case, open_db
from nonsite.cases.audit import entry_digest, verify_chain
from nonsite.cases.bureau import supervise
from nonsite.cases.field import distance_m, valid_key
from nonsite.cases.organisation import load_organisation
from nonsite.cases.workflow import apply_action
from nonsite.console import create_app
from nonsite.evidence import LocalStore

USERS = {"op": "operator", "rev": "reviewer", "sun.hao": "field_officer", "zhao.lei": "field_officer",
         "boss": "leader", "adm": "admin"}
CAMERA = (31.2397, 121.4998)  # where make_sealed's camera stands (the case's lat/lon)


class Bureau:
    def __init__(self, sf: sessionmaker[Session], store: LocalStore, app: Any, users: MemoryUsers,
                 cases: dict[str, Case]) -> None:
        self.sf, self.store, self.app, self.users, self.cases = sf, store, app, users, cases

    def api(self, user: str, scopes: frozenset[str] | None = None) -> TestClient:
        token = self.users.issue_token(user) if scopes is None else self.users.issue_token(user, scopes)
        return TestClient(self.app, headers={"Authorization": f"Bearer {token}"})

    def browser(self, user: str) -> TestClient:
        client = TestClient(self.app)
        assert login(client, user, "pw-" + user).status_code == 303
        return client

    def trail(self, key: str) -> list[AuditEntry]:
        with self.sf() as s:
            return list(s.scalars(select(AuditEntry).where(AuditEntry.case_id == self.cases[key].id)
                                  .order_by(AuditEntry.id)))

    def status(self, key: str) -> str:
        with self.sf() as s:
            return s.get_one(Case, self.cases[key].id).status.value

    def feedback_files(self, key: str) -> list[str]:
        return sorted(self.store.list(f"cases/{self.cases[key].number}/feedback/"))


def dispatched(sf: sessionmaker[Session], org: Any, camera: str, minutes: int) -> Case:
    case = draft(sf, org, camera, at=T0 - timedelta(minutes=minutes))
    for action, actor, role in (("confirm", "op", "operator"), ("approve", "rev", "reviewer"),
                                ("dispatch", "op", "operator")):
        apply_action(sf, case.number, action, actor, role=role, now=T0 - timedelta(minutes=minutes - 1))
    return case


def make_bureau(db_url: str, root: Path) -> Bureau:
    org = load_organisation(ORG_FILE)
    sf = open_db(db_url)
    cases = {
        "mine": dispatched(sf, org, "cam-carpark-01", 50),  # group 1 (sun.hao)
        "mine2": dispatched(sf, org, "cam-carpark-01", 40),
        "theirs": dispatched(sf, org, "cam-junction-03", 30),  # group 2 (zhao.lei)
        "draft": draft(sf, org, "cam-carpark-01", at=T0 - timedelta(minutes=5)),  # group 1, not dispatched
    }
    users = MemoryUsers()
    for name, role in USERS.items():
        users.add(name, "pw-" + name, role)
    store = LocalStore(root / "evidence")
    app = create_app(session_factory=sf, store=store, auth=users, session_secret="test-secret-" + "x" * 20,
                     organisation=org, clock=lambda: T0)
    return Bureau(sf, store, app, users, cases)


@pytest.fixture()
def bureau(tmp_path: Path) -> Iterator[Bureau]:
    b = make_bureau(f"sqlite:///{tmp_path / 'cases.db'}", tmp_path)
    yield b
    b.sf.kw["bind"].dispose()


@pytest.fixture()
def any_db_bureau(case_db_url: str, tmp_path: Path) -> Iterator[Bureau]:
    b = make_bureau(case_db_url, tmp_path)
    yield b
    b.sf.kw["bind"].dispose()


@pytest.fixture(scope="module")
def photo(media_dir: Path) -> bytes:
    return jpeg_of(sorted((media_dir / "india_road_thela_animal" / "images" / "val").glob("*.jpg"))[1], width=640)


@pytest.fixture(scope="module")
def photo2(media_dir: Path) -> bytes:
    return jpeg_of(sorted((media_dir / "india_road_thela_animal" / "images" / "val").glob("*.jpg"))[2], width=640)


KEY = "3f1c9a52-7d0e-4b7a-9a41-0c2f5e8d1b66"


def checkin(client: TestClient, number: str, key: str = KEY, **body: Any) -> Any:
    payload = {"key": key, "lat": 31.23975, "lon": 121.49990, "accuracy_m": 12.5,
               "device_at": "2026-09-30T10:01:02+08:00", **body}
    return client.post(f"/api/cases/{number}/field/checkin", json=payload)


def report(client: TestClient, number: str, key: str = KEY, result: str = "rectified", note: str = "",
           before: list[bytes] = (), after: list[bytes] = (), **extra: str) -> Any:  # type: ignore[assignment]
    files = [("before", (f"before{i}.jpg", b, "image/jpeg")) for i, b in enumerate(before)]
    files += [("after", (f"after{i}.jpg", b, "image/jpeg")) for i, b in enumerate(after)]
    return client.post(f"/api/cases/{number}/field/report", data={"key": key, "result": result, "note": note, **extra},
                       files=files or None)


# --- check-in -------------------------------------------------------------------------------------------


def test_a_check_in_records_the_phones_position_and_both_clocks_once(bureau: Bureau) -> None:
    sun = bureau.api("sun.hao")
    number = bureau.cases["mine"].number
    r = checkin(sun, number)
    assert r.status_code == 201, r.text
    first = r.json()
    assert (first["duplicate"], first["action"], first["status"]) == (False, "field_checkin", "dispatched")
    assert first["distance_m"] == round(distance_m(31.23975, 121.49990, *CAMERA)) == 11
    again = checkin(sun, number)  # the phone did not hear the answer and sends it again
    assert again.status_code == 200 and again.json()["duplicate"] is True and again.json()["at"] == first["at"]
    entries = [e for e in bureau.trail("mine") if e.action == "field_checkin"]
    assert len(entries) == 1
    (entry,) = entries
    assert entry.actor == "sun.hao" and entry.at == T0  # the server's time (the app's clock)
    assert entry.detail == {"idempotency_key": KEY, "role": "field_officer", "lat": 31.23975, "lon": 121.4999,
                            "accuracy_m": 12.5, "distance_m": 11, "device_at": "2026-09-30T02:01:02+00:00"}
    assert entry.before_status == entry.after_status == "dispatched"
    assert bureau.status("mine") == "dispatched"
    assert verify_chain(bureau.sf).ok


def test_a_check_in_without_a_position_keeps_the_time_and_the_reason(bureau: Bureau) -> None:
    sun = bureau.api("sun.hao")
    r = sun.post(f"/api/cases/{bureau.cases['mine'].number}/field/checkin",
                 json={"key": "k-no-position-1", "position_error": "User denied Geolocation"})
    assert r.status_code == 201, r.text
    entry = bureau.trail("mine")[-1]
    assert entry.detail["position_error"] == "User denied Geolocation" and "lat" not in entry.detail


@pytest.mark.parametrize(("body", "status"), [
    ({"key": "short"}, 422),  # not a key
    ({"key": "k-bad-lat-0001", "lat": 91.0, "lon": 121.0}, 422),
    ({"key": "k-half-pos-001", "lat": 31.0}, 422),
    ({"key": "k-extra-field1", "note": "x"}, 422),  # unknown fields are refused
])
def test_a_check_in_that_is_not_one_is_refused(bureau: Bureau, body: dict[str, Any], status: int) -> None:
    r = bureau.api("sun.hao").post(f"/api/cases/{bureau.cases['mine'].number}/field/checkin", json=body)
    assert r.status_code == status, r.text
    assert [e.action for e in bureau.trail("mine") if e.action == "field_checkin"] == []


# --- the result -----------------------------------------------------------------------------------------


def test_rectified_moves_the_case_on_and_a_resent_report_stores_one_photo(bureau: Bureau, photo: bytes,
                                                                          photo2: bytes) -> None:
    sun = bureau.api("sun.hao")
    number = bureau.cases["mine"].number
    r = report(sun, number, note="车辆已驶离", before=[photo], after=[photo2])
    assert r.status_code == 201, r.text
    assert (r.json()["status"], r.json()["action"], r.json()["duplicate"]) == ("rectified", "rectify", False)
    again = report(sun, number, note="车辆已驶离", before=[photo], after=[photo2])
    assert again.status_code == 200 and again.json()["duplicate"] is True
    assert again.json()["photos"] == r.json()["photos"]
    assert bureau.status("mine") == "rectified"
    rectified = [e for e in bureau.trail("mine") if e.action == "rectify"]
    assert len(rectified) == 1
    (entry,) = rectified
    files = bureau.feedback_files("mine")
    assert len(files) == 2  # one before, one after: nothing stored twice
    stored = {hashlib.sha256(bureau.store.get(k)).hexdigest() for k in files}
    assert set(entry.photos or []) == stored  # the hashes of what is stored are in the audit entry
    assert entry.detail["result"] == "rectified" and entry.detail["note"] == "车辆已驶离"
    assert len(entry.detail["before"]) == len(entry.detail["after"]) == 1
    assert entry.detail["before"][0] != entry.detail["after"][0]
    assert entry.detail["idempotency_key"] == KEY and entry.detail["role"] == "field_officer"
    # the photos are part of the entry's hash: changing one would break the chain
    assert entry.entry_hash == entry_digest(
        seq=entry.chain_seq, prev_hash=entry.prev_hash, case_id=entry.case_id, at=entry.at, actor=entry.actor,
        action=entry.action, before_status=entry.before_status, after_status=entry.after_status,
        detail=entry.detail, team=entry.team, photos=entry.photos)
    assert verify_chain(bureau.sf).ok
    # the stored bytes are re-encoded (not the phone's file) and the console serves them like any feedback photo
    assert photo not in [bureau.store.get(k) for k in files]
    sha = entry.detail["after"][0]
    served = bureau.api("rev").get(f"/cases/{number}/feedback/{sha}.jpg")
    assert served.status_code == 200 and hashlib.sha256(served.content).hexdigest() == sha
    # the reviewer closes it as today
    assert bureau.api("rev").post(f"/api/cases/{number}/close", json={}).status_code == 200


@pytest.mark.parametrize("result", ["not_found", "offender_absent", "follow_up"])
def test_other_results_are_recorded_and_audited_without_moving_the_case(bureau: Bureau, photo: bytes,
                                                                        result: str) -> None:
    sun = bureau.api("sun.hao")
    r = report(sun, bureau.cases["mine"].number, result=result, note="摊主不在，明早复查", before=[photo])
    assert r.status_code == 201, r.text
    assert (r.json()["status"], r.json()["action"]) == ("dispatched", "field_report")
    entry = bureau.trail("mine")[-1]
    assert (entry.action, entry.before_status, entry.after_status) == ("field_report", "dispatched", "dispatched")
    assert entry.detail["result"] == result and entry.detail["note"] == "摊主不在，明早复查"
    assert entry.photos == entry.detail["before"] and len(entry.photos) == 1
    assert bureau.status("mine") == "dispatched"
    # still the team's task: a later report with another key may rectify it
    r = report(sun, bureau.cases["mine"].number, key="second-visit-0001", note="已整改")
    assert r.status_code == 201 and r.json()["status"] == "rectified"
    assert verify_chain(bureau.sf).ok


def test_a_non_image_is_refused_and_nothing_is_stored(bureau: Bureau, photo: bytes) -> None:
    sun = bureau.api("sun.hao")
    number = bureau.cases["mine"].number
    script = b"<script>alert(1)</script>" + b"\x00" * 100
    r = report(sun, number, before=[photo], after=[script])
    assert r.status_code == 415, r.text
    assert r.json()["error"]["code"] == "not_an_image"
    assert bureau.feedback_files("mine") == []  # the good photo of the same report is not kept either
    assert bureau.status("mine") == "dispatched"
    assert [e.action for e in bureau.trail("mine")][-1] == "dispatch"
    truncated = photo[: len(photo) // 3]
    assert report(sun, number, after=[truncated]).status_code == 415
    # the refused key was not used up: the phone sends the corrected report with it
    r = report(sun, number, after=[photo])
    assert r.status_code == 201 and r.json()["status"] == "rectified"


def test_another_teams_case_is_refused(bureau: Bureau, photo: bytes) -> None:
    zhao, sun = bureau.api("zhao.lei"), bureau.api("sun.hao")
    number = bureau.cases["mine"].number
    for r in (checkin(zhao, number), report(zhao, number, after=[photo])):
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    assert bureau.feedback_files("mine") == []
    assert bureau.status("mine") == "dispatched"
    assert bureau.browser("zhao.lei").get(f"/m/cases/{number}").status_code == 404
    # their own case is theirs; each sees only their team's tasks
    assert checkin(zhao, bureau.cases["theirs"].number).status_code == 201
    assert checkin(sun, bureau.cases["theirs"].number, key="sun-tries-0001").status_code == 404
    mine = bureau.browser("sun.hao").get("/m/").text
    assert bureau.cases["mine"].number in mine and bureau.cases["theirs"].number not in mine


def test_only_a_dispatched_case_takes_field_records(bureau: Bureau) -> None:
    sun = bureau.api("sun.hao")
    number = bureau.cases["draft"].number
    r = checkin(sun, number)
    assert r.status_code == 409 and r.json()["error"]["code"] == "invalid_transition"
    assert report(sun, number, note="x").status_code == 409
    r = report(sun, bureau.cases["mine"].number, result="fixed", note="x")
    assert r.status_code == 422


def test_roles_scopes_and_csrf(bureau: Bureau) -> None:
    number = bureau.cases["mine"].number
    for user in ("op", "rev", "boss"):
        assert checkin(bureau.api(user), number).status_code == 403, user
        assert bureau.browser(user).get("/m/").status_code == 403, user
    assert checkin(bureau.api("adm"), number).status_code == 201  # admin may
    reader = bureau.api("sun.hao", frozenset({"cases:read"}))
    r = checkin(reader, number, key="reader-key-0001")
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden_scope"
    assert reader.get("/m/").status_code == 200
    browser = bureau.browser("sun.hao")
    r = browser.post(f"/api/cases/{number}/field/checkin", json={"key": "no-csrf-key-001"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "csrf"
    csrf = re.search(r'data-csrf="([^"]+)"', browser.get("/m/").text)
    assert csrf is not None
    r = browser.post(f"/api/cases/{number}/field/checkin", json={"key": "with-csrf-key-1"},
                     headers={"X-CSRF-Token": csrf.group(1)})
    assert r.status_code == 201
    stranger = TestClient(bureau.app)
    r = stranger.get("/m/", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/login?next=%2Fm%2F"


def test_copies_sent_at_the_same_time_make_one_record(any_db_bureau: Bureau, photo: bytes) -> None:
    b = any_db_bureau
    number = b.cases["mine"].number
    clients = [b.api("sun.hao") for _ in range(4)]
    answers: list[Any] = []
    start = threading.Barrier(len(clients))

    def send(client: TestClient, kind: str) -> None:
        start.wait()
        answers.append(checkin(client, number, key="same-checkin-1") if kind == "checkin"
                       else report(client, number, key="same-report-1", after=[photo]))

    for kind in ("checkin", "report"):
        answers.clear()
        threads = [threading.Thread(target=send, args=(c, kind)) for c in clients]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert sorted(a.status_code for a in answers) == [200, 200, 200, 201], [a.text for a in answers]
        assert sum(not a.json()["duplicate"] for a in answers) == 1
    actions = [e.action for e in b.trail("mine")]
    assert actions.count("field_checkin") == 1 and actions.count("rectify") == 1
    assert len(b.feedback_files("mine")) == 1
    assert verify_chain(b.sf).ok


# --- pages and the installable app ----------------------------------------------------------------------


def test_my_tasks_pin_supervision_first_and_link_the_place(bureau: Bureau) -> None:
    mine, mine2 = bureau.cases["mine"].number, bureau.cases["mine2"].number
    supervise(bureau.sf, mine2, "zhou.min", "今日必须处理", new_deadline=T0 + timedelta(hours=2), role="supervisor",
              now=T0)
    page = bureau.browser("sun.hao").get("/m/")
    assert page.status_code == 200
    text = page.text
    pinned, _, rest = text.partition('id="tasks-open"')
    assert mine2 in pinned and "今日必须处理" in pinned and mine not in pinned and mine in rest
    assert 'href="geo:31.239700,121.499800?q=31.239700,121.499800(' in text
    assert '<link rel="manifest" href="/m/manifest.webmanifest">' in text
    case = bureau.browser("sun.hao").get(f"/m/cases/{mine}").text
    assert 'capture="environment"' in case and 'accept="image/*"' in case
    assert f'data-url="/api/cases/{mine}/field/report"' in case and 'id="checkin"' in case
    for result in ("已整改", "现场未发现", "当事人不在场", "需后续跟进"):
        assert result in case
    english = bureau.browser("sun.hao").get(f"/m/cases/{mine}?lang=en").text
    for text in ("Arrival check-in", "Before photos (camera)", "Offender absent", "Needs follow-up", "Open in maps"):
        assert text in english


def test_the_records_show_on_the_task_page_escaped(bureau: Bureau) -> None:
    number = bureau.cases["mine"].number
    sun = bureau.api("sun.hao")
    assert checkin(sun, number).status_code == 201
    assert report(sun, number, result="follow_up", note="<img src=x onerror=alert(1)>").status_code == 201
    page = bureau.browser("sun.hao").get(f"/m/cases/{number}").text
    assert "距摄像机 11 米" in page and "需后续跟进" in page
    assert "<img src=x" not in page and "&lt;img src=x onerror=alert(1)&gt;" in page
    console = bureau.browser("adm").get(f"/cases/{number}").text  # the console's trail names them too
    assert "到达签到" in console and "现场反馈" in console


def test_the_service_worker_and_manifest_come_from_this_origin(bureau: Bureau) -> None:
    client = TestClient(bureau.app)  # not logged in: they hold no data
    sw = client.get("/m/sw.js")
    assert sw.status_code == 200 and sw.headers["content-type"].startswith("text/javascript")
    assert "script-src 'self'" in sw.headers["content-security-policy"]
    assert 'importScripts(ROOT + "/static/field/queue.js")' in sw.text and "var ROOT = \"\";" in sw.text
    manifest = client.get("/m/manifest.webmanifest").json()
    assert (manifest["start_url"], manifest["scope"], manifest["display"]) == ("/m/", "/m/", "standalone")
    for icon in manifest["icons"]:
        assert client.get(icon["src"]).status_code == 200
    for name in ("queue.js", "field.js", "field.css", "offline.html"):
        assert client.get(f"/static/field/{name}").status_code == 200


def test_keys_and_distances() -> None:
    assert valid_key(KEY) and not valid_key("short") and not valid_key("x" * 65) and not valid_key("a b c d e f")
    assert round(distance_m(31.0, 121.0, 31.0, 121.0)) == 0
    assert 110_000 < distance_m(31.0, 121.0, 32.0, 121.0) < 111_500  # one degree of latitude


def test_a_report_may_be_as_large_as_a_feedback_upload_and_no_larger(bureau: Bureau, media_dir: Path) -> None:
    images = sorted((media_dir / "india_road_thela_animal" / "images" / "val").glob("*.jpg"))
    big = [jpeg_of(images[i], width=1920) for i in (3, 4, 5)]
    assert sum(map(len, big)) > 1024 * 1024  # over the limit of other request bodies
    sun = bureau.api("sun.hao")
    number = bureau.cases["mine"].number
    r = report(sun, number, result="follow_up", before=big)
    assert r.status_code == 201, r.text
    huge = b"\xff\xd8\xff" + b"\0" * (10 * 1024 * 1024)
    r = report(sun, bureau.cases["mine2"].number, key="huge-report-01", after=[huge])
    assert r.status_code == 413 and r.json()["error"]["code"] == "too_large"
    assert bureau.feedback_files("mine2") == []
