"""The city platform hand-off in the console: the platform's status callbacks, the dead letters for admins.

::

    POST /api/platform/{name}/callback   the platform's signed status change (public: the HMAC over timestamp and
                                         body is the credential, with its replay window; integration/inbound.py)
    GET  /platform/evidence/{key}?exp=&sig=   one evidence file of a case, for the platform's case viewer (public:
                                         the expiring link signed by integration.signing.LinkSigner is the
                                         credential; a local evidence store with integration.platform.link_base_url)
    GET  /admin/platform                 admin: outbox counts, dead letters with the platform's answer, requeue;
                                         the notification channels (kind, masked URL, notices, counts, last
                                         error, last test)
    POST /admin/platform/requeue         admin (CSRF): requeue the chosen dead letters (or all)
    POST /admin/notifications/test       admin (CSRF): a test message to each notification channel (or one),
                                         through the running notifier; the results on /admin/platform
    GET  /api/platform/dead-letters      admin, scope platform:admin: the same as JSON
    POST /api/platform/requeue           admin, scope platform:admin: {"ids": [...]} or {"all": true}

The hub (:class:`~nonsite.integration.hub.PlatformHub`) is built by the process that serves the console when
``integration.platform.enabled``; without one every platform route answers 404. The notifications
(:class:`~nonsite.integration.service.NotificationService`, ``app.state.notifications``) are built by the same
process when ``integration.notifications.enabled``; /admin/platform shows whichever of the two is configured.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import anyio.to_thread
from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select

from nonsite.bus.events import check_store_key
from nonsite.cases import Case
from nonsite.console.api import _ERRORS, err
from nonsite.console.auth import Principal, authorize
from nonsite.console.render import error_page, render
from nonsite.console.views import EvidenceAltered, evidence_files, read_verified, root_path, state_of
from nonsite.evidence.store import StoreError
from nonsite.integration.inbound import MAX_CALLBACK_BYTES
from nonsite.integration.signing import verify_link

log = logging.getLogger(__name__)

public = APIRouter(include_in_schema=False)
pages = APIRouter(include_in_schema=False, dependencies=[Depends(authorize)])
api = APIRouter(prefix="/api", dependencies=[Depends(authorize)], tags=["platform"])
DEAD_LETTERS_SHOWN = 200


def hub_of(request: Request) -> Any:
    return getattr(state_of(request), "platform", None)


@public.post("/api/platform/{name}/callback", name="platform_callback")
async def platform_callback(request: Request, name: str) -> Response:
    """A status change from the platform (accepted, dispatched, closed, ...), applied to the case and audited."""
    hub = hub_of(request)
    if hub is None:
        return JSONResponse({"error": {"code": "not_found", "message": "no city platform is configured here"}}, 404)
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_CALLBACK_BYTES:
            return JSONResponse({"error": {"code": "too_large", "message": f"callback body larger than "
                                           f"{MAX_CALLBACK_BYTES} bytes"}}, 413)
    headers = dict(request.headers)
    status, answer = await anyio.to_thread.run_sync(lambda: hub.callback(name, headers, body))
    return JSONResponse(answer, status)


def _link_error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status,
                        headers={"Cache-Control": "no-store"})


@public.get("/platform/evidence/{key:path}", name="platform_evidence")
def platform_evidence(request: Request, key: str) -> Response:
    """One evidence file named by a signed, expiring link (no login, no cookie: the link is the credential).

    403 for a link whose signature does not verify (tampered, made for another key, or by another secret) or that
    has expired; 404 for a key that is not a store key, or not a file of the evidence of a case (the same answer
    for both); the bytes are hashed and checked against the sealed package before they are served (409 when they
    differ)."""
    hub = hub_of(request)
    if hub is None or not hub.link_secret:
        return _link_error(404, "not_found", "no signed evidence links are served here")
    q = request.query_params
    exp, sig = q.get("exp", ""), q.get("sig", "")
    if len(q.getlist("exp")) > 1 or len(q.getlist("sig")) > 1 or not verify_link(hub.link_secret, key, exp, sig):
        return _link_error(403, "forbidden", "this evidence link is not valid (expired, or not signed for this file)")
    try:
        parts = check_store_key(key).split("/")
    except ValueError:
        parts = []
    state = state_of(request)
    case = None
    if len(parts) == 3 and parts[0] == "events":  # events/<event id>/<file>: a file of one sealed package
        with state.session_factory() as session:
            case = session.scalar(select(Case).where(Case.event_id == parts[1]))
    file = evidence_files(case).get(parts[2]) if case is not None else None
    if case is None or file is None or file.key != key:
        return _link_error(404, "not_found", "no such evidence file")
    try:
        data, sha256 = read_verified(state.store, file.key, file.sha256, f"{file.name} of case {case.number}")
    except EvidenceAltered:
        return _link_error(409, "evidence_altered", "the file no longer matches its sealed package; not served")
    except KeyError:
        return _link_error(404, "not_found", "no such evidence file")
    except StoreError as exc:
        log.warning("platform %s: evidence store error for %s: %s", hub.name, file.key, exc)
        return _link_error(503, "store_unavailable", "the evidence store cannot be read right now; retry")
    log.info("platform %s: evidence link served %s of case %s to %s", hub.name, file.key, case.number,
             request.client.host if request.client else "?")
    return Response(data, media_type=file.content_type or "application/octet-stream", headers={
        "Cache-Control": "private, max-age=60", "ETag": f'"{sha256}"',
        "Content-Disposition": f'inline; filename="{file.name}"'})


def _rows(hub: Any) -> list[dict[str, Any]]:
    def when(ts: float | None) -> datetime | None:
        return datetime.fromtimestamp(ts, UTC) if ts else None

    return [{"id": d.id, "key": d.idempotency_key, "case_number": d.case_number, "attempts": d.attempts,
             "status": d.last_status, "error": d.last_error, "since": when(d.created_at)}
            for d in hub.connector.dead_letters(DEAD_LETTERS_SHOWN)]


def notifications_of(request: Request) -> Any:
    """The running :class:`~nonsite.integration.service.NotificationService` (None: notifications off)."""
    return getattr(request.app.state, "notifications", None)


def _channels(service: Any) -> list[dict[str, Any]]:
    def when(ts: float | None) -> datetime | None:
        return datetime.fromtimestamp(ts, UTC) if ts else None

    return [{"id": c.id, "kind": c.kind, "url": c.url, "events": c.events, "sent": c.stats.sent,
             "failed": c.stats.failed_attempts, "given_up": c.stats.given_up, "last_error": c.stats.last_error,
             "last_error_at": when(c.stats.last_error_at), "last_test": c.last_test,
             "last_test_at": when(c.last_test.at) if c.last_test else None}
            for c in service.notifier.overview()]


@pages.get("/admin/platform", name="admin_platform")
def admin_platform(request: Request) -> Response:
    """Outbox counts and the dead letters (the reports the platform refused, with its message), to requeue; the
    notification channels with their counts, last error and last test."""
    hub, service = hub_of(request), notifications_of(request)
    if hub is None and service is None:
        return error_page(request, 404, "not_found", "no city platform or notification channel is configured in "
                          "this console")
    q = request.query_params
    requeued, tested = q.get("requeued", ""), q.get("tested", "")
    return render(request, "admin_platform.html", {
        "platform": hub.name if hub is not None else None,
        "counts": hub.connector.counts() if hub is not None else {},
        "rows": _rows(hub) if hub is not None else [], "running": hub is not None and hub.running,
        "requeued": int(requeued) if requeued.isdigit() else None,
        "channels": _channels(service) if service is not None else None,
        "tested": int(tested) if tested.isdigit() else None,
    })


@pages.post("/admin/notifications/test", name="admin_notifications_test")
def admin_notifications_test(request: Request, principal: Principal = Depends(authorize),
                             channel: str = Form("")) -> Response:
    """Send a test message to each notification channel (or to ``channel``) now, through the running notifier
    (`nonsite notify test` from the browser); the per-channel results show on /admin/platform."""
    service = notifications_of(request)
    if service is None:
        return error_page(request, 404, "not_found", "no notification channel is configured in this console")
    if channel and channel not in service.notifier.channels:
        return error_page(request, 404, "not_found", "no such notification channel")
    results = service.notifier.test([channel] if channel else None, by=principal.username)
    log.info("notifications: %s sent a test message to %s: %s", principal.username, ", ".join(results),
             ", ".join(f"{c} {'sent' if r.ok else 'failed'}" for c, r in results.items()))
    return RedirectResponse(f"{root_path(request)}/admin/platform?tested={len(results)}#notifications", 303)


@pages.post("/admin/platform/requeue", name="admin_platform_requeue")
def admin_platform_requeue(request: Request, principal: Principal = Depends(authorize), ids: list[int] = Form([]),
                           all: str = Form("")) -> Response:  # noqa: A002 - the form field's name
    """Send the chosen dead letters (or all of them) again."""
    hub = hub_of(request)
    if hub is None:
        return error_page(request, 404, "not_found", "no city platform is configured in this console")
    n = hub.connector.requeue(None if all else ids) if (all or ids) else 0
    log.info("platform %s: %s requeued %d dead report(s)", hub.name, principal.username, n)
    return RedirectResponse(f"{root_path(request)}/admin/platform?requeued={n}", 303)


class DeadLetterOut(BaseModel):
    id: int
    key: str = Field(description="The report's idempotency key (<case number>:<revision>).")
    case_number: str
    attempts: int
    status: int | None = Field(description="The platform's last HTTP status (null: no answer).")
    error: str = Field(description="The platform's message, or why it was not sent.")
    since: datetime | None


class DeadLettersOut(BaseModel):
    platform: str
    counts: dict[str, int] = Field(description="Reports by state: pending, delivered, dead.")
    dead_letters: list[DeadLetterOut]


class RequeueIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ids: list[int] = Field(default_factory=list, max_length=1000, description="Dead letters to send again.")
    all: bool = Field(False, description="Send every dead letter again.")


class RequeueOut(BaseModel):
    requeued: int


def _no_platform(request: Request) -> JSONResponse:
    return err(request, 404, "not_found", "no city platform is configured in this console (integration.platform)")


@api.get("/platform/dead-letters", name="api_platform_dead_letters", response_model=DeadLettersOut,
         responses=_ERRORS)
def api_dead_letters(request: Request) -> Any:
    """The city platform's outbox counts and its dead letters (newest first)."""
    hub = hub_of(request)
    if hub is None:
        return _no_platform(request)
    return {"platform": hub.name, "counts": hub.connector.counts(), "dead_letters": _rows(hub)}


@api.post("/platform/requeue", name="api_platform_requeue", response_model=RequeueOut, responses=_ERRORS)
def api_requeue(request: Request, body: RequeueIn, principal: Principal = Depends(authorize)) -> Any:
    """Send dead letters again (``ids``, or ``all``), after the cause was fixed."""
    hub = hub_of(request)
    if hub is None:
        return _no_platform(request)
    if not body.all and not body.ids:
        return err(request, 422, "bad_request", "name the dead letters to requeue (ids) or set all: true",
                   "error.bad_request", {"message": "ids"})
    n = hub.connector.requeue(None if body.all else body.ids)
    log.info("platform %s: %s requeued %d dead report(s)", hub.name, principal.username, n)
    return {"requeued": n}


__all__ = ["api", "pages", "public"]
