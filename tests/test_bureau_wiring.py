"""Issue 14 wired in: cases routed to their team on drafting, due times per step, reassign, 督办, field officers
limited to their teams' tasks, due states in the API (examples/organisation.yaml is the bureau)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from test_cases_drafter import make_sealed

from nonsite.app import organisation_of
from nonsite.cases import AuditEntry, Case, draft_case, open_db
from nonsite.cases.audit import verify_chain
from nonsite.cases.bureau import answer_supervision, due_state, reassign, supervise, supervisions_of
from nonsite.cases.deadlines import DueState
from nonsite.cases.organisation import Organisation, load_organisation
from nonsite.cases.workflow import InvalidReason, PermissionDenied, WorkflowError, apply_action
from nonsite.config.loader import load_config
from nonsite.console.app import UNORGANISED_TEAMS, ConsoleSettings

ROOT = Path(__file__).resolve().parents[1]
ORG_FILE = ROOT / "examples" / "organisation.yaml"
# Wednesday 30 September 2026, 10:00 in Shanghai, the last working day before the National Day holiday (1-7
# October; 8 October is the next working day, 10 October a make-up working day: chinesecalendar's 2026 schedule).
T0 = datetime(2026, 9, 30, 2, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def org() -> Organisation:
    return load_organisation(ORG_FILE)


@pytest.fixture()
def db(case_db_url: str) -> Iterator[sessionmaker[Session]]:
    sf = open_db(case_db_url)
    yield sf
    sf.kw["bind"].dispose()


def draft(sf: sessionmaker[Session], org: Organisation | None, camera: str, type_: str = "sidewalk_parking",
          at: datetime = T0) -> Case:
    case, created = draft_case(sf, make_sealed(type_=type_, camera_id=camera, confirmed_at=at), "NS",
                               now=at, organisation=org)
    assert created
    return case


def test_a_new_case_goes_to_the_team_of_its_cameras_grid(db: sessionmaker[Session], org: Organisation) -> None:
    parked = draft(db, org, "cam-carpark-01")  # listed in grid yanshi-east
    dog = draft(db, org, "cam-carpark-01", "stray_dog")  # the district's capture team is named for dogs
    stranger = draft(db, org, "cam-nowhere")  # in no grid (the test location is outside every polygon)
    assert (parked.team, parked.grid, parked.street) == ("yanshi-group-1", "yanshi-east", "yanshi-jd")
    assert (dog.team, dog.grid) == ("dog-capture", "yanshi-east")
    assert (stranger.team, stranger.grid, stranger.street) == ("duty-desk", None, None)
    # The confirm step is due 30 minutes after drafting (the catalogue's default, elapsed time).
    assert parked.due_step == "confirm" and parked.due_at == T0 + timedelta(minutes=30)
    with db() as s:
        created = s.scalars(select(AuditEntry).where(AuditEntry.case_id == parked.id)).one()
    assert created.action == "created"
    assert created.detail["routing"] == {"team": "yanshi-group-1", "grid": "yanshi-east", "grid_by": "camera",
                                         "rule": ["yanshi-group-1", 0], "fallback": False, "version": "demo-2026.1"}


def test_without_an_organisation_nothing_is_routed(tmp_path: Path) -> None:
    sf = open_db(f"sqlite:///{tmp_path / 'c.db'}")
    case = draft(sf, None, "cam-carpark-01")
    assert (case.team, case.grid, case.street) == (None, None, None)
    assert case.due_at == T0 + timedelta(minutes=30)


def test_dispatch_targets_are_the_organisations_teams(tmp_path: Path, org: Organisation) -> None:
    sf = open_db(f"sqlite:///{tmp_path / 'c.db'}")
    from nonsite.evidence import LocalStore

    store = LocalStore(tmp_path / "ev")
    with_org = ConsoleSettings(session_factory=sf, store=store, organisation=org)
    assert list(with_org.teams) == ["duty-desk", "yanshi-squad", "yanshi-group-1", "yanshi-group-2",
                                    "xincheng-squad", "dog-capture"]
    assert tuple(ConsoleSettings(session_factory=sf, store=store).teams) == UNORGANISED_TEAMS


def test_the_demo_configuration_routes_its_cases() -> None:
    cfg = load_config(ROOT / "examples" / "demo.yaml")
    org = organisation_of(cfg)
    assert org is not None
    cams = {c.id: c for c in cfg.cameras}
    assert org.unknown_cameras(cams) == []
    routed = {cid: org.route("sidewalk_parking", cid, cams[cid].location).id for cid in cams}  # type: ignore[union-attr]
    assert routed == {"cam-carpark-01": "yanshi-group-1", "cam-fence-02": "yanshi-group-1",
                      "cam-junction-03": "yanshi-group-2"}


def trail(sf: sessionmaker[Session], case: Case) -> list[AuditEntry]:
    with sf() as s:
        return list(s.scalars(select(AuditEntry).where(AuditEntry.case_id == case.id).order_by(AuditEntry.id)))


def reload(sf: sessionmaker[Session], case: Case) -> Case:
    with sf() as s:
        return s.get_one(Case, case.id)


def test_reassign_needs_a_reason_and_is_audited(db: sessionmaker[Session], org: Organisation) -> None:
    case = draft(db, org, "cam-carpark-01")
    with pytest.raises(InvalidReason):
        reassign(db, case.number, "yanshi-group-2", "op", " ", organisation=org, role="operator")
    with pytest.raises(PermissionDenied):
        reassign(db, case.number, "yanshi-group-2", "sup", "wrong street", organisation=org, role="supervisor")
    with pytest.raises(WorkflowError, match="unknown team 'nowhere'"):
        reassign(db, case.number, "nowhere", "op", "wrong street", organisation=org, role="operator")
    reassign(db, case.number, "yanshi-group-2", "op", "车停在示范街一侧", organisation=org, role="operator")
    assert reload(db, case).team == "yanshi-group-2"
    last = trail(db, case)[-1]
    assert (last.action, last.actor, last.team, last.before_status, last.after_status) == (
        "reassign", "op", "yanshi-group-2", "draft", "draft")
    assert last.detail == {"role": "operator", "from_team": "yanshi-group-1", "to_team": "yanshi-group-2",
                           "reason": "车停在示范街一侧"}
    assert verify_chain(db).ok


def test_supervision_sets_a_deadline_until_the_team_answers(db: sessionmaker[Session], org: Organisation) -> None:
    case = draft(db, org, "cam-carpark-01")  # yanshi-group-1: li.qiang leads, sun.hao and zhou.tao
    apply_action(db, case.number, "confirm", "op", role="operator", now=T0 + timedelta(minutes=10))
    step_due = reload(db, case).due_at
    deadline = T0 + timedelta(hours=3)
    with pytest.raises(PermissionDenied):
        supervise(db, case.number, "op", "尽快处理", new_deadline=deadline, role="operator", now=T0)
    order = supervise(db, case.number, "zhou.min", "节前必须处理完毕", new_deadline=deadline, role="supervisor",
                      now=T0 + timedelta(hours=1))
    assert reload(db, case).due_at == deadline
    with pytest.raises(LookupError):  # another team's field officer does not even see the case
        answer_supervision(db, order.id, "zhao.lei", "已处理", organisation=org, role="field_officer")
    answer_supervision(db, order.id, "sun.hao", "已现场劝离，车辆驶离", organisation=org, role="field_officer",
                       now=T0 + timedelta(hours=2))
    with pytest.raises(WorkflowError, match="already answered by sun.hao"):
        answer_supervision(db, order.id, "zhou.tao", "again", organisation=org, role="field_officer")
    assert reload(db, case).due_at == step_due  # the review step's own limit again
    with db() as s:
        (stored,) = supervisions_of(s, case.id)
    assert (stored.instruction, stored.issued_by, stored.answered_by, stored.answer, stored.new_deadline) == (
        "节前必须处理完毕", "zhou.min", "sun.hao", "已现场劝离，车辆驶离", deadline)
    assert [e.action for e in trail(db, case)] == ["created", "confirm", "supervise", "answer_supervision"]
    assert verify_chain(db).ok


def test_a_review_goes_overdue_on_the_working_day_clock_across_the_holiday(
        db: sessionmaker[Session], org: Organisation) -> None:
    case = draft(db, org, "cam-carpark-01", at=T0 - timedelta(minutes=10))
    assert due_state(case, T0 - timedelta(minutes=5)) is DueState.ON_TIME
    assert due_state(case, T0 + timedelta(minutes=18)) is DueState.DUE_SOON  # 30 min to confirm; the last fifth
    assert due_state(case, T0 + timedelta(minutes=20)) is DueState.OVERDUE
    confirmed = apply_action(db, case.number, "confirm", "op", role="operator", now=T0)
    # One working day to review: 1-7 October are holidays, so the review is due by the end of Thursday 8 October.
    end_of_8_october = datetime(2026, 10, 8, 16, 0, tzinfo=UTC)
    assert (confirmed.due_step, confirmed.due_at) == ("review", end_of_8_october)
    assert due_state(confirmed, datetime(2026, 10, 2, 2, 0, tzinfo=UTC)) is DueState.ON_TIME  # a calendar day: late
    assert due_state(confirmed, datetime(2026, 10, 8, 8, 0, tzinfo=UTC)) is DueState.DUE_SOON
    assert due_state(confirmed, end_of_8_october) is DueState.OVERDUE
    approved = apply_action(db, case.number, "approve", "rev", role="reviewer", now=end_of_8_october)
    # Approved at 00:00 on Friday 9 October (that day not counted): due by the end of Saturday 10 October, a make-up
    # working day.
    assert approved.due_step == "dispatch" and approved.due_at == datetime(2026, 10, 10, 16, 0, tzinfo=UTC)
    closed_path = [("dispatch", "op", {}), ("rectify", "sun.hao", {"note": "已整改"}), ("close", "rev", {})]
    roles = {"op": "operator", "sun.hao": "field_officer", "rev": "reviewer"}
    for action, actor, kw in closed_path:
        last = apply_action(db, case.number, action, actor, role=roles[actor], now=end_of_8_october, **kw)
    assert (last.due_step, last.due_at, due_state(last, end_of_8_october)) == (None, None, None)
    assert last.dispatched_to == "yanshi-group-1"  # dispatch goes to the routed team unless told otherwise
