"""What the pages and the API show of a case: queries, evidence file names and URLs, seal status.

No HTTP here: the routers in :mod:`.pages` and :mod:`.api` call these with the console's state.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from urllib.parse import quote
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
#: Roles shown as stills, each with its annotated twin (boxes on) and its original (boxes off).
STILL_PAIRS: tuple[tuple[str, str, str], ...] = (
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


def state_of(request: Request) -> ConsoleState:
    state: ConsoleState = request.app.state.console
    return state


def root_path(request: Request) -> str:
    return str(request.scope.get("root_path", "")).rstrip("/")


# --- queries --------------------------------------------------------------------------------------------

_ORDER = (Case.confirmed_at.desc(), Case.id.desc())


def _filters(status: CaseStatus | None, type_: str | None) -> list[object]:
    conds: list[object] = []
    if status is not None:
        conds.append(Case.status == status)
    if type_:
        conds.append(Case.type == type_)
    return conds


def list_cases(
    session: Session, status: CaseStatus | None, type_: str | None, limit: int, offset: int
) -> tuple[list[Case], int]:
    """Cases newest first (by the time the violation was confirmed) and how many match in all."""
    conds = _filters(status, type_)
    total = session.scalar(select(func.count()).select_from(Case).where(*conds)) or 0
    rows = session.scalars(select(Case).where(*conds).order_by(*_ORDER).limit(limit).offset(offset)).all()
    return list(rows), total


def status_counts(session: Session) -> dict[str, int]:
    rows = session.execute(select(Case.status, func.count()).group_by(Case.status)).all()
    return {status.value: n for status, n in rows}


def known_types(session: Session) -> list[str]:
    return sorted(session.scalars(select(Case.type).distinct()).all())


def neighbours(
    session: Session, case: Case, status: CaseStatus | None, type_: str | None
) -> tuple[str | None, str | None]:
    """Numbers of the case above (newer, 'k') and below (older, 'j') this one in the filtered queue."""
    conds = _filters(status, type_)
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
