"""The field officers' mobile app (外勤, issue 15): an installable web app under ``/m/`` served by the console.

Pages (a field officer sees their teams' cases only; an admin every case)::

    GET  /m/                        my tasks: 督办 pinned first, then by deadline; place, map link, stills
    GET  /m/cases/{number}          one task: stills, the place (geo: link), arrival check-in, result + photos
    GET  /m/sw.js                   the service worker (public, no data: offline shell, queue flush on sync)
    GET  /m/manifest.webmanifest    the PWA manifest (public)

JSON API (the page's queue sends each record with an idempotency key; a copy sent again is stored once)::

    POST /api/cases/{number}/field/checkin   {"key", "lat", "lon", "accuracy_m", "device_at", "position_error"}
    POST /api/cases/{number}/field/report    multipart: key, result, note, device_at, before (photos), after (photos)

Photos go through the same checks as the console's feedback (:mod:`nonsite.cases.attachments`: type by their
bytes, pixels, size, re-encoded as JPEG) and are stored by their sha256, which the audit entry records
(:mod:`nonsite.cases.field`). A ``rectified`` result applies the workflow's rectify.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import anyio.to_thread
from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from nonsite.cases import Case, CaseStatus, case_by_number
from nonsite.cases.attachments import AttachmentError, PreparedPhoto, prepare_photo, store_photo
from nonsite.cases.bureau import as_order, open_supervisions
from nonsite.cases.field import (
    CHECKIN,
    REPORT_ACTIONS,
    RESULTS,
    FieldRecord,
    field_records,
    find_record,
    record_checkin,
    record_report,
    valid_key,
)
from nonsite.cases.queries import CaseFilter, search_cases
from nonsite.cases.reminders import task_sort_key
from nonsite.cases.workflow import Action, InvalidTransition, WorkflowError
from nonsite.console.actions import MAX_NOTE, MAX_PHOTOS, ActionError, photo_error, upload_limiter
from nonsite.console.api import err
from nonsite.console.auth import Principal, authorize, principal_of
from nonsite.console.pages import feedback_url, team_name
from nonsite.console.render import render
from nonsite.console.views import (
    ConsoleState,
    due_fields,
    root_path,
    scoped,
    sees_case,
    state_of,
    url_by_role,
)
from nonsite.evidence.store import StoreError

log = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static" / "field"
TASK_LIST_SIZE = 200
#: The stills a task shows, in this order (those the package has).
STILL_ROLES: tuple[str, ...] = ("confirm_annotated", "onset_annotated", "closeup")

public = APIRouter(include_in_schema=False)
router = APIRouter(include_in_schema=False, dependencies=[Depends(authorize)])


# --- what a task shows ----------------------------------------------------------------------------------


def geo_link(case: Case) -> dict[str, str] | None:
    """The place as a ``geo:`` URI (RFC 5870: the phone's map app opens it, no online tiles here) and as plain
    coordinates; None when the camera has no configured location."""
    if case.lat is None or case.lon is None:
        return None
    coords = f"{case.lat:.6f},{case.lon:.6f}"
    label = quote(case.address or case.camera_name or case.number, safe="")
    return {"uri": f"geo:{coords}?q={coords}({label})", "text": f"{case.lat:.6f}, {case.lon:.6f}"}


def task_url(request: Request, number: str) -> str:
    return f"{root_path(request)}/m/cases/{quote(number, safe='')}"


def _task(request: Request, state: ConsoleState, case: Case, orders: list[Any]) -> dict[str, Any]:
    urls = url_by_role(request, case)
    due = due_fields(state, case)
    return {
        "number": case.number, "url": task_url(request, case.number), "type": case.type,
        "status": case.status.value, "address": case.address, "camera": case.camera_name or case.camera_id,
        "zone": case.zone_name or case.zone_id, "team_name": team_name(state, case.team),
        "due_at": case.due_at, "due_step": due["due_step"], "due_state": due["due_state"],
        "geo": geo_link(case), "still": urls.get("confirm_annotated") or urls.get("confirm"),
        "stills": [urls[r] for r in STILL_ROLES if r in urls], "orders": orders,
        "confirmed_at": case.confirmed_at,
    }


def _record_view(request: Request, number: str, entry: Any) -> dict[str, Any]:
    detail = entry.detail if isinstance(entry.detail, dict) else {}
    return {
        "action": entry.action, "at": entry.at, "actor": entry.actor, "result": detail.get("result"),
        "note": str(detail.get("note", "") or ""), "distance_m": detail.get("distance_m"),
        "accuracy_m": detail.get("accuracy_m"), "lat": detail.get("lat"), "lon": detail.get("lon"),
        "position_error": detail.get("position_error"),
        "before": [feedback_url(request, number, s) for s in detail.get("before", []) if isinstance(s, str)],
        "after": [feedback_url(request, number, s) for s in detail.get("after", []) if isinstance(s, str)],
        "checkin": entry.action == CHECKIN,
    }


@router.get("/m/", name="field_tasks")
def field_tasks(request: Request) -> Response:
    """My tasks: the cases dispatched to my teams, 督办 first (by the order's deadline), then by due time."""
    state = state_of(request)
    principal = principal_of(request)
    with state.session_factory() as session:
        flt = scoped(state, principal, CaseFilter(statuses=(CaseStatus.DISPATCHED,), sort="due"))
        cases = search_cases(session, flt, limit=TASK_LIST_SIZE).items
        orders = open_supervisions(session, [c.id for c in cases])
    pinned = [c for c in cases if orders.get(c.id)]
    pinned.sort(key=lambda c: task_sort_key(c.number, c.due_at, [as_order(o, c.number) for o in orders[c.id]]))
    rest = [c for c in cases if not orders.get(c.id)]
    return render(request, "field_tasks.html", {
        "pinned": [_task(request, state, c, orders[c.id]) for c in pinned],
        "tasks": [_task(request, state, c, []) for c in rest],
    })


@router.get("/m/cases/{number}", name="field_case")
def field_case(request: Request, number: str) -> Response:
    """One task: stills, place and map link, check-in, the result with before/after photos and a note."""
    state = state_of(request)
    principal = principal_of(request)
    with state.session_factory() as session:
        case = case_by_number(session, number)
        if case is None or not sees_case(state, principal, case):
            return render(request, "field_missing.html", {"number": number}, status_code=404)
        orders = open_supervisions(session, [case.id]).get(case.id, [])
        records = [_record_view(request, case.number, e) for e in field_records(session, case.id)]
    return render(request, "field_case.html", {
        "task": _task(request, state, case, orders), "records": records, "results": RESULTS,
        "open": case.status is CaseStatus.DISPATCHED, "max_photos": MAX_PHOTOS,
        "max_upload_bytes": state.max_upload_bytes, "max_note": MAX_NOTE,
        "checkin_url": f"{root_path(request)}/api/cases/{quote(case.number, safe='')}/field/checkin",
        "report_url": f"{root_path(request)}/api/cases/{quote(case.number, safe='')}/field/report",
        "recheck_state": case.recheck_state,
    })


# --- the records ----------------------------------------------------------------------------------------


class CheckinIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key: str = Field(description="Idempotency key made by the phone (8-64 of A-Z a-z 0-9 - _; a UUID).")
    lat: float | None = Field(None, description="WGS84 latitude from the phone (navigator.geolocation).")
    lon: float | None = Field(None, description="WGS84 longitude.")
    accuracy_m: float | None = Field(None, description="The phone's stated accuracy in metres.")
    device_at: datetime | None = Field(None, description="The phone's clock when the officer checked in.")
    position_error: str = Field("", max_length=200, description="Why there is no position (denied, timeout).")


def _out(request: Request, record: FieldRecord) -> dict[str, Any]:
    detail = record.detail
    return {
        "duplicate": not record.created, "number": record.case_number, "status": record.status,
        "action": record.action, "at": record.at.isoformat(), "actor": record.actor,
        "key": detail.get("idempotency_key"), "result": detail.get("result"),
        "distance_m": detail.get("distance_m"), "photos": record.photos,
        "task_url": task_url(request, record.case_number),
    }


def _not_found(request: Request, number: str) -> JSONResponse:
    return err(request, 404, "not_found", f"no case {number} among your tasks", "error.case_not_found",
               {"number": number})


def _visible(state: ConsoleState, principal: Principal, number: str) -> Case | None:
    with state.session_factory() as session:
        case = case_by_number(session, number)
    return case if case is not None and sees_case(state, principal, case) else None


def _workflow_error(request: Request, exc: Exception) -> JSONResponse:
    if isinstance(exc, InvalidTransition):
        return err(request, 409, "invalid_transition", str(exc), "error.invalid_transition",
                   {"action": exc.action.value, "status": exc.status.value})
    return err(request, 422, "bad_request", str(exc), "error.bad_request", {"message": str(exc)})


@router.post("/api/cases/{number}/field/checkin", name="api_field_checkin")
def api_field_checkin(request: Request, number: str, body: CheckinIn,
                      principal: Principal = Depends(authorize)) -> Response:
    """Arrival check-in: the phone's position and clock; the server's time is the entry's time."""
    state = state_of(request)
    if _visible(state, principal, number) is None:
        return _not_found(request, number)
    try:
        record = record_checkin(
            state.session_factory, number, state.actor_of(request), key=body.key, lat=body.lat, lon=body.lon,
            accuracy_m=body.accuracy_m, device_at=body.device_at, position_error=body.position_error,
            role=principal.role, person=principal.person, now=state.clock())
    except LookupError:
        return _not_found(request, number)
    except WorkflowError as exc:
        return _workflow_error(request, exc)
    return JSONResponse(_out(request, record), status_code=200 if not record.created else 201)


def _prepare_all(state: ConsoleState, before: list[tuple[str, bytes]],
                 after: list[tuple[str, bytes]]) -> tuple[list[PreparedPhoto], list[PreparedPhoto]]:
    """Every photo checked before any is stored (a refused one leaves nothing behind)."""
    def prep(items: list[tuple[str, bytes]]) -> list[PreparedPhoto]:
        return [prepare_photo(data, name, max_bytes=state.max_upload_bytes) for name, data in items]

    return prep(before), prep(after)


@router.post("/api/cases/{number}/field/report", name="api_field_report")
async def api_field_report(
    request: Request,
    number: str,
    principal: Principal = Depends(authorize),
    key: str = Form(""),
    result: str = Form(""),
    note: str = Form(""),
    device_at: str = Form(""),
    before: list[UploadFile] = File(default_factory=list),
    after: list[UploadFile] = File(default_factory=list),
) -> Response:
    """The result on the spot (rectified | not_found | offender_absent | follow_up), a note and before/after
    photos; rectified moves the case on (dispatched → rectified), the others are recorded and audited."""
    state = state_of(request)
    befores = [(p.filename or "", await p.read()) for p in before]
    afters = [(p.filename or "", await p.read()) for p in after]
    befores = [(n, d) for n, d in befores if d or n]
    afters = [(n, d) for n, d in afters if d or n]

    def run() -> Response:
        return _report(request, state, principal, number, key=key, result=result, note=note, device_at=device_at,
                       before=befores, after=afters)

    return await anyio.to_thread.run_sync(run, limiter=upload_limiter())


def _report(request: Request, state: ConsoleState, principal: Principal, number: str, *, key: str, result: str,
            note: str, device_at: str, before: list[tuple[str, bytes]], after: list[tuple[str, bytes]]) -> Response:
    case = _visible(state, principal, number)
    if case is None:
        return _not_found(request, number)
    if not valid_key(key):
        return err(request, 422, "bad_request", "the idempotency key must be 8-64 letters, digits, '-' or '_'",
                   "error.bad_request", {"message": "key"})
    if result not in RESULTS:
        return err(request, 422, "bad_request", f"result {result!r} is not one of {', '.join(RESULTS)}",
                   "error.bad_request", {"message": f"result: {', '.join(RESULTS)}"})
    note = note.strip()
    if len(note) > MAX_NOTE:
        return err(request, 422, "bad_request", f"the note is {len(note)} characters; at most {MAX_NOTE}",
                   "error.note_too_long", {"max": MAX_NOTE})
    if len(before) + len(after) > MAX_PHOTOS:
        return err(request, 422, "too_many_photos", f"{len(before) + len(after)} photos sent; at most "
                   f"{MAX_PHOTOS} per report", "error.too_many_photos", {"max": MAX_PHOTOS})
    try:
        device = datetime.fromisoformat(device_at.replace("Z", "+00:00")) if device_at.strip() else None
        if device is not None and device.tzinfo is None:
            raise ValueError
    except ValueError:
        return err(request, 422, "bad_request", f"device_at {device_at!r} is not an ISO time with its offset",
                   "error.bad_request", {"message": "device_at"})
    with state.session_factory() as session:  # a copy already stored: answer at once, touch no photo
        found = find_record(session, case.id, key, REPORT_ACTIONS)
        if found is not None:
            current = session.get(Case, case.id)
            assert current is not None
            return JSONResponse(_out(request, FieldRecord(
                current.number, current.status.value, found.action, found.at, found.actor, dict(found.detail or {}),
                list(found.photos or []), created=False)))
    if case.status is not CaseStatus.DISPATCHED:
        return _workflow_error(request, InvalidTransition(case.number, case.status, Action.RECTIFY))
    try:
        prepared_before, prepared_after = _prepare_all(state, before, after)
    except AttachmentError as exc:
        e = photo_error(exc, state.max_upload_bytes)
        return err(request, e.status, e.code, e.message, e.key, e.fields)
    try:
        stored_before = [store_photo(state.store, case.number, p) for p in prepared_before]
        stored_after = [store_photo(state.store, case.number, p) for p in prepared_after]
    except (StoreError, OSError) as exc:
        log.warning("cannot store a field photo of case %s: %s", case.number, exc)
        e = ActionError(503, "store_unavailable", "the evidence store cannot be written right now; the phone will "
                        "send it again", "error.store_unavailable")
        return err(request, e.status, e.code, e.message, e.key)
    try:
        record = record_report(
            state.session_factory, case.number, state.actor_of(request), key=key, result=result, note=note,
            before=stored_before, after=stored_after, device_at=device, role=principal.role,
            person=principal.person, now=state.clock(), time_limits=state.time_limits, timezone=state.zone.key,
            recheck=state.recheck)
    except LookupError:
        return _not_found(request, number)
    except WorkflowError as exc:
        return _workflow_error(request, exc)
    return JSONResponse(_out(request, record), status_code=201 if record.created else 200)


# --- the installable app: service worker and manifest (public: no data in them) --------------------------


@public.get("/m/sw.js", name="field_sw")
def field_sw(request: Request) -> Response:
    """The service worker, from this origin at ``/m/`` (its scope is ``/m/``)."""
    script = (STATIC / "sw.js").read_text(encoding="utf-8").replace("__ROOT__", json.dumps(root_path(request)))
    return Response(script, media_type="text/javascript", headers={"Cache-Control": "no-cache"})


@public.get("/m/manifest.webmanifest", name="field_manifest")
def field_manifest(request: Request) -> Response:
    u = root_path(request)
    manifest = {
        "name": "非现场执法 · 外勤", "short_name": "外勤", "lang": "zh-CN",
        "description": "执法队员的任务、到达签到、整改照片与结果（离线可用）",
        "start_url": f"{u}/m/", "scope": f"{u}/m/", "display": "standalone",
        "background_color": "#f4f5f7", "theme_color": "#14213d",
        "icons": [{"src": f"{u}/static/field/icon.svg", "sizes": "any", "type": "image/svg+xml",
                   "purpose": "any"},
                  {"src": f"{u}/static/field/icon-192.png", "sizes": "192x192", "type": "image/png"},
                  {"src": f"{u}/static/field/icon-512.png", "sizes": "512x512", "type": "image/png"}],
    }
    return Response(json.dumps(manifest, ensure_ascii=False), media_type="application/manifest+json",
                    headers={"Cache-Control": "no-cache"})


__all__ = ["geo_link", "public", "router"]
