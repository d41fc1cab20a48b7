"""The bureau's pages beside the case workflow (issue 14): a user's notifications (the bell), the supervisors' list
of open 督办, the leader's dashboard, and the admins' editor of the organisation file.

::

    GET  /notifications              the user's reminders and escalations, unread first
    POST /notifications/read         mark read: ``id`` (one) or none (all of the user's)
    GET  /api/notifications          the same as JSON, with the unread count
    GET  /supervision                open 督办 across teams, oldest first, overdue marked (supervisor, leader, admin)
    GET  /leader                     read-only overview: open cases by team and due state, open 督办, overdue
    GET  /admin/organisation         the organisation file in a text area (admin)
    POST /admin/organisation         validated with ``load_organisation`` before it is written (atomically), audited
                                     (``config_changes``), applied at once (teams, routing, who sees what)

Notifications are the recipient's only: another user's id is "not found", and marking it read changes nothing.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from sqlalchemy import case as sql_case
from sqlalchemy import func, select

from nonsite.cases.db import Case, ConfigChange, Supervision, utcnow
from nonsite.cases.notifications import mark_read, open_cases, unread_count, user_notifications
from nonsite.cases.organisation import Organisation, WatchedOrganisation, load_organisation
from nonsite.config.loader import ConfigError
from nonsite.console.auth import authorize, principal_of
from nonsite.console.render import render
from nonsite.console.views import case_url, root_path, state_of

log = logging.getLogger(__name__)

router = APIRouter(include_in_schema=False, dependencies=[Depends(authorize)])
api_router = APIRouter(prefix="/api", dependencies=[Depends(authorize)])

#: The largest organisation file the editor accepts (a city's is a few hundred kilobytes at most).
MAX_ORGANISATION_BYTES = 512 * 1024
_LIST = 200


def _me(request: Request) -> str:
    principal = principal_of(request)
    assert principal is not None  # authorize let the request in
    return str(principal.person)


def _notification_rows(request: Request, username: str) -> list[dict[str, Any]]:
    state = state_of(request)
    with state.session_factory() as session:
        items = user_notifications(session, username, limit=_LIST)
    return [{"id": n.id, "kind": n.kind, "case_number": n.case_number, "url": case_url(request, n.case_number),
             "team": n.team, "step": n.step, "level": n.level, "cc": n.copy, "due_at": n.due_at,
             "created_at": n.created_at, "read": n.read_at is not None} for n in items]


@router.get("/notifications", response_class=HTMLResponse, name="notifications")
def notifications_page(request: Request) -> Response:
    """The user's reminders (before a deadline) and escalations (after it), unread first."""
    return render(request, "notifications.html", {"items": _notification_rows(request, _me(request))})


@router.post("/notifications/read", name="notifications_read")
def notifications_read(request: Request, id: int | None = Form(None)) -> Response:  # noqa: A002 - the form field
    """Mark one (``id``) or all of the user's notifications read."""
    state = state_of(request)
    mark_read(state.session_factory, _me(request), [id] if id is not None else None, state.clock())
    return RedirectResponse(f"{root_path(request)}/notifications", 303)


@api_router.get("/notifications", name="api_notifications")
def api_notifications(request: Request) -> JSONResponse:
    """The caller's notifications (newest unread first) and how many are unread."""
    me = _me(request)
    with state_of(request).session_factory() as session:
        unread = unread_count(session, me)
    items = [{**r, "due_at": r["due_at"].isoformat(), "created_at": r["created_at"].isoformat()}
             for r in _notification_rows(request, me)]
    return JSONResponse({"unread": unread, "items": items})


def _team_name(org: Organisation | None, team: str | None) -> str:
    found = org.team(team) if org is not None and team else None
    return found.name if found is not None else (team or "")


@router.get("/supervision", response_class=HTMLResponse, name="supervision")
def supervision_page(request: Request) -> Response:
    """Every open 督办, oldest first, with its case's team and whether its deadline has passed."""
    state = state_of(request)
    now = state.clock()
    with state.session_factory() as session:
        rows = session.execute(
            select(Supervision, Case.number, Case.team, Case.type, Case.status, Case.due_at)
            .join(Case, Case.id == Supervision.case_id)
            .where(Supervision.answered_at.is_(None))
            .order_by(Supervision.issued_at, Supervision.id).limit(_LIST)).all()
    items = []
    for order, number, team, type_, status, due_at in rows:
        deadline = order.new_deadline or due_at
        items.append({"id": order.id, "number": number, "url": case_url(request, number), "team": team,
                      "team_name": _team_name(state.organisation, team), "type": type_, "status": status.value,
                      "instruction": order.instruction, "issued_by": order.issued_by, "issued_at": order.issued_at,
                      "deadline": deadline, "overdue": deadline is not None and now >= deadline})
    return render(request, "supervision.html", {"items": items})


def dashboard(session: Any, now: Any) -> dict[str, Any]:
    """Open cases per team and due state, open 督办 per team, and the totals (three grouped queries)."""
    overdue = sql_case((Case.due_at <= now, 1), else_=0)
    soon = sql_case(((Case.due_at > now) & (Case.due_soon_at <= now), 1), else_=0)
    by_team: dict[str | None, dict[str, int]] = {}
    for team, total, n_overdue, n_soon in session.execute(
            select(Case.team, func.count(), func.sum(overdue), func.sum(soon))
            .where(open_cases()).group_by(Case.team)):
        total, n_overdue, n_soon = int(total), int(n_overdue or 0), int(n_soon or 0)
        by_team[team] = {"open": total, "overdue": n_overdue, "due_soon": n_soon,
                         "on_time": total - n_overdue - n_soon, "supervisions": 0}
    for team, n in session.execute(
            select(Case.team, func.count()).join(Supervision, Supervision.case_id == Case.id)
            .where(Supervision.answered_at.is_(None)).group_by(Case.team)):
        by_team.setdefault(team, {"open": 0, "overdue": 0, "due_soon": 0, "on_time": 0, "supervisions": 0})
        by_team[team]["supervisions"] = int(n)
    totals = {k: sum(v[k] for v in by_team.values()) for k in ("open", "overdue", "due_soon", "on_time",
                                                                 "supervisions")}
    return {"by_team": by_team, "totals": totals}


@router.get("/leader", response_class=HTMLResponse, name="leader")
def leader_page(request: Request) -> Response:
    """The leader's read-only overview."""
    state = state_of(request)
    with state.session_factory() as session:
        data = dashboard(session, state.clock())
    org = state.organisation
    order = [t.id for t in org.teams] if org is not None else []
    teams = sorted(data["by_team"].items(), key=lambda kv: (kv[0] not in order,
                                                            order.index(kv[0]) if kv[0] in order else 0,
                                                            kv[0] or ""))
    rows = [{"team": team, "team_name": _team_name(org, team), **counts} for team, counts in teams]
    return render(request, "leader.html", {"rows": rows, "totals": data["totals"]})


# -- the organisation file ---------------------------------------------------------------------------------


def _org_text(path: Path | None) -> str:
    if path is None or not path.is_file():
        return ""
    return path.read_text(encoding="utf-8")


def _admin_org(request: Request, *, text: str | None = None, error: str = "", saved: bool = False,
               status_code: int = 200) -> Response:
    state = state_of(request)
    path = state.organisation_path
    return render(request, "organisation.html", {
        "path": str(path) if path else "", "editable": path is not None,
        "text": _org_text(path) if text is None else text, "error": error, "saved": saved,
        "teams": list(state.organisation.teams) if state.organisation is not None else [],
        "version": getattr(state.organisation, "version", "") or "",
    }, status_code=status_code)


@router.get("/admin/organisation", response_class=HTMLResponse, name="admin_organisation")
def admin_organisation_page(request: Request) -> Response:
    return _admin_org(request, saved=request.query_params.get("saved") == "1")


def validate_organisation_text(text: str, path: Path) -> Organisation:
    """``text`` as an organisation (checked by :func:`load_organisation` from a file beside ``path``, so its
    line numbers and relative paths are the real file's); raises ConfigError with one ``key: fix`` line."""
    if len(text.encode("utf-8")) > MAX_ORGANISATION_BYTES:
        raise ConfigError(f"the organisation file is {len(text.encode('utf-8')) // 1024} KB; at most "
                          f"{MAX_ORGANISATION_BYTES // 1024} KB is accepted")
    if "${" in text:  # the loader expands ${VAR}: an editor in the browser must not read the server's environment
        raise ConfigError("${...} (environment variables) is not accepted in the console's editor; write the values")
    fd, tmp = tempfile.mkstemp(prefix=".organisation-check-", suffix=".yaml", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        return load_organisation(tmp)
    finally:
        os.unlink(tmp)


def one_line(exc: ConfigError, tmp_hint: str, path: Path) -> str:
    """The first line of a loader error, naming the real file instead of the temporary one."""
    line = str(exc).strip().splitlines()[0] if str(exc).strip() else "invalid organisation file"
    parts = line.split(": ", 1)
    if len(parts) == 2 and tmp_hint in parts[0]:
        where = parts[0].rsplit(":", 1)
        line = (f"{path.name}:{where[1]}: " if len(where) == 2 and where[1].isdigit() else f"{path.name}: ") + parts[1]
    return line


def write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder and ``os.replace``: a reader sees
    the old file or the new one, never half of it."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        if path.exists():
            os.chmod(tmp, path.stat().st_mode & 0o777)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


@router.post("/admin/organisation", name="admin_organisation_save")
def admin_organisation_save(request: Request, text: str = Form("")) -> Response:
    """Validate, write atomically, audit, and apply the organisation file without a restart."""
    state = state_of(request)
    path: Path | None = state.organisation_path
    if path is None:
        return _admin_org(request, text=text, status_code=409, error=(
            "no organisation file is configured (cases.organisation); set it in the configuration first"))
    text = text.replace("\r\n", "\n")
    try:
        org = validate_organisation_text(text, path)
    except ConfigError as exc:
        return _admin_org(request, text=text, status_code=422,
                          error=one_line(exc, ".organisation-check-", path))
    before = _org_text(path)
    actor = state.actor_of(request)
    now = utcnow()
    with state.session_factory.begin() as session:  # audited first: a change is never applied unrecorded
        session.add(ConfigChange(
            at=now, actor=actor, what="organisation", path=str(path),
            before_sha256=hashlib.sha256(before.encode("utf-8")).hexdigest() if before else None,
            after_sha256=hashlib.sha256(text.encode("utf-8")).hexdigest(), after_text=text,
            detail={"version": org.version or "", "teams": [t.id for t in org.teams]}))
        write_atomically(path, text)
    current: Any = state.organisation
    if isinstance(current, WatchedOrganisation):  # the console's own file: keep watching it (other processes too)
        current.reload()
    else:
        current = org
    request.app.state.console = replace(state, organisation=current, teams=tuple(t.id for t in org.teams))
    log.info("organisation file %s replaced by %s (version %s)", path, actor, org.version or "-")
    return RedirectResponse(f"{root_path(request)}/admin/organisation?saved=1", 303)


__all__ = ["MAX_ORGANISATION_BYTES", "api_router", "dashboard", "router", "validate_organisation_text",
           "write_atomically"]
