"""The S3 evidence store on real S3 servers on loopback: moto (object lock, retention) and s3rver (data on
disk across a restart, expiring links)."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import yaml
from minio import Minio
from services.fixtures import ROOT, make_event, s3_config
from services.servers import Moto, S3rver, free_port

from nonsite.evidence import open_store, presigned_url
from nonsite.evidence.keys import public_key_pem, publish_public_key
from nonsite.evidence.local import LocalStore
from nonsite.evidence.s3 import S3Store
from nonsite.evidence.sealer import seal
from nonsite.evidence.signing import Signer
from nonsite.evidence.store import StoreError
from nonsite.evidence.verify import verify_all, verify_package

SetEnv = Callable[[Moto | S3rver], None]


def raw_client(server: Moto | S3rver) -> Minio:
    return Minio(server.endpoint, access_key=server.access_key, secret_key=server.secret_key, secure=False,
                 region="us-east-1")


def test_put_get_list_delete_and_an_identical_retry_writes_nothing(moto: Moto, s3_env_of: SetEnv) -> None:
    s3_env_of(moto)
    cfg = s3_config(moto)
    store = S3Store(cfg)
    store.put("events/e1/a.jpg", b"first", "image/jpeg")
    store.put("events/e1/a.jpg", b"first", "image/jpeg")  # the edge retried: harmless
    store.put("events/e2/b.mp4", b"clip", "video/mp4")
    assert store.get("events/e1/a.jpg") == b"first"
    assert list(store.list("events/")) == ["events/e1/a.jpg", "events/e2/b.mp4"]
    assert list(store.list("events/e1/")) == ["events/e1/a.jpg"]
    assert store.exists("events/e2/b.mp4") and not store.exists("events/e2/nope")
    assert len(store.versions("events/e1/a.jpg")) == 1  # the retry made no second version
    head = raw_client(moto).stat_object(cfg.bucket, "events/e1/a.jpg")
    assert head.metadata["x-amz-meta-sha256"] == "a7937b64b8caa58f03721bb6bacf5c78cb235febe0e70b1b84cd99541461a08e"
    assert head.content_type == "image/jpeg"
    with pytest.raises(KeyError):
        store.get("events/e1/missing.jpg")
    store.delete("events/e2/b.mp4")
    store.delete("events/e2/b.mp4")  # absent: fine
    assert list(store.list("")) == ["events/e1/a.jpg"]
    with pytest.raises(StoreError, match="must be a relative path"):
        store.put("/etc/passwd", b"x", "text/plain")


def test_the_bucket_is_created_with_object_lock(moto: Moto, s3_env_of: SetEnv) -> None:
    s3_env_of(moto)
    cfg = s3_config(moto)
    store = S3Store(cfg)
    assert not raw_client(moto).bucket_exists(cfg.bucket)  # nothing contacted before first use
    assert store.lock_supported
    assert raw_client(moto).bucket_exists(cfg.bucket)
    assert raw_client(moto).get_object_lock_config(cfg.bucket) is not None


def test_credentials_come_from_the_environment_and_never_show(
    moto: Moto, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("NONSITE_S3_ACCESS_KEY", raising=False)
    monkeypatch.delenv("NONSITE_S3_SECRET_KEY", raising=False)
    with pytest.raises(StoreError, match="export NONSITE_S3_ACCESS_KEY and NONSITE_S3_SECRET_KEY"):
        S3Store(s3_config(moto))
    secret = "s3cr3t-VALUE-never-logged"
    monkeypatch.setenv("NONSITE_S3_ACCESS_KEY", "AKIAEXAMPLE")
    monkeypatch.setenv("NONSITE_S3_SECRET_KEY", secret)
    caplog.set_level(logging.DEBUG)
    dead = S3Store(s3_config(moto, endpoint=f"127.0.0.1:{free_port()}", timeout_s=0.5))
    with pytest.raises(StoreError) as err:  # an error, not an endless retry
        dead.put("events/x/a.jpg", b"x", "image/jpeg")
    assert "cannot reach bucket" in str(err.value)
    for text in (str(err.value), repr(dead), caplog.text):
        assert secret not in text


def test_presigned_links_work_and_expire(s3rver: S3rver, s3_env_of: SetEnv, tmp_path: Path) -> None:
    s3_env_of(s3rver)
    store = S3Store(s3_config(s3rver))
    store.put("events/e1/closeup.jpg", b"jpeg bytes", "image/jpeg")
    url = presigned_url(store, "events/e1/closeup.jpg", 2)
    assert url is not None and "X-Amz-Signature=" in url and "X-Amz-Expires=2" in url
    assert S3RVER_SECRET_NOT_IN(url)
    with urllib.request.urlopen(url) as r:
        assert r.read() == b"jpeg bytes"
    time.sleep(3)
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(url)
    assert e.value.code == 403
    assert presigned_url(LocalStore(tmp_path / "ev"), "events/e1/closeup.jpg", 60) is None  # local: serve bytes


def S3RVER_SECRET_NOT_IN(url: str) -> bool:  # noqa: N802
    # s3rver's access key equals its secret, so only the key id may appear (as the credential scope).
    return url.count("S3RVER") == 1


def test_s3rver_keeps_the_evidence_across_a_restart(s3rver: S3rver, s3_env_of: SetEnv,
                                                    clip_frames: list[np.ndarray], tmp_path: Path) -> None:
    s3_env_of(s3rver)
    cfg = s3_config(s3rver)
    store = S3Store(cfg)
    signer = Signer.load_or_create(tmp_path / "signing.pem")
    event = make_event(store, clip_frames)
    seal(store, signer, event, retain_days=30)  # no object lock on s3rver: sealed, no retention, no error
    s3rver.stop()
    with pytest.raises(StoreError):
        store.get(f"events/{event.event_id}/manifest.json")
    s3rver.start()
    again = S3Store(cfg)
    assert verify_package(again, event.event_id, signer.public_key_pem()).ok


def test_sealing_sets_compliance_retention_that_refuses_deletion(
    moto: Moto, s3_env_of: SetEnv, clip_frames: list[np.ndarray], tmp_path: Path
) -> None:
    s3_env_of(moto)
    store = S3Store(s3_config(moto))
    signer = Signer.load_or_create(tmp_path / "signing.pem")
    event = make_event(store, clip_frames)
    sealed = seal(store, signer, event, retain_days=30)
    want = (sealed.sealed_at + timedelta(days=30)).replace(microsecond=0)
    keys = [i.key for i in event.evidence] + [sealed.manifest_key, sealed.signature_key]
    for key in keys:
        mode, until = store.retention(key)  # type: ignore[misc]
        assert mode == "COMPLIANCE" and until == want, key
    # Retention as the S3 API reports it, read with another client.
    head = raw_client(moto).stat_object(store.bucket, sealed.manifest_key)
    assert head.metadata["x-amz-object-lock-mode"] == "COMPLIANCE"
    with pytest.raises(StoreError, match="under compliance retention until"):
        store.delete(f"events/{event.event_id}/confirm.jpg")
    assert verify_package(store, event.event_id, signer.public_key_pem()).ok
    # Sealing again (a redelivery) writes nothing new and keeps the retention as it is.
    before = {k: store.versions(k) for k in keys}
    assert seal(store, signer, event, retain_days=30).manifest_sha256 == sealed.manifest_sha256
    assert {k: store.versions(k) for k in keys} == before


def _config_file(tmp_path: Path, server: Moto | S3rver, bucket: str) -> Path:
    cfg = {"data_dir": str(tmp_path / "verifier"),
           "evidence": {"store": "s3", "s3": {"endpoint": server.endpoint, "bucket": bucket}}}
    p = tmp_path / "verify.yaml"
    p.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return p


def test_verify_on_s3_names_a_tampered_blob_with_the_key_the_sealer_published(
    moto: Moto, s3_env_of: SetEnv, clip_frames: list[np.ndarray], tmp_path: Path
) -> None:
    """An auditor's machine: no data directory, only the config; the public key comes from the store."""
    s3_env_of(moto)
    cfg = s3_config(moto)
    store = S3Store(cfg)
    signer = Signer.load_or_create(tmp_path / "sealer" / "signing.pem")
    publish_public_key(store, signer)
    events = [make_event(store, clip_frames) for _ in range(2)]
    for e in events:
        seal(store, signer, e, retain_days=1)
    conf = _config_file(tmp_path, moto, cfg.bucket)
    env = {**os.environ, "NONSITE_DATA_DIR": str(tmp_path / "verifier")}
    r = subprocess.run([sys.executable, "-m", "nonsite", "evidence", "verify", "--all", "--config", str(conf)],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "2 of 2 package(s) verify" in r.stdout

    # Someone writes other bytes over the close-up: with object lock that makes a new version (the original
    # is retained), and verify names exactly that file.
    victim = events[0]
    key = f"events/{victim.event_id}/closeup.jpg"
    forged = b"forged"
    raw_client(moto).put_object(cfg.bucket, key, io.BytesIO(forged), len(forged), metadata={
        "x-amz-checksum-sha256": base64.b64encode(hashlib.sha256(forged).digest()).decode()})
    r = subprocess.run([sys.executable, "-m", "nonsite", "evidence", "verify", victim.event_id, "--config",
                        str(conf)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"FAIL {victim.event_id}" in r.stdout
    assert "closeup.jpg: sha256 differs" in r.stdout
    assert "confirm.jpg" not in r.stdout
    results = {v.event_id: v.ok for v in verify_all(store, signer.public_key_pem())}
    assert results == {victim.event_id: False, events[1].event_id: True}
    assert len(store.versions(key)) == 2  # the sealed original is still there, under retention


def test_the_sealers_public_key_is_found_in_the_store(moto: Moto, s3_env_of: SetEnv, tmp_path: Path) -> None:
    s3_env_of(moto)
    from nonsite.config.services import EvidenceConfig

    cfg = EvidenceConfig(store="s3", s3=s3_config(moto))
    store = open_store(cfg, tmp_path)
    signer = Signer.load_or_create(tmp_path / "elsewhere" / "signing.pem")
    assert public_key_pem(cfg, tmp_path / "console", store) is None
    key = publish_public_key(store, signer)
    assert key == f"keys/ed25519/{signer.fingerprint()}.pub.pem"
    assert public_key_pem(cfg, tmp_path / "console", store) == signer.public_key_pem().encode()
    # A planted key whose name does not match its content is ignored.
    other = Signer.generate()
    store.put(f"keys/ed25519/{'0' * 64}.pub.pem", other.public_key_pem().encode(), "application/x-pem-file")
    assert public_key_pem(cfg, tmp_path / "console", store) == signer.public_key_pem().encode()
    # Published public key on the command line.
    conf = _config_file(tmp_path, moto, cfg.s3.bucket)
    r = subprocess.run([sys.executable, "-m", "nonsite", "evidence", "public-key", "--config", str(conf)],
                       cwd=ROOT, capture_output=True, text=True, timeout=60,
                       env={**os.environ, "NONSITE_DATA_DIR": str(tmp_path / "v2")})
    assert r.returncode == 0, r.stderr
    assert r.stdout == signer.public_key_pem() and signer.fingerprint() in r.stderr


def test_a_store_without_object_lock_warns_once(s3rver: S3rver, s3_env_of: SetEnv,
                                                caplog: pytest.LogCaptureFixture) -> None:
    s3_env_of(s3rver)
    store = S3Store(s3_config(s3rver))
    caplog.set_level(logging.WARNING, logger="nonsite.evidence.s3")
    assert store.lock_supported is False
    assert store.retain("events/x/a.jpg", datetime.now(UTC) + timedelta(days=1)) is False
    store.put("events/x/a.jpg", b"x", "image/jpeg")
    assert caplog.text.count("has no object lock") == 1
    assert json.dumps(store.retention("events/x/a.jpg")) == "null"
