"""``nonsite evidence verify``: recompute a package's hashes and signature and say what differs."""

from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass, field
from typing import TextIO

from nonsite.evidence.manifest import manifest_artifacts, manifest_fingerprint, parse_manifest, parse_time
from nonsite.evidence.package import (
    MANIFEST_NAME,
    PACKAGES_ROOT,
    SIGNATURE_NAME,
    check_event_id,
    manifest_key,
    name_in_package,
    package_prefix,
    signature_key,
)
from nonsite.evidence.signing import SigningError
from nonsite.evidence.store import Store, StoreError
from nonsite.evidence.trust import KeyRing, UntrustedKeyError

#: What verifies signatures: a ring of trusted keys, or one public key (PEM) the caller chose.
Keys = KeyRing | str | bytes


def as_ring(keys: Keys) -> KeyRing:
    return keys if isinstance(keys, KeyRing) else KeyRing.of_pem(keys)


class UnknownEventError(LookupError):
    """The store holds no package for this event id."""


@dataclass
class VerifyResult:
    ok: bool
    event_id: str
    problems: list[str] = field(default_factory=list)
    files: int = 0  # artifacts the manifest lists
    signed_by: str = ""  # the trusted key that made the signature (its label), when it verifies
    deleted: str = ""  # for a package deleted by retention: the verified deletion record, in words


def verify_package(store: Store, event_id: str, public_key_pem: Keys) -> VerifyResult:
    """Verify one package and count the result (``nonsite_evidence_verify_total{result}``); see
    :func:`_verify_package`."""
    from nonsite.evidence.metrics import VERIFIED

    result = _verify_package(store, event_id, public_key_pem)
    VERIFIED.labels(result="ok" if result.ok else "failed").inc()
    return result


def _verify_package(store: Store, event_id: str, public_key_pem: Keys) -> VerifyResult:
    """Check ``events/<event_id>/``: signature over manifest.json, every listed artifact's presence and
    sha256, and no file the manifest does not list.

    Raises :class:`UnknownEventError` when the store has nothing under that prefix, ValueError for an id that
    cannot name a package, :class:`~nonsite.evidence.signing.SigningError` for an unusable public key.
    """
    check_event_id(event_id)
    ring = as_ring(public_key_pem)  # SigningError early, before any per-package output
    prefix = package_prefix(event_id)
    present = set(store.list(prefix))
    if not present:
        raise UnknownEventError(event_id)
    mkey, skey = manifest_key(event_id), signature_key(event_id)
    problems: list[str] = []
    try:
        data = store.get(mkey)
    except KeyError:
        return VerifyResult(False, event_id, [f"{MANIFEST_NAME}: missing (package never sealed)"])

    try:
        sig: bytes | None = store.get(skey)
    except KeyError:
        sig = None
        problems.append(f"{SIGNATURE_NAME}: missing")

    try:
        manifest = parse_manifest(data)
    except ValueError as e:
        manifest = None
        problems.append(f"{MANIFEST_NAME}: {e}")

    signed_by = ""
    if sig is not None:
        try:
            signed_by = _check_signature(ring, manifest, data, sig)
        except UntrustedKeyError as e:
            problems.append(f"{SIGNATURE_NAME}: {e}")

    if manifest is None:
        return VerifyResult(False, event_id, problems)

    if manifest.get("event_id") != event_id:
        problems.append(f"{MANIFEST_NAME}: names event {manifest.get('event_id')!r}, not {event_id!r}")
    try:
        artifacts = manifest_artifacts(manifest)
    except ValueError as e:
        problems.append(f"{MANIFEST_NAME}: {e}")
        return VerifyResult(False, event_id, problems)

    listed: set[str] = set()
    for item in artifacts:
        listed.add(item.key)
        name = name_in_package(item.key, event_id)
        try:
            blob = store.get(item.key)
        except KeyError:
            problems.append(f"{name}: missing")
            continue
        got = hashlib.sha256(blob).hexdigest()
        if got != item.sha256:
            problems.append(f"{name}: sha256 differs (expected {item.sha256}, got {got})")
        elif len(blob) != item.bytes:
            problems.append(f"{name}: size differs (expected {item.bytes} bytes, got {len(blob)})")
    for key in sorted(present - listed - {mkey, skey}):
        problems.append(f"{name_in_package(key, event_id)}: extra file not in manifest")
    return VerifyResult(not problems, event_id, problems, files=len(artifacts), signed_by=signed_by)


def _check_signature(ring: KeyRing, manifest: dict[str, object] | None, data: bytes, sig: bytes) -> str:
    """The label of the trusted key that made ``sig``; UntrustedKeyError saying what is wrong.

    With pinned keys, the key the (signed) manifest names must be trusted for its sealing time. With one key the
    caller chose, that key must verify (the manifest's named key is only reported when they differ)."""
    named = manifest_fingerprint(manifest) if manifest else ""
    try:
        sealed_at = parse_time(str(manifest["sealed_at"])) if manifest else None
    except (ValueError, TypeError):
        sealed_at = None
    if ring.pinned:
        return ring.verify(data, sig, named, sealed_at).label()
    if not ring.keys:
        raise UntrustedKeyError("no trusted key to check the signature with")
    key = ring.keys[0]
    try:
        return ring.verify(data, sig, key.fingerprint, sealed_at).label()
    except UntrustedKeyError:
        msg = "signature does not verify"
        if named and named != key.fingerprint:
            msg += f" (the manifest names key {named[:16]}..., the given public key is {key.fingerprint[:16]}...)"
        raise UntrustedKeyError(msg) from None


def check_sealed(store: Store, ring: KeyRing, event_id: str, manifest_key_: str, manifest_sha256: str,
                 signature_key_: str, fingerprint: str) -> str | None:
    """Why a ``nonsite.evidence`` message must not be believed (None when its package's manifest is the one it
    announces, signed by a trusted key). Raises StoreError when the store cannot be read (retry later)."""
    if ring.pinned is False and not ring.keys:
        raise StoreError("no trusted signing key is known yet (none pinned, none published)")
    try:
        data = store.get(manifest_key_)
    except KeyError:
        return f"{manifest_key_} is missing"
    if hashlib.sha256(data).hexdigest() != manifest_sha256:
        return f"{manifest_key_} differs from the sha256 the message announces"
    try:
        sig = store.get(signature_key_)
    except KeyError:
        return f"{signature_key_} is missing"
    try:
        manifest = parse_manifest(data)
    except ValueError as e:
        return f"{MANIFEST_NAME}: {e}"
    if manifest.get("event_id") != event_id:
        return f"{MANIFEST_NAME} names event {manifest.get('event_id')!r}, not {event_id!r}"
    if manifest_fingerprint(manifest) != fingerprint:
        return f"the message names key {fingerprint[:16]}..., the manifest {manifest_fingerprint(manifest)[:16]}..."
    try:
        _check_signature(ring, manifest, data, sig)
    except UntrustedKeyError as e:
        return f"{SIGNATURE_NAME}: {e}"
    return None


def package_ids(store: Store) -> list[str]:
    """Event ids of every package in the store, sorted."""
    ids = set()
    for key in store.list(PACKAGES_ROOT):
        rest = key[len(PACKAGES_ROOT):]
        if "/" in rest:
            ids.add(rest.split("/", 1)[0])
    return sorted(ids)


def verify_all(store: Store, public_key_pem: Keys) -> list[VerifyResult]:
    results = []
    for event_id in package_ids(store):
        try:
            results.append(verify_package(store, event_id, public_key_pem))
        except ValueError as e:  # a folder whose name cannot be an event id
            results.append(VerifyResult(False, event_id, [str(e)]))
        except UnknownEventError:  # removed while we were listing
            continue
    return results


def vanished(store: Store, ring: KeyRing, known: dict[str, str], present: set[str]) -> list[VerifyResult]:
    """A result for every package the case database knows (``known``: event id -> case number) that the
    store lacks: ok only with a deletion record signed by a trusted key."""
    from nonsite.evidence.retention import verified_tombstone

    out = []
    for event_id in sorted(set(known) - present):
        record, why = verified_tombstone(store, event_id, ring)
        if record is not None and not why:
            out.append(VerifyResult(True, event_id, deleted=f"deleted by the retention job on "
                                    f"{record.get('deleted_at')} (case {known[event_id]}); record signed by "
                                    f"{record['verified_by']}"))
        else:
            detail = why if record is not None else "there is no signed deletion record"
            out.append(VerifyResult(False, event_id, [f"package missing: case {known[event_id]} has it; {detail}"]))
    return out


def _print(result: VerifyResult, out: TextIO) -> None:
    if result.ok and result.deleted:
        print(f"DELETED {result.event_id} ({result.deleted})", file=out)
        return
    if result.ok:
        signed = f"; signed by {result.signed_by}" if result.signed_by else ""
        print(f"OK {result.event_id} ({result.files} files{signed})", file=out)
    else:
        print(f"FAIL {result.event_id}", file=out)
        for p in result.problems:
            print(f"  {p}", file=out)


def verify_command(
    store: Store,
    public_key_pem: Keys,
    event_id: str | None,
    all_: bool,
    out: TextIO | None = None,
    err: TextIO | None = None,
    known: dict[str, str] | None = None,
) -> int:
    """Print one verdict per package; 0 when all verify, 1 when any fails, 2 for bad usage or an unknown id.

    ``known`` (event id -> case number, from the case database) makes ``--all`` also check the packages that
    should be there: one that is gone without a deletion record signed by a trusted key fails."""
    out = out or sys.stdout
    err = err or sys.stderr
    if all_ == (event_id is not None):
        print("give exactly one of: an EVENT_ID, or --all", file=err)
        return 2
    try:
        if all_:
            results = verify_all(store, public_key_pem)
            results += vanished(store, as_ring(public_key_pem), known or {}, {r.event_id for r in results})
            if not results:
                print("no evidence packages in the store", file=out)
                return 0
        else:
            assert event_id is not None
            results = [verify_package(store, event_id, public_key_pem)]
    except UnknownEventError:
        from nonsite.evidence.retention import tombstone_key, verified_tombstone

        gone, why = verified_tombstone(store, event_id, as_ring(public_key_pem)) if event_id else (None, "")
        if gone is not None and not why:
            print(
                f"the evidence package of event {event_id} was deleted by the retention job on "
                f"{gone.get('deleted_at')} ({gone.get('reason')}; case {gone.get('case_number')}, dismissed "
                f"{gone.get('dismissed_at')}); record: {tombstone_key(event_id)}, signed by {gone['verified_by']}",
                file=err,
            )
            return 2
        if gone is not None:
            print(f"FAIL {event_id}\n  package missing; {why}", file=out)
            return 1
        if event_id in (known or {}):
            print(f"FAIL {event_id}\n  package missing: case {(known or {})[event_id]} has it, and there is no "
                  "signed deletion record", file=out)
            return 1
        print(
            f"no evidence package for event {event_id} in {store!r}; check the id "
            "(`nonsite evidence verify --all` checks every package)",
            file=err,
        )
        return 2
    except ValueError as e:
        print(str(e), file=err)
        return 2
    except SigningError as e:
        print(str(e), file=err)
        return 2
    except StoreError as e:
        print(f"cannot read the evidence store: {e}", file=err)
        return 2
    for r in results:
        _print(r, out)
    if all_:
        failed = sum(not r.ok for r in results)
        deleted = sum(bool(r.deleted) for r in results)
        packages = len(results) - deleted
        print(f"{packages - failed} of {packages} package(s) verify"
              + (f"; {deleted} deleted by retention with a signed record" if deleted else ""), file=out)
    return 0 if all(r.ok for r in results) else 1
