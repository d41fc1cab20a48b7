"""What the pages and the API show of a case: queries, evidence file names and URLs, seal status.

No HTTP here: the routers in :mod:`.pages` and :mod:`.api` call these with the console's state.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlencode
from zoneinfo import ZoneInfo

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session, sessionmaker
from starlette.requests import Request

from nonsite.cases import AuditEntry, Case, CaseStatus
from nonsite.evidence import package_prefix
from nonsite.evidence.store import Store
from nonsite.evidence.verify import verify_package

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
    public_key_pem: bytes | None
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


def state_of(request: Request) -> ConsoleState:
    state: ConsoleState = request.app.state.console
    return state


def root_path(request: Request) -> str:
    return str(request.scope.get("root_path", "")).rstrip("/")


# --- queries --------------------------------------------------------------------------------------------

_ORDER = (Case.confirmed_at.desc(), Case.id.desc())
_LIKE_ESCAPE = "!"


def _like(text: str) -> str:
    """A LIKE pattern matching ``text`` anywhere (its own %, _ and ! taken literally)."""
    escaped = text.replace("!", "!!").replace("%", "!%").replace("_", "!_")
    return f"%{escaped}%"


def plate_of(case: Case) -> str | None:
    """The plate read for the case's offender, when one was read."""
    hint = case.violation.get("offender_hint") if isinstance(case.violation, dict) else None
    plate = hint.get("plate") if isinstance(hint, dict) else None
    return plate if isinstance(plate, str) and plate else None


@dataclass(frozen=True)
class CaseFilter:
    """What the queue, the search, the API list and the live stream select (all optional, AND-ed)."""

    status: CaseStatus | None = None
    type: str | None = None
    camera: str | None = None
    start: datetime | None = None
    """Confirmed at or after (UTC)."""
    end: datetime | None = None
    """Confirmed before (UTC)."""
    q: str | None = None
    """Text in the number, the plate, the camera id/name, the zone name or the address."""
    raw: tuple[tuple[str, str], ...] = ()
    """The query parameters as given (to carry into links)."""

    def conditions(self) -> list[Any]:
        conds: list[Any] = []
        if self.status is not None:
            conds.append(Case.status == self.status)
        if self.type:
            conds.append(Case.type == self.type)
        if self.camera:
            conds.append(Case.camera_id == self.camera)
        if self.start is not None:
            conds.append(Case.confirmed_at >= self.start)
        if self.end is not None:
            conds.append(Case.confirmed_at < self.end)
        if self.q:
            pattern = _like(self.q)
            plate = Case.violation[("offender_hint", "plate")].as_string()
            conds.append(or_(*(
                col.ilike(pattern, escape=_LIKE_ESCAPE)
                for col in (Case.number, Case.camera_id, Case.camera_name, Case.zone_name, Case.address, plate)
            )))
        return conds

    def query(self) -> str:
        """``?status=...&type=...`` for links that keep the filter (empty when there is none)."""
        qs = urlencode([(k, v) for k, v in self.raw if v])
        return f"?{qs}" if qs else ""


FILTER_PARAMS = ("status", "type", "camera", "from", "to", "date", "q")
_MAX_Q = 200


def _local_instant(value: str, zone: ZoneInfo, name: str, end_of_day: bool) -> datetime:
    """``2026-11-21``, ``2026-11-21T19:00`` (the city's wall clock) or ISO 8601 with an offset, as UTC."""
    text = value.strip().replace(" ", "T", 1)
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            moment = datetime.combine(day + timedelta(days=1) if end_of_day else day, datetime.min.time())
        else:
            moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"{name} {value!r} is not a date or time; use YYYY-MM-DD or YYYY-MM-DDTHH:MM (city time)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone)
    return moment.astimezone(UTC)


def parse_filter(params: Mapping[str, str], zone: ZoneInfo) -> tuple[CaseFilter, list[tuple[str, str]]]:
    """The filter in ``params`` and what was wrong with it (``(parameter, message)``; those are ignored)."""
    problems: list[tuple[str, str]] = []
    raw: list[tuple[str, str]] = []
    values = {k: (params.get(k) or "").strip() for k in FILTER_PARAMS}
    status = None
    if values["status"]:
        try:
            status = parse_status(values["status"])
            raw.append(("status", values["status"]))
        except ValueError as exc:
            problems.append(("status", str(exc)))
    start = end = None
    for key in ("from", "to", "date"):
        if not values[key]:
            continue
        try:
            if key == "date":
                if len(values[key]) != 10:
                    raise ValueError(f"date {values[key]!r} is not a day; use YYYY-MM-DD (city time)")
                start = _local_instant(values[key], zone, "date", end_of_day=False)
                end = _local_instant(values[key], zone, "date", end_of_day=True)
            elif key == "from":
                start = _local_instant(values[key], zone, "from", end_of_day=False)
            else:
                end = _local_instant(values[key], zone, "to", end_of_day=True)
            raw.append((key, values[key]))
        except ValueError as exc:
            problems.append((key, str(exc)))
    q = values["q"]
    if len(q) > _MAX_Q:
        problems.append(("q", f"the search text is longer than {_MAX_Q} characters"))
        q = ""
    for key in ("type", "camera", "q"):
        if key != "q" and len(values[key]) > 128:
            problems.append((key, f"{key} is longer than 128 characters"))
            values[key] = ""
        if any(ord(ch) < 32 or ord(ch) == 127 for ch in values[key]):
            problems.append((key, f"{key} contains control characters; type plain text"))
            values[key] = ""
            if key == "q":
                q = ""
        if values[key] and (key != "q" or q):
            raw.append((key, values[key]))
    return CaseFilter(status, values["type"] or None, values["camera"] or None, start, end, q or None,
                      tuple(raw)), problems


def list_cases(session: Session, flt: CaseFilter, limit: int, offset: int) -> tuple[list[Case], int]:
    """Cases newest first (by the time the violation was confirmed) and how many match in all."""
    conds = flt.conditions()
    total = session.scalar(select(func.count()).select_from(Case).where(*conds)) or 0
    rows = session.scalars(select(Case).where(*conds).order_by(*_ORDER).limit(limit).offset(offset)).all()
    return list(rows), total


def oldest_first(session: Session, status: CaseStatus, limit: int) -> list[Case]:
    """Cases in ``status`` in the order they got there (a work list: first in, first out)."""
    rows = session.scalars(select(Case).where(Case.status == status)
                           .order_by(Case.updated_at.asc(), Case.id.asc()).limit(limit)).all()
    return list(rows)


def status_counts(session: Session) -> dict[str, int]:
    rows = session.execute(select(Case.status, func.count()).group_by(Case.status)).all()
    return {status.value: n for status, n in rows}


def known_types(session: Session) -> list[str]:
    return sorted(session.scalars(select(Case.type).distinct()).all())


def known_cameras(session: Session) -> list[tuple[str, str]]:
    """``(camera id, name)`` of every camera that has cases."""
    rows = session.execute(select(Case.camera_id, func.max(Case.camera_name)).group_by(Case.camera_id)).all()
    return sorted((cid, name or cid) for cid, name in rows)


def neighbours(session: Session, case: Case, flt: CaseFilter) -> tuple[str | None, str | None]:
    """Numbers of the case above (newer, 'k') and below (older, 'j') this one in the filtered queue."""
    conds = flt.conditions()
    t, i = case.confirmed_at, case.id
    newer = session.scalar(
        select(Case.number).where(*conds, or_(Case.confirmed_at > t, and_(Case.confirmed_at == t, Case.id > i)))
        .order_by(Case.confirmed_at.asc(), Case.id.asc()).limit(1)
    )
    older = session.scalar(
        select(Case.number).where(*conds, or_(Case.confirmed_at < t, and_(Case.confirmed_at == t, Case.id < i)))
        .order_by(*_ORDER).limit(1)
    )
    return newer, older


def audit_of(session: Session, case: Case) -> list[AuditEntry]:
    return list(session.scalars(select(AuditEntry).where(AuditEntry.case_id == case.id).order_by(AuditEntry.id)))


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
    try:
        prefix = package_prefix(case.event_id)
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

    for item in case.evidence:
        add(str(item.get("role", "")), str(item.get("key", "")), str(item.get("content_type", "")),
            str(item.get("sha256", "")), item.get("bytes"))
    if case.manifest_key:
        add("manifest", case.manifest_key, MANIFEST_CONTENT_TYPE, case.manifest_sha256, None)
    if case.signature_key:
        add("signature", case.signature_key, SIGNATURE_CONTENT_TYPE, "", None)
    return files


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
