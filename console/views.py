"""What the pages and the API show of a case: queries, evidence file names and URLs, seal status.

No HTTP here: the routers in :mod:`.pages` and :mod:`.api` call these with the console's state.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from starlette.requests import Request

from nonsite.cases import Case, CaseStatus
from nonsite.cases.bureau import due_state, visible_teams
from nonsite.cases.db import CaseRecheck, utcnow
from nonsite.cases.queries import CaseFilter, ParsedFilter, parse_params
from nonsite.evidence import package_prefix
from nonsite.evidence.store import Store
from nonsite.evidence.verify import Keys, verify_package

log = logging.getLogger(__name__)

PAGE_SIZE = 50
MANIFEST_CONTENT_TYPE = "application/json"
SIGNATURE_CONTENT_TYPE = "application/octet-stream"
#: Roles shown as stills, each with its annotated twin (boxes on) and its original (boxes off); the reference
#: (the zone clean, before a left object came) only when the package has one.
STILL_PAIRS: tuple[tuple[str, str, str], ...] = (
    ("reference", "reference_annotated", "reference"),
    ("onset", "onset_annotated", "onset"),
    ("confirm", "confirm_annotated", "confirm"),
)


@dataclass(frozen=True)
class ConsoleState:
    """Everything the console's handlers need, set once by :func:`~nonsite.console.app.create_app`."""

    session_factory: sessionmaker[Session]
    store: Store
    zone: ZoneInfo
    language: str
    public_key_pem: Keys | None
    """What verifies seals: the trusted key ring, or one public key (PEM); None: no key known."""
    title: str
    actor_of: Callable[[Request], str]
    teams: tuple[str, ...] = ()
    """Teams a case can be dispatched to (ids; labels in the catalogues as ``team.<id>``)."""
    cameras: Any = None
    """The :class:`~nonsite.console.cameras.CameraControl` of the running cameras, or None."""
    documents: Any = None
    """The :class:`~nonsite.console.documents.DocumentRenderer`, or None."""
    max_upload_bytes: int = 10 * 1024 * 1024
    live_poll_s: float = 1.0
    organisation: Any = None
    """The :class:`~nonsite.cases.organisation.Organisation`, or None (no routing, every team's tasks to all)."""
    time_limits: Any = None
    """The catalogue's :class:`~nonsite.cases.deadlines.TimeLimitTable` (due times of each step)."""
    clock: Callable[[], datetime] = utcnow
    """The current instant (UTC), for due states."""
    enforcement: Any = None
    """The checked enforcement-document templates (:class:`~nonsite.cases.enforcement.DocumentTemplates`), or None."""
    document_font: str | None = None
    """The CJK font of the enforcement documents' PDFs (``cases.document_font``; None: fonts-wqy-zenhei)."""
    platform: Any = None
    """The city platform hand-off (:class:`~nonsite.integration.hub.PlatformHub`), or None."""
    organisation_path: Any = None
    """The organisation file admins edit (``/admin/organisation``), or None."""
    recheck: Any = None
    """``cases.recheck`` (:class:`~nonsite.config.services.RecheckConfig`): a rectification asks the camera to
    re-check the zone when enabled; None: never."""


def state_of(request: Request) -> ConsoleState:
    state: ConsoleState = request.app.state.console
    return state


def root_path(request: Request) -> str:
    return str(request.scope.get("root_path", "")).rstrip("/")


# --- the filter of a page or an API call ---------------------------------------------------------------
# The queries themselves are :mod:`nonsite.cases.queries` (one query layer for the console, the API, the CLI);
# the query parameters are read by the same layer (:func:`~nonsite.cases.queries.parse_params`).


def scoped(state: ConsoleState, principal: Any, flt: CaseFilter) -> CaseFilter:
    """``flt`` limited to what ``principal`` sees (a field officer: their teams' cases), due states judged now."""
    teams = visible_teams(principal.role, principal.person, state.organisation) if principal is not None else None
    return replace(flt, teams=tuple(sorted(teams)) if teams is not None else None, now=state.clock())


def sees_case(state: ConsoleState, principal: Any, case: Case) -> bool:
    """Whether ``principal`` may see ``case`` at all (a field officer: a case of their teams only)."""
    if principal is None:
        return True
    teams = visible_teams(principal.role, principal.person, state.organisation)
    return teams is None or case.team in teams


def due_fields(state: ConsoleState, case: Case) -> dict[str, Any]:
    """The current step's deadline as pages and the API show it."""
    st = due_state(case, state.clock())
    return {"due_at": case.due_at, "due_step": case.due_step, "due_state": st.value if st is not None else None}


def plate_of(case: Case) -> str | None:
    """The plate read for the case's offender (as read, for display), when one was read."""
    hint = case.offender_hint if isinstance(case.offender_hint, dict) else None
    if hint is None and isinstance(case.violation, dict):
        hint = case.violation.get("offender_hint")
    plate = hint.get("plate") if isinstance(hint, dict) else None
    return plate if isinstance(plate, str) and plate else None


def parse_filter(params: Any, zone: ZoneInfo) -> tuple[ParsedFilter, list[tuple[str, str]]]:
    """The filter in a request's query parameters (:func:`~nonsite.cases.queries.parse_params`) and what was
    wrong with it (``(parameter, message)``; those values are ignored)."""
    items = params.multi_items() if hasattr(params, "multi_items") else params
    parsed = parse_params(items, zone)
    return parsed, list(parsed.problems)


# --- evidence files -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EvidenceFile:
    role: str
    name: str
    key: str
    content_type: str
    sha256: str
    bytes: int | None


def evidence_files(case: Case) -> dict[str, EvidenceFile]:
    """The files of the case's package that the console may serve, by name inside the package.

    Only what the case lists (its evidence items, its manifest and signature) and only names directly
    inside ``events/<event_id>/``: nothing else in the store can be reached through the console.
    """
    return _package_files(case.event_id, case.evidence, case.manifest_key, case.manifest_sha256, case.signature_key)


def after_files(rc: CaseRecheck) -> dict[str, EvidenceFile]:
    """The files of a camera re-check's after package (:mod:`nonsite.cases.recheck`), as :func:`evidence_files`."""
    if not rc.after_event_id:
        return {}
    return _package_files(rc.after_event_id, rc.after_evidence or [], rc.after_manifest_key or "",
                          rc.after_manifest_sha256 or "", rc.after_signature_key or "")


def _package_files(event_id: str, evidence: list[dict[str, Any]], manifest_key: str, manifest_sha256: str,
                   signature_key: str) -> dict[str, EvidenceFile]:
    try:
        prefix = package_prefix(event_id)
    except ValueError:
        return {}
    files: dict[str, EvidenceFile] = {}

    def add(role: str, key: str, content_type: str, sha256: str, size: int | None) -> None:
        if not key.startswith(prefix):
            return
        name = key[len(prefix):]
        if not name or "/" in name or name in (".", ".."):
            return
        files[name] = EvidenceFile(role, name, key, content_type, sha256, size)

    for item in evidence:
        add(str(item.get("role", "")), str(item.get("key", "")), str(item.get("content_type", "")),
            str(item.get("sha256", "")), item.get("bytes"))
    if manifest_key:
        add("manifest", manifest_key, MANIFEST_CONTENT_TYPE, manifest_sha256, None)
    if signature_key:
        add("signature", signature_key, SIGNATURE_CONTENT_TYPE, "", None)
    return files


class EvidenceAltered(Exception):
    """A stored file whose bytes no longer hash to what its sealed package (or its name) says."""

    def __init__(self, what: str, key: str, expected: str, actual: str) -> None:
        super().__init__(
            f"{what} does not match its sealed sha256 ({expected[:12]}…; the stored file hashes to {actual[:12]}…): "
            "it was altered or damaged after sealing and is not served; check the package with "
            "'nonsite evidence verify' and keep the store as it is for the investigation"
        )
        self.key, self.expected, self.actual = key, expected, actual


def read_verified(store: Store, key: str, sha256: str, what: str) -> tuple[bytes, str]:
    """The stored bytes of ``key`` and their sha256, after checking them against ``sha256`` (the hash the sealed
    package recorded; empty: nothing to check against, e.g. the signature). What is served is what was hashed.

    EvidenceAltered (logged as an error) when they differ; KeyError when absent; StoreError when unreadable.
    """
    data = store.get(key)
    actual = hashlib.sha256(data).hexdigest()
    if sha256 and actual != sha256.lower():
        log.error("evidence altered: %s (%s) hashes to %s, sealed as %s; refused to serve it", key, what, actual,
                  sha256)
        raise EvidenceAltered(what, key, sha256, actual)
    return data, actual


def evidence_url(request: Request, event_id: str, name: str) -> str:
    return f"{root_path(request)}/evidence/{quote(event_id, safe='')}/{quote(name, safe='')}"


def case_url(request: Request, number: str) -> str:
    return f"{root_path(request)}/cases/{quote(number, safe='')}"


def url_by_role(request: Request, case: Case) -> dict[str, str]:
    return {f.role: evidence_url(request, case.event_id, f.name) for f in evidence_files(case).values()}


def thumbnail_url(request: Request, case: Case) -> str | None:
    if not case.thumbnail_key:
        return None
    for f in evidence_files(case).values():
        if f.key == case.thumbnail_key:
            return evidence_url(request, case.event_id, f.name)
    return None


def recheck_panel(request: Request, session: Session, case: Case, now: datetime) -> dict[str, Any] | None:
    """The camera re-check of the case page (docs/recheck.md): the newest re-check's state, its times, and the
    before stills (the violation's) beside the after stills (the re-check's package); None when none was asked."""
    from nonsite.cases.recheck import views_of

    views = views_of(session, case.id, now)
    if not views:
        return None
    latest = views[0]
    urls = url_by_role(request, case)
    before = [{"label": f"case.still_{name}", "url": urls.get(annotated) or urls.get(original)}
              for name, annotated, original in (("onset", "onset_annotated", "onset"),
                                                ("confirm", "confirm_annotated", "confirm"))]
    after: list[dict[str, Any]] = []
    rc = session.scalar(select(CaseRecheck).where(CaseRecheck.request_id == latest.request_id))
    assert rc is not None
    files = after_files(rc)
    by_role = {f.role: f for f in files.values()}
    for name, annotated, original in (("after_first", "after_first_annotated", "after_first"),
                                      ("after_last", "after_last_annotated", "after_last")):
        f = by_role.get(annotated) or by_role.get(original)
        if f is not None and rc.after_event_id:
            after.append({"label": f"recheck.{name}", "url": evidence_url(request, rc.after_event_id, f.name)})
    manifest = by_role.get("manifest")
    return {
        "state": latest.state, "requested_at": latest.requested_at, "requested_by": latest.requested_by,
        "answer_due_at": latest.answer_due_at, "observed_at": latest.observed_at,
        "clear_since": latest.clear_since, "detail": latest.detail, "clear_s": latest.clear_s,
        "classes": latest.classes, "camera_id": latest.camera_id, "after_event_id": latest.after_event_id,
        "before": [b for b in before if b["url"]], "after": after,
        "manifest_url": evidence_url(request, rc.after_event_id, manifest.name)
        if manifest is not None and rc.after_event_id else None,
        "earlier": len(views) - 1,
    }


# --- seal verification ----------------------------------------------------------------------------------


@dataclass
class SealStatus:
    checked: bool
    ok: bool | None = None
    problems: list[str] = field(default_factory=list)
    files: int = 0
    error: str | None = None


def seal_status(state: ConsoleState, case: Case) -> SealStatus:
    """Recompute the package's hashes and signature (``verify_package``) when a public key is configured."""
    if state.public_key_pem is None:
        return SealStatus(checked=False)
    try:
        result = verify_package(state.store, case.event_id, state.public_key_pem)
    except Exception as exc:  # unknown package, unusable key, store down: say so on the page
        log.warning("cannot verify the package of case %s: %s", case.number, exc)
        text = str(exc) if not isinstance(exc, LookupError) else f"no evidence package for event {case.event_id}"
        return SealStatus(checked=True, ok=False, error=text)
    return SealStatus(checked=True, ok=bool(result.ok), problems=list(result.problems),
                      files=int(getattr(result, "files", 0)))


def dwell_parts(seconds: float) -> tuple[str, dict[str, int]]:
    """Catalogue key and fields for a dwell time (``95`` -> ``dwell.minutes`` with m=1, s=35)."""
    s = int(round(seconds))
    if s < 60:
        return "dwell.seconds", {"s": s}
    if s < 3600:
        return "dwell.minutes", {"m": s // 60, "s": s % 60}
    return "dwell.hours", {"h": s // 3600, "m": (s % 3600) // 60}


def parse_status(value: str | None) -> CaseStatus | None:
    """A status filter value; None for empty; ValueError naming the allowed values otherwise."""
    if not value:
        return None
    try:
        return CaseStatus(value)
    except ValueError:
        allowed = ", ".join(s.value for s in CaseStatus)
        raise ValueError(f"status {value!r} is not one of {allowed}") from None


def status_values() -> Sequence[str]:
    return [s.value for s in CaseStatus]
