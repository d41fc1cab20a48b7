"""Server-rendered pages: alert queue, search, review queue, tasks (dispatch, feedback, closing), the case.

Every page needs a logged-in user (:func:`~nonsite.console.auth.authorize` on the router); forms carry the
session's CSRF token; a form that cannot be applied answers 4xx with the case page and the reason.
"""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Depends, File, Form, Query, Request, UploadFile
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import select

from nonsite.cases import DISMISS_REASONS, AuditEntry, Case, CaseStatus, allowed_actions, case_by_number
from nonsite.config.manifest import type_names
from nonsite.console.actions import FORM_ACTIONS, ActionError, Upload, feedback_key, perform
from nonsite.console.auth import Principal, authorize
from nonsite.console.live import current_cursor
from nonsite.console.notes import parse
from nonsite.console.render import error_page, localized_error, path_with, render
from nonsite.console.views import (
    PAGE_SIZE,
    STILL_PAIRS,
    CaseFilter,
    audit_of,
    case_url,
    evidence_files,
    evidence_url,
    known_cameras,
    known_types,
    list_cases,
    neighbours,
    oldest_first,
    parse_filter,
    plate_of,
    root_path,
    seal_status,
    state_of,
    status_counts,
    status_values,
    thumbnail_url,
    url_by_role,
)
from nonsite.evidence.store import StoreError

router = APIRouter(include_in_schema=False, dependencies=[Depends(authorize)])

WORK_LIST_SIZE = 200
_SHA_JPG = re.compile(r"^([0-9a-f]{64})\.jpg$")
_BACK_PAGES = {"review": "/review", "tasks": "/tasks"}


def filter_notices(problems: list[tuple[str, str]], params: Any) -> list[tuple[str, dict[str, Any]]]:
    """Catalogue keys (and fields) for the filter values that were ignored."""
    out = []
    for param, message in problems:
        value = str(params.get(param, ""))
        if param == "status":
            out.append(("error.bad_filter", {"value": value}))
        elif param in ("from", "to", "date"):
            out.append(("error.bad_time", {"value": value}))
        else:
            out.append(("error.bad_text", {"param": param, "message": message}))
    return out


def queue_row(request: Request, case: Case, carry: str) -> dict[str, Any]:
    urls = url_by_role(request, case)
    return {
        "number": case.number,
        "url": case_url(request, case.number) + carry,
        "type": case.type,
        "camera": case.camera_name or case.camera_id,
        "camera_id": case.camera_id,
        "zone": case.zone_name or case.zone_id,
        "address": case.address,
        "confirmed_at": case.confirmed_at,
        "dwell_s": case.dwell_s,
        "status": case.status.value,
        "thumbnail": thumbnail_url(request, case),
        "annotated": urls.get("confirm_annotated") or urls.get("confirm"),
        "original": urls.get("confirm") or urls.get("confirm_annotated"),
        "plate": plate_of(case),
    }


def _filter_context(request: Request, session: Any, flt: CaseFilter) -> dict[str, Any]:
    params = dict(flt.raw)
    return {
        "f": {k: params.get(k, "") for k in ("status", "type", "camera", "from", "to", "date", "q")},
        "statuses": status_values(),
        "counts": status_counts(session),
        "types": sorted({*known_types(session), *type_names()}),  # in the cases, or labelled
        "cameras": known_cameras(session),
    }


@router.get("/", response_class=HTMLResponse, name="queue")
def queue_page(request: Request, page: int = Query(1, ge=1, le=100_000)) -> Response:
    """The alert queue: newest first, filters, live updates, keyboard triage."""
    state = state_of(request)
    flt, problems = parse_filter(request.query_params, state.zone)
    with state.session_factory() as session:
        cases, total = list_cases(session, flt, PAGE_SIZE, (page - 1) * PAGE_SIZE)
        ctx = _filter_context(request, session, flt)
        cursor = current_cursor(session)
    carry = flt.query()
    pages = max(1, -(-total // PAGE_SIZE))
    live = f"{root_path(request)}/api/events" + (carry + "&" if carry else "?") + urlencode({"since": str(cursor)})
    return render(request, "queue.html", {
        **ctx,
        "rows": [queue_row(request, c, carry) for c in cases],
        "total": total, "page": page, "pages": pages,
        "prev_page_url": path_with(request, page=str(page - 1)) if page > 1 else None,
        "next_page_url": path_with(request, page=str(page + 1)) if page < pages else None,
        "notices": filter_notices(problems, request.query_params),
        "live_url": live if page == 1 else "",
        "reasons": DISMISS_REASONS,
    })


@router.get("/search", response_class=HTMLResponse, name="search")
def search_page(request: Request) -> Response:
    """Case search by number, plate, camera, place and day."""
    state = state_of(request)
    flt, problems = parse_filter(request.query_params, state.zone)
    asked = bool(flt.raw)
    with state.session_factory() as session:
        cases, total = list_cases(session, flt, WORK_LIST_SIZE, 0) if asked else ([], 0)
        ctx = _filter_context(request, session, flt)
    carry = flt.query()
    return render(request, "search.html", {
        **ctx,
        "asked": asked,
        "rows": [queue_row(request, c, carry) for c in cases],
        "total": total,
        "notices": filter_notices(problems, request.query_params),
    })


def _trail(session: Any, cases: list[Case]) -> dict[int, list[AuditEntry]]:
    by_case: dict[int, list[AuditEntry]] = defaultdict(list)
    if cases:
        ids = [c.id for c in cases]
        for entry in session.scalars(select(AuditEntry).where(AuditEntry.case_id.in_(ids)).order_by(AuditEntry.id)):
            by_case[entry.case_id].append(entry)
    return by_case


def _last(entries: list[AuditEntry], action: str) -> AuditEntry | None:
    return next((e for e in reversed(entries) if e.action == action), None)


def feedback_url(request: Request, number: str, sha: str) -> str:
    return f"{root_path(request)}/cases/{quote(number, safe='')}/feedback/{sha}.jpg"


def _step(request: Request, number: str, entry: AuditEntry | None) -> dict[str, Any] | None:
    if entry is None:
        return None
    parts = parse(str(entry.detail.get("note", "")) if isinstance(entry.detail, dict) else "")
    return {"actor": entry.actor, "at": entry.at, "note": parts.text, "team": parts.team,
            "photos": [feedback_url(request, number, s) for s in parts.photos]}


def _work_item(request: Request, case: Case, trail: list[AuditEntry]) -> dict[str, Any]:
    return {
        **queue_row(request, case, ""),
        **{key: _step(request, case.number, _last(trail, action)) for key, action in (
            ("confirmed", "confirm"), ("approved", "approve"), ("dispatched", "dispatch"),
            ("rectified", "rectify"))},
    }


def _notice(request: Request) -> list[tuple[str, str]]:
    notice = request.query_params.get("notice", "")
    return [("ok", f"notice.{notice}")] if notice in (*FORM_ACTIONS, "rectify") else []


@router.get("/review", response_class=HTMLResponse, name="review")
def review_page(request: Request) -> Response:
    """Confirmed cases waiting for the legal review, oldest first: approve or return with a comment."""
    state = state_of(request)
    with state.session_factory() as session:
        cases = oldest_first(session, CaseStatus.CONFIRMED, WORK_LIST_SIZE)
        trail = _trail(session, cases)
    return render(request, "review.html", {
        "items": [_work_item(request, c, trail[c.id]) for c in cases],
        "messages": _notice(request), "notice_case": request.query_params.get("case", ""),
    })


@router.get("/tasks", response_class=HTMLResponse, name="tasks")
def tasks_page(request: Request) -> Response:
    """Approved cases to dispatch, dispatched ones waiting for feedback, rectified ones to close."""
    state = state_of(request)
    groups = {}
    with state.session_factory() as session:
        for status in (CaseStatus.APPROVED, CaseStatus.DISPATCHED, CaseStatus.RECTIFIED):
            cases = oldest_first(session, status, WORK_LIST_SIZE)
            trail = _trail(session, cases)
            groups[status.value] = [_work_item(request, c, trail[c.id]) for c in cases]
    return render(request, "tasks.html", {
        "groups": groups, "teams": state.teams, "max_upload_mb": state.max_upload_bytes / 1024 / 1024,
        "max_upload_bytes": state.max_upload_bytes,
        "messages": _notice(request), "notice_case": request.query_params.get("case", ""),
    })


def case_response(request: Request, number: str, *, error: ActionError | None = None,
                  status_code: int = 200) -> Response:
    state = state_of(request)
    flt, _ = parse_filter(request.query_params, state.zone)
    with state.session_factory() as session:
        case = case_by_number(session, number)
        if case is None:
            return error_page(request, 404, "case_not_found", f"no case {number}", number=number)
        audit = audit_of(session, case)
        newer, older = neighbours(session, case, flt)
    carry = flt.query()
    urls = url_by_role(request, case)
    stills = [
        {"label": f"case.still_{name}", "annotated": urls.get(annotated) or urls.get(original),
         "original": urls.get(original) or urls.get(annotated)}
        for name, annotated, original in STILL_PAIRS
        if name != "reference" or annotated in urls or original in urls
    ]
    by_key = {f.key: f for f in evidence_files(case).values()}
    evidence_rows = []
    for item in case.evidence:
        file = by_key.get(str(item.get("key", "")))
        evidence_rows.append({
            "role": str(item.get("role", "")),
            "name": file.name if file else str(item.get("key", "")),
            "url": evidence_url(request, case.event_id, file.name) if file else None,
            "content_type": str(item.get("content_type", "")),
            "bytes": item.get("bytes"),
            "sha256": str(item.get("sha256", "")),
        })
    actions = [a.value for a in allowed_actions(case.status)]
    messages: list[tuple[str, str]] = []
    notice = request.query_params.get("notice", "")
    if notice in (*FORM_ACTIONS, "rectify"):
        messages.append(("ok", f"notice.{notice}"))
    model = case.violation.get("model") if isinstance(case.violation, dict) else None
    audit_rows = []
    for a in audit:
        parts = parse(str(a.detail.get("note", ""))) if isinstance(a.detail, dict) else parse("")
        audit_rows.append({"at": a.at, "actor": a.actor, "action": a.action, "before": a.before_status,
                           "after": a.after_status, "reason": a.detail.get("reason") if isinstance(a.detail, dict)
                           else None, "note": parts.text, "team": parts.team,
                           "photos": [feedback_url(request, case.number, s) for s in parts.photos]})
    return render(request, "case.html", {
        "case": case,
        "case_path": case_url(request, case.number),
        "status": case.status.value,
        "plate": plate_of(case),
        "stills": stills,
        "closeup": urls.get("closeup"),
        "clip": urls.get("clip"),
        "clip_type": next((f.content_type for f in by_key.values() if f.role == "clip"), "video/mp4"),
        "manifest_url": urls.get("manifest"),
        "signature_url": urls.get("signature"),
        "evidence_rows": evidence_rows,
        "seal": seal_status(state, case),
        "audit": audit_rows,
        "actions": actions,
        "reasons": DISMISS_REASONS,
        "teams": state.teams,
        "max_upload_bytes": state.max_upload_bytes,
        "max_upload_mb": state.max_upload_bytes / 1024 / 1024,
        "documents": state.documents is not None,
        "messages": messages,
        "error_text": localized_error(request, error.key, error.fields) if error else "",
        "prev_url": case_url(request, newer) + carry if newer else None,
        "next_url": case_url(request, older) + carry if older else None,
        "back_url": f"{root_path(request)}/{carry}",
        "carry": carry,
        "model": model if isinstance(model, dict) else None,
    }, status_code=status_code)


@router.get("/cases/{number}", response_class=HTMLResponse, name="case")
def case_page(request: Request, number: str) -> Response:
    """The case: stills (boxes on/off), clip, facts, evidence and its seal check, the actions, the trail."""
    return case_response(request, number)


def _after(request: Request, number: str, action: str, back: str, carry: str) -> Response:
    if back in _BACK_PAGES:
        target = f"{root_path(request)}{_BACK_PAGES[back]}?" + urlencode({"notice": action, "case": number})
    else:
        query = carry.lstrip("?")
        target = case_url(request, number) + "?" + "&".join(p for p in (query, f"notice={action}") if p)
    return RedirectResponse(target, status_code=303)


def _carry(value: str) -> str:
    """A filter query string from a form, kept only when it is one (it goes into a redirect)."""
    value = value.strip()
    return value if re.fullmatch(r"\?[A-Za-z0-9_.~%+=&:-]{0,600}", value) else ""


def _failed(request: Request, number: str, exc: ActionError) -> Response:
    if exc.status in (403, 404):
        return error_page(request, exc.status, exc.key.removeprefix("error."), exc.message, **exc.fields)
    return case_response(request, number, error=exc, status_code=exc.status)


@router.post("/cases/{number}/feedback", name="case_feedback_form")
async def feedback_form(
    request: Request,
    number: str,
    principal: Principal = Depends(authorize),
    note: str = Form(""),
    back: str = Form(""),
    photos: list[UploadFile] = File(default_factory=list),
) -> Response:
    """Feedback from the team (整改反馈): rectification photos and a note; dispatched → rectified."""
    state = state_of(request)
    uploads = []
    for photo in photos:
        data = await photo.read()
        if data or photo.filename:
            uploads.append(Upload(photo.filename or "", data))
    try:
        perform(state, number, "rectify", principal, state.actor_of(request), note=note, photos=uploads)
    except ActionError as exc:
        return _failed(request, number, exc)
    return _after(request, number, "rectify", back, "")


@router.post("/cases/{number}/{action}", name="case_action_form")
def action_form(
    request: Request,
    number: str,
    action: str,
    principal: Principal = Depends(authorize),
    reason: str = Form(""),
    note: str = Form(""),
    team: str = Form(""),
    back: str = Form(""),
    f: str = Form(""),
) -> Response:
    """confirm | dismiss (reason) | approve | return (comment) | dispatch (team) | close, from a form."""
    state = state_of(request)
    if action not in FORM_ACTIONS:
        return error_page(request, 404, "unknown_action", f"no case action {action!r}", action=action)
    try:
        perform(state, number, action, principal, state.actor_of(request), reason=reason or None, note=note,
                team=team or None)
    except ActionError as exc:
        return _failed(request, number, exc)
    return _after(request, number, action, back, _carry(f))


@router.get("/cases/{number}/feedback/{name}", name="feedback_photo")
def feedback_photo(request: Request, number: str, name: str) -> Response:
    """A rectification photo of the case (``<sha256>.jpg``, as the console stored it)."""
    state = state_of(request)
    m = _SHA_JPG.match(name)
    with state.session_factory() as session:
        case = case_by_number(session, number)
    if case is None:
        return error_page(request, 404, "case_not_found", f"no case {number}", number=number)
    if m is None:
        return error_page(request, 404, "not_found", f"no photo {name!r} in the feedback of case {number}")
    try:
        data = state.store.get(feedback_key(case.number, m.group(1)))
    except KeyError:
        return error_page(request, 404, "not_found", f"no photo {name!r} in the feedback of case {number}")
    except StoreError:
        return error_page(request, 503, "store_unavailable", "the evidence store cannot be read right now")
    return Response(data, media_type="image/jpeg", headers={
        "Cache-Control": "private, max-age=3600", "ETag": f'"{m.group(1)}"',
        "Content-Disposition": f'inline; filename="{name}"',
    })


__all__ = ["case_response", "queue_row", "router"]
