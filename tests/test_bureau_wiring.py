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
from nonsite.cases.organisation import Organisation, load_organisation
from nonsite.config.loader import load_config
from nonsite.console.app import UNORGANISED_TEAMS, ConsoleSettings

ROOT = Path(__file__).resolve().parents[1]
ORG_FILE = ROOT / "examples" / "organisation.yaml"
# Saturday 26 September 2026, 10:00 in Shanghai: the National Day holiday runs 1-8 October, with make-up working
# days on Sunday 27 September and Saturday 10 October (State Council schedule for 2026, chinesecalendar).
T0 = datetime(2026, 9, 30, 2, 0, tzinfo=UTC)  # Wednesday 30 September, 10:00 in Shanghai


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
