"""Camera re-check before closing, the camera side (docs/recheck.md): the pure checker, and an edge runner over the
embedded bus that answers requests for its cameras with sealed, signed after packages."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cv2
import numpy as np
import pytest
from edge_helpers import Running, camera, config, runner, wait_until
from recheck_helpers import CAR, ZONE, BrightBoxDetector, draw_pile, scene, street
from sqlalchemy import select
from test_cases_drafter import make_sealed

from nonsite.bus.events import (
    TOPIC_DEAD_LETTER,
    TOPIC_RECHECK,
    RecheckRequest,
    ViolationEvent,
)
from nonsite.cases import CaseStatus, approve, close, confirm, dispatch, draft_case, open_db, rectify, relay_outbox
from nonsite.cases.db import Case, CaseRecheck
from nonsite.cases.drafter import draft_pending
from nonsite.evidence.manifest import parse_manifest
from nonsite.evidence.package import manifest_key
from nonsite.evidence.sealer import seal_pending
from nonsite.evidence.signing import Signer
from nonsite.evidence.verify import verify_package
from nonsite.pipeline.detections import make_detections
from nonsite.pipeline.leftobject import LEFT_OBJECT, LeftObjectState, Reference
from nonsite.pipeline.recheck import CheckState, left_object_fraction, left_object_present, objects_in_zone, step

# -- the pure checker -------------------------------------------------------------------------------------------


def test_only_the_violating_object_in_the_zone_counts() -> None:
    polygon = np.array([[0, 100], [200, 100], [200, 200], [0, 200]])
    d = make_detections(
        [(10, 120, 60, 180),     # a car standing in the zone, where the original was
         (10, 20, 60, 80),       # a car above the zone (its ground point is outside)
         (120, 130, 190, 190),   # a car in the zone but elsewhere than the original
         (12, 125, 58, 178),     # a person where the original was
         (15, 122, 62, 182)],    # a faint car there
        ["car", "car", "car", "person", "car"], confidence=[0.9, 0.9, 0.9, 0.9, 0.1])
    assert objects_in_zone(d, polygon, ["car"], [], 0.25).tolist() == [True, False, True, False, False]
    assert objects_in_zone(d, polygon, ["car"], [(0, 110, 70, 190)], 0.25).tolist() == [
        True, False, False, False, False]
    assert objects_in_zone(d, polygon, ["car", "person"], [(0, 110, 70, 190)], 0.25).tolist() == [
        True, False, False, True, False]
    assert objects_in_zone(make_detections([], []), polygon, ["car"], [], 0.25).tolist() == []


def test_clear_needs_an_unbroken_clear_stretch_and_present_comes_at_the_timeout() -> None:
    s = CheckState()
    seen = [True, True, False, False, True, False, False, False, False]
    outcomes = []
    for i, present in enumerate(seen):
        s, out = step(s, present, 100.0 + i, clear_s=3, timeout_s=60)
        outcomes.append(out)
    # clear from t=105 (the object came back at 104): decided at 108
    assert outcomes == [None] * 8 + ["clear"] and (s.started, s.clear_since, s.frames) == (100.0, 105.0, 9)

    s = CheckState()
    for i in range(11):
        s, out = step(s, i % 2 == 0, 10.0 + i, clear_s=3, timeout_s=10)
    assert out == "present" and s.frames == 11  # never clear for 3 s: still there at the timeout
    s, out = step(CheckState(), False, 5.0, clear_s=0.5, timeout_s=10)
    assert out is None and s.clear_since == 5.0  # one frame is no stretch yet
    assert step(s, False, 5.5, clear_s=0.5, timeout_s=10)[1] == "clear"


def paving(seed: int = 1) -> np.ndarray:
    """A paved street: grey flagstones with darker joints and a little grain (so a shift is visible)."""
    rng = np.random.default_rng(seed)
    img = (np.full((240, 320, 1), 115) + rng.integers(-6, 7, (240, 320, 1))).repeat(3, axis=2).astype(np.uint8)
    for x in range(0, 320, 24):
        cv2.line(img, (x, 0), (x, 240), (80, 82, 85), 1)
    for y in range(0, 240, 18):
        cv2.line(img, (0, y), (320, y), (80, 82, 85), 1)
    return img


def test_a_left_object_is_judged_against_the_zones_clear_reference_inside_its_box() -> None:
    reference = paving()
    piled = draw_pile(reference.copy())  # sacks over CAR, the original box
    assert left_object_present(piled, reference, [CAR]) and left_object_fraction(piled, reference, [CAR]) > 0.9
    # the same scene in other light, or shaken by 2 px: the box is clear
    brighter = np.clip(reference.astype(np.float32) * 1.2, 0, 255).astype(np.uint8)
    darker = (reference.astype(np.float32) * 0.8).astype(np.uint8)
    shaken = np.roll(np.roll(reference, 2, axis=1), -2, axis=0)
    for same in (reference, brighter, darker, shaken):
        assert not left_object_present(same, reference, [CAR])
    # sacks elsewhere in the zone are not the original object
    assert not left_object_present(draw_pile(reference.copy(), (180, 100, 280, 170)), reference, [CAR])
    # still there in other light and shaken; half of the pile left still counts; two boxes: either one
    moved = np.clip(np.roll(piled, 2, axis=1).astype(np.float32) * 1.15, 0, 255).astype(np.uint8)
    assert left_object_present(moved, reference, [CAR])
    assert left_object_present(draw_pile(reference.copy(), (10, 20, 60, 90)), reference, [CAR])
    assert left_object_present(piled, reference, [(200, 150, 300, 230), CAR])
    # a reference kept at another resolution is scaled to the frame
    assert left_object_present(piled, cv2.resize(reference, (160, 120)), [CAR])
    assert not left_object_present(reference, cv2.resize(reference, (160, 120)), [CAR])


# -- the edge runner --------------------------------------------------------------------------------------------


def request(camera_id: str, *, clear_s: float = 1.0, timeout_s: float = 30.0, number: str = "NS-2026-000009",
            rid: str | None = None, classes: tuple[str, ...] = ("car",), vtype: str = "sidewalk_parking"
            ) -> RecheckRequest:
    return RecheckRequest(request_id=rid or f"{camera_id}-0000-4000-8000-000000000001", case_number=number,
                          camera_id=camera_id, zone_id="z-walk", violation_type=vtype,
                          classes=list(classes), boxes_px=[CAR], clear_s=clear_s, timeout_s=timeout_s)


def test_edge_answers_rechecks_of_its_cameras_with_sealed_after_packages(tmp_path: Path) -> None:
    clear_video, car_video = scene(tmp_path / "clear.mp4", False), scene(tmp_path / "car.mp4", True)
    cfg = config(tmp_path, [camera("cam-clear", clear_video, 5, live=True, zones=ZONE),
                            camera("cam-car", car_video, 5, live=True, zones=ZONE),
                            {**camera("cam-off", clear_video, 5, zones=ZONE), "enabled": False}],
                 cases={"recheck": {"enabled": True}})
    edge = runner(cfg, BrightBoxDetector())  # type: ignore[arg-type]
    bus, store = edge.bus, edge.store
    # First, a request whose id names an existing package: nothing may be written into that package (it is
    # handled before the others, so once they are answered it has been too).
    store.put("events/taken-0000-4000-8000-000000000001/onset.jpg", b"original", "image/jpeg")
    taken = request("cam-off", rid="taken-0000-4000-8000-000000000001")
    bus.publish(TOPIC_RECHECK, "cam-off", taken.model_dump_json().encode())
    # a left object on a camera that keeps no clear picture of the zone (it watches no piling there)
    piled = request("cam-clear", rid="piled-0000-4000-8000-000000000001", classes=(LEFT_OBJECT,),
                    vtype="piled_materials")
    dog = request("cam-clear", rid="dog-0000-4000-8000-000000000001", classes=("dog",))  # the detector knows cars
    # cam-car's "present" comes at its timeout; 10 s, so that a loaded edge starting up late still finds the request
    # unexpired (a request is skipped once requested_at + timeout_s has passed)
    for req in (request("cam-clear"), request("cam-car", timeout_s=10.0), request("cam-off"),
                request("cam-elsewhere"), piled, dog):  # cam-elsewhere: another edge's camera
        bus.publish(TOPIC_RECHECK, req.camera_id, req.model_dump_json().encode())
    bus.publish(TOPIC_RECHECK, "cam-car", b'{"request_id": "x", "camera_id": "cam-car"}')
    expired = request("cam-clear", rid="expired-0000-4000-8000-000000000001", timeout_s=5)
    expired = expired.model_copy(update={"requested_at": datetime.now(UTC) - timedelta(minutes=5)})
    bus.publish(TOPIC_RECHECK, "cam-clear", expired.model_dump_json().encode())

    running = Running(edge)
    try:
        assert edge.rechecks is not None
        wait_until(lambda: len(edge.rechecks.answered) >= 5, 30, "answers for the requests of this edge's cameras")
    finally:
        running.stop()
    answered: dict[str, ViolationEvent] = {e.event_id: e for e in edge.rechecks.answered}
    assert sorted(answered) == sorted([request("cam-car").request_id, request("cam-clear").request_id,
                                       request("cam-off").request_id, piled.request_id, dog.request_id])
    # not cam-elsewhere's
    assert list(store.list("events/taken-0000-4000-8000-000000000001/")) == [
        "events/taken-0000-4000-8000-000000000001/onset.jpg"]
    clear, present = answered[request("cam-clear").request_id], answered[request("cam-car").request_id]
    off, unseen, no_ref = answered[request("cam-off").request_id], answered[dog.request_id], answered[piled.request_id]
    assert unseen.recheck is not None and unseen.recheck.outcome == "unavailable"
    assert "does not report dog" in unseen.recheck.detail
    assert no_ref.recheck is not None and no_ref.recheck.outcome == "unavailable" and no_ref.evidence == []
    assert "no clear reference picture of zone z-walk" in no_ref.recheck.detail
    assert clear.recheck is not None and clear.recheck.outcome == "clear"
    assert clear.recheck.clear_since is not None and clear.recheck.frames >= 2
    assert present.recheck is not None and present.recheck.outcome == "present"
    [seen] = present.boxes["after_last"]
    assert seen.class_name == "car" and seen.xyxy[0] < 20  # the parked car, boxed on the still
    assert off.recheck is not None and off.recheck.outcome == "unavailable" and off.evidence == []
    assert "not running" in off.recheck.detail
    assert {i.role for i in clear.evidence} == {"after_first", "after_first_annotated", "after_last",
                                                "after_last_annotated"}
    dead = [json.loads(m.value) for m in bus.consumer(TOPIC_DEAD_LETTER, "t").poll(timeout_s=0.1)]
    assert [d["topic"] for d in dead] == [TOPIC_RECHECK] and "not a valid RecheckRequest" in dead[0]["reason"]

    signer = Signer.load_or_create(tmp_path / "key.pem")
    assert seal_pending(bus, store, signer) == 5
    for event in (clear, present, off):
        result = verify_package(store, event.event_id, signer.public_key_pem())
        assert result.ok, result.problems
        manifest = parse_manifest(store.get(manifest_key(event.event_id)))
        assert manifest["recheck"]["outcome"] == event.recheck.outcome  # type: ignore[union-attr]
        assert manifest["recheck"]["request_id"] == event.event_id


def test_edge_rechecks_a_left_object_against_the_zones_clear_reference(tmp_path: Path) -> None:
    """piled_materials (a left object, no detector class): the camera compares the original box with the clear
    picture of the zone its left-object detector keeps: sacks gone → clear with an after package; still there →
    present, the box on the still."""
    piling = [{"id": "z-walk", "kind": "no_piling_area", "polygon": [[0, 0], [1, 0], [1, 1], [0, 1]]}]
    cfg = config(tmp_path, [camera("cam-gone", scene(tmp_path / "clear.mp4", False), 5, live=True, zones=piling),
                            camera("cam-piled", scene(tmp_path / "piled.mp4", False, pile=True), 5, live=True,
                                   zones=piling)],
                 cases={"recheck": {"enabled": True}})
    edge = runner(cfg, BrightBoxDetector())  # type: ignore[arg-type]
    clear_jpeg = cv2.imencode(".jpg", street(), [int(cv2.IMWRITE_JPEG_QUALITY), 90])[1].tobytes()
    running = Running(edge)
    try:
        assert edge.rechecks is not None
        for cid in ("cam-gone", "cam-piled"):
            def state(cid: str = cid) -> LeftObjectState | None:
                run = edge.run_of(cid)
                engine = run.worker.engine if run is not None else None
                st = engine.state("piled_materials") if engine is not None else None
                return st if isinstance(st, LeftObjectState) and st.detector is not None else None

            wait_until(lambda: state() is not None, 30, f"the left-object detector of {cid}")
            st = state()
            assert st is not None and st.detector is not None
            # What the zone looked like before the sacks came, as the detector keeps it (it would keep the sacks
            # of cam-piled, there since the clip's first frame, as that camera's clear picture: pinned here).
            st.detector.params = dataclasses.replace(st.detector.params, reference_every_s=1e9)
            run = edge.run_of(cid)
            latest = run.worker.ring.latest() if run is not None else None
            assert latest is not None
            st.detector.references["z-walk"] = Reference(latest[0], clear_jpeg)
        # made now, not before the waits above: a request is skipped once requested_at + timeout_s has passed
        gone = request("cam-gone", vtype="piled_materials", classes=(LEFT_OBJECT,), clear_s=1.0, timeout_s=30.0)
        piled = request("cam-piled", vtype="piled_materials", classes=(LEFT_OBJECT,), clear_s=1.0, timeout_s=10.0)
        for req in (gone, piled):
            edge.bus.publish(TOPIC_RECHECK, req.camera_id, req.model_dump_json().encode())
        wait_until(lambda: len(edge.rechecks.answered) >= 2, 30, "the answers of both left-object re-checks")
    finally:
        running.stop()
    answered = {e.event_id: e for e in edge.rechecks.answered}
    clear, present = answered[gone.request_id], answered[piled.request_id]
    assert clear.recheck is not None and clear.recheck.outcome == "clear", clear.recheck
    assert clear.recheck.clear_since is not None and clear.boxes["after_last"] == []
    assert {i.role for i in clear.evidence} == {"after_first", "after_first_annotated", "after_last",
                                                "after_last_annotated"}
    assert present.recheck is not None and present.recheck.outcome == "present", present.recheck
    assert "clear reference picture" in present.recheck.detail
    [seen] = present.boxes["after_last"]
    assert seen.class_name == LEFT_OBJECT and seen.xyxy == CAR and seen.confidence > 0.5
    signer = Signer.load_or_create(tmp_path / "key.pem")
    assert seal_pending(edge.bus, edge.store, signer) == 2
    for event in (clear, present):
        assert verify_package(edge.store, event.event_id, signer.public_key_pem()).ok


def test_rectified_case_is_rechecked_end_to_end_over_the_embedded_bus(tmp_path: Path) -> None:
    """rectify (recheck on) → outbox → nonsite.recheck → the edge watches a clear zone → after package → sealer →
    drafter → the case's re-check is clear → the reviewer closes."""
    cfg = config(tmp_path, [camera("cam-01", scene(tmp_path / "clear.mp4", False), 5, live=True, zones=ZONE)],
                 cases={"recheck": {"enabled": True, "clear_s": 1, "timeout_s": 60}})
    db = open_db(f"sqlite:///{tmp_path / 'cases.db'}")
    case = draft_case(db, make_sealed(camera_id="cam-01"), "NS")[0]
    confirm(db, case.number, "op-1")
    approve(db, case.number, "rev-1")
    dispatch(db, case.number, "op-1")
    rectify(db, case.number, "field-1", note="车已驶离", recheck=cfg.cases.recheck)
    with pytest.raises(Exception, match="waits for the camera re-check"):
        close(db, case.number, "rev-1")

    edge = runner(cfg, BrightBoxDetector())  # type: ignore[arg-type]
    bus, store = edge.bus, edge.store
    assert relay_outbox(bus, db) == 5  # four decisions (confirm … rectify) and the re-check request
    signer = Signer.load_or_create(tmp_path / "key.pem")
    running = Running(edge)
    try:
        assert edge.rechecks is not None
        wait_until(lambda: len(edge.rechecks.answered) == 1, 30, "the after package")
    finally:
        running.stop()
    assert seal_pending(bus, store, signer) == 1
    assert draft_pending(bus, db, "NS") == 0
    with db() as s:
        rc = s.scalar(select(CaseRecheck).where(CaseRecheck.case_id == case.id))
        assert rc is not None and rc.state == "clear" and rc.after_manifest_key
        assert verify_package(store, rc.after_event_id or "", signer.public_key_pem()).ok
        assert {i["role"] for i in rc.after_evidence} >= {"after_first_annotated", "after_last_annotated"}
    assert close(db, case.number, "rev-1").status is CaseStatus.CLOSED
    with db() as s:
        assert s.scalar(select(Case.recheck_state).where(Case.id == case.id)) == "clear"
    db.kw["bind"].dispose()


def test_a_pool_worker_takes_only_the_requests_of_the_cameras_it_holds(tmp_path: Path) -> None:
    from nonsite.bus.base import Message
    from nonsite.pipeline.pool import PoolWorker

    video = scene(tmp_path / "clear.mp4", False)
    cfg = config(tmp_path, [camera("cam-a", video, 5, zones=ZONE), camera("cam-b", video, 5, zones=ZONE)],
                 cases={"recheck": {"enabled": True}})
    edge = runner(cfg, BrightBoxDetector())  # type: ignore[arg-type]
    one = PoolWorker(cfg, BrightBoxDetector(), edge.store, edge.bus, worker_id="w1")  # type: ignore[arg-type]
    two = PoolWorker(cfg, BrightBoxDetector(), edge.store, edge.bus, worker_id="w2")  # type: ignore[arg-type]
    desk_one, desk_two = one.runner.rechecks, two.runner.rechecks
    assert desk_one is not None and desk_two is not None
    assert desk_one.group != desk_two.group  # each worker sees every request

    def message(camera_id: str, n: int) -> Message:
        req = request(camera_id, rid=f"{camera_id}-{n}-4000-8000-000000000001")
        return Message(TOPIC_RECHECK, n, camera_id, req.model_dump_json().encode())

    assert not desk_one.offer(message("cam-a", 1)) and not desk_two.offer(message("cam-a", 1))  # nobody holds it
    one.runner.add_camera(cfg.cameras[0])  # the group assigns cam-a to w1
    assert desk_one.offer(message("cam-a", 2)) and not desk_two.offer(message("cam-a", 2))
    assert not desk_one.offer(message("cam-a", 2))  # the same request again
    assert not desk_one.offer(message("cam-b", 3))
