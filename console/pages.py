"""Server-rendered pages: alert queue, search, review queue, tasks (dispatch, feedback, closing), the case.

Every page needs a logged-in user (:func:`~nonsite.console.auth.authorize` on the router); forms carry the
session's CSRF token; a form that cannot be applied answers 4xx with the case page and the reason.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Depends, File, Form, Query, Request, UploadFile
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from nonsite.cases import DISMISS_REASONS, AuditEntry, Case, CaseStatus, allowed_actions, case_by_number
from nonsite.cases.attachments import feedback_key
from nonsite.cases.bureau import BUREAU_PERMISSIONS, as_order, open_supervisions, supervisions_of
from nonsite.cases.queries import (
    DUE_STATES,
    SORTS,
    CaseFilter,
    ParsedFilter,
    audit_trail,
    audit_trails,
    camera_choices,
    count_by_status,
    known_types,
    linked_cases,
    neighbours,
    oldest_first,
    search_cases,
)
from nonsite.cases.reminders import task_sort_key
from nonsite.config.manifest import type_names
from nonsite.console.actions import FORM_ACTIONS, ActionError, Upload, bureau_action, perform, perform_upload
from nonsite.console.auth import Principal, authorize, principal_of
from nonsite.console.live import current_cursor
from nonsite.console.render import error_page, localized_error, path_with, render
from nonsite.console.view_guard import moved_cameras
from nonsite.console.views import (
    PAGE_SIZE,
    STILL_PAIRS,
    EvidenceAltered,
    case_url,
    due_fields,
    evidence_files,
    evidence_url,
    parse_filter,
    plate_of,
    read_verified,
    recheck_panel,
    root_path,
    scoped,
    seal_status,
    sees_case,
    state_of,
    status_values,
    thumbnail_url,
    url_by_role,
)
from nonsite.evidence.store import StoreError

router = APIRouter(include_in_schema=False, dependencies=[Depends(authorize)])

WORK_LIST_SIZE = 200
_SHA_JPG = re.compile(r"^([0-9a-f]{64})\.jpg$")
_SHA = re.compile(r"^[0-9a-f]{64}$")
_BACK_PAGES = {"review": "/review", "tasks": "/tasks"}
#: Actions whose success the pages confirm (``notice.<action>``).
NOTICES = (*FORM_ACTIONS, "rectify", "reassign", "supervise", "answer_supervision", "issue_document",
           "serve_document")


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
        "recheck": case.recheck_state,
        **_due_row(request, case),
    }


def _due_row(request: Request, case: Case) -> dict[str, Any]:
    """Team and deadline of a row."""
    state = state_of(request)
    due = due_fields(state, case)
    return {"team": case.team, "team_name": team_name(state, case.team), "due_state": due["due_state"],
            "due_step": due["due_step"], "due_at": case.due_at}


def team_name(state: Any, team: str | None) -> str:
    """A team's name from the organisation (its id when unknown, empty for none)."""
    found = state.organisation.team(team) if state.organisation is not None and team else None
    return found.name if found is not None else (team or "")


def _filter_context(request: Request, session: Any, sel: ParsedFilter) -> dict[str, Any]:
    params = dict(sel.raw)
    return {
        "f": {k: params.get(k, "") for k in ("status", "type", "camera", "from", "to", "date", "q", "due", "sort")},
        "due_states": DUE_STATES, "sorts": SORTS,
        "statuses": status_values(),
        "counts": count_by_status(session, scoped(state_of(request), principal_of(request), CaseFilter())),
        "types": sorted({*known_types(session), *type_names()}),  # in the cases, or labelled,
        "cameras": [(cid, name or cid) for cid, name, _ in camera_choices(session)],
    }


@router.get("/", response_class=HTMLResponse, name="queue")
def queue_page(request: Request, page: int = Query(1, ge=1, le=100_000)) -> Response:
    """The alert queue: newest first, filters, live updates, keyboard triage."""
    state = state_of(request)
    sel, problems = parse_filter(request.query_params, state.zone)
    with state.session_factory() as session:
        found = search_cases(session, scoped(state, principal_of(request), sel.filter), limit=PAGE_SIZE,
                             offset=(page - 1) * PAGE_SIZE)
        cases, total = found.items, found.total
        ctx = _filter_context(request, session, sel)
        cursor = current_cursor(session)
    carry = sel.query()
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
        "moved_cameras": moved_cameras(request),
    })


@router.get("/search", response_class=HTMLResponse, name="search")
def search_page(request: Request) -> Response:
    """Case search by number, plate, camera, place and day."""
    state = state_of(request)
    sel, problems = parse_filter(request.query_params, state.zone)
    asked = bool(sel.raw)
    with state.session_factory() as session:
        found = search_cases(session, scoped(state, principal_of(request), sel.filter),
                             limit=WORK_LIST_SIZE) if asked else None
        cases, total = (found.items, found.total) if found else ([], 0)
        ctx = _filter_context(request, session, sel)
    carry = sel.query()
    return render(request, "search.html", {
        **ctx,
        "asked": asked,
        "rows": [queue_row(request, c, carry) for c in cases],
        "total": total,
        "notices": filter_notices(problems, request.query_params),
    })


def _last(entries: list[AuditEntry], action: str) -> AuditEntry | None:
    return next((e for e in reversed(entries) if e.action == action), None)


def feedback_url(request: Request, number: str, sha: str) -> str:
    return f"{root_path(request)}/cases/{quote(number, safe='')}/feedback/{sha}.jpg"


def note_fields(request: Request, number: str, entry: AuditEntry) -> dict[str, Any]:
    """The note (text as typed, never parsed), the team of a dispatch and the photo URLs of a feedback."""
    note = entry.detail.get("note", "") if isinstance(entry.detail, dict) else ""
    return {"note": str(note or ""), "team": entry.team,
            "photos": [feedback_url(request, number, s) for s in entry.photos or () if _SHA.match(str(s))]}


def _step(request: Request, number: str, entry: AuditEntry | None) -> dict[str, Any] | None:
    if entry is None:
        return None
    return {"actor": entry.actor, "at": entry.at, **note_fields(request, number, entry)}


def repeat_links(request: Request, session: Any, case: Case) -> list[dict[str, Any]]:
    """The case's possible repeats (earlier and later linked cases) for the legal panel."""
    return [{"number": lc.case.number, "url": case_url(request, lc.case.number), "kinds": list(lc.kinds),
             "status": lc.case.status.value, "earlier": lc.earlier} for lc in linked_cases(session, case)]


def _work_item(request: Request, case: Case, trail: list[AuditEntry]) -> dict[str, Any]:
    return {
        **queue_row(request, case, ""),
        **{key: _step(request, case.number, _last(trail, action)) for key, action in (
            ("confirmed", "confirm"), ("approved", "approve"), ("dispatched", "dispatch"),
            ("rectified", "rectify"))},
    }


def _notice(request: Request) -> list[tuple[str, str]]:
    notice = request.query_params.get("notice", "")
    return [("ok", f"notice.{notice}")] if notice in NOTICES else []


@router.get("/review", response_class=HTMLResponse, name="review")
def review_page(request: Request) -> Response:
    """Confirmed cases waiting for the legal review, oldest first: approve or return with a comment."""
    state = state_of(request)
    with state.session_factory() as session:
        cases = oldest_first(session, CaseStatus.CONFIRMED, WORK_LIST_SIZE)
        trail = audit_trails(session, cases)
        links = {c.id: repeat_links(request, session, c) for c in cases}
    return render(request, "review.html", {
        "items": [{**_work_item(request, c, trail[c.id]), "case": c, "links": links[c.id]} for c in cases],
        "messages": _notice(request), "notice_case": request.query_params.get("case", ""),
    })


@router.get("/tasks", response_class=HTMLResponse, name="tasks")
def tasks_page(request: Request) -> Response:
    """Open supervision orders (督办) pinned first; then approved cases to dispatch, dispatched ones waiting for
    feedback, rectified ones to close, each by due time. A field officer sees their teams' cases only."""
    state = state_of(request)
    principal = principal_of(request)
    groups = {}
    with state.session_factory() as session:
        pinned = search_cases(session, scoped(state, principal, CaseFilter(sort="due", supervised=True)),
                              limit=WORK_LIST_SIZE).items
        orders = open_supervisions(session, [c.id for c in pinned])
        pinned.sort(key=lambda c: task_sort_key(c.number, c.due_at, [as_order(o, c.number) for o in orders[c.id]]))
        trail = audit_trails(session, pinned)
        supervised = [{**_work_item(request, c, trail[c.id]), "orders": orders[c.id]} for c in pinned]
        for status in (CaseStatus.APPROVED, CaseStatus.DISPATCHED, CaseStatus.RECTIFIED):
            flt = scoped(state, principal, CaseFilter(statuses=(status,), sort="due"))
            cases = search_cases(session, flt, limit=WORK_LIST_SIZE).items
            trail = audit_trails(session, cases)
            groups[status.value] = [_work_item(request, c, trail[c.id]) for c in cases]
    return render(request, "tasks.html", {
        "supervised": supervised, "team_names": _team_names(state), "bureau_may": _bureau_may(principal, state),
        "groups": groups, "teams": state.teams, "max_upload_mb": state.max_upload_bytes / 1024 / 1024,
        "max_upload_bytes": state.max_upload_bytes,
        "messages": _notice(request), "notice_case": request.query_params.get("case", ""),
    })


def _bureau_may(principal: Principal | None, state: Any) -> dict[str, bool]:
    """Which bureau forms the case page offers ``principal`` (reassign needs an organisation)."""
    role = principal.role if principal is not None else ""
    return {action: role in {r.value for r in roles} and (action != "reassign" or state.organisation is not None)
            for action, roles in BUREAU_PERMISSIONS.items()}


def _team_names(state: Any) -> dict[str, str]:
    return {t.id: t.name for t in state.organisation.teams} if state.organisation is not None else {}


def case_response(request: Request, number: str, *, error: ActionError | None = None,
                  status_code: int = 200) -> Response:
    state = state_of(request)
    sel, _ = parse_filter(request.query_params, state.zone)
    with state.session_factory() as session:
        case = case_by_number(session, number)
        if case is None or not sees_case(state, principal_of(request), case):
            return error_page(request, 404, "case_not_found", f"no case {number}", number=number)
        audit = audit_trail(session, case)
        newer, older = neighbours(session, case, scoped(state, principal_of(request), sel.filter))
        orders = supervisions_of(session, case.id)
        links = repeat_links(request, session, case)
        recheck = recheck_panel(request, session, case, state.clock())
    carry = sel.query()
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
    if notice in NOTICES:
        messages.append(("ok", f"notice.{notice}"))
    model = case.violation.get("model") if isinstance(case.violation, dict) else None
    audit_rows = []
    for a in audit:
        audit_rows.append({"at": a.at, "actor": a.actor, "action": a.action, "before": a.before_status,
                           "after": a.after_status, "reason": a.detail.get("reason") if isinstance(a.detail, dict)
                           else None, **note_fields(request, case.number, a)})
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
        "team_names": _team_names(state),
        "due": _due_row(request, case),
        "supervisions": orders,
        "links": links,
        "bureau_may": _bureau_may(principal_of(request), state),
        "max_upload_bytes": state.max_upload_bytes,
        "max_upload_mb": state.max_upload_bytes / 1024 / 1024,
        "documents": state.documents is not None,
        "enforcement": _enforcement_panel(request, case),
        "messages": messages,
        "error_text": localized_error(request, error.key, error.fields) if error else "",
        "prev_url": case_url(request, newer) + carry if newer else None,
        "next_url": case_url(request, older) + carry if older else None,
        "back_url": f"{root_path(request)}/{carry}",
        "carry": carry,
        "model": model if isinstance(model, dict) else None,
        "recheck": recheck,
    }, status_code=status_code)


def _enforcement_panel(request: Request, case: Case) -> dict[str, Any] | None:
    from nonsite.console.enforcement import panel  # imports the API module, which imports this one

    return panel(request, case)


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
        await perform_upload(state, number, principal, state.actor_of(request), note=note, photos=uploads)
    except ActionError as exc:
        return _failed(request, number, exc)
    return _after(request, number, "rectify", back, "")


@router.post("/cases/{number}/reassign", name="case_reassign_form")
def reassign_form(request: Request, number: str, principal: Principal = Depends(authorize), team: str = Form(""),
                  reason: str = Form(""), f: str = Form("")) -> Response:
    """Give the case to another team of the organisation, with the reason."""
    state = state_of(request)
    try:
        bureau_action(state, principal, state.actor_of(request), "reassign", number, team=team, text=reason)
    except ActionError as exc:
        return _failed(request, number, exc)
    return _after(request, number, "reassign", "", _carry(f))


@router.post("/cases/{number}/supervise", name="case_supervise_form")
def supervise_form(request: Request, number: str, principal: Principal = Depends(authorize),
                   instruction: str = Form(""), new_deadline: str = Form(""), f: str = Form("")) -> Response:
    """Issue a supervision order (督办): the instruction and optionally a new deadline (city time)."""
    state = state_of(request)
    try:
        deadline = _local_instant(new_deadline, state.zone) if new_deadline.strip() else None
        bureau_action(state, principal, state.actor_of(request), "supervise", number, text=instruction,
                      deadline=deadline)
    except ActionError as exc:
        return _failed(request, number, exc)
    return _after(request, number, "supervise", "", _carry(f))


@router.post("/cases/{number}/supervisions/{order}/answer", name="supervision_answer_form")
def answer_form(request: Request, number: str, order: int, principal: Principal = Depends(authorize),
                answer: str = Form(""), back: str = Form(""), f: str = Form("")) -> Response:
    """The team's answer to a supervision order."""
    state = state_of(request)
    try:
        bureau_action(state, principal, state.actor_of(request), "answer_supervision", number, text=answer,
                      order=order)
    except ActionError as exc:
        return _failed(request, number, exc)
    return _after(request, number, "answer_supervision", back, _carry(f))


def decision_of(kind: str, amount: str | int | None, reason: str) -> dict[str, Any] | None:
    """The reviewer's decision from a form or the API (None when none was chosen); ActionError for a bad amount."""
    if not kind:
        if (str(amount or "").strip()) or reason.strip():
            raise ActionError(422, "bad_request", "choose the decision the amount or reason belongs to",
                              "error.bad_request", {"message": "decision"})
        return None
    text = str(amount if amount is not None else "").strip()
    if text and not text.isdigit():
        raise ActionError(422, "bad_request", f"the fine {text!r} is not a whole number of yuan", "error.bad_request",
                          {"message": f"{text!r}"})
    return {"kind": kind, "amount_yuan": int(text) if text else None, "reason": reason}


def _local_instant(value: str, zone: Any) -> datetime:
    """``2026-10-01T18:00`` on the city's clock (a datetime-local field) as UTC; ActionError when not a time."""
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise ActionError(422, "bad_request", f"{value!r} is not a time; use YYYY-MM-DDTHH:MM", "error.bad_request",
                          {"message": f"{value!r}: YYYY-MM-DDTHH:MM"}) from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=zone)).astimezone(UTC)


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
    decision: str = Form(""),
    amount_yuan: str = Form(""),
    decision_reason: str = Form(""),
) -> Response:
    """confirm | dismiss (reason) | approve (with the decision) | return (comment) | dispatch (team) | close."""
    state = state_of(request)
    if action not in FORM_ACTIONS:
        return error_page(request, 404, "unknown_action", f"no case action {action!r}", action=action)
    try:
        perform(state, number, action, principal, state.actor_of(request), reason=reason or None, note=note,
                team=team or None, decision=decision_of(decision, amount_yuan, decision_reason))
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
    if case is None or not sees_case(state, principal_of(request), case):
        return error_page(request, 404, "case_not_found", f"no case {number}", number=number)
    if m is None:
        return error_page(request, 404, "not_found", f"no photo {name!r} in the feedback of case {number}")
    try:
        data, _ = read_verified(state.store, feedback_key(case.number, m.group(1)), m.group(1),
                                f"feedback photo {name} of case {case.number}")
    except EvidenceAltered as exc:
        return error_page(request, 409, "evidence_altered", str(exc), name=name, number=case.number)
    except KeyError:
        return error_page(request, 404, "not_found", f"no photo {name!r} in the feedback of case {number}")
    except StoreError:
        return error_page(request, 503, "store_unavailable", "the evidence store cannot be read right now")
    return Response(data, media_type="image/jpeg", headers={
        "Cache-Control": "private, max-age=3600", "ETag": f'"{m.group(1)}"',
        "Content-Disposition": f'inline; filename="{name}"',
    })


__all__ = ["case_response", "queue_row", "router"]
