"""Case drafter: idempotent by event id, gapless numbers under concurrency, dead letters, bus commits."""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.exc import DatabaseError
from sqlalchemy.orm import Session, sessionmaker

from nonsite.bus import EmbeddedBus
from nonsite.bus.events import (
    TOPIC_DEAD_LETTER,
    TOPIC_EVIDENCE,
    BoxRecord,
    EvidenceItem,
    EvidenceSealed,
    Location,
    ModelInfo,
    ViolationEvent,
    new_event_id,
)
from nonsite.cases import AuditEntry, Case, CaseStatus, draft_case, draft_pending, open_db, run_drafter


def make_sealed(
    event_id: str | None = None,
    *,
    type_: str = "sidewalk_parking",
    confirmed_at: datetime | None = None,
    camera_id: str = "cam-01",
    problems: list[str] | None = None,
) -> EvidenceSealed:
    """A sealed event as the sealer publishes it (hashes of made-up content; no blobs needed here)."""
    eid = event_id or new_event_id()
    confirmed = confirmed_at or datetime(2026, 11, 21, 11, 3, 12, tzinfo=UTC)
    prefix = f"events/{eid}/"
    items = [
        EvidenceItem(role=role, key=prefix + name, sha256=hashlib.sha256(f"{eid}{role}".encode()).hexdigest(),
                     bytes=1000, content_type=ct)
        for role, name, ct in [
            ("onset", "onset.jpg", "image/jpeg"), ("confirm", "confirm.jpg", "image/jpeg"),
            ("onset_annotated", "onset_annotated.jpg", "image/jpeg"),
            ("confirm_annotated", "confirm_annotated.jpg", "image/jpeg"),
            ("closeup", "closeup.jpg", "image/jpeg"), ("clip", "clip.mp4", "video/mp4"),
        ]
    ]
    violation = ViolationEvent(
        event_id=eid, type=type_, camera_id=camera_id, camera_name="东门路口", zone_id="z-walk",
        zone_name="人行道", started_at=confirmed - timedelta(seconds=95), confirmed_at=confirmed,
        track_ids=[7], boxes={"confirm": [BoxRecord(xyxy=(10, 20, 110, 90), class_name="car", confidence=0.9,
                                                    track_id=7)]},
        confidence=0.88, dwell_s=95.0, model=ModelInfo(name="yolo11n-coco", version="8.3", sha256="ab" * 32),
        rule_config_hash="cd" * 32, evidence=items,
        location=Location(address="上海市黄浦区南京东路100号", lat=31.2397, lon=121.4998),
    )
    return EvidenceSealed(
        event_id=eid, violation=violation, manifest_key=prefix + "manifest.json", manifest_sha256="ef" * 32,
        signature_key=prefix + "manifest.sig", public_key_fingerprint="01" * 32, problems=problems or [],
    )


@pytest.fixture()
def db(case_db_url: str) -> Iterator[sessionmaker[Session]]:
    """A migrated case database: SQLite and PostgreSQL (the ``case_db_url`` fixture runs each test on both)."""
    sf = open_db(case_db_url)
    yield sf
    sf.kw["bind"].dispose()


def count(sf: sessionmaker[Session], model: type) -> int:
    with sf() as s:
        return s.scalar(select(func.count()).select_from(model)) or 0


def test_draft_fills_the_case_from_the_sealed_event(db: sessionmaker[Session]) -> None:
    sealed = make_sealed(problems=["clip.mp4: sha256 differs"])
    case, created = draft_case(db, sealed, "SH", now=datetime(2026, 11, 21, 12, 0, tzinfo=UTC))
    assert created
    assert case.number == "SH-2026-000001"
    assert case.status is CaseStatus.DRAFT
    assert (case.type, case.camera_id, case.camera_name, case.zone_name) == (
        "sidewalk_parking", "cam-01", "东门路口", "人行道")
    assert case.address == "上海市黄浦区南京东路100号" and case.lat == pytest.approx(31.2397)
    assert case.thumbnail_key == f"events/{sealed.event_id}/closeup.jpg"
    assert case.seal_problems == ["clip.mp4: sha256 differs"]
    assert [e["role"] for e in case.evidence][:2] == ["onset", "confirm"]
    # Times come back from the database as aware UTC, the same instants.
    with db() as s:
        stored = s.scalar(select(Case).where(Case.event_id == sealed.event_id))
        assert stored is not None
        assert stored.confirmed_at == sealed.violation.confirmed_at and stored.confirmed_at.tzinfo is UTC
        assert stored.started_at == sealed.violation.confirmed_at - timedelta(seconds=95)
        assert stored.violation["model"]["name"] == "yolo11n-coco"
        (audit,) = stored.audit
        assert (audit.action, audit.before_status, audit.after_status) == ("created", None, "draft")
        # Stored as UTC: text in SQLite (11:03:12, not the Shanghai wall clock), timestamptz in PostgreSQL.
        if s.get_bind().dialect.name == "sqlite":
            raw = s.execute(text("SELECT confirmed_at FROM cases")).scalar_one()
            assert str(raw).startswith("2026-11-21 11:03:12")
        else:
            raw = s.execute(text("SELECT confirmed_at AT TIME ZONE 'UTC' FROM cases")).scalar_one()
            assert raw == datetime(2026, 11, 21, 11, 3, 12)


def test_same_event_twice_gives_one_case(db: sessionmaker[Session]) -> None:
    sealed = make_sealed()
    first, created1 = draft_case(db, sealed, "NS")
    second, created2 = draft_case(db, sealed, "NS")
    assert (created1, created2) == (True, False)
    assert second.id == first.id and second.number == first.number
    assert count(db, Case) == 1
    assert count(db, AuditEntry) == 1


def test_year_is_the_filing_year_in_the_city_zone(db: sessionmaker[Session]) -> None:
    # 2026-12-31 17:30 UTC is already 2027-01-01 01:30 in Shanghai.
    now = datetime(2026, 12, 31, 17, 30, tzinfo=UTC)
    case, _ = draft_case(db, make_sealed(), "NS", now=now, timezone="Asia/Shanghai")
    other, _ = draft_case(db, make_sealed(), "NS", now=now, timezone="UTC")
    assert case.number == "NS-2027-000001"
    assert other.number == "NS-2026-000001"


def test_concurrent_drafters_make_one_case_per_event_with_gapless_numbers(db: sessionmaker[Session]) -> None:
    events = [make_sealed() for _ in range(8)]
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def worker() -> None:
        try:
            start.wait()
            for ev in events:
                draft_case(db, ev, "NS")
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    with db() as s:
        cases = s.scalars(select(Case).order_by(Case.number)).all()
    assert len(cases) == len(events)
    assert {c.event_id for c in cases} == {e.event_id for e in events}
    year = datetime.now(UTC).year
    assert [c.number for c in cases] == [f"NS-{year}-{i:06d}" for i in range(1, len(events) + 1)]
    assert count(db, AuditEntry) == len(events)
    from nonsite.cases.audit import verify_chain

    chain = verify_chain(db)  # concurrent writers extended one hash chain
    assert chain.ok and chain.entries == chain.head_seq == len(events), chain.problems


def test_numbers_are_per_prefix(db: sessionmaker[Session]) -> None:
    a, _ = draft_case(db, make_sealed(), "AA")
    b, _ = draft_case(db, make_sealed(), "BB")
    c, _ = draft_case(db, make_sealed(), "AA")
    assert [re.sub(r"-\d{4}-", "-Y-", x.number) for x in (a, b, c)] == ["AA-Y-000001", "BB-Y-000001", "AA-Y-000002"]


def test_audit_entries_cannot_be_changed_or_deleted(db: sessionmaker[Session]) -> None:
    draft_case(db, make_sealed(), "NS")
    with db() as s, pytest.raises(DatabaseError, match="append-only"):
        s.execute(text("UPDATE audit_entries SET actor = 'someone else'"))
    with db() as s, pytest.raises(DatabaseError, match="append-only"):
        s.execute(text("DELETE FROM audit_entries"))
    with db() as s:
        entry = s.scalars(select(AuditEntry)).one()
        entry.actor = "someone else"
        with pytest.raises(PermissionError, match="append-only"):
            s.commit()


def test_draft_pending_drains_the_topic_and_dead_letters_poison(tmp_path: Path, db: sessionmaker[Session]) -> None:
    bus = EmbeddedBus(tmp_path / "bus.sqlite")
    good = [make_sealed() for _ in range(3)]
    bus.publish(TOPIC_EVIDENCE, "cam-01", good[0].model_dump_json().encode())
    bus.publish(TOPIC_EVIDENCE, "cam-01", b"{not json")
    bus.publish(TOPIC_EVIDENCE, "cam-01", json.dumps({"event_id": "x"}).encode())
    bus.publish(TOPIC_EVIDENCE, "cam-01", good[1].model_dump_json().encode())
    bus.publish(TOPIC_EVIDENCE, "cam-01", good[0].model_dump_json().encode())  # redelivered duplicate
    bus.publish(TOPIC_EVIDENCE, "cam-01", good[2].model_dump_json().encode())

    assert draft_pending(bus, db, "NS") == 3
    assert count(db, Case) == 3
    assert bus.lag(TOPIC_EVIDENCE, "nonsite-drafter") == 0
    assert draft_pending(bus, db, "NS") == 0

    dead = bus.consumer(TOPIC_DEAD_LETTER, "inspect").poll(timeout_s=0)
    assert len(dead) == 2
    reasons = [json.loads(m.value)["reason"] for m in dead]
    assert reasons[0].startswith("not valid JSON")
    assert "not an EvidenceSealed event" in reasons[1] and "violation" in reasons[1]
    assert json.loads(dead[0].value)["value"] == "{not json"
    assert json.loads(dead[1].value)["offset"] == 2
    bus.close()


def test_run_drafter_commits_only_after_the_db(tmp_path: Path) -> None:
    bus = EmbeddedBus(tmp_path / "bus.sqlite")
    events = [make_sealed() for _ in range(4)]
    for ev in events:
        bus.publish(TOPIC_EVIDENCE, ev.violation.camera_id, ev.model_dump_json().encode())

    # The database is unreachable (its folder is a file): nothing may be committed on the bus.
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    broken = sessionmaker(bind=create_engine(f"sqlite:///{blocker}/cases.db"))
    stop = threading.Event()
    t = threading.Thread(target=run_drafter, args=(bus, broken, "NS", stop), kwargs={"poll_timeout_s": 0.05})
    t.start()
    stop.wait(0.3)
    stop.set()
    t.join(10)
    assert not t.is_alive()
    assert bus.committed(TOPIC_EVIDENCE, "nonsite-drafter") == 0

    # With a working database the same consumer group drafts all four, then stops when asked.
    sf = open_db(f"sqlite:///{tmp_path / 'cases.db'}")
    stop = threading.Event()
    t = threading.Thread(target=run_drafter, args=(bus, sf, "NS", stop), kwargs={"poll_timeout_s": 0.05})
    t.start()
    for _ in range(200):
        if count(sf, Case) == 4 and bus.lag(TOPIC_EVIDENCE, "nonsite-drafter") == 0:
            break
        stop.wait(0.05)
    stop.set()
    t.join(10)
    assert not t.is_alive()
    assert count(sf, Case) == 4
    assert bus.lag(TOPIC_EVIDENCE, "nonsite-drafter") == 0
    sf.kw["bind"].dispose()
    bus.close()


def test_open_db_names_a_bad_url() -> None:
    with pytest.raises(ValueError, match="not a SQLAlchemy URL"):
        open_db("cases.db")
