"""The operators' console: server-rendered pages, the JSON API and the evidence files, in one FastAPI app.

Every route needs a logged-in user with the right role, and an API token the route's scope
(:mod:`nonsite.console.auth`), except the login form, ``/healthz``, ``/readyz`` (bare status) and
``/static``. Pages speak Simplified Chinese by default (``?lang=en`` switches and
sticks in a cookie); times are on the city's clock.

Pages::

    GET  /login, POST /login, POST /logout     log in (rate-limited) and out
    GET  /                          alert queue: filters, live updates, keyboard triage, preview
    GET  /search                    case search: number, plate, camera, place, day
    GET  /review                    review queue (reviewer): approve / return with a comment
    GET  /tasks                     dispatch (to a team), feedback (photos), closing
    GET  /cases/{number}            the case: stills (boxes on/off), clip, facts, seal check, actions, trail
    POST /cases/{number}/{action}   confirm | dismiss | approve | return | dispatch | close (form)
    POST /cases/{number}/feedback   rectification photos + note (multipart form)
    GET  /cases/{number}/feedback/{sha256}.jpg   a feedback photo
    GET  /cases/{number}/document[.pdf]          the case document (HTML / PDF)
    POST /cases/{number}/documents               issue an enforcement document (执法文书); GET .../{id}.pdf its PDF;
                                    POST .../{id}/service record its service (送达) with the receipt photo
    GET  /cameras                   camera health and snapshots; /cameras/{id}/zones the zone editor
    GET  /m/, /m/cases/{number}     the field officers' mobile app (console/field.py; docs/field.md)
    GET  /notifications, POST /notifications/read   the user's reminders and escalations (the bell), mark read
    GET  /supervision, GET /leader  open 督办 across teams (supervisor); the leader's read-only dashboard
    GET  /admin/organisation, POST  edit the organisation file (admin): validated, written atomically, audited
    GET  /evidence/{event_id}/{name}  a file of the case's package (only the files the case lists)
    GET  /platform/evidence/{key}?exp=&sig=  the same, behind a signed expiring link for the city platform (no
                                    login: console/platform.py)
    GET  /stats                     statistics: charts and tables per period and area, Excel/CSV per chart
    GET  /stats/overdue             weekly / monthly overdue report (page, Excel, CSV); /stats/report.pdf 统计月报
    GET  /export/cases              the queue / search list as Excel or CSV (its filters)

API (JSON; errors are ``{"error": {"code", "message", "text"}}`` with a 4xx status; OpenAPI at
``/api/openapi.json``)::

    GET  /api/me
    GET  /api/cases                 ?status=&type=&camera=&from=&to=&date=&q=&limit=&offset=
    GET  /api/cases/{number}
    POST /api/cases/{number}/{action}   {"note", "reason" (dismiss), "team" (dispatch)}
    POST /api/cases/{number}/feedback   multipart: note, photos
    GET  /api/events                server-sent events (same filters; ?since=cursor)
    GET  /api/cameras, GET /api/cameras/{id}/snapshot, PUT /api/cameras/{id}/zones
    POST /api/cases/{number}/field/checkin, /field/report   the field app's records (idempotent)
    GET|POST /api/cases/{number}/documents, POST /api/cases/{number}/documents/{id}/service
    GET  /api/stats, /api/stats/{figure}, /api/stats/hotspots, /api/stats/overdue   the big screen (stats:read)
    GET  /healthz, /readyz, /metrics     liveness, readiness (database, store), Prometheus metrics
                                    (details of /readyz and /metrics: metrics token, admin, metrics:read)
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import anyio
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector
from sqlalchemy import func, select, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException

from nonsite.cases import Case
from nonsite.cases.db import CaseRecheck, utcnow
from nonsite.cases.deadlines import TimeLimitTable
from nonsite.cases.enforcement import load_templates
from nonsite.cases.legal_basis import default_catalogue
from nonsite.cases.organisation import Organisation
from nonsite.console import api, bureau_pages, camera_views, enforcement, login, pages, platform, stats
from nonsite.console import field as field_app
from nonsite.console.auth import (
    PUBLIC_ROUTES,
    ROUTES,
    AccessConfig,
    AccessError,
    AuthBackend,
    DatabaseSessions,
    Forbidden,
    LoginLimiter,
    NotAuthenticated,
    ScopeMissing,
    SessionCodec,
    authorize,
    principal_of,
    sees_detail,
)
from nonsite.console.cameras import CameraControl
from nonsite.console.documents import DocumentRenderer
from nonsite.console.documents import router as documents_router
from nonsite.console.i18n import LANGUAGES
from nonsite.console.render import error_page
from nonsite.console.uploads import BodyLimit, Scope
from nonsite.console.views import (
    ConsoleState,
    EvidenceAltered,
    after_files,
    evidence_files,
    read_verified,
    root_path,
    sees_case,
    state_of,
)
from nonsite.evidence.store import Store, StoreError
from nonsite.evidence.verify import Keys
from nonsite.ops.health import database_check, metrics_text, run_now, store_check

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
_UPLOAD_PATH = re.compile(r"^/(?:api/)?cases/[^/]+/(?:feedback|field/report|documents/\d+/service)$")
_TEAM_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
MAX_BODY_BYTES = 1024 * 1024
"""Largest request body outside the feedback upload (forms, JSON)."""
#: Dispatch targets of a console without an organisation file (labels ``team.<id>`` in the catalogues): the
#: city management enforcement squad, the stray-animal capture team, the sub-district office. With
#: ``cases.organisation`` configured the targets are the organisation's teams (docs/bureau.md).
UNORGANISED_TEAMS: tuple[str, ...] = ("enforcement_team", "capture_team", "street_office")


def _console_actor(request: Request) -> str:
    """The audit trail's actor: the logged-in user's name."""
    principal = principal_of(request)
    return principal.username if principal is not None else DEFAULT_ACTOR


def _body_limit(max_upload_bytes: int) -> Callable[[Scope], int | None]:
    def limit_of(scope: Scope) -> int | None:
        if scope.get("method") not in _UNSAFE_METHODS:
            return None
        return max_upload_bytes if _UPLOAD_PATH.match(scope.get("path", "")) else MAX_BODY_BYTES

    return limit_of


def human_size(n: int) -> str:
    """``61 KB``, ``10.0 MB``."""
    return f"{n / 1024:.0f} KB" if n < 1024 * 1024 else f"{n / 1024 / 1024:.1f} MB"


def _too_large(scope: Scope, size: int, limit: int) -> Response:
    request = Request(scope)
    message = (f"the request is {human_size(size)}; at most {human_size(limit)} is accepted here"
               + (" (all photos of one feedback together); send fewer or smaller photos"
                  if _UPLOAD_PATH.match(request.url.path) else ""))
    response = _error(request, 413, "too_large", message, size=human_size(size), limit=human_size(limit))
    response.headers["Connection"] = "close"
    return response


@dataclass
class ConsoleSettings:
    """What the console is built from, checked once (:func:`create_app` takes these as keywords too).

    ``timezone`` is the city's zone for every time shown; ``language`` the default (zh | en);
    ``public_key_pem`` (the trusted key ring, or the sealer's ``signing.pub.pem``) turns on the seal check of
    each package;
    ``actor_of`` names the user behind a request in the audit trail (default: the logged-in user).
    """

    session_factory: sessionmaker[Session]
    store: Store
    timezone: str = "Asia/Shanghai"
    language: str = "zh"
    public_key_pem: Keys | None = None
    title: str = "nonsite"
    actor_of: Callable[[Request], str] = _console_actor
    # --- access
    auth: AuthBackend | None = None
    """The user directory (passwords, API tokens, roles); without it nobody can log in."""
    session_secret: str | bytes | None = None
    """Signs the session cookies (random per process when not given: logins end when the console restarts)."""
    secure_cookies: bool = False
    """Mark the cookies Secure (HTTPS only; ``console.secure_cookies``)."""
    session_max_age_s: int = 12 * 3600
    session_recheck_s: float = 5.0
    """How often an open live-update stream checks that its session or token still holds."""
    login_max_failures: int = 5
    """Failed logins per user name from one client address per ``login_window_s`` (then 429)."""
    login_max_failures_per_user: int = 50
    """Failed logins per user name from anywhere (longer, so a guesser elsewhere does not lock the user out)."""
    login_max_failures_per_ip: int = 20
    login_window_s: float = 300.0
    login_hash_slots: int = 2
    """Password hashes (argon2id, memory-hard) computed at once; further logins wait their turn."""
    metrics_token: str | None = None
    """Bearer token that reads the detailed /metrics and /readyz (``console.metrics_token_env``)."""
    # --- what the pages offer
    cameras: CameraControl | None = None
    """The running cameras: enables the cameras page and the zone editor."""
    documents: DocumentRenderer | None = None
    organisation: Organisation | None = None
    """The bureau's organisation (``cases.organisation``): dispatch targets, who sees which team's tasks."""
    time_limits: TimeLimitTable | None = None
    """The catalogue's time limits (due times of each step); default: the shipped catalogue's."""
    clock: Callable[[], datetime] = utcnow
    """The current instant (UTC) for due states; tests inject a fixed one."""
    enforcement: Any = None
    """The enforcement-document templates (``cases.enforcement.load_templates``); None: the shipped templates."""
    document_font: str | None = None
    """TrueType CJK font of the enforcement documents' PDFs (``cases.document_font``)."""
    platform: Any = None
    """The city platform hand-off (``integration.hub.PlatformHub``): its callback route and dead letters; None: off."""
    organisation_path: Path | None = None
    """The organisation file (``cases.organisation``): admins edit it at /admin/organisation (none: read-only)."""
    reminders: bool = False
    """Run the reminder job in this process (``cases.reminders``; :mod:`nonsite.cases.notifications`)."""
    reminder_interval_s: float = 60.0
    reminder_send: Callable[[Any, Any], None] | None = None
    """Hands a fresh reminder/escalation to the integration channels (``integration.relay.reminder_sender``)."""
    teams: Sequence[str] = ()
    """Dispatch targets: default the organisation's team ids, else :data:`UNORGANISED_TEAMS`."""
    max_upload_bytes: int = 10 * 1024 * 1024
    recheck: Any = None
    """``cases.recheck``: camera re-check of rectified cases (:mod:`nonsite.cases.recheck`); None: off."""
    live_poll_s: float = 1.0
    # --- operations
    metrics_registries: Sequence[CollectorRegistry] = ()
    """Served on /metrics next to the default registry and ``nonsite_cases{status}`` (the edge's, embedded)."""
    readiness: Callable[[], dict[str, Any]] | None = None
    """Extra /readyz checks: name -> ``{"ok": bool, "detail": str}``."""
    zone: ZoneInfo = field(init=False)

    def __post_init__(self) -> None:
        try:
            self.zone = ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {self.timezone!r}; use an IANA name such as Asia/Shanghai") from None
        if self.language not in LANGUAGES:
            raise ValueError(f"unknown console language {self.language!r}; use one of {', '.join(LANGUAGES)}")
        if self.max_upload_bytes < 1024:
            raise ValueError(f"max_upload_bytes {self.max_upload_bytes} is too small; use at least 1024 (e.g. 10 MB)")
        if self.session_max_age_s < 60:
            raise ValueError(f"session_max_age_s {self.session_max_age_s} is too short; use at least 60 seconds")
        if self.live_poll_s <= 0 or self.session_recheck_s <= 0:
            raise ValueError("live_poll_s and session_recheck_s must be above 0 seconds (e.g. 1 and 5)")
        if self.login_hash_slots < 1:
            raise ValueError("login_hash_slots must be at least 1")
        if not self.teams:
            self.teams = tuple(t.id for t in self.organisation.teams) if self.organisation else UNORGANISED_TEAMS
        bad_teams = [t for t in self.teams if not _TEAM_ID.match(t)]
        if bad_teams or not self.teams:
            raise ValueError(f"dispatch teams must be ids of letters, digits, '_', '-' or '.', "
                             f"got {list(self.teams)!r}")
        if self.session_secret is None:
            self.session_secret = secrets.token_bytes(32)
            log.info("console sessions are signed with a per-process key: logins end when the console restarts")
        elif len(self.session_secret) < 16:
            raise ValueError("session_secret is too short; use at least 16 random bytes (e.g. secrets.token_hex(32))")
        if self.metrics_token is not None and len(self.metrics_token) < 16:
            raise ValueError("the metrics token is too short; use at least 16 random characters")


def create_app(settings: ConsoleSettings | None = None, /, **fields: Any) -> FastAPI:
    """The console over the case database and the evidence store: ``settings``, or its fields as keywords.

    Every route is public (:data:`PUBLIC_ROUTES`) or listed in the route table with its roles and the scope
    an API token needs (:data:`~nonsite.console.auth.ROUTES`); the app refuses to start otherwise.
    """
    if settings is not None and fields:
        raise TypeError(f"pass ConsoleSettings or its fields, not both (got {', '.join(fields)})")
    settings = settings or ConsoleSettings(**fields)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        job = getattr(app.state, "reminders", None)
        if job is not None:
            job.start()
        try:
            yield
        finally:
            if job is not None:
                job.stop()

    app = FastAPI(title=f"{settings.title} console", version="1", docs_url=None, redoc_url=None,
                  openapi_url=None, lifespan=lifespan,
                  description="Cases, evidence and cameras of the nonsite console. Authenticate with "
                  "'Authorization: Bearer <API token>'; each route needs a role and a token scope.")
    app.state.console = ConsoleState(
        session_factory=settings.session_factory, store=settings.store, zone=settings.zone,
        language=settings.language, public_key_pem=settings.public_key_pem, title=settings.title,
        actor_of=settings.actor_of, teams=tuple(settings.teams), cameras=settings.cameras,
        documents=settings.documents, max_upload_bytes=settings.max_upload_bytes, live_poll_s=settings.live_poll_s,
        organisation=settings.organisation,
        time_limits=settings.time_limits or default_catalogue().time_limit_table(), clock=settings.clock,
        enforcement=settings.enforcement or load_templates(), document_font=settings.document_font,
        platform=settings.platform,
        organisation_path=settings.organisation_path, recheck=settings.recheck,
    )
    app.state.reminders = None
    if settings.reminders:
        from nonsite.cases.notifications import ReminderJob

        app.state.reminders = ReminderJob(
            settings.session_factory, lambda: app.state.console.organisation, clock=settings.clock,
            interval_s=settings.reminder_interval_s, send=settings.reminder_send)
    app.state.access = _access(settings)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    app.add_middleware(BodyLimit, limit_of=_body_limit(settings.max_upload_bytes), too_large=_too_large)
    app.add_middleware(Guard)
    _install_error_handlers(app)
    routers = [login.public, _health_router(settings), login.router, _evidence_router(), documents_router,
               enforcement.pages, enforcement.api,  # before pages/api: /cases/{number}/documents is no {action}
               platform.public, platform.pages, platform.api,
               camera_views.pages, camera_views.api, stats.pages, stats.api, pages.router, api.router,
               field_app.public, field_app.router, bureau_pages.router, bureau_pages.api_router]
    _check_route_table(routers)
    for router in routers:
        app.include_router(router)
    return app


def _access(settings: ConsoleSettings) -> AccessConfig:
    assert settings.session_secret is not None  # set in __post_init__
    return AccessConfig(
        backend=settings.auth,
        sessions=SessionCodec(settings.session_secret, settings.session_max_age_s,
                              DatabaseSessions(settings.session_factory)),
        limiter=LoginLimiter(settings.login_max_failures, settings.login_max_failures_per_ip,
                             settings.login_window_s, per_user=settings.login_max_failures_per_user),
        secure_cookies=settings.secure_cookies, metrics_token=settings.metrics_token,
        recheck_s=settings.session_recheck_s, hash_slots=anyio.CapacityLimiter(settings.login_hash_slots),
    )


def _install_error_handlers(app: FastAPI) -> None:
    """401 / 403 / 404 / 405 / 422 as JSON for the API and evidence, as the error page for people."""

    @app.exception_handler(AccessError)
    async def access_error(request: Request, exc: AccessError) -> Response:
        if isinstance(exc, NotAuthenticated):
            if request.method in ("GET", "HEAD") and not _wants_json(request) \
                    and "authorization" not in request.headers \
                    and not request.url.path.startswith(("/evidence/", "/cameras/")):
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                return RedirectResponse(f"{root_path(request)}/login?" + urlencode({"next": target}), 303)
            response = _error(request, 401, exc.code, exc.message)
            response.headers["WWW-Authenticate"] = 'Bearer realm="nonsite"'
            return response
        key = exc.code
        if isinstance(exc, ScopeMissing):
            key = exc.key
        elif isinstance(exc, Forbidden):
            key = "forbidden_action" if exc.fields.get("action") else "forbidden_page"
        return _error(request, exc.status, exc.code, exc.message, key=key, **exc.fields)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        code = {400: "bad_request", 404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
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


def _evidence_router() -> APIRouter:
    """``/evidence/{event_id}/{name}``: a file of a case's package (only the files the case lists)."""
    files = APIRouter(include_in_schema=False, dependencies=[Depends(authorize)])

    @files.api_route("/evidence/{event_id}/{name}", methods=["GET", "HEAD"], name="evidence")
    def evidence(event_id: str, name: str, request: Request) -> Response:
        state = state_of(request)
        with state.session_factory() as session:
            case = session.scalar(select(Case).where(Case.event_id == event_id))
            files = evidence_files(case) if case is not None else {}
            if case is None:  # the after package of a camera re-check: served with its case's permissions
                rc = session.scalar(select(CaseRecheck).where(CaseRecheck.after_event_id == event_id))
                case = session.get(Case, rc.case_id) if rc is not None else None
                files = after_files(rc) if rc is not None else {}
        if case is None or not sees_case(state, principal_of(request), case):
            return _error(request, 404, "not_found", f"no case for event {event_id}")
        file = files.get(name)
        if file is None:
            return _error(request, 404, "not_found", f"{name!r} is not a file of the evidence of case {case.number}")
        headers = {
            "Cache-Control": "private, max-age=3600",
            "Content-Disposition": f'inline; filename="{file.name}"',
        }
        try:  # hash what is served: a file altered after sealing is refused, never served as the original
            data, sha256 = read_verified(state.store, file.key, file.sha256, f"{file.name} of case {case.number}")
            headers["ETag"] = f'"{sha256}"'
        except EvidenceAltered as exc:
            return _error(request, 409, "evidence_altered", str(exc), name=file.name, number=case.number)
        except KeyError:
            return _error(request, 404, "not_found", f"{file.name} of case {case.number} is missing from the store")
        except StoreError as exc:
            log.warning("evidence store error for %s: %s", file.key, exc)
            return _error(request, 503, "store_unavailable", "the evidence store cannot be read right now")
        return _bytes_response(request, data, file.content_type, headers)

    return files


def _health_router(settings: ConsoleSettings) -> APIRouter:
    """``/healthz`` (liveness), ``/readyz`` (readiness) and ``/metrics`` (Prometheus).

    ``/readyz`` answers 200 when the database, the evidence store and every ``settings.readiness`` check are
    ok, 503 otherwise; only :func:`sees_detail` callers (the metrics token, an admin, a ``metrics:read`` token)
    see which check failed and why. ``/metrics`` (case counts by status, the process, the edge) answers them
    only; anyone else gets 401.
    """
    health = APIRouter(tags=["health"])
    cases_registry = CollectorRegistry(auto_describe=False)
    cases_registry.register(_CasesCollector(settings.session_factory))
    registries = [REGISTRY, cases_registry, *settings.metrics_registries]
    readiness = settings.readiness

    @health.get("/metrics", name="metrics", include_in_schema=False)
    def metrics(request: Request) -> Response:
        if not sees_detail(request):
            return JSONResponse({"error": {"code": "not_authenticated", "message": (
                "/metrics needs the metrics token (console.metrics_token_env), an admin's login or an API token "
                "with the scope metrics:read, sent as 'Authorization: Bearer <token>'")}}, status_code=401,
                headers={"WWW-Authenticate": 'Bearer realm="nonsite"'})
        return Response(metrics_text(registries), media_type=CONTENT_TYPE_LATEST)

    @health.get("/readyz", name="readyz")
    def readyz(request: Request) -> JSONResponse:
        state = state_of(request)
        checks = run_now({"database": database_check(state.session_factory), "store": store_check(state.store)})
        if readiness is not None:
            checks.update(readiness())
        ok = all(c["ok"] for c in checks.values())
        body: dict[str, Any] = {"status": "ready" if ok else "not ready"}
        if sees_detail(request):
            body.update(role="console", checks=checks)
        return JSONResponse(body, status_code=200 if ok else 503)

    @health.get("/healthz", name="healthz")
    def healthz(request: Request) -> JSONResponse:
        try:
            with state_of(request).session_factory() as session:
                session.execute(text("SELECT 1"))
        except SQLAlchemyError as exc:
            log.warning("health check: case database unavailable: %s", exc)
            return JSONResponse({"status": "unavailable", "database": "unavailable"}, status_code=503)
        return JSONResponse({"status": "ok", "database": "ok"})

    return health


class _CasesCollector(Collector):
    """``nonsite_cases{status}``: cases per status, counted in the database at each scrape."""

    def __init__(self, session_factory: sessionmaker[Session]) -> None:
        self.session_factory = session_factory

    def collect(self) -> Iterator[Metric]:
        from nonsite.cases.db import CaseStatus

        family = GaugeMetricFamily("nonsite_cases", "Cases in the case database, by status.", labels=["status"])
        counts = dict.fromkeys((s.value for s in CaseStatus), 0)
        try:
            with self.session_factory() as session:
                for status, n in session.execute(select(Case.status, func.count()).group_by(Case.status)):
                    counts[getattr(status, "value", str(status))] = int(n)
        except SQLAlchemyError as exc:  # no sample rather than a wrong one; /readyz says why
            log.warning("cases metric: database unavailable: %s", exc)
            return
        for status, n in counts.items():
            family.add_metric([status], n)
        yield family


def app_routes(app: FastAPI) -> list[tuple[str, str, frozenset[str]]]:
    """``(name, path, methods)`` of every API route the app serves (included routers walked through)."""
    found: list[tuple[str, str, frozenset[str]]] = []

    def walk(routes: Sequence[Any]) -> None:
        for route in routes:
            inner = getattr(route, "original_router", None)  # FastAPI keeps an included router as one route
            if inner is not None:
                walk(inner.routes)
            elif isinstance(route, APIRoute):
                found.append((route.name, route.path, frozenset(route.methods or ())))

    walk(app.routes)
    return found


def route_names(routers: Sequence[APIRouter]) -> list[tuple[str, str, frozenset[str]]]:
    """``(name, path, methods)`` of every route of ``routers``."""
    return [(r.name, r.path, frozenset(r.methods or ())) for router in routers for r in router.routes
            if isinstance(r, APIRoute)]


def _check_route_table(routers: Sequence[APIRouter]) -> None:
    """Every route is public or in the route table (roles and scope), and every non-public route runs
    :func:`authorize`."""
    for router in routers:
        guarded = any(d.dependency is authorize for d in router.dependencies)
        for route in router.routes:
            name = getattr(route, "name", "")
            if name in PUBLIC_ROUTES and not guarded:
                continue
            if name not in ROUTES:
                raise RuntimeError(f"route {name!r} ({getattr(route, 'path', '?')}) has no entry (roles and "
                                   "token scope) in console.auth.ROUTES")
            if not guarded:
                raise RuntimeError(f"route {name!r} does not check access (its router needs Depends(authorize))")


class Guard:
    """ASGI middleware: refuse state-changing requests from other sites; add the security headers."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        api_call = str(scope.get("path", "")).startswith("/api/")

        async def with_headers(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in _SECURITY_HEADERS.items():
                    if name not in headers:
                        headers[name] = value
                if api_call and "cache-control" not in headers:
                    headers["Cache-Control"] = "no-store"
            await send(message)

        request = Request(scope)
        if request.method in _UNSAFE_METHODS and _cross_site(request):
            response = _error(request, 403, "cross_site", "requests from another site are not allowed")
            await response(scope, receive, with_headers)
            return
        await self.app(scope, receive, with_headers)


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


def _error(request: Request, status: int, code: str, message: str, key: str | None = None, **fields: Any) -> Response:
    """A JSON error for the API and evidence, else the error page (``key``: the catalogue's ``error.<key>``)."""
    key = key or code
    if _wants_json(request) or request.url.path.startswith("/evidence/"):
        return api.err(request, status, code, message, f"error.{key}", {"message": message, **fields})
    return error_page(request, status, key, message, **fields)


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


__all__ = ["DEFAULT_ACTOR", "ConsoleSettings", "create_app"]
