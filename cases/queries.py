"""Read-side queries for the console and the API: search, queues, counts, neighbours, links, audit.

Every function takes an open :class:`~sqlalchemy.orm.Session` and returns ORM objects or plain values;
nothing here writes. Lists are ordered newest first by the time the violation was confirmed (then id), so
"next" in a queue means "older".
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from sqlalchemy import ColumnElement, and_, false, func, or_, select
from sqlalchemy.orm import Session

from nonsite.cases.db import DISPOSITIONS, AuditEntry, Case, CaseLink, CaseStatus, Supervision, utcnow
from nonsite.cases.drafter import normalise_plate
from nonsite.cases.workflow import Role

__all__ = [
    "QUEUES",
    "CaseFilter",
    "CasePage",
    "FILTER_PARAMS",
    "LinkedCase",
    "ParsedFilter",
    "audit_trail",
    "audit_trails",
    "camera_choices",
    "count_by_disposition",
    "count_by_status",
    "count_by_type",
    "day_range",
    "filter_from_params",
    "get_case",
    "known_types",
    "linked_cases",
    "neighbours",
    "parse_params",
    "oldest_first",
    "queue_filter",
    "queues_for",
    "search_cases",
]

S = CaseStatus

#: Work queues: which statuses each holds and which roles work it (operators triage, reviewers review...).
QUEUES: Mapping[str, tuple[tuple[CaseStatus, ...], frozenset[Role]]] = {
    "triage": ((S.DRAFT, S.RETURNED), frozenset({Role.OPERATOR, Role.ADMIN})),
    "review": ((S.CONFIRMED,), frozenset({Role.REVIEWER, Role.ADMIN})),
    "dispatch": ((S.APPROVED,), frozenset({Role.OPERATOR, Role.ADMIN})),
    "feedback": ((S.DISPATCHED,), frozenset({Role.OPERATOR, Role.ADMIN})),
    "closing": ((S.RECTIFIED,), frozenset({Role.REVIEWER, Role.ADMIN})),
}

_ORDER = (Case.confirmed_at.desc(), Case.id.desc())


@dataclass(frozen=True)
class CaseFilter:
    """What to show; empty fields do not filter. Times are UTC-aware (see :func:`day_range`)."""

    statuses: tuple[CaseStatus, ...] = ()
    types: tuple[str, ...] = ()
    camera_ids: tuple[str, ...] = ()
    dispositions: tuple[str, ...] = ()
    since: datetime | None = None  # confirmed_at >= since
    until: datetime | None = None  # confirmed_at < until
    number: str | None = None  # part of the case number
    plate: str | None = None  # part of the plate (normalised like the drafter does)
    text: str | None = None  # part of the number, plate, camera, zone or address
    repeats_only: bool = False  # only cases with at least one earlier linked case
    due: str | None = None  # on_time | due_soon | overdue (the current step's deadline at ``now``)
    now: datetime | None = None  # the instant ``due`` is judged at (default: the current one)
    teams: tuple[str, ...] | None = None  # only these teams' cases (a field officer's); None: every case
    sort: str = "newest"  # newest (detection time, newest first) | due (earliest deadline first, none last)
    supervised: bool = False  # only cases with an open supervision order (督办)

    def __post_init__(self) -> None:
        if self.due is not None and self.due not in DUE_STATES:
            raise ValueError(f"due {self.due!r} is not one of {', '.join(DUE_STATES)}")
        if self.sort not in SORTS:
            raise ValueError(f"sort {self.sort!r} is not one of {', '.join(SORTS)}")
        for name in ("since", "until"):
            value = getattr(self, name)
            if value is not None and value.tzinfo is None:
                raise ValueError(f"CaseFilter.{name} must be timezone-aware (UTC); use day_range() for dates")
        object.__setattr__(self, "statuses", tuple(CaseStatus(s) for s in self.statuses))

    def conditions(self) -> list[ColumnElement[bool]]:
        conds: list[ColumnElement[bool]] = []
        if self.statuses:
            conds.append(Case.status.in_(self.statuses))
        if self.types:
            conds.append(Case.type.in_(self.types))
        if self.camera_ids:
            conds.append(Case.camera_id.in_(self.camera_ids))
        if self.dispositions:
            conds.append(Case.suggested_disposition.in_(self.dispositions))
        if self.since is not None:
            conds.append(Case.confirmed_at >= self.since)
        if self.until is not None:
            conds.append(Case.confirmed_at < self.until)
        if self.number and self.number.strip():
            conds.append(Case.number.contains(self.number.strip().upper(), autoescape=True))
        if self.plate:
            plate = normalise_plate(self.plate)
            # A plate of only separators names no plate: it matches nothing (not everything).
            conds.append(Case.offender_plate.contains(plate, autoescape=True) if plate else false())
        if self.text and self.text.strip():
            t = self.text.strip()
            plate = normalise_plate(t) or t
            # Case-insensitive on every database (SQLite's LIKE is, PostgreSQL's is not); the plate is
            # compared normalised, like the drafter stores it in ``offender_plate``.
            conds.append(or_(
                Case.number.icontains(t, autoescape=True),
                Case.offender_plate.contains(plate, autoescape=True),
                Case.camera_id.icontains(t, autoescape=True),
                Case.camera_name.icontains(t, autoescape=True),
                Case.zone_name.icontains(t, autoescape=True),
                Case.address.icontains(t, autoescape=True),
                Case.event_id == t,
            ))
        if self.repeats_only:
            conds.append(Case.repeat_count > 0)
        if self.supervised:
            conds.append(Case.id.in_(select(Supervision.case_id).where(Supervision.answered_at.is_(None))))
        if self.teams is not None:
            conds.append(Case.team.in_(self.teams) if self.teams else false())
        if self.due is not None:
            now = self.now or utcnow()
            if self.due == "overdue":
                conds.append(Case.due_at <= now)
            elif self.due == "due_soon":
                conds.append(and_(Case.due_at > now, Case.due_soon_at <= now))
            else:
                conds.append(and_(Case.due_at > now, or_(Case.due_soon_at.is_(None), Case.due_soon_at > now)))
        return conds

    def order(self) -> tuple[Any, ...]:
        if self.sort == "due":
            return (Case.due_at.is_(None), Case.due_at, Case.id)
        return _ORDER


@dataclass
class CasePage:
    items: list[Case]
    total: int
    limit: int
    offset: int
    counts: dict[str, int] = field(default_factory=dict)


@dataclass
class LinkedCase:
    """Another case linked to this one as a possible repeat, and how (``same_zone``, ``same_plate``)."""

    case: Case
    kinds: tuple[str, ...]
    earlier: bool  # True: the other case came first (it counts towards this one's repeats)


def day_range(first: date, last: date | None = None, tz: str | ZoneInfo = "Asia/Shanghai") -> tuple[datetime, datetime]:
    """UTC bounds ``[since, until)`` of whole days ``first``..``last`` on the city's clock."""
    zone = tz if isinstance(tz, ZoneInfo) else ZoneInfo(tz)
    end = (last or first) + timedelta(days=1)
    return (datetime.combine(first, time(), zone).astimezone(UTC), datetime.combine(end, time(), zone).astimezone(UTC))


def search_cases(session: Session, flt: CaseFilter | None = None, *, limit: int = 50, offset: int = 0) -> CasePage:
    """Cases matching ``flt``, newest first, one page of them and how many match in all."""
    flt = flt or CaseFilter()
    limit = max(1, min(int(limit), 1000))
    offset = max(0, int(offset))
    conds = flt.conditions()
    total = session.scalar(select(func.count()).select_from(Case).where(*conds)) or 0
    rows = session.scalars(select(Case).where(*conds).order_by(*flt.order()).limit(limit).offset(offset)).all()
    return CasePage(items=list(rows), total=int(total), limit=limit, offset=offset)


def get_case(session: Session, ref: int | str) -> Case | None:
    """A case by id (int) or number (str)."""
    if isinstance(ref, int):
        return session.get(Case, ref)
    return session.scalar(select(Case).where(Case.number == ref.strip()))


def count_by_status(session: Session, flt: CaseFilter | None = None) -> dict[str, int]:
    """Cases per status (every status present, zeros included); ``flt.statuses`` is ignored."""
    conds = replace(flt or CaseFilter(), statuses=()).conditions()
    rows = session.execute(select(Case.status, func.count()).where(*conds).group_by(Case.status)).all()
    out = {s.value: 0 for s in CaseStatus}
    out.update({CaseStatus(status).value: int(n) for status, n in rows})
    return out


def count_by_type(session: Session, flt: CaseFilter | None = None) -> dict[str, int]:
    """Cases per violation type; ``flt.types`` is ignored."""
    conds = replace(flt or CaseFilter(), types=()).conditions()
    rows = session.execute(select(Case.type, func.count()).where(*conds).group_by(Case.type)).all()
    return {t: int(n) for t, n in sorted(rows)}


def count_by_disposition(session: Session, flt: CaseFilter | None = None) -> dict[str, int]:
    """Cases per suggested disposition; ``flt.dispositions`` is ignored."""
    conds = replace(flt or CaseFilter(), dispositions=()).conditions()
    rows = session.execute(
        select(Case.suggested_disposition, func.count()).where(*conds).group_by(Case.suggested_disposition)
    ).all()
    return {d: int(n) for d, n in sorted(rows)}


def queue_filter(name: str, base: CaseFilter | None = None) -> CaseFilter:
    """``base`` restricted to the statuses of work queue ``name`` (see :data:`QUEUES`)."""
    if name not in QUEUES:
        raise ValueError(f"unknown queue {name!r}; use one of {', '.join(QUEUES)}")
    return replace(base or CaseFilter(), statuses=QUEUES[name][0])


def queues_for(role: Role | str) -> list[str]:
    """The work queues a role works, in workflow order."""
    r = Role(role)
    return [name for name, (_, roles) in QUEUES.items() if r in roles]


def neighbours(session: Session, case: Case, flt: CaseFilter | None = None) -> tuple[str | None, str | None]:
    """Numbers of the case above (newer) and below (older) ``case`` in the filtered list (keyboard triage)."""
    conds = (flt or CaseFilter()).conditions()
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


def audit_trail(session: Session, case: Case | int) -> list[AuditEntry]:
    """The case's audit entries, oldest first."""
    cid = case if isinstance(case, int) else case.id
    return list(session.scalars(select(AuditEntry).where(AuditEntry.case_id == cid).order_by(AuditEntry.id)))


def audit_trails(session: Session, cases: Iterable[Case | int]) -> dict[int, list[AuditEntry]]:
    """The audit entries of several cases at once, by case id, each oldest first (a case with none: [])."""
    ids = [c if isinstance(c, int) else c.id for c in cases]
    out: dict[int, list[AuditEntry]] = {i: [] for i in ids}
    if ids:
        for entry in session.scalars(select(AuditEntry).where(AuditEntry.case_id.in_(ids)).order_by(AuditEntry.id)):
            out[entry.case_id].append(entry)
    return out


def oldest_first(session: Session, status: CaseStatus, limit: int) -> list[Case]:
    """Cases in ``status`` in the order they got there (a work list: first in, first out)."""
    rows = session.scalars(select(Case).where(Case.status == status)
                           .order_by(Case.updated_at.asc(), Case.id.asc()).limit(limit)).all()
    return list(rows)


def linked_cases(session: Session, case: Case | int) -> list[LinkedCase]:
    """Cases linked to this one in either direction, newest first, with the kinds of link."""
    cid = case if isinstance(case, int) else case.id
    links = session.execute(
        select(CaseLink.case_id, CaseLink.linked_case_id, CaseLink.kind)
        .where(or_(CaseLink.case_id == cid, CaseLink.linked_case_id == cid))
    ).all()
    kinds: dict[int, set[str]] = {}
    earlier: dict[int, bool] = {}
    for src, dst, kind in links:
        other = dst if src == cid else src
        kinds.setdefault(other, set()).add(kind)
        earlier[other] = src == cid
    if not kinds:
        return []
    others = session.scalars(select(Case).where(Case.id.in_(kinds)).order_by(*_ORDER)).all()
    return [LinkedCase(case=o, kinds=tuple(sorted(kinds[o.id])), earlier=earlier[o.id]) for o in others]


def known_types(session: Session) -> list[str]:
    """Violation types that have cases (for filter menus)."""
    return sorted(session.scalars(select(Case.type).distinct()).all())


def camera_choices(session: Session) -> list[tuple[str, str, int]]:
    """``(camera id, camera name, cases)`` of every camera with cases (for filter menus)."""
    rows = session.execute(
        select(Case.camera_id, func.max(Case.camera_name), func.count()).group_by(Case.camera_id)
        .order_by(Case.camera_id)
    ).all()
    return [(cid, name or "", int(n)) for cid, name, n in rows]


#: The query parameters :func:`parse_params` reads (others, such as ``page`` or ``lang``, are not its business).
FILTER_PARAMS = ("status", "type", "camera", "disposition", "from", "to", "date", "number", "plate", "q", "repeats",
                 "due", "sort")
#: Due states a list can be filtered by, and the orders it can be sorted in.
DUE_STATES = ("on_time", "due_soon", "overdue")
SORTS = ("newest", "due")
_MAX_ID = 128
_MAX_TEXT = 200
_TRUE = ("1", "true", "yes", "on")


@dataclass(frozen=True)
class ParsedFilter:
    """A :class:`CaseFilter` read from query parameters, the parameters it took and those it ignored."""

    filter: CaseFilter = field(default_factory=CaseFilter)
    raw: tuple[tuple[str, str], ...] = ()
    """The accepted parameters as given (to carry into links that keep the filter)."""
    problems: tuple[tuple[str, str], ...] = ()
    """``(parameter, message)`` of each value that was ignored, the message saying what to write instead."""

    def query(self) -> str:
        """``?status=...&type=...`` for links that keep the filter (empty when there is none)."""
        qs = urlencode([(k, v) for k, v in self.raw if v])
        return f"?{qs}" if qs else ""


def _instant(key: str, value: str, zone: ZoneInfo, end_of_day: bool) -> datetime:
    """``2026-11-21`` (the whole day; ``to`` includes it), ``2026-11-21T19:00`` on the city's clock, or ISO 8601
    with an offset; as UTC."""
    text = value.replace(" ", "T", 1)
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            moment = datetime.combine(day + timedelta(days=1) if end_of_day else day, time())
        else:
            moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{key} {value!r} is not a date; use YYYY-MM-DD or YYYY-MM-DDTHH:MM (city time)") from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=zone)).astimezone(UTC)


def parse_params(params: Mapping[str, Any] | Iterable[tuple[str, Any]],
                 tz: str | ZoneInfo = "Asia/Shanghai") -> ParsedFilter:
    """The case filter in query parameters, leniently: a bad value is left out and named in ``problems``.

    ``status``, ``type``, ``camera``, ``disposition``: repeatable or comma-separated; ``from`` / ``to``: a day
    (``to`` includes it) or a time on the city's clock ``tz``, or ISO 8601 with an offset; ``date``: one day;
    ``number``, ``plate`` (compared normalised), ``q`` (number, plate, camera, zone or address): text;
    ``repeats``: 1/true/yes/on for repeat offences only; ``due``: on_time | due_soon | overdue; ``sort``:
    newest | due. Text with control characters or too long is refused.
    """
    zone = tz if isinstance(tz, ZoneInfo) else ZoneInfo(tz)
    items = list(params.items()) if isinstance(params, Mapping) else list(params)
    given: dict[str, list[str]] = {}
    for key, value in items:
        if key in FILTER_PARAMS:
            for one in value if isinstance(value, list | tuple) else [value]:
                given.setdefault(key, []).append(str(one).strip())
    raw: list[tuple[str, str]] = []
    problems: list[tuple[str, str]] = []

    def plain(key: str, value: str, limit: int) -> bool:
        if len(value) > limit:
            problems.append((key, f"{key} is longer than {limit} characters" if key != "q"
                             else f"the search text is longer than {limit} characters"))
        elif any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
            problems.append((key, f"{key} contains control characters; type plain text"))
        else:
            return True
        return False

    def listed(key: str, check: Any = None) -> tuple[Any, ...]:
        out: list[Any] = []
        for value in given.get(key, []):
            kept = []
            for item in (x.strip() for x in value.split(",")):
                if not item or not plain(key, item, _MAX_ID):
                    continue
                try:
                    out.append(check(item) if check else item)
                    kept.append(item)
                except ValueError as exc:
                    problems.append((key, str(exc)))
            if kept:
                raw.append((key, ",".join(kept)))
        return tuple(out)

    def one(key: str, limit: int = _MAX_ID) -> str | None:
        value = (given.get(key) or [""])[-1]
        if value and plain(key, value, limit):
            raw.append((key, value))
            return value
        return None

    def status(value: str) -> CaseStatus:
        try:
            return CaseStatus(value)
        except ValueError:
            raise ValueError(f"status {value!r} is not one of {', '.join(x.value for x in CaseStatus)}") from None

    def disposition(value: str) -> str:
        if value not in DISPOSITIONS:
            raise ValueError(f"disposition {value!r} is not one of {', '.join(DISPOSITIONS)}")
        return value

    statuses, dispositions = listed("status", status), listed("disposition", disposition)
    types, cameras = listed("type"), listed("camera")
    since = until = None
    for key in ("from", "to", "date"):
        value = (given.get(key) or [""])[-1]
        if not value:
            continue
        try:
            if key == "date":
                if len(value) != 10:
                    raise ValueError(f"date {value!r} is not a day; use YYYY-MM-DD (city time)")
                since, until = _instant(key, value, zone, False), _instant(key, value, zone, True)
            elif key == "from":
                since = _instant(key, value, zone, False)
            else:
                end = _instant(key, value, zone, True)
                if since is not None and end <= since:
                    raise ValueError(f"to {value!r} is before from {given['from'][-1]!r}; swap them")
                until = end
            raw.append((key, value))
        except ValueError as exc:
            problems.append((key, str(exc)))
    number, plate, text = one("number"), one("plate"), one("q", _MAX_TEXT)
    repeats = (one("repeats") or "").lower() in _TRUE
    due, sort = one("due"), one("sort")
    if due is not None and due not in DUE_STATES:
        raw.remove(("due", due))
        problems.append(("due", f"due {due!r} is not one of {', '.join(DUE_STATES)}"))
        due = None
    if sort is not None and sort not in SORTS:
        raw.remove(("sort", sort))
        problems.append(("sort", f"sort {sort!r} is not one of {', '.join(SORTS)}"))
        sort = None
    flt = CaseFilter(statuses=statuses, types=types, camera_ids=cameras, dispositions=dispositions, since=since,
                     until=until, number=number, plate=plate, text=text, repeats_only=repeats, due=due,
                     sort=sort or "newest")
    return ParsedFilter(flt, tuple(raw), tuple(problems))


def filter_from_params(params: Mapping[str, Any] | Iterable[tuple[str, Any]],
                       tz: str | ZoneInfo = "Asia/Shanghai") -> CaseFilter:
    """:func:`parse_params`, strictly: ValueError naming the first bad parameter (for scripts and the CLI)."""
    parsed = parse_params(params, tz)
    if parsed.problems:
        raise ValueError(parsed.problems[0][1])
    return parsed.filter
