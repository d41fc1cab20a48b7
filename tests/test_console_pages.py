"""The pages as each role sees them, in Chinese and English: review queue, tasks, search, cameras, zones."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from console_support import Env, csrf_of, seed
from fastapi.testclient import TestClient

from nonsite.console.i18n import catalogue

ZH, EN = catalogue("zh"), catalogue("en")


@pytest.fixture()
def env(tmp_path: Path, media_dir: Path) -> Iterator[Env]:
    yield seed(tmp_path, media_dir)


def _post(client: TestClient, path: str, **data: str) -> object:
    return client.post(path, data={"csrf": csrf_of(client), **data}, follow_redirects=False)


def test_navigation_follows_the_role(env: Env) -> None:
    for user, visible, hidden in (("op", ["nav-queue", "nav-tasks", "nav-search", "nav-cameras"], ["nav-review"]),
                                  ("rev", ["nav-queue", "nav-review", "nav-tasks", "nav-search"], ["nav-cameras"]),
                                  ("adm", ["nav-review", "nav-cameras"], [])):
        client, _ = env.app(user)
        page = client.get("/").text
        for nav in visible:
            assert f'id="{nav}"' in page, (user, nav)
        for nav in hidden:
            assert f'id="{nav}"' not in page, (user, nav)
        assert 'id="logout"' in page and f'data-csrf="{csrf_of(client)}"' in page


def test_review_queue_approve_and_return(env: Env) -> None:
    op, _ = env.app("op")
    parking, dog = env.cases["sidewalk_parking"], env.cases["stray_dog"]
    for n in (parking, dog):
        assert _post(op, f"/cases/{n}/confirm", note="证据清楚").status_code == 303  # type: ignore[attr-defined]
    r = op.get("/review")
    assert r.status_code == 403 and "您的角色（值班员）无权访问此页面，需要法制审核员或管理员。" in r.text

    rev, _ = env.app("rev")
    page = rev.get("/review").text
    assert page.index(f"review-{parking}") < page.index(f"review-{dog}")  # first confirmed, first reviewed
    assert "确认人" in page and "op" in page and "证据清楚" in page and "沪A12345" in page
    assert page.count('class="approve-form"') == 2 and page.count('class="return-form"') == 2
    r = _post(rev, f"/cases/{dog}/return", note="", back="review")
    assert r.status_code == 422 and "退回案件须填写退回原因" in r.text  # type: ignore[attr-defined]
    r = _post(rev, f"/cases/{dog}/return", note="请补充近景", back="review")
    assert r.status_code == 303 and r.headers["location"] == f"/review?notice=return&case={dog}"  # type: ignore[attr-defined]
    page = rev.get(r.headers["location"]).text  # type: ignore[attr-defined]
    assert f"案件 {dog} 已退回。" in page and f"review-{dog}" not in page
    r = _post(rev, f"/cases/{parking}/approve", note="<b>同意</b>", back="review")
    assert r.status_code == 303  # type: ignore[attr-defined]
    page = rev.get(f"/cases/{parking}").text
    assert "审核通过" in page and "&lt;b&gt;同意&lt;/b&gt;" in page and "<b>同意</b>" not in page
    assert "review.empty" not in page
    assert ZH["review.empty"] in rev.get("/review").text
    # the operator sees the returned case again, with the reviewer's comment
    page = op.get(f"/cases/{dog}").text
    assert "已退回" in page and "请补充近景" in page and 'id="confirm-form"' in page


def test_tasks_dispatch_feedback_close(env: Env, media_dir: Path) -> None:
    op, _ = env.app("op")
    rev, _ = env.app("rev")
    n = env.cases["stray_dog"]
    _post(op, f"/cases/{n}/confirm")
    _post(rev, f"/cases/{n}/approve")
    page = op.get("/tasks").text
    assert "待派遣" in page and 'class="dispatch-form"' in page and "犬只收容队" in page
    assert 'class="close-form"' not in page
    r = _post(op, f"/cases/{n}/dispatch", team="nobody", back="tasks")
    assert r.status_code == 422 and "没有这个交办单位" in r.text  # type: ignore[attr-defined]
    r = _post(op, f"/cases/{n}/dispatch", team="capture_team", note="北门有犬只", back="tasks")
    assert r.status_code == 303 and "notice=dispatch" in r.headers["location"]  # type: ignore[attr-defined]
    page = op.get("/tasks").text
    assert 'class="feedback-form"' in page and "交办至" in page and "犬只收容队 · op" in page

    photo = sorted((media_dir / "india_road_thela_animal" / "images" / "val").glob("*.jpg"))[0].read_bytes()
    r = op.post(f"/cases/{n}/feedback", data={"csrf": csrf_of(op), "note": "已收容", "back": "tasks"},
                files=[("photos", ("a.txt", b"hello", "text/plain"))], follow_redirects=False)
    assert r.status_code == 415 and "只接受 JPEG 或 PNG 照片" in r.text
    small, _ = env.app("op", max_upload_bytes=50_000)
    r = small.post(f"/cases/{n}/feedback", data={"csrf": csrf_of(small), "note": "已收容"},
                   files=[("photos", ("after.jpg", photo, "image/jpeg"))], follow_redirects=False)
    assert r.status_code == 413 and "上传内容" in r.text and "超过上限 49 KB" in r.text
    assert "data-max-bytes=\"50000\"" in small.get("/tasks").text  # the browser checks before sending, too
    r = op.post(f"/cases/{n}/feedback", data={"csrf": csrf_of(op), "note": "已收容", "back": "tasks"},
                files=[("photos", ("after.jpg", photo, "image/jpeg"))], follow_redirects=False)
    assert r.status_code == 303, r.text[:500]
    page = rev.get("/tasks").text
    assert "待结案" in page and 'class="close-form"' in page and "已收容" in page
    photo_url = re.search(rf'src="(/cases/{n}/feedback/[0-9a-f]{{64}}\.jpg)"', page)
    assert photo_url and rev.get(photo_url.group(1)).content[:3] == b"\xff\xd8\xff"
    assert rev.get(f"/cases/{n}/feedback/../../manifest.json").status_code == 404
    assert rev.get(f"/cases/{n}/feedback/{'0' * 64}.jpg").status_code == 404
    assert _post(op, f"/cases/{n}/close").status_code == 403  # type: ignore[attr-defined]
    assert _post(rev, f"/cases/{n}/close", back="tasks").status_code == 303  # type: ignore[attr-defined]
    case_page = rev.get(f"/cases/{n}").text
    assert "已结案" in case_page and "交办至 犬只收容队" in case_page and "整改照片" in case_page

    en = rev.get("/tasks?lang=en").text
    assert "To dispatch" in en and "Waiting for feedback" in en and "To close" in en


def test_search_page(env: Env) -> None:
    client, _ = env.app("rev")
    page = client.get("/search").text
    assert ZH["search.hint"] in page and 'class="case-link"' not in page
    page = client.get("/search", params={"q": "沪A12345"}).text
    assert "找到 1 件" in page and env.cases["sidewalk_parking"] in page
    page = client.get("/search", params={"q": "<script>alert(1)</script>"}).text
    assert "找到 0 件" in page and 'value="&lt;script&gt;alert(1)&lt;/script&gt;"' in page
    assert "<script>alert(1)" not in page
    page = client.get("/search", params={"date": "2026-11-21", "camera": "cam-stray_dog"}).text
    assert "找到 1 件" in page and env.cases["stray_dog"] in page
    page = client.get("/search", params={"date": "21/11/2026"}).text
    assert "时间“21/11/2026”格式不对" in page
    page = client.get("/search", params={"q": "公园", "lang": "en"}).text
    assert "1 found" in page and "Case search" in page


def test_queue_filters_by_camera_and_time_with_live_url(env: Env) -> None:
    client, _ = env.app("op")
    page = client.get("/", params={"camera": "cam-stray_dog"}).text
    assert re.findall(r'class="case-link" href="[^"]*">(NS-\d{4}-\d{6})<', page) == [env.cases["stray_dog"]]
    assert 'data-live="/api/events?camera=cam-stray_dog&amp;since=' in page
    page = client.get("/", params={"from": "2026-11-21T18:30"}).text
    assert re.findall(r'class="case-link" href="[^"]*">(NS-\d{4}-\d{6})<', page) == [env.cases["sidewalk_parking"]]
    page = client.get("/", params={"from": "soon"}).text
    assert "时间“soon”格式不对" in page and len(re.findall(r'class="case-link"', page)) == 3
    assert 'id="reason-picker"' in page and "<kbd>1</kbd> 误报" in page and 'id="preview"' in page
    assert 'data-annotated="/evidence/' in page


def test_cameras_page_and_zone_editor(env: Env) -> None:
    op, _ = env.app("op")
    page = op.get("/cameras").text
    assert "共 2 路，在线 1 路" in page and "东门路口" in page and "离线" in page and "在线" in page
    assert 'src="/cameras/cam-east/snapshot.jpg"' in page and 'class="zone kind-sidewalk"' in page
    assert "connection refused &lt;rtsp&gt;" in page  # the last error, escaped
    assert "东侧人行道 (人行道)" in page and "尚无画面" in page
    assert 'class="edit-zones"' not in page  # operators look, admins edit
    snap = op.get("/cameras/cam-east/snapshot.jpg")
    assert snap.status_code == 200 and snap.content[:3] == b"\xff\xd8\xff"
    assert op.get("/cameras/cam-park/snapshot.jpg").status_code == 404
    r = op.get("/cameras/cam-east/zones")
    assert r.status_code == 403 and "需要管理员" in r.text

    adm, _ = env.app("adm")
    assert 'href="/cameras/cam-east/zones"' in adm.get("/cameras").text
    page = adm.get("/cameras/cam-east/zones").text
    assert "区域编辑：东门路口" in page and "/static/zones.js" in page and 'id="zone-svg"' in page
    data = re.search(r'<script type="application/json" id="zones-data">(.*?)</script>', page, re.S)
    assert data and '"save_url": "/api/cameras/cam-east/zones"' in data.group(1)
    assert "\\u4eba\\u884c\\u9053" in data.group(1) or "人行道" in data.group(1)
    assert adm.get("/cameras/nope/zones").status_code == 404
    en = adm.get("/cameras/cam-east/zones?lang=en").text
    assert "Zones of 东门路口" in en and "No parking" in en

    unmanaged, _ = env.app("adm", cameras=None)
    assert ZH["cameras.unmanaged"] in unmanaged.get("/cameras").text
    assert unmanaged.get("/cameras/cam-east/zones").status_code == 404


def test_every_page_in_both_languages_without_cdn(env: Env) -> None:
    client, _ = env.app("adm")
    n = env.cases["sidewalk_parking"]
    pages = ["/", "/search?q=NS", "/review", "/tasks", f"/cases/{n}", "/cameras", "/cameras/cam-east/zones"]
    for path in pages:
        for lang, marker in (("zh", '<html lang="zh-CN">'), ("en", '<html lang="en">')):
            r = client.get(path + ("&" if "?" in path else "?") + f"lang={lang}")
            assert r.status_code == 200 and marker in r.text, (path, lang)
            assert "http://" not in r.text and "https://" not in r.text, path  # everything is served here
            assert "{" + "{" not in r.text and "{%" not in r.text
            assert r.headers["content-security-policy"].startswith("default-src 'self'")
            assert r.headers["cache-control"] == "no-store"
        en = client.get(path + ("&" if "?" in path else "?") + "lang=en").text
        leftovers = [k for k in ZH if k.startswith(("nav.", "queue.title")) and ZH[k] in en]
        assert not leftovers, (path, leftovers)
