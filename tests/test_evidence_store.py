"""LocalStore, open_store and the Ed25519 signer, on a real temporary directory."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from nonsite.config.services import EvidenceConfig
from nonsite.evidence import LocalStore, StoreError, open_store, package_prefix, signing_key_path
from nonsite.evidence.signing import Signer, SigningError, public_key_fingerprint, verify_signature


def test_put_get_list_delete(tmp_path: Path) -> None:
    s = LocalStore(tmp_path / "ev")
    s.put("events/b/x.jpg", b"xx", "image/jpeg")
    s.put("events/a/y.jpg", b"yy", "image/jpeg")
    s.put("events/a/sub/z.bin", b"zz", "application/octet-stream")
    s.put("other.txt", b"o", "text/plain")
    assert s.get("events/a/y.jpg") == b"yy"
    assert s.exists("events/b/x.jpg") and not s.exists("events/b/nope.jpg")
    assert list(s.list("events/")) == ["events/a/sub/z.bin", "events/a/y.jpg", "events/b/x.jpg"]
    assert list(s.list("events/a/")) == ["events/a/sub/z.bin", "events/a/y.jpg"]
    assert list(s.list("events/a")) == ["events/a/sub/z.bin", "events/a/y.jpg"]
    assert list(s.list("")) == ["events/a/sub/z.bin", "events/a/y.jpg", "events/b/x.jpg", "other.txt"]
    assert list(s.list("missing/")) == []
    s.put("events/a/y.jpg", b"new", "image/jpeg")  # overwrite
    assert s.get("events/a/y.jpg") == b"new"
    assert s.path_of("events/a/y.jpg") == tmp_path / "ev" / "events" / "a" / "y.jpg"
    s.delete("events/a/y.jpg")
    s.delete("events/a/y.jpg")  # absent: no error
    with pytest.raises(KeyError):
        s.get("events/a/y.jpg")
    with pytest.raises(KeyError):
        s.path_of("events/a/y.jpg")
    with pytest.raises(KeyError):
        s.get("events/a")  # a folder is not a key
    # no temp files are left behind, and none would be listed
    assert not [p for p in (tmp_path / "ev").rglob("*") if p.name.startswith(".nonsite-tmp-")]


@pytest.mark.parametrize("key", ["", "/abs", "a/../b", "..", "a//b", "a/", "./a", "a\\b", ".nonsite-tmp-x"])
def test_bad_keys_are_refused(tmp_path: Path, key: str) -> None:
    s = LocalStore(tmp_path)
    with pytest.raises(StoreError):
        s.put(key, b"x", "text/plain")
    with pytest.raises(StoreError):
        s.get(key)
    assert not (tmp_path.parent / "b").exists()


def test_list_refuses_escaping_prefix(tmp_path: Path) -> None:
    with pytest.raises(StoreError):
        list(LocalStore(tmp_path).list("../"))


def test_write_failure_is_one_clear_store_error(tmp_path: Path) -> None:
    s = LocalStore(tmp_path)
    (tmp_path / "events").write_bytes(b"a file where a folder should be")
    with pytest.raises(StoreError, match="cannot write 'events/x/a.jpg'"):
        s.put("events/x/a.jpg", b"x", "image/jpeg")


def test_open_store_paths(tmp_path: Path) -> None:
    s = open_store(EvidenceConfig(), tmp_path)
    assert isinstance(s, LocalStore) and s.root == tmp_path / "evidence"
    s2 = open_store(EvidenceConfig(path=str(tmp_path / "elsewhere")), tmp_path)
    assert isinstance(s2, LocalStore) and s2.root == tmp_path / "elsewhere" and s2.root.is_dir()
    assert signing_key_path(EvidenceConfig(), tmp_path) == tmp_path / "keys" / "signing.pem"


def test_package_prefix() -> None:
    assert package_prefix("3f2c1b1e-0000-4000-8000-000000000001") == "events/3f2c1b1e-0000-4000-8000-000000000001/"
    for bad in ("", "../x", "a/b", "..", "x" * 200):
        with pytest.raises(ValueError, match="cannot name an evidence package"):
            package_prefix(bad)


def test_import_is_light() -> None:
    code = "import sys, nonsite.evidence; print('cv2' in sys.modules, 'av' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_signer_create_reload_and_verify(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "deep" / "signing.pem"
    signer = Signer.load_or_create(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    pub = path.parent / "signing.pub.pem"
    assert pub.read_text() == signer.public_key_pem()
    assert public_key_fingerprint(pub.read_text()) == signer.fingerprint()
    assert len(signer.fingerprint()) == 64

    again = Signer.load_or_create(path)
    assert again.fingerprint() == signer.fingerprint()
    sig = again.sign(b"manifest bytes")
    assert verify_signature(signer.public_key_pem(), b"manifest bytes", sig)
    assert not verify_signature(signer.public_key_pem(), b"manifest bytez", sig)
    assert not verify_signature(signer.public_key_pem(), b"manifest bytes", sig[:-1] + bytes([sig[-1] ^ 1]))
    other = Signer.load_or_create(tmp_path / "other.pem")
    assert other.fingerprint() != signer.fingerprint()
    assert (tmp_path / "other.pub.pem").is_file()
    assert not verify_signature(other.public_key_pem(), b"manifest bytes", sig)
    assert "PRIVATE" not in repr(signer)


def test_signer_bad_key_file(tmp_path: Path) -> None:
    bad = tmp_path / "signing.pem"
    bad.write_text("not a key")
    with pytest.raises(SigningError, match="is not a PEM private key"):
        Signer.load_or_create(bad)
    with pytest.raises(SigningError, match="not a PEM Ed25519 public key"):
        verify_signature("garbage", b"x", b"y")
