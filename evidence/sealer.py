"""The evidence sealer: a consumer of ``nonsite.violations`` that re-hashes each event's blobs, writes a
signed ``manifest.json`` into the package, and announces it on ``nonsite.evidence``.

At-least-once and idempotent by event id: a redelivered event whose package already carries a valid
manifest is answered from that manifest, nothing is rewritten. Where the store has object lock, every
artifact, the manifest and its signature get object retention (``retain_days`` from sealing, compliance
mode by default) before the package is announced.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import TypeVar

from nonsite.bus.base import Bus, Consumer, Message
from nonsite.bus.deadletter import UnusableMessage, dead_letter_value, parse_message
from nonsite.bus.events import (
    TOPIC_DEAD_LETTER,
    TOPIC_EVIDENCE,
    TOPIC_VIOLATIONS,
    EvidenceItem,
    EvidenceSealed,
    ViolationEvent,
    utcnow,
)
from nonsite.bus.faults import fault_point
from nonsite.bus.metrics import DEAD_LETTERS
from nonsite.evidence.manifest import build_manifest, canonical_json, parse_manifest, parse_time
from nonsite.evidence.package import (
    MANIFEST_NAME,
    SIGNATURE_NAME,
    manifest_key,
    name_in_package,
    package_prefix,
    signature_key,
)
from nonsite.evidence.signing import Signer, verify_signature
from nonsite.evidence.store import BadKeyError, Store, StoreError

log = logging.getLogger(__name__)

DEFAULT_GROUP = "nonsite-sealer"
T = TypeVar("T")
R = TypeVar("R")
_IO_WORKERS = 8
_io_pool: ThreadPoolExecutor | None = None
_io_pool_lock = threading.Lock()
_RETRY_MIN_S = 0.5
_RETRY_MAX_S = 30.0
_MAX_OTHER_FAILURES = 5


class PoisonMessage(Exception):
    """The message can never be sealed (bad JSON, bad schema, unusable keys): it goes to the dead-letter topic."""


def _check_event(event: ViolationEvent) -> None:
    prefix = package_prefix(event.event_id)  # ValueError for an id that cannot name a package
    reserved = {prefix + MANIFEST_NAME, prefix + SIGNATURE_NAME}
    seen: set[str] = set()
    for item in event.evidence:
        if item.key in reserved:
            raise ValueError(f"evidence item {item.role!r} uses the reserved key {item.key!r}")
        if item.key in seen:
            raise ValueError(f"evidence key {item.key!r} is listed twice")
        seen.add(item.key)


def _existing_seal(store: Store, signer: Signer, event: ViolationEvent) -> EvidenceSealed | None:
    """The result of an earlier seal of this event, when its manifest is there and verifies."""
    mkey, skey = manifest_key(event.event_id), signature_key(event.event_id)
    try:
        data = store.get(mkey)
        sig = store.get(skey)
    except KeyError:
        return None
    if not verify_signature(signer.public_key_pem(), data, sig):
        log.warning("event %s: the existing manifest does not verify with this sealer's key; sealing again",
                    event.event_id)
        return None
    try:
        manifest = parse_manifest(data)
        if manifest["event_id"] != event.event_id:
            return None
        sealed_at = parse_time(manifest["sealed_at"])
        problems = [str(p) for p in manifest.get("sealing_problems", [])]
    except (ValueError, TypeError, KeyError):
        return None
    return _sealed(event, data, signer, sealed_at, problems)


def _io_map(fn: Callable[[T], R], items: list[T]) -> list[R]:
    """``[fn(i) for i in items]``, concurrently: a remote store answers each request with a round trip, so
    the sealer overlaps them (in order; the first exception propagates)."""
    global _io_pool
    if len(items) <= 1:
        return [fn(i) for i in items]
    with _io_pool_lock:
        if _io_pool is None:
            _io_pool = ThreadPoolExecutor(max_workers=_IO_WORKERS, thread_name_prefix="sealer-io")
    return list(_io_pool.map(fn, items))


def check_blobs(store: Store, event: ViolationEvent) -> list[str]:
    """Re-hash every blob ``event`` lists; one line per blob that is missing or differs."""

    def check(item: EvidenceItem) -> str | None:
        name = name_in_package(item.key, event.event_id)
        try:
            data = store.get(item.key)
        except KeyError:
            return f"{name}: missing"
        got = hashlib.sha256(data).hexdigest()
        if got != item.sha256:
            return f"{name}: sha256 differs (expected {item.sha256}, got {got})"
        if len(data) != item.bytes:
            return f"{name}: size differs (expected {item.bytes} bytes, got {len(data)})"
        return None

    return [p for p in _io_map(check, list(event.evidence)) if p]


def retain_package(
    store: Store, event: ViolationEvent, sealed: EvidenceSealed, days: int, mode: str = "compliance"
) -> bool:
    """Object retention on every artifact, the manifest and the signature until ``sealed_at + days``.

    False (and nothing set) when ``days`` is 0 or the store has no object lock (a local directory, a server
    without it). Idempotent: a retention already in force until that date or later is left alone.
    """
    retain = getattr(store, "retain", None)
    if days <= 0 or retain is None:
        return False
    until = sealed.sealed_at + timedelta(days=days)
    keys = [item.key for item in event.evidence] + [sealed.manifest_key, sealed.signature_key]

    def one(key: str) -> bool:
        try:
            return bool(retain(key, until, mode))
        except KeyError:  # a blob the edge never stored: already a sealing problem in the manifest
            return False

    return any(_io_map(one, keys))


def seal(
    store: Store, signer: Signer, event: ViolationEvent, *, retain_days: int = 0, retain_mode: str = "compliance"
) -> EvidenceSealed:
    """Verify the event's blobs, write ``manifest.json`` and ``manifest.sig`` into its package, set object
    retention where the store supports it, and describe it.

    Idempotent: when a manifest for this event already exists and verifies, its result is returned unchanged.
    Raises ValueError for an event that cannot be sealed (bad id, reserved or duplicate keys) and StoreError
    when the store fails (retry later).
    """
    _check_event(event)
    existing = _existing_seal(store, signer, event)
    if existing is not None:
        retain_package(store, event, existing, retain_days, retain_mode)
        return existing
    problems = check_blobs(store, event)
    if problems:
        log.warning("event %s sealed with problems: %s", event.event_id, "; ".join(problems))
    sealed_at = utcnow()
    manifest = build_manifest(
        event, sealed_at=sealed_at, public_key_fingerprint=signer.fingerprint(), problems=problems
    )
    data = canonical_json(manifest)
    mkey, skey = manifest_key(event.event_id), signature_key(event.event_id)
    # Manifest first, then its signature: a crash between the two leaves an unsigned manifest, which the
    # redelivered event seals again.
    store.put(mkey, data, "application/json")
    fault_point("sealer.after_manifest")
    store.put(skey, signer.sign(data), "application/octet-stream")
    sealed = _sealed(event, data, signer, sealed_at, problems)
    retain_package(store, event, sealed, retain_days, retain_mode)
    return sealed


def _parse(message: Message) -> ViolationEvent:
    try:
        event = parse_message(message, ViolationEvent, "a valid ViolationEvent")
    except UnusableMessage as e:
        raise PoisonMessage(str(e)) from None
    try:
        _check_event(event)
    except ValueError as e:
        raise PoisonMessage(str(e)) from None
    return event


def _dead_letter(bus: Bus, message: Message, group: str, reason: str) -> None:
    bus.publish(TOPIC_DEAD_LETTER, message.key, dead_letter_value(message, reason, group))
    DEAD_LETTERS.labels(message.topic, group).inc()


def _handle(
    bus: Bus, store: Store, signer: Signer, message: Message, group: str, retain_days: int = 0,
    retain_mode: str = "compliance", verify: bool = False,
) -> bool:
    """Seal one message and publish the result (or dead-letter it). True when sealed.

    Transient failures (store or bus down) raise; the caller must not commit then.
    """
    try:
        event = _parse(message)
    except PoisonMessage as e:
        log.warning("dead-lettering %s[%d] offset %d: %s", message.topic, message.partition, message.offset, e)
        _dead_letter(bus, message, group, str(e))
        return False
    try:
        sealed = seal(store, signer, event, retain_days=retain_days, retain_mode=retain_mode)
    except ValueError as e:  # cannot be sealed, ever
        log.warning("dead-lettering event %s: %s", event.event_id, e)
        _dead_letter(bus, message, group, str(e))
        return False
    if verify:
        _verify_sealed(store, signer, event.event_id)
    bus.publish(TOPIC_EVIDENCE, event.camera_id, sealed.model_dump_json().encode("utf-8"))
    log.info("sealed event %s (%d artifact(s), %d problem(s))", event.event_id, len(event.evidence),
             len(sealed.problems))
    return True


def _verify_sealed(store: Store, signer: Signer, event_id: str) -> None:
    """Read the package back from the store and verify it (counted in nonsite_evidence_verify_total). A failure
    is logged as an error (the alert fires) and the case goes on: its page shows what does not verify."""
    from nonsite.evidence.verify import verify_package

    result = verify_package(store, event_id, signer.public_key_pem())
    if not result.ok:
        log.error("evidence package %s does not verify right after sealing: %s", event_id,
                  "; ".join(result.problems))


def _handle_with_retry(
    bus: Bus, store: Store, signer: Signer, message: Message, group: str, stop: threading.Event,
    retain_days: int = 0, retain_mode: str = "compliance", verify: bool = False,
) -> bool:
    """Handle ``message`` until it is sealed or dead-lettered (True), or ``stop`` is set first (False).

    Store failures are retried for as long as they last (an outage must not dead-letter every event);
    any other error is retried a few times, then the message is dead-lettered with the error as reason.
    """
    delay = _RETRY_MIN_S
    other_failures = 0
    while True:
        try:
            _handle(bus, store, signer, message, group, retain_days, retain_mode, verify)
            return True
        except BadKeyError as e:  # the event names a key no store can hold: retrying cannot fix that
            log.error("handling %s offset %d failed for good: %s", message.topic, message.offset, e)
            if _dead_letter_or_keep(bus, message, group, f"unusable evidence key: {e}", delay):
                return True
        except (StoreError, OSError) as e:
            log.error("sealing %s offset %d failed (%s); retrying in %.1f s", message.topic, message.offset, e, delay)
        except Exception as e:
            other_failures += 1
            reason = f"sealer error: {type(e).__name__}: {e}"
            log.error("handling %s offset %d failed (%s), attempt %d", message.topic, message.offset, reason,
                      other_failures)
            if other_failures >= _MAX_OTHER_FAILURES and _dead_letter_or_keep(bus, message, group, reason, delay):
                return True
        if stop.wait(delay):
            return False
        delay = min(delay * 2, _RETRY_MAX_S)


def _dead_letter_or_keep(bus: Bus, message: Message, group: str, reason: str, delay: float) -> bool:
    """Dead-letter ``message``; False (keep it, retry later) when the bus itself refuses."""
    try:
        _dead_letter(bus, message, group, reason)
        return True
    except Exception as e:  # the bus itself is down: keep the message and keep trying
        log.error("cannot publish to %s either (%s); retrying in %.1f s", TOPIC_DEAD_LETTER, e, delay)
        return False


def _poll(consumer: Consumer, stop: threading.Event, max_records: int, timeout_s: float) -> list[Message]:
    """One poll; a failing poll (broker away, a log row that cannot be read) is logged and answered empty after
    a short wait, so the consumer loop lives on."""
    try:
        return consumer.poll(max_records=max_records, timeout_s=timeout_s)
    except Exception as e:
        log.error("polling failed (%s: %s); polling again in %.1f s", type(e).__name__, e, _RETRY_MIN_S)
        stop.wait(_RETRY_MIN_S)
        return []


def _commit_with_retry(consumer: Consumer, message: Message, stop: threading.Event) -> bool:
    delay = _RETRY_MIN_S
    while True:
        try:
            consumer.commit(message)
            return True
        except Exception as e:  # a redelivery after this is harmless: sealing is idempotent
            log.error("committing %s offset %d failed (%s); retrying in %.1f s", message.topic, message.offset,
                      e, delay)
        if stop.wait(delay):
            return False
        delay = min(delay * 2, _RETRY_MAX_S)


def run_sealer(
    bus: Bus, store: Store, signer: Signer, stop: threading.Event, group: str = DEFAULT_GROUP, *,
    retain_days: int = 0, retain_mode: str = "compliance", verify: bool = False,
) -> None:
    """Consume ``nonsite.violations`` until ``stop`` is set.

    A poisoned message is dead-lettered and committed; a store or bus failure is retried with backoff
    (without committing, so nothing is lost if the process stops meanwhile). ``retain_days`` > 0 sets
    object retention on each package where the store supports it. ``verify`` reads every sealed package back
    and verifies it (``sealer.verify_after_seal``).
    """
    consumer: Consumer = bus.consumer(TOPIC_VIOLATIONS, group)
    try:
        while not stop.is_set():
            for message in _poll(consumer, stop, 50, 0.5):
                if not _handle_with_retry(bus, store, signer, message, group, stop, retain_days, retain_mode,
                                          verify):
                    return  # stopped while retrying; not committed, so redelivered on the next start
                fault_point("sealer.before_commit")
                if not _commit_with_retry(consumer, message, stop):
                    return
                if stop.is_set():
                    return
    finally:
        consumer.close()


def seal_pending(
    bus: Bus, store: Store, signer: Signer, group: str = DEFAULT_GROUP, *, retain_days: int = 0,
    retain_mode: str = "compliance",
) -> int:
    """Seal everything waiting on ``nonsite.violations`` once, then return the number of events sealed.

    Poisoned messages are dead-lettered and committed; a store or bus failure raises (uncommitted).
    """
    consumer = bus.consumer(TOPIC_VIOLATIONS, group)
    sealed = 0
    try:
        while True:
            messages = consumer.poll(max_records=100, timeout_s=0.1)
            if not messages:
                return sealed
            for message in messages:
                sealed += _handle(bus, store, signer, message, group, retain_days, retain_mode)
                consumer.commit(message)
    finally:
        consumer.close()


def _sealed(event: ViolationEvent, manifest: bytes, signer: Signer, sealed_at: datetime, problems: list[str]
            ) -> EvidenceSealed:
    """The ``nonsite.evidence`` message of a sealed package."""
    return EvidenceSealed(
        event_id=event.event_id,
        violation=event,
        manifest_key=manifest_key(event.event_id),
        manifest_sha256=hashlib.sha256(manifest).hexdigest(),
        signature_key=signature_key(event.event_id),
        public_key_fingerprint=signer.fingerprint(),
        sealed_at=sealed_at,
        problems=problems,
    )
