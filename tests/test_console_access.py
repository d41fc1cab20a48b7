"""Login, sessions, CSRF, the login rate limit, API tokens, and the role of every route."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from console_support import PASSWORDS, Env, csrf_of, login, seed
from fastapi.testclient import TestClient

from nonsite.cases.users import SCOPES
from nonsite.console import api, bureau_pages, camera_views, documents, enforcement, pages, platform, stats
from nonsite.console import field as field_module
from nonsite.console import login as login_module
from nonsite.console.app import route_names
from nonsite.console.auth import ACTION_ROLES, PUBLIC_ROUTES, ROUTE_ROLES, LoginLimiter, PerAction, Role
from nonsite.console.i18n import catalogue

ROLE_OF = {"op": "operator", "rev": "reviewer", "adm": "admin"}
ZH = catalogue("zh")


@pytest.fixture()
def env(tmp_path: Path, media_dir: Path) -> Iterator[Env]:
    yield seed(tmp_path, media_dir)


def test_pages_send_strangers_to_the_login_form_and_back(env: Env) -> None:
    client, _ = env.app(user=None)
    number = env.cases["stray_dog"]
    r = client.get(f"/cases/{number}?lang=en", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == f"/login?next=%2Fcases%2F{number}%3Flang%3Den"
    page = client.get(r.headers["location"])
    assert page.status_code == 200 and 'id="login-form"' in page.text and "用户名" in page.text
    assert 'name="next" value="/cases/' in page.text
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    r = client.post("/login", data={"username": "op", "password": PASSWORDS["op"], "csrf": csrf,
                                    "next": f"/cases/{number}?lang=en"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == f"/cases/{number}?lang=en"
    cookie = r.headers["set-cookie"]
    assert "nonsite_session=" in cookie and "HttpOnly" in cookie and "SameSite=lax" in cookie
    assert "Secure" not in cookie
    page = client.get(r.headers["location"])
    assert page.status_code == 200 and f"Case {number}" in page.text and "值班员小王 · Operator" in page.text
    # the JSON API and evidence answer 401 (not a redirect) to strangers
    stranger = TestClient(client.app)
    r = stranger.get("/api/cases")
    assert r.status_code == 401 and r.json()["error"]["code"] == "not_authenticated"
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert stranger.get(f"/evidence/{env.events['stray_dog']}/onset.jpg").status_code == 401
    assert stranger.get("/healthz").status_code == 200
    assert stranger.get("/static/console.js").status_code == 200


def test_secure_cookies_and_no_open_redirect(env: Env) -> None:
    app, _ = env.make_app(secure_cookies=True)
    page = TestClient(app, base_url="https://testserver").get("/login?next=//evil.example/x")
    assert 'name="next" value="/"' in page.text and "Secure" in page.headers["set-cookie"]
    for target in ("//evil.example/x", "https://evil.example/", "/\\evil.example", "javascript:alert(1)", "/ok"):
        client = TestClient(app, base_url="https://testserver")
        r = login(client, "rev", next_url=target)
        assert r.status_code == 303 and r.headers["location"] == ("/ok" if target == "/ok" else "/"), target
        assert "Secure" in r.headers["set-cookie"] and "HttpOnly" in r.headers["set-cookie"]


def test_wrong_password_and_the_rate_limit(env: Env) -> None:
    client, _ = env.app(user=None)
    now = [1000.0]
    client.app.state.access.limiter = LoginLimiter(5, 20, 300.0, clock=lambda: now[0])  # type: ignore[attr-defined]
    r = login(client, "op", "wrong")
    assert r.status_code == 401 and "用户名或密码错误" in r.text and 'value="op"' in r.text
    assert "nonsite_session" in r.headers["set-cookie"]  # a fresh anonymous session; not logged in
    assert client.get("/", follow_redirects=False).status_code == 303
    r = login(client, "nobody", "whatever")
    assert r.status_code == 401
    for _ in range(4):
        assert login(client, "op", "still wrong").status_code == 401
    r = login(client, "op")  # the right password, but op has 5 failures in the window
    assert r.status_code == 429 and "登录失败次数过多" in r.text and int(r.headers["retry-after"]) >= 1
    r = login(client, "OP ", "again")  # names are compared without case and spaces
    assert r.status_code == 429
    assert login(client, "rev").status_code == 303  # other users are not locked out
    client.cookies.clear()
    now[0] += 301
    assert login(client, "op").status_code == 303  # the window passed


def test_rate_limit_per_address(env: Env) -> None:
    client, _ = env.app(user=None, login_max_failures_per_ip=3, login_max_failures=10)
    for name in ("a", "b", "c"):
        assert login(client, name, "x").status_code == 401
    r = login(client, "adm")
    assert r.status_code == 429 and "Retry-After" in r.headers


def test_login_needs_the_forms_token(env: Env) -> None:
    client, _ = env.app(user=None)
    client.get("/login")
    r = client.post("/login", data={"username": "op", "password": PASSWORDS["op"], "csrf": "forged"},
                    follow_redirects=False)
    assert r.status_code == 403 and "登录页面已过期" in r.text
    fresh = TestClient(client.app)
    r = fresh.post("/login", data={"username": "op", "password": PASSWORDS["op"]}, follow_redirects=False)
    assert r.status_code == 403


def test_no_user_directory_means_no_login(env: Env) -> None:
    client, _ = env.app(user=None, auth=None)
    page = client.get("/login")
    assert "尚未配置用户目录" in page.text
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    r = client.post("/login", data={"username": "adm", "password": PASSWORDS["adm"], "csrf": csrf})
    assert r.status_code == 503
    assert client.get("/api/cases").status_code == 401


def test_csrf_on_every_state_change(env: Env) -> None:
    client, _ = env.app("op")
    number = env.cases["stray_dog"]
    for data in ({}, {"csrf": "wrong"}, {"csrf": ""}):
        r = client.post(f"/cases/{number}/confirm", data=data, follow_redirects=False)
        assert r.status_code == 403 and "表单已过期" in r.text
    r = client.post(f"/api/cases/{number}/confirm", json={})
    assert r.status_code == 403 and r.json()["error"]["code"] == "csrf"
    r = client.post(f"/api/cases/{number}/confirm", json={}, headers={"X-CSRF-Token": "nope"})
    assert r.status_code == 403
    assert client.get(f"/api/cases/{number}").json()["status"] == "draft"
    r = client.post(f"/api/cases/{number}/confirm", json={}, headers={"X-CSRF-Token": csrf_of(client)})
    assert r.status_code == 200 and r.json()["status"] == "confirmed"
    r = client.post("/logout", follow_redirects=False)
    assert r.status_code == 403  # logging out is a state change too


def test_logout_ends_the_session_for_good(env: Env) -> None:
    client, _ = env.app("rev")
    stolen = client.cookies.get("nonsite_session")
    assert client.get("/review").status_code == 200
    r = client.post("/logout", data={"csrf": csrf_of(client)}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/login"
    assert client.get("/review", follow_redirects=False).status_code == 303
    replay = TestClient(client.app, cookies={"nonsite_session": stolen or ""})
    assert replay.get("/review", follow_redirects=False).status_code == 303


def test_tampered_or_expired_cookies_are_ignored(env: Env) -> None:
    client, _ = env.app("adm", session_max_age_s=60)
    good = client.cookies.get("nonsite_session") or ""
    for bad in (good[:-2] + "xx", "garbage", "", good.replace(".", "", 1), "a" * 5000):
        c = TestClient(client.app, cookies={"nonsite_session": bad})
        assert c.get("/api/cases").status_code == 401
    other, _ = env.app("adm", session_secret="another-secret-" + "y" * 20)
    assert TestClient(other.app, cookies={"nonsite_session": good}).get("/api/cases").status_code == 401


def test_a_deactivated_user_or_a_new_role_takes_effect_at_once(env: Env) -> None:
    client, _ = env.app("rev")
    assert client.get("/review").status_code == 200
    env.users.set_role("rev", "operator")
    r = client.get("/review")
    assert r.status_code == 403 and "法制审核员或管理员" in r.text
    env.users.deactivate("rev")
    assert client.get("/review", follow_redirects=False).status_code == 303


def test_api_tokens(env: Env) -> None:
    client, _ = env.api("rev")
    me = client.get("/api/me").json()
    assert me == {"username": "rev", "display_name": "审核员老李", "role": "reviewer", "via_token": True,
                  "acts_for": None, "scopes": sorted(SCOPES)}
    number = env.cases["stray_dog"]
    r = client.post(f"/api/cases/{number}/confirm", json={})  # no CSRF needed, but the role is checked
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    assert "operator or admin" in r.json()["error"]["message"]
    assert r.json()["error"]["text"] == "您的角色（法制审核员）不能执行“确认”，需要值班员或管理员。"
    for header in ("Bearer nst_not-a-token", "Bearer ", "Basic dXNlcjpwYXNz", "Bearer " + "x" * 600):
        r = TestClient(client.app, headers={"Authorization": header}).get("/api/me")
        assert r.status_code == 401, header
    env.users.revoke_tokens("rev")
    r = client.get("/api/me")
    assert r.status_code == 401 and "not valid" in r.json()["error"]["message"]
    # a token never opens the HTML login redirect either
    assert client.get("/", follow_redirects=False).status_code == 401
    spec = client.get("/api/openapi.json")
    assert spec.status_code == 401
    ok, _ = env.api("op")
    paths = ok.get("/api/openapi.json").json()["paths"]
    assert {"/api/cases", "/api/cases/{number}", "/api/cases/{number}/{action}", "/api/events",
            "/api/cameras/{camera_id}/zones", "/api/me"} <= set(paths)


# --- the role table, route by route -------------------------------------------------------------------

ROUTERS = [login_module.public, login_module.router, documents.router, camera_views.pages, camera_views.api,
           pages.router, api.router, field_module.public, field_module.router, stats.pages, stats.api,
           bureau_pages.router, bureau_pages.api_router]
ROUTERS += [enforcement.pages, enforcement.api, platform.public, platform.pages, platform.api]  # issue 15


def _path(path: str, action: str, event_id: str) -> str:
    return (path.replace("{number}", "NS-1999-000001").replace("{action}", action)
            .replace("{event_id}", event_id).replace("{name}", "onset.jpg").replace("{camera_id}", "nope")
            .replace("{document_id}", "1"))


def _calls(env: Env) -> list[tuple[str, str, str, str, frozenset[str]]]:
    """(route name, method, path, action, roles allowed) for every route of the app and every action."""
    calls = []
    names = set()
    for name, path, methods in route_names(ROUTERS) + [("evidence", "/evidence/{event_id}/{name}",
                                                        frozenset({"GET"})), ("healthz", "/healthz",
                                                                              frozenset({"GET"}))]:
        names.add(name)
        if name in PUBLIC_ROUTES:
            continue
        spec = ROUTE_ROLES[name]
        if isinstance(spec, PerAction):
            actions = [spec.action] if spec.action else [a for a in ACTION_ROLES if a != "rectify"]
        else:
            actions = [""]
        for method in sorted(methods - {"HEAD"}):
            for action in actions:
                roles = ACTION_ROLES[action] if isinstance(spec, PerAction) else spec
                calls.append((name, method, _path(path, action, env.events["stray_dog"]), action,
                              frozenset(r.value for r in roles)))
    assert names >= set(ROUTE_ROLES), set(ROUTE_ROLES) - names  # every entry of the table is a real route
    return sorted(calls, key=lambda c: c[0] == "logout")  # logging out last


def _request(client: TestClient, method: str, path: str, name: str) -> object:
    headers = {"X-CSRF-Token": client.headers.get("X-CSRF-Token", "")}
    if name == "api_events":
        path += "?since=not-a-cursor"  # answers 422 once access is granted (instead of streaming)
    if method == "PUT":
        return client.put(path, json={"zones": []}, headers=headers, follow_redirects=False)
    if method == "POST":
        return client.post(path, data={"csrf": headers["X-CSRF-Token"]}, headers=headers, follow_redirects=False)
    return client.get(path, follow_redirects=False)


def test_every_route_checks_the_role(env: Env) -> None:
    stranger, _ = env.app(user=None)
    clients = {}
    for user in ("op", "rev", "adm"):
        c, _ = env.app(user)
        c.headers["X-CSRF-Token"] = csrf_of(c)
        clients[user] = c
    calls = _calls(env)
    assert len(calls) >= 30
    for name, method, path, action, roles in calls:
        r = _request(stranger, method, path, name)
        if method == "GET" and not path.startswith(("/api/", "/evidence/", "/cameras/")):
            assert r.status_code == 303 and r.headers["location"].startswith("/login?next="), (name, path)  # type: ignore[attr-defined]
        else:
            assert r.status_code == 401, (name, method, path, r.status_code)  # type: ignore[attr-defined]
        for user, client in clients.items():
            r = _request(client, method, path, name)
            status = r.status_code  # type: ignore[attr-defined]
            if ROLE_OF[user] in roles:
                assert status not in (401, 403), (user, name, method, path, status, r.text[:200])  # type: ignore[attr-defined]
            else:
                assert status == 403, (user, name, method, path, status)
                body = r.text  # type: ignore[attr-defined]
                assert "您的角色" in body and ("需要" in body), (user, name, body[:300])
                if action:  # the refused action is named
                    assert f"“{ZH[f'action.{action}']}”" in body, (user, name, action)


def test_the_role_table_matches_the_issue() -> None:
    op, rev, adm = Role.OPERATOR, Role.REVIEWER, Role.ADMIN
    # The console enforces the workflow's own table (a reviewer may also dismiss during the legal review).
    assert {a: set(r) for a, r in ACTION_ROLES.items()} == {
        "confirm": {op, adm}, "dismiss": {op, rev, adm}, "dispatch": {op, adm},
        "rectify": {op, Role.FIELD_OFFICER, adm}, "approve": {rev, adm}, "return": {rev, adm}, "close": {rev, adm},
    }
    assert ROUTE_ROLES["zone_editor"] == ROUTE_ROLES["api_camera_zones"] == frozenset({adm})
    assert ROUTE_ROLES["review"] == frozenset({rev, adm})


def test_what_was_typed_never_reaches_the_log(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    client, _ = env.app(user=None)
    login(client, PASSWORDS["adm"], PASSWORDS["adm"])  # the password typed into the name field, twice
    r = login(client, "adm")
    assert r.status_code == 303
    token = env.users.issue_token("op")
    TestClient(client.app, headers={"Authorization": f"Bearer {token}"}).get("/api/me")
    assert "failed login" in caplog.text and "logged in" in caplog.text
    assert PASSWORDS["adm"] not in caplog.text and token not in caplog.text
    r = client.get("/api/me")
    assert r.headers["cache-control"] == "no-store" and PASSWORDS["adm"] not in r.text
