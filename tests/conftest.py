"""Shared fixtures: real media and weights from ../shared (or NONSITE_MEDIA_DIR / NONSITE_MODELS_DIR)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# `precision: auto` reads a model's qualification on this machine (`nonsite models qualify`, `make bench`); the
# tests see none, whatever a developer's weights cache holds, so they run the same precision everywhere. Tests of
# qualifications point this at their own folder.
import tempfile as _tempfile  # noqa: E402

os.environ["NONSITE_QUALIFICATION_DIR"] = _tempfile.mkdtemp(prefix="nonsite-test-qualification-")


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


# --- PostgreSQL for the case database (cases tests run against SQLite and PostgreSQL) ----------------------

import contextlib  # noqa: E402
import glob  # noqa: E402
import secrets  # noqa: E402
import shutil  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Iterator  # noqa: E402

#: Admin URL of a PostgreSQL server the tests may create databases on; "private" starts a throwaway one.
PG_URL_ENV = "NONSITE_TEST_POSTGRES_URL"
PG_DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def _pg_reachable(url: str) -> str | None:
    """None when a connection works, else why not."""
    from sqlalchemy import create_engine, text

    engine = create_engine(url, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return None
    except Exception as exc:  # noqa: BLE001 - reported to the caller
        return str(exc).strip().splitlines()[0]
    finally:
        engine.dispose()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def _private_postgres() -> Iterator[str]:
    """A throwaway PostgreSQL server on a free loopback port (Debian's postgresql binaries), stopped after."""
    bindirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
    if not bindirs:
        pytest.fail("no PostgreSQL server reachable and no PostgreSQL binaries to start one; "
                    "run `make system-deps` (Debian package postgresql) or set NONSITE_TEST_POSTGRES_URL")
    bindir = bindirs[-1]
    root = Path(tempfile.mkdtemp(prefix="nonsite-pg-"))
    user = "postgres" if os.getuid() == 0 else None  # initdb refuses to run as root
    if user:
        shutil.chown(root, user)
    data = root / "data"
    subprocess.run([f"{bindir}/initdb", "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                    "--no-sync"], check=True, capture_output=True, user=user)
    port = _free_port()
    proc = subprocess.Popen(
        [f"{bindir}/postgres", "-D", str(data), "-p", str(port), "-k", str(root),
         "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "max_connections=200"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, user=user,
    )
    url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    try:
        deadline = time.monotonic() + 60
        while (why := _pg_reachable(url)) is not None:
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the private PostgreSQL server did not start: {why}")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """Admin URL of a PostgreSQL server: $NONSITE_TEST_POSTGRES_URL, else the local one on 127.0.0.1:5432,
    else a private server started for this session."""
    wanted = os.environ.get(PG_URL_ENV)
    if wanted and wanted != "private":
        why = _pg_reachable(wanted)
        if why is not None:
            pytest.fail(f"{PG_URL_ENV}={wanted} is not reachable: {why}")
        yield wanted
        return
    if wanted != "private" and _pg_reachable(PG_DEFAULT_URL) is None:
        yield PG_DEFAULT_URL
        return
    with _private_postgres() as url:
        yield url


@pytest.fixture(scope="session")
def postgres_database(postgres_server: str) -> Iterator[str]:
    """URL of a fresh database with a random name, created for this test session and dropped after it."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"nonsite_test_{secrets.token_hex(6)}"
    admin = create_engine(postgres_server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(postgres_server).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextlib.contextmanager
def fresh_postgres_schema(database_url: str) -> Iterator[str]:
    """A URL whose connections live in a new, empty schema of ``database_url`` (dropped after)."""
    from urllib.parse import quote

    from sqlalchemy import create_engine, text

    schema = f"t_{secrets.token_hex(6)}"
    engine = create_engine(database_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in database_url else "?"
    try:
        yield f"{database_url}{sep}options={quote(f'-csearch_path={schema}')}"
    finally:
        with engine.connect() as conn:
            conn.execute(text("SET lock_timeout = '10s'"))
            with contextlib.suppress(Exception):  # the database is dropped at the end of the session anyway
                conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def case_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """URL of an empty case database: a SQLite file, or a fresh schema in the session's PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'cases.db'}"
        return
    database = request.getfixturevalue("postgres_database")
    with fresh_postgres_schema(database) as url:
        yield url


# Real servers (Kafka-protocol broker, S3) and helpers for the distributed-mode tests: tests/services/.
pytest_plugins = ["services.fixtures"]
