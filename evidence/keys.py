"""Where the public key that verifies evidence signatures comes from, for ``verify`` and the console.

The sealer publishes its public key in the store too (``keys/ed25519/<fingerprint>.pub.pem``, next to the
packages, under retention where the store has object lock), so a verifier far from the sealer finds it;
a verifier that must not trust the store passes the key it got out of band (``--public-key``, or
``evidence.public_key``).
"""

from __future__ import annotations

import logging
from pathlib import Path

from nonsite.config.services import EvidenceConfig
from nonsite.evidence.signing import Signer, SigningError, load_public_key, public_key_fingerprint, public_key_path
from nonsite.evidence.store import Store, StoreError

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

    Order: ``evidence.public_key`` (a file), this node's own key (``signing.pub.pem`` beside the signing
    key), then the single key the sealer published in ``store``. For the console: pass what it returns as
    ``public_key_pem`` to ``create_app``.
    """
    from nonsite.evidence import signing_key_path

    if cfg.public_key:
        p = Path(cfg.public_key).expanduser()
        p = p if p.is_absolute() else Path(data_dir) / p
        try:
            pem = p.read_bytes()
        except OSError as e:
            raise SigningError(f"cannot read evidence.public_key {p}: {e.strerror or e}") from None
        load_public_key(pem)
        return pem
    own = public_key_path(signing_key_path(cfg, data_dir))
    if own.is_file():
        return own.read_bytes()
    if store is not None:
        try:
            keys = published_public_keys(store)
        except StoreError as e:
            log.warning("cannot read the published signing keys from %r: %s", store, e)
            return None
        if len(keys) == 1:
            return next(iter(keys.values()))
        if len(keys) > 1:
            log.warning("%d signing keys are published in %r; set evidence.public_key to the one to trust",
                        len(keys), store)
    return None
