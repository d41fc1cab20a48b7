"""Which public keys a seal is accepted from: keys pinned by fingerprint in ``evidence.trusted_keys`` (each with
an optional validity period, for key rotation), never whatever public-key file happens to lie in the data
directory or the store.

A :class:`KeyRing` answers "is a package sealed at time T with the key of fingerprint F acceptable, and with
which key bytes?" for ``verify``, the console's seal check and the drafter. Candidate key bytes come from the
pin's own ``public_key`` file, ``--public-key``, ``evidence.public_key``, this node's private key (the public
half derived from it, not read from ``signing.pub.pem``) and the keys published in the store; a candidate is
used only when its fingerprint is pinned. Without pins the ring trusts one key, in this order: ``--public-key``,
``evidence.public_key``, this node's private key, the only key published in the store, and says it is not
pinned.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from nonsite.config.services import EvidenceConfig
from nonsite.evidence.signing import SigningError, load_public_key, public_key_fingerprint, verify_signature
from nonsite.evidence.store import Store, StoreError

log = logging.getLogger(__name__)


class UntrustedKeyError(Exception):
    """The seal names a key that is not trusted (not pinned, outside its validity, or unknown)."""


@dataclass(frozen=True)
class TrustedKey:
    fingerprint: str
    pem: bytes
    description: str = ""
    valid_from: datetime | None = None
    valid_until: datetime | None = None
    pinned: bool = True

    def label(self) -> str:
        """``key 3fa2c1...(description)`` for verify's output."""
        text = f"key {self.fingerprint[:16]}..."
        if self.description:
            text += f" ({self.description})"
        return text if self.pinned else f"{text}, not pinned: set evidence.trusted_keys"


class KeyRing:
    """The trusted keys of one deployment (see the module docstring)."""

    def __init__(self, keys: list[TrustedKey], pinned: bool, missing: list[str] | None = None) -> None:
        self.keys = keys
        self.pinned = pinned
        self.missing = missing or []  # pinned fingerprints whose key bytes were found nowhere

    @classmethod
    def of_pem(cls, pem: str | bytes, description: str = "") -> KeyRing:
        """A ring of exactly one (unpinned) key: the caller chose it (``--public-key``, the sealer's own)."""
        data = pem.encode("ascii") if isinstance(pem, str) else pem
        return cls([TrustedKey(public_key_fingerprint(data), data, description, pinned=False)], pinned=False)

    def key_for(self, fingerprint: str, sealed_at: datetime | None) -> TrustedKey:
        """The trusted key of ``fingerprint`` valid at ``sealed_at``; UntrustedKeyError saying why not."""
        found = [k for k in self.keys if k.fingerprint == fingerprint]
        if not found:
            if fingerprint in self.missing:
                raise UntrustedKeyError(f"key {fingerprint[:16]}... is pinned but its public key was found nowhere "
                                        "(give it as evidence.trusted_keys[].public_key or --public-key)")
            trusted = ", ".join(k.fingerprint[:16] + "..." for k in self.keys) or "none"
            raise UntrustedKeyError(f"signed by key {fingerprint[:16] or '(none named)'}..., which is not a trusted "
                                    f"key (trusted: {trusted}; evidence.trusted_keys)")
        reasons = []
        for k in found:
            if sealed_at is not None and k.valid_from is not None and sealed_at < k.valid_from:
                reasons.append(f"sealed {sealed_at.isoformat()} before the key's valid_from {k.valid_from.isoformat()}")
            elif sealed_at is not None and k.valid_until is not None and sealed_at > k.valid_until:
                reasons.append(f"sealed {sealed_at.isoformat()} after the key's valid_until "
                               f"{k.valid_until.isoformat()}")
            else:
                return k
        raise UntrustedKeyError(f"{found[0].label()} is not valid for this package: {'; '.join(reasons)}")

    def verify(self, data: bytes, sig: bytes, fingerprint: str, sealed_at: datetime | None) -> TrustedKey:
        """The key that made ``sig`` over ``data``; UntrustedKeyError when that key is not trusted, or the
        signature does not verify with it."""
        key = self.key_for(fingerprint, sealed_at)
        if not verify_signature(key.pem, data, sig):
            raise UntrustedKeyError(f"signature does not verify with {key.label()}")
        return key


def _read_pem(path: Path, what: str) -> bytes:
    try:
        pem = path.read_bytes()
    except OSError as e:
        raise SigningError(f"cannot read {what} {path}: {e.strerror or e}") from None
    load_public_key(pem)
    return pem


def _own_public_pem(private_path: Path) -> bytes | None:
    """The public half of this node's private key (None when there is none): derived, never read from the
    ``signing.pub.pem`` beside it, which anyone who can write the directory could replace."""
    try:
        key = serialization.load_pem_private_key(private_path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError):
        return None
    if not isinstance(key, Ed25519PrivateKey):
        return None
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def key_ring(cfg: EvidenceConfig, data_dir: str | Path, store: Store | None = None,
             given_pem: bytes | None = None) -> KeyRing:
    """The trusted keys of this deployment (``given_pem``: a ``--public-key`` file's bytes)."""
    from nonsite.evidence import signing_key_path
    from nonsite.evidence.keys import published_public_keys

    def under(value: str) -> Path:
        p = Path(value).expanduser()
        return p if p.is_absolute() else Path(data_dir) / p

    configured = _read_pem(under(cfg.public_key), "evidence.public_key") if cfg.public_key else None
    own = _own_public_pem(signing_key_path(cfg, data_dir))
    candidates: dict[str, bytes] = {}
    for pem in (given_pem, configured, own):
        if pem is not None:
            candidates.setdefault(public_key_fingerprint(pem), pem)
    published: dict[str, bytes] = {}
    if store is not None:
        try:
            published = published_public_keys(store)
        except StoreError as e:
            log.warning("cannot read the published signing keys from %r: %s", store, e)
    if not cfg.trusted_keys:
        for pem, what in ((given_pem, "--public-key"), (configured, "evidence.public_key"), (own, "this node's key")):
            if pem is not None:
                return KeyRing.of_pem(pem, what)
        if len(published) == 1:
            return KeyRing.of_pem(next(iter(published.values())), "published in the store")
        return KeyRing([], pinned=False)
    keys: list[TrustedKey] = []
    missing: list[str] = []
    for pin in cfg.trusted_keys:
        pem = _read_pem(under(pin.public_key), "evidence.trusted_keys[].public_key") if pin.public_key else (
            candidates.get(pin.fingerprint) or published.get(pin.fingerprint))
        if pem is None:
            missing.append(pin.fingerprint)
            continue
        if public_key_fingerprint(pem) != pin.fingerprint:
            raise SigningError(f"the public key file of trusted key {pin.fingerprint[:16]}... has fingerprint "
                               f"{public_key_fingerprint(pem)}; fix evidence.trusted_keys")
        keys.append(TrustedKey(pin.fingerprint, pem, pin.description, pin.valid_from, pin.valid_until))
    return KeyRing(keys, pinned=True, missing=missing)
