"""One case through the whole chain, on real parts (issue 15's "done when"):

violation event (real frames and a real clip in the evidence store, as an edge leaves them) → the sealer thread
seals it → the drafter thread drafts the case (seal checked against this node's key) → the operator confirms →
the legal review approves with a fine → documents: 责令改正通知书 and 行政处罚事先告知书, the notice served →
dispatched to the team → the field officer checks in and reports with photos from the mobile page /m/ (Chromium
in mobile emulation; offline first, then online) → rectified, which asks the camera to re-check the place (the
request relayed from the outbox over the bus) → the closing refused while the camera looks → the edge that runs the
case's camera (a real EdgeRunner on a generated street scene, docs/recheck.md) answers with an after package → the
sealer seals it, the drafter records it on the case → the reviewer sees before and after side by side → closed →
the decision relayed over the bus and pushed, signed, to a city platform (a local HTTP server) which opens the
evidence link it got → the platform's status change back through the inbound callback → after the time for
statements, the 行政处罚决定书 → the three documents' PDFs carry the right numbers. A second case: the camera still
sees the car, so the case goes back to the team (``rework``) and shows up again in the officer's task list.

The violation itself is given (what an edge leaves); the re-check's edge runs a scripted detector on a generated
scene (tests/recheck_helpers.py), so this is not a ``slow`` test; it needs Debian's Chromium (the field browser
tests' fixtures) and pdftotext.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import cv2
import numpy as np
import pytest
import uvicorn
from browser.test_field_browser import phone as mobile  # noqa: F401 - fixture: Pixel 7 over `served`
from browser.test_field_browser import playwright  # noqa: F401 - its Chromium
from console_support import PASSWORDS, Env, _package, jpeg_of, login
from edge_helpers import FULL, Running, camera, config, wait_until
from fastapi.testclient import TestClient
from http_receiver import free_port
from platform_simulator import PlatformSimulator, platform
from recheck_helpers import BrightBoxDetector, scene
from sqlalchemy import select

from nonsite.app import seal_check
from nonsite.bus.embedded import EmbeddedBus
from nonsite.bus.events import (
    TOPIC_VIOLATIONS,
    BoxRecord,
    Location,
    ModelInfo,
    OffenderHint,
    ViolationEvent,
    new_event_id,
    utcnow,
)
from nonsite.cases import AuditEntry, Case, open_db
from nonsite.cases.audit import verify_chain
from nonsite.cases.db import CaseRecheck
from nonsite.cases.drafter import run_drafter
from nonsite.cases.organisation import load_organisation
from nonsite.cases.outbox import run_outbox_relay
from nonsite.cases.recheck import RECHECK_ACTOR
from nonsite.config import NonsiteConfig, load_config
from nonsite.evidence import LocalStore, signing_key_path
from nonsite.evidence.manifest import parse_manifest
from nonsite.evidence.package import manifest_key
from nonsite.evidence.sealer import run_sealer
from nonsite.evidence.signing import Signer
from nonsite.evidence.verify import verify_package
from nonsite.integration.hub import build_hub
from nonsite.pipeline.edge import EdgeRunner

#: the whole chain (a browser, an edge, the camera watching 60 s for "present") runs long on a loaded machine; the
#: suite-wide 300 s per test is too short for it.
pytestmark = pytest.mark.timeout(1500)

ROOT = Path(__file__).resolve().parents[1]
REPORT_SECRET, CALLBACK_SECRET, LINK_SECRET = b"chain-report", b"chain-callback", b"chain-evidence-links"
OFFICER, OFFICER_PASSWORD = "sun.hao", "field-pass-5521"
TEAM = "yanshi-group-1"  # 演示中队第一班组: cam-carpark-01's grid, sun.hao's group (examples/organisation.yaml)
PLATE = "沪A12345"
CAMERA, ZONE_ID = "cam-carpark-01", "z-1"  # where the violation was seen (violation_event)
#: cases.recheck of the chain: the place must stay clear for 1 s; the car still there after 60 s is "present" (the
#: timeout also bounds how long the request may wait for the edge before the edge skips it as expired).
RECHECK = "  recheck:\n    enabled: true\n    clear_s: 1\n    timeout_s: 60\n"


@dataclass
class Chain:
    env: Env
    url: str
    number: str
    event_id: str
    sim: PlatformSimulator
    clock: dict[str, timedelta]  # the console's clock offset (the time for statements passes)
    app: Any
    bus: EmbeddedBus  # the node's bus: the sealer, drafter and outbox relay threads use it
    cfg: NonsiteConfig


class Served:
    """uvicorn on a port chosen before the app is built (the evidence links name it)."""

    def __init__(self, app: Any, port: int) -> None:
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                                    lifespan="off", timeout_graceful_shutdown=1))
        self.thread = threading.Thread(target=self.server.run, name="chain-console", daemon=True)

    def __enter__(self) -> Served:
        self.thread.start()
        wait_until(lambda: self.server.started or not self.thread.is_alive(), 15, "the console to listen")
        assert self.server.started, "the console did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def violation_event(store: LocalStore, media_dir: Path) -> ViolationEvent:
    """What an edge leaves: the blobs in the store and the event (sidewalk parking at the car park camera)."""
    frames = sorted((media_dir / "india_road_thela_animal" / "images" / "val").glob("*.jpg"))[:5]
    eid = new_event_id()
    items, _ = _package(store, eid, frames, media_dir / "dog_alone_fence.mp4")
    confirmed = utcnow() - timedelta(minutes=3)
    return ViolationEvent(
        event_id=eid, type="sidewalk_parking", camera_id=CAMERA, camera_name="停车场入口", zone_id=ZONE_ID,
        zone_name="人行道", started_at=confirmed - timedelta(seconds=95), confirmed_at=confirmed, track_ids=[4],
        boxes={"confirm": [BoxRecord(xyxy=(5, 5, 50, 50), class_name="car", confidence=0.9)]}, confidence=0.88,
        dwell_s=95.0, model=ModelInfo(name="yolo11n-coco", version="8.3", sha256="ab" * 32),
        rule_config_hash="cd" * 32, evidence=items,
        location=Location(address="上海市黄浦区南京东路100号", lat=31.2397, lon=121.4998),
        offender_hint=OffenderHint(plate=PLATE, plate_confidence=0.93, plate_format="cn_standard"),
    )


@pytest.fixture()
def served(tmp_path: Path, media_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Chain]:
    """The node's central side for one case: sealer, drafter and decisions relay threads on an embedded bus, the
    console (with the platform hand-off) under uvicorn, and the city platform's simulator."""
    monkeypatch.setenv("NONSITE_PLATFORM_SECRET", REPORT_SECRET.decode())
    monkeypatch.setenv("NONSITE_PLATFORM_CALLBACK_SECRET", CALLBACK_SECRET.decode())
    monkeypatch.setenv("NONSITE_EVIDENCE_LINK_SECRET", LINK_SECRET.decode())
    monkeypatch.delenv("NONSITE_DATA_DIR", raising=False)
    port = free_port()
    org_file = ROOT / "examples" / "organisation.yaml"
    org = load_organisation(org_file)
    with platform(REPORT_SECRET, CALLBACK_SECRET) as sim:
        cfg_path = tmp_path / "nonsite.yaml"
        cfg_path.write_text(
            f"data_dir: {tmp_path / 'data'}\ncases:\n  database_url: sqlite:///{tmp_path / 'cases.db'}\n"
            f"  organisation: {org_file}\n{RECHECK}integration:\n  platform:\n    enabled: true\n    url: {sim.url}\n"
            f"    timeout_s: 5\n    push_on: [closed]\n    link_base_url: http://127.0.0.1:{port}\n",
            encoding="utf-8")
        cfg = load_config(cfg_path)
        data = Path(cfg.data_dir)
        signer = Signer.load_or_create(signing_key_path(cfg.evidence, data))  # this node's sealing key
        store = LocalStore(tmp_path / "evidence")
        env = Env(tmp_path, str(cfg.cases.database_url), store, signer.public_key_pem().encode(), {}, {}, {},
                  signer=signer)
        env.users.add(OFFICER, OFFICER_PASSWORD, "field_officer", "孙浩")
        sf = open_db(env.db_url)
        bus = EmbeddedBus(tmp_path / "bus" / "bus.sqlite")
        stop = threading.Event()
        threads = [
            threading.Thread(target=run_sealer, args=(bus, store, signer, stop), name="sealer", daemon=True),
            threading.Thread(target=run_drafter, args=(bus, sf, "NS", stop), name="drafter", daemon=True,
                             kwargs={"check_seal": seal_check(cfg, data, store), "organisation": org}),
            threading.Thread(target=run_outbox_relay, args=(bus, sf, stop), name="decisions", daemon=True),
        ]
        for t in threads:
            t.start()
        hub = build_hub(cfg, sf, store)
        assert hub is not None
        hub.start(bus, interval_s=0.2)
        offset = {"d": timedelta(0)}
        app, _ = env.make_app(organisation=org, platform=hub, clock=lambda: utcnow() + offset["d"],
                              recheck=cfg.cases.recheck)
        try:
            # the edge's output → sealed → drafted
            event = violation_event(store, media_dir)
            bus.publish(TOPIC_VIOLATIONS, event.camera_id, event.model_dump_json().encode())

            def drafted() -> Case | None:
                with sf() as s:
                    return s.scalar(select(Case).where(Case.event_id == event.event_id))

            wait_until(lambda: drafted() is not None, 60, "the sealer and the drafter to make the case")
            case = drafted()
            assert case is not None and case.status.value == "draft" and case.team == TEAM
            assert case.manifest_key.endswith("/manifest.json") and case.signature_key
            with Served(app, port):
                yield Chain(env, f"http://127.0.0.1:{port}", case.number, event.event_id, sim, offset, app, bus, cfg)
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=10)
            hub.close()
            bus.close()
            sf.kw["bind"].dispose()


def api(chain: Chain, user: str) -> TestClient:
    return TestClient(chain.app, headers={"Authorization": f"Bearer {chain.env.users.issue_token(user)}"})


def trail(chain: Chain) -> tuple[Case, list[AuditEntry]]:
    sf = open_db(chain.env.db_url)
    try:
        with sf() as s:
            case = s.scalars(select(Case).where(Case.number == chain.number)).one()
            return case, list(s.scalars(select(AuditEntry).where(AuditEntry.case_id == case.id)
                                        .order_by(AuditEntry.id)))
    finally:
        sf.kw["bind"].dispose()


def field_report_from_the_phone(chain: Chain, ctx: Any, media_dir: Path, tmp_path: Path) -> Any:
    """The officer on /m/: log in, open the task, check in, report offline, come back online; returns the page."""
    url, number = chain.url, chain.number
    page = ctx.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url + "/m/")
    page.wait_for_url(re.compile(r"/login\?next="))
    page.fill("#username", OFFICER)
    page.fill("#password", OFFICER_PASSWORD)
    page.tap("#login-submit")
    page.wait_for_url(url + "/m/")
    assert page.locator("article.task-card").evaluate_all("els => els.map(e => e.dataset.number)") == [number]
    page.evaluate("navigator.serviceWorker.ready.then(r => r.active.scriptURL)")  # the pages are kept offline
    page.tap(f'article.task-card[data-number="{number}"] a.task-link')
    page.wait_for_url(url + f"/m/cases/{number}")
    assert page.locator("#task").get_attribute("data-status") == "dispatched"
    page.tap("#checkin")
    page.wait_for_selector('#checkin-state[data-state="delivered"]')

    ctx.set_offline(True)
    page.wait_for_selector('#net-state[data-state="offline"]')
    frames = sorted((media_dir / "india_road_thela_animal" / "images" / "val").glob("*.jpg"))
    before, after = tmp_path / "before.jpg", tmp_path / "after.jpg"
    before.write_bytes(jpeg_of(frames[7], width=800))
    after.write_bytes(jpeg_of(frames[8], width=800))
    page.set_input_files("#photo-before", str(before))
    page.set_input_files("#photo-after", str(after))
    page.wait_for_selector("#preview-after img")
    page.check('input[name="result"][value="rectified"]')
    page.fill("#report-note", "车辆已驶离，人行道恢复通行")
    page.tap("#report-submit")
    page.wait_for_selector('#report-state[data-state="queued"]')
    case, _ = trail(chain)
    assert case.status.value == "dispatched"  # nothing reached the server while offline

    ctx.set_offline(False)
    page.wait_for_selector('#report-state[data-state="delivered"]')
    assert page.inner_text("#task-status") == "已整改"
    assert errors == []
    return page


def camera_at_the_place(chain: Chain, tmp_path: Path, *, with_car: bool) -> EdgeRunner:
    """The edge that runs the case's camera, on the node's bus and evidence store: the case's zone (the sidewalk,
    the whole picture; a dwell long enough that the parked car raises no new violation while the test runs), a
    generated street scene with or without the parked car, and a detector that reports that car. It reads the same
    ``cases.recheck`` as the case side (docs/recheck.md)."""
    video = scene(tmp_path / ("street-car.mp4" if with_car else "street-clear.mp4"), with_car)
    zone = {"id": ZONE_ID, "name": "人行道", "kind": "sidewalk", "polygon": FULL, "dwell_s": 3600}
    cfg = config(tmp_path / "edge", [camera(CAMERA, video, 5, live=True, zones=[zone])],
                 cases={"recheck": chain.cfg.cases.recheck.model_dump()})
    Path(cfg.data_dir).mkdir(parents=True, exist_ok=True)
    return EdgeRunner(cfg, BrightBoxDetector(), chain.env.store, chain.bus)  # type: ignore[arg-type]


def recheck_by_the_camera(chain: Chain, tmp_path: Path, request_id: str, *, with_car: bool) -> str:
    """Run the camera's edge until the case's re-check is answered (the request taken from the bus, the after
    package sealed by the sealer thread and recorded by the drafter thread); returns the case's re-check state."""
    edge = camera_at_the_place(chain, tmp_path, with_car=with_car)
    sf = open_db(chain.env.db_url)

    def state() -> str | None:
        with sf() as s:
            return s.scalar(select(Case.recheck_state).where(Case.number == chain.number))

    running = Running(edge)
    try:
        assert edge.rechecks is not None, "the edge has no re-check desk (cases.recheck off?)"
        # present is decided only at the timeout (60 s of watching): the budget covers it many times over
        wait_until(lambda: state() != "pending", 60, "the camera's answer recorded on the case")
    finally:
        running.stop()
        answered = state()
        sf.kw["bind"].dispose()
    assert [e.event_id for e in edge.rechecks.answered] == [request_id]  # this request, answered once
    assert answered is not None
    return answered


def rechecked(chain: Chain, request_id: str) -> CaseRecheck:
    sf = open_db(chain.env.db_url)
    try:
        with sf() as s:
            rc = s.scalar(select(CaseRecheck).where(CaseRecheck.request_id == request_id))
            assert rc is not None
            s.expunge(rc)
            return rc
    finally:
        sf.kw["bind"].dispose()


def after_package_verifies(chain: Chain, rc: CaseRecheck, outcome: str) -> None:
    """The after package is the answer to this request, sealed with this node's key, its manifest saying so."""
    assert rc.after_event_id == rc.request_id and rc.after_manifest_key == manifest_key(rc.request_id)
    result = verify_package(chain.env.store, rc.request_id, chain.env.signer.public_key_pem())
    assert result.ok, result.problems
    manifest = parse_manifest(chain.env.store.get(manifest_key(rc.request_id)))
    assert (manifest["recheck"]["request_id"], manifest["recheck"]["outcome"]) == (rc.request_id, outcome)
    assert manifest["recheck"]["case_number"] == chain.number and manifest["camera"]["id"] == CAMERA
    assert {i["role"] for i in rc.after_evidence} == {"after_first", "after_first_annotated", "after_last",
                                                     "after_last_annotated"}


def still_size(data: bytes) -> tuple[int, int]:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None, "not a decodable image"
    return image.shape[1], image.shape[0]


def pdf_text(client: TestClient, pdf_url: str, tmp_path: Path, name: str) -> str:
    r = client.get(pdf_url)
    assert r.status_code == 200 and r.headers["content-type"] == "application/pdf", (pdf_url, r.status_code)
    path = tmp_path / f"{name}.pdf"
    path.write_bytes(r.content)
    out = subprocess.run(["pdftotext", str(path), "-"], check=True, capture_output=True, text=True).stdout
    return re.sub(r"\s+", "", out)


def test_a_case_from_the_sealed_package_to_the_platform_and_the_penalty_decision(
        served: Chain, mobile: Any, media_dir: Path, tmp_path: Path) -> None:  # noqa: F811 - the fixture
    if shutil.which("pdftotext") is None:
        pytest.fail("pdftotext (poppler-utils) is not installed: make system-deps")
    chain = served
    number = chain.number
    op, rev = api(chain, "op"), api(chain, "rev")
    year = (utcnow() + timedelta(hours=8)).year  # the documents' year on Shanghai's calendar

    # alert → confirmed → approved with a fine (the legal review is another person)
    assert op.post(f"/api/cases/{number}/confirm", json={}).status_code == 200
    r = rev.post(f"/api/cases/{number}/approve", json={"decision": "penalty", "amount_yuan": 200})
    assert r.status_code == 200, r.text

    # documents of the decision: the order to rectify, the penalty notice, its service with the signed receipt
    for kind in ("rectification_order", "penalty_notice"):
        r = rev.post(f"/api/cases/{number}/documents", json={"kind": kind, "party": f"{PLATE}车辆所有人"})
        assert r.status_code == 201, r.text
    docs = {d["kind"]: d for d in r.json()["documents"]}
    assert docs["rectification_order"]["number"] == f"X城管责改〔{year}〕第0001号"
    assert docs["penalty_notice"]["number"] == f"X城管罚告〔{year}〕第0001号"
    receipt = jpeg_of(sorted((media_dir / "india_road_thela_animal" / "images" / "val").glob("*.jpg"))[3])
    served_at = utcnow().isoformat()  # served on the spot, right after the issue
    r = rev.post(f"/api/cases/{number}/documents/{docs['penalty_notice']['id']}/service",
                 data={"method": "direct", "served_at": served_at, "recipient": "车辆所有人本人"},
                 files={"receipt": ("回证.jpg", receipt, "image/jpeg")})
    assert r.status_code == 201, r.text
    assert r.json()["deadlines"]["notice_number"] == f"X城管罚告〔{year}〕第0001号"

    # dispatched to the grid's team; the officer reports from the phone (offline, then online)
    r = op.post(f"/api/cases/{number}/dispatch", json={"team": TEAM})
    assert r.status_code == 200, r.text
    field_report_from_the_phone(chain, mobile, media_dir, tmp_path)
    case, entries = trail(chain)
    assert case.status.value == "rectified"
    [report] = [e for e in entries if e.action == "rectify"]
    assert report.actor == OFFICER and len(report.photos or []) == 2
    assert [e.action for e in entries if e.action == "field_checkin"] == ["field_checkin"]

    # camera re-check: the officer's "rectified" asked the camera (the request relayed from the outbox to the
    # bus); the reviewer cannot close while the camera has not answered
    assert case.recheck_state == "pending"
    request_id = report.detail["recheck_request"]
    r = rev.post(f"/api/cases/{number}/close", json={"note": "现场复核已整改，结案"})
    assert r.status_code == 422 and "waits for the camera re-check" in r.text, r.text
    assert trail(chain)[0].status.value == "rectified"
    # the edge that runs the case's camera sees the place clear: after package → sealer → drafter → the case
    assert recheck_by_the_camera(chain, tmp_path, request_id, with_car=False) == "clear"
    rc = rechecked(chain, request_id)
    assert rc.state == "clear" and rc.requested_by == OFFICER and rc.camera_id == CAMERA and rc.zone_id == ZONE_ID
    assert rc.classes == ["car"] and rc.detail["case_number"] == number and rc.detail["frames"] >= 2
    after_package_verifies(chain, rc, "clear")
    case, entries = trail(chain)
    assert case.status.value == "rectified" and case.recheck_state == "clear"
    [answer] = [e for e in entries if e.action == "recheck"]
    assert answer.actor == RECHECK_ACTOR and answer.id > report.id
    assert (answer.detail["request_id"], answer.detail["outcome"], answer.detail["after_event_id"]) == (
        request_id, "clear", request_id)
    assert sorted(answer.photos or []) == sorted(i["sha256"] for i in rc.after_evidence)

    # the reviewer's case page: before (the violation's stills) beside after (the camera's re-check stills)
    browser = TestClient(chain.app)
    assert login(browser, "rev", PASSWORDS["rev"]).status_code == 303
    page = browser.get(f"/cases/{number}")
    assert page.status_code == 200
    section = page.text.split('id="recheck"', 1)[1].split("</section>", 1)[0]
    assert 'data-state="clear"' in section
    before_html, after_html = section.split('class="before"', 1)[1].split('class="after"', 1)
    before_urls = re.findall(r'<img src="([^"]+)"', before_html)
    after_urls = re.findall(r'<img src="([^"]+)"', after_html)
    assert len(before_urls) == 2 and all(u.startswith(f"/evidence/{chain.event_id}/") for u in before_urls)
    assert after_urls == [f"/evidence/{request_id}/after_first_annotated.jpg",
                          f"/evidence/{request_id}/after_last_annotated.jpg"]
    for url in before_urls + after_urls:
        got = browser.get(url)
        assert got.status_code == 200 and got.headers["content-type"] == "image/jpeg", (url, got.status_code)
        assert got.content[:2] == b"\xff\xd8"
        event_id, name = url.split("/")[2:4]
        assert got.content == chain.env.store.get(f"events/{event_id}/{name}")
        if event_id == request_id:
            assert still_size(got.content)[0] == 320  # the camera's picture (with the banner below it)
    for role in ("after_first", "after_last"):  # the untouched frames: the camera's 320x240 picture
        assert still_size(chain.env.store.get(f"events/{request_id}/{role}.jpg")) == (320, 240)

    # the camera answered clear: now the reviewer closes
    r = rev.post(f"/api/cases/{number}/close", json={"note": "现场复核已整改，结案"})
    assert r.status_code == 200, r.text
    case, entries = trail(chain)
    [closing] = [e for e in entries if e.action == "close"]
    assert closing.detail["recheck"] == {"request_id": request_id, "outcome": "clear", "after_event_id": request_id}

    # the decision is relayed over the bus and pushed, signed, to the platform (push_on: closed)
    wait_until(lambda: any(k.startswith(f"{number}:") for k in chain.sim.cases), 60, "the report at the platform")
    [(key, pushed)] = [(k, v) for k, v in chain.sim.cases.items() if k.startswith(f"{number}:")]
    assert pushed["externalCaseNo"] == number and pushed["status"] == "closed" and chain.sim.refused == []
    # the platform's case viewer opens the evidence link it got (no login: the signed link is the credential)
    link = pushed["images"][0]["url"]
    assert link.startswith(chain.url + f"/platform/evidence/events/{chain.event_id}/")
    with urllib.request.urlopen(link, timeout=30) as res:  # noqa: S310 - our own loopback server
        image = res.read()
        assert res.headers["Content-Type"] == "image/jpeg"
    name = urlsplit(link).path.rsplit("/", 1)[1]
    assert hashlib.sha256(image).hexdigest() == hashlib.sha256(chain.env.store.get(
        f"events/{chain.event_id}/{name}")).hexdigest()

    # the platform files it and says so through the inbound callback
    callback = chain.url + "/api/platform/city/callback"
    assert chain.sim.send_status(callback, number, "accepted", "CY-E1", "已受理归档") == (
        200, {"ok": True, "applied": None})
    case, entries = trail(chain)
    assert case.status.value == "closed"
    assert (entries[-1].actor, entries[-1].action) == ("platform:city", "platform_status")
    assert (entries[-1].detail["platform_status"], entries[-1].detail["platform_event_id"]) == ("accepted", "CY-E1")
    assert "已受理归档" in entries[-1].detail["note"]

    # the time for statements passes (3 working days from the service): the penalty decision
    chain.clock["d"] = timedelta(days=10)
    r = rev.post(f"/api/cases/{number}/documents", json={"kind": "penalty_decision", "party": f"{PLATE}车辆所有人"})
    assert r.status_code == 201, r.text
    docs = {d["kind"]: d for d in r.json()["documents"]}
    decision_year = (utcnow() + timedelta(days=10, hours=8)).year
    assert docs["penalty_decision"]["number"] == f"X城管罚决〔{decision_year}〕第0001号"

    texts = {kind: pdf_text(browser, d["pdf_url"], tmp_path, kind) for kind, d in docs.items()}
    assert docs["rectification_order"]["number"] in texts["rectification_order"]
    assert number in texts["rectification_order"] and PLATE in texts["rectification_order"]
    assert docs["penalty_notice"]["number"] in texts["penalty_notice"] and "200元" in texts["penalty_notice"]
    decision = texts["penalty_decision"]
    assert docs["penalty_decision"]["number"] in decision and number in decision
    assert docs["penalty_notice"]["number"] in decision  # the notice it follows, by its number
    assert "贰佰元" in decision and "上海市黄浦区南京东路100号" in decision

    case, entries = trail(chain)
    actions = [e.action for e in entries]
    assert actions[0] == "created" and actions.index("confirm") < actions.index("approve") \
        < actions.index("dispatch") < actions.index("rectify") < actions.index("recheck") \
        < actions.index("close") < actions.index("platform_status")
    assert actions.count("rectify") == actions.count("recheck") == 1 and "rework" not in actions
    assert actions.count("issue_document") == 3 and actions.count("serve_document") == 1
    sf = open_db(chain.env.db_url)
    assert verify_chain(sf).ok
    sf.kw["bind"].dispose()


def test_the_camera_still_sees_the_car_so_the_case_goes_back_to_the_team(
        served: Chain, mobile: Any, media_dir: Path, tmp_path: Path) -> None:  # noqa: F811 - the fixture
    """The officer reports "rectified" from the phone, but the camera still sees the parked car at the timeout:
    the case returns to the team (``rework`` by the system), cannot be closed, and is back in the officer's list."""
    chain = served
    number = chain.number
    op, rev = api(chain, "op"), api(chain, "rev")
    assert op.post(f"/api/cases/{number}/confirm", json={}).status_code == 200
    r = rev.post(f"/api/cases/{number}/approve", json={"decision": "penalty", "amount_yuan": 200})
    assert r.status_code == 200, r.text
    r = op.post(f"/api/cases/{number}/dispatch", json={"team": TEAM})
    assert r.status_code == 200, r.text
    page = field_report_from_the_phone(chain, mobile, media_dir, tmp_path)
    case, entries = trail(chain)
    [report] = [e for e in entries if e.action == "rectify"]
    assert case.status.value == "rectified" and case.recheck_state == "pending"
    request_id = report.detail["recheck_request"]

    assert recheck_by_the_camera(chain, tmp_path, request_id, with_car=True) == "present"
    rc = rechecked(chain, request_id)
    after_package_verifies(chain, rc, "present")
    case, entries = trail(chain)
    assert case.status.value == "dispatched" and case.recheck_state == "present"
    [rework] = [e for e in entries if e.action == "rework"]
    assert rework.actor == RECHECK_ACTOR and rework.id > report.id
    assert (rework.before_status, rework.after_status) == ("rectified", "dispatched")
    assert (rework.detail["request_id"], rework.detail["outcome"]) == (request_id, "present")
    assert sorted(rework.photos or []) == sorted(i["sha256"] for i in rc.after_evidence)
    assert [e.action for e in entries if e.id > report.id] == ["rework"]  # nothing else happened to the case
    # the car still there: the reviewer cannot close
    r = rev.post(f"/api/cases/{number}/close", json={"note": "结案"})
    assert r.status_code == 409, r.text
    assert trail(chain)[0].status.value == "dispatched"

    # back on the officer's phone: the task is in the list again, open, with the camera's verdict
    page.goto(chain.url + "/m/")
    page.wait_for_selector(f'article.task-card[data-number="{number}"]')
    assert page.locator("article.task-card").evaluate_all("els => els.map(e => e.dataset.number)") == [number]
    page.tap(f'article.task-card[data-number="{number}"] a.task-link')
    page.wait_for_url(chain.url + f"/m/cases/{number}")
    assert page.locator("#task").get_attribute("data-status") == "dispatched"
    assert page.locator("#recheck-state").get_attribute("data-state") == "present"
