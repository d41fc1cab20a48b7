"""Review workflow: DESIGN's transition table, reasons, the audit trail and the outbox."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from test_cases_drafter import make_sealed

from nonsite.bus import EmbeddedBus
from nonsite.bus.events import TOPIC_CASES, CaseDecision
from nonsite.cases import (
    PERMISSIONS,
    TRANSITIONS,
    Action,
    AuditEntry,
    Case,
    CaseNotFound,
    CaseStatus,
    InvalidReason,
    InvalidTransition,
    PermissionDenied,
    Role,
    WorkflowError,
    allowed_actions,
    apply_action,
    approve,
    can,
    close,
    confirm,
    dismiss,
    dispatch,
    draft_case,
    open_db,
    rectify,
    relay_outbox,
    return_case,
)


@pytest.fixture()
def db(case_db_url: str) -> Iterator[sessionmaker[Session]]:
    """A migrated case database: SQLite and PostgreSQL (the ``case_db_url`` fixture runs each test on both)."""
    sf = open_db(case_db_url)
    yield sf
    sf.kw["bind"].dispose()


@pytest.fixture()
def case(db: sessionmaker[Session]) -> Case:
    return draft_case(db, make_sealed(), "NS")[0]


def trail(db: sessionmaker[Session], case_id: int) -> list[tuple[str, str, str | None, str | None]]:
    with db() as s:
        rows = s.scalars(select(AuditEntry).where(AuditEntry.case_id == case_id).order_by(AuditEntry.id)).all()
        return [(r.actor, r.action, r.before_status, r.after_status) for r in rows]


def test_the_table_covers_every_status_and_follows_design() -> None:
    assert set(TRANSITIONS) == set(CaseStatus)
    assert TRANSITIONS[CaseStatus.DRAFT] == {Action.CONFIRM: CaseStatus.CONFIRMED,
                                             Action.DISMISS: CaseStatus.DISMISSED}
    assert TRANSITIONS[CaseStatus.CONFIRMED] == {
        Action.APPROVE: CaseStatus.APPROVED, Action.RETURN: CaseStatus.RETURNED,
        Action.DISMISS: CaseStatus.DISMISSED}
    assert TRANSITIONS[CaseStatus.APPROVED] == {Action.DISPATCH: CaseStatus.DISPATCHED}
    assert TRANSITIONS[CaseStatus.DISPATCHED] == {Action.RECTIFY: CaseStatus.RECTIFIED}
    assert TRANSITIONS[CaseStatus.RECTIFIED] == {Action.CLOSE: CaseStatus.CLOSED}
    assert allowed_actions("dismissed") == [] and allowed_actions("closed") == []


def test_confirm_then_dismiss_is_allowed_and_audited(db: sessionmaker[Session], case: Case) -> None:
    confirmed = confirm(db, case.id, "operator-li")
    assert confirmed.status is CaseStatus.CONFIRMED
    dismissed = dismiss(db, case.id, "reviewer-wang", "not_a_violation", "loading zone, permit on file")
    assert dismissed.status is CaseStatus.DISMISSED
    assert (dismissed.dismiss_reason, dismissed.dismiss_note) == ("not_a_violation", "loading zone, permit on file")
    assert trail(db, case.id) == [
        ("system:drafter", "created", None, "draft"),
        ("operator-li", "confirm", "draft", "confirmed"),
        ("reviewer-wang", "dismiss", "confirmed", "dismissed"),
    ]
    with db() as s:
        last = s.scalars(select(AuditEntry).order_by(AuditEntry.id.desc())).first()
        assert last is not None
        assert last.detail == {"reason": "not_a_violation", "note": "loading zone, permit on file"}
        assert last.at.tzinfo is not None


def test_dismissed_cannot_be_confirmed(db: sessionmaker[Session], case: Case) -> None:
    dismiss(db, case.id, "op", "false_positive")
    with pytest.raises(InvalidTransition) as err:
        confirm(db, case.id, "op")
    msg = str(err.value)
    assert case.number in msg and "dismissed" in msg and "draft or returned" in msg
    with db() as s:
        assert s.get(Case, case.id).status is CaseStatus.DISMISSED  # type: ignore[union-attr]
    assert len(trail(db, case.id)) == 2  # the refused action left no audit entry


def test_confirm_twice_is_refused(db: sessionmaker[Session], case: Case) -> None:
    confirm(db, case.id, "op")
    with pytest.raises(InvalidTransition, match="is confirmed"):
        confirm(db, case.id, "op")


def test_the_whole_path_to_closed(db: sessionmaker[Session], case: Case) -> None:
    confirm(db, case.id, "op")
    apply_action(db, case.id, "return", "reviewer", note="clip too short")
    confirm(db, case.number, "op")  # by number as well as by id
    for action in ("approve", "dispatch", "rectify", "close"):
        apply_action(db, case.id, action, "someone", note="car moved, photo on file" if action == "rectify" else "")
    with db() as s:
        assert s.get(Case, case.id).status is CaseStatus.CLOSED  # type: ignore[union-attr]
    assert [row[1] for row in trail(db, case.id)] == [
        "created", "confirm", "return", "confirm", "approve", "dispatch", "rectify", "close"]
    with pytest.raises(InvalidTransition, match="final"):
        dismiss(db, case.id, "op", "duplicate")


def test_skipping_a_step_is_refused(db: sessionmaker[Session], case: Case) -> None:
    with pytest.raises(InvalidTransition, match="'approve' applies only to confirmed"):
        apply_action(db, case.id, Action.APPROVE, "reviewer")


@pytest.mark.parametrize(("reason", "note", "match"), [
    ("", "", "is not one of"), ("bored", "", "is not one of"), (None, "", "is not one of"),
    ("other", "  ", "needs a note"),
])
def test_dismiss_reason_is_required(db: sessionmaker[Session], case: Case, reason: str | None, note: str,
                                    match: str) -> None:
    with pytest.raises(InvalidReason, match=match):
        dismiss(db, case.id, "op", reason, note)  # type: ignore[arg-type]
    with db() as s:
        assert s.get(Case, case.id).status is CaseStatus.DRAFT  # type: ignore[union-attr]


def test_unknown_case(db: sessionmaker[Session]) -> None:
    with pytest.raises(CaseNotFound, match="NS-2026-999999"):
        confirm(db, "NS-2026-999999", "op")
    with pytest.raises(CaseNotFound):
        confirm(db, 12345, "op")


def test_racing_operators_one_wins(db: sessionmaker[Session], case: Case) -> None:
    results: list[str] = []
    barrier = threading.Barrier(2)

    def act(fn: str) -> None:
        barrier.wait()
        try:
            if fn == "confirm":
                confirm(db, case.id, "op-a")
            else:
                dismiss(db, case.id, "op-b", "duplicate")
            results.append("ok")
        except InvalidTransition:
            results.append("refused")

    threads = [threading.Thread(target=act, args=(f,)) for f in ("confirm", "dismiss")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    # Either confirm then dismiss (both allowed) or dismiss then a refused confirm; never a lost update.
    rows = trail(db, case.id)
    assert rows[0][1] == "created"
    for prev, nxt in zip(rows, rows[1:], strict=False):
        assert nxt[2] == prev[3]
    assert sorted(results) in (["ok", "ok"], ["ok", "refused"])


def test_decisions_reach_the_bus_through_the_outbox(tmp_path: Path, db: sessionmaker[Session], case: Case) -> None:
    confirm(db, case.id, "op")
    dismiss(db, case.id, "reviewer", "duplicate", "same car as NS-2026-000001")
    bus = EmbeddedBus(tmp_path / "bus.sqlite")
    assert relay_outbox(bus, db) == 2
    assert relay_outbox(bus, db) == 0  # published once
    msgs = bus.consumer(TOPIC_CASES, "city-platform").poll(timeout_s=0)
    decisions = [CaseDecision.model_validate_json(m.value) for m in msgs]
    assert [(d.previous_status, d.status) for d in decisions] == [("draft", "confirmed"), ("confirmed", "dismissed")]
    assert decisions[1].reason == "duplicate" and decisions[1].case_number == case.number
    assert msgs[0].key == case.number
    assert json.loads(msgs[1].value)["actor"] == "reviewer"
    bus.close()


def test_the_permission_table() -> None:
    op, rev, adm = Role.OPERATOR, Role.REVIEWER, Role.ADMIN
    expected = {
        Action.CONFIRM: {op, adm}, Action.DISMISS: {op, rev, adm}, Action.APPROVE: {rev, adm},
        Action.RETURN: {rev, adm}, Action.DISPATCH: {op, adm}, Action.RECTIFY: {op, Role.FIELD_OFFICER, adm},
        Action.CLOSE: {rev, adm},
    }
    assert dict(PERMISSIONS) == expected
    assert all(can("admin", a) for a in Action)
    assert can("operator", "confirm") and not can("operator", "approve") and not can("reviewer", "confirm")
    assert not can("intern", "confirm") and not can("admin", "delete")
    assert allowed_actions("confirmed", "operator") == [Action.DISMISS]
    assert allowed_actions("confirmed", "reviewer") == [Action.APPROVE, Action.RETURN, Action.DISMISS]
    assert allowed_actions("draft", "reviewer") == [Action.DISMISS]
    assert allowed_actions("dispatched", "field_officer") == [Action.RECTIFY]
    assert all(allowed_actions(s, r) == [] for s in CaseStatus for r in ("supervisor", "leader"))


def test_the_wrong_role_is_refused_and_nothing_is_written(db: sessionmaker[Session], case: Case) -> None:
    with pytest.raises(PermissionDenied, match="a reviewer may not confirm cases; ask a user with the role "
                                               "operator or admin"):
        confirm(db, case.id, "rev-wang", role="reviewer")
    confirm(db, case.id, "op-li", role="operator")
    with pytest.raises(PermissionDenied, match="an operator may not approve"):
        approve(db, case.id, "op-zhao", role=Role.OPERATOR)
    with pytest.raises(WorkflowError, match="unknown role 'boss'"):
        approve(db, case.id, "x", role="boss")
    assert [r[1] for r in trail(db, case.id)] == ["created", "confirm"]


def test_whoever_confirmed_cannot_review(db: sessionmaker[Session], case: Case) -> None:
    confirm(db, case.id, "li", role="admin")
    with pytest.raises(PermissionDenied, match="li confirmed case .* another user must review it"):
        approve(db, case.id, "li", role="admin")
    with pytest.raises(PermissionDenied, match="another user"):
        return_case(db, case.id, "li", "blurred", role="admin")
    assert approve(db, case.id, "wang", role="reviewer").status is CaseStatus.APPROVED


def test_return_needs_a_comment_and_feedback_needs_content(db: sessionmaker[Session], case: Case) -> None:
    confirm(db, case.id, "li", role="operator")
    with pytest.raises(InvalidReason, match="returning a case needs a comment"):
        return_case(db, case.id, "wang", "  ", role="reviewer")
    return_case(db, case.id, "wang", "plate not readable; add the close-up", role="reviewer")
    confirm(db, case.id, "li", role="operator")
    approve(db, case.id, "wang", role="reviewer")
    dispatch(db, case.id, "li", assignee="黄浦区城管中队", role="operator")
    with pytest.raises(InvalidReason, match="needs a note or a photo"):
        rectify(db, case.id, "li", role="operator")
    with pytest.raises(WorkflowError, match="attachment 0 needs a store key and the hex sha256"):
        rectify(db, case.id, "li", attachments=[{"key": "feedback/x.jpg", "sha256": "nope"}], role="operator")
    photo = {"key": f"feedback/{case.number}/1.jpg", "sha256": "ab" * 32, "content_type": "image/jpeg",
             "bytes": 2048, "name": "after.jpg"}
    done = rectify(db, case.id, "li", note="摊位已撤离", attachments=[photo], role="operator")
    assert done.dispatched_to == "黄浦区城管中队"
    with pytest.raises(PermissionDenied):
        close(db, case.id, "li", role="operator")
    close(db, case.id, "wang", role="reviewer")
    with db() as s:
        entries = s.scalars(select(AuditEntry).where(AuditEntry.case_id == case.id).order_by(AuditEntry.id)).all()
        by_action = {e.action: e.detail for e in entries}
    assert by_action["dispatch"] == {"role": "operator", "assignee": "黄浦区城管中队"}
    assert by_action["rectify"] == {"role": "operator", "note": "摊位已撤离", "attachments": [photo]}
    assert by_action["return"]["note"] == "plate not readable; add the close-up"
    assert [e.action for e in entries][-1] == "close"


def test_only_the_right_action_takes_extras(db: sessionmaker[Session], case: Case) -> None:
    with pytest.raises(WorkflowError, match="only dispatch takes an assignee"):
        apply_action(db, case.id, "confirm", "li", assignee="team")
    with pytest.raises(WorkflowError, match="only rectify takes attachments"):
        apply_action(db, case.id, "confirm", "li", attachments=[{"key": "k", "sha256": "ab" * 32}])


def test_feedback_photos_are_checked_and_stored_outside_the_package(
        db: sessionmaker[Session], case: Case, tmp_path: Path, media_dir: Path) -> None:
    from nonsite.cases.attachments import AttachmentError, store_feedback_photo
    from nonsite.evidence import LocalStore

    store = LocalStore(tmp_path / "evidence")
    photo = (media_dir / "generic_bus_ultralytics.jpg").read_bytes()
    att = store_feedback_photo(store, case.number, photo, "../../after 整改.jpg")
    assert att["key"] == f"cases/{case.number}/feedback/{att['sha256']}.jpg"
    stored = store.get(att["key"])  # re-encoded: only pixels, named by the hash of what is stored
    assert hashlib.sha256(stored).hexdigest() == att["sha256"] and att["bytes"] == len(stored)
    assert att["content_type"] == "image/jpeg" and stored.startswith(b"\xff\xd8\xff")
    original = cv2.imdecode(np.frombuffer(photo, np.uint8), cv2.IMREAD_COLOR)
    assert cv2.imdecode(np.frombuffer(stored, np.uint8), cv2.IMREAD_COLOR).shape == original.shape
    with_payload = photo + b"<script>alert(1)</script>"  # a trailing payload does not survive
    assert b"<script>" not in store.get(store_feedback_photo(store, case.number, with_payload)["key"])
    assert "/" not in att["name"] and att["name"].endswith(".jpg")
    for data, message in [(b"", "empty"), (b"GIF89a" + bytes(100), "only JPEG or PNG"),
                          (photo[:200], "does not decode"), (b"<script>alert(1)</script>", "only JPEG or PNG")]:
        with pytest.raises(AttachmentError, match=message):
            store_feedback_photo(store, case.number, data, "x.jpg")
    with pytest.raises(AttachmentError, match="the limit is"):
        store_feedback_photo(store, case.number, photo, max_bytes=1000)
    with pytest.raises(AttachmentError, match="cannot name a folder"):
        store_feedback_photo(store, "../x", photo)
    confirm(db, case.id, "li", role="operator")
    approve(db, case.id, "wang", role="reviewer")
    dispatch(db, case.id, "li", role="operator")
    done = rectify(db, case.id, "li", attachments=[att], role="operator")
    assert done.status is CaseStatus.RECTIFIED
