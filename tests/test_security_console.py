"""Attacks on the console and its API (issue 11), each performed here and seen to fail.

Token scopes on every route, the four-eyes rule through a token, the login rate limit under parallel
guesses, sessions that end for good (logout, restart, password change, disable, an open live stream), the
cookie's Secure flag, and what /readyz and /metrics tell a stranger.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from console_support import PASSWORDS, Env, MemoryUsers, Served, csrf_of, seed
from fastapi import APIRouter, Depends
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from nonsite.cases import open_db
from nonsite.cases.users import SCOPES, UserError, create_token, create_user, set_active
from nonsite.cli import main
from nonsite.config import NonsiteConfig
from nonsite.config.services import ConsoleConfig
from nonsite.console.app import _check_route_table, app_routes
from nonsite.console.auth import ANY_SCOPE, PUBLIC_ROUTES, ROUTES, SESSION_ONLY, Principal, RouteAccess, authorize
from nonsite.console.directory import CasesDirectory

STAFF = {"boss": ("boss-pass-4821", "admin"), "chief": ("chief-pass-7730", "admin"),
         "clerk": ("clerk-pass-1956", "operator")}


@pytest.fixture()
def env(tmp_path: Path, media_dir: Path) -> Iterator[Env]:
    yield seed(tmp_path, media_dir)


@pytest.fixture()
def staff(env: Env) -> Iterator[sessionmaker[Session]]:
    """The real user directory (``cases/users.py``) in the case database, with two admins and an operator."""
    sf = open_db(env.db_url)
    for name, (password, role) in STAFF.items():
        create_user(sf, name, password, role)
    yield sf
    sf.kw["bind"].dispose()


def cli_token(env: Env, capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """``nonsite users token create ARGS`` against the test's case database: the printed token."""
    capsys.readouterr()
    assert main(["users", "token", "create", "--database-url", env.db_url, *args]) == 0
    return capsys.readouterr().out.strip()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def staff_login(client: TestClient, name: str) -> None:
    page = client.get("/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    r = client.post("/login", data={"username": name, "password": STAFF[name][0], "csrf": csrf},
                    follow_redirects=False)
    assert r.status_code == 303, r.text[:300]


# --- 1. token scopes ----------------------------------------------------------------------------------


def test_the_reported_scope_attacks_fail(env: Env, staff: sessionmaker[Session],
                                         capsys: pytest.CaptureFixture[str]) -> None:
    app, _ = env.make_app(auth=CasesDirectory(staff))
    number, event = env.cases["stray_dog"], env.events["stray_dog"]
    # an operator token with the default scope cases:read confirmed a case
    op = TestClient(app, headers=bearer(cli_token(env, capsys, "--name", "ci-op", "--role", "operator")))
    r = op.post(f"/api/cases/{number}/confirm", json={})
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden_scope"
    assert "cases:write" in r.json()["error"]["message"]
    assert op.get(f"/api/cases/{number}").json()["status"] == "draft"  # reading is what it may do
    # an admin token with only cases:read rewrote a camera's zones, listed cameras, fetched evidence
    adm = TestClient(app, headers=bearer(cli_token(env, capsys, "--name", "ci-adm", "--role", "admin")))
    assert env.cameras is not None
    zones_before = env.cameras.cameras()[0].zones
    r = adm.put("/api/cameras/cam-east/zones", json={"zones": []})
    assert r.status_code == 403 and "cameras:write" in r.json()["error"]["message"]
    assert env.cameras.saved == [] and env.cameras.cameras()[0].zones == zones_before
    assert adm.get("/api/cameras").status_code == 403
    assert adm.get(f"/evidence/{event}/onset.jpg").status_code == 403
    assert adm.get("/metrics").status_code == 401
    # a token holding the scopes gets through (and its role still counts)
    full = TestClient(app, headers=bearer(cli_token(env, capsys, "--name", "ci-cam", "--role", "admin", "--scope",
                                                    "cameras:read", "--scope", "evidence:read")))
    assert full.get("/api/cameras").status_code == 200
    r = full.get(f"/evidence/{event}/onset.jpg")
    assert r.status_code == 200 and r.content == env.blobs[(event, "onset.jpg")]
    me = full.get("/api/me").json()
    assert me["scopes"] == ["cameras:read", "evidence:read"] and me["acts_for"] is None


def _fill(path: str, event_id: str) -> str:
    return (path.replace("{number}", "NS-1999-000001").replace("{action}", "confirm").replace("{event_id}", event_id)
            .replace("{name}", "onset.jpg").replace("{camera_id}", "cam-east"))


def _call(client: TestClient, method: str, path: str) -> httpx.Response:
    if path == "/api/events":
        path += "?since=not-a-cursor"  # 422 once access is granted (instead of a stream)
    if method == "PUT":
        return client.put(path, json={"zones": "not a list"}, follow_redirects=False)
    if method == "POST":
        return client.post(path, json={}, follow_redirects=False)
    return client.get(path, follow_redirects=False)


def test_every_route_refuses_a_token_without_its_scope(env: Env) -> None:
    app, _ = env.make_app()
    routes = [(name, path, sorted(methods - {"HEAD"})) for name, path, methods in app_routes(app)
              if name not in PUBLIC_ROUTES]
    assert {name for name, _, _ in routes} == set(ROUTES)  # the table lists exactly the app's routes
    assert {n for n, a in ROUTES.items() if a.scope == ANY_SCOPE} == {"api_me", "api_openapi"}
    checked = 0
    for name, path, methods in routes:
        scope = ROUTES[name].scope
        if scope == ANY_SCOPE:
            continue
        lacking = TestClient(app, headers=bearer(env.users.issue_token("adm", frozenset(SCOPES) - {scope})))
        holding = TestClient(app, headers=bearer(env.users.issue_token("adm", {scope} & set(SCOPES))))
        for method in methods:
            url = _fill(path, env.events["stray_dog"])
            r = _call(lacking, method, url)
            assert r.status_code == 403, (name, method, url, r.status_code)
            if url.startswith(("/api/", "/evidence/")):
                assert r.json()["error"]["code"] == "forbidden_scope", (name, r.text[:200])
            r = _call(holding, method, url)
            if scope == SESSION_ONLY:
                assert r.status_code == 403, (name, method, url)
            else:
                assert r.status_code not in (401, 403), (name, method, url, r.status_code, r.text[:200])
            checked += 1
    assert checked >= 20


def test_a_route_without_roles_and_scope_stops_the_app() -> None:
    stray = APIRouter(dependencies=[Depends(authorize)])

    @stray.get("/backdoor", name="backdoor")
    def backdoor() -> dict[str, str]:
        return {}

    with pytest.raises(RuntimeError, match="'backdoor'.*roles and token scope"):
        _check_route_table([stray])
    with pytest.raises(ValueError, match="unknown scope 'cases:delete'"):
        RouteAccess(frozenset(), "cases:delete")


def test_token_scopes_are_validated_and_listed_by_the_cli(env: Env, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        main(["users", "token", "create", "--database-url", env.db_url, "--name", "x", "--scope", "cases:delete"])
    assert stop.value.code == 2 and "invalid choice: 'cases:delete'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["users", "token", "create", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    for scope in SCOPES:
        assert scope in help_text
    assert main(["users", "token", "create", "--database-url", env.db_url, "--name", "forever",
                 "--expires-days", "999999999"]) == 2
    assert "out of range" in capsys.readouterr().err


# --- 2. four eyes through a token --------------------------------------------------------------------------


def test_four_eyes_holds_when_the_confirmer_uses_a_token(env: Env, staff: sessionmaker[Session],
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    app, _ = env.make_app(auth=CasesDirectory(staff))
    first, second = env.cases["stray_dog"], env.cases["sidewalk_parking"]
    browser = TestClient(app)
    staff_login(browser, "boss")
    csrf = {"X-CSRF-Token": csrf_of(browser)}
    assert browser.post(f"/api/cases/{first}/confirm", json={}, headers=csrf).status_code == 200
    assert browser.post(f"/api/cases/{first}/approve", json={}, headers=csrf).status_code == 403
    token = cli_token(env, capsys, "--name", "boss-ci", "--user", "boss", "--scope", "cases:read",
                      "--scope", "cases:write")
    api = TestClient(app, headers=bearer(token))
    me = api.get("/api/me").json()
    assert me["username"] == "token:boss-ci" and me["acts_for"] == "boss" and me["role"] == "admin"
    r = api.post(f"/api/cases/{first}/approve", json={})
    assert r.status_code == 403 and "boss confirmed case" in r.json()["error"]["message"]
    # the other way round: confirmed through the token, approved in the browser by the same person
    assert api.post(f"/api/cases/{second}/confirm", json={}).status_code == 200
    assert browser.post(f"/api/cases/{second}/approve", json={}, headers=csrf).status_code == 403
    # another person may approve both
    chief = TestClient(app)
    staff_login(chief, "chief")
    chief_csrf = {"X-CSRF-Token": csrf_of(chief)}
    for number in (first, second):
        assert chief.post(f"/api/cases/{number}/approve", json={}, headers=chief_csrf).status_code == 200
    audit = api.get(f"/api/cases/{second}").json()["audit"]
    confirm = next(a for a in audit if a["action"] == "confirm")
    assert confirm["actor"] == "token:boss-ci" and confirm["detail"]["person"] == "boss"
    # the token ends with its owner, and may not be more than its owner
    set_active(staff, "boss", False)
    assert api.get("/api/me").status_code == 401
    with pytest.raises(UserError, match="cannot act as admin"):
        create_token(staff, "clerk-admin", role="admin", owner="clerk")
    # and a token that could approve cannot be made without a person behind it (the reported bypass)
    with pytest.raises(UserError, match="must act for a person"):
        create_token(staff, "nobodys-admin", role="admin", scopes=["cases:read", "cases:write"])
    assert main(["users", "token", "create", "--database-url", env.db_url, "--name", "nobodys-reviewer",
                 "--role", "reviewer", "--scope", "cases:write"]) == 2
    assert "add --user USER" in capsys.readouterr().err


# --- 3. the login rate limit under parallel guesses ----------------------------------------------------


class CountingUsers(MemoryUsers):
    """The test directory, counting password checks and how many ran at once."""

    def __init__(self, inner: MemoryUsers) -> None:
        self.__dict__.update(inner.__dict__)
        self.calls = self.running = self.most = 0
        self._count_lock = threading.Lock()

    def authenticate(self, username: str, password: str) -> Principal | None:
        with self._count_lock:
            self.calls += 1
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            return super().authenticate(username, password)
        finally:
            with self._count_lock:
                self.running -= 1


async def _parallel_logins(app: Any, address: str, attempts: list[tuple[str, str]]) -> list[int]:
    """Post every (user, password) of ``attempts`` at once from ``address``; the statuses."""
    transport = httpx.ASGITransport(app=app, client=(address, 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://console") as client:
        page = await client.get("/login")
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
        cookie = {"Cookie": f"nonsite_session={page.cookies['nonsite_session']}"}
        responses = await asyncio.gather(*[
            client.post("/login", data={"username": user, "password": password, "csrf": csrf}, headers=cookie)
            for user, password in attempts])
    return [r.status_code for r in responses]


def test_parallel_wrong_passwords_are_counted_before_hashing(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="nonsite.console.login")
    users = CountingUsers(env.users)
    app, _ = env.make_app(auth=users)
    statuses = asyncio.run(_parallel_logins(app, "203.0.113.9", [("op", "wrong-guess")] * 40))
    assert statuses.count(401) == 5 and statuses.count(429) == 35, statuses
    refused = [r for r in caplog.records if "login refused from 203.0.113.9" in r.getMessage()]
    assert len(refused) == 35 and [r.levelno for r in refused].count(logging.WARNING) == 1  # one warning, no flood
    assert users.calls == 5  # only the admitted attempts were hashed
    assert users.most <= 2  # and never more than two at once (the hash slots)
    # the real user, from their own desk, still gets in
    assert asyncio.run(_parallel_logins(app, "198.51.100.20", [("op", PASSWORDS["op"])])) == [303]
    assert users.calls == 6


def test_a_guesser_locks_only_their_own_address_until_the_user_threshold(
        env: Env, staff: sessionmaker[Session], capsys: pytest.CaptureFixture[str]) -> None:
    app, _ = env.make_app(auth=CasesDirectory(staff), login_max_failures_per_user=8)

    def attempt(address: str, password: str) -> int:
        client = TestClient(app, client=(address, 40000))
        page = client.get("/login")
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
        return client.post("/login", data={"username": "clerk", "password": password, "csrf": csrf},
                           follow_redirects=False).status_code

    for _ in range(5):
        assert attempt("203.0.113.9", "guess") == 401
    assert attempt("203.0.113.9", STAFF["clerk"][0]) == 429  # that address is locked for clerk
    assert attempt("198.51.100.20", STAFF["clerk"][0]) == 303  # clerk's own desk is not
    for n in range(3):  # 5 + 3 failures: the user's threshold (8 here) from anywhere
        assert attempt(f"203.0.113.{20 + n}", "guess") == 401
    assert attempt("198.51.100.20", STAFF["clerk"][0]) == 429  # now many addresses guessed: locked everywhere
    assert main(["users", "unlock", "clerk", "--database-url", env.db_url]) == 0
    assert "unlocked clerk" in capsys.readouterr().out
    assert attempt("198.51.100.20", STAFF["clerk"][0]) == 303
    assert attempt("203.0.113.9", STAFF["clerk"][0]) == 303


# --- 4. sessions end for good --------------------------------------------------------------------------


def test_a_logged_out_session_stays_dead_after_a_restart(env: Env) -> None:
    client, _ = env.app("rev")
    stolen = client.cookies.get("nonsite_session") or ""
    restarted, _ = env.make_app()  # same signing key, same database: a restart
    assert TestClient(restarted, cookies={"nonsite_session": stolen}).get("/review").status_code == 200
    assert client.post("/logout", data={"csrf": csrf_of(client)}, follow_redirects=False).status_code == 303
    again, _ = env.make_app()
    replay = TestClient(again, cookies={"nonsite_session": stolen})
    r = replay.get("/review", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/login")
    assert replay.get("/api/me").status_code == 401


def test_password_change_disable_and_cli_logout_end_open_sessions(
        env: Env, staff: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    app, _ = env.make_app(auth=CasesDirectory(staff))
    browsers = {}
    for name in ("clerk", "boss", "chief"):
        browsers[name] = TestClient(app)
        staff_login(browsers[name], name)
        assert browsers[name].get("/api/me").status_code == 200
    monkeypatch.setenv("NONSITE_PASSWORD", "a-new-password-99")
    assert main(["users", "passwd", "clerk", "--database-url", env.db_url]) == 0
    assert browsers["clerk"].get("/api/me").status_code == 401
    assert main(["users", "disable", "boss", "--database-url", env.db_url]) == 0
    assert main(["users", "enable", "boss", "--database-url", env.db_url]) == 0
    assert browsers["boss"].get("/api/me").status_code == 401  # enabling again does not revive the session
    assert main(["users", "logout", "chief", "--database-url", env.db_url]) == 0
    assert "ended 1 console session(s) of chief" in capsys.readouterr().out
    assert browsers["chief"].get("/api/me").status_code == 401
    fresh = TestClient(app)
    staff_login(fresh, "chief")  # a new login works
    assert fresh.get("/api/me").json()["username"] == "chief"


def _stream_until_end(client: httpx.Client, end_it: Any) -> list[str]:
    """Open /api/events, call ``end_it()`` once the stream runs, and read until the server closes it."""
    lines: list[str] = []
    with client.stream("GET", "/api/events") as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            lines.append(line)
            if line.startswith("retry: "):
                end_it()
    return lines


def test_an_open_live_stream_ends_at_logout_and_at_token_revocation(env: Env) -> None:
    app, _ = env.make_app(live_poll_s=0.05, session_recheck_s=0.05)
    with Served(app) as served:
        browser = httpx.Client(base_url=served.url, timeout=10)
        page = browser.get("/login")
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
        r = browser.post("/login", data={"username": "op", "password": PASSWORDS["op"], "csrf": csrf})
        assert r.status_code == 303 and browser.get("/api/me").json()["username"] == "op"
        form_csrf = re.search(r'data-csrf="([^"]*)"', browser.get("/search").text).group(1)  # type: ignore[union-attr]
        other_tab = httpx.Client(base_url=served.url, timeout=10, cookies=browser.cookies)

        lines = _stream_until_end(browser, lambda: other_tab.post("/logout", headers={"X-CSRF-Token": form_csrf}))
        assert "event: end" in lines and any('"session_ended"' in line for line in lines)
        assert browser.get("/api/events").status_code == 401

        token = env.users.issue_token("op")
        integrator = httpx.Client(base_url=served.url, timeout=10, headers=bearer(token))
        lines = _stream_until_end(integrator, lambda: env.users.revoke_tokens("op"))
        assert "event: end" in lines
        for c in (browser, other_tab, integrator):
            c.close()


# --- 5. the cookie's Secure flag ------------------------------------------------------------------------


def test_cookies_are_secure_by_default_off_loopback(tmp_path: Path) -> None:
    for host, secure in (("127.0.0.1", False), ("::1", False), ("localhost", False), ("0.0.0.0", True),
                         ("10.1.2.3", True), ("console.city.example", True)):
        assert ConsoleConfig(host=host).cookies_secure() is secure, host
    assert ConsoleConfig(host="0.0.0.0", secure_cookies=False).cookies_secure() is False
    assert ConsoleConfig(host="127.0.0.1", secure_cookies=True).cookies_secure() is True

    from nonsite.app import console_app
    from nonsite.evidence import LocalStore

    sf = open_db(f"sqlite:///{tmp_path / 'cases.db'}")
    for host, secure in (("0.0.0.0", True), ("127.0.0.1", False)):
        cfg = NonsiteConfig.model_validate({"data_dir": str(tmp_path / host), "console": {"host": host}})
        app, _ = console_app(cfg, sf, LocalStore(tmp_path / "evidence"), None, None)
        cookie = TestClient(app, base_url="https://console").get("/login").headers["set-cookie"]
        assert ("Secure" in cookie) is secure and "HttpOnly" in cookie and "samesite=lax" in cookie.lower()
    sf.kw["bind"].dispose()


# --- 6. what /readyz and /metrics tell whom ------------------------------------------------------------


def test_readiness_and_metrics_detail_only_for_those_allowed(env: Env) -> None:
    metrics_token = "prometheus-token-0123456789"
    app, _ = env.make_app(metrics_token=metrics_token)
    stranger = TestClient(app)
    r = stranger.get("/readyz")
    assert r.status_code == 200 and r.json() == {"status": "ready"} and str(env.root) not in r.text
    r = stranger.get("/metrics")
    assert r.status_code == 401 and "nonsite_cases" not in r.text
    assert TestClient(app, headers=bearer("wrong-token-0123456789")).get("/metrics").status_code == 401
    operator, _ = env.app("op", metrics_token=metrics_token)
    assert operator.get("/metrics").status_code == 401 and "checks" not in operator.get("/readyz").json()
    allowed = {
        "the metrics token": TestClient(app, headers=bearer(metrics_token)),
        "an admin's session": env.app("adm", metrics_token=metrics_token)[0],
        "a metrics:read token": TestClient(app, headers=bearer(env.users.issue_token("op", {"metrics:read"}))),
    }
    for who, client in allowed.items():
        r = client.get("/metrics")
        assert r.status_code == 200 and 'nonsite_cases{status="draft"} 3.0' in r.text, who
        assert set(client.get("/readyz").json()["checks"]) == {"database", "store"}, who
    no_scope = TestClient(app, headers=bearer(env.users.issue_token("adm", {"cases:read"})))
    assert no_scope.get("/metrics").status_code == 401


def test_a_configured_metrics_token_must_be_set_and_long(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from nonsite.app import console_app
    from nonsite.config import ConfigError
    from nonsite.evidence import LocalStore

    sf = open_db(f"sqlite:///{tmp_path / 'cases.db'}")
    cfg = NonsiteConfig.model_validate({"data_dir": str(tmp_path), "console": {"metrics_token_env": "PROM_TOKEN"}})
    monkeypatch.delenv("PROM_TOKEN", raising=False)
    with pytest.raises(ConfigError, match="PROM_TOKEN is not set"):
        console_app(cfg, sf, LocalStore(tmp_path / "evidence"), None, None)
    monkeypatch.setenv("PROM_TOKEN", "short")
    with pytest.raises(ConfigError, match="PROM_TOKEN is too short"):
        console_app(cfg, sf, LocalStore(tmp_path / "evidence"), None, None)
    monkeypatch.setenv("PROM_TOKEN", "a-long-enough-token-42")
    app, _ = console_app(cfg, sf, LocalStore(tmp_path / "evidence"), None, None)
    r = TestClient(app, headers=bearer("a-long-enough-token-42")).get("/metrics")
    assert r.status_code == 200 and "nonsite_cases" in r.text
    sf.kw["bind"].dispose()
