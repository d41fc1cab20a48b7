"""The JSON API under ``/api`` (errors: ``{"error": {"code", "message", "text"}}`` with a 4xx status).

``message`` is English for integrators; ``text`` is the same in the console's language for people.
Integrators authenticate with ``Authorization: Bearer <API token>``; the console's own pages call it with
their session cookie and the ``X-CSRF-Token`` header.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import anyio.to_thread
from fastapi import APIRouter, Depends, File, Form, Query, Request, UploadFile
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from nonsite.cases import DISMISS_REASONS, Case, allowed_actions, case_by_number
from nonsite.cases.bureau import open_supervisions, supervisions_of
from nonsite.cases.db import Supervision
from nonsite.cases.queries import audit_trail, search_cases
from nonsite.console.actions import FORM_ACTIONS, ActionError, Upload, bureau_action, perform, perform_upload
from nonsite.console.auth import Principal, access_of, authorize, may, principal_of, still_authorized
from nonsite.console.i18n import Translator, local_time
from nonsite.console.live import Cursor, current_cursor, stream
from nonsite.console.pages import decision_of, note_fields, queue_row
from nonsite.console.render import localized_error, resolve_lang
from nonsite.console.views import (
    case_url,
    due_fields,
    dwell_parts,
    evidence_files,
    evidence_url,
    parse_filter,
    plate_of,
    scoped,
    seal_status,
    sees_case,
    state_of,
    thumbnail_url,
)

router = APIRouter(prefix="/api", dependencies=[Depends(authorize)])


class ErrorBody(BaseModel):
    code: str = Field(description="Machine-readable error code, e.g. not_found, invalid_transition, forbidden.")
    message: str = Field(description="What is wrong and how to fix it, in one English sentence.")
    text: str | None = Field(None, description="The same for people, in the console's language.")


class ErrorOut(BaseModel):
    error: ErrorBody


class MeOut(BaseModel):
    username: str
    display_name: str
    role: str = Field(description="operator | reviewer | admin")
    via_token: bool = Field(description="Whether this request was authenticated by an API token.")
    scopes: list[str] | None = Field(None, description="The API token's scopes; null for a browser session "
                                     "(limited by its role only).")
    acts_for: str | None = Field(None, description="The console user an API token acts for, if any.")


class EvidenceOut(BaseModel):
    role: str
    name: str = Field(description="File name inside the package (or the store key when outside it).")
    url: str | None = Field(description="Where the console serves it; null when it cannot.")
    sha256: str
    bytes: int | None
    content_type: str


class AuditOut(BaseModel):
    at: datetime
    actor: str
    action: str
    before_status: str | None
    after_status: str | None
    detail: dict[str, Any]
    note: str = Field(description="The note as the user typed it (plain text; nothing in it is interpreted).")
    team: str | None = Field(description="The team a dispatch went to.")
    photos: list[str] = Field(description="URLs of the feedback photos of a rectify step.")


class SealOut(BaseModel):
    manifest_key: str
    manifest_sha256: str
    problems_at_sealing: list[str] = Field(description="Blobs missing or altered when the sealer sealed them.")
    checked: bool = Field(description="Whether the package was verified now (needs the sealer's public key).")
    ok: bool | None = Field(description="Verification verdict; null when not checked.")
    problems: list[str] = Field(description="What differs now, per file.")
    error: str | None = Field(description="Why the package could not be verified at all.")


class CaseOut(BaseModel):
    number: str
    event_id: str
    type: str
    status: str
    camera_id: str
    camera_name: str
    zone_id: str
    zone_name: str
    address: str
    lat: float | None
    lon: float | None
    plate: str | None = Field(description="The offender's plate when one was read.")
    started_at: datetime
    confirmed_at: datetime
    dwell_s: float
    confidence: float
    dismiss_reason: str | None
    dismiss_note: str
    created_at: datetime
    updated_at: datetime
    allowed_actions: list[str] = Field(description="Transitions the case's status allows.")
    permitted_actions: list[str] = Field(description="Those of them the caller's role may apply.")
    url: str = Field(description="The case page in the console.")
    thumbnail_url: str | None
    team: str | None = Field(description="Team id the case is routed to (the organisation file); null: none.")
    team_name: str | None = Field(description="That team's name.")
    grid: str | None = Field(description="Grid id of the camera when the case was routed.")
    street: str | None = Field(description="Street id of that grid.")
    due_at: datetime | None = Field(description="When the current step is due (first late instant, UTC); null: "
                                    "no deadline (final status, or the step has no limit).")
    due_step: str | None = Field(description="The step due_at belongs to: confirm | review | dispatch | rectify | "
                                 "close.")
    due_state: str | None = Field(description="on_time | due_soon | overdue now; null without a deadline.")
    open_supervisions: int = Field(description="Supervision orders (督办) not answered yet.")
    suggested_disposition: str = Field(description="warning | penalty | dispatch | manual (the discretion table).")
    legal_basis: dict[str, Any] = Field(description="The catalogue entry the case was drafted under: provisions, "
                                        "penalty range, catalogue version.")
    decision: str | None = Field(description="The reviewer's decision: warning | penalty | no_penalty | transfer.")
    decision_amount_yuan: int | None = Field(description="The fine of a penalty decision.")
    decision_reason: str = Field(description="Why (no_penalty).")
    recheck_state: str | None = Field(
        None, description="The newest camera re-check (docs/recheck.md): pending | clear | present | unavailable; "
        "null: none was asked.")


class SupervisionOut(BaseModel):
    id: int
    instruction: str
    new_deadline: datetime | None
    issued_by: str
    issued_at: datetime
    answered_by: str | None
    answered_at: datetime | None
    answer: str


class ReassignIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    team: str = Field(max_length=64, description="Team id of the organisation to give the case to.")
    reason: str = Field(max_length=2000, description="Why (required; recorded in the audit trail).")


class SuperviseIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    instruction: str = Field(max_length=2000, description="What the team must do (督办意见).")
    new_deadline: datetime | None = Field(None, description="The new deadline (ISO 8601 with an offset), after now.")


class AnswerIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    answer: str = Field(max_length=2000, description="The team's answer (办理情况).")


class CaseDetailOut(CaseOut):
    track_ids: list[int]
    evidence: list[EvidenceOut]
    seal: SealOut
    audit: list[AuditOut]
    model: dict[str, Any] | None
    rule_config_hash: str | None
    document_url: str | None = Field(description="The case document (HTML); null when not set up.")
    document_pdf_url: str | None = Field(description="The case document (PDF); null when not set up.")
    supervisions: list[SupervisionOut] = Field(description="Supervision orders (督办), oldest first.")


class CaseListOut(BaseModel):
    total: int
    limit: int
    offset: int
    items: list[CaseOut]


class ActionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    note: str = Field("", max_length=2000, description="Comment for the audit trail (required to return).")
    reason: str | None = Field(None, description=f"dismiss only: one of {', '.join(DISMISS_REASONS)}.")
    team: str | None = Field(None, max_length=64, description="dispatch only: the team's id.")
    decision: str | None = Field(None, description="approve only: warning | penalty | no_penalty | transfer.")
    amount_yuan: int | None = Field(None, ge=0, le=10_000_000, description="penalty only: the fine in yuan, "
                                    "within the catalogue's range for the type.")
    decision_reason: str = Field("", max_length=2000, description="Why (required for no_penalty).")


_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "Not logged in / no valid API token"},
    403: {"model": ErrorOut, "description": "The caller's role may not do this (or the CSRF token is wrong)"},
    404: {"model": ErrorOut, "description": "Unknown case or action"},
    409: {"model": ErrorOut, "description": "The action does not apply in the case's status"},
    413: {"model": ErrorOut, "description": "Upload too large"},
    415: {"model": ErrorOut, "description": "Upload is not a JPEG or PNG image"},
    422: {"model": ErrorOut, "description": "Bad request (filter, body, reason, team)"},
}


def err(request: Request, status: int, code: str, message: str, key: str | None = None,
        fields: dict[str, Any] | None = None, **extra: Any) -> JSONResponse:
    body: dict[str, Any] = {"code": code, "message": message, **extra}
    if key:
        body["text"] = localized_error(request, key, fields or {})
    return JSONResponse({"error": body}, status_code=status)


def _action_error(request: Request, exc: ActionError) -> JSONResponse:
    return err(request, exc.status, exc.code, exc.message, exc.key, exc.fields)


def _case_out(request: Request, case: Case, principal: Principal | None, open_orders: int = 0) -> dict[str, Any]:
    allowed = [a.value for a in allowed_actions(case.status)]
    state = state_of(request)
    team = state.organisation.team(case.team) if state.organisation is not None and case.team else None
    return {
        "team": case.team, "team_name": team.name if team is not None else None, "grid": case.grid,
        "street": case.street, **due_fields(state, case), "open_supervisions": open_orders,
        "suggested_disposition": case.suggested_disposition, "legal_basis": case.legal_basis or {},
        "decision": case.decision, "decision_amount_yuan": case.decision_amount_yuan,
        "decision_reason": case.decision_reason or "",
        "recheck_state": case.recheck_state,
        "number": case.number, "event_id": case.event_id, "type": case.type, "status": case.status.value,
        "camera_id": case.camera_id, "camera_name": case.camera_name, "zone_id": case.zone_id,
        "zone_name": case.zone_name, "address": case.address, "lat": case.lat, "lon": case.lon,
        "plate": plate_of(case),
        "started_at": case.started_at, "confirmed_at": case.confirmed_at, "dwell_s": case.dwell_s,
        "confidence": case.confidence, "dismiss_reason": case.dismiss_reason, "dismiss_note": case.dismiss_note,
        "created_at": case.created_at, "updated_at": case.updated_at,
        "allowed_actions": allowed,
        "permitted_actions": [a for a in allowed if may(principal, a)],
        "url": case_url(request, case.number), "thumbnail_url": thumbnail_url(request, case),
    }


#: Answers every operation may give besides its own (access, unknown path parameters, bad input).
COMMON_ERRORS: dict[str, str] = {
    "400": "The request body cannot be parsed (e.g. a malformed multipart form)",
    "401": "Not logged in / no valid API token",
    "403": "The caller's role or the API token's scope does not allow this (or the CSRF token is wrong)",
    "404": "Unknown case, camera or action",
    "422": "Bad request (path, query or body)",
}


def document_errors(spec: dict[str, Any]) -> dict[str, Any]:
    """Declare :data:`COMMON_ERRORS` (``ErrorOut`` bodies) on every operation of ``spec`` that lacks them."""
    error_body = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorOut"}}}
    for methods in spec.get("paths", {}).values():
        for operation in methods.values():
            responses = operation.setdefault("responses", {})
            for code, description in COMMON_ERRORS.items():
                responses.setdefault(code, {"description": description, "content": error_body})
    return spec


@router.get("/openapi.json", name="api_openapi", include_in_schema=False)
def api_openapi(request: Request) -> JSONResponse:
    return JSONResponse(document_errors(request.app.openapi()))


@router.get("/me", name="api_me", response_model=MeOut, responses=_ERRORS, tags=["access"])
def api_me(principal: Principal = Depends(authorize)) -> Any:
    """Who the caller is (check an API token with it)."""
    return {"username": principal.username, "display_name": principal.display_name, "role": principal.role,
            "via_token": principal.via_token, "acts_for": principal.owner,
            "scopes": sorted(principal.scopes) if principal.scopes is not None else None}


@router.get("/cases", name="api_cases", response_model=CaseListOut, responses=_ERRORS, tags=["cases"])
def api_list_cases(
    request: Request,
    principal: Principal = Depends(authorize),
    status: str = Query("", description="Only cases in these statuses (comma-separated or repeated)."),
    type_: str = Query("", alias="type", description="Only cases of these violation types."),
    camera: str = Query("", description="Only cases of these camera ids."),
    disposition: str = Query("", description="Only cases with these suggested dispositions "
                             "(warning, penalty, dispatch, manual)."),
    from_: str = Query("", alias="from", description="Confirmed at or after (YYYY-MM-DD[THH:MM] city time, "
                       "or ISO 8601 with an offset)."),
    to: str = Query("", description="Confirmed before (same forms; a bare day includes the whole day)."),
    date: str = Query("", description="Confirmed on this day (YYYY-MM-DD, city time)."),
    q: str = Query("", description="Text in the number, plate, camera, zone or address."),
    number: str = Query("", description="Part of the case number."),
    plate: str = Query("", description="Part of the offender's plate (separators and case do not matter)."),
    repeats: str = Query("", description="1: only repeat offences (cases linked to an earlier one)."),
    due: str = Query("", description="Only cases whose current step is on_time, due_soon or overdue now."),
    sort: str = Query("", description="newest (default: detection time, newest first) or due (earliest deadline "
                      "first, cases without one last)."),
    limit: int = Query(50, ge=1, le=500),
    offset: int = Query(0, ge=0, le=10_000_000),
) -> Any:
    """Cases, newest first (by the time the violation was confirmed) or by due time; a field officer gets their
    teams' cases only."""
    state = state_of(request)
    sel, problems = parse_filter(request.query_params, state.zone)
    if problems:
        param, message = problems[0]
        return err(request, 422, "bad_filter", "; ".join(m for _, m in problems), param=param)
    with state.session_factory() as session:
        found = search_cases(session, scoped(state, principal, sel.filter), limit=limit, offset=offset)
        orders = open_supervisions(session, [c.id for c in found.items])
    return {"total": found.total, "limit": limit, "offset": offset,
            "items": [_case_out(request, c, principal, len(orders.get(c.id, []))) for c in found.items]}


@router.get("/cases/{number}", name="api_case", response_model=CaseDetailOut, responses=_ERRORS, tags=["cases"])
def api_get_case(request: Request, number: str, principal: Principal = Depends(authorize)) -> Any:
    """One case with its evidence, the seal check and the audit trail."""
    state = state_of(request)
    with state.session_factory() as session:
        case = case_by_number(session, number)
        if case is None or not sees_case(state, principal, case):
            return err(request, 404, "not_found", f"no case {number}; list cases with GET /api/cases",
                       "error.case_not_found", {"number": number})
        audit = audit_trail(session, case)
        orders = supervisions_of(session, case.id)
    by_key = {f.key: f for f in evidence_files(case).values()}
    evidence = []
    for item in case.evidence:
        file = by_key.get(str(item.get("key", "")))
        evidence.append({
            "role": item.get("role", ""), "name": file.name if file else item.get("key", ""),
            "url": evidence_url(request, case.event_id, file.name) if file else None,
            "sha256": item.get("sha256", ""), "bytes": item.get("bytes"),
            "content_type": item.get("content_type", ""),
        })
    seal = seal_status(state, case)
    violation = case.violation if isinstance(case.violation, dict) else {}
    page = case_url(request, case.number)
    audit_out = []
    for a in audit:
        detail = a.detail if isinstance(a.detail, dict) else {}
        audit_out.append({
            "at": a.at, "actor": a.actor, "action": a.action, "before_status": a.before_status,
            "after_status": a.after_status, "detail": detail, **note_fields(request, case.number, a),
        })
    return {
        **_case_out(request, case, principal, sum(1 for o in orders if o.open)),
        "supervisions": [_supervision_out(o) for o in orders],
        "track_ids": case.track_ids,
        "evidence": evidence,
        "seal": {
            "manifest_key": case.manifest_key, "manifest_sha256": case.manifest_sha256,
            "problems_at_sealing": case.seal_problems, "checked": seal.checked, "ok": seal.ok,
            "problems": seal.problems, "error": seal.error,
        },
        "audit": audit_out,
        "model": violation.get("model"),
        "rule_config_hash": violation.get("rule_config_hash"),
        "document_url": f"{page}/document" if state.documents is not None else None,
        "document_pdf_url": f"{page}/document.pdf" if state.documents is not None else None,
    }


@router.post("/cases/{number}/feedback", name="api_case_feedback", response_model=CaseOut, responses=_ERRORS,
             tags=["cases"])
async def api_feedback(
    request: Request,
    number: str,
    principal: Principal = Depends(authorize),
    note: str = Form("", description="What was done on the spot."),
    photos: list[UploadFile] = File(default_factory=list, description="Rectification photos (JPEG or PNG)."),
) -> Any:
    """Feedback (rectify): dispatched → rectified, with photos stored under ``cases/<number>/feedback/``."""
    state = state_of(request)
    uploads = [Upload(p.filename or "", await p.read()) for p in photos]
    try:
        case = await perform_upload(state, number, principal, state.actor_of(request), note=note,
                                    photos=[u for u in uploads if u.data or u.filename])
    except ActionError as exc:
        return _action_error(request, exc)
    return _case_out(request, case, principal)


def _supervision_out(o: Supervision) -> dict[str, Any]:
    return {"id": o.id, "instruction": o.instruction, "new_deadline": o.new_deadline, "issued_by": o.issued_by,
            "issued_at": o.issued_at, "answered_by": o.answered_by, "answered_at": o.answered_at, "answer": o.answer}


@router.post("/cases/{number}/reassign", name="api_case_reassign", response_model=CaseOut, responses=_ERRORS,
             tags=["bureau"])
def api_reassign(request: Request, number: str, body: ReassignIn, principal: Principal = Depends(authorize)) -> Any:
    """Give the case to another team of the organisation, with the reason (audited)."""
    state = state_of(request)
    try:
        case = bureau_action(state, principal, state.actor_of(request), "reassign", number, team=body.team,
                             text=body.reason)
    except ActionError as exc:
        return _action_error(request, exc)
    return _case_out(request, case, principal)


@router.post("/cases/{number}/supervise", name="api_case_supervise", response_model=SupervisionOut,
             responses=_ERRORS, tags=["bureau"])
def api_supervise(request: Request, number: str, body: SuperviseIn, principal: Principal = Depends(authorize)) -> Any:
    """Issue a supervision order (督办): the instruction and optionally a new deadline; pinned first in the team's
    tasks until answered."""
    state = state_of(request)
    try:
        order = bureau_action(state, principal, state.actor_of(request), "supervise", number,
                              text=body.instruction, deadline=body.new_deadline)
    except ActionError as exc:
        return _action_error(request, exc)
    return _supervision_out(order)


@router.post("/cases/{number}/supervisions/{order}/answer", name="api_supervision_answer",
             response_model=SupervisionOut, responses=_ERRORS, tags=["bureau"])
def api_answer(request: Request, number: str, order: int, body: AnswerIn,
               principal: Principal = Depends(authorize)) -> Any:
    """The team's answer to a supervision order (once)."""
    state = state_of(request)
    try:
        answered = bureau_action(state, principal, state.actor_of(request), "answer_supervision", number,
                                 text=body.answer, order=order)
    except ActionError as exc:
        return _action_error(request, exc)
    return _supervision_out(answered)


@router.post("/cases/{number}/{action}", name="api_case_action", response_model=CaseOut, responses=_ERRORS,
             tags=["cases"])
def api_action(request: Request, number: str, action: str, body: ActionIn | None = None,
               principal: Principal = Depends(authorize)) -> Any:
    """confirm | dismiss (reason) | approve | return (note required) | dispatch (team) | close.

    ``rectify`` is ``POST /api/cases/{number}/feedback`` (it takes photos).
    """
    state = state_of(request)
    if action not in FORM_ACTIONS:
        return err(request, 404, "unknown_action", f"no case action {action!r} here; use one of "
                   f"{', '.join(FORM_ACTIONS)} (rectify is POST /api/cases/{{number}}/feedback)",
                   "error.unknown_action", {"action": action})
    body = body or ActionIn()
    if action == "dismiss" and body.reason is None:
        return err(request, 422, "bad_request", f"reason: field required to dismiss (one of "
                   f"{', '.join(DISMISS_REASONS)})", "error.invalid_reason")
    try:
        case = perform(state, number, action, principal, state.actor_of(request), reason=body.reason,
                       note=body.note, team=body.team,
                       decision=decision_of(body.decision or "", body.amount_yuan, body.decision_reason))
    except ActionError as exc:
        return _action_error(request, exc)
    return _case_out(request, case, principal)


@router.get("/events", name="api_events", tags=["cases"], responses={
    200: {"content": {"text/event-stream": {}}, "description": "Server-sent events: `case` per new or changed "
          "case (JSON: number, status, labels, whether it matches the filter)."}, **_ERRORS})
async def api_events(
    request: Request,
    since: str = Query("", description="A cursor (an event id) to continue from; default: from now."),
) -> Any:
    """Live updates of the alert queue, filtered like ``GET /api/cases`` (same query parameters)."""
    state = state_of(request)
    sel, problems = parse_filter(request.query_params, state.zone)
    if problems:
        return err(request, 422, "bad_filter", "; ".join(m for _, m in problems))
    start = request.headers.get("last-event-id", "") or since  # a reconnecting browser resumes where it was
    def now() -> Cursor:
        with state.session_factory() as session:
            return current_cursor(session)

    try:  # the database is read in a worker thread: a busy database must not stall the event loop
        cursor = Cursor.parse(start) if start else await anyio.to_thread.run_sync(now)
    except ValueError as exc:
        return err(request, 422, "bad_cursor", str(exc))
    t = Translator(resolve_lang(request, state)[0])
    carry = sel.query()

    def payload(case: Case, matches: bool) -> dict[str, Any]:
        row = queue_row(request, case, carry)
        key, fields = dwell_parts(case.dwell_s)
        return {
            **{k: v for k, v in row.items() if k not in ("confirmed_at", "due_at")},
            "matches": matches,
            "status_label": t.label("status", case.status.value),
            "type_label": t.label("type", case.type),
            "time": local_time(case.confirmed_at, state.zone),
            "dwell": t(key, **fields),
            "updated_at": case.updated_at.isoformat(),
            # the camera re-check badge of the server-rendered queue (docs/recheck.md); the page sets it as text
            "recheck_state": case.recheck_state,
            "recheck_label": t.label("recheck", case.recheck_state) if case.recheck_state else None,
            "recheck_title": t("recheck.title"),
        }

    return StreamingResponse(
        stream(state.session_factory, scoped(state, principal_of(request), sel.filter), cursor, payload,
               state.live_poll_s, alive=still_authorized(request),
               recheck_s=access_of(request).recheck_s),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
