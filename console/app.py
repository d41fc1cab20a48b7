"""The operators' console: server-rendered pages, the JSON API and the evidence files, in one FastAPI app.

Pages (Simplified Chinese by default, ``?lang=en`` switches and sticks in a cookie)::

    GET  /                          alert queue (filters: ?status=&type=&page=)
    GET  /cases/{number}            the case: stills, clip, facts, evidence, seal check, audit trail
    POST /cases/{number}/confirm    form; 303 back to the case
    POST /cases/{number}/dismiss    form (reason, note); 303 back to the case
    GET  /evidence/{event_id}/{name}  a file of the case's package (only the files the case lists)

API (JSON; errors are ``{"error": {"code", "message"}}`` with a 4xx status)::

    GET  /api/cases                 ?status=&type=&limit=&offset=
    GET  /api/cases/{number}
    POST /api/cases/{number}/confirm   {"note": ""}
    POST /api/cases/{number}/dismiss   {"reason": "false_positive|duplicate|not_a_violation|other", "note": ""}
    GET  /healthz
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from sqlalchemy import select, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from starlette.exceptions import HTTPException as StarletteHTTPException

from nonsite.cases import Case
from nonsite.console import api, pages
from nonsite.console.i18n import LANGUAGES
from nonsite.console.views import ConsoleState, evidence_files, state_of
from nonsite.evidence.store import Store, StoreError

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
DEFAULT_ACTOR = "console"

_SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; media-src 'self'; script-src 'self'; style-src 'self'; "
        "object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}
_UNSAFE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def _console_actor(_request: Request) -> str:
    return DEFAULT_ACTOR


def create_app(
    *,
    session_factory: sessionmaker[Session],
    store: Store,
    timezone: str = "Asia/Shanghai",
    language: str = "zh",
    public_key_pem: bytes | None = None,
    title: str = "nonsite",
    actor_of: Callable[[Request], str] = _console_actor,
) -> FastAPI:
    """The console over the case database ``session_factory`` and the evidence ``store``.

    ``timezone`` is the city's zone for every time shown; ``language`` the default (zh | en);
    ``public_key_pem`` (the sealer's ``signing.pub.pem``) turns on the seal check of each package;
    ``actor_of`` names the user behind a request in the audit trail ("console" until login exists).
    """
    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {timezone!r}; use an IANA name such as Asia/Shanghai") from None
    if language not in LANGUAGES:
        raise ValueError(f"unknown console language {language!r}; use one of {', '.join(LANGUAGES)}")

    app = FastAPI(title=f"{title} console", version="1", docs_url=None, redoc_url=None,
                  openapi_url="/api/openapi.json")
    app.state.console = ConsoleState(
        session_factory=session_factory, store=store, zone=zone, language=language,
        public_key_pem=public_key_pem, title=title, actor_of=actor_of,
    )
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    app.include_router(pages.router)
    app.include_router(api.router)

    @app.middleware("http")
    async def guard(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        if request.method in _UNSAFE_METHODS and _cross_site(request):
            response: Response = _error(request, 403, "cross_site", "requests from another site are not allowed")
        else:
            response = await call_next(request)
        for name, value in _SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if exc.status_code == 404 and message == "Not Found":
            message = f"no such path {request.url.path}"
        elif exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}"
        return _error(request, exc.status_code, code, message)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> Response:
        parts = []
        for err in exc.errors():
            if err.get("type") == "json_invalid":
                parts.append("the request body is not valid JSON")
                continue
            loc = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path"))
            parts.append(f"{loc or 'body'}: {err.get('msg', 'invalid')}")
        return _error(request, 422, "bad_request", "; ".join(parts) or "invalid request")

    @app.api_route("/evidence/{event_id}/{name}", methods=["GET", "HEAD"], include_in_schema=False)
    def evidence(event_id: str, name: str, request: Request) -> Response:
        state = state_of(request)
        with state.session_factory() as session:
            case = session.scalar(select(Case).where(Case.event_id == event_id))
        if case is None:
            return _error(request, 404, "not_found", f"no case for event {event_id}")
        file = evidence_files(case).get(name)
        if file is None:
            return _error(request, 404, "not_found", f"{name!r} is not a file of the evidence of case {case.number}")
        headers = {
            "Cache-Control": "private, max-age=3600",
            "Content-Disposition": f'inline; filename="{file.name}"',
        }
        if file.sha256:
            headers["ETag"] = f'"{file.sha256}"'
        path_of = getattr(state.store, "path_of", None)
        try:
            if callable(path_of):
                return FileResponse(path_of(file.key), media_type=file.content_type, headers=headers)
            data = state.store.get(file.key)
        except KeyError:
            return _error(request, 404, "not_found", f"{file.name} of case {case.number} is missing from the store")
        except StoreError as exc:
            log.warning("evidence store error for %s: %s", file.key, exc)
            return _error(request, 503, "store_unavailable", "the evidence store cannot be read right now")
        return _bytes_response(request, data, file.content_type, headers)

    @app.get("/healthz", tags=["health"])
    def healthz(request: Request) -> JSONResponse:
        try:
            with state_of(request).session_factory() as session:
                session.execute(text("SELECT 1"))
        except SQLAlchemyError as exc:
            log.warning("health check: case database unavailable: %s", exc)
            return JSONResponse({"status": "unavailable", "database": "unavailable"}, status_code=503)
        return JSONResponse({"status": "ok", "database": "ok"})

    return app


def _cross_site(request: Request) -> bool:
    """True for a state-changing request a browser sent from another site (no login yet: no CSRF token)."""
    if request.headers.get("sec-fetch-site") == "cross-site":
        return True
    origin = request.headers.get("origin")
    if not origin:
        return False
    if origin == "null":
        return True
    return urlsplit(origin).netloc.lower() != request.headers.get("host", "").lower()


def _wants_json(request: Request) -> bool:
    return request.url.path.startswith("/api/") or request.url.path in ("/healthz", "/api")


def _error(request: Request, status: int, code: str, message: str) -> Response:
    if _wants_json(request) or request.url.path.startswith("/evidence/"):
        return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)
    return pages.error_page(request, status, code, message)


def _bytes_response(request: Request, data: bytes, content_type: str, headers: dict[str, str]) -> Response:
    """The blob, honouring one ``Range: bytes=a-b`` (video players seek with it)."""
    size = len(data)
    headers = {**headers, "Accept-Ranges": "bytes"}
    m = _RANGE.match(request.headers.get("range", "").strip())
    if m and (m.group(1) or m.group(2)):
        if m.group(1):
            start = int(m.group(1))
            end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
        else:  # suffix range: the last N bytes
            start, end = max(0, size - int(m.group(2))), size - 1
        if start >= size or start > end:
            return Response(status_code=416, headers={**headers, "Content-Range": f"bytes */{size}"})
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        body = data[start:end + 1] if request.method != "HEAD" else b""
        return Response(body, status_code=206, media_type=content_type,
                        headers={**headers, "Content-Length": str(end - start + 1)})
    body = data if request.method != "HEAD" else b""
    return Response(body, media_type=content_type, headers={**headers, "Content-Length": str(size)})


__all__ = ["DEFAULT_ACTOR", "create_app"]
