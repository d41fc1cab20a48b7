"""The reminder job (issue 14): reminders before a deadline to the team, escalations after it to the team leader
(then the supervisors), stored once per recipient, shown in the console's bell and /notifications, sent once to
the integration channels; `nonsite reminders run --once`; the job thread inside the console process."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from console_support import MemoryUsers, login
from edge_helpers import wait_until
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from test_bureau_wiring import ORG_FILE, T0, draft

from nonsite.cases import Case, open_db
from nonsite.cases.bureau import supervise
from nonsite.cases.db import Notification
from nonsite.cases.notifications import mark_read, run_once, unread_count
from nonsite.cases.organisation import Organisation, load_organisation
from nonsite.cases.reminders import Notice, ReminderPolicy
from nonsite.cases.users import create_user
from nonsite.cases.workflow import apply_action
from nonsite.cli import main
from nonsite.console.app import create_app
from nonsite.evidence import LocalStore
from nonsite.integration.relay import reminder_sender

SH_OFFSET = timedelta(hours=8)
#: The review of a case confirmed at T0 (Wednesday 30 September 2026, 10:00) is due by the end of Thursday
#: 8 October: one working day, 1-7 October being the National Day holiday.
REVIEW_DUE = datetime(2026, 10, 8, 16, 0, tzinfo=UTC)


def at_local(y: int, m: int, d: int, hh: int = 0) -> datetime:
    return datetime(y, m, d, hh, tzinfo=UTC) - SH_OFFSET


@pytest.fixture(scope="module")
def org() -> Organisation:
    return load_organisation(ORG_FILE)


@pytest.fixture()
def db(case_db_url: str) -> Iterator[sessionmaker[Session]]:
    sf = open_db(case_db_url)
    yield sf
    sf.kw["bind"].dispose()


def rows(sf: sessionmaker[Session]) -> list[tuple[str, str, int, str, bool]]:
    with sf() as s:
        return [(n.kind, n.step, n.level, n.recipient, n.copy)
                for n in s.scalars(select(Notification).order_by(Notification.id))]


def test_reminders_then_escalations_across_the_holiday_each_stored_once(
        db: sessionmaker[Session], org: Organisation) -> None:
    create_user(db, "zhou.min", "pw-zhou.min-1", "supervisor")
    case = draft(db, org, "cam-carpark-01", at=T0 - timedelta(minutes=10))  # 演示中队第一班组 (li.qiang leads)
    confirmed = apply_action(db, case.number, "confirm", "op", role="operator", now=T0)
    assert (confirmed.due_step, confirmed.due_at) == ("review", REVIEW_DUE)
    assert confirmed.finish_due is not None and confirmed.finish_due > REVIEW_DUE  # 限时办结, stored
    sent: list[Notice] = []

    def send(n: Notice, c: Case) -> None:
        sent.append(n)

    def round_at(now: datetime) -> tuple[int, int]:
        r = run_once(db, org, now, send=send)
        return r.planned, r.stored

    # 2 October (a holiday; a calendar day past the confirmation): under half the time has passed, nothing.
    assert round_at(at_local(2026, 10, 2, 10)) == (0, 0)
    # 5 October: past half-time: a reminder to the team's people (leader and members).
    team = ["li.qiang", "sun.hao", "zhou.tao"]
    assert round_at(at_local(2026, 10, 5, 10)) == (1, 3)
    assert rows(db) == [("reminder", "review", 1, who, False) for who in team]
    assert round_at(at_local(2026, 10, 5, 11)) == (0, 0)  # stored: never again
    # 8 October, 10:00: past 80 %: the second reminder.
    assert round_at(at_local(2026, 10, 8, 10)) == (1, 3)
    # 9 October, 00:00: overdue: escalation to the team leader only.
    assert round_at(REVIEW_DUE) == (1, 1)
    assert rows(db)[-1] == ("escalation", "review", 1, "li.qiang", False)
    assert round_at(REVIEW_DUE + timedelta(hours=3)) == (0, 0)
    # A day later: level 2, the supervisors too.
    assert round_at(REVIEW_DUE + timedelta(days=1, hours=1)) == (1, 2)
    assert rows(db)[-2:] == [("escalation", "review", 2, "li.qiang", False),
                             ("escalation", "review", 2, "zhou.min", False)]
    assert [(n.kind, n.level) for n in sent] == [("reminder", 1), ("reminder", 2), ("escalation", 1),
                                                  ("escalation", 2)]  # each notice to the channels once
    # The next step is a new deadline: its reminders start afresh; a closed case has none.
    apply_action(db, case.number, "approve", "rev", role="reviewer", now=REVIEW_DUE + timedelta(days=1, hours=2))
    for action, actor, role, kw in (("dispatch", "op", "operator", {}),
                                    ("rectify", "sun.hao", "field_officer", {"note": "已整改"}),
                                    ("close", "rev", "reviewer", {})):
        apply_action(db, case.number, action, actor, role=role, now=REVIEW_DUE + timedelta(days=2), **kw)
    assert round_at(REVIEW_DUE + timedelta(days=30)) == (0, 0)


def test_a_group_without_a_leader_escalates_to_its_squad_and_a_supervision_deadline_counts(
        db: sessionmaker[Session], org: Organisation) -> None:
    case = draft(db, org, "cam-junction-03", at=T0)  # 演示中队第二班组: no leader; its squad's is wang.jun
    supervise(db, case.number, "zhou.min", "今日处理", new_deadline=T0 + timedelta(hours=2), role="supervisor",
              now=T0 + timedelta(minutes=5))
    r = run_once(db, org, T0 + timedelta(hours=3), policy=ReminderPolicy(supervisors=("zhou.min",)))
    assert [(n.kind, n.recipients, n.due_at) for n in r.notices] == [
        ("escalation", ("wang.jun",), T0 + timedelta(hours=2))]  # the 督办's deadline, not the confirm step's


def test_two_rounds_racing_store_and_send_each_notice_once(db: sessionmaker[Session], org: Organisation) -> None:
    draft(db, org, "cam-carpark-01", at=T0)
    calls: list[str] = []
    late = T0 + timedelta(minutes=31)  # 30 minutes to confirm
    first = run_once(db, org, late, send=lambda n, c: calls.append(n.key))
    # A second job that planned before the first stored (it was handed no keys) stores nothing and sends nothing.
    from nonsite.cases import notifications

    real = notifications._sent_keys
    notifications._sent_keys = lambda session, ids: set()  # type: ignore[assignment]
    try:
        second = run_once(db, org, late, send=lambda n, c: calls.append(n.key))
    finally:
        notifications._sent_keys = real  # type: ignore[assignment]
    assert (first.stored, second.planned, second.stored) == (1, 1, 0)
    assert len(calls) == 1 and calls[0].endswith("|escalation|1")


class RecordingNotifier:
    def __init__(self) -> None:
        self.notices: list[Any] = []

    def notify(self, notice: Any) -> None:
        self.notices.append(notice)


def test_the_integration_channels_get_the_reminder_as_a_notice(db: sessionmaker[Session], org: Organisation) -> None:
    case = draft(db, org, "cam-carpark-01", at=T0)
    notifier = RecordingNotifier()
    run_once(db, org, T0 + timedelta(minutes=31), send=reminder_sender(notifier))  # type: ignore[arg-type]
    [notice] = notifier.notices
    assert (notice.kind, notice.case_number) == ("overdue", case.number)
    assert "研判确认环节已超期" in notice.detail


def test_the_command_line_runs_one_round(tmp_path: Path, org: Organisation, capsys: pytest.CaptureFixture[str]
                                         ) -> None:
    url = f"sqlite:///{tmp_path / 'cases.db'}"
    sf = open_db(url)
    case = draft(sf, org, "cam-carpark-01", at=T0)
    sf.kw["bind"].dispose()
    now = (T0 + timedelta(minutes=20)).astimezone().isoformat()
    args = ["reminders", "run", "--once", "--now", now, "--database-url", url, "--no-channels",
            "--config", str(Path(__file__).resolve().parents[1] / "examples" / "demo.yaml")]
    assert main(args) == 0
    out = capsys.readouterr()
    assert out.out.splitlines() == [f"reminder\t{case.number}\tconfirm\tlevel 1\tli.qiang,sun.hao,zhou.tao"]
    assert "1 notices due, 3 notifications stored" in out.err
    assert main(args) == 0
    assert capsys.readouterr().out == ""  # stored: not again
    assert main(["reminders", "run", "--once", "--now", "2026-10-01T10:00", "--database-url", url]) == 2
    assert "has no time zone" in capsys.readouterr().err


# --- the console: the bell, /notifications, the job thread -------------------------------------------------

USERS = {"op": "operator", "sun.hao": "field_officer", "zhao.lei": "field_officer", "li.qiang": "field_officer",
         "zhou.min": "supervisor", "boss": "leader", "adm": "admin"}


@pytest.fixture()
def console(tmp_path: Path, org: Organisation) -> Iterator[tuple[sessionmaker[Session], Any, MemoryUsers]]:
    sf = open_db(f"sqlite:///{tmp_path / 'cases.db'}")
    users = MemoryUsers()
    for name, role in USERS.items():
        users.add(name, "pw-" + name, role)
    clock = {"now": T0}
    app = create_app(session_factory=sf, store=LocalStore(tmp_path / "evidence"), auth=users,
                     session_secret="test-secret-" + "x" * 20, organisation=org, clock=lambda: clock["now"],
                     reminders=True, reminder_interval_s=0.05)
    app.state.test_clock = clock
    yield sf, app, users
    sf.kw["bind"].dispose()


def browser(app: Any, user: str) -> TestClient:
    client = TestClient(app)
    assert login(client, user, "pw-" + user).status_code == 303
    return client


def csrf(client: TestClient, path: str = "/notifications") -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', client.get(path).text)
    assert m
    return m.group(1)


def test_the_console_job_rings_the_bell_of_the_team_only(console: Any, org: Organisation) -> None:
    sf, app, users = console
    mine = draft(sf, org, "cam-carpark-01", at=T0)  # group 1
    theirs = draft(sf, org, "cam-junction-03", at=T0)  # group 2
    app.state.test_clock["now"] = T0 + timedelta(minutes=20)  # past half of the 30 minutes to confirm
    with TestClient(app):  # the lifespan starts the job thread
        job = app.state.reminders
        wait_until(lambda: job.rounds >= 1 and job.last.stored > 0, 30, "the job's first round")
    assert app.state.reminders._thread is None  # stopped with the app
    sun, zhao = browser(app, "sun.hao"), browser(app, "zhao.lei")
    page = sun.get("/tasks").text
    assert re.search(r'id="bell-count">1<', page)
    listed = sun.get("/notifications").text
    assert mine.number in listed and theirs.number not in listed and "到期提醒（第1次）" in listed
    assert "抄送" not in listed  # addressed to them, not in copy
    zhao_list = zhao.get("/api/notifications").json()
    assert zhao_list["unread"] == 1 and [n["case_number"] for n in zhao_list["items"]] == [theirs.number]
    # zhao.lei cannot read or mark sun.hao's notifications.
    with sf() as s:
        sun_id = s.scalar(select(Notification.id).where(Notification.recipient == "sun.hao"))
    r = zhao.post("/notifications/read", data={"csrf": csrf(zhao), "id": str(sun_id)}, follow_redirects=False)
    assert r.status_code == 303
    with sf() as s:
        assert unread_count(s, "sun.hao") == 1 and unread_count(s, "zhao.lei") == 1
    r = sun.post("/notifications/read", data={"csrf": csrf(sun), "id": str(sun_id)}, follow_redirects=False)
    assert r.status_code == 303
    assert 'id="bell-count"' not in sun.get("/notifications").text
    # Marking read needs the form's CSRF token; an API token cannot (browser sessions only).
    assert zhao.post("/notifications/read", data={}, follow_redirects=False).status_code == 403
    api = TestClient(app, headers={"Authorization": f"Bearer {users.issue_token('zhao.lei')}"})
    assert api.post("/notifications/read", data={}).status_code == 403
    assert mark_read(sf, "zhao.lei", None) == 1


def test_supervision_list_and_the_leaders_dashboard(console: Any, org: Organisation) -> None:
    sf, app, _ = console
    old = draft(sf, org, "cam-carpark-01", at=T0 - timedelta(hours=2))
    new = draft(sf, org, "cam-junction-03", at=T0 - timedelta(minutes=5))
    draft(sf, org, "cam-fence-02", "stray_dog", at=T0 - timedelta(minutes=10))
    supervise(sf, old.number, "zhou.min", "尽快处理", new_deadline=T0 - timedelta(minutes=30), role="supervisor",
              now=T0 - timedelta(hours=1))
    supervise(sf, new.number, "zhou.min", "<script>alert(1)</script>", new_deadline=T0 + timedelta(hours=3),
              role="supervisor", now=T0 - timedelta(minutes=1))
    sup = browser(app, "zhou.min")
    page = sup.get("/supervision").text
    assert page.index(old.number) < page.index(new.number)  # oldest first
    first_row = page[page.index(old.number):page.index(new.number)]
    assert "已超期" in first_row and "演示中队第一班组" in first_row
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;" in page  # data, escaped
    assert 'id="nav-supervision"' in page
    boss = browser(app, "boss")
    dash = boss.get("/leader").text
    assert re.search(r'id="total-open">3<', dash) and re.search(r'id="total-supervisions">2<', dash)
    # old: its 督办's deadline passed; new: due in 3 h of a 3 h 1 min order: on time; the dog case: 10 of 30 min
    assert re.search(r'id="total-overdue">1<', dash)
    group1 = ('data-team="yanshi-group-1"><td>演示中队第一班组</td><td>1</td><td>0</td><td>0</td>'
              '<td class="overdue">1</td><td>1</td>')
    assert group1 in dash
    for user in ("sun.hao", "op"):
        c = browser(app, user)
        assert c.get("/supervision").status_code == 403 and c.get("/leader").status_code == 403


# --- /admin/organisation ------------------------------------------------------------------------------------


@pytest.fixture()
def editable(tmp_path: Path, org: Organisation) -> Iterator[tuple[sessionmaker[Session], Any, MemoryUsers, Path]]:
    sf = open_db(f"sqlite:///{tmp_path / 'cases.db'}")
    users = MemoryUsers()
    for name, role in USERS.items():
        users.add(name, "pw-" + name, role)
    path = tmp_path / "org" / "organisation.yaml"
    path.parent.mkdir()
    path.write_text(ORG_FILE.read_text(encoding="utf-8"), encoding="utf-8")
    app = create_app(session_factory=sf, store=LocalStore(tmp_path / "evidence"), auth=users,
                     session_secret="test-secret-" + "x" * 20, organisation=load_organisation(path),
                     organisation_path=path, clock=lambda: T0)
    yield sf, app, users, path
    sf.kw["bind"].dispose()


def save(client: TestClient, text: str) -> Any:
    return client.post("/admin/organisation", data={"csrf": csrf(client, "/admin/organisation"), "text": text},
                       follow_redirects=False)


def test_an_admin_edits_the_organisation_and_it_applies_at_once(editable: Any, org: Organisation) -> None:
    from nonsite.cases.db import ConfigChange

    sf, app, _, path = editable
    theirs = draft(sf, org, "cam-junction-03", at=T0)  # 演示中队第二班组
    sun = browser(app, "sun.hao")
    assert sun.get(f"/cases/{theirs.number}").status_code == 404
    adm = browser(app, "adm")
    page = adm.get("/admin/organisation").text
    assert 'id="organisation-text"' in page and "yanshi-group-2" in page
    before = path.read_text(encoding="utf-8")
    moved = before.replace("members: [zhao.lei, qian.feng]", "members: [zhao.lei, qian.feng, sun.hao]")
    assert moved != before
    r = save(adm, moved)
    assert r.status_code == 303 and r.headers["location"] == "/admin/organisation?saved=1"
    assert path.read_text(encoding="utf-8") == moved
    assert sun.get(f"/cases/{theirs.number}").status_code == 200  # no restart: sun.hao is in group 2 now
    with sf() as s:
        change = s.scalars(select(ConfigChange)).one()
    assert (change.actor, change.what, change.after_text) == ("adm", "organisation", moved)
    assert not list(path.parent.glob(".*"))  # no temporary file left behind


@pytest.mark.parametrize(("text", "expected"), [
    ("districts: []\nteams:\n  - {id: a, name: A, leadr: x}\nfallback_team: a\n",
     r"^organisation\.yaml:3: teams\[0\]\.leadr: unknown key"),
    ("a: &a [x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
     "d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]\n"
     "g: [*f,*f,*f,*f,*f,*f,*f,*f,*f]\n", r"alias"),
    ("districts: []\nteams:\n  - {id: a, name: '${HOME}'}\nfallback_team: a\n", r"environment variables"),
    ("teams: [\n", r"not valid YAML"),
])
def test_a_bad_organisation_is_refused_with_one_line(editable: Any, text: str, expected: str) -> None:
    _, app, _, path = editable
    before = path.read_text(encoding="utf-8")
    adm = browser(app, "adm")
    r = save(adm, text)
    assert r.status_code == 422
    m = re.search(r'id="organisation-error">([^<]*)<', r.text)
    assert m, r.text[:500]
    message = m.group(1)
    assert "\n" not in message and re.search(expected, message), message
    assert ".organisation-check-" not in message  # the real file is named, never the temporary copy
    assert path.read_text(encoding="utf-8") == before  # unchanged
    assert not list(path.parent.glob(".*"))


def test_only_an_admin_with_a_session_reaches_the_organisation_editor(editable: Any) -> None:
    _, app, users, path = editable
    before = path.read_text(encoding="utf-8")
    for user in ("op", "sun.hao", "zhou.min", "boss"):
        c = browser(app, user)
        assert c.get("/admin/organisation").status_code == 403
        token = csrf(c, "/tasks")
        r = c.post("/admin/organisation", data={"csrf": token, "text": "teams: []\n"}, follow_redirects=False)
        assert r.status_code == 403, user
        assert 'id="nav-organisation"' not in c.get("/tasks").text
    api = TestClient(app, headers={"Authorization": f"Bearer {users.issue_token('adm')}"})
    assert api.get("/admin/organisation").status_code == 403
    assert api.post("/admin/organisation", data={"text": "teams: []\n"}).status_code == 403
    assert path.read_text(encoding="utf-8") == before


def test_a_drafter_routes_by_the_edited_file_without_a_restart(tmp_path: Path, caplog: pytest.LogCaptureFixture
                                                               ) -> None:
    from nonsite.cases.organisation import WatchedOrganisation
    from nonsite.console.bureau_pages import write_atomically

    path = tmp_path / "organisation.yaml"
    original = ORG_FILE.read_text(encoding="utf-8")
    path.write_text(original, encoding="utf-8")
    watched = WatchedOrganisation(path, check_s=0)
    sf = open_db(f"sqlite:///{tmp_path / 'cases.db'}")
    assert draft(sf, watched, "cam-carpark-01", at=T0).team == "yanshi-group-1"  # type: ignore[arg-type]
    # The admin gives 演示路东网格's parking cases to group 2 (the console writes the file atomically).
    edited = original.replace("      - types: [sidewalk_parking, street_vending]\n        areas: [yanshi-east]",
                              "      - types: [sidewalk_parking, street_vending]\n        areas: [yanshi-jd]")
    edited = edited.replace("        areas: [shifan-jie]", "        areas: [yanshi-east]")
    assert edited.count("areas: [yanshi-east]") == 1
    write_atomically(path, edited)
    assert draft(sf, watched, "cam-carpark-01", at=T0).team == "yanshi-group-2"  # type: ignore[arg-type]
    # A file broken by hand keeps the last good organisation, and says why in the log.
    path.write_text("teams: [\n", encoding="utf-8")
    assert draft(sf, watched, "cam-carpark-01", at=T0).team == "yanshi-group-2"  # type: ignore[arg-type]
    assert "does not load" in caplog.text and "not valid YAML" in caplog.text
    sf.kw["bind"].dispose()


def test_a_console_follows_an_edit_saved_by_another_console(tmp_path: Path) -> None:
    from nonsite.cases.organisation import WatchedOrganisation
    from nonsite.console.bureau_pages import write_atomically

    path = tmp_path / "organisation.yaml"
    path.write_text(ORG_FILE.read_text(encoding="utf-8"), encoding="utf-8")
    watched = WatchedOrganisation(path, check_s=0)
    sf = open_db(f"sqlite:///{tmp_path / 'cases.db'}")
    theirs = draft(sf, watched, "cam-junction-03", at=T0)  # type: ignore[arg-type]
    users = MemoryUsers()
    users.add("sun.hao", "pw-sun.hao", "field_officer")
    app = create_app(session_factory=sf, store=LocalStore(tmp_path / "evidence"), auth=users,
                     session_secret="test-secret-" + "x" * 20, organisation=watched, organisation_path=path,
                     clock=lambda: T0)
    sun = browser(app, "sun.hao")
    assert sun.get(f"/cases/{theirs.number}").status_code == 404
    text = path.read_text(encoding="utf-8").replace("members: [zhao.lei, qian.feng]",
                                                    "members: [zhao.lei, qian.feng, sun.hao]")
    write_atomically(path, text)  # what another console's editor does
    assert sun.get(f"/cases/{theirs.number}").status_code == 200
    sf.kw["bind"].dispose()
