"""Drafts: offender hint, repeat links and count, suggested disposition and legal-basis snapshot; case numbers
without gaps or duplicates under concurrent drafters (threads and processes) on SQLite and PostgreSQL."""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cases_support import draft_in_process
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from test_cases_drafter import make_sealed

from nonsite.bus.events import EvidenceSealed, OffenderHint
from nonsite.cases import (
    Case,
    CaseLink,
    CaseStatus,
    approve,
    confirm,
    dismiss,
    dispatch,
    draft_case,
    load_catalogue,
    open_db,
)
from nonsite.cases.db import allocate_number, write_session
from nonsite.cases.legal_basis import DEFAULT_CATALOGUE

T0 = datetime(2026, 11, 21, 11, 3, 12, tzinfo=UTC)


@pytest.fixture()
def db(case_db_url: str) -> Iterator[sessionmaker[Session]]:
    sf = open_db(case_db_url)
    yield sf
    sf.kw["bind"].dispose()


def sealed(type_: str = "sidewalk_parking", *, at: datetime = T0, camera: str = "cam-01", zone: str = "z-walk",
           plate: str | None = None) -> EvidenceSealed:
    ev = make_sealed(type_=type_, confirmed_at=at, camera_id=camera)
    v = ev.violation.model_copy(update={
        "zone_id": zone,
        "offender_hint": OffenderHint(plate=plate, plate_confidence=0.91, plate_format="cn_standard",
                                      plate_role="plate") if plate else None,
    })
    return ev.model_copy(update={"violation": v})


def links_of(sf: sessionmaker[Session], case_id: int) -> list[tuple[int, str]]:
    with sf() as s:
        return [(r.linked_case_id, r.kind) for r in s.scalars(
            select(CaseLink).where(CaseLink.case_id == case_id).order_by(CaseLink.linked_case_id, CaseLink.kind))]


def test_first_offence_gets_a_warning_and_a_legal_basis_snapshot(db: sessionmaker[Session]) -> None:
    case, _ = draft_case(db, sealed(plate="沪A·12345"), "SH")
    assert case.offender_plate == "沪A12345"
    assert case.offender_hint == {"plate": "沪A·12345", "plate_confidence": 0.91, "plate_format": "cn_standard",
                                  "plate_role": "plate"}
    assert (case.repeat_count, case.suggested_disposition) == (0, "warning")
    assert case.disposition["rule"] == "first-offence-warning"
    assert [b["id"] for b in case.disposition["basis"]] == ["apl-33", "rtsl-93"]
    snap = case.legal_basis
    assert snap["catalogue_version"] == "nonsite-default-2026.1" and len(snap["catalogue_sha256"]) == 64
    assert [p["article"]["zh"] for p in snap["provisions"]] == ["第五十六条", "第九十三条"]
    assert snap["penalty"]["min_yuan"] == 20 and snap["penalty"]["max_yuan"] == 200


def test_same_plate_within_the_window_is_a_repeat_wherever_it_parks(db: sessionmaker[Session]) -> None:
    first, _ = draft_case(db, sealed(plate="沪A12345", at=T0 - timedelta(days=40), camera="cam-north"), "SH")
    other_car, _ = draft_case(db, sealed(plate="沪B00001", at=T0 - timedelta(days=1)), "SH")
    old, _ = draft_case(db, sealed(plate="沪A12345", at=T0 - timedelta(days=200)), "SH")  # outside 90 days
    case, _ = draft_case(db, sealed(plate="沪a 12345", at=T0), "SH")
    # Same plate (another camera) counts; the other car at the same spot is linked but does not count for
    # parking (repeat.by: [plate]); the 200-day-old case is outside the window.
    assert links_of(db, case.id) == [(first.id, "same_plate"), (other_car.id, "same_zone")]
    assert (case.repeat_count, case.suggested_disposition) == (1, "penalty")
    assert case.disposition["rule"] == "repeat-penalty"
    assert old.repeat_count == 0


def test_without_a_plate_parking_is_a_first_offence(db: sessionmaker[Session]) -> None:
    draft_case(db, sealed(at=T0 - timedelta(hours=3)), "SH")
    case, _ = draft_case(db, sealed(at=T0), "SH")
    assert case.offender_plate is None and case.offender_hint is None
    assert len(links_of(db, case.id)) == 1  # linked by zone, for the reviewer to see
    assert (case.repeat_count, case.suggested_disposition) == (0, "warning")


def test_vending_repeats_by_zone_and_dismissed_alerts_do_not_count(db: sessionmaker[Session]) -> None:
    a, _ = draft_case(db, sealed("street_vending", at=T0 - timedelta(days=10)), "SH")
    b, _ = draft_case(db, sealed("street_vending", at=T0 - timedelta(days=5)), "SH")
    draft_case(db, sealed("street_vending", at=T0 - timedelta(days=2), zone="z-other"), "SH")  # elsewhere
    draft_case(db, sealed("sidewalk_parking", at=T0 - timedelta(days=1)), "SH")  # another type
    dismiss(db, b.id, "op", "false_positive")
    case, _ = draft_case(db, sealed("street_vending", at=T0), "SH")
    assert links_of(db, case.id) == [(a.id, "same_zone")]
    assert (case.repeat_count, case.suggested_disposition) == (1, "penalty")
    assert case.legal_basis["provisions"][0]["id"] == "cacsr-14"


def test_a_stray_dog_goes_to_the_capture_team(db: sessionmaker[Session]) -> None:
    draft_case(db, sealed("stray_dog", at=T0 - timedelta(days=1)), "SH")
    case, _ = draft_case(db, sealed("stray_dog", at=T0), "SH")
    assert case.repeat_count == 1 and case.suggested_disposition == "dispatch"
    assert case.disposition["dispatch_to"]["zh"] == "街道流浪犬收容处置队"
    assert case.legal_basis["penalty"] is None
    confirm(db, case.id, "op-li", role="operator")
    approve(db, case.id, "rev-wang", role="reviewer")
    done = dispatch(db, case.id, "op-li", role="operator")
    assert done.status is CaseStatus.DISPATCHED and done.dispatched_to == "街道流浪犬收容处置队"


def test_unknown_type_is_left_to_a_person(db: sessionmaker[Session]) -> None:
    case, _ = draft_case(db, sealed("blocked_fire_lane"), "SH")
    assert case.suggested_disposition == "manual" and case.disposition["rule"] is None
    assert case.legal_basis["known"] is False


def test_the_citys_catalogue_decides(db: sessionmaker[Session], tmp_path: Path) -> None:
    text = DEFAULT_CATALOGUE.read_text(encoding="utf-8")
    city = tmp_path / "city.yaml"
    city.write_text(text.replace('version: "nonsite-default-2026.1"', 'version: "shanghai-2027"')
                    .replace("      window_days: 90\n", "      window_days: 7\n"), encoding="utf-8")
    cat = load_catalogue(city)
    draft_case(db, sealed(plate="沪A12345", at=T0 - timedelta(days=8)), "SH", catalogue=cat)
    case, _ = draft_case(db, sealed(plate="沪A12345", at=T0), "SH", catalogue=cat)
    assert (case.repeat_count, case.suggested_disposition) == (0, "warning")  # 8 days > the city's 7
    assert case.legal_basis["catalogue_version"] == "shanghai-2027"


def _numbers(sf: sessionmaker[Session]) -> list[str]:
    with sf() as s:
        return list(s.scalars(select(Case.number).order_by(Case.number)))


def test_concurrent_drafting_processes_leave_no_gaps_and_no_duplicates(case_db_url: str) -> None:
    """Three processes draft overlapping sets of events at once (most events reach two of them, as with
    at-least-once redelivery): one case per event, numbers 1..N."""
    sf = open_db(case_db_url)
    events = [make_sealed().model_dump_json() for _ in range(24)]
    shares = [events[0:16], events[8:24], events[::2]]
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(len(shares))
    procs = [ctx.Process(target=draft_in_process, args=(case_db_url, share, "SH", barrier)) for share in shares]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0] * len(procs)
    year = datetime.now(UTC).year
    assert _numbers(sf) == [f"SH-{year}-{i:06d}" for i in range(1, 25)]
    with sf() as s:
        assert s.scalar(select(func.count(func.distinct(Case.event_id)))) == 24
    sf.kw["bind"].dispose()


def test_rolled_back_drafts_give_their_numbers_back(db: sessionmaker[Session]) -> None:
    """Threads draft while others allocate a number and then fail: the failures leave no hole."""
    events = [make_sealed() for _ in range(12)]
    errors: list[BaseException] = []
    start = threading.Barrier(6)

    def drafter(share: list[EvidenceSealed]) -> None:
        try:
            start.wait()
            for ev in share:
                draft_case(db, ev, "SH")
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    def crasher() -> None:
        start.wait()
        for _ in range(5):
            try:
                with write_session(db) as s:
                    allocate_number(s, "SH", datetime.now(UTC).year)
                    raise RuntimeError("crash after taking a number")
            except RuntimeError:
                pass

    threads = [threading.Thread(target=drafter, args=(events[i::3],)) for i in range(3)]
    threads += [threading.Thread(target=crasher) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    year = datetime.now(UTC).year
    assert _numbers(db) == [f"SH-{year}-{i:06d}" for i in range(1, 13)]
