"""Enforcement documents (执法文书): numbering under concurrent issue (SQLite and PostgreSQL), the PDF as a reader
sees it (pdftotext), the template check, values that look like template code, service and the legal deadlines."""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
from datetime import UTC, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from nonsite.cases import Case, CaseStatus, default_catalogue, open_db
from nonsite.cases.db import AuditEntry, write_session
from nonsite.cases.enforcement import (
    DEFAULT_TEMPLATES,
    DocumentError,
    DocumentService,
    EnforcementDocument,
    TemplateError,
    check_folder,
    documents_of,
    issue_document,
    legal_deadlines,
    load_templates,
    record_service,
    render_document_pdf,
    yuan_upper,
)
from nonsite.cases.workflow import PermissionDenied
from nonsite.cli import main
from tests.bureau_support import local

T0 = local(2026, 11, 23, 10, 0)  # a Monday in Shanghai
TEMPLATES = load_templates()


def make_case(sf: sessionmaker[Session], n: int, *, type_: str = "sidewalk_parking", decision: str = "penalty",
              amount: int | None = 100, status: CaseStatus = CaseStatus.APPROVED) -> str:
    """An approved case with the reviewer's decision, as the workflow leaves it (inserted directly)."""
    number = f"NS-2026-{n:06d}"
    with write_session(sf) as s:
        case = Case(number=number, event_id=f"ev-{n:06d}", type=type_, camera_id="cam-1", camera_name="东门路口",
                    zone_id="z-walk", zone_name="人行道", address="上海市黄浦区南京东路100号",
                    started_at=T0 - timedelta(days=2, minutes=2), confirmed_at=T0 - timedelta(days=2), dwell_s=120.0,
                    confidence=0.9, manifest_key=f"events/ev-{n:06d}/manifest.json", manifest_sha256="ab" * 32,
                    status=status, legal_basis=default_catalogue().snapshot(type_), decision=decision,
                    decision_amount_yuan=amount, offender_plate="沪A12345",
                    offender_hint={"plate": "沪A12345", "plate_confidence": 0.93})
        s.add(case)
        s.flush()
        s.add(AuditEntry(case_id=case.id, at=T0 - timedelta(days=1), actor="rev", action="approve",
                         before_status="confirmed", after_status="approved", detail={"role": "reviewer"}))
    return number


@pytest.fixture
def sf(case_db_url: str) -> sessionmaker[Session]:
    factory = open_db(case_db_url)
    yield factory
    factory.kw["bind"].dispose()


@pytest.fixture
def sqlite_sf(tmp_path: Path) -> sessionmaker[Session]:
    factory = open_db(f"sqlite:///{tmp_path / 'cases.db'}")
    yield factory
    factory.kw["bind"].dispose()


def pdf_text(pdf: bytes, tmp_path: Path) -> str:
    path = tmp_path / "doc.pdf"
    path.write_bytes(pdf)
    out = subprocess.run(["pdftotext", str(path), "-"], check=True, capture_output=True, text=True).stdout
    return re.sub(r"\s+", "", out)


def issue(sf: sessionmaker[Session], number: str, kind: str, **kw: object) -> EnforcementDocument:
    kw.setdefault("actor", "rev")
    kw.setdefault("party", "张三")
    kw.setdefault("role", "reviewer")
    kw.setdefault("now", T0)
    return issue_document(sf, number, kind, TEMPLATES, **kw)  # type: ignore[arg-type]


# --- numbering ----------------------------------------------------------------------------------------------


def test_concurrent_issue_numbers_without_gaps_or_duplicates(sf: sessionmaker[Session]) -> None:
    numbers = [make_case(sf, n) for n in range(1, 13)]
    barrier = threading.Barrier(len(numbers))
    issued: list[str] = []
    errors: list[BaseException] = []

    def run(number: str) -> None:
        try:
            barrier.wait()
            issued.append(issue(sf, number, "rectification_order", role="operator", actor="op").number)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(n,)) for n in numbers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(issued) == [f"X城管责改〔2026〕第{i:04d}号" for i in range(1, 13)]
    # each series counts on its own; the same case twice is refused
    assert issue(sf, numbers[0], "penalty_notice").number == "X城管罚告〔2026〕第0001号"
    with pytest.raises(DocumentError, match="already has"):
        issue(sf, numbers[0], "rectification_order", role="operator", actor="op")
    with sf() as s:
        assert s.scalar(select(func.count()).select_from(EnforcementDocument)) == 13


def test_concurrent_issue_on_one_case_gives_one_document(sf: sessionmaker[Session]) -> None:
    number = make_case(sf, 1)
    barrier = threading.Barrier(6)
    outcomes: list[str] = []

    def run() -> None:
        barrier.wait()
        try:
            outcomes.append(issue(sf, number, "penalty_notice").number)
        except DocumentError:
            outcomes.append("refused")

    threads = [threading.Thread(target=run) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["X城管罚告〔2026〕第0001号"] + ["refused"] * 5


def test_a_failed_issue_gives_its_number_back(sqlite_sf: sessionmaker[Session],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from nonsite.cases import enforcement

    a, b = make_case(sqlite_sf, 1), make_case(sqlite_sf, 2)
    real = enforcement.render_text

    def broken(*args: object, **kw: object) -> object:
        raise RuntimeError("disk full")

    monkeypatch.setattr(enforcement, "render_text", broken)
    with pytest.raises(RuntimeError):
        issue(sqlite_sf, a, "penalty_notice")
    monkeypatch.setattr(enforcement, "render_text", real)
    assert issue(sqlite_sf, b, "penalty_notice").number == "X城管罚告〔2026〕第0001号"
    assert issue(sqlite_sf, a, "penalty_notice").number == "X城管罚告〔2026〕第0002号"


def test_numbers_start_again_each_year(sqlite_sf: sessionmaker[Session]) -> None:
    a, b = make_case(sqlite_sf, 1), make_case(sqlite_sf, 2)
    assert issue(sqlite_sf, a, "penalty_notice").number.endswith("〔2026〕第0001号")
    # 2027-01-01 00:30 in Shanghai is still 2026 in UTC: the city's year counts
    new_year = local(2027, 1, 1, 0, 30)
    assert issue(sqlite_sf, b, "penalty_notice", now=new_year).number == "X城管罚告〔2027〕第0001号"


# --- rendering ----------------------------------------------------------------------------------------------


def test_the_pdf_shows_number_party_legal_basis_and_decision(sqlite_sf: sessionmaker[Session],
                                                             tmp_path: Path) -> None:
    if shutil.which("pdftotext") is None:
        pytest.skip("pdftotext (poppler-utils) is not installed")
    number = make_case(sqlite_sf, 1, amount=150)
    doc = issue(sqlite_sf, number, "penalty_notice", party="李四（身份证号110101199001011234）")
    text = pdf_text(render_document_pdf(doc, number), tmp_path)
    assert "行政处罚事先告知书" in text
    assert "X城管罚告〔2026〕第0001号" in text
    assert "李四（身份证号110101199001011234）" in text
    assert "《中华人民共和国道路交通安全法》第五十六条" in text  # the prohibition
    assert "《中华人民共和国道路交通安全法》第九十三条" in text  # the penalty provision
    assert "罚款人民币150元" in text and "壹佰伍拾元整" in text
    assert "沪A12345" in text and number in text
    assert "2026年11月21日10时00分" in text  # confirmed_at on the city's clock
    assert "3个工作日内" in text
    assert "听证" not in text  # 150 yuan is below the hearing threshold


def test_the_rectification_order_sets_its_period_in_working_days(sqlite_sf: sessionmaker[Session],
                                                                 tmp_path: Path) -> None:
    number = make_case(sqlite_sf, 1, decision="warning", amount=None)
    friday = local(2026, 11, 27, 15, 0)
    doc = issue(sqlite_sf, number, "rectification_order", role="operator", actor="op", now=friday)
    assert doc.filled["rectify_deadline"] == "2026年12月2日"  # Mon, Tue, Wed after a Friday
    assert doc.filled["decision"] == "警告" and doc.filled["amount_upper"] == ""
    text = pdf_text(render_document_pdf(doc, number), tmp_path)
    assert "于2026年12月2日前改正" in text and "X城管责改〔2026〕第0001号" in text


def test_values_that_look_like_template_code_print_as_typed(sqlite_sf: sessionmaker[Session],
                                                            tmp_path: Path) -> None:
    number = make_case(sqlite_sf, 1)
    note = "{{ 7*7 }} {% for x in range(3) %}X{% endfor %} {{ number }} <b>粗</b> &amp;\n# 不是标题"
    doc = issue(sqlite_sf, number, "penalty_notice", party="{{ issuer }}", note=note)
    paragraphs = [b["text"] for b in doc.body]
    assert note in paragraphs  # one paragraph, exactly as typed
    assert not any(b["style"] == "title" and "不是标题" in b["text"] for b in doc.body)
    assert "{{ issuer }}：" in paragraphs
    assert "49" not in "".join(paragraphs) and "XXX" not in "".join(paragraphs)
    text = pdf_text(render_document_pdf(doc, number), tmp_path)
    assert "{{7*7}}" in text and "{%forxinrange(3)%}X{%endfor%}" in text and "{{number}}" in text
    assert "<b>粗</b>&amp;" in text


def test_an_issued_document_keeps_its_text_when_the_template_changes(sqlite_sf: sessionmaker[Session],
                                                                     tmp_path: Path) -> None:
    folder = tmp_path / "tpl"
    shutil.copytree(DEFAULT_TEMPLATES, folder)
    number = make_case(sqlite_sf, 1)
    doc = issue_document(sqlite_sf, number, "penalty_notice", load_templates(folder), actor="rev", party="张三",
                         role="reviewer", now=T0)
    (folder / "penalty_notice.txt").write_text("# 改过的标题\n\n{{ party }}\n", encoding="utf-8")
    with sqlite_sf() as s:
        stored = documents_of(s, s.scalar(select(Case.id).where(Case.number == number)))[0].document
    assert stored.body == doc.body and stored.body[0]["text"] == "行政处罚事先告知书"


# --- templates ----------------------------------------------------------------------------------------------


def test_the_shipped_templates_pass_the_check(capsys: pytest.CaptureFixture[str]) -> None:
    assert check_folder() == []
    assert main(["documents", "check"]) == 0
    out = capsys.readouterr().out
    assert "X城管责改〔2026〕第0001号" in out and out.strip().endswith(f"ok: {DEFAULT_TEMPLATES}")


def test_an_unknown_placeholder_is_one_line_naming_file_and_line(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "city"
    shutil.copytree(DEFAULT_TEMPLATES, folder)
    path = folder / "penalty_decision.txt"
    lines = path.read_text(encoding="utf-8").splitlines()
    lines.insert(4, "罚款缴至{{ bank_account }}。")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(TemplateError) as err:
        load_templates(folder)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"{path}:5: {{{{ bank_account }}}}: unknown placeholder; use one of ")
    assert main(["documents", "check", "--dir", str(folder)]) == 1
    assert capsys.readouterr().err.strip() == message


@pytest.mark.parametrize(("line", "found"), [
    ("{{ 7*7 }}", "'{{'"), ("{% if party %}x{% endif %}", "'{%'"), ("{# comment #}", "'{#'"),
    ("{{ party | upper }}", "'{{'"),
])
def test_template_code_other_than_a_placeholder_is_refused(tmp_path: Path, line: str, found: str) -> None:
    folder = tmp_path / "city"
    shutil.copytree(DEFAULT_TEMPLATES, folder)
    (folder / "rectification_order.txt").write_text(f"# 责令改正通知书\n\n{line}\n", encoding="utf-8")
    with pytest.raises(TemplateError, match=re.escape(f"rectification_order.txt:3: {found}: not a placeholder")):
        load_templates(folder)


def test_documents_yaml_is_checked(tmp_path: Path) -> None:
    folder = tmp_path / "city"
    shutil.copytree(DEFAULT_TEMPLATES, folder)
    cfg = folder / "documents.yaml"
    text = cfg.read_text(encoding="utf-8")
    cfg.write_text(text.replace("第{{ seq }}号", "第{{ sequence }}号"), encoding="utf-8")
    with pytest.raises(TemplateError, match=r"documents.yaml:\d+: \{\{ sequence \}\}: unknown placeholder"):
        load_templates(folder)
    cfg.write_text(text.replace("  penalty_decision: {series: 罚决, template: penalty_decision.txt}\n", ""),
                   encoding="utf-8")
    with pytest.raises(TemplateError, match=r"documents.yaml:\d+: kinds: .*penalty_decision"):
        load_templates(folder)


def test_the_config_key_points_at_the_city_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "city-docs"
    shutil.copytree(DEFAULT_TEMPLATES, folder)
    (folder / "documents.yaml").write_text((folder / "documents.yaml").read_text(encoding="utf-8")
                                           .replace("X城管", "沪黄城管"), encoding="utf-8")
    config = tmp_path / "nonsite.yaml"
    config.write_text("cases:\n  documents: city-docs\ncameras: []\n", encoding="utf-8")
    assert main(["documents", "check", "--config", str(config)]) == 0
    assert "沪黄城管责改〔2026〕第0001号" in capsys.readouterr().out


def test_capital_numerals() -> None:
    assert [yuan_upper(n) for n in (20, 200, 150, 2000, 10050, 20000, 1000001)] == [
        "贰拾元整", "贰佰元整", "壹佰伍拾元整", "贰仟元整", "壹万零伍拾元整", "贰万元整", "壹佰万零壹元整"]


# --- roles, conditions, service, deadlines ------------------------------------------------------------------


def test_who_may_issue_what(sqlite_sf: sessionmaker[Session]) -> None:
    number = make_case(sqlite_sf, 1)
    with pytest.raises(PermissionDenied, match="a operator may not issue a penalty notice"):
        issue(sqlite_sf, number, "penalty_notice", role="operator", actor="op")
    for role in ("field_officer", "supervisor", "leader"):
        with pytest.raises(PermissionDenied):
            issue(sqlite_sf, number, "rectification_order", role=role, actor="x")
    assert issue(sqlite_sf, number, "rectification_order", role="operator", actor="op").seq == 1


def test_penalty_documents_need_a_fine_and_a_decided_case(sqlite_sf: sessionmaker[Session]) -> None:
    warning = make_case(sqlite_sf, 1, decision="warning", amount=None)
    with pytest.raises(DocumentError, match="no fine decided"):
        issue(sqlite_sf, warning, "penalty_notice")
    draft = make_case(sqlite_sf, 2, status=CaseStatus.CONFIRMED, decision=None, amount=None)  # type: ignore[arg-type]
    with pytest.raises(DocumentError, match="is confirmed"):
        issue(sqlite_sf, draft, "rectification_order", role="operator", actor="op")
    transfer = make_case(sqlite_sf, 3, decision="transfer", amount=None)
    with pytest.raises(DocumentError, match="transferred"):
        issue(sqlite_sf, transfer, "rectification_order", role="operator", actor="op")
    with pytest.raises(DocumentError, match="the party"):
        issue(sqlite_sf, make_case(sqlite_sf, 4), "penalty_notice", party="  ")


def _receipt() -> dict[str, object]:
    return {"key": "cases/NS-2026-000001/service/" + "cd" * 32 + ".jpg", "sha256": "cd" * 32,
            "content_type": "image/jpeg", "bytes": 1234, "name": "回证.jpg"}


def test_service_starts_the_statement_and_hearing_deadlines(sf: sessionmaker[Session]) -> None:
    number = make_case(sf, 1, type_="street_vending", amount=5000)  # at the hearing threshold and above
    notice = issue(sf, number, "penalty_notice")
    assert "有权要求举行听证" in notice.filled["hearing_right"]
    with sf() as s:
        case = s.scalar(select(Case).where(Case.number == number))
        pending = legal_deadlines(s, case, TEMPLATES)
    assert (pending.notice_number, pending.served_at, pending.statement_due) == (notice.number, None, None)
    with pytest.raises(DocumentError, match="record its service first"):
        issue(sf, number, "penalty_decision")

    with pytest.raises(DocumentError, match="signed receipt"):
        record_service(sf, notice.id, method="direct", served_at=T0, recipient="张三", actor="fo1",
                       role="field_officer", now=T0)
    served = local(2026, 11, 27, 16, 0)  # a Friday afternoon
    record_service(sf, notice.id, method="direct", served_at=served, recipient="张三", actor="fo1",
                   receipt=_receipt(), role="field_officer", now=served + timedelta(hours=1))
    with sf() as s:
        case = s.scalar(select(Case).where(Case.number == number))
        d = legal_deadlines(s, case, TEMPLATES)
        trail = s.scalars(select(AuditEntry).where(AuditEntry.case_id == case.id).order_by(AuditEntry.id)).all()
    assert d.served_at == served and d.hearing_eligible
    assert d.statement_due == local(2026, 12, 3)  # end of Wed 2 Dec: Mon, Tue, Wed
    assert d.hearing_due == local(2026, 12, 5)  # end of Fri 4 Dec
    assert [e.action for e in trail][-2:] == ["issue_document", "serve_document"]
    assert trail[-1].photos == ["cd" * 32] and trail[-1].detail["recipient"] == "张三"
    assert trail[-2].detail["number"] == notice.number and trail[-2].actor == "rev"

    until = "may still make statements or request a hearing until 2026年12月4日23时59分"
    with pytest.raises(DocumentError, match=until):
        issue(sf, number, "penalty_decision", now=local(2026, 12, 4, 12, 0))
    decision = issue(sf, number, "penalty_decision", now=local(2026, 12, 5, 9, 0))
    assert decision.number == "X城管罚决〔2026〕第0001号"
    assert decision.filled["notice_number"] == notice.number
    assert decision.filled["notice_served_date"] == "2026年11月27日"
    assert decision.filled["amount_upper"] == "伍仟元整"


def test_below_the_threshold_there_is_no_hearing_deadline(sqlite_sf: sessionmaker[Session]) -> None:
    number = make_case(sqlite_sf, 1, amount=200)
    notice = issue(sqlite_sf, number, "penalty_notice")
    assert notice.filled["hearing_right"] == ""
    record_service(sqlite_sf, notice.id, method="post", served_at=T0, recipient="张三", actor="op", role="operator",
                   now=T0)
    with sqlite_sf() as s:
        d = legal_deadlines(s, s.scalar(select(Case).where(Case.number == number)), TEMPLATES)
    assert not d.hearing_eligible and d.hearing_due is None
    assert d.statement_due == local(2026, 11, 27)  # Mon 10:00 → end of Thu
    assert issue(sqlite_sf, number, "penalty_decision", now=local(2026, 11, 27)).seq == 1


def test_service_is_checked(sqlite_sf: sessionmaker[Session]) -> None:
    number = make_case(sqlite_sf, 1)
    notice = issue(sqlite_sf, number, "penalty_notice")
    kw = {"recipient": "张三", "actor": "op", "role": "operator", "now": T0 + timedelta(hours=1)}
    with pytest.raises(DocumentError, match="unknown service method"):
        record_service(sqlite_sf, notice.id, method="pigeon", served_at=T0, **kw)  # type: ignore[arg-type]
    with pytest.raises(DocumentError, match="in the future"):
        record_service(sqlite_sf, notice.id, method="post", served_at=T0 + timedelta(days=1), **kw)  # type: ignore[arg-type]
    with pytest.raises(DocumentError, match="before .* was issued"):
        record_service(sqlite_sf, notice.id, method="post", served_at=T0 - timedelta(days=1), **kw)  # type: ignore[arg-type]
    with pytest.raises(PermissionDenied):
        record_service(sqlite_sf, notice.id, method="post", served_at=T0, recipient="张三", actor="l",
                       role="leader", now=T0)
    with sqlite_sf() as s:
        assert s.scalar(select(func.count()).select_from(DocumentService)) == 0


def test_dates_are_utc_in_the_database(sqlite_sf: sessionmaker[Session]) -> None:
    number = make_case(sqlite_sf, 1)
    doc = issue(sqlite_sf, number, "penalty_notice")
    with sqlite_sf() as s:
        stored = s.get(EnforcementDocument, doc.id)
    assert stored is not None and stored.issued_at == T0 and stored.issued_at.tzinfo == UTC
