"""The case drafter: one case draft per sealed evidence package (consumer of ``nonsite.evidence``).

Idempotent by event id (at-least-once delivery may bring the same event twice, and two drafters may
race on it: the unique constraint on ``cases.event_id`` settles it). The bus position is committed
only after the database commit, so a crash in between redelivers the event and drafts nothing twice.
A message that is not valid JSON or not an :class:`EvidenceSealed` goes to the dead-letter topic.

An *after* package (a sealed event with a ``recheck`` block: the camera's answer to a re-check,
:mod:`nonsite.cases.recheck`) drafts nothing: it is recorded on its case (:func:`~nonsite.cases.recheck.apply_result`).

Each draft carries the offender hint (the plate, when one was read), its links to earlier cases of the
same type at the same zone or with the same plate within the catalogue's window (``case_links``), the
repeat count that follows, the suggested disposition from the catalogue's discretion table and a
snapshot of the legal basis it was drafted under.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from nonsite.bus import Bus, Consumer, Message
from nonsite.bus.deadletter import dead_letter_value as shared_dead_letter_value
from nonsite.bus.deadletter import oversized_reason
from nonsite.bus.events import TOPIC_DEAD_LETTER, TOPIC_EVIDENCE, EvidenceSealed
from nonsite.bus.metrics import DEAD_LETTERS
from nonsite.cases.db import AuditEntry, Case, CaseLink, CaseStatus, allocate_number, utcnow, write_session
from nonsite.cases.legal_basis import Catalogue, default_catalogue
from nonsite.cases.organisation import Organisation, Routing
from nonsite.cases.recheck import RecheckError, apply_result
from nonsite.cases.workflow import due_soon_from

__all__ = ["DRAFTER_ACTOR", "DraftError", "SealCheck", "SealUnavailable", "draft_case",
           "draft_pending", "find_repeats", "normalise_plate",
           "run_drafter"]

log = logging.getLogger(__name__)

DRAFTER_ACTOR = "system:drafter"
_TRANSIENT: tuple[type[Exception], ...] = (OperationalError, InterfaceError)
#: Evidence roles that make a good thumbnail for the queue, best first.
THUMBNAIL_ROLES = ("closeup", "confirm_annotated", "confirm", "onset_annotated", "onset")


class DraftError(ValueError):
    """A sealed event that cannot become a case (it goes to the dead-letter topic)."""


class SealUnavailable(Exception):
    """The seal of a message cannot be checked right now (store down, no key known yet): retry it later."""


#: Checks the package a ``nonsite.evidence`` message announces (manifest hash, signature by a trusted key):
#: None when it holds, else why not (the message is refused); raises :class:`SealUnavailable` to retry.
SealCheck = Callable[[EvidenceSealed], str | None]


def _thumbnail_key(sealed: EvidenceSealed) -> str | None:
    by_role = {item.role: item.key for item in sealed.violation.evidence}
    return next((by_role[r] for r in THUMBNAIL_ROLES if r in by_role), None)


_PLATE_NOISE = re.compile(r"[\s·•.\-_]+")


def normalise_plate(plate: str | None) -> str | None:
    """Plate text as stored and compared: upper case, without spaces and separators (沪A·12345 → 沪A12345)."""
    if not plate:
        return None
    text = _PLATE_NOISE.sub("", plate).upper()
    return text or None


def find_repeats(
    session: Session,
    *,
    violation_type: str,
    camera_id: str,
    zone_id: str,
    plate: str | None,
    at: datetime,
    window_days: int,
    exclude_event_id: str | None = None,
) -> list[tuple[int, str]]:
    """Earlier cases (``case id``, link kind) of the same type within ``window_days`` before ``at``.

    ``same_zone``: the same zone of the same camera; ``same_plate``: the same normalised plate. Dismissed
    cases do not count (a false alarm is no offence).
    """
    since = at - timedelta(days=window_days)
    base = [Case.type == violation_type, Case.confirmed_at >= since, Case.confirmed_at <= at,
            Case.status != CaseStatus.DISMISSED]
    if exclude_event_id is not None:
        base.append(Case.event_id != exclude_event_id)
    links = [(cid, "same_zone") for cid in session.scalars(
        select(Case.id).where(*base, Case.camera_id == camera_id, Case.zone_id == zone_id).order_by(Case.id))]
    if plate:
        links += [(cid, "same_plate") for cid in session.scalars(
            select(Case.id).where(*base, Case.offender_plate == plate).order_by(Case.id))]
    return links


def _existing(session_factory: sessionmaker[Session], event_id: str) -> Case | None:
    with session_factory() as session:
        return session.scalar(select(Case).where(Case.event_id == event_id))


def draft_case(
    session_factory: sessionmaker[Session],
    sealed: EvidenceSealed,
    number_prefix: str,
    *,
    timezone: str = "Asia/Shanghai",
    now: datetime | None = None,
    catalogue: Catalogue | None = None,
    organisation: Organisation | None = None,
) -> tuple[Case, bool]:
    """The case of ``sealed`` and whether this call created it (False: it existed already).

    ``organisation`` routes the case: its team, the camera's grid and street (none without one); the confirm
    step's due time comes from the catalogue's time limits, counted from ``now`` on the city's clock.

    The number's year is the filing year in the city's ``timezone``; the sequence is allocated in the
    same transaction as the insert, so numbers have no gaps and no duplicates. ``catalogue`` is the
    legal-basis catalogue (default: the shipped one) that gives the repeat window, the suggested
    disposition and the legal-basis snapshot.
    """
    cat = catalogue or default_catalogue()
    if sealed.violation.recheck is not None:
        raise DraftError(f"event {sealed.event_id} is the after package of a camera re-check, not a new violation")
    if sealed.event_id != sealed.violation.event_id:
        raise DraftError(
            f"sealed event id {sealed.event_id!r} differs from its violation's {sealed.violation.event_id!r}"
        )
    found = _existing(session_factory, sealed.event_id)
    if found is not None:
        return found, False
    v = sealed.violation
    hint = v.offender_hint
    plate = normalise_plate(hint.plate if hint else None)
    policy = cat.repeat_policy(v.type)
    created = (now or utcnow()).astimezone(UTC)
    year = created.astimezone(ZoneInfo(timezone)).year
    routing = organisation.explain_route(v.type, v.camera_id, v.location) if organisation is not None else None
    due = cat.time_limit_table().due_for(v.type, "confirm", created, timezone)
    try:
        with write_session(session_factory) as session:
            again = session.scalar(select(Case).where(Case.event_id == sealed.event_id))
            if again is not None:
                return again, False
            # Allocating first takes the sequence row's lock: concurrent drafts are serialised from here on,
            # so each one sees the cases committed before it when looking for repeats.
            number = allocate_number(session, number_prefix, year)
            links = find_repeats(
                session, violation_type=v.type, camera_id=v.camera_id, zone_id=v.zone_id, plate=plate,
                at=v.confirmed_at, window_days=policy.window_days, exclude_event_id=sealed.event_id,
            )
            counted = {"zone": "same_zone", "plate": "same_plate"}
            kinds = {counted[b] for b in policy.by}
            repeat_count = len({cid for cid, kind in links if kind in kinds})
            suggestion = cat.suggest(v.type, repeat_count, plate_read=plate is not None)
            case = Case(
                number=number,
                event_id=sealed.event_id,
                type=v.type,
                camera_id=v.camera_id,
                camera_name=v.camera_name,
                zone_id=v.zone_id,
                zone_name=v.zone_name,
                address=v.location.address,
                lat=v.location.lat,
                lon=v.location.lon,
                started_at=v.started_at,
                confirmed_at=v.confirmed_at,
                dwell_s=v.dwell_s,
                confidence=v.confidence,
                track_ids=list(v.track_ids),
                evidence=[item.model_dump(mode="json") for item in v.evidence],
                manifest_key=sealed.manifest_key,
                manifest_sha256=sealed.manifest_sha256,
                signature_key=sealed.signature_key,
                seal_problems=list(sealed.problems),
                thumbnail_key=_thumbnail_key(sealed),
                violation=v.model_dump(mode="json"),
                status=CaseStatus.DRAFT,
                created_at=created,
                updated_at=created,
                offender_plate=plate,
                offender_hint=hint.model_dump(mode="json") if hint else None,
                repeat_count=repeat_count,
                suggested_disposition=suggestion.disposition,
                disposition=suggestion.as_record(cat),
                legal_basis=cat.snapshot(v.type),
                due_at=due.at if due is not None else None,
                due_step="confirm" if due is not None else None,
                step_started_at=created,
                due_soon_at=(due_soon_from(created, due.at, cat.time_limit_table().due_soon_fraction(v.type))
                             if due is not None else None),
                **_routed(routing, organisation),
            )
            session.add(case)
            session.flush()
            for linked_id, kind in links:
                session.add(CaseLink(case_id=case.id, linked_case_id=linked_id, kind=kind, created_at=created))
            session.add(
                AuditEntry(
                    case_id=case.id, at=created, actor=DRAFTER_ACTOR, action="created",
                    before_status=None, after_status=CaseStatus.DRAFT.value,
                    detail={"event_id": sealed.event_id, "manifest_sha256": sealed.manifest_sha256,
                            "seal_problems": len(sealed.problems), "repeat_count": repeat_count,
                            "suggested_disposition": suggestion.disposition, "rule": suggestion.rule,
                            "catalogue_version": cat.version,
                            **({"routing": routing.as_detail() | {"version": organisation.version}}
                               if routing is not None and organisation is not None else {})},
                )
            )
    except IntegrityError:
        # Another drafter inserted the same event between our check and our insert.
        found = _existing(session_factory, sealed.event_id)
        if found is None:
            raise
        return found, False
    log.info("drafted case %s for event %s (%s, camera %s, %d repeat(s), suggests %s)", case.number, case.event_id,
             case.type, case.camera_id, case.repeat_count, case.suggested_disposition)
    return case, True


def _routed(routing: Routing | None, organisation: Organisation | None) -> dict[str, str | None]:
    """The case's team, grid and street columns from a routing decision."""
    if routing is None or organisation is None:
        return {}
    street = organisation.street_of(routing.grid.id) if routing.grid is not None else None
    return {"team": routing.team.id if routing.team else None, "grid": routing.grid.id if routing.grid else None,
            "street": street.id if street is not None else None}


def dead_letter_value(message: Message, reason: str, group: str) -> bytes:
    """The dead-letter record (the sealer's shape, :mod:`nonsite.bus.deadletter`): why, where from,
    the original value (its start only, with size and sha256, when it is oversized)."""
    return shared_dead_letter_value(message, reason, group)


def _dead_letter(bus: Bus, message: Message, group: str, reason: str) -> None:
    bus.publish(TOPIC_DEAD_LETTER, message.key, dead_letter_value(message, reason, group))
    DEAD_LETTERS.labels(message.topic, group).inc()
    log.warning("dead-lettered %s offset %d: %s", message.topic, message.offset, reason)


def _parse(message: Message) -> EvidenceSealed:
    too_big = oversized_reason(message)
    if too_big:
        raise DraftError(too_big)
    try:
        return EvidenceSealed.model_validate_json(message.value)
    except ValidationError as exc:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ())) or "message"
        if first.get("type") == "json_invalid":
            raise DraftError(f"not valid JSON: {first.get('msg', exc)}") from None
        raise DraftError(
            f"not an EvidenceSealed event ({exc.error_count()} problem(s)); first at {where}: {first.get('msg')}"
        ) from None


def _handle(
    bus: Bus, session_factory: sessionmaker[Session], number_prefix: str, message: Message, group: str,
    timezone: str, catalogue: Catalogue | None = None, check_seal: SealCheck | None = None,
    organisation: Organisation | None = None,
) -> bool:
    """Draft the case of one message (True if a case was created); poison, and a message whose seal does not
    verify, go to the dead letter."""
    try:
        sealed = _parse(message)
        if check_seal is not None:
            problem = check_seal(sealed)
            if problem:
                raise DraftError(f"the announced evidence package does not verify: {problem}")
        if sealed.violation.recheck is not None:  # an after package answers a camera re-check: no new case
            try:
                apply_result(session_factory, sealed, timezone=timezone,
                             time_limits=catalogue.time_limit_table() if catalogue is not None else None)
            except RecheckError as exc:
                raise DraftError(str(exc)) from None
            return False
        _, created = draft_case(session_factory, sealed, number_prefix, timezone=timezone, catalogue=catalogue,
                                organisation=organisation)
        return created
    except (*_TRANSIENT, SealUnavailable):
        raise
    except DraftError as exc:
        _dead_letter(bus, message, group, str(exc))
    except Exception as exc:  # a permanent database refusal of this one event must not stop the others
        log.exception("could not draft a case from %s offset %d", message.topic, message.offset)
        _dead_letter(bus, message, group, f"could not draft a case: {type(exc).__name__}: {exc}")
    return False


def draft_pending(
    bus: Bus,
    session_factory: sessionmaker[Session],
    number_prefix: str,
    *,
    group: str = "nonsite-drafter",
    timezone: str = "Asia/Shanghai",
    poll_timeout_s: float = 0.0,
    catalogue: Catalogue | None = None,
    check_seal: SealCheck | None = None,
    organisation: Organisation | None = None,
) -> int:
    """Drain ``nonsite.evidence`` once (until a poll comes back empty); returns the cases created.

    A transient database error propagates, with the failing message left uncommitted (redelivered).
    """
    consumer = bus.consumer(TOPIC_EVIDENCE, group)
    created = 0
    try:
        while True:
            batch = consumer.poll(max_records=100, timeout_s=poll_timeout_s)
            if not batch:
                return created
            for message in batch:
                created += _handle(bus, session_factory, number_prefix, message, group, timezone, catalogue,
                                   check_seal, organisation)
                consumer.commit(message)
    finally:
        consumer.close()


def run_drafter(
    bus: Bus,
    session_factory: sessionmaker[Session],
    number_prefix: str,
    stop: threading.Event,
    group: str = "nonsite-drafter",
    *,
    timezone: str = "Asia/Shanghai",
    poll_timeout_s: float = 0.5,
    max_backoff_s: float = 30.0,
    catalogue: Catalogue | None = None,
    check_seal: SealCheck | None = None,
    organisation: Organisation | None = None,
) -> None:
    """Consume ``nonsite.evidence`` in consumer group ``group`` until ``stop`` is set.

    When the database is unavailable the message is not committed: the consumer is reopened at the
    committed position and retried with exponential backoff, so nothing is lost or skipped.
    """
    consumer: Consumer = bus.consumer(TOPIC_EVIDENCE, group)
    backoff = 0.5
    try:
        while not stop.is_set():
            try:
                batch = consumer.poll(max_records=100, timeout_s=poll_timeout_s)
            except Exception as exc:  # a poll that fails (broker away, an unreadable log row) must not end us
                log.error("polling %s failed (%s: %s); retrying in %.1f s", TOPIC_EVIDENCE, type(exc).__name__, exc,
                          backoff)
                stop.wait(backoff)
                backoff = min(backoff * 2, max_backoff_s)
                continue
            try:
                for message in batch:
                    if stop.is_set():
                        break
                    _handle(bus, session_factory, number_prefix, message, group, timezone, catalogue, check_seal,
                            organisation)
                    consumer.commit(message)
                backoff = 0.5
            except (*_TRANSIENT, SealUnavailable) as exc:
                log.warning("case database or evidence store unavailable (%s: %s); retrying in %.1f s",
                            exc.__class__.__name__, exc, backoff)
                consumer.close()
                consumer = bus.consumer(TOPIC_EVIDENCE, group)
                stop.wait(backoff)
                backoff = min(backoff * 2, max_backoff_s)
    finally:
        consumer.close()
