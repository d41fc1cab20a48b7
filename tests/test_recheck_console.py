"""Camera re-check in the console (docs/recheck.md): the team's feedback asks the camera, the reviewer cannot close
while it is pending, then sees before and after side by side (served, escaped) and closes."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from pathlib import Path

from console_support import csrf_of, seed
from sqlalchemy import select

from nonsite.bus.events import (
    TOPIC_RECHECK,
    BoxRecord,
    EvidenceItem,
    ModelInfo,
    RecheckRequest,
    RecheckResult,
    ViolationEvent,
)
from nonsite.cases import CaseStatus, approve, confirm, dispatch
from nonsite.cases.db import Case, OutboxMessage
from nonsite.cases.recheck import apply_result
from nonsite.config.services import RecheckConfig
from nonsite.evidence.package import package_prefix
from nonsite.evidence.sealer import seal


def test_reviewer_sees_before_and_after_and_closes_only_once_the_camera_answered(
        tmp_path: Path, media_dir: Path) -> None:
    env = seed(tmp_path, media_dir)
    number = env.cases["sidewalk_parking"]
    on = RecheckConfig(enabled=True, clear_s=30, timeout_s=600)
    op, sf = env.app("op", recheck=on)
    confirm(sf, number, "op-1")
    approve(sf, number, "rev-1")
    dispatch(sf, number, "op-1")

    r = op.post(f"/cases/{number}/feedback", data={"csrf": csrf_of(op), "note": "车辆已驶离"}, follow_redirects=False)
    assert r.status_code == 303, r.text[:300]
    with sf() as s:
        [msg] = s.scalars(select(OutboxMessage).where(OutboxMessage.topic == TOPIC_RECHECK)).all()
    req = RecheckRequest.model_validate_json(msg.value)
    assert req.case_number == number and req.classes == ["car"] and req.camera_id == "cam-sidewalk_parking"

    rev, _ = env.app("rev", recheck=on)
    page = rev.get(f"/cases/{number}").text
    assert 'id="recheck"' in page and 'data-state="pending"' in page and "等待摄像头复核" in page
    r = rev.post(f"/cases/{number}/close", data={"csrf": csrf_of(rev), "note": ""}, follow_redirects=False)
    assert r.status_code == 422 and "waits for the camera re-check" in r.text
    with sf() as s:
        assert s.scalar(select(Case.status).where(Case.number == number)) is CaseStatus.RECTIFIED

    # The camera side's answer: real stills in the store, sealed and signed like any package.
    prefix = package_prefix(req.request_id)
    stills = sorted((media_dir / "india_road_thela_animal" / "images" / "val").glob("*.jpg"))[:2]
    items, blobs = [], {}
    for role, path in (("after_first", stills[0]), ("after_first_annotated", stills[0]),
                       ("after_last", stills[1]), ("after_last_annotated", stills[1])):
        data = path.read_bytes()
        env.store.put(prefix + f"{role}.jpg", data, "image/jpeg")
        items.append(EvidenceItem(role=role, key=prefix + f"{role}.jpg", sha256=hashlib.sha256(data).hexdigest(),
                                  bytes=len(data), content_type="image/jpeg"))
        blobs[role] = data
    with sf() as s:
        case = s.scalar(select(Case).where(Case.number == number))
        assert case is not None
    at = case.confirmed_at + timedelta(hours=3)
    event = ViolationEvent(
        event_id=req.request_id, type=req.violation_type, camera_id=req.camera_id, zone_id=req.zone_id,
        started_at=at, confirmed_at=at + timedelta(seconds=40), track_ids=[],
        boxes={"after_first": [], "after_last": [BoxRecord(xyxy=(1, 1, 9, 9), class_name="car", confidence=0.3)]},
        confidence=0.0, dwell_s=40.0, model=ModelInfo(name="yolo11n-coco", version="8.3", sha256="ab" * 32),
        rule_config_hash="cd" * 32, evidence=items,
        recheck=RecheckResult(request_id=req.request_id, case_number=number, outcome="clear", watched_from=at,
                              clear_since=at + timedelta(seconds=10), observed_at=at + timedelta(seconds=40),
                              frames=200, detail='<script>alert("x")</script>'))
    assert apply_result(sf, seal(env.store, env.signer, event)) == "clear"

    page = rev.get(f"/cases/{number}").text
    assert 'data-state="clear"' in page and "复核通过" in page
    before, after = page.split('class="before"')[1].split('class="after"')
    assert f'/evidence/{env.events["sidewalk_parking"]}/confirm_annotated.jpg' in before
    assert f'/evidence/{req.request_id}/after_first_annotated.jpg' in after
    assert f'/evidence/{req.request_id}/after_last_annotated.jpg' in after
    assert '<script>alert("x")</script>' not in page and "&lt;script&gt;" in page  # data, never markup
    api, _ = env.api("rev", recheck=on)
    assert api.get(f"/api/cases/{number}").json()["recheck_state"] == "clear"
    got = rev.get(f"/evidence/{req.request_id}/after_last_annotated.jpg")
    assert got.status_code == 200 and got.content == blobs["after_last_annotated"]
    assert rev.get(f"/evidence/{req.request_id}/manifest.json").status_code == 200
    assert rev.get(f"/evidence/{req.request_id}/onset.jpg").status_code == 404  # not a file of that package
    assert env.app(None)[0].get(f"/evidence/{req.request_id}/after_last.jpg",
                                follow_redirects=False).status_code in (302, 303, 401)

    # Only reviewers close; an operator's try is refused, the reviewer's goes through.
    assert op.post(f"/cases/{number}/close", data={"csrf": csrf_of(op)}, follow_redirects=False).status_code == 403
    r = rev.post(f"/cases/{number}/close", data={"csrf": csrf_of(rev), "note": ""}, follow_redirects=False)
    assert r.status_code == 303
    with sf() as s:
        assert s.scalar(select(Case.status).where(Case.number == number)) is CaseStatus.CLOSED
