"""Rendering of the console's pages: Jinja2 (autoescaped), the language, the user, the CSRF token."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from fastapi.responses import Response
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from sqlalchemy.exc import SQLAlchemyError
from starlette.requests import Request

from nonsite.cases.notifications import unread_count
from nonsite.console.auth import (
    ACTION_ROLES,
    ROUTE_ROLES,
    AccessError,
    PerAction,
    Principal,
    may,
    principal_of,
    session_of,
)
from nonsite.console.i18n import HTML_LANG, LANGUAGES, Translator, local_time
from nonsite.console.views import ConsoleState, dwell_parts, root_path, state_of

LANG_COOKIE = "nonsite_lang"
_COOKIE_MAX_AGE = 365 * 24 * 3600

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


def translator(request: Request) -> Translator:
    return Translator(resolve_lang(request, state_of(request))[0])


def path_with(request: Request, **params: str) -> str:
    query = dict(request.query_params)
    query.update(params)
    qs = urlencode(query)
    return f"{root_path(request)}{request.url.path}" + (f"?{qs}" if qs else "")


def safe_principal(request: Request) -> Principal | None:
    try:
        return principal_of(request)
    except AccessError:
        return None


def can_open(principal: Principal | None, route: str) -> bool:
    """Whether the user's role may open a page (for showing or hiding links)."""
    spec = ROUTE_ROLES.get(route)
    if principal is None or spec is None:
        return False
    if isinstance(spec, PerAction):
        return spec.action is not None and principal.role in ACTION_ROLES[spec.action]
    return principal.role in spec


def unread_of(state: ConsoleState, principal: Principal | None) -> int | None:
    """The user's unread notifications (the bell in the header); None when it cannot be read now."""
    if principal is None:
        return None
    try:
        with state.session_factory() as session:
            return unread_count(session, str(principal.person))
    except SQLAlchemyError:
        return None


def roles_text(t: Translator, roles: list[str] | tuple[str, ...]) -> str:
    return t("roles.joiner").join(t.label("user_role", r) for r in roles)


def render(request: Request, name: str, context: dict[str, Any], status_code: int = 200,
           headers: dict[str, str] | None = None) -> Response:
    state = state_of(request)
    lang, sticky = resolve_lang(request, state)
    t = Translator(lang)

    def dwell(seconds: float) -> str:
        key, fields = dwell_parts(seconds)
        return t(key, **fields)

    principal = safe_principal(request)
    session = session_of(request)
    other = t("lang.switch_code")
    js_text = {k: v for k, v in t.messages.items() if k.startswith(("js.", "status."))}
    ctx: dict[str, Any] = {
        "t": t,
        "lang": lang,
        "html_lang": HTML_LANG[lang],
        "title": state.title,
        "u": root_path(request),
        "fmt_time": partial(local_time, zone=state.zone),
        "dwell": dwell,
        "switch_url": path_with(request, lang=other),
        "switch_lang": other,
        "user": principal,
        "csrf": session.csrf if session is not None else "",
        "may": partial(may, principal),
        "can_open": partial(can_open, principal),
        "js_text": json.dumps(js_text, ensure_ascii=False).replace("<", "\\u003c").replace(">", "\\u003e")
        .replace("&", "\\u0026"),
        "page_name": name.removesuffix(".html"),
        # the city platform hand-off or the notification channels (issue 15): the admin page /admin/platform
        "platform_on": getattr(state, "platform", None) is not None
        or getattr(request.app.state, "notifications", None) is not None,
        "unread": unread_of(state, principal),
        **context,
    }
    response = templates.TemplateResponse(request, name, ctx, status_code=status_code, headers=headers)
    if sticky:
        response.set_cookie(LANG_COOKIE, lang, max_age=_COOKIE_MAX_AGE, samesite="lax", httponly=True)
    response.headers.setdefault("Cache-Control", "no-store")
    return response


def error_page(request: Request, status_code: int, code: str, message: str, **fields: Any) -> Response:
    """The error page: the catalogue's ``error.<code>`` (with ``fields``), else ``message`` as given."""
    key = f"error.{code}"
    text = localized_error(request, key, {"message": message, **fields}) if translator(request).has(key) else message
    return render(request, "error.html", {"status_code": status_code, "message": text, "code": code}, status_code)


def localized_error(request: Request, key: str, fields: dict[str, Any]) -> str:
    """The page text of an error catalogue key (labels of actions, statuses and roles filled in)."""
    t = translator(request)
    localized = dict(fields)
    for name, group in (("action", "action"), ("status", "status"), ("role", "user_role"), ("team", "team")):
        if name in localized:
            localized[name] = t.label(group, str(localized[name]))
    if "roles" in localized:
        localized["roles"] = roles_text(t, localized["roles"])
    localized.setdefault("message", "")
    return t(key, **localized) if t.has(key) else key


__all__ = ["LANG_COOKIE", "error_page", "localized_error", "path_with", "render", "resolve_lang", "translator"]
