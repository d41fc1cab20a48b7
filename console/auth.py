"""Who may do what in the console: principals, the user directory interface, sessions, CSRF, rate limits.

The console does not own users: the process that serves it passes an :class:`AuthBackend` (the user
table with argon2 password hashes and API tokens lives in ``cases``). Everything else about access is
here and enforced on every route by :func:`authorize`:

* **Sessions** are a signed cookie (itsdangerous, HttpOnly, SameSite=Lax, ``Secure`` when configured)
  carrying a session id, the user name and the session's CSRF token. A logged-in session also lives in the
  case database (:class:`SessionStore`): it counts only while its row is open, so logout, a password change
  and disabling the user end it for good, across restarts and replicas. A session lasts
  ``session_max_age_s`` and is rotated at login (no fixation).
* **CSRF**: every state-changing request authenticated by the cookie must carry the session's token
  (form field ``csrf`` or header ``X-CSRF-Token``). Requests with ``Authorization: Bearer <API token>``
  are exempt (a browser never attaches that header by itself).
* **Roles and scopes**: :data:`ROUTES` names, for every route, the roles that may call it and the scope an
  API token needs for it; :data:`ACTION_ROLES` the roles of every case transition (the workflow's table).
  A browser session is limited by its role only; a token by its role AND its scopes.
* **Login rate limit**: :class:`LoginLimiter` counts each attempt before its password is hashed, per user
  name and client address, per user name (a longer threshold) and per address; password hashing runs off
  the event loop, a few at a time (``AccessConfig.hash_slots``), so parallel guesses cannot drive memory up.
"""

from __future__ import annotations

import enum
import hmac
import logging
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import anyio
from itsdangerous import BadSignature, URLSafeTimedSerializer
from sqlalchemy.orm import Session as DbSession
from sqlalchemy.orm import sessionmaker
from starlette.requests import Request

from nonsite.cases import users
from nonsite.cases.bureau import BUREAU_PERMISSIONS
from nonsite.cases.enforcement import ISSUE_ROLES, SERVICE_ROLES
from nonsite.cases.users import SCOPES
from nonsite.cases.workflow import PERMISSIONS

log = logging.getLogger(__name__)

SESSION_COOKIE = "nonsite_session"
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"
_UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class Role(enum.StrEnum):
    OPERATOR = "operator"
    """值班员: triages the alert queue, dispatches, records rectification feedback."""
    REVIEWER = "reviewer"
    """法制审核: approves or returns confirmed cases, closes rectified ones."""
    ADMIN = "admin"
    """Everything, plus cameras and zones."""
    SUPERVISOR = "supervisor"
    """督查: sees every case, issues 督办 (supervision orders)."""
    FIELD_OFFICER = "field_officer"
    """执法队员: sees and works only their teams' cases (the organisation's members and leaders)."""
    LEADER = "leader"
    """领导: reads everything, changes nothing."""


@dataclass(frozen=True)
class Principal:
    """The user behind a request."""

    username: str
    """The acting identity: a user name, or ``token:NAME`` for an API token (the audit trail's actor)."""
    display_name: str
    role: str
    """operator | reviewer | admin (a value of :class:`Role`)."""
    via_token: bool = False
    """True when the request was authenticated by an API token (no session, no CSRF)."""
    scopes: frozenset[str] | None = None
    """What an API token may do (:data:`SCOPES`); None for a browser session, which its role alone limits."""
    owner: str | None = None
    """The console user an API token acts for (None: the token is its own identity)."""

    @property
    def person(self) -> str:
        """Who is accountable: the user a token acts for, else the acting identity (the four-eyes rule)."""
        return self.owner or self.username


class AuthBackend(Protocol):
    """The user directory the console asks (``cases/users.py`` implements it over the case database)."""

    def authenticate(self, username: str, password: str) -> Principal | None:
        """The user when the password is right and the account active; None otherwise (never raises)."""

    def verify_token(self, token: str) -> Principal | None:
        """The token's principal (``via_token``, its ``scopes`` and ``owner``) when it is valid, unexpired and
        unrevoked; None otherwise. A backend that leaves ``scopes`` unset grants no scope."""

    def principal(self, username: str) -> Principal | None:
        """The user as they are now (role changes and deactivation take effect on the next request)."""


class SessionStore(Protocol):
    """Where logged-in sessions live (``console/directory.py``: the case database's ``console_sessions``)."""

    def start(self, sid: str, username: str, expires_at: datetime, address: str) -> None:
        """Record a new logged-in session."""

    def active(self, sid: str, username: str) -> bool:
        """Whether the session is open: started, not ended, not expired."""

    def end(self, sid: str, reason: str) -> None:
        """End the session (logout); idempotent."""


class DatabaseSessions:
    """Logged-in sessions in the case database's ``console_sessions`` (only the id's sha256 is stored)."""

    def __init__(self, session_factory: sessionmaker[DbSession]) -> None:
        self.sf = session_factory

    def start(self, sid: str, username: str, expires_at: datetime, address: str) -> None:
        users.start_session(self.sf, sid, username, expires_at, address)

    def active(self, sid: str, username: str) -> bool:
        return users.session_active(self.sf, sid, username)

    def end(self, sid: str, reason: str) -> None:
        users.end_session(self.sf, sid, reason)


ALL_ROLES: frozenset[Role] = frozenset(Role)
_OPS = frozenset({Role.OPERATOR, Role.ADMIN})
_REVIEW = frozenset({Role.REVIEWER, Role.ADMIN})
_ADMIN = frozenset({Role.ADMIN})
_FIELD = frozenset({Role.FIELD_OFFICER, Role.ADMIN})
_OVERSIGHT = frozenset({Role.SUPERVISOR, Role.LEADER, Role.ADMIN})

#: Case transition -> roles that may apply it: the workflow's own table (``cases/workflow.py``), so the
#: console offers exactly what the workflow will accept.
ACTION_ROLES: Mapping[str, frozenset[Role]] = {
    action.value: frozenset(Role(r.value) for r in roles) for action, roles in PERMISSIONS.items()
}


#: Bureau action (reassign, supervise, answer_supervision) -> roles: the table of ``cases/bureau.py``.
_BUREAU: Mapping[str, frozenset[Role]] = {
    action: frozenset(Role(r.value) for r in roles) for action, roles in BUREAU_PERMISSIONS.items()
}


class PerAction:
    """Marker in :data:`ROUTES`: the roles come from :data:`ACTION_ROLES` for the route's action."""

    def __init__(self, action: str | None = None) -> None:
        self.action = action
        """A fixed action, or None to read it from the ``action`` path parameter."""

    def __repr__(self) -> str:
        return f"PerAction({self.action!r})"


RouteRoles = frozenset[Role] | PerAction

SESSION_ONLY = "session"
"""Scope marker of a route only a browser session may call (API tokens are refused)."""
ANY_SCOPE = "any"
"""Scope marker of a route any valid API token may call (who am I, the API's description)."""


@dataclass(frozen=True)
class RouteAccess:
    """Who may call a route: the roles, and the scope an API token needs besides its role."""

    roles: RouteRoles
    scope: str
    """A scope of :data:`SCOPES`, or :data:`SESSION_ONLY` / :data:`ANY_SCOPE`."""

    def __post_init__(self) -> None:
        if self.scope not in (*SCOPES, SESSION_ONLY, ANY_SCOPE):
            raise ValueError(f"unknown scope {self.scope!r}; use one of {', '.join(SCOPES)}")


_READ, _WRITE = "cases:read", "cases:write"
#: Who may issue an enforcement document of some kind, and record a service (``cases/enforcement.py``).
_DOC_ISSUE: frozenset[Role] = frozenset(Role(r.value) for roles in ISSUE_ROLES.values() for r in roles)
_DOC_SERVE: frozenset[Role] = frozenset(Role(r.value) for r in SERVICE_ROLES)
_STATS = "stats:read"
#: Who reads the statistics, the overdue report and the monthly report: they cover every team's cases, so every
#: role that sees every case (field officers see only their teams' cases, so not them).
STATS_ROLES: frozenset[Role] = frozenset({Role.SUPERVISOR, Role.LEADER, Role.ADMIN, Role.REVIEWER, Role.OPERATOR})

#: Route name -> who may call it (roles) and what an API token needs (scope). Every route of the app must be
#: here or in :data:`PUBLIC_ROUTES` (``create_app`` refuses to start otherwise, and the tests call every route
#: with every role and with a token lacking the route's scope).
ROUTES: Mapping[str, RouteAccess] = {
    # pages
    "logout": RouteAccess(ALL_ROLES, SESSION_ONLY),
    "queue": RouteAccess(ALL_ROLES, _READ),
    "search": RouteAccess(ALL_ROLES, _READ),
    "review": RouteAccess(_REVIEW, _READ),
    "tasks": RouteAccess(ALL_ROLES, _READ),
    "case": RouteAccess(ALL_ROLES, _READ),
    "case_feedback_form": RouteAccess(PerAction("rectify"), _WRITE),
    "case_action_form": RouteAccess(PerAction(), _WRITE),
    "feedback_photo": RouteAccess(ALL_ROLES, _READ),
    "case_reassign_form": RouteAccess(_BUREAU["reassign"], _WRITE),
    "case_supervise_form": RouteAccess(_BUREAU["supervise"], _WRITE),
    "supervision_answer_form": RouteAccess(_BUREAU["answer_supervision"], _WRITE),
    "evidence": RouteAccess(ALL_ROLES, "evidence:read"),
    "document_html": RouteAccess(ALL_ROLES, _READ),
    "document_pdf": RouteAccess(ALL_ROLES, _READ),
    "cameras": RouteAccess(_OPS, "cameras:read"),
    "camera_snapshot": RouteAccess(_OPS, "cameras:read"),
    "camera_reference": RouteAccess(_OPS, "cameras:read"),
    "zone_editor": RouteAccess(_ADMIN, "cameras:read"),
    # JSON API
    "api_openapi": RouteAccess(ALL_ROLES, ANY_SCOPE),
    "api_me": RouteAccess(ALL_ROLES, ANY_SCOPE),
    "api_cases": RouteAccess(ALL_ROLES, _READ),
    "api_case": RouteAccess(ALL_ROLES, _READ),
    "api_case_feedback": RouteAccess(PerAction("rectify"), _WRITE),
    "api_case_action": RouteAccess(PerAction(), _WRITE),
    "api_events": RouteAccess(ALL_ROLES, _READ),
    "api_case_reassign": RouteAccess(_BUREAU["reassign"], _WRITE),
    "api_case_supervise": RouteAccess(_BUREAU["supervise"], _WRITE),
    "api_supervision_answer": RouteAccess(_BUREAU["answer_supervision"], _WRITE),
    "api_cameras": RouteAccess(_OPS, "cameras:read"),
    "api_camera_snapshot": RouteAccess(_OPS, "cameras:read"),
    "api_camera_zones": RouteAccess(_ADMIN, "cameras:write"),
    # field officers' mobile app (console/field.py)
    "field_tasks": RouteAccess(_FIELD, _READ),
    "field_case": RouteAccess(_FIELD, _READ),
    "api_field_checkin": RouteAccess(_FIELD, _WRITE),
    "api_field_report": RouteAccess(_FIELD, _WRITE),
    # enforcement documents (执法文书) and their service (送达); the kind's own roles: cases/enforcement.py
    "enforcement_issue_form": RouteAccess(_DOC_ISSUE, _WRITE),
    "enforcement_service_form": RouteAccess(_DOC_SERVE, _WRITE),
    "enforcement_pdf": RouteAccess(ALL_ROLES, _READ),
    "enforcement_receipt": RouteAccess(ALL_ROLES, _READ),
    "api_case_documents": RouteAccess(ALL_ROLES, _READ),
    "api_case_document_issue": RouteAccess(_DOC_ISSUE, _WRITE),
    "api_case_document_service": RouteAccess(_DOC_SERVE, _WRITE),
    # the city platform hand-off (integration/): its dead letters, for admins
    "admin_platform": RouteAccess(_ADMIN, SESSION_ONLY),
    "admin_platform_requeue": RouteAccess(_ADMIN, SESSION_ONLY),
    "admin_notifications_test": RouteAccess(_ADMIN, SESSION_ONLY),
    "api_platform_dead_letters": RouteAccess(_ADMIN, "platform:admin"),
    "api_platform_requeue": RouteAccess(_ADMIN, "platform:admin"),
    # statistics and reports (console/stats.py): every team's figures, so not field officers
    "stats": RouteAccess(STATS_ROLES, _STATS),
    "stats_export": RouteAccess(STATS_ROLES, _STATS),
    "stats_overdue": RouteAccess(STATS_ROLES, _STATS),
    "stats_overdue_export": RouteAccess(STATS_ROLES, _STATS),
    "stats_report_pdf": RouteAccess(STATS_ROLES, _STATS),
    "stats_basemap": RouteAccess(STATS_ROLES, _STATS),
    "api_stats": RouteAccess(STATS_ROLES, _STATS),
    "api_stats_hotspots": RouteAccess(STATS_ROLES, _STATS),
    "api_stats_overdue": RouteAccess(STATS_ROLES, _STATS),
    "api_stats_figure": RouteAccess(STATS_ROLES, _STATS),
    "cases_export": RouteAccess(ALL_ROLES, _READ),
    # the bureau's pages (issue 14): a user's own notifications, 督办 across teams, the leader's dashboard, the
    # organisation file (admins; browser sessions only)
    "notifications": RouteAccess(ALL_ROLES, _READ),
    "notifications_read": RouteAccess(ALL_ROLES, SESSION_ONLY),
    "api_notifications": RouteAccess(ALL_ROLES, _READ),
    "supervision": RouteAccess(_OVERSIGHT, _READ),
    "leader": RouteAccess(_OVERSIGHT, _READ),
    "admin_organisation": RouteAccess(_ADMIN, SESSION_ONLY),
    "admin_organisation_save": RouteAccess(_ADMIN, SESSION_ONLY),
}
#: Route name -> roles (a view of :data:`ROUTES`).
ROUTE_ROLES: Mapping[str, RouteRoles] = {name: access.roles for name, access in ROUTES.items()}
#: Routes anyone may call (the login form, health and readiness probes, Prometheus metrics, static files, the
#: field app's service worker and manifest, which hold no data).
#: ``/readyz`` and ``/metrics`` show their detail only to :func:`sees_detail` callers.
PUBLIC_ROUTES: frozenset[str] = frozenset({"login_page", "login", "healthz", "readyz", "metrics", "static",
                                          "field_sw", "field_manifest"}) | {
    "platform_callback",  # the city platform's status change: its HMAC (timestamp and body) is the credential
    "platform_evidence",  # one evidence file behind an expiring link: its HMAC (key and expiry) is the credential
}


# --- errors the app turns into 401 / 403 / 404 responses ------------------------------------------------


class AccessError(Exception):
    status = 403
    code = "forbidden"

    def __init__(self, message: str, **fields: Any) -> None:
        super().__init__(message)
        self.message = message
        self.fields = fields


class NotAuthenticated(AccessError):
    status = 401
    code = "not_authenticated"


class Forbidden(AccessError):
    status = 403
    code = "forbidden"


class CsrfFailed(AccessError):
    status = 403
    code = "csrf"


class ScopeMissing(Forbidden):
    """An API token without the scope a route needs (or on a route only browser sessions may use)."""

    code = "forbidden_scope"

    def __init__(self, message: str, key: str = "forbidden_scope", **fields: Any) -> None:
        super().__init__(message, **fields)
        self.key = key


class UnknownAction(AccessError):
    status = 404
    code = "unknown_action"


# --- sessions -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Session:
    sid: str
    csrf: str
    username: str | None
    issued: float


class SessionCodec:
    """Signs and reads the session cookie; a logged-in session counts only while ``store`` holds it open.

    Anonymous sessions (the login form's CSRF token) are the signed cookie alone: nothing is written for a
    visitor who has not logged in.
    """

    def __init__(self, secret: bytes | str, max_age_s: int, store: SessionStore) -> None:
        self._ser = URLSafeTimedSerializer(secret, salt="nonsite.console.session")
        self.max_age_s = max_age_s
        self.store = store

    def new(self, username: str | None) -> Session:
        return Session(secrets.token_urlsafe(18), secrets.token_urlsafe(24), username, time.time())

    def start(self, session: Session, address: str) -> None:
        """Record a logged-in session (after the password was right)."""
        if session.username:
            expires = datetime.fromtimestamp(session.issued + self.max_age_s).astimezone()
            self.store.start(session.sid, session.username, expires, address)

    def dumps(self, session: Session) -> str:
        return self._ser.dumps({"sid": session.sid, "csrf": session.csrf, "u": session.username,
                                "iat": session.issued})

    def decode(self, value: str | None) -> Session | None:
        """The signed, unexpired cookie's session, without asking the store."""
        if not value or len(value) > 4096:
            return None
        try:
            data = self._ser.loads(value, max_age=self.max_age_s)
        except BadSignature:  # also SignatureExpired
            return None
        if not isinstance(data, dict):
            return None
        sid, csrf, user, iat = data.get("sid"), data.get("csrf"), data.get("u"), data.get("iat")
        if not isinstance(sid, str) or not isinstance(csrf, str) or not isinstance(iat, int | float):
            return None
        if user is not None and not isinstance(user, str):
            return None
        return Session(sid, csrf, user, float(iat))

    def loads(self, value: str | None) -> Session | None:
        """The cookie's session when it is signed, unexpired and (logged in) still open in the store."""
        session = self.decode(value)
        if session is None or session.username is None:
            return session
        return session if self.active(session) else None

    def active(self, session: Session) -> bool:
        if session.username is None:
            return True
        try:
            return self.store.active(session.sid, session.username)
        except Exception as exc:  # a store failure reads as "logged out", never as a login
            log.warning("session store unavailable: %s", exc)
            return False

    def revoke(self, session: Session, reason: str = "logout") -> None:
        if session.username is not None:
            self.store.end(session.sid, reason)


# --- login rate limit -----------------------------------------------------------------------------------


class LoginLimiter:
    """Failed logins allowed in ``window_s``: ``per_user_address`` per user name from one client address,
    ``per_user`` per user name from anywhere (a longer threshold, so a guesser elsewhere does not lock the
    real user out at once) and ``per_address`` per client address (a spray over many names).

    :meth:`begin` counts an attempt before its password is checked (parallel guesses cannot slip past the
    check); :meth:`succeeded` takes a right password's attempt back.
    """

    def __init__(self, per_user_address: int = 5, per_address: int = 20, window_s: float = 300.0,
                 clock: Callable[[], float] = time.monotonic, per_user: int | None = None) -> None:
        per_user = per_user if per_user is not None else 10 * per_user_address
        if min(per_user_address, per_address, per_user) < 1 or window_s <= 0:
            raise ValueError("login limits must be positive (failures >= 1, window > 0 s)")
        self.per_user_address, self.per_address, self.per_user = per_user_address, per_address, per_user
        self.window_s = window_s
        self._clock = clock
        self._fails: dict[str, deque[float]] = {}
        self._unlocked: dict[str, object] = {}
        self._refused: dict[str, float] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _keys(username: str, ip: str) -> tuple[str, str, str]:
        user = username.strip().lower()
        return f"ua:{user}|{ip}", f"u:{user}", f"a:{ip}"

    def _limits(self) -> tuple[int, int, int]:
        return self.per_user_address, self.per_user, self.per_address

    def _recent(self, key: str, now: float) -> deque[float]:
        q = self._fails.get(key)
        if q is None:
            return deque()
        while q and q[0] <= now - self.window_s:
            q.popleft()
        if not q:
            del self._fails[key]
        return q

    def _wait(self, username: str, ip: str, now: float) -> float | None:
        waits = []
        for key, limit in zip(self._keys(username, ip), self._limits(), strict=True):
            q = self._recent(key, now)
            if len(q) >= limit:
                waits.append(q[-limit] + self.window_s - now)
        return max(waits) if waits else None

    def retry_after(self, username: str, ip: str) -> float | None:
        """Seconds until a login may be tried again, or None when it may be tried now."""
        with self._lock:
            return self._wait(username, ip, self._clock())

    def begin(self, username: str, ip: str) -> float | None:
        """Count a login attempt as failed until :meth:`succeeded` says otherwise; refuse it (seconds to wait,
        the attempt not counted) when a limit is reached already."""
        now = self._clock()
        with self._lock:
            wait = self._wait(username, ip, now)
            if wait is not None:
                return wait
            for key in self._keys(username, ip):
                self._fails.setdefault(key, deque()).append(now)
            if len(self._fails) > 100_000:  # bound memory under a spray of random names
                for k in [k for k, q in self._fails.items() if not q or q[-1] <= now - self.window_s]:
                    del self._fails[k]
        return None

    def first_refusal(self, username: str, ip: str) -> bool:
        """Whether this refusal is the first for the user name and address in the window (log that one only:
        a flood of refused guesses must not flood the log)."""
        now = self._clock()
        key = self._keys(username, ip)[0]
        with self._lock:
            last = self._refused.get(key)
            if last is not None and last > now - self.window_s:
                return False
            if len(self._refused) > 100_000:
                self._refused = {k: t for k, t in self._refused.items() if t > now - self.window_s}
            self._refused[key] = now
            return True

    def failed(self, username: str, ip: str) -> None:
        """Count a failed login (:meth:`begin` does this before the password is checked)."""
        now = self._clock()
        with self._lock:
            for key in self._keys(username, ip):
                self._fails.setdefault(key, deque()).append(now)

    def succeeded(self, username: str, ip: str = "") -> None:
        """The password was right: forget the failures of this user from this address and take this attempt
        back from the per-user and per-address counts."""
        by_user_address, by_user, by_address = self._keys(username, ip)
        with self._lock:
            self._fails.pop(by_user_address, None)
            for key in (by_user, by_address):
                q = self._fails.get(key)
                if q:
                    q.pop()

    def unlock(self, username: str, marker: object = None) -> None:
        """Forget every failure of ``username`` (an admin ran ``nonsite users unlock``). With a ``marker`` (the
        user's ``unlocked_at``), only when it differs from the last one seen, so a lookup per login is cheap."""
        user = username.strip().lower()
        with self._lock:
            if marker is not None and self._unlocked.get(user) == marker:
                return
            if marker is not None:
                self._unlocked[user] = marker
            for key in [k for k in self._fails if k == f"u:{user}" or k.startswith(f"ua:{user}|")]:
                del self._fails[key]


# --- per-request resolution -----------------------------------------------------------------------------


@dataclass
class AccessConfig:
    backend: AuthBackend | None
    sessions: SessionCodec
    limiter: LoginLimiter
    secure_cookies: bool
    metrics_token: str | None = None
    """A bearer token that reads the detailed ``/metrics`` and ``/readyz`` (Prometheus); None: none."""
    recheck_s: float = 5.0
    """How often a live-update stream checks that its session or token still holds."""
    hash_slots: anyio.CapacityLimiter = field(default_factory=lambda: anyio.CapacityLimiter(2))
    """At most this many password hashes (argon2id: memory-hard) run at once; more logins wait their turn."""


def access_of(request: Request) -> AccessConfig:
    access: AccessConfig = request.app.state.access
    return access


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def session_of(request: Request) -> Session | None:
    """The (signed, unexpired, unrevoked) session of the request's cookie, cached on the request."""
    if "nonsite_session" not in request.scope.setdefault("state", {}):
        request.state.nonsite_session = access_of(request).sessions.loads(request.cookies.get(SESSION_COOKIE))
    session: Session | None = request.state.nonsite_session
    return session


def principal_of(request: Request) -> Principal | None:
    """Who sent the request: the API token's user, else the session's user, else None."""
    state = request.scope.setdefault("state", {})
    if "nonsite_principal" in state:
        cached: Principal | None = request.state.nonsite_principal
        return cached
    access = access_of(request)
    principal: Principal | None = None
    token = _bearer(request)
    if token is not None:
        if access.backend is not None and len(token) <= 512:
            found = access.backend.verify_token(token)
            if found is not None:
                principal = Principal(found.username, found.display_name, found.role, via_token=True,
                                      scopes=frozenset(found.scopes or ()), owner=found.owner)
        if principal is None:
            request.state.nonsite_principal = None
            raise NotAuthenticated("the API token is not valid (unknown, expired or revoked); ask an admin "
                                   "for a new one")
    else:
        session = session_of(request)
        if session is not None and session.username and access.backend is not None:
            principal = access.backend.principal(session.username)
    request.state.nonsite_principal = principal
    return principal


def _role_names(roles: frozenset[Role]) -> str:
    return " or ".join(r.value for r in Role if r in roles)


def roles_for(route_roles: RouteRoles, request: Request) -> tuple[frozenset[Role], str | None]:
    """The roles a request to a route needs, and the case action it is about (for the message)."""
    if isinstance(route_roles, PerAction):
        action = route_roles.action or str(request.path_params.get("action", ""))
        roles = ACTION_ROLES.get(action)
        if roles is None:
            known = ", ".join(ACTION_ROLES)
            raise UnknownAction(f"no case action {action!r}; use one of {known}", action=action)
        return roles, action
    return route_roles, None


def check_csrf(request: Request, session: Session | None, form_token: str | None) -> None:
    sent = request.headers.get(CSRF_HEADER) or form_token or ""
    if session is None or not sent or not hmac.compare_digest(sent.encode(), session.csrf.encode()):
        raise CsrfFailed("the form is out of date or was not sent from this console (missing or wrong CSRF "
                         "token); reload the page and try again")


async def authorize(request: Request) -> Principal:
    """FastAPI dependency on every protected router: authenticate, check CSRF, check the route's roles."""
    route = request.scope.get("route")
    name = getattr(route, "name", "")
    spec = ROUTES.get(name)
    if spec is None:  # create_app refuses to start with an unlisted route; be safe anyway
        raise Forbidden(f"route {name!r} has no role table entry")
    principal = principal_of(request)
    if principal is None:
        raise NotAuthenticated("log in first (or send an API token as 'Authorization: Bearer <token>')")
    if request.method in _UNSAFE and not principal.via_token:
        form_token: str | None = None
        if CSRF_HEADER not in request.headers:
            content_type = request.headers.get("content-type", "")
            if content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
                value = (await request.form()).get(CSRF_FIELD)
                form_token = value if isinstance(value, str) else None
        check_csrf(request, session_of(request), form_token)
    roles, action = roles_for(spec.roles, request)
    if principal.role not in roles:
        what = f"'{action}' cases" if action else f"use {request.url.path}"
        raise Forbidden(
            f"your role ({principal.role}) may not {what}; this needs {_role_names(roles)}",
            role=principal.role, roles=[r.value for r in Role if r in roles], action=action or "",
        )
    check_scope(principal, spec.scope, request.url.path)
    return principal


def check_scope(principal: Principal, scope: str, path: str) -> None:
    """A token must hold the route's scope (and may not use session-only routes); sessions are not limited."""
    if principal.scopes is None or scope == ANY_SCOPE:
        return
    if scope == SESSION_ONLY:
        raise ScopeMissing(f"{path} needs a login in the browser; API tokens cannot use it", key="session_only")
    if scope not in principal.scopes:
        raise ScopeMissing(f"this API token lacks the scope {scope} that {path} needs; ask an admin for a "
                           f"token with it (nonsite users token create --scope {scope})", scope=scope)


def sees_detail(request: Request) -> bool:
    """Whether the caller may read ``/metrics`` and ``/readyz`` in detail: the configured metrics token, an
    admin's session, or an API token holding ``metrics:read``."""
    access = access_of(request)
    token = _bearer(request)
    if token is not None and access.metrics_token \
            and hmac.compare_digest(token.encode(), access.metrics_token.encode()):
        return True
    try:
        principal = principal_of(request)
    except AccessError:
        return False
    if principal is None:
        return False
    return "metrics:read" in principal.scopes if principal.scopes is not None else principal.role == Role.ADMIN


def still_authorized(request: Request) -> Callable[[], bool]:
    """A check (blocking: run it in a thread) that the request's session or API token still holds: for a
    live stream that must end when its user logs out, changes the password, or is disabled."""
    access = access_of(request)
    token = _bearer(request)
    session = session_of(request)

    def check() -> bool:
        backend = access.backend
        if backend is None:
            return False
        try:
            if token is not None:
                return backend.verify_token(token) is not None
            if session is None or not session.username:
                return False
            return access.sessions.active(session) and backend.principal(session.username) is not None
        except Exception as exc:  # a directory failure ends the stream; the browser reconnects and asks again
            log.warning("live stream: cannot re-check access: %s", exc)
            return False

    return check


def may(principal: Principal | None, action: str) -> bool:
    """Whether ``principal`` may apply the case transition ``action`` (role only, not status)."""
    return principal is not None and principal.role in ACTION_ROLES.get(action, frozenset())


__all__ = [
    "ACTION_ROLES",
    "ALL_ROLES",
    "ANY_SCOPE",
    "PUBLIC_ROUTES",
    "ROUTES",
    "ROUTE_ROLES",
    "SCOPES",
    "SESSION_ONLY",
    "STATS_ROLES",
    "AccessConfig",
    "AccessError",
    "AuthBackend",
    "CsrfFailed",
    "Forbidden",
    "LoginLimiter",
    "NotAuthenticated",
    "PerAction",
    "Principal",
    "DatabaseSessions",
    "Role",
    "RouteAccess",
    "ScopeMissing",
    "Session",
    "SessionCodec",
    "SessionStore",
    "UnknownAction",
    "access_of",
    "authorize",
    "check_scope",
    "may",
    "principal_of",
    "sees_detail",
    "session_of",
    "still_authorized",
]
