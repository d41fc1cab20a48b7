"""Users (argon2id password login) and API tokens (hashed, scoped, revocable), through the functions and the
`nonsite users` command, on SQLite and PostgreSQL."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from nonsite.cases import ApiToken, Role, User, open_db, write_session
from nonsite.cases.users import (
    TOKEN_PREFIX,
    UserError,
    authenticate,
    create_token,
    create_user,
    list_tokens,
    list_users,
    revoke_token,
    set_active,
    set_password,
    set_role,
    verify_token,
)
from nonsite.cli import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def db(case_db_url: str) -> Iterator[sessionmaker[Session]]:
    sf = open_db(case_db_url)
    yield sf
    sf.kw["bind"].dispose()


def test_login_with_the_right_password_only(db: sessionmaker[Session]) -> None:
    user = create_user(db, "li.ming", "correct horse battery", "operator", "李明")
    assert (user.username, user.role, user.display_name, user.active) == ("li.ming", "operator", "李明", True)
    assert user.password_hash.startswith("$argon2id$") and "correct horse" not in user.password_hash
    ok = authenticate(db, "li.ming", "correct horse battery")
    assert ok is not None and ok.id == user.id and ok.last_login_at is not None
    assert authenticate(db, "li.ming", "correct horse batterY") is None
    assert authenticate(db, "nobody", "correct horse battery") is None
    assert authenticate(db, "li.ming", "") is None
    assert authenticate(db, "li.ming", "x" * 5000) is None


def test_password_change_disable_and_role(db: sessionmaker[Session]) -> None:
    create_user(db, "wang", "first password", Role.REVIEWER)
    set_password(db, "wang", "second password")
    assert authenticate(db, "wang", "first password") is None
    assert authenticate(db, "wang", "second password") is not None
    set_active(db, "wang", False)
    assert authenticate(db, "wang", "second password") is None  # disabled
    set_active(db, "wang", True)
    assert set_role(db, "wang", "admin").role == "admin"
    assert [u.username for u in list_users(db)] == ["wang"]


@pytest.mark.parametrize(("args", "message"), [
    (("li", "short", "operator"), "too short; use at least 8"),
    (("li", "long enough", "boss"), "unknown role 'boss'"),
    (("li ming", "long enough", "operator"), "user name 'li ming' is not allowed"),
    (("<script>", "long enough", "operator"), "is not allowed"),
])
def test_bad_user_input(db: sessionmaker[Session], args: tuple[str, str, str], message: str) -> None:
    with pytest.raises(UserError, match=message):
        create_user(db, *args)


def test_a_taken_name_is_refused(db: sessionmaker[Session]) -> None:
    create_user(db, "li", "long enough", "operator")
    with pytest.raises(UserError, match="user li exists already"):
        create_user(db, "li", "other password", "admin")
    with pytest.raises(UserError, match="no user 'zhao'"):
        set_password(db, "zhao", "long enough")


def test_tokens_are_shown_once_stored_hashed_scoped_and_revocable(db: sessionmaker[Session]) -> None:
    plaintext, record = create_token(db, "city-platform", role="operator", scopes=["cases:read", "cases:write"],
                                     created_by="admin")
    assert plaintext.startswith(TOKEN_PREFIX) and len(plaintext) > 40
    assert record.actor == "token:city-platform" and record.prefix == plaintext[:10]
    with db() as s:  # only the sha256 is in the database
        rows = s.execute(text("SELECT token_hash, prefix, name FROM api_tokens")).all()
    assert all(plaintext not in " ".join(map(str, r)) for r in rows)
    found = verify_token(db, plaintext)
    assert found is not None and found.name == "city-platform" and found.role == "operator"
    assert found.last_used_at is not None
    assert verify_token(db, plaintext, scope="cases:write") is not None
    assert verify_token(db, plaintext, scope="cameras:write") is None  # scope not granted
    assert verify_token(db, plaintext[:-1] + ("A" if plaintext[-1] != "A" else "B")) is None
    assert verify_token(db, "Bearer " + plaintext) is None
    revoke_token(db, "city-platform")
    assert verify_token(db, plaintext) is None
    assert list_tokens(db) == [] and [t.name for t in list_tokens(db, include_revoked=True)] == ["city-platform"]


def test_expired_tokens_and_bad_token_requests(db: sessionmaker[Session]) -> None:
    plaintext, record = create_token(db, "short-lived", scopes=["evidence:read"], expires_in=timedelta(hours=1))
    assert verify_token(db, plaintext) is not None
    with write_session(db) as s:  # an hour later
        row = s.get(ApiToken, record.id)
        assert row is not None and row.expires_at is not None
        row.expires_at = row.expires_at - timedelta(hours=2)
    assert verify_token(db, plaintext) is None
    with pytest.raises(UserError, match="exists already"):
        create_token(db, "short-lived")
    with pytest.raises(UserError, match="unknown scope 'root'"):
        create_token(db, "x", scopes=["root"])
    with pytest.raises(UserError, match="at least one scope"):
        create_token(db, "x", scopes=[])
    with pytest.raises(UserError, match="no token named 'ghost'"):
        revoke_token(db, "ghost")


def test_users_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    url = ["--database-url", f"sqlite:///{tmp_path / 'cases.db'}"]
    monkeypatch.delenv("NONSITE_PASSWORD", raising=False)
    # A real process reading the password from a pipe.
    r = subprocess.run([sys.executable, "-m", "nonsite", "users", "add", "li", "--role", "operator", "--display-name",
                        "李明", *url], input="s3cret password\n", capture_output=True, text=True, cwd=ROOT, timeout=120,
                       env={k: v for k, v in os.environ.items() if k != "NONSITE_PASSWORD"})
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "added user li (operator)" and "s3cret" not in r.stdout + r.stderr

    monkeypatch.setenv("NONSITE_PASSWORD", "from the env!")
    assert main(["users", "add", "wang", "--role", "reviewer", *url]) == 0
    monkeypatch.delenv("NONSITE_PASSWORD")
    with pytest.raises(SystemExit):  # never on the command line
        main(["users", "add", "zhao", "--role", "admin", "--password", "on argv", *url])
    assert "unrecognized arguments: --password" in capsys.readouterr().err
    monkeypatch.setattr(sys, "stdin", io.StringIO("short\n"))
    assert main(["users", "add", "zhao", "--role", "admin", *url]) == 2
    assert capsys.readouterr().err.strip() == "error: the password is too short; use at least 8 characters"
    assert main(["users", "list", *url]) == 0
    assert capsys.readouterr().out.splitlines()[0].split("\t")[:3] == ["li", "operator", "active"]

    sf = open_db(url[1])
    try:
        assert authenticate(sf, "li", "s3cret password") is not None
        assert authenticate(sf, "wang", "from the env!") is not None
        assert main(["users", "token", "create", "--name", "city-platform", "--scope", "cases:read",
                     "--scope", "cases:write", *url]) == 0
        out = capsys.readouterr()
        token = out.out.strip()
        assert "shown once" in out.err and token not in out.err
        record = verify_token(sf, token, scope="cases:write")
        assert record is not None and record.role == "operator" and record.created_by
        assert main(["users", "token", "list", *url]) == 0
        listed = capsys.readouterr().out
        assert "city-platform" in listed and token not in listed and token[:10] in listed
        assert main(["users", "token", "revoke", "city-platform", *url]) == 0
        assert verify_token(sf, token) is None
        assert main(["users", "token", "revoke", "nope", *url]) == 2
        assert "no token named 'nope'" in capsys.readouterr().err
        with sf() as s:
            assert {u.username for u in s.query(User)} == {"li", "wang"}
    finally:
        sf.kw["bind"].dispose()
