"""Ed25519 signing of evidence manifests (private key in a 0600 PEM file, public key next to it)."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import uuid
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from nonsite.config.files import private_dir

log = logging.getLogger(__name__)

PUBLIC_KEY_NAME = "signing.pub.pem"


class SigningError(Exception):
    """A key file or public key cannot be used; the message names it and the fix."""


def public_key_path(private_path: str | os.PathLike[str]) -> Path:
    """Where the public key of ``private_path`` is written: ``<stem>.pub.pem`` in the same folder
    (``signing.pem`` -> ``signing.pub.pem``)."""
    p = Path(private_path)
    stem = p.name[: -len(p.suffix)] if p.suffix else p.name
    return p.with_name(f"{stem}.pub.pem")


def _raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def load_public_key(public_pem: str | bytes) -> Ed25519PublicKey:
    data = public_pem.encode("ascii", "replace") if isinstance(public_pem, str) else public_pem
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise SigningError(
            "the public key is not a PEM Ed25519 public key; pass the signing.pub.pem the sealer wrote"
        ) from None
    if not isinstance(key, Ed25519PublicKey):
        raise SigningError("the public key is not an Ed25519 key; pass the signing.pub.pem the sealer wrote")
    return key


def public_key_fingerprint(public_pem: str | bytes) -> str:
    """sha256 hex of the raw 32-byte Ed25519 public key in ``public_pem``."""
    return hashlib.sha256(_raw_public(load_public_key(public_pem))).hexdigest()


def verify_signature(public_pem: str | bytes, data: bytes, sig: bytes) -> bool:
    """True when ``sig`` is a valid Ed25519 signature of ``data`` by ``public_pem``'s key.

    A malformed public key raises :class:`SigningError` (it is the caller's input, not the package's fault).
    """
    key = load_public_key(public_pem)
    try:
        key.verify(sig, data)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


class Signer:
    """Signs with one Ed25519 private key."""

    def __init__(self, private_key: Ed25519PrivateKey, path: Path | None = None) -> None:
        self._key = private_key
        self.path = path

    def __repr__(self) -> str:  # never show key material
        return f"Signer(fingerprint={self.fingerprint()[:16]}..., path={str(self.path) if self.path else None!r})"

    @classmethod
    def generate(cls) -> Signer:
        """A signer with a fresh key held only in memory."""
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def load_or_create(cls, path: str | os.PathLike[str]) -> Signer:
        """Load the PEM private key at ``path``; on first use create it (mode 0600, parent dirs made).

        The public key is (re)written next to it as ``signing.pub.pem`` (see :func:`public_key_path`).
        """
        p = Path(path).expanduser()
        if not p.exists():
            _create_private_key(p)
        try:
            data = p.read_bytes()
        except OSError as e:
            raise SigningError(f"cannot read the signing key {p}: {e.strerror or e}") from None
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except TypeError:
            raise SigningError(
                f"the signing key {p} is password-protected; nonsite needs an unencrypted PEM key "
                "(protect it with file permissions)"
            ) from None
        except (ValueError, UnsupportedAlgorithm):
            raise SigningError(
                f"{p} is not a PEM private key; delete it to have a new key created, or point "
                "evidence.signing_key at the right file"
            ) from None
        if not isinstance(key, Ed25519PrivateKey):
            raise SigningError(f"the signing key {p} is not an Ed25519 key; nonsite signs with Ed25519 only")
        with contextlib.suppress(OSError):
            if p.stat().st_mode & 0o077:
                log.warning("signing key %s is readable by other users; run: chmod 600 %s", p, p)
        signer = cls(key, p)
        signer._write_public_key(public_key_path(p))
        return signer

    def sign(self, data: bytes) -> bytes:
        """Detached 64-byte Ed25519 signature of ``data``."""
        return self._key.sign(data)

    def public_key_pem(self) -> str:
        return (
            self._key.public_key()
            .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
            .decode("ascii")
        )

    def fingerprint(self) -> str:
        """sha256 hex of the raw public key."""
        return hashlib.sha256(_raw_public(self._key.public_key())).hexdigest()

    def _write_public_key(self, path: Path) -> None:
        pem = self.public_key_pem().encode("ascii")
        try:
            if path.is_file() and path.read_bytes() == pem:
                return
            _atomic_write(path, pem, 0o644)
        except OSError as e:
            log.warning("cannot write the public key %s: %s", path, e.strerror or e)


def _create_private_key(p: Path) -> None:
    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    try:
        private_dir(p.parent)
        tmp = p.with_name(f".{p.name}.{uuid.uuid4().hex}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, pem)
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, p)  # atomic and never overwrites: a concurrent creator's key wins
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    except OSError as e:
        raise SigningError(
            f"cannot create the signing key {p}: {e.strerror or e}; set evidence.signing_key to a writable path"
        ) from None
    log.info("created a new Ed25519 signing key at %s", p)


def _atomic_write(path: Path, data: bytes, mode: int) -> None:
    private_dir(path.parent)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
