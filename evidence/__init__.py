"""Evidence: capture of stills and clips, stores, package manifest, signing, the sealer and ``verify``.

Importing this package is light (no OpenCV, no PyAV): capture imports them itself.
"""

from __future__ import annotations

from pathlib import Path

from nonsite.config.services import EvidenceConfig
from nonsite.evidence.local import LocalStore
from nonsite.evidence.package import MANIFEST_NAME, SIGNATURE_NAME, package_prefix
from nonsite.evidence.store import Store, StoreError


def _under(data_dir: str | Path, value: str | None, default: str) -> Path:
    """``value`` (absolute, or relative to ``data_dir``), else ``data_dir/default``."""
    if not value:
        return Path(data_dir) / default
    p = Path(value).expanduser()
    return p if p.is_absolute() else Path(data_dir) / p


def open_store(cfg: EvidenceConfig, data_dir: str | Path) -> Store:
    """The evidence store the configuration names (local: ``cfg.path`` or ``DATA_DIR/evidence``; s3: the
    bucket in ``cfg.s3``, contacted on first use)."""
    if cfg.store == "local":
        return LocalStore(_under(data_dir, cfg.path, "evidence"))
    if cfg.store == "s3":
        from nonsite.evidence.s3 import S3Store

        return S3Store(cfg.s3)
    raise StoreError(f"unknown evidence store {cfg.store!r}; use 'local' or 's3'")


def spool_path(cfg: EvidenceConfig, data_dir: str | Path) -> Path:
    """The edge's evidence spool: ``cfg.spool.path`` or ``DATA_DIR/spool``."""
    return _under(data_dir, cfg.spool.path, "spool")


def presigned_url(store: Store, key: str, expires_s: int | None = None) -> str | None:
    """An expiring link to ``key`` when the store can sign one (S3), else None (serve the bytes instead)."""
    url = getattr(store, "url", None)
    return url(key, expires_s) if url is not None else None


def signing_key_path(cfg: EvidenceConfig, data_dir: str | Path) -> Path:
    """The Ed25519 private key file: ``cfg.signing_key`` or ``DATA_DIR/keys/signing.pem``."""
    return _under(data_dir, cfg.signing_key, "keys/signing.pem")


__all__ = [
    "MANIFEST_NAME",
    "SIGNATURE_NAME",
    "LocalStore",
    "Store",
    "StoreError",
    "open_store",
    "package_prefix",
    "presigned_url",
    "signing_key_path",
    "spool_path",
]
