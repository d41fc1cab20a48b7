"""Retention: dismissed cases' evidence is deleted after its period (a tombstone says why), confirmed cases'
evidence is kept (and its object lock extended on S3), drafts are left alone; on a real case database made
by the real drafter and workflow, a real local store and a real S3 server with object lock."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import yaml
from services.fixtures import ROOT, make_event, s3_config
from services.servers import Moto, S3rver

from nonsite.cases.db import open_db
from nonsite.cases.drafter import draft_case
from nonsite.cases.workflow import confirm, dismiss
from nonsite.cli import case_states
from nonsite.config.services import RetentionConfig
from nonsite.evidence.local import LocalStore
from nonsite.evidence.retention import apply_retention, read_tombstone
from nonsite.evidence.s3 import S3Store
from nonsite.evidence.sealer import seal
from nonsite.evidence.signing import Signer
from nonsite.evidence.store import Store

SetEnv = Callable[[Moto | S3rver], None]


def three_cases(store: Store, signer: Signer, frames: list[np.ndarray], db_url: str,
                retain_days: int = 0) -> tuple[str, str, str]:
    """Seal and draft three events; dismiss the first, confirm the second, leave the third a draft."""
    sessions = open_db(db_url)
    ids = []
    for cam in ("cam-a", "cam-b", "cam-c"):
        event = make_event(store, frames, cam, n_clip=2)
        case, created = draft_case(sessions, seal(store, signer, event, retain_days=retain_days), "NS")
        assert created
        ids.append((case.number, event.event_id))
    dismiss(sessions, ids[0][0], "operator-1", "false_positive")
    confirm(sessions, ids[1][0], "operator-1")
    return ids[0][1], ids[1][1], ids[2][1]


def run_cli(*args: str, data: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "nonsite", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "NONSITE_DATA_DIR": str(data)})


def test_dismissed_evidence_is_deleted_after_its_period_and_confirmed_kept(
    tmp_path: Path, clip_frames: list[np.ndarray]
) -> None:
    data = tmp_path / "data"
    store = LocalStore(data / "evidence")
    signer = Signer.load_or_create(data / "keys" / "signing.pem")
    dismissed, confirmed, draft = three_cases(store, signer, clip_frames, f"sqlite:///{data / 'cases.db'}")
    conf = tmp_path / "c.yaml"
    conf.write_text(yaml.safe_dump({"evidence": {"retention": {"dismissed_delete_after_days": 0}}}))

    r = run_cli("evidence", "retention", "--dry-run", "--config", str(conf), data=data)
    assert r.returncode == 0, r.stderr
    assert "would-delete NS-" in r.stdout and dismissed in r.stdout and "dry run: would-delete 1" in r.stdout
    assert len(list(store.list(f"events/{dismissed}/"))) == 8  # nothing changed

    r = run_cli("evidence", "retention", "--config", str(conf), data=data)
    assert r.returncode == 0, r.stderr
    assert "deleted" in r.stdout and "deleted 1" in r.stdout
    assert list(store.list(f"events/{dismissed}/")) == []
    assert len(list(store.list(f"events/{confirmed}/"))) == 8 and len(list(store.list(f"events/{draft}/"))) == 8
    tomb = read_tombstone(store, dismissed)
    assert tomb is not None and tomb["event_id"] == dismissed and str(tomb["case_number"]).startswith("NS-")
    assert tomb["reason"] == "dismissed case, retention period over" and len(tomb["files"]) == 8  # type: ignore[arg-type]

    r = run_cli("evidence", "verify", "--all", "--config", str(conf), data=data)
    assert r.returncode == 0 and "2 of 2 package(s) verify" in r.stdout, r.stdout + r.stderr
    r = run_cli("evidence", "verify", dismissed, "--config", str(conf), data=data)
    assert r.returncode == 2 and "deleted by the retention job" in r.stderr and "dismissed" in r.stderr

    r = run_cli("evidence", "retention", "--config", str(conf), data=data)  # again: nothing left to do
    assert r.returncode == 0 and "nothing to do" in r.stdout


def test_the_period_counts_from_the_dismissal(tmp_path: Path, clip_frames: list[np.ndarray]) -> None:
    data = tmp_path / "data"
    store = LocalStore(data / "evidence")
    signer = Signer.load_or_create(data / "keys" / "signing.pem")
    dismissed, _, _ = three_cases(store, signer, clip_frames, f"sqlite:///{data / 'cases.db'}")
    states = case_states(f"sqlite:///{data / 'cases.db'}")
    assert [s.status for s in states] == ["dismissed", "confirmed", "draft"]
    when = states[0].dismissed_at
    assert when is not None
    policy = RetentionConfig(dismissed_delete_after_days=30)
    early = apply_retention(store, states, policy, now=when + timedelta(days=29))
    assert [(a.action, a.event_id) for a in early] == [("kept", dismissed)] and "deletion due" in early[0].detail
    assert store.exists(f"events/{dismissed}/manifest.json")
    late = apply_retention(store, states, policy, now=when + timedelta(days=31), signer=signer)
    assert [(a.action, a.event_id) for a in late] == [("deleted", dismissed)]


def test_on_s3_a_lock_in_force_keeps_dismissed_evidence_and_confirmed_locks_are_extended(
    moto: Moto, s3_env_of: SetEnv, tmp_path: Path, clip_frames: list[np.ndarray]
) -> None:
    s3_env_of(moto)
    store = S3Store(s3_config(moto))
    signer = Signer.load_or_create(tmp_path / "keys" / "signing.pem")
    db = f"sqlite:///{tmp_path / 'cases.db'}"
    dismissed, confirmed, draft = three_cases(store, signer, clip_frames, db, retain_days=2)
    policy = RetentionConfig(dismissed_delete_after_days=0, confirmed_days=400)
    actions = {a.event_id: a for a in apply_retention(store, case_states(db), policy)}
    assert actions[dismissed].action == "locked" and "until" in actions[dismissed].detail
    assert store.exists(f"events/{dismissed}/confirm.jpg")  # compliance lock: kept until it expires
    assert actions[confirmed].action == "extended"
    mode, until = store.retention(f"events/{confirmed}/clip.mp4")  # type: ignore[misc]
    assert mode == "COMPLIANCE" and until > datetime.now(UTC) + timedelta(days=399)
    _, draft_until = store.retention(f"events/{draft}/clip.mp4")  # type: ignore[misc]
    assert draft_until < datetime.now(UTC) + timedelta(days=3)  # a draft keeps the lock from sealing
    again = {a.event_id: a.action for a in apply_retention(store, case_states(db), policy)}
    assert confirmed not in again  # already extended: nothing to do
