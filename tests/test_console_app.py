"""Console over a real SQLite file and a real local evidence store holding sealed packages of real media."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from console_support import Env, csrf_of, seed

from nonsite.bus.events import new_event_id
from nonsite.cases import open_db
from nonsite.config.manifest import zone_kinds
from nonsite.console import create_app
from nonsite.console.app import UNORGANISED_TEAMS
from nonsite.console.auth import Role
from nonsite.console.i18n import LOCALES_DIR, catalogue
from nonsite.evidence import LocalStore, package_prefix

TEMPLATES = Path(__file__).resolve().parents[1] / "console" / "templates"
STATIC = TEMPLATES.parent / "static"


@pytest.fixture()
def env(tmp_path: Path, media_dir: Path) -> Iterator[Env]:
    yield seed(tmp_path, media_dir)


def numbers_in(html: str) -> list[str]:
    return re.findall(r'class="case-link" href="[^"]*">(NS-\d{4}-\d{6})<', html)


def test_queue_lists_newest_first_in_chinese(env: Env) -> None:
    client, _ = env.app()
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    html = r.text
    assert '<html lang="zh-CN">' in html
    assert numbers_in(html) == [env.cases["sidewalk_parking"], env.cases["stray_dog"], env.cases["street_vending"]]
    for label in ("人行道违停", "占道经营", "流浪犬", "待确认", "告警队列"):
        assert label in html
    assert "2026-11-21 19:03:12 (UTC+08:00)" in html  # the newest, on Shanghai's clock
    assert "1 分 35 秒" in html
    # every row has a thumbnail served by the console (the close-up)
    eid = env.events["stray_dog"]
    assert f'src="/evidence/{eid}/closeup.jpg"' in html
    assert "西门集市 &lt;b&gt;" in html and "西门集市 <b>" not in html  # autoescaped


def test_queue_in_english_sticks_via_cookie(env: Env) -> None:
    client, _ = env.app()
    r = client.get("/?lang=en")
    assert "Sidewalk parking" in r.text and "Stray dog" in r.text and "Draft" in r.text
    assert '<html lang="en">' in r.text and "人行道违停" not in r.text
    assert r.cookies.get("nonsite_lang") == "en"
    assert "Street vending" in client.get("/").text  # no ?lang: the cookie keeps English
    assert "占道经营" in client.get("/?lang=zh").text
    assert "占道经营" in client.get("/").text


def test_queue_filters(env: Env) -> None:
    client, _ = env.app()
    assert numbers_in(client.get("/?type=stray_dog").text) == [env.cases["stray_dog"]]
    assert numbers_in(client.get("/?status=dismissed").text) == []
    bad = client.get("/?status=bogus")
    assert bad.status_code == 200 and "bogus" in bad.text and len(numbers_in(bad.text)) == 3


def test_case_page_shows_the_evidence(env: Env) -> None:
    client, _ = env.app()
    number, eid = env.cases["sidewalk_parking"], env.events["sidewalk_parking"]
    html = client.get(f"/cases/{number}").text
    base = f"/evidence/{eid}/"
    assert f'src="{base}onset_annotated.jpg" data-annotated="{base}onset_annotated.jpg" ' \
           f'data-original="{base}onset.jpg"' in html
    assert f'data-annotated="{base}confirm_annotated.jpg" data-original="{base}confirm.jpg"' in html
    assert f'src="{base}closeup.jpg"' in html
    assert re.search(rf'<video controls[^>]*src="{base}clip.mp4"', html)
    assert 'id="boxes-toggle"' in html and "/static/console.js" in html
    assert 'id="started-at">2026-11-21 19:01:37 (UTC+08:00)<' in html
    assert 'id="confirmed-at">2026-11-21 19:03:12 (UTC+08:00)<' in html
    assert "东门路口" in html and "上海市黄浦区南京东路100号" in html and "人行道" in html
    assert hashlib.sha256(env.blobs[(eid, "clip.mp4")]).hexdigest() in html
    assert 'data-seal="ok"' in html and "校验通过" in html
    assert "生成案件草稿" in html and "system:drafter" in html
    assert 'id="confirm-form"' in html and 'id="dismiss-reason"' in html
    for reason in ("误报", "重复告警", "不构成违法", "其他"):
        assert reason in html
    # j goes to the next (older) case in the queue, k to the previous (newer) one
    assert f'data-next="/cases/{env.cases["stray_dog"]}"' in html and "data-prev" not in html
    middle = client.get(f"/cases/{env.cases['stray_dog']}").text
    assert f'data-next="/cases/{env.cases["street_vending"]}"' in middle
    assert f'data-prev="/cases/{env.cases["sidewalk_parking"]}"' in middle


def test_case_page_reports_a_tampered_package(env: Env) -> None:
    eid = env.events["stray_dog"]
    env.store.put(package_prefix(eid) + "closeup.jpg", b"\xff\xd8 not the original", "image/jpeg")
    client, _ = env.app()
    html = client.get(f"/cases/{env.cases['stray_dog']}?lang=en").text
    assert 'data-seal="failed"' in html and "closeup.jpg: sha256 differs" in html


def test_without_a_public_key_the_seal_is_not_checked(env: Env) -> None:
    client, _ = env.app(public_key_pem=None)
    html = client.get(f"/cases/{env.cases['stray_dog']}").text
    assert 'data-seal="unchecked"' in html


def test_evidence_is_served_with_its_type_and_ranges(env: Env) -> None:
    client, _ = env.app()
    eid = env.events["sidewalk_parking"]
    r = client.get(f"/evidence/{eid}/onset.jpg")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    assert r.content == env.blobs[(eid, "onset.jpg")]
    clip = env.blobs[(eid, "clip.mp4")]
    r = client.get(f"/evidence/{eid}/clip.mp4", headers={"Range": "bytes=100-199"})
    assert r.status_code == 206 and r.headers["content-type"] == "video/mp4" and r.content == clip[100:200]
    manifest = client.get(f"/evidence/{eid}/manifest.json")
    assert manifest.status_code == 200 and json.loads(manifest.content)["event_id"] == eid
    assert client.get(f"/evidence/{eid}/manifest.sig").status_code == 200


def test_evidence_refuses_what_the_case_does_not_list(env: Env) -> None:
    client, _ = env.app()
    eid = env.events["sidewalk_parking"]
    env.store.put(package_prefix(eid) + "notes.txt", b"not evidence", "text/plain")
    (env.root / "evidence" / "secret.txt").write_text("TOP-SECRET-CONTENT")
    for path in (
        f"/evidence/{eid}/notes.txt",
        f"/evidence/{eid}/..%2F..%2Fsecret.txt",
        f"/evidence/{eid}/%2E%2E",
        f"/evidence/{eid}/../../secret.txt",
        f"/evidence/{eid}/..",
        "/evidence/../secret.txt",
        f"/evidence/{new_event_id()}/onset.jpg",
    ):
        r = client.get(path)
        assert r.status_code == 404, path
        assert b"TOP-SECRET-CONTENT" not in r.content and b"not evidence" not in r.content


def test_confirm_and_dismiss_survive_a_restart(env: Env) -> None:
    client, sf = env.app("op")
    csrf = csrf_of(client)
    parking, dog, vending = env.cases["sidewalk_parking"], env.cases["stray_dog"], env.cases["street_vending"]
    r = client.post(f"/cases/{parking}/confirm", data={"csrf": csrf, "f": "?status=draft"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == f"/cases/{parking}?status=draft&notice=confirm"
    assert "已确认案件" in client.get(r.headers["location"]).text
    r = client.post(f"/cases/{dog}/dismiss", data={"csrf": csrf, "reason": "false_positive", "note": "是只猫"},
                    follow_redirects=False)
    assert r.status_code == 303
    r = client.post(f"/cases/{vending}/dismiss", data={"csrf": csrf, "reason": ""}, follow_redirects=False)
    assert r.status_code == 422 and "请选择排除原因" in r.text and 'id="dismiss-form"' in r.text
    r = client.post(f"/cases/{dog}/confirm", data={"csrf": csrf}, follow_redirects=False)
    assert r.status_code == 409 and "无法执行“确认”：案件当前状态为“已排除”" in r.text
    client.close()
    sf.kw["bind"].dispose()

    # The restart: a new app over the same database file.
    client, _ = env.app("op")
    page = client.get(f"/cases/{parking}").text
    assert "已确认" in page and 'id="confirm-form"' not in page and 'id="dismiss-form"' in page
    assert re.search(r"<td>op</td>\s*<td>确认</td>\s*<td>待确认 → 已确认</td>", page)
    page = client.get(f"/cases/{dog}").text
    assert "已排除" in page and "误报: 是只猫" in page and 'id="dismiss-form"' not in page
    assert numbers_in(client.get("/?status=draft").text) == [vending]
    api = client.get(f"/api/cases/{dog}").json()
    assert api["status"] == "dismissed" and api["dismiss_reason"] == "false_positive"
    assert [(a["actor"], a["action"]) for a in api["audit"]] == [("system:drafter", "created"), ("op", "dismiss")]


def test_api(env: Env) -> None:
    client, _ = env.api("op")
    parking, dog = env.cases["sidewalk_parking"], env.cases["stray_dog"]
    listed = client.get("/api/cases").json()
    assert listed["total"] == 3 and [c["number"] for c in listed["items"]][0] == parking
    assert listed["items"][0]["confirmed_at"] == "2026-11-21T11:03:12Z"
    assert listed["items"][0]["plate"] == "沪A12345"
    assert client.get("/api/cases?type=stray_dog").json()["items"][0]["number"] == dog
    assert client.get("/api/cases?limit=1&offset=1").json()["items"][0]["number"] == dog

    detail = client.get(f"/api/cases/{parking}").json()
    assert detail["seal"]["checked"] and detail["seal"]["ok"] is True
    assert {e["role"] for e in detail["evidence"]} >= {"onset", "confirm_annotated", "closeup", "clip"}
    assert client.get(next(e["url"] for e in detail["evidence"] if e["role"] == "clip")).status_code == 200
    assert detail["allowed_actions"] == ["confirm", "dismiss"] == detail["permitted_actions"]
    assert detail["document_url"] == f"/cases/{parking}/document"

    r = client.post(f"/api/cases/{parking}/confirm", json={"note": "车牌清晰"})
    assert r.status_code == 200 and r.json()["status"] == "confirmed"
    r = client.post(f"/api/cases/{parking}/confirm")
    assert r.status_code == 409 and r.json()["error"]["code"] == "invalid_transition"
    assert "is confirmed" in r.json()["error"]["message"]
    assert r.json()["error"]["text"] == "无法执行“确认”：案件当前状态为“已确认”。"
    r = client.post(f"/api/cases/{dog}/dismiss", json={"reason": "because"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_reason"
    assert "false_positive" in r.json()["error"]["message"]
    r = client.post(f"/api/cases/{dog}/dismiss", json={"note": "no reason"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "bad_request"
    assert "reason" in r.json()["error"]["message"]
    r = client.post(f"/api/cases/{dog}/dismiss", json={"reason": "other"})
    assert r.status_code == 422 and "needs a note" in r.json()["error"]["message"]
    r = client.post(f"/api/cases/{parking}/dismiss", json={"reason": "duplicate", "note": "同一辆车"})
    assert r.status_code == 200 and r.json()["status"] == "dismissed"

    r = client.get("/api/cases/NS-1999-000001")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    assert client.post("/api/cases/NS-1999-000001/confirm").status_code == 404
    r = client.get("/api/cases?status=pending")
    assert r.status_code == 422 and r.json()["error"]["code"] == "bad_filter"
    assert "draft" in r.json()["error"]["message"]
    r = client.get("/api/cases?limit=0")
    assert r.status_code == 422 and r.json()["error"]["message"].startswith("limit:")
    assert client.get("/healthz").json() == {"status": "ok", "database": "ok"}


def test_unknown_case_page_is_a_clear_404(env: Env) -> None:
    client, _ = env.app()
    r = client.get("/cases/NS-1999-000001")
    assert r.status_code == 404 and "未找到案件 NS-1999-000001" in r.text
    r = client.post("/cases/NS-1999-000001/confirm", data={"csrf": csrf_of(client)}, follow_redirects=False)
    assert r.status_code == 404


def test_cross_site_posts_are_refused(env: Env) -> None:
    client, _ = env.app()
    number = env.cases["stray_dog"]
    csrf = csrf_of(client)
    r = client.post(f"/cases/{number}/confirm", data={"csrf": csrf}, headers={"Origin": "https://evil.example"},
                    follow_redirects=False)
    assert r.status_code == 403
    assert client.get(f"/api/cases/{number}").json()["status"] == "draft"
    r = client.post(f"/cases/{number}/confirm", data={"csrf": csrf}, headers={"Origin": "http://testserver"},
                    follow_redirects=False)
    assert r.status_code == 303


def test_bad_settings_are_named(env: Env) -> None:
    sf = open_db(env.db_url)
    with pytest.raises(ValueError, match="unknown time zone 'Mars/Base'"):
        create_app(session_factory=sf, store=env.store, timezone="Mars/Base")
    with pytest.raises(ValueError, match="language 'fr'"):
        create_app(session_factory=sf, store=env.store, language="fr")
    client, _ = env.app(timezone="UTC", language="en")
    r = client.get("/")
    assert "2026-11-21 11:03:12 (UTC+00:00)" in r.text and "Alert queue" in r.text
    for bad, match in (({"max_upload_bytes": 10}, "max_upload_bytes"), ({"session_secret": "short"}, "too short"),
                       ({"teams": ["bad team"]}, "teams"), ({"session_max_age_s": 5}, "session_max_age_s"),
                       ({"live_poll_s": 0}, "live_poll_s")):
        with pytest.raises(ValueError, match=match):
            create_app(session_factory=sf, store=env.store, **bad)  # type: ignore[arg-type]


def test_catalogues_cover_every_text_the_templates_use() -> None:
    zh, en = catalogue("zh"), catalogue("en")
    assert set(zh) == set(en)
    used = set()
    for tpl in TEMPLATES.glob("*.html"):
        used |= set(re.findall(r"""\bt\(\s*["']([a-z_.]+)["']""", tpl.read_text(encoding="utf-8")))
    assert used and not used - set(zh)
    for group, values in {
        "type": ("sidewalk_parking", "street_vending", "stray_dog"),
        "status": ("draft", "confirmed", "approved", "returned", "dismissed", "dispatched", "rectified", "closed"),
        "reason": ("false_positive", "duplicate", "not_a_violation", "other"),
        "action": ("created", "confirm", "dismiss", "approve", "return", "dispatch", "rectify", "close"),
        "user_role": tuple(r.value for r in Role),
        "team": UNORGANISED_TEAMS,
        "zone_kind": zone_kinds(),
        "camera_state": ("connecting", "up", "down", "finished", "disabled"),
        "group": ("approved", "dispatched", "rectified"),
        "zone_error": ("not_a_list", "too_many_zones", "not_an_object", "unknown_field", "bad_id", "duplicate_id",
                       "bad_name", "unknown_kind", "bad_polygon", "too_few_points", "too_many_points", "bad_point",
                       "out_of_range", "bad_dwell"),
    }.items():
        for v in values:
            assert f"{group}.{v}" in zh, f"{group}.{v}"
    types = (zh["type.sidewalk_parking"], zh["type.street_vending"], zh["type.stray_dog"])
    assert types == ("人行道违停", "占道经营", "流浪犬")
    # No Chinese or English UI text is hard-coded in the templates: only markup, variables and t() calls.
    for tpl in TEMPLATES.glob("*.html"):
        text = re.sub(r"{% block body_attrs %}.*?{% endblock %}", "", tpl.read_text(encoding="utf-8"))
        text = re.sub(r"{[{%].*?[}%]}", "", text, flags=re.S)
        text = re.sub(r"<[^>]+>", "", text)
        leftovers = re.findall(r"[A-Za-z\u4e00-\u9fff]{2,}", text)
        assert not leftovers, f"{tpl.name}: {leftovers}"
    assert (LOCALES_DIR / "zh.json").is_file()
    # the scripts' texts come from the catalogue too (embedded in each page)
    for script in STATIC.glob("*.js"):
        keys = set(re.findall(r'text\(\s*"(js\.[a-z_]+)"', script.read_text(encoding="utf-8")))
        assert keys and not keys - set(zh), (script.name, keys - set(zh))
    # every error the code can raise has its sentence in both languages
    codes = set()
    for module in (TEMPLATES.parent).glob("*.py"):
        codes |= set(re.findall(r'"error\.([a-z_]+)"', module.read_text(encoding="utf-8")))
        codes |= set(re.findall(r'ActionError\(\s*\d{3}, "([a-z_]+)"', module.read_text(encoding="utf-8")))
    codes -= {"html", "forbidden"}  # the error page template; the API code whose sentence is forbidden_action
    assert codes and not {f"error.{c}" for c in codes} - set(zh), codes

class DictStore:
    """A store without files on disk (like MinIO): the console must serve from ``get`` bytes."""

    def __init__(self, inner: LocalStore) -> None:
        self.inner = inner

    def get(self, key: str) -> bytes:
        return self.inner.get(key)

    def exists(self, key: str) -> bool:
        return self.inner.exists(key)

    def list(self, prefix: str) -> Iterator[str]:
        return self.inner.list(prefix)

    def put(self, key: str, data: bytes, content_type: str) -> None:
        self.inner.put(key, data, content_type)

    def delete(self, key: str) -> None:
        self.inner.delete(key)


def test_evidence_from_a_store_without_files(env: Env) -> None:
    client, _ = env.app(store=DictStore(env.store))
    eid = env.events["stray_dog"]
    clip = env.blobs[(eid, "clip.mp4")]
    r = client.get(f"/evidence/{eid}/clip.mp4")
    assert r.status_code == 200 and r.content == clip and r.headers["accept-ranges"] == "bytes"
    assert r.headers["etag"] == f'"{hashlib.sha256(clip).hexdigest()}"'
    r = client.get(f"/evidence/{eid}/clip.mp4", headers={"Range": "bytes=100-199"})
    assert r.status_code == 206 and r.content == clip[100:200]
    assert r.headers["content-range"] == f"bytes 100-199/{len(clip)}"
    r = client.get(f"/evidence/{eid}/clip.mp4", headers={"Range": "bytes=-10"})
    assert r.status_code == 206 and r.content == clip[-10:]
    r = client.get(f"/evidence/{eid}/clip.mp4", headers={"Range": f"bytes={len(clip)}-"})
    assert r.status_code == 416
    r = client.head(f"/evidence/{eid}/closeup.jpg")
    assert r.status_code == 200 and r.content == b"" and r.headers["content-length"] == str(
        len(env.blobs[(eid, "closeup.jpg")]))
    assert 'data-seal="ok"' in client.get(f"/cases/{env.cases['stray_dog']}").text


def test_static_files_and_security_headers(env: Env) -> None:
    client, _ = env.app()
    js = client.get("/static/console.js")
    assert js.status_code == 200 and "javascript" in js.headers["content-type"]
    assert '"c"' in js.text and '"j"' in js.text and "dismiss-reason" in js.text
    assert client.get("/static/console.css").status_code == 200
    page = client.get("/")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-content-type-options"] == "nosniff"
    assert "http://" not in page.text and "https://" not in page.text  # no CDN
