"""Alembic migrations of the case database, on SQLite and PostgreSQL: the schema they build is the models',
a skeleton-era database is adopted, concurrent openers migrate once, and bad URLs say what to fix."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text

from nonsite.cases import Case, CaseStatus, DatabaseSchemaError, open_db
from nonsite.cases.db import Base, head_revision, migrate, schema_revision
from nonsite.cli import main

#: The newest migration (the one the console's sessions table came with).


def test_migrated_schema_matches_the_models(case_db_url: str) -> None:
    sf = open_db(case_db_url)
    engine = sf.kw["bind"]
    try:
        assert schema_revision(engine) == head_revision()
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
        assert diff == [], f"models and migrations differ: {diff}"
        names = set(inspect(engine).get_table_names())
        assert {"cases", "audit_entries", "case_sequences", "outbox", "case_links", "users", "api_tokens",
                "console_sessions", "alembic_version"} <= names
    finally:
        engine.dispose()


def test_downgrade_to_the_baseline_and_back(case_db_url: str) -> None:
    sf = open_db(case_db_url)
    engine = sf.kw["bind"]
    try:
        from alembic import command

        from nonsite.cases.db import _alembic_config

        with engine.begin() as conn:
            command.downgrade(_alembic_config(conn), "0001")
        assert schema_revision(engine) == "0001"
        assert "users" not in inspect(engine).get_table_names()
        assert migrate(engine) == ("0001", head_revision())
        assert "users" in inspect(engine).get_table_names()
    finally:
        engine.dispose()


def test_a_skeleton_database_is_adopted_and_upgraded(case_db_url: str) -> None:
    # A database as the walking skeleton's create_all left it: the 0001 schema, no alembic_version, a case.
    sf = open_db(case_db_url, upgrade=False)
    engine = sf.kw["bind"]
    migrate(engine, "0001")
    now = datetime(2026, 11, 21, 11, 3, 12, tzinfo=UTC)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE alembic_version"))
        conn.execute(text(
            "INSERT INTO cases (number, event_id, type, camera_id, camera_name, zone_id, zone_name, address, "
            "started_at, confirmed_at, dwell_s, confidence, track_ids, evidence, manifest_key, manifest_sha256, "
            "signature_key, seal_problems, violation, status, dismiss_note, created_at, updated_at) VALUES "
            "('NS-2026-000001', 'e-1', 'stray_dog', 'cam', '', 'z', '', '', :t, :t, 5, 0.9, '[]', '[]', 'm', 'h', "
            "'s', '[]', '{}', 'draft', '', :t, :t)"), {"t": now if engine.dialect.name != "sqlite"
                                                       else "2026-11-21 11:03:12.000000"})
    engine.dispose()
    assert schema_revision(create_engine(sf.kw["bind"].url)) is None

    sf = open_db(case_db_url)  # stamps 0001, upgrades to head
    try:
        assert schema_revision(sf.kw["bind"]) == head_revision()
        with sf() as s:
            case = s.query(Case).one()
            assert case.number == "NS-2026-000001" and case.status is CaseStatus.DRAFT
            assert (case.repeat_count, case.suggested_disposition, case.disposition, case.dispatched_to) == (
                0, "manual", {}, "")
            assert case.confirmed_at == now
    finally:
        sf.kw["bind"].dispose()


def test_concurrent_openers_of_a_fresh_database_migrate_it_once(case_db_url: str) -> None:
    errors: list[BaseException] = []
    barrier = threading.Barrier(6)

    def opener() -> None:
        try:
            barrier.wait()
            open_db(case_db_url).kw["bind"].dispose()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=opener) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    engine = open_db(case_db_url).kw["bind"]
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM alembic_version")).scalar_one() == 1
    finally:
        engine.dispose()


def test_a_database_from_a_newer_nonsite_is_refused(case_db_url: str) -> None:
    engine = open_db(case_db_url).kw["bind"]
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0099'"))
    engine.dispose()
    with pytest.raises(DatabaseSchemaError, match="0099.*newer nonsite"):
        open_db(case_db_url)


def test_unreachable_server_and_bad_url_say_what_to_fix() -> None:
    with pytest.raises(DatabaseSchemaError, match=r"cannot reach the case database .*127\.0\.0\.1:9/.*check "
                                                  r"cases\.database_url"):
        open_db("postgresql://nobody@127.0.0.1:9/cases")
    with pytest.raises(ValueError, match="not a SQLAlchemy URL"):
        open_db("cases.db")


def test_migrate_command(case_db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cases", "migrate", "--database-url", case_db_url, "--show"]) == 0
    assert f"at revision (none); newest is {head_revision()}" in capsys.readouterr().out
    assert main(["cases", "migrate", "--database-url", case_db_url]) == 0
    assert f"migrated from (empty) to {head_revision()}" in capsys.readouterr().out
    assert main(["cases", "migrate", "--database-url", case_db_url]) == 0
    assert f"already at {head_revision()}" in capsys.readouterr().out
    assert main(["cases", "migrate", "--database-url", "postgresql://x:secret@127.0.0.1:9/db"]) == 2
    err = capsys.readouterr().err
    assert "cannot reach the case database" in err and "secret" not in err
