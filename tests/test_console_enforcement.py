"""Enforcement documents in the console: issue on the case page, download the PDF, record the service with the
photo of the signed receipt; the deadlines on the page and the API; who may do what."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from nonsite.cases import Case
from nonsite.cases.db import AuditEntry
from nonsite.cases.enforcement import service_key
from tests.bureau_support import local
from tests.console_support import Env, csrf_of, jpeg_of, login, seed

NOW = local(2026, 11, 23, 10, 0)  # a Monday in Shanghai


@pytest.fixture
def env(tmp_path: Path, media_dir: Path) -> Env:
    e = seed(tmp_path, media_dir)
    e.users.add("lead", "lead-pass-5550", "leader", "领导")
    e.users.add("fo", "fo-pass-4442", "field_officer", "队员")
    return e


def _client(env: Env, user: str) -> TestClient:
    app, _ = env.make_app(clock=lambda: NOW)
    client = TestClient(app)
    password = {"lead": "lead-pass-5550", "fo": "fo-pass-4442"}.get(user)
    assert login(client, user, password).status_code == 303
    return client


def _token_client(env: Env, user: str, scopes: tuple[str, ...] | None = None) -> TestClient:
    app, _ = env.make_app(clock=lambda: NOW)
    token = env.users.issue_token(user, scopes) if scopes is not None else env.users.issue_token(user)
    return TestClient(app, headers={"Authorization": f"Bearer {token}"})


def _approve(env: Env, key: str = "sidewalk_parking", amount: int = 100) -> str:
    number = env.cases[key]
    op, rev = _token_client(env, "op"), _token_client(env, "rev")
    assert op.post(f"/api/cases/{number}/confirm", json={}).status_code == 200
    r = rev.post(f"/api/cases/{number}/approve", json={"decision": "penalty", "amount_yuan": amount})
    assert r.status_code == 200, r.text
    return number


def _pdf_text(pdf: bytes, tmp_path: Path) -> str:
    path = tmp_path / "d.pdf"
    path.write_bytes(pdf)
    return re.sub(r"\s+", "", subprocess.run(["pdftotext", str(path), "-"], check=True, capture_output=True,
                                             text=True).stdout)


def test_issue_download_and_serve_on_the_case_page(env: Env, media_dir: Path, tmp_path: Path) -> None:
    if shutil.which("pdftotext") is None:
        pytest.skip("pdftotext (poppler-utils) is not installed")
    number = _approve(env)
    rev = _client(env, "rev")
    page = rev.get(f"/cases/{number}").text
    assert 'id="issue-document"' in page and 'value="penalty_notice"' in page
    assert "尚未制作行政处罚事先告知书" in page
    csrf = csrf_of(rev, f"/cases/{number}")
    note = "{{ 7*7 }}{% raw %}<script>alert(1)</script>"
    r = rev.post(f"/cases/{number}/documents", data={"csrf": csrf, "kind": "penalty_notice",
                                                     "party": "<b>张三</b>", "note": note}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].endswith("notice=issue_document#documents")
    page = rev.get(f"/cases/{number}").text
    assert "X城管罚告〔2026〕第0001号" in page
    assert "&lt;b&gt;张三&lt;/b&gt;" in page and "<b>张三</b>" not in page
    assert "事先告知书 X城管罚告〔2026〕第0001号 尚未送达" in page
    assert 'value="penalty_notice"' not in page  # issued once
    assert 'name="party" maxlength="256" required value="&lt;b&gt;张三&lt;/b&gt;"' in page  # the next one's party

    pdf_url = re.search(r'href="([^"]+\.pdf)" class="document-pdf"', page)
    assert pdf_url
    pdf = rev.get(pdf_url.group(1))
    assert pdf.status_code == 200 and pdf.headers["content-type"] == "application/pdf"
    text = _pdf_text(pdf.content, tmp_path)
    assert "X城管罚告〔2026〕第0001号" in text and "<b>张三</b>" in text
    assert "《中华人民共和国道路交通安全法》第五十六条" in text and "罚款人民币100元" in text
    assert "{{7*7}}{%raw%}<script>alert(1)</script>" in text

    photo = jpeg_of(media_dir / "india_road_thela_animal" / "images" / "val" /
                    sorted(p.name for p in (media_dir / "india_road_thela_animal" / "images" / "val")
                           .glob("*.jpg"))[0])
    service_url = re.search(r'action="([^"]+/service)"', page)
    assert service_url
    r = rev.post(service_url.group(1), data={"csrf": csrf, "method": "direct", "served_at": "2026-11-23T10:00",
                                             "recipient": "张三本人"},
                 files={"receipt": ("回证.jpg", photo, "image/jpeg")}, follow_redirects=False)
    assert r.status_code == 303, r.text[:500]
    page = rev.get(f"/cases/{number}").text
    assert "直接送达" in page and "张三本人" in page
    assert re.search(r'id="statement-due">2026-11-26 24:00|id="statement-due">2026-11-27 00:00', page), \
        re.findall(r'id="statement-due">[^<]*', page)
    assert 'id="no-hearing"' in page  # 100 yuan

    api = _token_client(env, "rev").get(f"/api/cases/{number}/documents").json()
    [doc] = api["documents"]
    assert doc["number"] == "X城管罚告〔2026〕第0001号" and doc["kind"] == "penalty_notice"
    assert api["deadlines"]["statement_due"] == "2026-11-26T16:00:00Z"  # end of Thu 26 Nov, Shanghai
    assert api["deadlines"]["hearing_due"] is None and api["deadlines"]["hearing_eligible"] is False
    sha = doc["services"][0]["receipt_sha256"]
    receipt = rev.get(f"/cases/{number}/documents/{doc['id']}/receipt/{sha}.jpg")
    assert receipt.status_code == 200 and receipt.content.startswith(b"\xff\xd8\xff")
    assert env.store.get(service_key(number, sha)) == receipt.content
    _, sf = env.make_app()
    with sf() as s:
        case_id = s.scalar(select(Case.id).where(Case.number == number))
        trail = s.scalars(select(AuditEntry).where(AuditEntry.case_id == case_id).order_by(AuditEntry.id)).all()
    assert [e.action for e in trail][-2:] == ["issue_document", "serve_document"]
    assert trail[-1].photos == [sha] and trail[-1].actor == "rev"


def test_roles_and_scopes(env: Env) -> None:
    number = _approve(env)
    body = {"kind": "penalty_notice", "party": "张三"}
    r = _token_client(env, "op").post(f"/api/cases/{number}/documents", json=body)
    assert r.status_code == 403 and "may not issue a penalty notice" in r.json()["error"]["message"]
    r = _token_client(env, "lead").post(f"/api/cases/{number}/documents", json=body)
    assert r.status_code == 403
    r = _token_client(env, "rev", ("cases:read",)).post(f"/api/cases/{number}/documents", json=body)
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden_scope"
    r = _token_client(env, "op").post(f"/api/cases/{number}/documents",
                                      json={"kind": "rectification_order", "party": "张三"})
    assert r.status_code == 201, r.text
    [doc] = r.json()["documents"]
    assert doc["number"] == "X城管责改〔2026〕第0001号"
    assert r.json()["issuable"] == []  # an operator issues nothing else
    # everyone who sees the case may read the PDF; a field officer outside the case's team does not see it
    assert _token_client(env, "lead").get(f"/cases/{number}/documents/{doc['id']}.pdf").status_code == 200
    assert _client(env, "fo").get(f"/cases/{number}/documents/{doc['id']}.pdf").status_code == 404
    # a leader may not record a service
    r = _token_client(env, "lead").post(f"/api/cases/{number}/documents/{doc['id']}/service",
                                        data={"method": "post", "served_at": "2026-11-23T10:00", "recipient": "x"})
    assert r.status_code == 403


def test_a_receipt_that_is_no_image_is_refused_and_nothing_recorded(env: Env) -> None:
    number = _approve(env)
    rev = _token_client(env, "rev")
    doc = rev.post(f"/api/cases/{number}/documents", json={"kind": "penalty_notice", "party": "张三"}).json()
    doc_id = doc["documents"][0]["id"]
    r = rev.post(f"/api/cases/{number}/documents/{doc_id}/service",
                 data={"method": "direct", "served_at": "2026-11-23T10:00", "recipient": "张三"},
                 files={"receipt": ("回证.jpg", b"<html><script>alert(1)</script></html>", "image/jpeg")})
    assert r.status_code == 415 and r.json()["error"]["code"] == "not_an_image"
    r = rev.post(f"/api/cases/{number}/documents/{doc_id}/service",
                 data={"method": "direct", "served_at": "2026-11-23T10:00", "recipient": "张三"})
    assert r.status_code == 422 and "signed receipt" in r.json()["error"]["message"]
    listed = rev.get(f"/api/cases/{number}/documents").json()
    assert listed["documents"][0]["services"] == [] and listed["deadlines"]["statement_due"] is None
    assert not list(env.store.list(f"cases/{number}/service/"))


def test_documents_of_an_unapproved_case_are_refused(env: Env) -> None:
    number = env.cases["stray_dog"]
    r = _token_client(env, "adm").post(f"/api/cases/{number}/documents",
                                       json={"kind": "rectification_order", "party": "张三"})
    assert r.status_code == 422 and "is draft" in r.json()["error"]["message"]
    assert _token_client(env, "adm").get(f"/api/cases/{number}/documents").json()["documents"] == []
    assert _token_client(env, "adm").get("/api/cases/NS-2099-000001/documents").status_code == 404
