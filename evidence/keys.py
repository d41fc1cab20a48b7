"""Where the public key that verifies evidence signatures comes from, for ``verify`` and the console.

The sealer publishes its public key in the store too (``keys/ed25519/<fingerprint>.pub.pem``, next to the
packages, under retention where the store has object lock), so a verifier far from the sealer finds it;
a verifier that must not trust the store passes the key it got out of band (``--public-key``, or
``evidence.public_key``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from nonsite.config.services import EvidenceConfig
from nonsite.evidence.signing import Signer, SigningError, public_key_fingerprint
from nonsite.evidence.store import Store

if TYPE_CHECKING:
    from nonsite.evidence.trust import KeyRing

log = logging.getLogger(__name__)

KEYS_PREFIX = "keys/ed25519/"


def store_key_name(fingerprint: str) -> str:
    return f"{KEYS_PREFIX}{fingerprint}.pub.pem"


def publish_public_key(store: Store, signer: Signer) -> str:
    """Write the sealer's public key into the store (idempotent); returns its key."""
    key = store_key_name(signer.fingerprint())
    store.put(key, signer.public_key_pem().encode("ascii"), "application/x-pem-file")
    return key


def published_public_keys(store: Store) -> dict[str, bytes]:
    """fingerprint -> PEM of every sealer key published in ``store`` whose content matches its name."""
    out: dict[str, bytes] = {}
    for key in store.list(KEYS_PREFIX):
        name = key[len(KEYS_PREFIX):]
        if not name.endswith(".pub.pem"):
            continue
        try:
            pem = store.get(key)
            fp = public_key_fingerprint(pem)
        except (KeyError, SigningError):
            continue
        if fp == name[: -len(".pub.pem")]:
            out[fp] = pem
        else:
            log.warning("store key %s does not hold the key its name says (fingerprint %s); ignored", key, fp)
    return out


def public_key_pem(cfg: EvidenceConfig, data_dir: str | Path, store: Store | None = None) -> bytes | None:
    """The public key (PEM) that verifies this deployment's manifests, or None when none can be found.

    With ``evidence.trusted_keys``: the pinned key valid most recently (by ``valid_from``). Without: in order
    ``evidence.public_key`` (a file), this node's own key (derived from its private key, never read from a
    ``signing.pub.pem`` that anyone able to write the directory could replace), then the single key the sealer
    published in ``store`` (see :mod:`nonsite.evidence.trust`). For the console: pass what it returns as
    ``public_key_pem`` to ``create_app``.
    """
    from datetime import UTC, datetime

    from nonsite.evidence.trust import key_ring

    ring = key_ring(cfg, data_dir, store)
    if not ring.keys:
        return None
    oldest = datetime.min.replace(tzinfo=UTC)
    return max(ring.keys, key=lambda k: k.valid_from or oldest).pem


def verification_keys(cfg: EvidenceConfig, data_dir: str | Path, store: Store | None = None) -> KeyRing | None:
    """Every key a seal of this deployment may carry, for checks of old and new packages alike (the console's
    seal check, the case document): with ``evidence.trusted_keys`` the whole pinned ring, each key within its
    validity period (a package sealed before a rotation still verifies with the retired key); without pins the
    one key :func:`public_key_pem` would pick. None while no key can be found yet."""
    from nonsite.evidence.trust import key_ring

    ring = key_ring(cfg, data_dir, store)
    return ring if ring.keys else None
