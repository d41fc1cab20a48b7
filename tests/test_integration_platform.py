"""The city platform hand-off: report mapping, signing, the outbox and its deliveries against a real HTTP server."""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import pytest
from http_receiver import Reply, Seen, free_port, receiving
from prometheus_client import REGISTRY

from nonsite.config.integration import PlatformConfig
from nonsite.integration.connector import ConnectorWorker, PlatformConnector
from nonsite.integration.geo import gcj02_to_wgs84, wgs84_to_gcj02
from nonsite.integration.http import mask_url
from nonsite.integration.outbox import DeliveryState, HandoffStore
from nonsite.integration.platform import (
    CaseReport,
    EvidenceRef,
    ReportError,
    check_template,
    load_template,
    render_report,
    report_from_case,
)
from nonsite.integration.signing import LinkSigner, SignatureError, sign, verify_link, verify_signature

SECRET = b"platform-shared-secret"
T0 = 1_767_000_000.0  # 2025-12-29 09:20 UTC


class Clock:
    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def report(number: str = "NS-2026-000123", **kw: object) -> CaseReport:
    base: dict[str, object] = dict(
        number=number, type="sidewalk_parking", type_name="人行道违停", status="approved", camera_id="cam-carpark-01",
        camera_name="演示停车场", zone_id="bays", zone_name="禁停区", address="演示路1号", lat=31.2298, lon=121.4730,
        started_at=datetime(2026, 1, 5, 1, 58, 30, tzinfo=UTC), confirmed_at=datetime(2026, 1, 5, 2, 0, tzinfo=UTC),
        dwell_s=90, plate="沪A12345",
        evidence=[EvidenceRef(role="confirm_annotated", key="e1/confirm_annotated.jpg", content_type="image/jpeg"),
                  EvidenceRef(role="onset", key="e1/onset.jpg", content_type="image/jpeg"),
                  EvidenceRef(role="clip", key="e1/clip.mp4", content_type="video/mp4"),
                  EvidenceRef(role="manifest", key="e1/manifest.json")],
    )
    base.update(kw)
    return CaseReport.model_validate(base)


def links(key: str, seconds: int) -> str:
    return f"https://evidence.example/{key}?expires={seconds}"


def cfg(url: str, **kw: object) -> PlatformConfig:
    # 10 s: a local answer can take seconds on a loaded machine (test_a_timeout_is_retried sets its own)
    base: dict[str, object] = dict(enabled=True, url=url, timeout_s=10, max_attempts=4, backoff_base_s=10,
                                   backoff_max_s=600)
    base.update(kw)
    return PlatformConfig.model_validate(base)


def connector(store: HandoffStore, url: str, clock: Clock, **kw: object) -> PlatformConnector:
    return PlatformConnector(cfg(url, **kw), store, secret=SECRET, links=links, clock=clock, rng=random.Random(7))


@pytest.fixture
def store(case_db_url: str) -> Iterator[HandoffStore]:
    """The hand-off database: a SQLite file, or a fresh schema of the session's PostgreSQL database."""
    s = HandoffStore(case_db_url)
    yield s
    s.close()


def verified(req: Seen, now: float = T0) -> bool:
    """What the platform does first: check our HMAC over timestamp + body (at the platform's clock ``now``)."""
    try:
        verify_signature(SECRET, req.headers.get("x-nonsite-timestamp"), req.headers.get("x-nonsite-signature"),
                         req.body, now=now, max_skew_s=300)
    except SignatureError:
        return False
    return True


# -- the mapping ------------------------------------------------------------------------------------------


def test_chengyun_report_carries_code_place_local_time_and_expiring_image_links() -> None:
    body = render_report(load_template("chengyun"), report(), 7, cfg("http://x"), links=links,
                         timezone="Asia/Shanghai", now=datetime(2026, 1, 5, 2, 5, tzinfo=UTC))
    data = json.loads(body)
    assert data["externalCaseNo"] == "NS-2026-000123" and data["idempotencyKey"] == "NS-2026-000123:7"
    assert data["eventTypeCode"] == "0505" and data["eventTypeName"] == "人行道违停"
    assert data["occurTime"] == "2026-01-05 09:58:30" and data["findTime"] == "2026-01-05 10:00:00"
    assert data["reportTime"] == "2026-01-05 10:05:00" and data["timeZone"] == "Asia/Shanghai"
    assert data["coordinateSystem"] == "GCJ02"
    # the GCJ-02 point is the eviltransform value of the camera's WGS84 point, a few hundred metres away
    assert data["latitude"] == pytest.approx(31.227859329074036, abs=1e-9)
    assert data["longitude"] == pytest.approx(121.47752535924621, abs=1e-9)
    assert data["wgs84"] == {"latitude": 31.2298, "longitude": 121.473}
    assert [i["type"] for i in data["images"]] == ["confirm_annotated", "onset"]  # no manifest, no clip
    assert data["images"][0]["url"] == f"https://evidence.example/e1/confirm_annotated.jpg?expires={3 * 86400}"
    assert data["images"][0]["expireTime"] == "2026-01-08 10:05:00"
    assert data["videoUrl"].startswith("https://evidence.example/e1/clip.mp4")
    assert "演示路1号" in data["description"] and "沪A12345" in data["description"]
    assert body == json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()  # compact, what is signed


def test_case_values_are_data_never_expanded() -> None:
    nasty = 'x", "eventTypeCode": "9999", "y": "{{ 7*7 }}{% raw %}'
    body = render_report(load_template("chengyun"), report(address=nasty, camera_name="{{ config }}"), 1,
                         cfg("http://x", coordinates="wgs84"), links=None)
    data = json.loads(body)
    assert data["address"] == nasty and data["cameraName"] == "{{ config }}"
    assert data["eventTypeCode"] == "0505" and data["images"] == [] and data["videoUrl"] is None
    assert data["coordinateSystem"] == "WGS84" and data["latitude"] == 31.2298


def test_a_template_that_reaches_outside_the_sandbox_is_refused(tmp_path: Path) -> None:
    evil = tmp_path / "evil.json.j2"
    evil.write_text('{"x": {{ case.__class__.__mro__ | json }}, "y": {{ "".__class__.__subclasses__() | json }}}')
    with pytest.raises(ReportError, match="platform template failed"):
        render_report(load_template(str(evil)), report(), 1, cfg("http://x"))
    bad = tmp_path / "bad.json.j2"
    bad.write_text('{"x": {{ case.number }}}')  # not quoted: not JSON
    with pytest.raises(ReportError, match="did not produce JSON"):
        render_report(load_template(str(bad)), report(), 1, cfg("http://x"))
    with pytest.raises(ReportError, match="neither a built-in"):
        load_template(str(tmp_path / "missing.j2"))


def test_check_template_names_types_without_a_code(tmp_path: Path) -> None:
    check_template(cfg("http://x"), ["sidewalk_parking", "street_vending", "stray_dog"])
    with pytest.raises(ReportError, match="no code for piled_goods"):
        check_template(cfg("http://x"), ["sidewalk_parking", "piled_goods"])
    typo = tmp_path / "typo.json.j2"
    typo.write_text('{"code": {{ event_kode | json }}}')
    with pytest.raises(ReportError, match="event_kode"):
        check_template(cfg("http://x", template=str(typo)))


def test_report_from_a_case_row_takes_the_catalogue_name() -> None:
    row = SimpleNamespace(
        number="NS-2026-000009", type="street_vending", status=SimpleNamespace(value="approved"), camera_id="c1",
        camera_name="", zone_id="z", zone_name="", address="", lat=None, lon=None,
        started_at=datetime(2026, 1, 1, tzinfo=UTC), confirmed_at=datetime(2026, 1, 1, tzinfo=UTC), dwell_s=30.0,
        offender_plate=None, dispatched_to="", evidence=[{"role": "closeup", "key": "k", "sha256": "0" * 64}],
        legal_basis={"name": {"zh": "占道经营", "en": "Street vending"}})
    r = report_from_case(row)
    assert (r.type_name, r.status, r.evidence[0].key) == ("占道经营", "approved", "k")
    data = json.loads(render_report(load_template("chengyun"), r, 1, cfg("http://x"), links=links))
    assert data["latitude"] is None and data["eventTypeCode"] == "0501" and data["images"][0]["type"] == "closeup"


def test_gcj02_matches_the_reference_formula_and_inverts() -> None:
    # reference values computed with eviltransform 0.1.1 (wgs2gcj)
    cases = {(31.2298, 121.4730): (31.227859329074036, 121.47752535924621),
             (39.915, 116.404): (39.91640430528012, 116.41024460490651),
             (22.5431, 114.0579): (22.54038276821278, 114.06301408516)}
    for wgs, gcj in cases.items():
        got = wgs84_to_gcj02(*wgs)
        assert got == pytest.approx(gcj, abs=1e-9)
        assert gcj02_to_wgs84(*got) == pytest.approx(wgs, abs=1e-8)
    assert wgs84_to_gcj02(48.8584, 2.2945) == (48.8584, 2.2945)  # outside China: unchanged


# -- signing and links --------------------------------------------------------------------------------------


def test_signature_verifies_and_refuses_tampering_and_replays() -> None:
    body = b'{"a":1}'
    sig = sign(SECRET, int(T0), body)
    verify_signature(SECRET, str(int(T0)), sig, body, now=T0 + 10)
    for args, why in [((str(int(T0)), sig, b'{"a":2}'), "does not match"),
                      ((str(int(T0)), sig.replace("sha256=", "sha256=0"), body), "does not match"),
                      ((str(int(T0) - 1000), sign(SECRET, int(T0) - 1000, body), body), "away from our clock"),
                      ((None, sig, body), "not signed")]:
        with pytest.raises(SignatureError, match=why):
            verify_signature(SECRET, *args, now=T0, max_skew_s=300)


def test_local_evidence_links_expire_and_are_bound_to_their_key() -> None:
    signer = LinkSigner(base_url="https://console.example/", secret=b"link-secret", clock=lambda: T0)
    url = signer("e1/confirm.jpg", 600)
    assert url is not None and url.startswith("https://console.example/platform/evidence/e1/confirm.jpg?exp=")
    q = dict(p.split("=") for p in url.split("?")[1].split("&"))
    assert verify_link(b"link-secret", "e1/confirm.jpg", q["exp"], q["sig"], now=T0 + 599)
    assert not verify_link(b"link-secret", "e1/confirm.jpg", q["exp"], q["sig"], now=T0 + 601)
    assert not verify_link(b"link-secret", "e1/onset.jpg", q["exp"], q["sig"], now=T0)
    assert not verify_link(b"other", "e1/confirm.jpg", q["exp"], q["sig"], now=T0)
    presigned = LinkSigner(presign=lambda key, s: f"https://s3.example/{key}?X-Amz-Expires={s}")
    assert presigned("k", 60) == "https://s3.example/k?X-Amz-Expires=60"
    assert LinkSigner()("k", 60) is None


# -- deliveries against a real server ----------------------------------------------------------------------


def test_report_is_posted_signed_with_its_idempotency_key(store: HandoffStore) -> None:
    with receiving(lambda req, i: Reply(200 if verified(req) else 401)) as srv:
        conn = connector(store, srv.url + "/api/cases", Clock())
        assert conn.enqueue(report(), 3) and not conn.enqueue(report(), 3)  # the same revision queues once
        assert conn.enqueue(report(), 4)
        outcomes = conn.deliver_due()
    assert [o.result for o in outcomes] == ["delivered", "delivered"]
    assert [r.headers["idempotency-key"] for r in srv.seen] == ["NS-2026-000123:3", "NS-2026-000123:4"]
    assert srv.seen[0].path == "/api/cases" and srv.seen[0].headers["content-type"].startswith("application/json")
    assert json.loads(srv.seen[0].body)["revision"] == 3
    assert conn.counts() == {"pending": 0, "delivered": 2, "dead": 0}


def test_a_wrong_secret_is_refused_by_the_platform_and_retried(store: HandoffStore) -> None:
    with receiving(lambda req, i: Reply(200 if verified(req) else 401, b'{"msg":"bad signature"}')) as srv:
        conn = PlatformConnector(cfg(srv.url), store, secret=b"wrong", clock=Clock())
        conn.enqueue(report(), 1)
        (o,) = conn.deliver_due()
    assert o.result == "retry" and o.status == 401 and "bad signature" in o.error


def test_server_error_then_success_retries_with_backoff_under_the_same_key(store: HandoffStore) -> None:
    clock = Clock()
    with receiving(lambda req, i: Reply(500, b"upstream down") if i == 0 else Reply(200)) as srv:
        conn = connector(store, srv.url, clock)
        conn.enqueue(report(), 1)
        (first,) = conn.deliver_due()
        assert first.result == "retry" and first.status == 500 and "upstream down" in first.error
        assert first.next_attempt_at is not None and T0 + 5 <= first.next_attempt_at <= T0 + 10  # base 10, jitter
        assert conn.deliver_due() == []  # not due yet: nothing is sent
        clock.t = first.next_attempt_at
        (second,) = conn.deliver_due()
    assert second.result == "delivered"
    assert len(srv.seen) == 2 and srv.seen[0].headers["idempotency-key"] == srv.seen[1].headers["idempotency-key"]
    (d,) = store.deliveries("city")
    assert d.state is DeliveryState.DELIVERED and d.attempts == 2


def test_a_timeout_is_retried(store: HandoffStore) -> None:
    clock = Clock()
    with receiving(lambda req, i: Reply(200, sleep_s=6.0) if i == 0 else Reply(200)) as srv:
        conn = connector(store, srv.url, clock, timeout_s=2)
        conn.enqueue(report(), 1)
        (first,) = conn.deliver_due()
        assert first.result == "retry" and first.status is None and "within 2 s" in first.error
        clock.t += 3600
        (second,) = conn.deliver_due()
    assert second.result == "delivered"


def test_409_after_a_lost_answer_counts_as_delivered(store: HandoffStore) -> None:
    taken: set[str] = set()

    def respond(req: Seen, i: int) -> Reply:  # the platform files the first request, but its answer is late
        key = req.headers["idempotency-key"]
        if key in taken:
            return Reply(409, b'{"msg":"duplicate idempotency key"}')
        taken.add(key)
        return Reply(200, sleep_s=6.0)

    clock = Clock()
    with receiving(respond) as srv:
        conn = connector(store, srv.url, clock, timeout_s=2)
        conn.enqueue(report(), 1)
        assert [o.result for o in conn.deliver_due()] == ["retry"]
        clock.t += 3600
        (again,) = conn.deliver_due()
    assert again.result == "duplicate" and again.status == 409
    (d,) = store.deliveries("city")
    assert d.state is DeliveryState.DELIVERED and d.duplicate and conn.counts()["delivered"] == 1


def test_poison_goes_to_the_dead_letters_at_once_and_can_be_requeued(store: HandoffStore) -> None:
    fixed = {"yes": False}

    def respond(req: Seen, i: int) -> Reply:
        if not fixed["yes"]:
            return Reply(400, '{"code":"E_FIELD","msg":"eventTypeCode 0505 不存在"}'.encode())
        return Reply(200)

    clock = Clock()
    with receiving(respond) as srv:
        conn = connector(store, srv.url, clock)
        conn.enqueue(report(), 1)
        (o,) = conn.deliver_due()
        assert o.result == "dead" and o.status == 400
        clock.t += 86400
        assert conn.deliver_due() == []  # no endless retry
        assert len(srv.seen) == 1
        (dead,) = conn.dead_letters()
        assert dead.case_number == "NS-2026-000123" and dead.attempts == 1
        assert REGISTRY.get_sample_value("nonsite_platform_reports", {"platform": "city", "state": "dead"}) == 1
        assert "eventTypeCode 0505 不存在" in dead.last_error and dead.last_status == 400
        fixed["yes"] = True  # the platform's code table is corrected; an admin requeues it
        assert conn.requeue([dead.id]) == 1 and conn.dead_letters() == []
        assert [o.result for o in conn.deliver_due()] == ["delivered"]
    assert REGISTRY.get_sample_value("nonsite_platform_reports", {"platform": "city", "state": "dead"}) == 0
    assert REGISTRY.get_sample_value("nonsite_platform_reports", {"platform": "city", "state": "delivered"}) == 1


def test_a_type_without_an_event_code_is_dead_without_a_request(store: HandoffStore) -> None:
    with receiving(lambda req, i: Reply(200)) as srv:
        conn = connector(store, srv.url, Clock())
        conn.enqueue(report(type="piled_goods"), 1)
        (o,) = conn.deliver_due()
    assert o.result == "dead" and "piled_goods" in o.error and "event_codes" in o.error
    assert srv.seen == []


def test_max_attempts_then_dead_with_growing_waits_and_retry_after(store: HandoffStore) -> None:
    clock = Clock()
    answers = [Reply(503), Reply(503), Reply(429, headers={"Retry-After": "500"}), Reply(503)]
    with receiving(lambda req, i: answers[i]) as srv:
        conn = connector(store, srv.url, clock)  # max_attempts 4, base 10 s
        conn.enqueue(report(), 1)
        waits = []
        for _ in range(4):
            (o,) = conn.deliver_due()
            if o.next_attempt_at is not None:
                waits.append(o.next_attempt_at - clock.t)
                clock.t = o.next_attempt_at
        clock.t += 10**6
        assert conn.deliver_due() == []
    assert o.result == "dead" and "gave up after 4 attempts" in o.error and len(srv.seen) == 4
    assert 5 <= waits[0] <= 10 and 10 <= waits[1] <= 20 and waits[2] >= 500  # doubling; Retry-After honoured


def test_outbox_survives_a_restart_and_replays(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'data' / 'integration.db'}"
    port = free_port()
    clock = Clock()
    first = HandoffStore(url)
    conn = connector(first, f"http://127.0.0.1:{port}/cases", clock)
    conn.enqueue(report("NS-2026-000001"), 1)
    conn.enqueue(report("NS-2026-000002"), 1)
    assert {o.result for o in conn.deliver_due()} == {"retry"}  # nothing listens: connection refused
    first.close()

    clock.t += 3600
    with receiving(lambda req, i: Reply(200 if verified(req, clock.t) else 401), port=port) as srv:
        again = HandoffStore(url)  # a new process on the same data directory
        conn = connector(again, f"http://127.0.0.1:{port}/cases", clock)
        assert conn.counts()["pending"] == 2
        assert [o.result for o in conn.deliver_due()] == ["delivered", "delivered"]
        assert conn.deliver_due() == []
        again.close()
    assert sorted(json.loads(r.body)["externalCaseNo"] for r in srv.seen) == ["NS-2026-000001", "NS-2026-000002"]


def test_two_connectors_on_one_outbox_send_each_report_once(store: HandoffStore) -> None:
    with receiving(lambda req, i: Reply(200)) as srv:
        a, b = connector(store, srv.url, Clock()), connector(store, srv.url, Clock())
        for n in range(6):
            a.enqueue(report(f"NS-2026-{n:06d}"), 1)
        done = a.deliver_due(limit=3) + b.deliver_due(limit=10) + a.deliver_due()
    assert len(done) == 6 and len(srv.seen) == 6
    assert len({r.headers["idempotency-key"] for r in srv.seen}) == 6


def test_worker_thread_delivers_and_stops(store: HandoffStore) -> None:
    with receiving(lambda req, i: Reply(200)) as srv:
        conn = PlatformConnector(cfg(srv.url), store, secret=SECRET)
        worker = ConnectorWorker(conn, interval_s=0.05).start()
        conn.enqueue(report(), 1)
        assert srv.wait_for(1)
        worker.stop()
        assert worker._thread is None
    assert store.deliveries("city")[0].state is DeliveryState.DELIVERED


def test_logs_never_show_the_secret_or_the_url_token(store: HandoffStore, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with receiving(lambda req, i: Reply(500)) as srv:
        conn = connector(store, f"{srv.url}/in?token=tk-SECRET-123&app=nonsite", Clock())
        conn.enqueue(report(), 1)
        (o,) = conn.deliver_due()
    assert o.result == "retry"
    text = caplog.text + o.error + store.deliveries("city")[0].last_error
    assert "tk-SECRET-123" not in text and SECRET.decode() not in text and "token=***" in text
    assert mask_url("https://u:pw@h/p?key=abc&x=1&access_token=def") == "https://u:***@h/p?key=***&x=1&access_token=***"


def test_config_refuses_an_enabled_platform_without_url_and_unknown_actions() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="no url"):
        PlatformConfig(enabled=True)
    with pytest.raises(ValidationError, match="unknown workflow action 'finish'"):
        PlatformConfig.model_validate({"status_map": {"closed": {"action": "finish"}}})
    with pytest.raises(ValidationError, match="http:// or https://"):
        PlatformConfig(url="ftp://x")


def test_business_codes_in_a_200_answer(store: HandoffStore) -> None:
    answers = {"NS-2026-000001": b'{"code":"0","msg":"ok"}', "NS-2026-000002": b'{"code":"E1002","msg":"duplicate"}',
               "NS-2026-000003": b'{"code":"E2001","msg":"location outside the city"}', "NS-2026-000004": b"<html>"}

    def respond(req: Seen, i: int) -> Reply:
        return Reply(200, answers[json.loads(req.body)["externalCaseNo"]])

    with receiving(respond) as srv:
        conn = connector(store, srv.url, Clock(), response_code_field="code", response_duplicate_codes=["E1002"])
        for number in answers:
            conn.enqueue(report(number), 1)
        results = {o.idempotency_key.split(":")[0]: o for o in conn.deliver_due()}
    assert [results[n].result for n in answers] == ["delivered", "duplicate", "dead", "dead"]
    assert "E2001" in results["NS-2026-000003"].error and "location outside" in results["NS-2026-000003"].error
    assert "not JSON" in results["NS-2026-000004"].error
