"""Log in and out: the login form (public), the session cookie, the login rate limit.

A login attempt is counted before its password is hashed (:meth:`LoginLimiter.begin`), and the hash runs in a
worker thread, at most ``AccessConfig.hash_slots`` at a time: forty parallel guesses cost at most a few
argon2id hashes and never block the event loop.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import re

import anyio
from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from nonsite.console.auth import (
    SESSION_COOKIE,
    AccessConfig,
    Principal,
    Session,
    access_of,
    authorize,
    session_of,
)
from nonsite.console.render import render
from nonsite.console.views import root_path

log = logging.getLogger(__name__)

public = APIRouter(include_in_schema=False)
router = APIRouter(include_in_schema=False, dependencies=[Depends(authorize)])

_MAX_NAME = 128
_MAX_PASSWORD = 1024
_NEXT = re.compile(r"^/(?![/\\])[^\s\\]{0,2000}$")


def _name_tag(username: str) -> str:
    """A failed login's user name for the log, hashed: people type passwords into the name field too."""
    return "#" + hashlib.sha256(username.strip().lower().encode()).hexdigest()[:10]


def safe_next(value: str | None) -> str:
    """Where to go after login: a path of this console only (no other site, no scheme)."""
    return value if value and _NEXT.match(value) else "/"


def set_session_cookie(request: Request, response: Response, session: Session | None) -> None:
    access = access_of(request)
    path = root_path(request) or "/"
    if session is None:
        response.delete_cookie(SESSION_COOKIE, path=path, httponly=True, samesite="lax",
                               secure=access.secure_cookies)
        return
    response.set_cookie(SESSION_COOKIE, access.sessions.dumps(session), max_age=access.sessions.max_age_s,
                        path=path, httponly=True, samesite="lax", secure=access.secure_cookies)


def _login_page(request: Request, session: Session, *, next_url: str, username: str = "", error: str = "",
                fields: dict[str, object] | None = None, status_code: int = 200,
                headers: dict[str, str] | None = None) -> Response:
    request.state.nonsite_session = session  # the form's CSRF token is this session's
    response = render(request, "login.html", {
        "next": next_url, "username": username, "error": error, "error_fields": fields or {},
        "no_users": access_of(request).backend is None,
    }, status_code=status_code, headers=headers)
    set_session_cookie(request, response, session)
    return response


@public.get("/login", response_class=HTMLResponse, name="login_page")
def login_page(request: Request) -> Response:
    next_url = safe_next(request.query_params.get("next"))
    session = session_of(request)
    access = access_of(request)
    if session is not None and session.username and access.backend is not None \
            and access.backend.principal(session.username) is not None:
        return RedirectResponse(f"{root_path(request)}{next_url}", status_code=303)
    if session is None:
        session = access.sessions.new(None)
    return _login_page(request, session, next_url=next_url)


def _unlock_marker(access: AccessConfig, username: str) -> None:
    """Forget the user's failures when an admin unlocked them since (``nonsite users unlock``)."""
    lookup = getattr(access.backend, "unlocked_at", None)
    if not callable(lookup) or not username:
        return
    try:
        marker = lookup(username)
    except Exception:  # a directory failure leaves the limits as they are
        return
    if marker is not None:
        access.limiter.unlock(username, marker)


@public.post("/login", name="login")
async def login(
    request: Request,
    username: str = Form(""),
    password: str = Form(""),
    csrf: str = Form(""),
    next: str = Form("/"),  # noqa: A002 - the form field's name
) -> Response:
    access = access_of(request)
    next_url = safe_next(next)
    username = username.strip()
    session = session_of(request)
    fresh = access.sessions.new(None)
    if session is None or not csrf or not hmac.compare_digest(csrf.encode(), session.csrf.encode()):
        return _login_page(request, fresh, next_url=next_url, username=username, error="login.expired",
                           status_code=403)
    if access.backend is None:
        return _login_page(request, fresh, next_url=next_url, username=username, error="login.no_users",
                           status_code=503)
    ip = request.client.host if request.client else "unknown"
    backend = access.backend
    await anyio.to_thread.run_sync(_unlock_marker, access, username)
    wait = access.limiter.begin(username, ip)  # counted before the hash: parallel guesses cannot slip past
    if wait is not None:
        minutes = max(1, math.ceil(wait / 60))
        log.log(logging.WARNING if access.limiter.first_refusal(username, ip) else logging.DEBUG,
                "login refused from %s (user %s): too many failed attempts", ip, _name_tag(username))
        return _login_page(request, fresh, next_url=next_url, username=username, error="login.too_many",
                           fields={"minutes": minutes}, status_code=429,
                           headers={"Retry-After": str(max(1, math.ceil(wait)))})
    principal: Principal | None = None
    if username and password and len(username) <= _MAX_NAME and len(password) <= _MAX_PASSWORD:
        principal = await anyio.to_thread.run_sync(backend.authenticate, username, password,
                                                   limiter=access.hash_slots)
    if principal is None:
        log.info("failed login from %s (user %s)", ip, _name_tag(username))
        return _login_page(request, fresh, next_url=next_url, username=username, error="login.failed",
                           status_code=401)
    access.limiter.succeeded(username, ip)
    log.info("user %s (%s) logged in from %s", principal.username, principal.role, ip)
    response = RedirectResponse(f"{root_path(request)}{next_url}", status_code=303)
    new = access.sessions.new(principal.username)
    await anyio.to_thread.run_sync(access.sessions.start, new, ip)
    set_session_cookie(request, response, new)
    if session.username is not None:
        await anyio.to_thread.run_sync(access.sessions.revoke, session)
    return response


@router.post("/logout", name="logout")
def logout(request: Request) -> Response:
    access = access_of(request)
    session = session_of(request)
    if session is not None:
        access.sessions.revoke(session)
    response = RedirectResponse(f"{root_path(request)}/login", status_code=303)
    set_session_cookie(request, response, None)
    return response
