"""The JSON API under ``/api`` (errors: ``{"error": {"code", "message"}}`` with a 4xx status)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from nonsite.cases import (
    DISMISS_REASONS,
    Case,
    CaseNotFound,
    InvalidReason,
    InvalidTransition,
    WorkflowError,
    allowed_actions,
    case_by_number,
    confirm,
    dismiss,
)
from nonsite.console.views import (
    audit_of,
    case_url,
    evidence_files,
    evidence_url,
    list_cases,
    parse_status,
    seal_status,
    state_of,
    thumbnail_url,
)

router = APIRouter(prefix="/api", tags=["cases"])


class ErrorBody(BaseModel):
    code: str = Field(description="Machine-readable error code, e.g. not_found, invalid_transition.")
    message: str = Field(description="What is wrong and how to fix it, in one sentence.")


class ErrorOut(BaseModel):
    error: ErrorBody


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
    started_at: datetime
    confirmed_at: datetime
    dwell_s: float
    confidence: float
    dismiss_reason: str | None
    dismiss_note: str
    created_at: datetime
    updated_at: datetime
    allowed_actions: list[str]
    url: str = Field(description="The case page in the console.")
    thumbnail_url: str | None


class CaseDetailOut(CaseOut):
    track_ids: list[int]
    evidence: list[EvidenceOut]
    seal: SealOut
    audit: list[AuditOut]
    model: dict[str, Any] | None
    rule_config_hash: str | None


class CaseListOut(BaseModel):
    total: int
    limit: int
    offset: int
    items: list[CaseOut]


class ConfirmIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    note: str = Field("", max_length=2000, description="Optional comment for the audit trail.")


class DismissIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(description=f"One of: {', '.join(DISMISS_REASONS)}.")
    note: str = Field("", max_length=2000, description="Free text; required when reason is 'other'.")


_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorOut, "description": "Unknown case"},
    409: {"model": ErrorOut, "description": "The action does not apply in the case's status"},
    422: {"model": ErrorOut, "description": "Bad request (filter, body, reason)"},
}


def _err(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


def _case_out(request: Request, case: Case) -> dict[str, Any]:
    return {
        "number": case.number, "event_id": case.event_id, "type": case.type, "status": case.status.value,
        "camera_id": case.camera_id, "camera_name": case.camera_name, "zone_id": case.zone_id,
        "zone_name": case.zone_name, "address": case.address, "lat": case.lat, "lon": case.lon,
        "started_at": case.started_at, "confirmed_at": case.confirmed_at, "dwell_s": case.dwell_s,
        "confidence": case.confidence, "dismiss_reason": case.dismiss_reason, "dismiss_note": case.dismiss_note,
        "created_at": case.created_at, "updated_at": case.updated_at,
        "allowed_actions": [a.value for a in allowed_actions(case.status)],
        "url": case_url(request, case.number), "thumbnail_url": thumbnail_url(request, case),
    }


@router.get("/cases", response_model=CaseListOut, responses=_ERRORS)
def api_list_cases(
    request: Request,
    status: str = Query("", description="Only cases in this status."),
    type_: str = Query("", alias="type", description="Only cases of this violation type."),
    limit: int = Query(50, ge=1, le=500),
    offset: int = Query(0, ge=0),
) -> Any:
    """Cases, newest first (by the time the violation was confirmed)."""
    try:
        status_filter = parse_status(status)
    except ValueError as exc:
        return _err(422, "bad_filter", str(exc))
    with state_of(request).session_factory() as session:
        cases, total = list_cases(session, status_filter, type_ or None, limit, offset)
    return {"total": total, "limit": limit, "offset": offset, "items": [_case_out(request, c) for c in cases]}


@router.get("/cases/{number}", response_model=CaseDetailOut, responses=_ERRORS)
def api_get_case(request: Request, number: str) -> Any:
    """One case with its evidence, the seal check and the audit trail."""
    state = state_of(request)
    with state.session_factory() as session:
        case = case_by_number(session, number)
        if case is None:
            return _err(404, "not_found", f"no case {number}; list cases with GET /api/cases")
        audit = audit_of(session, case)
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
    return {
        **_case_out(request, case),
        "track_ids": case.track_ids,
        "evidence": evidence,
        "seal": {
            "manifest_key": case.manifest_key, "manifest_sha256": case.manifest_sha256,
            "problems_at_sealing": case.seal_problems, "checked": seal.checked, "ok": seal.ok,
            "problems": seal.problems, "error": seal.error,
        },
        "audit": [
            {"at": a.at, "actor": a.actor, "action": a.action, "before_status": a.before_status,
             "after_status": a.after_status, "detail": a.detail}
            for a in audit
        ],
        "model": violation.get("model"),
        "rule_config_hash": violation.get("rule_config_hash"),
    }


def _act(request: Request, number: str, action: str, **kwargs: Any) -> Any:
    state = state_of(request)
    actor = state.actor_of(request)
    try:
        if action == "confirm":
            case = confirm(state.session_factory, number, actor, **kwargs)
        else:
            case = dismiss(state.session_factory, number, actor, **kwargs)
    except CaseNotFound:
        return _err(404, "not_found", f"no case {number}; list cases with GET /api/cases")
    except InvalidReason as exc:
        return _err(422, "invalid_reason", str(exc))
    except InvalidTransition as exc:
        return _err(409, "invalid_transition", str(exc))
    except WorkflowError as exc:
        return _err(422, "bad_request", str(exc))
    return _case_out(request, case)


@router.post("/cases/{number}/confirm", response_model=CaseOut, responses=_ERRORS)
def api_confirm(request: Request, number: str, body: ConfirmIn | None = None) -> Any:
    """draft | returned → confirmed."""
    return _act(request, number, "confirm", note=body.note if body else "")


@router.post("/cases/{number}/dismiss", response_model=CaseOut, responses=_ERRORS)
def api_dismiss(request: Request, number: str, body: DismissIn) -> Any:
    """draft | confirmed | returned → dismissed, with a reason (and a note; required for 'other')."""
    return _act(request, number, "dismiss", reason=body.reason, note=body.note)
