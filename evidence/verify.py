"""``nonsite evidence verify``: recompute a package's hashes and signature and say what differs."""

from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass, field
from typing import TextIO

from nonsite.evidence.manifest import manifest_artifacts, manifest_fingerprint, parse_manifest
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
from nonsite.evidence.signing import SigningError, public_key_fingerprint, verify_signature
from nonsite.evidence.store import Store, StoreError


class UnknownEventError(LookupError):
    """The store holds no package for this event id."""


@dataclass
class VerifyResult:
    ok: bool
    event_id: str
    problems: list[str] = field(default_factory=list)
    files: int = 0  # artifacts the manifest lists


def verify_package(store: Store, event_id: str, public_key_pem: str | bytes) -> VerifyResult:
    """Verify one package and count the result (``nonsite_evidence_verify_total{result}``); see
    :func:`_verify_package`."""
    from nonsite.evidence.metrics import VERIFIED

    result = _verify_package(store, event_id, public_key_pem)
    VERIFIED.labels(result="ok" if result.ok else "failed").inc()
    return result


def _verify_package(store: Store, event_id: str, public_key_pem: str | bytes) -> VerifyResult:
    """Check ``events/<event_id>/``: signature over manifest.json, every listed artifact's presence and
    sha256, and no file the manifest does not list.

    Raises :class:`UnknownEventError` when the store has nothing under that prefix, ValueError for an id that
    cannot name a package, :class:`~nonsite.evidence.signing.SigningError` for an unusable public key.
    """
    check_event_id(event_id)
    given_fp = public_key_fingerprint(public_key_pem)  # SigningError early, before any per-package output
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

    if sig is not None and not verify_signature(public_key_pem, data, sig):
        msg = f"{SIGNATURE_NAME}: signature does not verify"
        named_fp = manifest_fingerprint(manifest) if manifest else ""
        if named_fp and named_fp != given_fp:
            msg += f" (the manifest names key {named_fp[:16]}..., the given public key is {given_fp[:16]}...)"
        problems.append(msg)

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
    return VerifyResult(not problems, event_id, problems, files=len(artifacts))


def package_ids(store: Store) -> list[str]:
    """Event ids of every package in the store, sorted."""
    ids = set()
    for key in store.list(PACKAGES_ROOT):
        rest = key[len(PACKAGES_ROOT):]
        if "/" in rest:
            ids.add(rest.split("/", 1)[0])
    return sorted(ids)


def verify_all(store: Store, public_key_pem: str | bytes) -> list[VerifyResult]:
    results = []
    for event_id in package_ids(store):
        try:
            results.append(verify_package(store, event_id, public_key_pem))
        except ValueError as e:  # a folder whose name cannot be an event id
            results.append(VerifyResult(False, event_id, [str(e)]))
        except UnknownEventError:  # removed while we were listing
            continue
    return results


def _print(result: VerifyResult, out: TextIO) -> None:
    if result.ok:
        print(f"OK {result.event_id} ({result.files} files)", file=out)
    else:
        print(f"FAIL {result.event_id}", file=out)
        for p in result.problems:
            print(f"  {p}", file=out)


def verify_command(
    store: Store,
    public_key_pem: str | bytes,
    event_id: str | None,
    all_: bool,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Print one verdict per package; 0 when all verify, 1 when any fails, 2 for bad usage or an unknown id."""
    out = out or sys.stdout
    err = err or sys.stderr
    if all_ == (event_id is not None):
        print("give exactly one of: an EVENT_ID, or --all", file=err)
        return 2
    try:
        if all_:
            results = verify_all(store, public_key_pem)
            if not results:
                print("no evidence packages in the store", file=out)
                return 0
        else:
            assert event_id is not None
            results = [verify_package(store, event_id, public_key_pem)]
    except UnknownEventError:
        from nonsite.evidence.retention import read_tombstone, tombstone_key

        gone = read_tombstone(store, event_id) if event_id else None
        if gone is not None:
            print(
                f"the evidence package of event {event_id} was deleted by the retention job on "
                f"{gone.get('deleted_at')} ({gone.get('reason')}; case {gone.get('case_number')}, dismissed "
                f"{gone.get('dismissed_at')}); record: {tombstone_key(event_id)}",
                file=err,
            )
            return 2
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
        print(f"{len(results) - failed} of {len(results)} package(s) verify", file=out)
    return 0 if all(r.ok for r in results) else 1
