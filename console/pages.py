"""Server-rendered pages: the alert queue and the case page (Jinja2, autoescaped, no CDN)."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader, StrictUndefined

from nonsite.cases import (
    DISMISS_REASONS,
    Action,
    CaseNotFound,
    InvalidReason,
    InvalidTransition,
    allowed_actions,
    case_by_number,
    confirm,
    dismiss,
)
from nonsite.console.i18n import HTML_LANG, LANGUAGES, Translator, local_time
from nonsite.console.views import (
    PAGE_SIZE,
    STILL_PAIRS,
    ConsoleState,
    audit_of,
    case_url,
    dwell_parts,
    evidence_files,
    evidence_url,
    known_types,
    list_cases,
    neighbours,
    parse_status,
    root_path,
    seal_status,
    state_of,
    status_counts,
    status_values,
    thumbnail_url,
    url_by_role,
)

LANG_COOKIE = "nonsite_lang"
_COOKIE_MAX_AGE = 365 * 24 * 3600

router = APIRouter(include_in_schema=False)

_env = Environment(
    loader=FileSystemLoader(Path(__file__).resolve().parent / "templates"),
    autoescape=True,
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
templates = Jinja2Templates(env=_env)


def resolve_lang(request: Request, state: ConsoleState) -> tuple[str, bool]:
    """The page language and whether it was chosen just now (``?lang=``: remember it in a cookie)."""
    asked = request.query_params.get("lang")
    if asked in LANGUAGES:
        return asked, True
    cookie = request.cookies.get(LANG_COOKIE)
    if cookie in LANGUAGES:
        return cookie, False
    return state.language, False


def _path_with(request: Request, **params: str) -> str:
    query = dict(request.query_params)
    query.update(params)
    qs = urlencode(query)
    return f"{root_path(request)}{request.url.path}" + (f"?{qs}" if qs else "")


def render(request: Request, name: str, context: dict[str, Any], status_code: int = 200) -> Response:
    state = state_of(request)
    lang, sticky = resolve_lang(request, state)
    t = Translator(lang)

    def dwell(seconds: float) -> str:
        key, fields = dwell_parts(seconds)
        return t(key, **fields)

    other = t("lang.switch_code")
    ctx: dict[str, Any] = {
        "t": t,
        "lang": lang,
        "html_lang": HTML_LANG[lang],
        "title": state.title,
        "u": root_path(request),
        "fmt_time": partial(local_time, zone=state.zone),
        "dwell": dwell,
        "switch_url": _path_with(request, lang=other),
        "switch_lang": other,
        **context,
    }
    response = templates.TemplateResponse(request, name, ctx, status_code=status_code)
    if sticky:
        response.set_cookie(LANG_COOKIE, lang, max_age=_COOKIE_MAX_AGE, samesite="lax", httponly=True)
    return response


def error_page(request: Request, status_code: int, code: str, message: str, **fields: Any) -> Response:
    t = Translator(resolve_lang(request, state_of(request))[0])
    key = f"error.{code}"
    text = t(key, message=message, **fields) if t.has(key) else message
    return render(request, "error.html", {"status_code": status_code, "message": text}, status_code)


def _filter_query(status: str, type_: str) -> str:
    qs = urlencode({k: v for k, v in (("status", status), ("type", type_)) if v})
    return f"?{qs}" if qs else ""


@router.get("/", response_class=HTMLResponse)
def queue_page(
    request: Request,
    status: str = "",
    type_: str = Query("", alias="type"),
    page: int = Query(1, ge=1, le=100_000),
) -> Response:
    state = state_of(request)
    notice = None
    try:
        status_filter = parse_status(status)
    except ValueError:
        status_filter, notice = None, ("error.bad_filter", {"value": status})
        status = ""
    with state.session_factory() as session:
        cases, total = list_cases(session, status_filter, type_ or None, PAGE_SIZE, (page - 1) * PAGE_SIZE)
        counts = status_counts(session)
        types = known_types(session)
    carry = _filter_query(status, type_)
    rows = [
        {
            "number": c.number,
            "url": case_url(request, c.number) + carry,
            "type": c.type,
            "camera": c.camera_name or c.camera_id,
            "camera_id": c.camera_id,
            "zone": c.zone_name or c.zone_id,
            "confirmed_at": c.confirmed_at,
            "dwell_s": c.dwell_s,
            "status": c.status.value,
            "thumbnail": thumbnail_url(request, c),
        }
        for c in cases
    ]
    pages = max(1, -(-total // PAGE_SIZE))

    def page_url(n: int) -> str:
        return _path_with(request, page=str(n))

    return render(request, "queue.html", {
        "rows": rows, "total": total, "page": page, "pages": pages,
        "prev_page_url": page_url(page - 1) if page > 1 else None,
        "next_page_url": page_url(page + 1) if page < pages else None,
        "status": status, "type": type_, "statuses": status_values(), "counts": counts,
        "types": sorted({*types, "sidewalk_parking", "street_vending", "stray_dog"}),
        "notice": notice,
    })


@router.get("/cases/{number}", response_class=HTMLResponse)
def case_page(
    request: Request,
    number: str,
    status: str = "",
    type_: str = Query("", alias="type"),
    notice: str = "",
    error: str = "",
    action: str = "",
) -> Response:
    state = state_of(request)
    try:
        status_filter = parse_status(status)
    except ValueError:
        status_filter, status = None, ""
    with state.session_factory() as session:
        case = case_by_number(session, number)
        if case is None:
            return error_page(request, 404, "case_not_found", f"no case {number}", number=number)
        audit = audit_of(session, case)
        newer, older = neighbours(session, case, status_filter, type_ or None)
    carry = _filter_query(status, type_)
    urls = url_by_role(request, case)
    stills = [
        {"label": f"case.still_{name}", "annotated": urls.get(annotated) or urls.get(original),
         "original": urls.get(original) or urls.get(annotated)}
        for name, annotated, original in STILL_PAIRS
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
    actions = allowed_actions(case.status)
    messages: list[tuple[str, str]] = []
    if notice in ("confirm", "dismiss"):
        messages.append(("ok", f"notice.{notice}"))
    model = case.violation.get("model") if isinstance(case.violation, dict) else None
    return render(request, "case.html", {
        "case": case,
        "case_path": case_url(request, case.number),
        "status": case.status.value,
        "stills": stills,
        "closeup": urls.get("closeup"),
        "clip": urls.get("clip"),
        "clip_type": next((f.content_type for f in by_key.values() if f.role == "clip"), "video/mp4"),
        "manifest_url": urls.get("manifest"),
        "signature_url": urls.get("signature"),
        "evidence_rows": evidence_rows,
        "seal": seal_status(state, case),
        "audit": audit,
        "can_confirm": Action.CONFIRM in actions,
        "can_dismiss": Action.DISMISS in actions,
        "reasons": DISMISS_REASONS,
        "messages": messages,
        "error": error if error in ("invalid_transition", "invalid_reason") else "",
        "error_action": action if action in {a.value for a in Action} else "",
        "prev_url": case_url(request, newer) + carry if newer else None,
        "next_url": case_url(request, older) + carry if older else None,
        "back_url": f"{root_path(request)}/{carry}",
        "filter_status": status,
        "filter_type": type_,
        "model": model if isinstance(model, dict) else None,
    })


def _back(request: Request, number: str, f_status: str, f_type: str, **params: str) -> RedirectResponse:
    query = {k: v for k, v in (("status", f_status), ("type", f_type)) if v}
    query.update(params)
    return RedirectResponse(case_url(request, number) + "?" + urlencode(query), status_code=303)


@router.post("/cases/{number}/confirm")
def confirm_form(
    request: Request,
    number: str,
    note: str = Form(""),
    f_status: str = Form(""),
    f_type: str = Form(""),
) -> Response:
    state = state_of(request)
    try:
        confirm(state.session_factory, number, state.actor_of(request), note=note)
    except CaseNotFound:
        return error_page(request, 404, "case_not_found", f"no case {number}", number=number)
    except InvalidTransition:
        return _back(request, number, f_status, f_type, error="invalid_transition", action="confirm")
    return _back(request, number, f_status, f_type, notice="confirm")


@router.post("/cases/{number}/dismiss")
def dismiss_form(
    request: Request,
    number: str,
    reason: str = Form(""),
    note: str = Form(""),
    f_status: str = Form(""),
    f_type: str = Form(""),
) -> Response:
    state = state_of(request)
    try:
        dismiss(state.session_factory, number, state.actor_of(request), reason, note)
    except CaseNotFound:
        return error_page(request, 404, "case_not_found", f"no case {number}", number=number)
    except InvalidReason:
        return _back(request, number, f_status, f_type, error="invalid_reason")
    except InvalidTransition:
        return _back(request, number, f_status, f_type, error="invalid_transition", action="dismiss")
    return _back(request, number, f_status, f_type, notice="dismiss")


__all__ = ["LANG_COOKIE", "error_page", "render", "router"]
