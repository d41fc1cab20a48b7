"""The platform's signed status callbacks: verified, deduplicated, mapped onto the workflow (and applied to a real
case database as the console will)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from nonsite.cases.db import AuditEntry, Case, CaseStatus, open_db, write_session
from nonsite.cases.workflow import InvalidTransition, apply_action, approve, confirm, dispatch, rectify
from nonsite.config.integration import PlatformConfig
from nonsite.integration.inbound import CallbackDecision, CallbackRejected, handle_callback
from nonsite.integration.outbox import HandoffStore
from nonsite.integration.signing import signature_headers

SECRET = b"callback-secret"
Change = Callable[[dict[str, str], bytes], tuple[dict[str, str], bytes]]
NOW = 1_767_000_000


def signed(payload: dict[str, object], *, secret: bytes = SECRET, at: int = NOW) -> tuple[dict[str, str], bytes]:
    body = json.dumps(payload, ensure_ascii=False).encode()
    return signature_headers(secret, body, timestamp=at), body


@pytest.fixture
def store(case_db_url: str) -> Iterator[HandoffStore]:
    """The hand-off database: a SQLite file, or a fresh schema of the session's PostgreSQL database."""
    s = HandoffStore(case_db_url)
    yield s
    s.close()


def handle(store: HandoffStore, headers: dict[str, str], body: bytes,
           cfg: PlatformConfig | None = None) -> CallbackDecision:
    return handle_callback(headers, body, cfg=cfg or PlatformConfig(), secret=SECRET, store=store, now=NOW)


def test_closed_maps_to_close_with_the_platform_comment(store: HandoffStore) -> None:
    d = handle(store, *signed({"event_id": "ev-1", "case_number": "NS-2026-000001", "status": "closed",
                               "comment": "现场已整改，结案", "at": "2026-01-05T10:00:00+08:00"}))
    assert (d.action, d.actor, d.duplicate) == ("close", "platform:city", False)
    assert d.note == "[city] 现场已整改，结案" and d.at == datetime(2026, 1, 5, 2, 0, tzinfo=UTC)
    assert d.audit_detail()["platform_event_id"] == "ev-1"


def test_accepted_is_recorded_only_and_uses_the_configured_note(store: HandoffStore) -> None:
    d = handle(store, *signed({"event_id": "ev-2", "case_number": "NS-2026-000001", "status": "accepted"}))
    assert d.action is None and d.note == "[city] 城运平台已受理"


def test_the_same_event_twice_is_a_duplicate_until_released(store: HandoffStore) -> None:
    headers, body = signed({"event_id": "ev-3", "case_number": "NS-2026-000001", "status": "closed"})
    assert handle(store, headers, body).action == "close"
    again = handle(store, headers, body)
    assert again.duplicate and again.action is None
    store.release_callback("city", "ev-3")  # the action could not be applied: take the platform's retry
    assert handle(store, headers, body).action == "close"
    assert [r["event_id"] for r in store.callback_log("city", "NS-2026-000001")] == ["ev-3"]


@pytest.mark.parametrize(("change", "status", "why"), [
    (lambda h, b: ({**h, "X-Nonsite-Signature": h["X-Nonsite-Signature"][:-2] + "00"}, b), 401, "does not match"),
    (lambda h, b: (h, b.replace(b"closed", b"clos3d")), 401, "does not match"),
    (lambda h, b: ({k: v for k, v in h.items() if k != "X-Nonsite-Signature"}, b), 401, "not signed"),
    (lambda h, b: signed(json.loads(b), at=NOW - 3600), 401, "away from our clock"),
    (lambda h, b: signed(json.loads(b), secret=b"guess"), 401, "does not match"),
    (lambda h, b: signed({"event_id": "e", "case_number": "N", "status": "lost"}), 422, "unknown platform status"),
    (lambda h, b: signed({"case_number": "N", "status": "closed"}), 400, "no event id"),
    (lambda h, b: signed({"event_id": "e", "case_number": {"x": 1}, "status": "closed"}), 400, "must be a string"),
    (lambda h, b: signed({"event_id": "e", "case_number": "N", "status": "closed", "at": "yesterday"}), 400,
     "not ISO 8601"),
    (lambda h, b: (signature_headers(SECRET, b"[1]", timestamp=NOW), b"[1]"), 400, "JSON object"),
])
def test_refused_callbacks_say_why(store: HandoffStore, change: Change, status: int, why: str) -> None:
    headers, body = change(*signed({"event_id": "ev-9", "case_number": "NS-2026-000001", "status": "closed"}))
    with pytest.raises(CallbackRejected, match=why) as err:
        handle(store, headers, body)
    assert err.value.status_code == status
    assert store.callback_log("city", "NS-2026-000001") == []  # nothing recorded


def test_field_paths_and_status_map_are_configurable(store: HandoffStore) -> None:
    cfg = PlatformConfig.model_validate({
        "name": "shcy",
        "callback_fields": {"event_id": "data.eventNo", "case_number": "data.externalCaseNo",
                            "status": "data.state", "comment": "data.opinion"},
        "status_map": {"30": {"action": "rectify", "note": "平台处置完毕"}, "90": {"action": "close"}},
    })
    headers, body = signed({"data": {"eventNo": "E1", "externalCaseNo": "NS-2026-000002", "state": "30"}})
    headers = {k.lower(): v for k, v in headers.items()}  # header names are case-insensitive
    d = handle(store, headers, body, cfg)
    assert (d.action, d.note, d.actor, d.case_number) == ("rectify", "[shcy] 平台处置完毕", "platform:shcy",
                                                          "NS-2026-000002")


def _case(session_factory: sessionmaker[Session], number: str) -> None:
    at = datetime(2026, 1, 5, 2, 0, tzinfo=UTC)
    with write_session(session_factory) as s:
        s.add(Case(number=number, event_id=f"ev-{number}", type="sidewalk_parking", camera_id="cam-1", zone_id="z",
                   started_at=at, confirmed_at=at, dwell_s=60, confidence=0.9, manifest_key="m",
                   manifest_sha256="0" * 64))


def test_a_decision_applied_to_the_case_database_closes_the_case_and_audits_the_platform(
        store: HandoffStore, tmp_path: Path) -> None:
    db = open_db(f"sqlite:///{tmp_path / 'cases.db'}")
    _case(db, "NS-2026-000007")
    confirm(db, "NS-2026-000007", "op1")
    approve(db, "NS-2026-000007", "rev1")
    dispatch(db, "NS-2026-000007", "op1", assignee="一中队")
    rectify(db, "NS-2026-000007", "op1", note="摊位已撤离")
    d = handle(store, *signed({"event_id": "ev-c", "case_number": "NS-2026-000007", "status": "closed",
                               "comment": "平台核查结案"}))
    case = apply_action(db, d.case_number, d.action, d.actor, note=d.note)
    assert case.status is CaseStatus.CLOSED
    with db() as s:
        last = s.query(AuditEntry).order_by(AuditEntry.id.desc()).first()
    assert (last.actor, last.action, last.detail["note"]) == ("platform:city", "close", "[city] 平台核查结案")
    # the platform closes a case we have not seen rectified: the workflow refuses, nothing changes
    _case(db, "NS-2026-000008")
    d2 = handle(store, *signed({"event_id": "ev-d", "case_number": "NS-2026-000008", "status": "closed"}))
    with pytest.raises(InvalidTransition):
        apply_action(db, d2.case_number, d2.action, d2.actor, note=d2.note)
