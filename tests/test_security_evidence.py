"""Attacks on the evidence chain (issue 11, item 9): forged packages re-signed with an attacker's key, vanished
packages, unsigned deletion records, forged ``nonsite.evidence`` messages.

Before the fix: replacing ``keys/signing.pub.pem`` with an attacker's key made a re-signed forgery verify OK;
``verify --all`` did not notice a package that vanished; an unsigned deletion record was believed; the drafter
drafted a case from any well-formed ``nonsite.evidence`` message.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from services.fixtures import make_event

from nonsite.app import seal_check
from nonsite.bus import EmbeddedBus
from nonsite.bus.events import TOPIC_DEAD_LETTER, TOPIC_EVIDENCE, EvidenceSealed
from nonsite.cases import Case, draft_case, draft_pending, open_db
from nonsite.cases.workflow import dismiss
from nonsite.cli import case_states, main
from nonsite.config import load_config
from nonsite.evidence.local import LocalStore
from nonsite.evidence.manifest import canonical_json
from nonsite.evidence.retention import apply_retention, tombstone_key
from nonsite.evidence.sealer import seal
from nonsite.evidence.signing import Signer
from nonsite.evidence.store import Store


@pytest.fixture(scope="module")
def frames(clip_frames: list[np.ndarray]) -> list[np.ndarray]:
    return clip_frames


class Site:
    """A sealer's data directory (key, store, case database) and a config file pointing at it."""

    def __init__(self, root: Path, frames: list[np.ndarray]) -> None:
        self.root, self.frames = root, frames
        self.data = root / "data"
        self.store = LocalStore(self.data / "evidence")
        self.signer = Signer.load_or_create(self.data / "keys" / "signing.pem")
        self.db_url = f"sqlite:///{self.data / 'cases.db'}"
        self.sessions = open_db(self.db_url)
        self.config = root / "nonsite.yaml"
        self.write_config()

    def write_config(self, evidence: dict[str, Any] | None = None, data_dir: Path | None = None) -> None:
        doc = {"data_dir": str(data_dir or self.data),
               "evidence": {"path": str(self.data / "evidence"), **(evidence or {})}}
        self.config.write_text(yaml.safe_dump(doc), encoding="utf-8")

    def sealed(self, signer: Signer | None = None) -> EvidenceSealed:
        return seal(self.store, signer or self.signer, make_event(self.store, self.frames))

    def drafted(self) -> tuple[str, str]:
        s = self.sealed()
        case, _ = draft_case(self.sessions, s, "NS")
        return s.event_id, case.number

    def verify(self, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
        code = main(["evidence", "verify", *args, "--config", str(self.config)])
        out, err = capsys.readouterr()
        return code, out + err

    def pin(self, *pins: dict[str, Any]) -> None:
        self.write_config({"trusted_keys": list(pins)})


@pytest.fixture()
def site(tmp_path: Path, frames: list[np.ndarray]) -> Site:
    return Site(tmp_path, frames)


def forge(store: Store, event_id: str, attacker: Signer) -> None:
    """Swap the confirmation still and re-seal the package with the attacker's key, as someone with write access
    to the store would: every hash in the manifest matches, the signature is valid for the attacker's key."""
    prefix = f"events/{event_id}/"
    fake = b"\xff\xd8 a different picture \xff\xd9"
    store.put(prefix + "confirm.jpg", fake, "image/jpeg")
    manifest = json.loads(store.get(prefix + "manifest.json"))
    for a in manifest["artifacts"]:
        if a["key"] == prefix + "confirm.jpg":
            a["sha256"], a["bytes"] = hashlib.sha256(fake).hexdigest(), len(fake)
    manifest["signature"]["public_key_fingerprint"] = attacker.fingerprint()
    data = canonical_json(manifest)
    store.put(prefix + "manifest.json", data, "application/json")
    store.put(prefix + "manifest.sig", attacker.sign(data), "application/octet-stream")


def test_a_replaced_public_key_file_does_not_make_a_forgery_verify(site: Site,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    event_id = site.sealed().event_id
    attacker = Signer.generate()
    forge(site.store, event_id, attacker)
    (site.data / "keys" / "signing.pub.pem").write_text(attacker.public_key_pem(), encoding="ascii")
    site.store.put(f"keys/ed25519/{attacker.fingerprint()}.pub.pem", attacker.public_key_pem().encode(), "x")
    code, out = site.verify(capsys, event_id)
    assert code == 1 and f"FAIL {event_id}" in out and "signature does not verify" in out, out
    site.pin({"fingerprint": site.signer.fingerprint(), "description": "sealer 2026"})
    code, out = site.verify(capsys, event_id)
    assert code == 1 and "not a trusted key" in out and attacker.fingerprint()[:16] in out, out


def test_an_auditor_without_the_private_key_trusts_only_the_pinned_key(
        site: Site, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The auditor's machine has the store and the config, no private key: the attacker publishes their key in
    the store and in the auditor's data directory; only the pinned fingerprint counts."""
    good, forged = site.sealed().event_id, site.sealed().event_id
    attacker = Signer.generate()
    forge(site.store, forged, attacker)
    auditor = tmp_path / "auditor"
    (auditor / "keys").mkdir(parents=True)
    (auditor / "keys" / "signing.pub.pem").write_text(attacker.public_key_pem(), encoding="ascii")
    site.store.put(f"keys/ed25519/{site.signer.fingerprint()}.pub.pem", site.signer.public_key_pem().encode(), "x")
    site.store.put(f"keys/ed25519/{attacker.fingerprint()}.pub.pem", attacker.public_key_pem().encode(), "x")
    site.write_config({"trusted_keys": [{"fingerprint": site.signer.fingerprint(), "description": "city sealer"}]},
                      data_dir=auditor)
    code, out = site.verify(capsys, "--all")
    assert code == 1, out
    assert f"OK {good} (6 files; signed by key {site.signer.fingerprint()[:16]}... (city sealer))" in out
    assert f"FAIL {forged}" in out and "not a trusted key" in out


def test_key_rotation_with_validity_periods(site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    old_key, new_key = site.signer, Signer.generate()
    before = site.sealed(old_key).event_id
    rotated = datetime.now(UTC)
    late = site.sealed(old_key).event_id  # the old key, after it was rotated out
    current = site.sealed(new_key).event_id
    site.store.put(f"keys/ed25519/{new_key.fingerprint()}.pub.pem", new_key.public_key_pem().encode(), "x")
    site.pin({"fingerprint": old_key.fingerprint(), "description": "2025 key", "valid_until": rotated.isoformat()},
             {"fingerprint": new_key.fingerprint(), "description": "2026 key", "valid_from": rotated.isoformat()})
    code, out = site.verify(capsys, "--all")
    assert code == 1, out
    assert f"OK {before} (6 files; signed by key {old_key.fingerprint()[:16]}... (2025 key))" in out
    assert f"OK {current} (6 files; signed by key {new_key.fingerprint()[:16]}... (2026 key))" in out
    assert f"FAIL {late}" in out and "after the key's valid_until" in out
    # The configuration names fingerprints, as `nonsite evidence public-key` prints them.
    assert main(["evidence", "public-key", "--config", str(site.config)]) == 0
    printed = capsys.readouterr()
    assert f"fingerprint {old_key.fingerprint()}" in printed.err and "trusted_keys" in printed.err
    assert load_config(site.config).evidence.trusted_keys[1].valid_from == rotated


def test_the_console_checks_each_seal_with_the_key_valid_when_it_was_sealed(site: Site) -> None:
    """After a key rotation the case page's seal check uses the whole pinned ring: a package sealed with the
    retired key before the rotation still shows as intact (the newest key alone called it broken), one sealed
    with the retired key after its valid_until does not, and one signed by a stranger's key does not."""
    from zoneinfo import ZoneInfo

    from nonsite.console.views import ConsoleState, seal_status
    from nonsite.evidence.keys import public_key_pem, verification_keys

    old_key, new_key = site.signer, Signer.generate()
    before = site.sealed(old_key)
    rotated = datetime.now(UTC)
    late, current = site.sealed(old_key), site.sealed(new_key)
    forged = site.sealed(Signer.generate())
    site.store.put(f"keys/ed25519/{new_key.fingerprint()}.pub.pem", new_key.public_key_pem().encode(), "x")
    site.pin({"fingerprint": old_key.fingerprint(), "description": "2025 key", "valid_until": rotated.isoformat()},
             {"fingerprint": new_key.fingerprint(), "description": "2026 key", "valid_from": rotated.isoformat()})
    cfg = load_config(site.config).evidence

    def page_says(keys: Any, sealed: EvidenceSealed) -> bool | None:
        case, _ = draft_case(site.sessions, sealed, "NS")
        state = ConsoleState(session_factory=site.sessions, store=site.store, zone=ZoneInfo("Asia/Shanghai"),
                             language="zh", public_key_pem=keys, title="t", actor_of=lambda r: "x")
        return seal_status(state, case).ok

    ring = verification_keys(cfg, site.data, site.store)
    assert ring is not None and len(ring.keys) == 2
    assert [page_says(ring, s) for s in (before, late, current, forged)] == [True, False, True, False]
    newest_only = public_key_pem(cfg, site.data, site.store)  # what the console used before
    assert newest_only == new_key.public_key_pem().encode()
    assert page_says(newest_only, before) is False


def test_verify_all_reports_a_package_that_vanished(site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    kept, _ = site.drafted()
    gone, number = site.drafted()
    for key in list(site.store.list(f"events/{gone}/")):
        site.store.delete(key)
    code, out = site.verify(capsys, "--all")
    assert code == 1 and f"OK {kept}" in out, out
    assert f"FAIL {gone}\n  package missing: case {number} has it; there is no signed deletion record" in out
    code, out = site.verify(capsys, gone)
    assert code == 1 and "package missing" in out


def test_an_unsigned_or_forged_deletion_record_is_not_accepted(site: Site,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    gone, number = site.drafted()
    for key in list(site.store.list(f"events/{gone}/")):
        site.store.delete(key)
    record = {"event_id": gone, "case_number": number, "reason": "dismissed case, retention period over",
              "deleted_at": "2026-01-01T00:00:00.000000Z", "dismissed_at": "2025-01-01T00:00:00.000000Z",
              "files": [], "signed_by": site.signer.fingerprint()}
    site.store.put(tombstone_key(gone), canonical_json(record), "application/json")
    code, out = site.verify(capsys, "--all")
    assert code == 1 and "is not signed" in out, out
    code, out = site.verify(capsys, gone)
    assert code == 1 and "is not signed" in out, out
    attacker = Signer.generate()
    record["signed_by"] = attacker.fingerprint()
    site.store.put(tombstone_key(gone), canonical_json(record), "application/json")
    site.store.put(tombstone_key(gone) + ".sig", attacker.sign(canonical_json(record)), "x")
    code, out = site.verify(capsys, "--all")
    assert code == 1 and "not a trusted key" in out, out


def test_a_retention_deletion_leaves_a_signed_record_that_verifies(site: Site,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    kept, _ = site.drafted()
    gone, number = site.drafted()
    dismiss(site.sessions, number, "operator-1", "false_positive")
    states = case_states(site.db_url)
    later = datetime.now(UTC) + timedelta(days=400)
    policy = load_config(site.config).evidence.retention
    # Without the signing key the retention job deletes nothing (it could not sign the record).
    assert [a.action for a in apply_retention(site.store, states, policy, now=later)] == ["failed"]
    assert site.store.exists(f"events/{gone}/manifest.json")
    acts = apply_retention(site.store, states, load_config(site.config).evidence.retention, now=later,
                           signer=site.signer)
    assert [(a.event_id, a.action) for a in acts] == [(gone, "deleted")]
    assert site.store.exists(tombstone_key(gone) + ".sig")
    site.pin({"fingerprint": site.signer.fingerprint(), "description": "sealer"})
    code, out = site.verify(capsys, "--all")
    assert code == 0, out
    assert f"DELETED {gone} (deleted by the retention job" in out and "record signed by key" in out
    assert "1 of 1 package(s) verify; 1 deleted by retention with a signed record" in out


def test_the_drafter_refuses_a_sealed_message_that_does_not_verify(site: Site) -> None:
    cfg = load_config(site.config)
    bus = EmbeddedBus(site.data / "bus" / "bus.sqlite")
    genuine = site.sealed()
    forged = site.sealed()
    attacker = Signer.generate()
    forge(site.store, forged.event_id, attacker)
    forged_msg = forged.model_copy(update={  # the attacker announces their manifest's hash and key
        "manifest_sha256": hashlib.sha256(site.store.get(forged.manifest_key)).hexdigest(),
        "public_key_fingerprint": attacker.fingerprint()})
    made_up = site.sealed().model_copy(update={"manifest_sha256": "0" * 64})  # a hash that is not the package's
    for s in (forged_msg, made_up, genuine):
        bus.publish(TOPIC_EVIDENCE, "cam-01", s.model_dump_json().encode())
    created = draft_pending(bus, site.sessions, "NS", check_seal=seal_check(cfg, site.data, site.store))
    assert created == 1
    with site.sessions() as s:
        assert [c.event_id for c in s.query(Case)] == [genuine.event_id]
    dead = bus.consumer(TOPIC_DEAD_LETTER, "t").poll(10, 0.1)
    reasons = [json.loads(m.value)["reason"] for m in dead]
    assert len(reasons) == 2 and "signature does not verify" in reasons[0], reasons
    assert "differs from the sha256" in reasons[1]
    bus.close()


# -- the audit trail's hash chain (issue 11, item 13) -----------------------------------------------------------
# Before the fix: with the append-only trigger dropped, an edited or deleted audit row went unnoticed.


def _audit_setup(db_url: str, frames: list[np.ndarray], root: Path) -> tuple[Any, list[str]]:
    from nonsite.cases.workflow import approve, confirm

    sessions = open_db(db_url)
    store = LocalStore(root / "evidence")
    signer = Signer.generate()
    numbers = []
    for _ in range(2):
        case, _ = draft_case(sessions, seal(store, signer, make_event(store, frames)), "NS")
        numbers.append(case.number)
    confirm(sessions, numbers[0], "operator-1")
    approve(sessions, numbers[0], "reviewer-1")
    dismiss(sessions, numbers[1], "operator-1", "false_positive")
    return sessions, numbers


def _drop_triggers(sessions: Any) -> None:
    from sqlalchemy import text

    engine = sessions.kw["bind"]
    with engine.begin() as c:
        if engine.dialect.name == "sqlite":
            c.execute(text("DROP TRIGGER audit_entries_no_update"))
            c.execute(text("DROP TRIGGER audit_entries_no_delete"))
        else:
            c.execute(text("DROP TRIGGER audit_entries_no_change ON audit_entries"))


def _audit_verify(db_url: str, config: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["cases", "audit", "verify", "--database-url", db_url, "--config", str(config)])
    out, err = capsys.readouterr()
    return code, out + err


@pytest.fixture()
def audit_config(tmp_path: Path) -> Path:
    path = tmp_path / "audit.yaml"
    path.write_text(yaml.safe_dump({"data_dir": str(tmp_path / "data")}), encoding="utf-8")
    return path


def test_an_edited_audit_row_is_named_even_without_the_trigger(
        case_db_url: str, frames: list[np.ndarray], tmp_path: Path, audit_config: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    from sqlalchemy import text

    sessions, numbers = _audit_setup(case_db_url, frames, tmp_path)
    code, out = _audit_verify(case_db_url, audit_config, capsys)
    assert code == 0 and "audit chain of 5 entries verifies" in out, out
    _drop_triggers(sessions)
    with sessions.kw["bind"].begin() as c:
        target = c.execute(text("SELECT id FROM audit_entries WHERE action = 'approve'")).scalar_one()
        c.execute(text("UPDATE audit_entries SET actor = 'someone-else' WHERE id = :i"), {"i": target})
    code, out = _audit_verify(case_db_url, audit_config, capsys)
    assert code == 1, out
    assert f"FAIL row id {target} (case id 1, approve by someone-else" in out and "edited" in out
    assert out.count("FAIL") == 1
    sessions.kw["bind"].dispose()


def test_a_deleted_audit_row_is_named(case_db_url: str, frames: list[np.ndarray], tmp_path: Path,
                                      audit_config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from sqlalchemy import text

    sessions, _ = _audit_setup(case_db_url, frames, tmp_path)
    _drop_triggers(sessions)
    with sessions.kw["bind"].begin() as c:
        gone = c.execute(text("SELECT id FROM audit_entries WHERE action = 'confirm'")).scalar_one()
        c.execute(text("DELETE FROM audit_entries WHERE id = :i"), {"i": gone})
        last = c.execute(text("SELECT MAX(id) FROM audit_entries")).scalar_one()
    code, out = _audit_verify(case_db_url, audit_config, capsys)
    assert code == 1 and "missing: row(s) removed after row id" in out, out
    # Removing the newest row too is noticed by the chain head.
    with sessions.kw["bind"].begin() as c:
        c.execute(text("DELETE FROM audit_entries WHERE id = :i"), {"i": last})
    code, out = _audit_verify(case_db_url, audit_config, capsys)
    assert code == 1 and "rows at the end were removed" in out, out
    sessions.kw["bind"].dispose()


def test_a_rewritten_chain_is_caught_by_the_signed_checkpoint(
        frames: list[np.ndarray], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Someone rewrites a row and recomputes every later hash and the head: the chain is consistent again, but
    the checkpoint signed with the sealer's key (in the evidence store) no longer matches."""
    from sqlalchemy import text

    from nonsite.cases.audit import entry_digest

    data = tmp_path / "data"
    Signer.load_or_create(data / "keys" / "signing.pem")
    config = tmp_path / "nonsite.yaml"
    config.write_text(yaml.safe_dump({"data_dir": str(data)}), encoding="utf-8")
    db_url = f"sqlite:///{data / 'cases.db'}"
    sessions, _ = _audit_setup(db_url, frames, tmp_path)
    assert main(["cases", "audit", "checkpoint", "--config", str(config)]) == 0
    assert "checkpoint audit/checkpoints/" in capsys.readouterr().out
    code, out = _audit_verify(db_url, config, capsys)
    assert code == 0 and "1 signed checkpoint(s) checked" in out, out
    _drop_triggers(sessions)
    with sessions.kw["bind"].begin() as c:
        rows = c.execute(text("SELECT id, case_id, at, actor, action, before_status, after_status, detail, "
                              "chain_seq, team, photos FROM audit_entries ORDER BY chain_seq")).all()
        prev = "0" * 64
        for r in rows:
            actor = "nobody" if r.action == "approve" else r.actor
            h = entry_digest(seq=r.chain_seq, prev_hash=prev, case_id=r.case_id, at=r.at, actor=actor,
                             action=r.action, before_status=r.before_status, after_status=r.after_status,
                             detail=r.detail, team=r.team, photos=r.photos)
            c.execute(text("UPDATE audit_entries SET actor = :a, prev_hash = :p, entry_hash = :h WHERE id = :i"),
                      {"a": actor, "p": prev, "h": h, "i": r.id})
            prev = h
        c.execute(text("UPDATE audit_chain SET head_hash = :h"), {"h": prev})
    code, out = _audit_verify(db_url, config, capsys)
    assert code == 1 and "the chain up to it was rewritten" in out, out
    assert out.count("FAIL") == 1
    sessions.kw["bind"].dispose()


def test_existing_audit_rows_are_chained_by_the_migration(case_db_url: str, frames: list[np.ndarray],
                                                          tmp_path: Path) -> None:
    from alembic import command

    from nonsite.cases.audit import verify_chain
    from nonsite.cases.db import _alembic_config, migrate

    sessions, _ = _audit_setup(case_db_url, frames, tmp_path)
    engine = sessions.kw["bind"]
    with engine.begin() as conn:
        command.downgrade(_alembic_config(conn), "0002")
    migrate(engine)
    report = verify_chain(sessions)
    assert report.ok and report.entries == 5 and report.head_seq == 5, report.problems
    engine.dispose()
