"""Read-side queries the console uses: search, filters, queues, counts, neighbours, links, audit; on SQLite and
PostgreSQL, including hostile search strings."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy.orm import Session, sessionmaker
from test_cases_repeats import sealed

from nonsite.cases import Case, CaseStatus, Role, confirm, dismiss, draft_case, open_db
from nonsite.cases.queries import (
    CaseFilter,
    audit_trail,
    camera_choices,
    count_by_disposition,
    count_by_status,
    count_by_type,
    day_range,
    filter_from_params,
    get_case,
    known_types,
    linked_cases,
    neighbours,
    parse_params,
    queue_filter,
    queues_for,
    search_cases,
)

# 2026-11-21 19:03:12 in Shanghai; the day before starts at 2026-11-19 16:00 UTC.
T0 = datetime(2026, 11, 21, 11, 3, 12, tzinfo=UTC)


@dataclass
class World:
    sf: sessionmaker[Session]
    cases: dict[str, Case]


@pytest.fixture()
def world(case_db_url: str) -> Iterator[World]:
    sf = open_db(case_db_url)
    specs = {  # name: (type, hours before T0, camera, plate)
        "park_old": ("sidewalk_parking", 50, "cam-east", "沪A12345"),
        "vend": ("street_vending", 30, "cam-west", None),
        "dog": ("stray_dog", 2, "cam-park", None),
        "park_new": ("sidewalk_parking", 1, "cam-east", "沪A·12345"),
        "park_other": ("sidewalk_parking", 0, "cam-east", "苏E99999"),
    }
    cases = {}
    for name, (type_, hours, camera, plate) in specs.items():
        cases[name], _ = draft_case(sf, sealed(type_, at=T0 - timedelta(hours=hours), camera=camera, plate=plate), "SH")
    confirm(sf, cases["vend"].id, "li", role=Role.OPERATOR)
    dismiss(sf, cases["dog"].id, "li", "false_positive", role=Role.OPERATOR)
    yield World(sf, cases)
    sf.kw["bind"].dispose()


def numbers(page_items: list[Case]) -> list[str]:
    return [c.number for c in page_items]


def test_newest_first_with_totals_and_paging(world: World) -> None:
    c = world.cases
    with world.sf() as s:
        page = search_cases(s)
        assert numbers(page.items) == [c[n].number for n in ("park_other", "park_new", "dog", "vend", "park_old")]
        assert page.total == 5
        second = search_cases(s, limit=2, offset=2)
        assert numbers(second.items) == [c["dog"].number, c["vend"].number] and second.total == 5


def test_search_by_number_plate_camera_type_and_day(world: World) -> None:
    c = world.cases
    with world.sf() as s:
        assert numbers(search_cases(s, CaseFilter(number=c["vend"].number[-6:])).items) == [c["vend"].number]
        assert numbers(search_cases(s, CaseFilter(plate="沪a-12345")).items) == [c["park_new"].number,
                                                                                c["park_old"].number]
        assert search_cases(s, CaseFilter(camera_ids=("cam-east",))).total == 3
        assert numbers(search_cases(s, CaseFilter(types=("stray_dog",))).items) == [c["dog"].number]
        since, until = day_range(date(2026, 11, 20), tz="Asia/Shanghai")  # 20 Nov on Shanghai's clock
        assert since == datetime(2026, 11, 19, 16, 0, tzinfo=UTC) and until == since + timedelta(days=1)
        assert numbers(search_cases(s, CaseFilter(since=since, until=until)).items) == [c["vend"].number]
        assert numbers(search_cases(s, CaseFilter(text="苏E")).items) == [c["park_other"].number]
        assert search_cases(s, CaseFilter(text="南京东路")).total == 5  # the address
        assert search_cases(s, CaseFilter(repeats_only=True)).total == 1  # park_new repeats park_old's plate


@pytest.mark.parametrize("hostile", ["' OR 1=1 --", "%", "_", "\\", "<script>alert(1)</script>", "沪A%",
                                     "a'); DROP TABLE cases; --"])
def test_hostile_search_strings_match_nothing_and_break_nothing(world: World, hostile: str) -> None:
    with world.sf() as s:
        for flt in (CaseFilter(text=hostile), CaseFilter(number=hostile), CaseFilter(plate=hostile)):
            assert search_cases(s, flt).total == 0
        assert search_cases(s).total == 5


def test_counts_and_queues(world: World) -> None:
    with world.sf() as s:
        assert count_by_status(s) == {"draft": 3, "confirmed": 1, "approved": 0, "returned": 0, "dismissed": 1,
                                      "dispatched": 0, "rectified": 0, "closed": 0}
        parking = CaseFilter(types=("sidewalk_parking",), statuses=(CaseStatus.CONFIRMED,))
        assert count_by_status(s, parking)["draft"] == 3  # the status filter is what is being counted
        assert count_by_type(s) == {"sidewalk_parking": 3, "street_vending": 1, "stray_dog": 1}
        assert count_by_disposition(s) == {"dispatch": 1, "penalty": 1, "warning": 3}
        assert search_cases(s, queue_filter("triage")).total == 3
        assert numbers(search_cases(s, queue_filter("review")).items) == [world.cases["vend"].number]
        assert search_cases(s, queue_filter("review", CaseFilter(types=("stray_dog",)))).total == 0
        assert known_types(s) == ["sidewalk_parking", "stray_dog", "street_vending"]
        assert camera_choices(s) == [("cam-east", "东门路口", 3), ("cam-park", "东门路口", 1),
                                     ("cam-west", "东门路口", 1)]
    assert queues_for("operator") == ["triage", "dispatch", "feedback"]
    assert queues_for(Role.REVIEWER) == ["review", "closing"]
    assert queues_for("admin") == ["triage", "review", "dispatch", "feedback", "closing"]
    with pytest.raises(ValueError, match="unknown queue 'inbox'"):
        queue_filter("inbox")


def test_neighbours_for_keyboard_triage(world: World) -> None:
    c = world.cases
    with world.sf() as s:
        triage = queue_filter("triage")
        assert neighbours(s, c["park_new"], triage) == (c["park_other"].number, c["park_old"].number)
        assert neighbours(s, c["park_other"], triage) == (None, c["park_new"].number)
        assert neighbours(s, c["park_old"], triage) == (c["park_new"].number, None)


def test_links_audit_and_lookup(world: World) -> None:
    c = world.cases
    with world.sf() as s:
        links = linked_cases(s, c["park_new"].id)
        assert [(lc.case.number, lc.kinds, lc.earlier) for lc in links] == [
            (c["park_other"].number, ("same_zone",), False),  # the later car at the same spot
            (c["park_old"].number, ("same_plate", "same_zone"), True)]
        back = linked_cases(s, c["park_old"])
        assert [(lc.case.number, lc.earlier) for lc in back] == [
            (c["park_other"].number, False), (c["park_new"].number, False)]
        assert [a.action for a in audit_trail(s, c["dog"])] == ["created", "dismiss"]
        assert get_case(s, c["dog"].number).id == c["dog"].id  # type: ignore[union-attr]
        assert get_case(s, c["dog"].id).number == c["dog"].number  # type: ignore[union-attr]
        assert get_case(s, "SH-1999-000001") is None


def test_filter_from_query_parameters() -> None:
    flt = filter_from_params({"status": "draft,returned", "type": ["stray_dog"], "camera": "cam-1",
                              "from": "2026-11-20", "to": "2026-11-21", "q": " 沪A ", "repeats": "1",
                              "disposition": "warning"})
    assert flt.statuses == (CaseStatus.DRAFT, CaseStatus.RETURNED) and flt.types == ("stray_dog",)
    assert flt.camera_ids == ("cam-1",) and flt.dispositions == ("warning",) and flt.repeats_only
    assert flt.since == datetime(2026, 11, 19, 16, 0, tzinfo=UTC)
    assert flt.until == datetime(2026, 11, 21, 16, 0, tzinfo=UTC)
    assert flt.text == "沪A"
    assert filter_from_params([("status", "draft"), ("status", "closed")]).statuses == (CaseStatus.DRAFT,
                                                                                        CaseStatus.CLOSED)
    for params, message in [({"status": "bogus"}, "status 'bogus' is not one of draft"),
                            ({"from": "21/11/2026"}, "from '21/11/2026' is not a date; use YYYY-MM-DD"),
                            ({"from": "2026-11-22", "to": "2026-11-21"}, "before from"),
                            ({"disposition": "jail"}, "disposition 'jail' is not one of warning")]:
        with pytest.raises(ValueError, match=message):
            filter_from_params(params)
    with pytest.raises(ValueError, match="timezone-aware"):
        CaseFilter(since=datetime(2026, 1, 1))


def test_query_parameters_read_leniently_for_pages() -> None:
    """The console's pages keep what is good in a filter and say what they ignored (the API answers 422)."""
    parsed = parse_params([("status", "draft,bogus"), ("from", "2026-11-21T18:00"), ("to", "yesterday"),
                           ("camera", "a\nb"), ("q", " 沪A·12345 "), ("page", "3")])
    assert parsed.filter.statuses == (CaseStatus.DRAFT,) and parsed.filter.camera_ids == ()
    assert parsed.filter.since == datetime(2026, 11, 21, 10, 0, tzinfo=UTC) and parsed.filter.until is None
    assert parsed.raw == (("status", "draft"), ("from", "2026-11-21T18:00"), ("q", "沪A·12345"))
    assert parsed.query() == "?status=draft&from=2026-11-21T18%3A00&q=%E6%B2%AAA%C2%B712345"
    assert [p for p, _ in parsed.problems] == ["status", "camera", "to"]
    assert parse_params({"from": "2026-11-21T10:30:00Z"}).filter.since == datetime(2026, 11, 21, 10, 30, tzinfo=UTC)
    assert parse_params({"q": "x" * 201}).problems == (("q", "the search text is longer than 200 characters"),)
