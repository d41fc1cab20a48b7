"""Issue 14 wired in: cases routed to their team on drafting, due times per step, reassign, 督办, field officers
limited to their teams' tasks, due states in the API (examples/organisation.yaml is the bureau)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from console_support import MemoryUsers, login
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from test_cases_drafter import make_sealed

from nonsite.app import organisation_of
from nonsite.cases import AuditEntry, Case, draft_case, open_db
from nonsite.cases.audit import verify_chain
from nonsite.cases.bureau import answer_supervision, due_state, reassign, supervise, supervisions_of
from nonsite.cases.deadlines import DueState
from nonsite.cases.organisation import Organisation, load_organisation
from nonsite.cases.statistics import case_rows
from nonsite.cases.workflow import InvalidReason, PermissionDenied, WorkflowError, apply_action
from nonsite.config.loader import load_config
from nonsite.console.app import UNORGANISED_TEAMS, ConsoleSettings, create_app
from nonsite.evidence import LocalStore

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


#: Where the demo's cameras stand (examples/demo.yaml); cam-junction-03 and cam-fence-02 are in no grid's camera
#: list, so their grid is the polygon that holds them.
PLACES = {"cam-junction-03": (31.2320, 121.4761), "cam-fence-02": (31.2311, 121.4750)}


def draft(sf: sessionmaker[Session], org: Organisation | None, camera: str, type_: str = "sidewalk_parking",
          at: datetime = T0) -> Case:
    sealed = make_sealed(type_=type_, camera_id=camera, confirmed_at=at)
    if camera in PLACES:
        lat, lon = PLACES[camera]
        place = sealed.violation.location.model_copy(update={"lat": lat, "lon": lon})
        sealed = sealed.model_copy(update={"violation": sealed.violation.model_copy(update={"location": place})})
    case, created = draft_case(sf, sealed, "NS", now=at, organisation=org)
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
                      "cam-junction-03": "yanshi-group-2", "cam-lane-04": "yanshi-group-1"}


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


# --- the console's API over the same bureau -----------------------------------------------------------------

BUREAU_USERS = {"op": "operator", "sun.hao": "field_officer", "zhao.lei": "field_officer", "zhou.min": "supervisor",
                "boss": "leader"}


@pytest.fixture()
def bureau(tmp_path: Path, org: Organisation) -> Iterator[tuple[sessionmaker[Session], dict[str, Case], Any]]:
    """Four cases drafted 50, 25, 20 and 5 minutes before T0: group 1's (carpark), group 2's (junction), the dog
    team's, and the duty desk's (a camera in no grid); an app whose clock stands at T0."""
    sf = open_db(f"sqlite:///{tmp_path / 'cases.db'}")
    cases = {
        "group1": draft(sf, org, "cam-carpark-01", at=T0 - timedelta(minutes=50)),  # 30 min to confirm: overdue
        "group2": draft(sf, org, "cam-junction-03", at=T0 - timedelta(minutes=25)),  # 5 min left: due soon
        "dogs": draft(sf, org, "cam-fence-02", "stray_dog", at=T0 - timedelta(minutes=20)),  # 10 min left: on time
        "desk": draft(sf, org, "cam-nowhere", at=T0 - timedelta(minutes=5)),  # 25 min left: on time
    }
    users = MemoryUsers()
    for name, role in BUREAU_USERS.items():
        users.add(name, "pw-" + name, role)
    app = create_app(session_factory=sf, store=LocalStore(tmp_path / "evidence"), auth=users,
                     session_secret="test-secret-" + "x" * 20, organisation=org, clock=lambda: T0)
    yield sf, cases, (app, users)
    sf.kw["bind"].dispose()


def api_as(bureau: Any, user: str) -> TestClient:
    app, users = bureau[2]
    return TestClient(app, headers={"Authorization": f"Bearer {users.issue_token(user)}"})


def numbers(r: Any) -> list[str]:
    assert r.status_code == 200, r.text
    return [c["number"] for c in r.json()["items"]]


def test_a_field_officer_sees_only_their_teams_cases(bureau: Any) -> None:
    _, cases, _ = bureau
    sun, zhao = api_as(bureau, "sun.hao"), api_as(bureau, "zhao.lei")
    assert numbers(sun.get("/api/cases")) == [cases["group1"].number]
    assert numbers(zhao.get("/api/cases")) == [cases["group2"].number]
    other = cases["group2"].number
    assert sun.get(f"/api/cases/{other}").status_code == 404
    assert sun.get(f"/api/cases/{cases['group1'].number}").json()["team_name"] == "演示中队第一班组"
    assert sun.post(f"/api/cases/{other}/supervisions/1/answer", json={"answer": "x"}).status_code == 404
    assert sun.post(f"/api/cases/{other}/feedback", data={"note": "已整改"}).status_code == 404
    r = sun.get(f"/evidence/{cases['group2'].event_id}/onset.jpg")
    assert r.status_code == 404 and "no case for event" in r.json()["error"]["message"]
    assert "待确认 (1)" in browser_as(bureau, "sun.hao").get("/").text  # the status counts too
    assert "待确认 (4)" in browser_as(bureau, "op").get("/").text
    # Everyone else sees every case, the read-only leader included.
    assert len(numbers(api_as(bureau, "boss").get("/api/cases"))) == 4
    assert len(numbers(api_as(bureau, "zhou.min").get("/api/cases"))) == 4
    boss = api_as(bureau, "boss")  # read-only
    for path, body in (("confirm", {}), ("reassign", {"team": "duty-desk", "reason": "x"}),
                       ("supervise", {"instruction": "x"})):
        assert boss.post(f"/api/cases/{other}/{path}", json=body).status_code == 403, path


def test_due_state_filter_and_sort_in_the_api(bureau: Any) -> None:
    _, cases, _ = bureau
    op = api_as(bureau, "op")
    listed = {c["number"]: c for c in op.get("/api/cases").json()["items"]}
    states = {k: listed[c.number]["due_state"] for k, c in cases.items()}
    assert states == {"group1": "overdue", "group2": "due_soon", "dogs": "on_time", "desk": "on_time"}
    assert listed[cases["desk"].number]["due_step"] == "confirm"
    assert listed[cases["group1"].number]["team"] == "yanshi-group-1"
    assert numbers(op.get("/api/cases?due=overdue")) == [cases["group1"].number]
    assert numbers(op.get("/api/cases?due=due_soon")) == [cases["group2"].number]
    assert set(numbers(op.get("/api/cases?due=on_time"))) == {cases["dogs"].number, cases["desk"].number}
    by_due = [cases[k].number for k in ("group1", "group2", "dogs", "desk")]
    assert numbers(op.get("/api/cases?sort=due")) == by_due
    assert numbers(op.get("/api/cases")) == by_due[::-1]  # newest first by default
    r = op.get("/api/cases?due=late")
    assert r.status_code == 422 and r.json()["error"]["code"] == "bad_filter"


def test_reassign_supervise_and_answer_through_the_api(bureau: Any) -> None:
    sf, cases, _ = bureau
    number = cases["desk"].number
    op, sup, sun = api_as(bureau, "op"), api_as(bureau, "zhou.min"), api_as(bureau, "sun.hao")
    assert sun.get(f"/api/cases/{number}").status_code == 404
    assert op.post(f"/api/cases/{number}/reassign", json={"team": "yanshi-group-1", "reason": ""}).status_code == 422
    assert sup.post(f"/api/cases/{number}/reassign",
                    json={"team": "yanshi-group-1", "reason": "属演示路东"}).status_code == 403
    r = op.post(f"/api/cases/{number}/reassign", json={"team": "yanshi-group-1", "reason": "属演示路东"})
    assert r.status_code == 200 and r.json()["team"] == "yanshi-group-1"
    assert numbers(sun.get("/api/cases?sort=due")) == [cases["group1"].number, number]  # now theirs too
    deadline = (T0 + timedelta(hours=2)).isoformat()
    assert op.post(f"/api/cases/{number}/supervise", json={"instruction": "速办"}).status_code == 403
    r = sup.post(f"/api/cases/{number}/supervise", json={"instruction": "两小时内处理", "new_deadline": deadline})
    assert r.status_code == 200, r.text
    order = r.json()["id"]
    detail = sun.get(f"/api/cases/{number}").json()
    assert detail["open_supervisions"] == 1 and detail["due_at"].startswith("2026-09-30T04:00")
    assert detail["supervisions"][0]["instruction"] == "两小时内处理"
    r = sun.post(f"/api/cases/{number}/supervisions/{order}/answer", json={"answer": "已到场处置"})
    assert r.status_code == 200 and r.json()["answered_by"] == "sun.hao"
    assert sun.post(f"/api/cases/{number}/supervisions/{order}/answer", json={"answer": "again"}).status_code == 422
    detail = sun.get(f"/api/cases/{number}").json()
    assert detail["open_supervisions"] == 0
    assert [a["action"] for a in detail["audit"]] == ["created", "reassign", "supervise", "answer_supervision"]
    assert verify_chain(sf).ok


def browser_as(bureau: Any, user: str) -> TestClient:
    client = TestClient(bureau[2][0])
    assert login(client, user, "pw-" + user).status_code == 303
    return client


def test_the_pages_show_due_states_and_pin_supervision_for_the_team_only(bureau: Any) -> None:
    sf, cases, _ = bureau
    g1, g2 = cases["group1"].number, cases["group2"].number
    for number in (g1, g2):
        apply_action(sf, number, "confirm", "op", role="operator", now=T0)
        apply_action(sf, number, "approve", "rev", role="reviewer", now=T0)
    supervise(sf, g2, "zhou.min", "示范街占道请今日处理", new_deadline=T0 + timedelta(hours=4), role="supervisor",
              now=T0)
    zhao = browser_as(bureau, "zhao.lei").get("/tasks").text
    pinned, _, rest = zhao.partition('id="tasks-approved"')
    assert 'id="tasks-supervised"' in pinned and g2 in pinned and "示范街占道请今日处理" in pinned
    assert "督办件" in pinned and g2 in rest and g1 not in zhao  # their team's case only, pinned above the groups
    sun = browser_as(bureau, "sun.hao")
    tasks = sun.get("/tasks").text
    assert g1 in tasks and g2 not in tasks and 'id="tasks-supervised"' not in tasks
    assert "演示中队第一班组" in tasks and "按时" in tasks  # the team, and dispatch due in a working day: on time
    assert sun.get(f"/cases/{g2}").status_code == 404 and sun.get(f"/cases/{g1}").status_code == 200
    assert g2 not in sun.get("/").text
    op = browser_as(bureau, "op")
    overdue = op.get("/?due=overdue").text
    assert not any(c.number in overdue for c in cases.values())  # the approved ones have a working day to dispatch
    on_time = op.get("/?status=draft&due=on_time&sort=due").text
    dogs, desk = cases["dogs"].number, cases["desk"].number
    assert on_time.index(dogs) < on_time.index(desk) and "按时" in on_time  # earliest deadline first
    assert 'value="on_time" selected' in on_time and 'value="due" selected' in on_time


def form_post(client: TestClient, path: str, data: dict[str, str]) -> Any:
    page = client.get("/tasks")
    m = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert m, page.text[:300]
    return client.post(path, data={"csrf": m.group(1), **data}, follow_redirects=False)


def test_the_case_page_forms_reassign_supervise_and_answer(bureau: Any) -> None:
    sf, cases, _ = bureau
    number = cases["desk"].number
    op, sup, sun = browser_as(bureau, "op"), browser_as(bureau, "zhou.min"), browser_as(bureau, "sun.hao")
    page = op.get(f"/cases/{number}").text
    assert 'class="reassign-form"' in page and 'class="supervise-form"' not in page and "指挥中心值班组" in page
    assert 'class="reassign-form"' not in sup.get(f"/cases/{number}").text
    r = form_post(op, f"/cases/{number}/reassign", {"team": "yanshi-group-1", "reason": "属演示路东网格"})
    assert r.status_code == 303 and "notice=reassign" in r.headers["location"]
    r = form_post(sup, f"/cases/{number}/supervise", {"instruction": "请于今日16时前处理", "new_deadline":
                                                      "2026-09-30T16:00"})
    assert r.status_code == 303, r.text[:500]
    assert reload(sf, case_of(sf, number)).due_at == datetime(2026, 9, 30, 8, 0, tzinfo=UTC)  # 16:00 in Shanghai
    tasks = sun.get("/tasks").text
    assert 'id="tasks-supervised"' in tasks and "请于今日16时前处理" in tasks and 'class="answer-form"' in tasks
    with sf() as s:
        (order,) = supervisions_of(s, cases["desk"].id)
    m = re.search(r'name="csrf" value="([^"]+)"', tasks)
    assert m
    r = sun.post(f"/cases/{number}/supervisions/{order.id}/answer",
                 data={"csrf": m.group(1), "answer": "已到场，车辆已驶离", "back": "tasks"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].endswith(f"/tasks?notice=answer_supervision&case={number}")
    after = sun.get(r.headers["location"]).text
    assert 'id="tasks-supervised"' not in after and "已答复案件" in after
    assert "已到场，车辆已驶离" in sun.get(f"/cases/{number}").text
    assert [e.action for e in trail(sf, cases["desk"])][-3:] == ["reassign", "supervise", "answer_supervision"]


def case_of(sf: sessionmaker[Session], number: str) -> Case:
    with sf() as s:
        return s.scalars(select(Case).where(Case.number == number)).one()


def test_the_reviewer_sees_the_legal_basis_and_records_a_decision(bureau: Any, org: Organisation) -> None:
    sf, cases, (app, users) = bureau
    first = cases["group1"]
    again = draft(sf, org, "cam-carpark-01", at=T0 - timedelta(minutes=1))  # same camera and zone: a repeat
    for case in (first, again):
        apply_action(sf, case.number, "confirm", "op", role="operator", now=T0)
    users.add("rev", "pw-rev", "reviewer")
    rev = browser_as(bureau, "rev")
    review = rev.get("/review").text
    item = review[review.index(f'id="review-{again.number}"'):]
    assert "道路交通安全法" in item and "处二十元以上二百元以下罚款" in item  # provisions and the penalty range
    assert f'href="/cases/{first.number}"' in item and "同一区域" in item  # the earlier case, linked by zone
    assert 'name="decision"' in item and 'value="no_penalty"' in item
    assert "法律依据与处置建议" in rev.get(f"/cases/{again.number}").text
    api = TestClient(app, headers={"Authorization": f"Bearer {users.issue_token('rev')}"})
    for body in ({"decision": "penalty", "amount_yuan": 500}, {"decision": "penalty"},
                 {"decision": "no_penalty"}, {"decision": "fine"}, {"amount_yuan": 50}):
        r = api.post(f"/api/cases/{again.number}/approve", json=body)
        assert r.status_code == 422, (body, r.text)
    m = re.search(r'name="csrf" value="([^"]+)"', review)
    assert m
    r = rev.post(f"/cases/{again.number}/approve", data={"csrf": m.group(1), "back": "review", "decision": "penalty",
                                                        "amount_yuan": "100", "decision_reason": "再次违停"},
                 follow_redirects=False)
    assert r.status_code == 303, r.text[:400]
    out = api.get(f"/api/cases/{again.number}").json()
    assert (out["status"], out["decision"], out["decision_amount_yuan"], out["decision_reason"]) == (
        "approved", "penalty", 100, "再次违停")
    assert out["audit"][-1]["detail"]["decision"] == {"kind": "penalty", "amount_yuan": 100, "reason": "再次违停"}
    r = api.post(f"/api/cases/{first.number}/approve",
                 json={"decision": "no_penalty", "decision_reason": "首违，已驶离"})
    assert r.status_code == 200 and r.json()["decision"] == "no_penalty"
    assert "不予处罚" in rev.get(f"/cases/{first.number}").text
    assert verify_chain(sf).ok
    with sf() as s:  # the statistics count the stored decisions and routed teams
        rows = {r.number: r for r in case_rows(s, T0 - timedelta(days=1), T0 + timedelta(days=1))}
    assert (rows[again.number].decision, rows[again.number].team_id, rows[again.number].grid_id) == (
        "penalty", "yanshi-group-1", "yanshi-east")
    assert rows[first.number].decision == "no_penalty"
