"""Shared fixtures: real media and weights from ../shared (or NONSITE_MEDIA_DIR / NONSITE_MODELS_DIR)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _shared(env: str, sub: str) -> Path:
    p = Path(os.environ.get(env) or (ROOT.parent / "shared" / sub))
    if not p.is_dir():
        pytest.fail(f"{env} is not set and {p} does not exist: the tests read real media/weights from there")
    return p


@pytest.fixture(scope="session")
def media_dir() -> Path:
    return _shared("NONSITE_MEDIA_DIR", "media")


@pytest.fixture(scope="session")
def models_dir() -> Path:
    d = _shared("NONSITE_MODELS_DIR", "models")
    os.environ.setdefault("NONSITE_MODELS_DIR", str(d))
    return d

# Real servers (Kafka-protocol broker, S3) and helpers for the distributed-mode tests: tests/services/.
pytest_plugins = ["services.fixtures"]
