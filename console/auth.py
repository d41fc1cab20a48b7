"""Who may do what in the console: principals, the user directory interface, sessions, CSRF, rate limits.

The console does not own users: the process that serves it passes an :class:`AuthBackend` (the user
table with argon2 password hashes and API tokens lives in ``cases``). Everything else about access is
here and enforced on every route by :func:`authorize`:

* **Sessions** are a signed cookie (itsdangerous, HttpOnly, SameSite=Lax, ``Secure`` when configured)
  carrying a session id, the user name and the session's CSRF token; a session lasts
  ``session_max_age_s`` and is rotated at login (no fixation); logout revokes its id.
* **CSRF**: every state-changing request authenticated by the cookie must carry the session's token
  (form field ``csrf`` or header ``X-CSRF-Token``). Requests with ``Authorization: Bearer <API token>``
  are exempt (a browser never attaches that header by itself).
* **Roles**: :data:`ROUTE_ROLES` names the roles of every route; :data:`ACTION_ROLES` those of every case
  transition (the console's copy until ``cases/workflow.py`` carries the permission table).
* **Login rate limit**: :class:`LoginLimiter` counts failures per user name and per client address.
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
from dataclasses import dataclass
from typing import Any, Protocol

from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.requests import Request

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


@dataclass(frozen=True)
class Principal:
    """The user behind a request."""

    username: str
    display_name: str
    role: str
    """operator | reviewer | admin (a value of :class:`Role`)."""
    via_token: bool = False
    """True when the request was authenticated by an API token (no session, no CSRF)."""


class AuthBackend(Protocol):
    """The user directory the console asks (``cases/users.py`` implements it over the case database)."""

    def authenticate(self, username: str, password: str) -> Principal | None:
        """The user when the password is right and the account active; None otherwise (never raises)."""

    def verify_token(self, token: str) -> Principal | None:
        """The user an API token belongs to when it is valid, unexpired and unrevoked; None otherwise."""

    def principal(self, username: str) -> Principal | None:
        """The user as they are now (role changes and deactivation take effect on the next request)."""


ALL_ROLES: frozenset[Role] = frozenset(Role)
_OPS = frozenset({Role.OPERATOR, Role.ADMIN})
_REVIEW = frozenset({Role.REVIEWER, Role.ADMIN})
_ADMIN = frozenset({Role.ADMIN})

#: Case transition -> roles that may apply it: the workflow's own table (``cases/workflow.py``), so the
#: console offers exactly what the workflow will accept.
ACTION_ROLES: Mapping[str, frozenset[Role]] = {
    action.value: frozenset(Role(r.value) for r in roles) for action, roles in PERMISSIONS.items()
}


class PerAction:
    """Marker in :data:`ROUTE_ROLES`: the roles come from :data:`ACTION_ROLES` for the route's action."""

    def __init__(self, action: str | None = None) -> None:
        self.action = action
        """A fixed action, or None to read it from the ``action`` path parameter."""

    def __repr__(self) -> str:
        return f"PerAction({self.action!r})"


RouteRoles = frozenset[Role] | PerAction

#: Route name -> who may call it. Every route of the app must be here or in :data:`PUBLIC_ROUTES`
#: (``create_app`` refuses to start otherwise, and the tests call every route with every role).
ROUTE_ROLES: Mapping[str, RouteRoles] = {
    # pages
    "logout": ALL_ROLES,
    "queue": ALL_ROLES,
    "search": ALL_ROLES,
    "review": _REVIEW,
    "tasks": ALL_ROLES,
    "case": ALL_ROLES,
    "case_feedback_form": PerAction("rectify"),
    "case_action_form": PerAction(),
    "feedback_photo": ALL_ROLES,
    "evidence": ALL_ROLES,
    "document_html": ALL_ROLES,
    "document_pdf": ALL_ROLES,
    "cameras": _OPS,
    "camera_snapshot": _OPS,
    "camera_reference": _OPS,
    "zone_editor": _ADMIN,
    # JSON API
    "api_openapi": ALL_ROLES,
    "api_me": ALL_ROLES,
    "api_cases": ALL_ROLES,
    "api_case": ALL_ROLES,
    "api_case_feedback": PerAction("rectify"),
    "api_case_action": PerAction(),
    "api_events": ALL_ROLES,
    "api_cameras": _OPS,
    "api_camera_snapshot": _OPS,
    "api_camera_zones": _ADMIN,
}
#: Routes anyone may call (the login form, health and readiness probes, Prometheus metrics, static files).
PUBLIC_ROUTES: frozenset[str] = frozenset({"login_page", "login", "healthz", "readyz", "metrics", "static"})


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
    """Signs and reads the session cookie; remembers revoked session ids until they would expire."""

    def __init__(self, secret: bytes | str, max_age_s: int) -> None:
        self._ser = URLSafeTimedSerializer(secret, salt="nonsite.console.session")
        self.max_age_s = max_age_s
        self._revoked: dict[str, float] = {}
        self._lock = threading.Lock()

    def new(self, username: str | None) -> Session:
        return Session(secrets.token_urlsafe(18), secrets.token_urlsafe(24), username, time.time())

    def dumps(self, session: Session) -> str:
        return self._ser.dumps({"sid": session.sid, "csrf": session.csrf, "u": session.username,
                                "iat": session.issued})

    def loads(self, value: str | None) -> Session | None:
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
        with self._lock:
            if sid in self._revoked:
                return None
        return Session(sid, csrf, user, float(iat))

    def revoke(self, session: Session) -> None:
        now = time.time()
        with self._lock:
            self._revoked[session.sid] = session.issued + self.max_age_s
            for sid in [s for s, until in self._revoked.items() if until < now]:
                del self._revoked[sid]


# --- login rate limit -----------------------------------------------------------------------------------


class LoginLimiter:
    """At most ``per_user`` failed logins per user name and ``per_ip`` per client address in ``window_s``."""

    def __init__(self, per_user: int = 5, per_ip: int = 20, window_s: float = 300.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if per_user < 1 or per_ip < 1 or window_s <= 0:
            raise ValueError("login limits must be positive (failures >= 1, window > 0 s)")
        self.per_user, self.per_ip, self.window_s = per_user, per_ip, window_s
        self._clock = clock
        self._fails: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> deque[float]:
        q = self._fails.get(key)
        if q is None:
            return deque()
        while q and q[0] <= now - self.window_s:
            q.popleft()
        if not q:
            del self._fails[key]
        return q

    def retry_after(self, username: str, ip: str) -> float | None:
        """Seconds until a login may be tried again, or None when it may be tried now."""
        now = self._clock()
        waits = []
        with self._lock:
            for key, limit in ((f"u:{username.strip().lower()}", self.per_user), (f"ip:{ip}", self.per_ip)):
                q = self._recent(key, now)
                if len(q) >= limit:
                    waits.append(q[0] + self.window_s - now)
        return max(waits) if waits else None

    def failed(self, username: str, ip: str) -> None:
        now = self._clock()
        with self._lock:
            for key in (f"u:{username.strip().lower()}", f"ip:{ip}"):
                self._fails.setdefault(key, deque()).append(now)
            if len(self._fails) > 100_000:  # bound memory under a spray of random names
                for k in [k for k, q in self._fails.items() if not q or q[-1] <= now - self.window_s]:
                    del self._fails[k]

    def succeeded(self, username: str) -> None:
        with self._lock:
            self._fails.pop(f"u:{username.strip().lower()}", None)


# --- per-request resolution -----------------------------------------------------------------------------


@dataclass
class AccessConfig:
    backend: AuthBackend | None
    sessions: SessionCodec
    limiter: LoginLimiter
    secure_cookies: bool


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
                principal = Principal(found.username, found.display_name, found.role, via_token=True)
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
    spec = ROUTE_ROLES.get(name)
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
    roles, action = roles_for(spec, request)
    if principal.role not in roles:
        what = f"'{action}' cases" if action else f"use {request.url.path}"
        raise Forbidden(
            f"your role ({principal.role}) may not {what}; this needs {_role_names(roles)}",
            role=principal.role, roles=[r.value for r in Role if r in roles], action=action or "",
        )
    return principal


def may(principal: Principal | None, action: str) -> bool:
    """Whether ``principal`` may apply the case transition ``action`` (role only, not status)."""
    return principal is not None and principal.role in ACTION_ROLES.get(action, frozenset())


__all__ = [
    "ACTION_ROLES",
    "ALL_ROLES",
    "PUBLIC_ROUTES",
    "ROUTE_ROLES",
    "AccessConfig",
    "AccessError",
    "AuthBackend",
    "CsrfFailed",
    "Forbidden",
    "LoginLimiter",
    "NotAuthenticated",
    "PerAction",
    "Principal",
    "Role",
    "Session",
    "SessionCodec",
    "UnknownAction",
    "access_of",
    "authorize",
    "may",
    "principal_of",
    "session_of",
]
