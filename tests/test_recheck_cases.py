"""Camera re-check before closing, the case side (docs/recheck.md): rectify asks the camera through the outbox,
the after package's outcome decides whether the reviewer may close, and the case goes back to the team when the
object is still there."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from test_cases_drafter import make_sealed

from nonsite.bus import EmbeddedBus
from nonsite.bus.events import (
    TOPIC_CASES,
    TOPIC_DEAD_LETTER,
    TOPIC_EVIDENCE,
    TOPIC_RECHECK,
    BoxRecord,
    CaseDecision,
    EvidenceItem,
    EvidenceSealed,
    ModelInfo,
    RecheckRequest,
    RecheckResult,
    ViolationEvent,
)
from nonsite.cases import (
    AuditEntry,
    Case,
    CaseStatus,
    InvalidReason,
    WorkflowError,
    approve,
    close,
    confirm,
    dispatch,
    draft_case,
    open_db,
    rectify,
    relay_outbox,
)
from nonsite.cases.db import CaseRecheck, OutboxMessage
from nonsite.cases.drafter import draft_pending
from nonsite.cases.field import record_report
from nonsite.cases.recheck import RECHECK_ACTOR, apply_result, views_of
from nonsite.config.services import RecheckConfig

ON = RecheckConfig(enabled=True, clear_s=30, timeout_s=600, answer_grace_s=120)
T0 = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)


@pytest.fixture()
def db(case_db_url: str) -> Iterator[sessionmaker[Session]]:
    sf = open_db(case_db_url)
    yield sf
    sf.kw["bind"].dispose()


def dispatched(db: sessionmaker[Session]) -> Case:
    case = draft_case(db, make_sealed(), "NS")[0]
    confirm(db, case.number, "op-1")
    approve(db, case.number, "rev-1")
    dispatch(db, case.number, "op-1", assignee="南京东路中队")
    return case


def recheck_requests(db: sessionmaker[Session]) -> list[RecheckRequest]:
    with db() as s:
        rows = s.scalars(select(OutboxMessage).where(OutboxMessage.topic == TOPIC_RECHECK)
                         .order_by(OutboxMessage.id)).all()
        return [RecheckRequest.model_validate_json(r.value) for r in rows]


def after_package(req: RecheckRequest, outcome: str, *, camera_id: str | None = None,
                  case_number: str | None = None, request_id: str | None = None) -> EvidenceSealed:
    """The sealed after package of ``req`` as the sealer announces it (hashes of made-up content)."""
    rid = request_id or req.request_id
    prefix = f"events/{rid}/"
    items = [] if outcome == "unavailable" else [
        EvidenceItem(role=role, key=prefix + f"{role}.jpg", sha256=hashlib.sha256(f"{rid}{role}".encode()).hexdigest(),
                     bytes=900, content_type="image/jpeg")
        for role in ("after_first", "after_first_annotated", "after_last", "after_last_annotated")]
    seen = [BoxRecord(xyxy=(12, 22, 108, 88), class_name="car", confidence=0.8)] if outcome == "present" else []
    observed = T0 + timedelta(minutes=3)
    result = RecheckResult(request_id=rid, case_number=case_number or req.case_number, outcome=outcome,  # type: ignore[arg-type]
                           watched_from=T0 + timedelta(minutes=1),
                           clear_since=T0 + timedelta(minutes=2) if outcome == "clear" else None,
                           observed_at=observed, frames=300,
                           detail="the camera's stream ended" if outcome == "unavailable" else "")
    v = ViolationEvent(event_id=rid, type=req.violation_type, camera_id=camera_id or req.camera_id,
                       zone_id=req.zone_id, started_at=T0 + timedelta(minutes=1), confirmed_at=observed,
                       track_ids=[], boxes={"after_last": seen}, confidence=0.8 if seen else 0.0, dwell_s=60.0,
                       model=ModelInfo(name="yolo11n-coco", version="8.3", sha256="ab" * 32),
                       rule_config_hash="cd" * 32, evidence=items, recheck=result)
    return EvidenceSealed(event_id=rid, violation=v, manifest_key=prefix + "manifest.json",
                          manifest_sha256="ef" * 32, signature_key=prefix + "manifest.sig",
                          public_key_fingerprint="01" * 32)


def audit(db: sessionmaker[Session], case: Case) -> list[AuditEntry]:
    with db() as s:
        return list(s.scalars(select(AuditEntry).where(AuditEntry.case_id == case.id).order_by(AuditEntry.id)))


def test_rectify_asks_the_camera_and_close_waits_for_it(db: sessionmaker[Session]) -> None:
    case = dispatched(db)
    done = rectify(db, case.number, "field-1", note="车已驶离", recheck=ON, now=T0)
    assert done.status is CaseStatus.RECTIFIED and done.recheck_state == "pending"
    [req] = recheck_requests(db)
    assert (req.case_number, req.camera_id, req.zone_id, req.violation_type) == (
        case.number, "cam-01", "z-walk", "sidewalk_parking")
    assert req.classes == ["car"] and req.boxes_px == [(10.0, 20.0, 110.0, 90.0)]
    assert (req.clear_s, req.timeout_s) == (30, 600)
    assert audit(db, case)[-1].detail["recheck_request"] == req.request_id

    with pytest.raises(WorkflowError, match="waits for the camera re-check"):
        close(db, case.number, "rev-1", now=T0 + timedelta(minutes=5))
    with db() as s:
        assert s.get(Case, case.id).status is CaseStatus.RECTIFIED  # type: ignore[union-attr]


def test_clear_zone_links_the_after_package_and_the_reviewer_closes(db: sessionmaker[Session]) -> None:
    case = dispatched(db)
    rectify(db, case.number, "field-1", note="摊位已清理", recheck=ON, now=T0)
    [req] = recheck_requests(db)
    assert apply_result(db, after_package(req, "clear"), now=T0 + timedelta(minutes=3)) == "clear"
    entry = audit(db, case)[-1]
    assert (entry.actor, entry.action, entry.after_status) == (RECHECK_ACTOR, "recheck", "rectified")
    assert entry.detail["outcome"] == "clear" and entry.detail["after_event_id"] == req.request_id
    assert len(entry.photos or []) == 4
    with db() as s:
        [view] = views_of(s, case.id, T0 + timedelta(minutes=4))
    assert view.state == "clear" and [i["role"] for i in view.after_stills][:2] == [
        "after_first_annotated", "after_last_annotated"]

    closed = close(db, case.number, "rev-1", now=T0 + timedelta(minutes=5))
    assert closed.status is CaseStatus.CLOSED
    assert audit(db, closed)[-1].detail["recheck"] == {
        "request_id": req.request_id, "outcome": "clear", "after_event_id": req.request_id}
    # A redelivered after package changes nothing.
    assert apply_result(db, after_package(req, "clear")) == "duplicate"
    assert audit(db, closed)[-1].action == "close"


def test_object_still_there_sends_the_case_back_to_the_team(db: sessionmaker[Session]) -> None:
    case = dispatched(db)
    rectify(db, case.number, "field-1", note="已劝离", recheck=ON, now=T0)
    [req] = recheck_requests(db)
    assert apply_result(db, after_package(req, "present"), now=T0 + timedelta(minutes=11)) == "present"
    with db() as s:
        back = s.get(Case, case.id)
        assert back is not None and back.status is CaseStatus.DISPATCHED and back.recheck_state == "present"
        decisions = [CaseDecision.model_validate_json(m.value) for m in s.scalars(
            select(OutboxMessage).where(OutboxMessage.topic == TOPIC_CASES).order_by(OutboxMessage.id))]
    rework = audit(db, case)[-1]
    assert (rework.actor, rework.action, rework.before_status, rework.after_status) == (
        RECHECK_ACTOR, "rework", "rectified", "dispatched")
    assert rework.detail["outcome"] == "present" and len(rework.photos or []) == 4
    assert (decisions[-1].status, decisions[-1].previous_status, decisions[-1].actor) == (
        "dispatched", "rectified", RECHECK_ACTOR)
    with pytest.raises(WorkflowError, match="dispatched"):
        close(db, case.number, "rev-1")

    # The team rectifies again: a new re-check, and this time the zone is clear.
    rectify(db, case.number, "field-1", note="再次整改", recheck=ON, now=T0 + timedelta(hours=1))
    first, second = recheck_requests(db)
    assert second.request_id != first.request_id
    assert apply_result(db, after_package(second, "clear")) == "clear"
    assert close(db, case.number, "rev-1").status is CaseStatus.CLOSED


def test_camera_unavailable_needs_a_note_to_close(db: sessionmaker[Session]) -> None:
    case = dispatched(db)
    rectify(db, case.number, "field-1", note="已整改", recheck=ON, now=T0)
    [req] = recheck_requests(db)
    assert apply_result(db, after_package(req, "unavailable")) == "unavailable"
    with pytest.raises(InvalidReason, match="needs a note"):
        close(db, case.number, "rev-1")
    closed = close(db, case.number, "rev-1", note="摄像头维修中，现场照片为证")
    assert closed.status is CaseStatus.CLOSED
    assert audit(db, closed)[-1].detail["recheck"]["outcome"] == "unavailable"


def test_an_unanswered_recheck_counts_as_unavailable_after_its_grace(db: sessionmaker[Session]) -> None:
    case = dispatched(db)
    rectify(db, case.number, "field-1", note="已整改", recheck=ON, now=T0)
    late = T0 + timedelta(seconds=600 + 120 + 1)
    with pytest.raises(InvalidReason, match="needs a note"):
        close(db, case.number, "rev-1", now=late)
    closed = close(db, case.number, "rev-1", note="无摄像头回复", now=late)
    assert closed.status is CaseStatus.CLOSED
    expired, closing = audit(db, closed)[-2:]
    assert (expired.actor, expired.action, expired.detail["outcome"]) == (RECHECK_ACTOR, "recheck", "unavailable")
    assert closing.detail["recheck"]["outcome"] == "unavailable"


def test_without_recheck_cases_close_as_before(db: sessionmaker[Session]) -> None:
    case = dispatched(db)
    rectify(db, case.number, "field-1", note="已整改", recheck=RecheckConfig(enabled=False))
    assert recheck_requests(db) == []
    assert close(db, case.number, "rev-1").status is CaseStatus.CLOSED
    other = dispatched(db)  # a type the configuration does not re-check
    rectify(db, other.number, "field-1", note="已整改", recheck=RecheckConfig(enabled=True, types=["stray_dog"]))
    assert recheck_requests(db) == [] and close(db, other.number, "rev-1").status is CaseStatus.CLOSED


def test_field_officers_rectified_report_asks_the_camera(db: sessionmaker[Session]) -> None:
    case = dispatched(db)
    rec = record_report(db, case.number, "field-1", key="report-0001", result="rectified", note="已整改",
                        role="field_officer", now=T0, recheck=ON)
    assert rec.status == "rectified" and rec.created
    again = record_report(db, case.number, "field-1", key="report-0001", result="rectified", note="已整改",
                          role="field_officer", now=T0, recheck=ON)
    assert not again.created
    assert len(recheck_requests(db)) == 1  # the retried report asks nothing twice


def test_after_packages_reach_the_case_through_the_drafter(db: sessionmaker[Session], tmp_path: Path) -> None:
    bus = EmbeddedBus(tmp_path / "bus.sqlite")
    case = dispatched(db)
    rectify(db, case.number, "field-1", note="车已驶离", recheck=ON, now=T0)
    relay_outbox(bus, db)
    [msg] = bus.consumer(TOPIC_RECHECK, "t").poll(timeout_s=0.1)
    req = RecheckRequest.model_validate_json(msg.value)
    assert msg.key == "cam-01" and req.case_number == case.number

    good = after_package(req, "clear")
    bus.publish(TOPIC_EVIDENCE, "cam-01", good.model_dump_json().encode())
    bus.publish(TOPIC_EVIDENCE, "cam-01", good.model_dump_json().encode())  # redelivered
    unknown = after_package(req, "clear", request_id="0badc0de-0000-4000-8000-000000000000")
    bus.publish(TOPIC_EVIDENCE, "cam-01", unknown.model_dump_json().encode())
    wrong_camera = after_package(req, "present", camera_id="cam-99")
    bus.publish(TOPIC_EVIDENCE, "cam-99", wrong_camera.model_dump_json().encode())
    assert draft_pending(bus, db, "NS") == 0  # after packages draft no case

    with db() as s:
        assert s.scalar(select(Case).where(Case.event_id == req.request_id)) is None
        rc = s.scalar(select(CaseRecheck).where(CaseRecheck.request_id == req.request_id))
        assert rc is not None and rc.state == "clear" and rc.after_manifest_key == good.manifest_key
        assert s.get(Case, case.id).recheck_state == "clear"  # type: ignore[union-attr]
    assert [e.action for e in audit(db, case)].count("recheck") == 1
    dead = [json.loads(m.value) for m in bus.consumer(TOPIC_DEAD_LETTER, "t").poll(timeout_s=0.1)]
    assert len(dead) == 2
    assert "never asked" in dead[0]["reason"] and "camera 'cam-99'" in dead[1]["reason"]
    assert close(db, case.number, "rev-1").status is CaseStatus.CLOSED
