"""``nonsite evidence retention``: the evidence of dismissed cases is deleted once its period is over; the
evidence of confirmed cases is kept, and its object lock extended where the store has one.

Works on :class:`CaseState` records (the CLI reads them from the case database, read-only, so this module
does not depend on ``cases``). For each case:

- **dismissed**, and dismissed more than ``dismissed_delete_after_days`` ago: every file of its package is
  deleted and a tombstone ``retention/deleted/<event_id>.json`` is written (what went, when, why: the
  case number and its dismissal), so ``verify`` later says why the package is gone. A package still under
  object retention is reported and kept.
- **confirmed** or further along (approved, returned, dispatched, rectified, closed): kept; where the store
  has object lock, retention is extended to ``sealed + confirmed_days``.
- **draft**: kept as it is (its lock from sealing stays).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from nonsite.config.services import RetentionConfig
from nonsite.evidence.manifest import canonical_json, iso_utc, parse_manifest, parse_time
from nonsite.evidence.package import manifest_key, package_prefix
from nonsite.evidence.signing import Signer
from nonsite.evidence.store import Store, StoreError
from nonsite.evidence.trust import KeyRing, UntrustedKeyError

TOMBSTONES = "retention/deleted/"
DISMISSED = "dismissed"
#: Statuses whose evidence is kept (and its lock extended): confirmed and everything after it.
KEPT_STATUSES = frozenset({"confirmed", "approved", "returned", "dispatched", "rectified", "closed"})


@dataclass(frozen=True)
class CaseState:
    """What the retention policy needs to know about one case."""

    event_id: str
    case_number: str
    status: str
    created_at: datetime  # when the case was drafted (the sealing time when the manifest cannot be read)
    dismissed_at: datetime | None = None  # when it was dismissed (the latest dismissal in its audit log)


@dataclass
class RetentionAction:
    event_id: str
    case_number: str
    status: str
    action: str  # deleted | would-delete | locked | extended | would-extend | kept | failed
    detail: str = ""


def tombstone_key(event_id: str) -> str:
    return f"{TOMBSTONES}{event_id}.json"


def tombstone_signature_key(event_id: str) -> str:
    return f"{TOMBSTONES}{event_id}.json.sig"


def read_tombstone(store: Store, event_id: str) -> dict[str, object] | None:
    """The record the retention job left when it deleted ``event_id``'s package, if it did (unchecked: use
    :func:`verified_tombstone` before believing it)."""
    try:
        record = json.loads(store.get(tombstone_key(event_id)))
    except (KeyError, ValueError, StoreError):
        return None
    return record if isinstance(record, dict) else None


def verified_tombstone(store: Store, event_id: str, ring: KeyRing) -> tuple[dict[str, object] | None, str]:
    """(the deletion record of ``event_id``, "") when it exists and carries a valid signature by a trusted key;
    (record or None, why it cannot be believed) otherwise. An unsigned record proves nothing: anyone who can
    delete a package can write one."""
    try:
        data = store.get(tombstone_key(event_id))
    except KeyError:
        return None, "no deletion record"
    except StoreError as e:
        return None, f"cannot read the deletion record: {e}"
    record = read_tombstone(store, event_id)
    if record is None or record.get("event_id") != event_id:
        return None, f"the deletion record {tombstone_key(event_id)} is malformed"
    try:
        sig = store.get(tombstone_signature_key(event_id))
    except (KeyError, StoreError):
        return record, f"the deletion record {tombstone_key(event_id)} is not signed"
    try:
        deleted_at = parse_time(str(record.get("deleted_at")))
    except (ValueError, TypeError):
        deleted_at = None
    try:
        key = ring.verify(data, sig, str(record.get("signed_by", "")), deleted_at)
    except UntrustedKeyError as e:
        return record, f"the deletion record {tombstone_key(event_id)}: {e}"
    record["verified_by"] = key.label()
    return record, ""


def _sealed_at(store: Store, case: CaseState) -> datetime:
    try:
        return parse_time(str(parse_manifest(store.get(manifest_key(case.event_id)))["sealed_at"]))
    except (KeyError, ValueError, TypeError):
        return case.created_at


def _locked_until(store: Store, keys: list[str], now: datetime) -> datetime | None:
    retention = getattr(store, "retention", None)
    if retention is None:
        return None
    latest = None
    for key in keys:
        held = retention(key)
        if held is not None and held[1] > now and (latest is None or held[1] > latest):
            latest = held[1]
    return latest


def apply_retention(
    store: Store, cases: list[CaseState], cfg: RetentionConfig, *, dry_run: bool = False,
    now: datetime | None = None, signer: Signer | None = None,
) -> list[RetentionAction]:
    """Apply the policy to every case's package (see the module docstring); what was (or would be) done."""
    now = (now or datetime.now(UTC)).astimezone(UTC)
    actions: list[RetentionAction] = []
    for case in cases:
        status = str(case.status)
        act = RetentionAction(case.event_id, case.case_number, status, "kept")
        try:
            if status == DISMISSED:
                _dismissed(store, case, case.dismissed_at or case.created_at, cfg, now, dry_run, act, signer)
            elif status in KEPT_STATUSES:
                _confirmed(store, case, cfg, dry_run, act)
        except StoreError as e:
            act.action, act.detail = "failed", str(e)
        if act.action != "kept" or act.detail:
            actions.append(act)
    return actions


def _dismissed(store: Store, case: CaseState, dismissed: datetime, cfg: RetentionConfig, now: datetime, dry_run: bool,
               act: RetentionAction, signer: Signer | None) -> None:
    due = dismissed + timedelta(days=cfg.dismissed_delete_after_days)
    if due > now:
        act.detail = f"dismissed {iso_utc(dismissed)}; deletion due {iso_utc(due)}"
        return
    keys = list(store.list(package_prefix(case.event_id)))
    if not keys:
        return  # deleted before
    locked = _locked_until(store, keys, now)
    if locked is not None:
        act.action, act.detail = "locked", f"under object retention until {iso_utc(locked)}; kept until then"
        return
    if dry_run:
        act.action, act.detail = "would-delete", f"{len(keys)} file(s); dismissed {iso_utc(dismissed)}"
        return
    if signer is None:
        act.action, act.detail = "failed", "no signing key: a deletion must leave a signed record; kept"
        return
    record = {
        "event_id": case.event_id, "case_number": case.case_number, "reason": "dismissed case, retention period over",
        "dismissed_at": iso_utc(dismissed), "deleted_at": iso_utc(now),
        "policy_days": cfg.dismissed_delete_after_days, "files": keys, "signed_by": signer.fingerprint(),
    }
    data = canonical_json(record)
    # The signed record first: a package never disappears without one (a crash after it deletes nothing).
    store.put(tombstone_key(case.event_id), data, "application/json")
    store.put(tombstone_signature_key(case.event_id), signer.sign(data), "application/octet-stream")
    for key in keys:
        store.delete(key)
    act.action, act.detail = "deleted", f"{len(keys)} file(s); dismissed {iso_utc(dismissed)}"


def _confirmed(store: Store, case: CaseState, cfg: RetentionConfig, dry_run: bool, act: RetentionAction) -> None:
    retain = getattr(store, "retain", None)
    if retain is None or cfg.confirmed_days <= 0 or not getattr(store, "lock_supported", False):
        return
    until = _sealed_at(store, case) + timedelta(days=cfg.confirmed_days)
    keys = list(store.list(package_prefix(case.event_id)))
    held = [getattr(store, "retention")(k) for k in keys]  # noqa: B009
    if keys and all(h is not None and h[1] >= until.replace(microsecond=0) for h in held):
        return
    if dry_run:
        act.action, act.detail = "would-extend", f"lock until {iso_utc(until)}"
        return
    for key in keys:
        retain(key, until, cfg.mode)
    act.action, act.detail = "extended", f"lock until {iso_utc(until)} ({cfg.mode})"


def print_report(actions: list[RetentionAction], *, dry_run: bool) -> int:
    """One line per package acted on; 1 when any action failed."""
    counts: dict[str, int] = {}
    for a in actions:
        counts[a.action] = counts.get(a.action, 0) + 1
        print(f"{a.action:12} {a.case_number} {a.event_id} ({a.status}) {a.detail}".rstrip())
    summary = ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "nothing to do"
    print(("dry run: " if dry_run else "") + summary)
    return 1 if counts.get("failed") else 0
