"""Cameras in the distributed mode with the real roles as processes (issue 15): two ``nonsite pool`` workers share
two cameras, ``nonsite console`` runs on its own; each has its own copy of the config file. The console's cameras
page shows both cameras up with the worker that runs them; a zone edit saved there reaches the worker that owns the
camera, which applies it live (no restart of the camera), and lands in every worker's config file, so a camera that
moves later, or a worker that restarts, keeps the new zones."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from services.fixtures import nonsite_process, stop_process, wait_for
from services.servers import Tansu, free_port

from nonsite.config import load_config
from nonsite.pipeline.pool import read_journal

MEDIA = Path(os.environ.get("NONSITE_MEDIA_DIR") or Path(__file__).resolve().parents[2] / "shared" / "media")
CLIP = MEDIA / "dog_alone_fence.mp4"
CAMERAS = ["cam-a", "cam-b"]


def _config(path: Path, broker: Tansu) -> Path:
    path.write_text(yaml.safe_dump({
        "detector": {"imgsz": 320},
        "bus": {"kind": "kafka", "kafka": {"bootstrap_servers": broker.bootstrap, "partitions": 2,
                                           "session_timeout_ms": 6000, "publish_timeout_s": 3}},
        "pool": {"partitions": 4, "stop_timeout_s": 10},
        "camera_status": {"interval_s": 1, "snapshot_interval_s": 2},
        "cameras": [{"id": c, "name": f"camera {c}", "fps": 2, "source": {"url": str(CLIP), "loop": True,
                                                                         "realtime": True},
                     "zones": [{"id": "all", "kind": "no_stray_dogs", "polygon": [[0, 0], [1, 0], [1, 1], [0, 1]]}]}
                    for c in CAMERAS],
    }, allow_unicode=True), encoding="utf-8")
    return path


def _login(base: str, password: str) -> httpx.Client:
    client = httpx.Client(base_url=base, timeout=20)
    page = client.get("/login")
    m = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert m, page.text[:500]
    r = client.post("/login", data={"username": "admin", "password": password, "csrf": m.group(1), "next": "/"})
    assert r.status_code == 303, r.text[:500]
    return client


def _listening(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/login", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def _items(client: httpx.Client) -> dict[str, dict[str, Any]]:
    r = client.get("/api/cameras")
    return {c["id"]: c for c in r.json()["items"]} if r.status_code == 200 else {}


@pytest.mark.timeout(480)
def test_pool_workers_and_a_standalone_console_as_processes(tmp_path: Path, models_dir: Path) -> None:
    assert CLIP.is_file(), f"test media missing: {CLIP} (set NONSITE_MEDIA_DIR)"
    with Tansu() as broker:
        console_conf = _config(tmp_path / "console.yaml", broker)
        confs = {w: shutil.copy(console_conf, tmp_path / f"{w}.yaml") for w in ("w1", "w2")}
        logs = {n: tmp_path / f"{n}.log" for n in ("w1", "w2", "console")}
        procs = {w: nonsite_process(["pool", "--config", str(confs[w])],
                                    {"NONSITE_DATA_DIR": str(tmp_path / w), "NONSITE_POOL_WORKER_ID": w}, logs[w])
                 for w in ("w1", "w2")}
        port = free_port()
        procs["console"] = nonsite_process(["console", "--config", str(console_conf), "--port", str(port)],
                                           {"NONSITE_DATA_DIR": str(tmp_path / "console")}, logs["console"])

        def tails() -> str:
            return "\n".join(f"--- {n}\n{p.read_text(errors='replace')[-3000:]}" for n, p in logs.items())

        def items() -> dict[str, dict[str, Any]]:
            exited = {n: p.returncode for n, p in procs.items() if p.poll() is not None}
            assert not exited, (exited, tails())
            return _items(client)

        try:
            password_file = tmp_path / "console" / "keys" / "initial-admin-password"
            wait_for(password_file.is_file, 120, "the console's first start", logs=tails)
            wait_for(lambda: _listening(port), 60, "the console listening", logs=tails)
            client = _login(f"http://127.0.0.1:{port}", password_file.read_text().split()[-1])  # "admin\n<password>"
            wait_for(lambda: (i := items()) and all(i[c]["state"] == "up" and i[c]["worker"] in ("w1", "w2")
                                                           for c in CAMERAS),
                     240, "both cameras up on the console, each with its worker", every_s=1.0, logs=tails)
            page = client.get("/cameras").text
            assert page.count('data-state="up"') == 2 and "camera cam-a" in page and "camera cam-b" in page
            owner = _items(client)["cam-a"]["worker"]
            other = "w2" if owner == "w1" else "w1"
            wait_for(lambda: client.get("/cameras/cam-a/snapshot.jpg").status_code == 200, 60, "a snapshot of cam-a",
                     logs=tails)
            assert client.get("/cameras/cam-a/snapshot.jpg").content[:2] == b"\xff\xd8"

            csrf = re.search(r'data-csrf="([^"]+)"', page)
            assert csrf
            zones = [{"id": "gate", "name": "北门", "kind": "no_stray_dogs", "polygon": [[0.2, 0.2], [0.8, 0.2],
                                                                                        [0.8, 0.8]]}]
            r = client.put("/api/cameras/cam-a/zones", json={"zones": zones},
                           headers={"X-CSRF-Token": csrf.group(1)})
            assert r.status_code == 200, r.text
            assert [z.id for z in load_config(console_conf).cameras[0].zones] == ["gate"]
            # the owner reports the new zones applied; every worker's own file has them
            wait_for(lambda: (c := items().get("cam-a")) and [z["id"] for z in c["zones"]] == ["gate"]
                     and not c["zones_pending"] and c["state"] == "up", 60, "the owner applying the zones",
                     logs=tails)
            for w in ("w1", "w2"):
                wait_for(lambda w=w: [z.id for z in load_config(confs[w]).cameras[0].zones] == ["gate"], 60,
                         f"the zones in {w}'s config file", logs=tails)
            assert [z.id for z in load_config(confs[other]).cameras[1].zones] == ["all"]  # cam-b untouched
            assert re.search(r"camera cam-a: zones revision \d+ from console@\S+ \(1 zones\): applied live",
                             logs[owner].read_text())
            assert re.search(r"camera cam-a: zones revision \d+ from console@\S+ \(1 zones\): kept for when it runs "
                             "here", logs[other].read_text())
        finally:
            codes = {n: stop_process(p) for n, p in procs.items()}
        assert codes == {"w1": 0, "w2": 0, "console": 0}, (codes, tails())

    # live: the owner started cam-a once and stopped it only at shutdown (no restart for the zone edit)
    journal = [e for e in read_journal(tmp_path / owner / "pool" / "journal.jsonl") if e["camera"] == "cam-a"]
    assert [(e["action"], e.get("reason")) for e in journal] == [("start", "assigned"), ("stop", "shutdown")], journal
