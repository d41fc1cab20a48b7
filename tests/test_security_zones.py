"""Attacks through the zone editor (issue 11, items 3 and 4), against the console's real camera control: the
zones are written into a real config file and read back by the loader, as in ``nonsite run``.

Before the fix: a zone named ``${CAM_PASSWORD}`` came back (answer, ``/cameras`` page, config file, live config)
as the password; ``${NO_SUCH_VAR}`` answered 422 naming the variable (an oracle for which variables are set);
saving zones unchanged deleted each zone's ``schedule:`` and ``rules:`` from the file and the live config.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from console_support import Env, seed
from fastapi.testclient import TestClient

from nonsite.config import CameraConfig, load_config
from nonsite.pipeline.control import EdgeCameraControl
from nonsite.pipeline.violations import load_config as load_typed_config

SECRET = "Hunter2-s3cret!"

CONFIG = """\
# zones with schedules and per-zone rules
data_dir: data
timezone: Asia/Shanghai
rules:
  street_vending:
    schedule: [{start: '07:00', end: '22:00'}]
cameras:
  - id: cam-1
    name: east gate
    source:
      url: rtsp://admin:${CAM_PASSWORD}@127.0.0.1:8554/east   # the password from the environment
    zones:
      - id: curb
        name: ${ZONE_LABEL:-curb}
        kind: sidewalk
        polygon: [[0.1, 0.5], [0.9, 0.5], [0.9, 0.9], [0.1, 0.9]]
        rules: {sidewalk_parking: {dwell_s: 120, min_confidence: 0.4}}
        schedule: [{days: [mon, tue, wed, thu, fri], start: 07:30, end: '19:00'}]
      - id: night-market
        kind: vending_allowed
        polygon: [[0.0, 0.0], [0.5, 0.0], [0.5, 0.4]]
        schedule:
          - {days: [fri, sat], start: '18:00', end: '23:00'}
      - id: stalls
        kind: no_vending
        polygon: [[0.5, 0.0], [1.0, 0.0], [1.0, 0.4]]
        dwell_s: 30
"""


class Runner:
    """What :class:`EdgeCameraControl` needs of the edge runner: the cameras, and live updates of one."""

    def __init__(self, cameras: list[CameraConfig]) -> None:
        self.cameras = list(cameras)
        self.updates: list[CameraConfig] = []

    def run_of(self, camera_id: str) -> None:
        return None

    def update_camera(self, camera: CameraConfig) -> None:
        self.cameras = [camera if c.id == camera.id else c for c in self.cameras]
        self.updates.append(camera)


@pytest.fixture()
def setup(tmp_path: Path, media_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[
        tuple[Env, Path, Runner, EdgeCameraControl]]:
    monkeypatch.setenv("CAM_PASSWORD", SECRET)
    monkeypatch.delenv("NO_SUCH_VAR", raising=False)
    path = tmp_path / "nonsite.yaml"
    path.write_text(CONFIG, encoding="utf-8")
    runner = Runner(load_typed_config(path).cameras)  # as the edge runner loads it
    control = EdgeCameraControl(runner, path)  # type: ignore[arg-type]
    env = seed(tmp_path / "console", media_dir, specs=[])
    yield env, path, runner, control


def _api(env: Env, control: EdgeCameraControl) -> TestClient:
    client, _ = env.api("adm", cameras=control)
    return client


def _zones(client: TestClient) -> list[dict[str, Any]]:
    items = client.get("/api/cameras").json()["items"]
    return [z for c in items if c["id"] == "cam-1" for z in c["zones"]]


def test_a_zone_name_cannot_read_the_servers_environment(setup: tuple[Env, Path, Runner, EdgeCameraControl]
                                                         ) -> None:
    env, path, runner, control = setup
    api = _api(env, control)
    zone = {"id": "probe", "name": "${CAM_PASSWORD}", "kind": "no_parking",
            "polygon": [[0.1, 0.1], [0.3, 0.1], [0.3, 0.3]]}
    r = api.put("/api/cameras/cam-1/zones", json={"zones": [zone]})
    assert r.status_code == 200, r.text
    assert SECRET not in r.text
    assert [z["name"] for z in r.json()["zones"]] == ["${CAM_PASSWORD}"]
    assert [z.name for z in runner.cameras[0].zones] == ["${CAM_PASSWORD}"]  # live: the text as typed
    assert SECRET not in path.read_text(encoding="utf-8")
    assert [z.name for z in load_config(path).cameras[0].zones] == ["${CAM_PASSWORD}"]  # and after a restart
    page, _ = env.app("adm", cameras=control)
    html = page.get("/cameras").text
    assert "${CAM_PASSWORD}" in html and SECRET not in html
    assert SECRET not in api.get("/api/cameras").text
    assert SECRET not in page.get("/cameras/cam-1/zones").text
    # The camera's own ${CAM_PASSWORD} (the operator's file) is still expanded.
    assert load_config(path).cameras[0].source.url == f"rtsp://admin:{SECRET}@127.0.0.1:8554/east"


def test_an_unset_variable_in_a_zone_name_is_no_oracle(setup: tuple[Env, Path, Runner, EdgeCameraControl]) -> None:
    env, path, runner, control = setup
    api = _api(env, control)
    names = ["${NO_SUCH_VAR}", "${CAM_PASSWORD:-x}", "$${CAM_PASSWORD}", "a $ b ${ c }"]
    zones = [{"id": f"z{i}", "name": n, "kind": "no_parking", "polygon": [[0.1, 0.1], [0.3, 0.1], [0.3, 0.3]]}
             for i, n in enumerate(names)]
    r = api.put("/api/cameras/cam-1/zones", json={"zones": zones})
    assert r.status_code == 200, r.text
    assert "NO_SUCH_VAR is not set" not in r.text and SECRET not in r.text
    assert [z["name"] for z in r.json()["zones"]] == names
    assert [z.name for z in load_config(path).cameras[0].zones] == names
    # Saving them again as the API gave them changes nothing.
    before = path.read_bytes()
    assert api.put("/api/cameras/cam-1/zones", json={"zones": _zones(api)}).status_code == 200
    assert path.read_bytes() == before


def test_resaving_unchanged_zones_changes_nothing(setup: tuple[Env, Path, Runner, EdgeCameraControl]) -> None:
    env, path, runner, control = setup
    api = _api(env, control)
    before_bytes = path.read_bytes()
    before_live = [z.model_dump() for z in runner.cameras[0].zones]
    assert before_live[0]["schedule"] and before_live[0]["rules"]["sidewalk_parking"]["dwell_s"] == 120
    r = api.put("/api/cameras/cam-1/zones", json={"zones": _zones(api)})
    assert r.status_code == 200, r.text
    assert path.read_bytes() == before_bytes  # byte-identical: comments, quoting, ${ZONE_LABEL:-curb} kept
    assert [z.model_dump() for z in runner.cameras[0].zones] == before_live
    assert [z.model_dump() for z in load_typed_config(path).cameras[0].zones] == before_live


def test_editing_one_zone_keeps_the_schedules_and_rules_of_all(setup: tuple[Env, Path, Runner, EdgeCameraControl]
                                                              ) -> None:
    env, path, runner, control = setup
    api = _api(env, control)
    zones = _zones(api)
    zones[2]["polygon"] = [[0.6, 0.0], [1.0, 0.0], [1.0, 0.4]]
    zones[1]["name"] = "夜市"
    assert api.put("/api/cameras/cam-1/zones", json={"zones": zones}).status_code == 200
    live = {z.id: z for z in runner.cameras[0].zones}
    assert live["curb"].rules is not None and live["curb"].rules.sidewalk_parking.min_confidence == 0.4  # type: ignore[union-attr]
    assert [(w.start, w.end) for w in live["curb"].schedule] == [("07:30", "19:00")]
    assert [w.days for w in live["night-market"].schedule] == [["fri", "sat"]]
    assert live["night-market"].name == "夜市" and live["stalls"].polygon[0] == (0.6, 0.0)
    text = path.read_text(encoding="utf-8")
    assert "rules: {sidewalk_parking: {dwell_s: 120, min_confidence: 0.4}}" in text
    assert "{days: [fri, sat], start: '18:00', end: '23:00'}" in text


def test_schedules_and_rules_from_the_api_are_checked(setup: tuple[Env, Path, Runner, EdgeCameraControl]) -> None:
    env, path, runner, control = setup
    api = _api(env, control)
    before = path.read_bytes()
    base = {"id": "x", "kind": "no_vending", "polygon": [[0.1, 0.1], [0.3, 0.1], [0.3, 0.3]]}
    for extra, code in [({"schedule": [{"start": "25:00", "end": "26:00"}]}, "bad_schedule"),
                        ({"schedule": "always"}, "bad_schedule"),
                        ({"rules": {"stray_dog": {"dwell_s": 5}}}, "bad_rules"),
                        ({"rules": {"street_vending": {"dwell_s": -1}}}, "bad_rules")]:
        r = api.put("/api/cameras/cam-1/zones", json={"zones": [{**base, **extra}]})
        assert r.status_code == 422, r.text
        error = r.json()["error"]
        # The console checks what it knows (schedules, type names); each type's own fields are checked by the
        # cameras' typed configuration, which refuses the zones before the file is written.
        assert [p["code"] for p in error.get("problems", [])] == [code] or error["code"] == "rejected_by_camera", \
            (extra, error)
    assert path.read_bytes() == before
    ok = {**base, "schedule": [{"days": ["sat"], "start": "08:00", "end": "12:00"}],
          "rules": {"street_vending": {"dwell_s": 90}}}
    r = api.put("/api/cameras/cam-1/zones", json={"zones": [ok]})
    assert r.status_code == 200, r.text
    (zone,) = load_typed_config(path).cameras[0].zones
    assert zone.rules is not None and zone.rules.street_vending.dwell_s == 90  # type: ignore[union-attr]
    assert [(w.days, w.start) for w in zone.schedule] == [(["sat"], "08:00")]


def test_the_editor_page_hands_schedules_and_rules_to_the_editor(
        setup: tuple[Env, Path, Runner, EdgeCameraControl]) -> None:
    env, path, runner, control = setup
    page, _ = env.app("adm", cameras=control)
    html = page.get("/cameras/cam-1/zones").text
    start = html.index('id="zones-data">') + len('id="zones-data">')
    data = json.loads(html[start:html.index("</script>", start)])
    curb = next(z for z in data["zones"] if z["id"] == "curb")
    assert curb["schedule"][0]["start"] == "07:30" and curb["rules"]["sidewalk_parking"]["dwell_s"] == 120
    assert 'class="zone-extra' in html


def test_the_editor_in_a_browser_shows_and_keeps_schedules_and_rules(
        setup: tuple[Env, Path, Runner, EdgeCameraControl]) -> None:
    """The zone editor (console/static/zones.js) in Debian's chromium: it shows each zone's schedule and rule
    settings, saving unchanged zones leaves the file byte-identical, renaming one zone keeps every schedule."""
    import os

    from console_support import PASSWORDS, Served
    from playwright import sync_api

    chromium = os.environ.get("NONSITE_CHROMIUM", "/usr/bin/chromium")
    if not Path(chromium).exists():
        pytest.fail(f"{chromium} not found: install Debian's chromium (make system-deps) or set NONSITE_CHROMIUM")
    env, path, runner, control = setup
    before = path.read_bytes()
    app, _ = env.make_app(cameras=control)
    with Served(app) as served, sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, headless=True,
                                     args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        try:
            page = browser.new_context(locale="zh-CN").new_page()
            page.set_default_timeout(15_000)
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(served.url + "/cameras")
            page.wait_for_url(re.compile(r"/login\?next="))
            page.fill("#username", "adm")
            page.fill("#password", PASSWORDS["adm"])
            page.click("#login-submit")
            page.wait_for_url(re.compile(r"/cameras$"))
            page.goto(served.url + "/cameras/cam-1/zones")
            page.wait_for_selector("body[data-editor-ready='1']")
            extras = page.locator(".zone-extra").all_inner_texts()
            assert "07:30-19:00" in extras[0] and "dwell_s=120" in extras[0], extras
            assert "fri,sat 18:00-23:00" in extras[1], extras
            page.click("#zone-save")
            page.wait_for_selector("#zone-result.ok")
            assert path.read_bytes() == before
            page.locator(".zone-item").nth(1).locator(".zone-name").fill("夜市")
            page.evaluate("document.querySelector('#zone-result').className = ''")
            page.click("#zone-save")
            page.wait_for_selector("#zone-result.ok")
            assert not errors, errors
        finally:
            browser.close()
    live = {z.id: z for z in runner.cameras[0].zones}
    assert live["night-market"].name == "夜市" and [w.days for w in live["night-market"].schedule] == [["fri", "sat"]]
    assert live["curb"].rules is not None and live["curb"].rules.sidewalk_parking.dwell_s == 120  # type: ignore[union-attr]
    assert "{days: [fri, sat], start: '18:00', end: '23:00'}" in path.read_text(encoding="utf-8")
