"""Signed evidence links of a local store (issue 15): the report pushed to the city platform carries
``<link_base_url>/platform/evidence/<key>?exp=&sig=`` and the console serves exactly that file to anyone holding
the link until it expires — no login, no cookie — and nothing else: tampered, expired, other-key, other-secret,
traversal and unlisted-blob requests are refused."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, quote, urlsplit

import pytest
from fastapi.testclient import TestClient
from platform_simulator import PlatformSimulator, platform
from sqlalchemy import select

from nonsite.cases import Case
from nonsite.integration.hub import PlatformHub
from nonsite.integration.platform import report_from_case
from nonsite.integration.signing import LinkSigner
from tests.console_support import Env
from tests.platform_support import CALLBACK_SECRET, LINK_SECRET, REPORT_SECRET, platform_env, platform_hub

BASE = "https://nonsite.example.gov.cn"


@pytest.fixture
def env(tmp_path: Path, media_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Env:
    return platform_env(tmp_path, media_dir, monkeypatch, links=True)


@pytest.fixture
def sim() -> Iterator[PlatformSimulator]:
    with platform(REPORT_SECRET, CALLBACK_SECRET) as s:
        yield s


@pytest.fixture
def hub(env: Env, sim: PlatformSimulator) -> Iterator[PlatformHub]:
    h = platform_hub(env, sim, f"    link_base_url: {BASE}\n")
    assert h.link_secret == LINK_SECRET
    yield h
    h.close()


def case_of(env: Env, key: str) -> Case:
    _, sf = env.make_app()
    with sf() as s:
        return s.scalars(select(Case).where(Case.number == env.cases[key])).one()


def pushed_links(env: Env, hub: PlatformHub, sim: PlatformSimulator, key: str) -> list[str]:
    """The image links of the case's report as the platform received it."""
    case = case_of(env, key)
    assert hub.connector.enqueue(report_from_case(case), 1)
    assert [o.result for o in hub.connector.deliver_due()] == ["delivered"]
    [report] = [r for k, r in sim.cases.items() if k.startswith(case.number + ":")]
    urls = [i["url"] for i in report["images"]]
    assert urls and all(u.startswith(BASE + "/platform/evidence/events/") for u in urls)
    return urls


def local(url: str) -> str:
    """The path and query of a link (the console answers at link_base_url)."""
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


def test_a_pushed_link_serves_that_file_without_a_login(env: Env, hub: PlatformHub, sim: PlatformSimulator) -> None:
    app, _ = env.make_app(platform=hub)
    stranger = TestClient(app)  # no session cookie, no token
    urls = pushed_links(env, hub, sim, "sidewalk_parking")
    eid = env.events["sidewalk_parking"]
    for url in urls:
        r = stranger.get(local(url))
        assert r.status_code == 200, r.text
        name = urlsplit(url).path.rsplit("/", 1)[1]
        assert r.content == env.blobs[(eid, name)]
        assert r.headers["content-type"] == "image/jpeg"
        assert r.headers["etag"] == f'"{hashlib.sha256(r.content).hexdigest()}"'
        assert "private" in r.headers["cache-control"] and r.headers["x-content-type-options"] == "nosniff"
        assert "set-cookie" not in r.headers


def test_tampered_expired_and_borrowed_links_are_refused(env: Env, hub: PlatformHub, sim: PlatformSimulator) -> None:
    app, _ = env.make_app(platform=hub)
    client = TestClient(app)
    url = pushed_links(env, hub, sim, "sidewalk_parking")[0]
    path, q = urlsplit(url).path, {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    eid = env.events["sidewalk_parking"]
    other_file = f"/platform/evidence/events/{eid}/onset.jpg"
    other_case = f"/platform/evidence/events/{env.events['stray_dog']}/onset.jpg"
    flipped = q["sig"][:-1] + ("0" if q["sig"][-1] != "0" else "1")
    refused = {
        "tampered signature": f"{path}?exp={q['exp']}&sig={flipped}",
        "expiry pushed later": f"{path}?exp={int(q['exp']) + 3600}&sig={q['sig']}",
        "another file of the case": f"{other_file}?exp={q['exp']}&sig={q['sig']}",
        "another case's file": f"{other_case}?exp={q['exp']}&sig={q['sig']}",
        "no signature": f"{path}?exp={q['exp']}",
        "no expiry": f"{path}?sig={q['sig']}",
        "signature twice": f"{path}?exp={q['exp']}&sig={flipped}&sig={q['sig']}",
        "non-ASCII signature": f"{path}?exp={q['exp']}&sig={quote('签名' * 32)}",
        "negative expiry": f"{path}?exp=-1&sig={q['sig']}",
        "huge expiry": f"{path}?exp={'9' * 5000}&sig={q['sig']}",
    }
    for why, target in refused.items():
        r = client.get(target)
        assert r.status_code == 403, (why, r.status_code, r.text)
        assert r.headers["content-type"] == "application/json" and b"\xff\xd8" not in r.content, why
    # the same file, signed by another secret, or expired a second ago
    for signer in (LinkSigner(base_url=BASE, secret=b"not-the-secret"),
                   LinkSigner(base_url=BASE, secret=LINK_SECRET, clock=lambda: time.time() - 120)):
        forged = signer(f"events/{eid}/confirm_annotated.jpg", 60)
        assert forged is not None
        assert client.get(local(forged)).status_code == 403
    assert client.get(path + "?" + urlsplit(url).query).status_code == 200  # the genuine link still works


def test_even_a_validly_signed_key_reaches_only_files_cases_list(env: Env, hub: PlatformHub) -> None:
    """Were the secret to sign a hostile key, the route still serves only a file a case lists."""
    app, _ = env.make_app(platform=hub)
    client = TestClient(app)
    signer = LinkSigner(base_url=BASE, secret=LINK_SECRET)
    eid = env.events["sidewalk_parking"]
    env.store.put(f"events/{eid}/extra.jpg", b"\xff\xd8 not in the package", "image/jpeg")
    env.store.put("keys/other.jpg", b"\xff\xd8 outside every package", "image/jpeg")
    hostile = [
        f"events/{eid}/../../keys/other.jpg",  # traversal (check_store_key)
        f"events/{eid}/./confirm.jpg",
        "/etc/passwd",
        "keys/other.jpg",  # a blob of the store outside every package
        f"events/{eid}/extra.jpg",  # in the package's folder, not in the case's evidence
        f"events/{eid}/sub/confirm.jpg",
        "events/00000000-0000-4000-8000-000000000000/confirm.jpg",  # no such case
    ]
    for key in hostile:
        link = signer(key, 600)
        assert link is not None
        path, query = urlsplit(link).path, urlsplit(link).query
        # the client would normalise "..": send the encoded path as the raw target
        r = client.get(path.replace(".", "%2E") + "?" + query if ".." in key or "/./" in key else local(link))
        assert r.status_code == 404, (key, r.status_code)  # the signature held: the key check refused it
        assert b"not in the package" not in r.content and b"outside every package" not in r.content, key


def test_an_altered_file_is_not_served_and_no_platform_means_no_route(env: Env, hub: PlatformHub) -> None:
    signer = LinkSigner(base_url=BASE, secret=LINK_SECRET)
    eid = env.events["stray_dog"]
    link = signer(f"events/{eid}/closeup.jpg", 600)
    assert link is not None
    app, _ = env.make_app(platform=hub)
    assert TestClient(app).get(local(link)).status_code == 200
    env.store.put(f"events/{eid}/closeup.jpg", b"\xff\xd8 swapped after sealing", "image/jpeg")
    r = TestClient(app).get(local(link))
    assert r.status_code == 409 and b"swapped" not in r.content
    plain, _ = env.make_app()  # no platform configured: nothing is served behind links
    assert TestClient(plain).get(local(link)).status_code == 404
