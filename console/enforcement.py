"""Enforcement documents (执法文书) on the case page and the API: issue, download the PDF, record the service
(送达) with the photo of the signed receipt; the statement and hearing deadlines.

The documents themselves, their numbering, templates and deadlines are :mod:`nonsite.cases.enforcement`; the
receipt photo goes through the same checks as feedback photos (:mod:`nonsite.cases.attachments`)::

    POST /cases/{number}/documents                    issue (form: kind, party, note)       operator*, reviewer, admin
    GET  /cases/{number}/documents/{id}.pdf           the PDF                                everyone who sees the case
    POST /cases/{number}/documents/{id}/service       record service (multipart form)        + field officer
    GET  /cases/{number}/documents/{id}/receipt/{sha256}.jpg   the receipt photo
    GET  /api/cases/{number}/documents                documents, services, deadlines (JSON)
    POST /api/cases/{number}/documents                issue (JSON)
    POST /api/cases/{number}/documents/{id}/service   record service (multipart)

    * an operator issues the 责令改正通知书 only (cases.enforcement.ISSUE_ROLES).
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode

import anyio.to_thread
from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from fastapi.responses import RedirectResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from nonsite.cases import Case, case_by_number
from nonsite.cases.attachments import AttachmentError, prepare_photo
from nonsite.cases.enforcement import (
    KINDS,
    SERVICE_METHODS,
    SERVICE_ROLES,
    DocumentError,
    DocumentTemplates,
    document_by_id,
    document_view,
    documents_of,
    issuable_kinds,
    issue_document,
    legal_deadlines,
    record_service,
    render_document_pdf,
    service_key,
    store_receipt,
)
from nonsite.cases.workflow import CaseNotFound, PermissionDenied, WorkflowError
from nonsite.console.actions import ActionError, photo_error, upload_limiter
from nonsite.console.api import _ERRORS, _action_error
from nonsite.console.auth import Principal, authorize, principal_of
from nonsite.console.render import error_page
from nonsite.console.views import (
    ConsoleState,
    EvidenceAltered,
    case_url,
    read_verified,
    sees_case,
    state_of,
)
from nonsite.evidence.store import StoreError

log = logging.getLogger(__name__)

pages = APIRouter(include_in_schema=False, dependencies=[Depends(authorize)])
api = APIRouter(prefix="/api", dependencies=[Depends(authorize)], tags=["documents"])
_RECEIPT = re.compile(r"^([0-9a-f]{64})\.jpg$")


def templates_of(state: ConsoleState) -> DocumentTemplates:
    templates: DocumentTemplates | None = getattr(state, "enforcement", None)
    if templates is None:
        raise ActionError(404, "not_found", "enforcement documents are not set up in this console",
                          "error.bad_request", {"message": "documents"})
    return templates


def _case(state: ConsoleState, principal: Principal | None, number: str) -> Case:
    with state.session_factory() as session:
        case = case_by_number(session, number)
    if case is None or not sees_case(state, principal, case):
        raise ActionError(404, "not_found", f"no case {number}; list cases with GET /api/cases",
                          "error.case_not_found", {"number": number})
    return case


def _refused(exc: Exception) -> ActionError:
    if isinstance(exc, PermissionDenied):
        return ActionError(403, "forbidden", str(exc), "error.bad_request", {"message": str(exc)})
    if isinstance(exc, CaseNotFound):
        return ActionError(404, "not_found", str(exc), "error.case_not_found", {"number": str(exc)})
    return ActionError(422, "document_refused", str(exc), "error.document_refused", {"message": str(exc)})


def issue(state: ConsoleState, principal: Principal, actor: str, number: str, kind: str, party: str,
          note: str) -> Any:
    """Issue a document of ``kind`` on case ``number`` for ``principal``; ActionError otherwise."""
    templates = templates_of(state)
    if kind not in KINDS:
        raise ActionError(422, "bad_request", f"unknown document kind {kind!r}; use one of {', '.join(KINDS)}",
                          "error.bad_request", {"message": kind})
    case = _case(state, principal, number)
    try:
        return issue_document(state.session_factory, case.number, kind, templates, actor=actor, party=party,
                              note=note, role=principal.role, person=principal.person, now=state.clock())
    except (DocumentError, PermissionDenied, CaseNotFound, WorkflowError) as exc:
        raise _refused(exc) from None


def _served_at(value: str, state: ConsoleState) -> datetime:
    text = (value or "").strip()
    if not text:
        raise ActionError(422, "bad_request", "give the time of service (YYYY-MM-DDTHH:MM, city time)",
                          "error.bad_request", {"message": "served_at"})
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ActionError(422, "bad_request", f"{text!r} is not a time; use YYYY-MM-DDTHH:MM", "error.bad_request",
                          {"message": f"{text!r}: YYYY-MM-DDTHH:MM"}) from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=state.zone)).astimezone(UTC)


def serve(state: ConsoleState, principal: Principal, actor: str, number: str, document_id: int, *, method: str,
          served_at: str, recipient: str, note: str, receipt: tuple[str, bytes] | None) -> Any:
    """Record the service of a document (blocking: photo checks; run in a thread); ActionError otherwise."""
    templates_of(state)
    if principal.role not in {r.value for r in SERVICE_ROLES}:
        raise ActionError(403, "forbidden", f"your role ({principal.role}) may not record a service",
                          "error.bad_request", {"message": principal.role})
    if method not in SERVICE_METHODS:
        raise ActionError(422, "bad_request", f"unknown service method {method!r}; use one of "
                          f"{', '.join(SERVICE_METHODS)}", "error.bad_request", {"message": method})
    at = _served_at(served_at, state)
    case = _case(state, principal, number)
    with state.session_factory() as session:
        doc = document_by_id(session, case.id, document_id)
    if doc is None:
        raise ActionError(404, "not_found", f"case {case.number} has no document {document_id}",
                          "error.bad_request", {"message": f"{document_id}"})
    record: dict[str, Any] | None = None
    if receipt is not None:
        try:
            photo = prepare_photo(receipt[1], receipt[0], max_bytes=state.max_upload_bytes)
            record = store_receipt(state.store, case.number, photo)
        except AttachmentError as exc:
            raise photo_error(exc, state.max_upload_bytes) from None
        except StoreError as exc:
            log.warning("cannot store a service receipt of case %s: %s", case.number, exc)
            raise ActionError(503, "store_unavailable", "the evidence store cannot be written right now; try again "
                              "later", "error.store_unavailable") from None
    try:
        return record_service(state.session_factory, doc.id, method=method, served_at=at, recipient=recipient,
                              actor=actor, receipt=record, note=note, role=principal.role, person=principal.person,
                              now=state.clock())
    except (DocumentError, PermissionDenied, CaseNotFound, WorkflowError) as exc:
        raise _refused(exc) from None


def panel(request: Request, case: Case) -> dict[str, Any] | None:
    """The case page's documents panel: documents with their services, the deadlines, what the user may issue."""
    state = state_of(request)
    templates: DocumentTemplates | None = getattr(state, "enforcement", None)
    if templates is None:
        return None
    principal = principal_of(request)
    with state.session_factory() as session:
        issued = documents_of(session, case.id)
        deadlines = legal_deadlines(session, case, templates)
    base = case_url(request, case.number)
    docs = []
    for item in issued:
        view = document_view(item, state.zone)
        view["pdf_url"] = f"{base}/documents/{item.document.id}.pdf"
        view["service_url"] = f"{base}/documents/{item.document.id}/service"
        for s in view["services"]:
            sha = s.get("receipt_sha256")
            s["receipt_url"] = f"{base}/documents/{item.document.id}/receipt/{sha}.jpg" if sha else None
        docs.append(view)
    have = {d["kind"] for d in docs}
    role = principal.role if principal is not None else None
    return {
        "documents": docs, "deadlines": deadlines, "methods": SERVICE_METHODS,
        "issuable": [k for k in issuable_kinds(role) if k not in have],
        "may_serve": role in {r.value for r in SERVICE_ROLES},
        "issue_url": f"{base}/documents", "hearing_min": templates.config.hearing_min_fine_yuan,
        "default_party": docs[-1]["party"] if docs else "",  # the party of the case's last document
    }


def _back(request: Request, number: str, notice: str) -> Response:
    return RedirectResponse(f"{case_url(request, number)}?" + urlencode({"notice": notice}) + "#documents", 303)


def _failed(request: Request, number: str, exc: ActionError) -> Response:
    from nonsite.console.pages import case_response

    if exc.status in (403, 404):
        return error_page(request, exc.status, exc.key.removeprefix("error."), exc.message, **exc.fields)
    return case_response(request, number, error=exc, status_code=exc.status)


# --- pages --------------------------------------------------------------------------------------------------


@pages.post("/cases/{number}/documents", name="enforcement_issue_form")
def issue_form(request: Request, number: str, principal: Principal = Depends(authorize), kind: str = Form(""),
               party: str = Form(""), note: str = Form("")) -> Response:
    """Issue a document (kind, party, note) and come back to the case page."""
    state = state_of(request)
    try:
        issue(state, principal, state.actor_of(request), number, kind, party, note)
    except ActionError as exc:
        return _failed(request, number, exc)
    return _back(request, number, "issue_document")


@pages.post("/cases/{number}/documents/{document_id}/service", name="enforcement_service_form")
async def service_form(request: Request, number: str, document_id: int, principal: Principal = Depends(authorize),
                       method: str = Form(""), served_at: str = Form(""), recipient: str = Form(""),
                       note: str = Form(""), receipt: UploadFile | None = File(None)) -> Response:
    """Record how, when and to whom the document was served, with the photo of the signed receipt."""
    state = state_of(request)
    data = await receipt.read() if receipt is not None else b""
    photo = (receipt.filename or "", data) if receipt is not None and (data or receipt.filename) else None
    actor = state.actor_of(request)
    try:
        await anyio.to_thread.run_sync(lambda: serve(state, principal, actor, number, document_id, method=method,
                                                     served_at=served_at, recipient=recipient, note=note,
                                                     receipt=photo), limiter=upload_limiter())
    except ActionError as exc:
        return _failed(request, number, exc)
    return _back(request, number, "serve_document")


def _document(request: Request, number: str, document_id: int) -> tuple[Case, Any] | Response:
    state = state_of(request)
    with state.session_factory() as session:
        case = case_by_number(session, number)
        if case is None or not sees_case(state, principal_of(request), case):
            return error_page(request, 404, "case_not_found", f"no case {number}", number=number)
        doc = document_by_id(session, case.id, document_id)
    if doc is None:
        return error_page(request, 404, "not_found", f"case {number} has no document {document_id}")
    return case, doc


@pages.get("/cases/{number}/documents/{document_id}.pdf", name="enforcement_pdf")
def document_pdf(request: Request, number: str, document_id: int) -> Response:
    """The issued document as a PDF (its text as issued, the CJK font of the case PDF)."""
    found = _document(request, number, document_id)
    if isinstance(found, Response):
        return found
    case, doc = found
    try:
        pdf = render_document_pdf(doc, case.number, font_path=getattr(state_of(request), "document_font", None))
    except Exception:
        log.exception("document %s of case %s could not be rendered", doc.number, case.number)
        return error_page(request, 500, "document_failed", f"the document {doc.number} could not be made",
                          number=case.number)
    filename = f"{doc.number}.pdf"
    ascii_name = f"{case.number}-{doc.kind}-{doc.id}.pdf"
    return Response(pdf, media_type="application/pdf", headers={
        "Content-Disposition": f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename)}",
        "Cache-Control": "no-store",
    })


@pages.get("/cases/{number}/documents/{document_id}/receipt/{name}", name="enforcement_receipt")
def receipt_photo(request: Request, number: str, document_id: int, name: str) -> Response:
    """The photo of a signed receipt (``<sha256>.jpg``), hash-checked as it is served."""
    found = _document(request, number, document_id)
    if isinstance(found, Response):
        return found
    case, doc = found
    m = _RECEIPT.match(name)
    state = state_of(request)
    with state.session_factory() as session:
        known = {(s.receipt or {}).get("sha256") for s in next(
            (i.services for i in documents_of(session, case.id) if i.document.id == doc.id), ())}
    if m is None or m.group(1) not in known:
        return error_page(request, 404, "not_found", f"no receipt {name!r} of document {doc.number}")
    try:
        data, _ = read_verified(state.store, service_key(case.number, m.group(1)), m.group(1),
                                f"receipt {name} of {doc.number}")
    except EvidenceAltered as exc:
        return error_page(request, 409, "evidence_altered", str(exc), name=name, number=case.number)
    except KeyError:
        return error_page(request, 404, "not_found", f"no receipt {name!r} of document {doc.number}")
    except StoreError:
        return error_page(request, 503, "store_unavailable", "the evidence store cannot be read right now")
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600",
                                                            "Content-Disposition": f'inline; filename="{name}"'})


# --- API ----------------------------------------------------------------------------------------------------


class ServiceOut(BaseModel):
    method: str = Field(description="direct | left | post | electronic | announcement")
    served_at: str = Field(description="When it was served (UTC, ISO 8601).")
    served_local: str
    recipient: str
    receipt_sha256: str | None = Field(description="sha256 of the stored receipt photo (also in the audit trail).")
    note: str
    recorded_by: str


class DocumentOut(BaseModel):
    id: int
    kind: str = Field(description="rectification_order | penalty_notice | penalty_decision")
    number: str = Field(description="The document number, e.g. X城管责改〔2026〕第0001号.")
    party: str
    issued_by: str
    issued_at: str
    issued_local: str
    pdf_url: str
    services: list[ServiceOut]


class DeadlinesOut(BaseModel):
    notice_number: str | None = Field(description="The case's penalty notice (行政处罚事先告知书), if issued.")
    notice_served_at: str | None = Field(description="Its first service (the deadlines run from it).")
    hearing_eligible: bool = Field(description="Whether the fine gives the party the right to a hearing.")
    statement_due: str | None = Field(description="First late instant for statements and defence (陈述申辩): 3 "
                                      "working days after service.")
    hearing_due: str | None = Field(description="First late instant for a hearing request (听证): 5 working days "
                                    "after service; null when not eligible.")


class DocumentsOut(BaseModel):
    documents: list[DocumentOut]
    deadlines: DeadlinesOut
    issuable: list[str] = Field(description="The kinds the caller may still issue on this case.")


class IssueIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: str = Field(description="rectification_order | penalty_notice | penalty_decision", max_length=32)
    party: str = Field(description="当事人: the person or organisation the document is addressed to.",
                       max_length=256)
    note: str = Field("", description="A note printed in the document as typed.", max_length=2000)


def _documents_out(request: Request, case: Case) -> dict[str, Any]:
    data = panel(request, case) or {}
    docs = data.get("documents", [])
    for d in docs:
        d.pop("service_url", None)
        for s in d["services"]:
            s.pop("receipt_url", None)
    deadlines = data.get("deadlines")
    return {"documents": docs, "deadlines": deadlines.as_dict() if deadlines is not None else {},
            "issuable": data.get("issuable", [])}


@api.get("/cases/{number}/documents", name="api_case_documents", response_model=DocumentsOut, responses=_ERRORS)
def api_documents(request: Request, number: str, principal: Principal = Depends(authorize)) -> Any:
    """The case's enforcement documents, their services and the statement / hearing deadlines."""
    state = state_of(request)
    try:
        templates_of(state)
        case = _case(state, principal, number)
    except ActionError as exc:
        return _action_error(request, exc)
    return _documents_out(request, case)


@api.post("/cases/{number}/documents", name="api_case_document_issue", response_model=DocumentsOut,
          responses=_ERRORS, status_code=201)
def api_issue(request: Request, number: str, body: IssueIn, principal: Principal = Depends(authorize)) -> Any:
    """Issue a document (numbered in its series and year; audited); answers the case's documents."""
    state = state_of(request)
    try:
        issue(state, principal, state.actor_of(request), number, body.kind, body.party, body.note)
        case = _case(state, principal, number)
    except ActionError as exc:
        return _action_error(request, exc)
    return _documents_out(request, case)


@api.post("/cases/{number}/documents/{document_id}/service", name="api_case_document_service",
          response_model=DocumentsOut, responses=_ERRORS, status_code=201)
async def api_service(
    request: Request, number: str, document_id: int, principal: Principal = Depends(authorize),
    method: str = Form(description="direct | left | post | electronic | announcement"),
    served_at: str = Form(description="When it was served: ISO 8601 with a zone, or YYYY-MM-DDTHH:MM city time."),
    recipient: str = Form(description="Who received it (受送达人 or who signed for them)."),
    note: str = Form(""),
    receipt: UploadFile | None = File(None, description="Photo of the signed receipt (JPEG or PNG); required for "
                                      "direct and left service."),
) -> Any:
    """Record the service (送达) of a document; the statement and hearing deadlines run from it."""
    state = state_of(request)
    data = await receipt.read() if receipt is not None else b""
    photo = (receipt.filename or "", data) if receipt is not None and (data or receipt.filename) else None
    actor = state.actor_of(request)
    try:
        await anyio.to_thread.run_sync(lambda: serve(state, principal, actor, number, document_id, method=method,
                                                     served_at=served_at, recipient=recipient, note=note,
                                                     receipt=photo), limiter=upload_limiter())
        case = _case(state, principal, number)
    except ActionError as exc:
        return _action_error(request, exc)
    return _documents_out(request, case)


__all__ = ["api", "issue", "pages", "panel", "serve", "templates_of"]
