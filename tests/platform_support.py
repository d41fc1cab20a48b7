"""What the city-platform tests share: the secrets in the environment, a seeded console beside a platform
simulator, and the hand-off (hub) configured to report to that simulator."""

from __future__ import annotations

from pathlib import Path

import pytest
from platform_simulator import PlatformSimulator

from nonsite.config import load_config
from nonsite.integration.hub import PlatformHub, build_hub
from tests.console_support import Env, seed

REPORT_SECRET, CALLBACK_SECRET, LINK_SECRET = b"s3cret-report", b"s3cret-callback", b"s3cret-evidence-links"


def platform_env(tmp_path: Path, media_dir: Path, monkeypatch: pytest.MonkeyPatch, *, links: bool = False) -> Env:
    """A seeded console whose process holds the platform's report and callback secrets (and, with ``links``, the
    evidence-link secret)."""
    monkeypatch.setenv("NONSITE_PLATFORM_SECRET", REPORT_SECRET.decode())
    monkeypatch.setenv("NONSITE_PLATFORM_CALLBACK_SECRET", CALLBACK_SECRET.decode())
    if links:
        monkeypatch.setenv("NONSITE_EVIDENCE_LINK_SECRET", LINK_SECRET.decode())
    else:
        monkeypatch.delenv("NONSITE_EVIDENCE_LINK_SECRET", raising=False)
    monkeypatch.delenv("NONSITE_DATA_DIR", raising=False)
    return seed(tmp_path, media_dir)


def platform_hub(env: Env, sim: PlatformSimulator, extra: str = "") -> PlatformHub:
    """The hand-off built from a configuration that reports to ``sim``; ``extra`` adds lines under ``platform:``
    (indented four spaces)."""
    cfg_path = env.root / "nonsite.yaml"
    cfg_path.write_text(f"data_dir: data\ncases:\n  database_url: {env.db_url}\nintegration:\n  platform:\n"
                        f"    enabled: true\n    url: {sim.url}\n    timeout_s: 2\n{extra}", encoding="utf-8")
    _, sf = env.make_app()
    hub = build_hub(load_config(cfg_path), sf, env.store)
    assert hub is not None
    return hub
