"""Field officers' records (移动端): arrival check-ins and on-the-spot results, kept in the audit trail.

Nothing here needs a table of its own: a check-in and a result are audit entries of the case (hash-chained
like every other, :mod:`nonsite.cases.audit`), so they are tamper-evident and appear in the case's trail:

- ``field_checkin`` (status unchanged): the phone's position (WGS84 ``lat``/``lon``, ``accuracy_m``) or why
  there is none (``position_error``), the phone's clock (``device_at``), the distance to the camera's
  configured location (``distance_m``); the entry's own ``at`` is the server's time of arrival of the record.
- ``rectify`` (dispatched → rectified, through :func:`~nonsite.cases.workflow.apply_action`) when the result is
  ``rectified``; ``field_report`` (status unchanged) for ``not_found``, ``offender_absent`` and
  ``follow_up``. Both carry ``result``, the note, the ``before``/``after`` photo hashes (the entry's ``photos``
  column: part of the hashed form) and their ``attachments`` records.

Every record carries the client's **idempotency key** (``idempotency_key``, unique per case and kind: check-in
or report): a phone that sends the same queued record twice (the answer was lost on a bad connection) gets the
first record back and nothing is written twice. The check and the write happen under the case's row lock
(``BEGIN IMMEDIATE`` on SQLite), so two copies arriving at once still make one record.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from nonsite.cases.db import AuditEntry, Case, CaseStatus, write_session
from nonsite.cases.deadlines import TimeLimitTable
from nonsite.cases.workflow import Action, InvalidTransition, WorkflowError, apply_action
from nonsite.config.services import RecheckConfig

__all__ = [
    "CHECKIN",
    "FIELD_ACTIONS",
    "REPORT",
    "REPORT_ACTIONS",
    "RESULTS",
    "FieldRecord",
    "distance_m",
    "field_records",
    "find_record",
    "record_checkin",
    "record_report",
    "valid_key",
]

CHECKIN = "field_checkin"
REPORT = "field_report"
#: Audit actions that may carry a field officer's idempotency key.
FIELD_ACTIONS: tuple[str, ...] = (CHECKIN, REPORT, Action.RECTIFY.value)
#: The audit actions a report may have become (a key is looked up among the records of its own kind).
REPORT_ACTIONS: tuple[str, ...] = (REPORT, Action.RECTIFY.value)
#: What the officer found: rectified moves the case on (like the console's feedback); the others are recorded.
RESULTS: tuple[str, ...] = ("rectified", "not_found", "offender_absent", "follow_up")
#: Statuses in which a field officer records anything (the case was dispatched to their team).
FIELD_STATUSES: frozenset[CaseStatus] = frozenset({CaseStatus.DISPATCHED})
_KEY = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
EARTH_RADIUS_M = 6_371_008.8


@dataclass(frozen=True)
class FieldRecord:
    """A check-in or result as stored, and whether this call wrote it (False: an earlier copy was found)."""

    case_number: str
    status: str
    action: str
    at: datetime
    actor: str
    detail: dict[str, Any]
    photos: list[str]
    created: bool


def valid_key(key: str) -> bool:
    """An idempotency key: 8-64 letters, digits, ``-`` or ``_`` (a UUID fits)."""
    return bool(_KEY.match(key or ""))


def distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in metres (haversine, WGS84 mean radius)."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))


def _record(case: Case, entry: AuditEntry, created: bool) -> FieldRecord:
    return FieldRecord(case.number, case.status.value, entry.action, entry.at, entry.actor,
                       dict(entry.detail or {}), list(entry.photos or []), created)


def find_record(session: Session, case_id: int, key: str,
                actions: Sequence[str] = FIELD_ACTIONS) -> AuditEntry | None:
    """The case's field record of one of ``actions`` written with idempotency ``key``, if any."""
    entries = session.scalars(select(AuditEntry).where(AuditEntry.case_id == case_id,
                                                       AuditEntry.action.in_(tuple(actions)))
                              .order_by(AuditEntry.id))
    return next((e for e in entries if isinstance(e.detail, dict) and e.detail.get("idempotency_key") == key), None)


def field_records(session: Session, case_id: int) -> list[AuditEntry]:
    """The case's check-ins and results (rectify entries included), oldest first."""
    return list(session.scalars(select(AuditEntry).where(AuditEntry.case_id == case_id,
                                                         AuditEntry.action.in_(FIELD_ACTIONS))
                                .order_by(AuditEntry.id)))


def _lock(session: Session, number: str) -> Case:
    case = session.scalar(select(Case).where(Case.number == number).with_for_update())
    if case is None:
        raise LookupError(f"no case {number!r}")
    return case


def _check_key(key: str) -> None:
    if not valid_key(key):
        raise WorkflowError("the idempotency key must be 8-64 letters, digits, '-' or '_' (e.g. a UUID)")


def _base_detail(role: str | None, actor: str, person: str | None, key: str) -> dict[str, Any]:
    detail: dict[str, Any] = {"idempotency_key": key}
    if role:
        detail["role"] = role
    if person and person != actor:
        detail["person"] = person
    return detail


def record_checkin(
    session_factory: sessionmaker[Session], number: str, actor: str, *, key: str,
    lat: float | None, lon: float | None, accuracy_m: float | None = None, device_at: datetime | None = None,
    position_error: str = "", role: str | None = None, person: str | None = None, now: datetime,
) -> FieldRecord:
    """Record the officer's arrival at the case's place (once per ``key``); LookupError for an unknown case,
    :class:`WorkflowError` when the case is not out with a team or the position is not a position."""
    _check_key(key)
    if (lat is None) != (lon is None):
        raise WorkflowError("a position needs both lat and lon")
    if lat is not None and lon is not None and not (-90 <= lat <= 90 and -180 <= lon <= 180):
        raise WorkflowError(f"({lat}, {lon}) is not a WGS84 position (lat -90..90, lon -180..180)")
    if accuracy_m is not None and not (0 <= accuracy_m < 1e7):
        raise WorkflowError(f"accuracy {accuracy_m} m is not a distance")
    with write_session(session_factory) as session:
        case = _lock(session, number)
        found = find_record(session, case.id, key, (CHECKIN,))
        if found is not None:
            return _record(case, found, created=False)
        if case.status not in FIELD_STATUSES:
            raise InvalidTransition(case.number, case.status, Action.RECTIFY)
        detail = _base_detail(role, actor, person, key)
        if lat is not None and lon is not None:
            detail.update(lat=round(lat, 7), lon=round(lon, 7))
            if accuracy_m is not None:
                detail["accuracy_m"] = round(accuracy_m, 1)
            if case.lat is not None and case.lon is not None:
                detail["distance_m"] = round(distance_m(lat, lon, case.lat, case.lon))
        else:
            detail["position_error"] = (position_error or "unavailable")[:200]
        if device_at is not None:
            detail["device_at"] = device_at.astimezone(UTC).isoformat()
        entry = AuditEntry(case_id=case.id, at=now.astimezone(UTC), actor=actor, action=CHECKIN,
                           before_status=case.status.value, after_status=case.status.value, detail=detail)
        session.add(entry)
        session.flush()
        return _record(case, entry, created=True)


def record_report(
    session_factory: sessionmaker[Session], number: str, actor: str, *, key: str, result: str, note: str = "",
    before: Sequence[Mapping[str, Any]] = (), after: Sequence[Mapping[str, Any]] = (),
    device_at: datetime | None = None, role: str | None = None, person: str | None = None, now: datetime,
    time_limits: TimeLimitTable | None = None, timezone: str = "Asia/Shanghai",
    recheck: RecheckConfig | None = None,
) -> FieldRecord:
    """Record what the officer found (once per ``key``). ``before``/``after``: attachment records of photos
    already in the store (:func:`~nonsite.cases.attachments.store_photo`). ``rectified`` applies the workflow's
    rectify (the case moves on as with the console's feedback, and with ``recheck`` enabled the camera is asked to
    re-check the zone); the other results leave the status as it is.

    LookupError for an unknown case; :class:`InvalidTransition` when the case is not dispatched;
    :class:`WorkflowError` for an unknown result or an empty report."""
    _check_key(key)
    if result not in RESULTS:
        raise WorkflowError(f"result {result!r} is not one of {', '.join(RESULTS)}")
    note = (note or "").strip()
    files = [dict(a) for a in (*before, *after)]
    if not (note or files):
        raise WorkflowError("a result needs a note or a photo")
    extra: dict[str, Any] = {"idempotency_key": key, "result": result,
                             "before": [str(a["sha256"]) for a in before],
                             "after": [str(a["sha256"]) for a in after]}
    if device_at is not None:
        extra["device_at"] = device_at.astimezone(UTC).isoformat()
    if result == "rectified":
        with session_factory() as session:
            case = session.scalar(select(Case).where(Case.number == number))
            if case is None:
                raise LookupError(f"no case {number!r}")
            found = find_record(session, case.id, key, REPORT_ACTIONS)
            if found is not None:
                return _record(case, found, created=False)
        try:
            apply_action(session_factory, number, Action.RECTIFY, actor, role=role, note=note, person=person,
                         attachments=files or None, time_limits=time_limits, timezone=timezone, now=now,
                         extra=extra, recheck=recheck)
        except InvalidTransition:
            with session_factory() as session:  # a copy sent at the same time may have rectified it just now
                case = session.scalar(select(Case).where(Case.number == number))
                found = find_record(session, case.id, key, REPORT_ACTIONS) if case is not None else None
                if case is not None and found is not None:
                    return _record(case, found, created=False)
            raise
        with session_factory() as session:
            case = session.scalar(select(Case).where(Case.number == number))
            assert case is not None
            entry = find_record(session, case.id, key, REPORT_ACTIONS)
            assert entry is not None
            return _record(case, entry, created=True)
    with write_session(session_factory) as session:
        case = _lock(session, number)
        found = find_record(session, case.id, key, REPORT_ACTIONS)
        if found is not None:
            return _record(case, found, created=False)
        if case.status not in FIELD_STATUSES:
            raise InvalidTransition(case.number, case.status, Action.RECTIFY)
        detail = _base_detail(role, actor, person, key)
        detail.update({k: v for k, v in extra.items() if k != "idempotency_key"})
        if note:
            detail["note"] = note
        if files:
            detail["attachments"] = files
        entry = AuditEntry(case_id=case.id, at=now.astimezone(UTC), actor=actor, action=REPORT,
                           before_status=case.status.value, after_status=case.status.value, detail=detail,
                           photos=[str(f["sha256"]) for f in files] or None)
        session.add(entry)
        session.flush()
        return _record(case, entry, created=True)
