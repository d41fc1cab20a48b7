"""Real helpers for the console tests: a user directory with argon2 hashes, a camera control over a real
frame, a small case-document renderer, and cases drafted from sealed packages of the shared media.

The user directory and the renderer stand in for ``cases/users.py`` and ``cases/document.py`` (another
branch); they implement the same interfaces the console defines (``console.auth.AuthBackend``,
``console.documents.DocumentRenderer``).
"""

from __future__ import annotations

import hashlib
import html
import re
import secrets
import threading
import time
import zlib
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import cv2
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from fastapi.testclient import TestClient
from pydantic import ValidationError
from sqlalchemy.orm import Session, sessionmaker

from nonsite.bus.events import (
    BoxRecord,
    EvidenceItem,
    Location,
    ModelInfo,
    OffenderHint,
    ViolationEvent,
    new_event_id,
)
from nonsite.cases import Case, draft_case, open_db
from nonsite.cases.users import SCOPES
from nonsite.config.cameras import ZoneConfig
from nonsite.console import create_app
from nonsite.console.auth import Principal
from nonsite.console.cameras import CameraStatus
from nonsite.evidence import LocalStore, package_prefix
from nonsite.evidence.sealer import seal
from nonsite.evidence.signing import Signer
from nonsite.ops.cameras import ViewStatus

T0 = datetime(2026, 11, 21, 11, 3, 12, tzinfo=UTC)  # 19:03:12 in Shanghai
PASSWORDS = {"op": "op-pass-4821", "rev": "rev-pass-7730", "adm": "adm-pass-1956"}
ROLES = {"op": "operator", "rev": "reviewer", "adm": "admin"}
NAMES = {"op": "值班员小王", "rev": "审核员老李", "adm": "管理员"}


class MemoryUsers:
    """Users with argon2id password hashes and API tokens kept as sha256 (never the token itself)."""

    def __init__(self) -> None:
        # argon2id with light parameters: the tests log in often (production costs are the user table's).
        self._hasher = PasswordHasher(time_cost=2, memory_cost=8192, parallelism=1)
        self._users: dict[str, dict[str, Any]] = {}
        self._tokens: dict[str, tuple[str, frozenset[str]]] = {}
        self._lock = threading.Lock()
        # A fixed hash to verify against for unknown users, so they take as long as known ones.
        self._dummy = self._hasher.hash(secrets.token_hex(8))

    def add(self, username: str, password: str, role: str, display_name: str = "") -> None:
        with self._lock:
            self._users[username] = {"hash": self._hasher.hash(password), "role": role,
                                     "display_name": display_name or username, "active": True}

    def deactivate(self, username: str) -> None:
        with self._lock:
            self._users[username]["active"] = False

    def set_role(self, username: str, role: str) -> None:
        with self._lock:
            self._users[username]["role"] = role

    def issue_token(self, username: str, scopes: tuple[str, ...] | frozenset[str] = SCOPES) -> str:
        """A token acting as ``username`` with ``scopes`` (default: every scope)."""
        token = "nst_" + secrets.token_urlsafe(32)
        with self._lock:
            self._tokens[hashlib.sha256(token.encode()).hexdigest()] = (username, frozenset(scopes))
        return token

    def revoke_tokens(self, username: str) -> None:
        with self._lock:
            for digest in [d for d, (u, _) in self._tokens.items() if u == username]:
                del self._tokens[digest]

    def principal(self, username: str) -> Principal | None:
        user = self._users.get(username)
        if user is None or not user["active"]:
            return None
        return Principal(username, user["display_name"], user["role"])

    def authenticate(self, username: str, password: str) -> Principal | None:
        user = self._users.get(username)
        try:
            self._hasher.verify(user["hash"] if user else self._dummy, password)
        except (VerificationError, InvalidHashError):
            return None
        return self.principal(username) if user else None

    def verify_token(self, token: str) -> Principal | None:
        found = self._tokens.get(hashlib.sha256(token.encode()).hexdigest())
        user = self.principal(found[0]) if found else None
        return None if user is None or found is None else replace(user, via_token=True, scopes=found[1])


def standard_users() -> MemoryUsers:
    users = MemoryUsers()
    for name, password in PASSWORDS.items():
        users.add(name, password, ROLES[name], NAMES[name])
    return users


@dataclass
class FakeCamera:
    id: str
    name: str
    state: str
    fps: float
    frame: bytes | None
    zones: list[dict[str, Any]] = field(default_factory=list)
    address: str = ""
    view: ViewStatus | None = None
    reference: bytes | None = None


class MemoryCameras:
    """A CameraControl over real frames: zones are validated like the live config and kept in memory."""

    def __init__(self, cameras: list[FakeCamera]) -> None:
        self._cams = {c.id: c for c in cameras}
        self.saved: list[tuple[str, list[dict[str, Any]]]] = []
        self.refuse: str | None = None
        self.last_frame_ts = datetime.now(UTC).timestamp() - 2

    def cameras(self) -> list[CameraStatus]:
        return [CameraStatus(id=c.id, name=c.name, state=c.state, fps=c.fps,
                             last_frame_ts=self.last_frame_ts if c.frame else None, reconnects=0 if c.state == "up"
                             else 3, last_error=None if c.state == "up" else "connection refused <rtsp>",
                             zones=[dict(z) for z in c.zones], address=c.address, view=c.view)
                for c in self._cams.values()]

    def snapshot(self, camera_id: str) -> bytes | None:
        return self._cams[camera_id].frame

    def reference(self, camera_id: str) -> bytes | None:
        return self._cams[camera_id].reference

    def set_zones(self, camera_id: str, zones: list[dict[str, Any]]) -> None:
        cam = self._cams[camera_id]
        if self.refuse:
            raise ValueError(self.refuse)
        try:
            checked = [ZoneConfig.model_validate(z).model_dump(mode="json", exclude_none=True) for z in zones]
        except ValidationError as exc:
            raise ValueError(f"zone rejected: {exc.errors()[0]['msg']}") from None
        cam.zones = checked
        self.saved.append((camera_id, checked))


def jpeg_of(path: Path, width: int = 960) -> bytes:
    image = cv2.imread(str(path))
    assert image is not None, path
    h, w = image.shape[:2]
    image = cv2.resize(image, (width, int(h * width / w)))
    ok, data = cv2.imencode(".jpg", image)
    assert ok
    return data.tobytes()


def demo_cameras(media_dir: Path) -> MemoryCameras:
    frame = jpeg_of(sorted((media_dir / "india_road_thela_animal" / "images" / "val").glob("*.jpg"))[5])
    return MemoryCameras([
        FakeCamera("cam-east", "东门路口", "up", 4.9, frame, address="上海市黄浦区南京东路100号", zones=[
            {"id": "walk", "name": "东侧人行道", "kind": "sidewalk",
             "polygon": [[0.05, 0.6], [0.45, 0.6], [0.45, 0.95], [0.05, 0.95]]}]),
        FakeCamera("cam-park", "公园北门", "down", 0.0, None),
    ])


def _pdf(lines: list[str]) -> bytes:
    """A one-page PDF with ``lines`` in Helvetica (ASCII only), built by hand."""
    text = "BT /F1 14 Tf 72 760 Td " + " ".join(
        f"({line.encode('ascii', 'replace').decode().replace('(', '[').replace(')', ']')}) Tj 0 -20 Td"
        for line in lines) + " ET"
    stream = zlib.compress(text.encode())
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Resources << /Font << /F1 4 0 R >> >> "
        b"/Contents 5 0 R >>",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(stream) + stream + b"\nendstream",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for i, obj in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % i + obj + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


class SmallRenderer:
    """A case document: the facts as an HTML page and as a one-page PDF."""

    TITLES = {"zh": "非现场执法案件材料", "en": "Non-site enforcement case file"}

    def html(self, case: Case, lang: str) -> str:
        esc = html.escape
        return (f"<!doctype html><html lang=\"{'zh-CN' if lang == 'zh' else 'en'}\"><head><meta charset=\"utf-8\">"
                f"<title>{esc(case.number)}</title><style>body{{font-family:serif}}</style></head><body>"
                f"<h1>{self.TITLES[lang]}</h1><p id=\"number\">{esc(case.number)}</p>"
                f"<p id=\"camera\">{esc(case.camera_name)}</p><p id=\"status\">{esc(case.status.value)}</p>"
                f"<p id=\"manifest\">{esc(case.manifest_sha256)}</p></body></html>")

    def pdf(self, case: Case, lang: str) -> bytes:
        return _pdf([self.TITLES["en"], case.number, case.type, case.manifest_sha256])


@dataclass
class Env:
    root: Path
    db_url: str
    store: LocalStore
    public_key: bytes
    cases: dict[str, str]  # key -> case number
    events: dict[str, str]  # key -> event id
    blobs: dict[tuple[str, str], bytes] = field(repr=False)  # (event id, file name) -> bytes
    users: MemoryUsers = field(default_factory=standard_users)
    cameras: MemoryCameras | None = None
    signer: Any = None

    def make_app(self, **kw: Any) -> tuple[Any, sessionmaker[Session]]:
        sf = open_db(self.db_url)
        kw.setdefault("auth", self.users)
        kw.setdefault("cameras", self.cameras)
        kw.setdefault("documents", SmallRenderer())
        kw.setdefault("session_secret", "test-secret-" + "x" * 20)
        kw.setdefault("public_key_pem", self.public_key)
        kw.setdefault("store", self.store)
        return create_app(session_factory=sf, **kw), sf

    def app(self, user: str | None = "adm", **kw: Any) -> tuple[TestClient, sessionmaker[Session]]:
        """A browser-like client logged in as ``user`` (op | rev | adm; None: not logged in)."""
        app, sf = self.make_app(**kw)
        client = TestClient(app)
        if user is not None:
            r = login(client, user)
            assert r.status_code == 303, r.text[:300]
        return client, sf

    def api(self, user: str = "adm", **kw: Any) -> tuple[TestClient, sessionmaker[Session]]:
        """An integrator's client: ``Authorization: Bearer <API token of user>``, no cookies."""
        app, sf = self.make_app(**kw)
        client = TestClient(app, headers={"Authorization": f"Bearer {self.users.issue_token(user)}"})
        return client, sf


def csrf_of(client: TestClient, path: str = "/search") -> str:
    m = re.search(r'data-csrf="([^"]*)"', client.get(path).text)
    assert m and m.group(1), "no CSRF token on the page"
    return m.group(1)


def login(client: TestClient, user: str, password: str | None = None, *, next_url: str = "/",
          follow: bool = False) -> Any:
    page = client.get("/login")
    m = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert m, page.text[:500]
    return client.post("/login", data={"username": user, "password": password or PASSWORDS[user],
                                       "csrf": m.group(1), "next": next_url}, follow_redirects=follow)


# Oldest first: (key, type, confirmed_at, camera id, camera name, zone id, zone name, plate)
DEFAULT_SPECS: list[tuple[str, str, datetime, str, str, str, str, str | None]] = [
    ("street_vending", "street_vending", T0 - timedelta(hours=2), "cam-street_vending", "西门集市 <b>", "z-vend",
     "人行道A段", None),
    ("sidewalk_parking", "sidewalk_parking", T0, "cam-sidewalk_parking", "东门路口", "z-walk", "人行道", "沪A12345"),
    ("stray_dog", "stray_dog", T0 - timedelta(hours=1), "cam-stray_dog", "公园北门", "z-park", "公园入口", None),
]


def _package(store: LocalStore, event_id: str, images: list[Path], clip: Path) -> tuple[
        list[EvidenceItem], dict[str, bytes]]:
    prefix = package_prefix(event_id)
    files = {
        "onset.jpg": ("onset", images[0]), "confirm.jpg": ("confirm", images[1]),
        "onset_annotated.jpg": ("onset_annotated", images[2]),
        "confirm_annotated.jpg": ("confirm_annotated", images[3]),
        "closeup.jpg": ("closeup", images[4]), "clip.mp4": ("clip", clip),
    }
    items, blobs = [], {}
    for name, (role, path) in files.items():
        data = path.read_bytes()
        ct = "video/mp4" if name.endswith(".mp4") else "image/jpeg"
        store.put(prefix + name, data, ct)
        items.append(EvidenceItem(role=role, key=prefix + name, sha256=hashlib.sha256(data).hexdigest(),
                                  bytes=len(data), content_type=ct))
        blobs[name] = data
    return items, blobs


def add_case(env: Env, media_dir: Path, spec: tuple[Any, ...], n: int = 0, organisation: Any = None) -> Case:
    """Seal a package of real frames and a real clip for ``spec`` and draft its case (routed to a team of
    ``organisation`` when given)."""
    key, type_, confirmed, cam_id, cam_name, zone_id, zone_name, plate = spec
    all_images = sorted((media_dir / "india_road_thela_animal" / "images" / "val").glob("*.jpg"))
    images = [all_images[(n * 3 + i) % len(all_images)] for i in range(5)]
    eid = new_event_id()
    items, package = _package(env.store, eid, images, media_dir / "dog_alone_fence.mp4")
    violation = ViolationEvent(
        event_id=eid, type=type_, camera_id=cam_id, camera_name=cam_name, zone_id=zone_id,
        zone_name=zone_name, started_at=confirmed - timedelta(seconds=95), confirmed_at=confirmed,
        track_ids=[3, 9], boxes={"confirm": [BoxRecord(xyxy=(5, 5, 50, 50), class_name="car", confidence=0.9)]},
        confidence=0.87, dwell_s=95.0, model=ModelInfo(name="yolo11n-coco", version="8.3", sha256="ab" * 32),
        rule_config_hash="cd" * 32, evidence=items,
        location=Location(address="上海市黄浦区南京东路100号", lat=31.2397, lon=121.4998),
        offender_hint=OffenderHint(plate=plate, plate_confidence=0.93, plate_format="cn_standard") if plate else None,
    )
    sealed = seal(env.store, env.signer, violation)
    sf = open_db(env.db_url)
    try:
        case, _ = draft_case(sf, sealed, "NS", now=confirmed + timedelta(seconds=5), organisation=organisation)
    finally:
        sf.kw["bind"].dispose()
    env.cases[key], env.events[key] = case.number, eid
    env.blobs.update({(eid, name): data for name, data in package.items()})
    return case


def seed(root: Path, media_dir: Path, specs: list[Any] | None = None, organisation: Any = None) -> Env:
    """Cases drafted from sealed packages of real frames and a real clip, in a SQLite file under ``root``."""
    signer = Signer.generate()
    env = Env(root, f"sqlite:///{root / 'cases.db'}", LocalStore(root / "evidence"),
              signer.public_key_pem().encode(), {}, {}, {}, cameras=demo_cameras(media_dir), signer=signer)
    for n, spec in enumerate(specs or DEFAULT_SPECS):
        add_case(env, media_dir, spec, n, organisation)
    return env


class Served:
    """The app under uvicorn on a free loopback port, in a thread (``url``), stopped on exit."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning",
                                                    lifespan="off", timeout_graceful_shutdown=1))
        self.thread = threading.Thread(target=self.server.run, name="console-test", daemon=True)
        self.url = ""

    def __enter__(self) -> Served:
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "the console did not start"
            time.sleep(0.02)
        host, port = self.server.servers[0].sockets[0].getsockname()[:2]
        self.url = f"http://{host}:{port}"
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
