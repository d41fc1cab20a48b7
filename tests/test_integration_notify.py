"""Notifications: WeCom and DingTalk group robots and an SMS gateway, against a real local receiver that checks
DingTalk's signature and WeCom's payload; batching, rate limit, retries, masking."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import re
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from http_receiver import Receiver, Reply, Seen, receiving
from prometheus_client import REGISTRY

from nonsite.config.integration import NotificationsConfig
from nonsite.integration.notify import Notice, Notifier, dingtalk_sign, notice_from_case
from nonsite.integration.signing import MissingSecret

DING_SECRET = "SEC0123456789abcdef-test"
WECOM_KEY = "693a91f6-7xxx-4bc4-97a0-0ec2sifa5aaa"
DING_TOKEN = "ding-token-abc123"
SMS_TOKEN = "Bearer sms-credential-xyz"
T0 = 1_767_000_000.0
AT = datetime(2026, 1, 5, 2, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.t = T0

    def __call__(self) -> float:
        return self.t


def dingtalk_ok(req: Seen, now_ms: float) -> str | None:
    """DingTalk's own check of a signed robot request: why it would refuse it, or None."""
    ts, sign = req.query.get("timestamp", [""])[0], req.query.get("sign", [""])[0]
    if req.query.get("access_token") != [DING_TOKEN]:
        return "access_token"
    if not ts or abs(now_ms - int(ts)) > 3600 * 1000:
        return "timestamp"
    expected = base64.b64encode(hmac.new(DING_SECRET.encode(), f"{ts}\n{DING_SECRET}".encode(),
                                         hashlib.sha256).digest()).decode()
    if sign != expected:  # parse_qs has url-decoded it
        return "sign"
    msg = json.loads(req.body)
    if msg.get("msgtype") != "markdown" or not msg["markdown"].get("title") or not msg["markdown"].get("text"):
        return "payload"
    return None


def wecom_ok(req: Seen) -> str | None:
    if req.query.get("key") != [WECOM_KEY]:
        return "key"
    msg = json.loads(req.body)
    if msg.get("msgtype") == "markdown":
        content = msg["markdown"].get("content", "")
        return None if content and len(content.encode()) <= 4096 else "content"
    if msg.get("msgtype") == "text":
        content = msg["text"].get("content", "")
        return None if content and len(content.encode()) <= 2048 else "content"
    return "msgtype"


class Robots:
    """One receiver for the three channels, answering as each service does."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.refusals: list[str] = []
        self.script: dict[str, list[Reply]] = {}  # path -> replies to give first

    def __call__(self, req: Seen, i: int) -> Reply:
        scripted = self.script.get(req.path)
        if scripted:
            return scripted.pop(0)
        if req.path == "/robot/send":
            why = dingtalk_ok(req, self.clock.t * 1000)
        elif req.path == "/cgi-bin/webhook/send":
            why = wecom_ok(req)
        else:
            why = None if req.headers.get("authorization") == SMS_TOKEN else "auth"
        if why:
            self.refusals.append(f"{req.path}: {why}")
            return Reply(200, json.dumps({"errcode": 310000, "errmsg": f"sign not match: {why}"}).encode())
        return Reply(200, b'{"errcode":0,"errmsg":"ok"}')


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def robots(clock: Clock, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Robots, Receiver]]:
    r = Robots(clock)
    with receiving(r) as srv:
        monkeypatch.setenv("TEST_WECOM_URL", f"{srv.url}/cgi-bin/webhook/send?key={WECOM_KEY}")
        monkeypatch.setenv("TEST_DING_URL", f"{srv.url}/robot/send?access_token={DING_TOKEN}")
        monkeypatch.setenv("TEST_DING_SECRET", DING_SECRET)
        monkeypatch.setenv("TEST_SMS_URL", f"{srv.url}/sms/send")
        monkeypatch.setenv("TEST_SMS_AUTH", SMS_TOKEN)
        yield r, srv


def config(**kw: object) -> NotificationsConfig:
    base: dict[str, object] = {
        "enabled": True, "window_s": 10, "max_items": 20, "timeout_s": 0.5, "backoff_base_s": 5,
        "channels": [
            {"id": "wecom", "kind": "wecom", "url_env": "TEST_WECOM_URL", "console_url": "https://console.example"},
            {"id": "ding", "kind": "dingtalk", "url_env": "TEST_DING_URL", "secret_env": "TEST_DING_SECRET",
             "mention_mobiles": ["13800000000"]},
            {"id": "sms", "kind": "sms", "url_env": "TEST_SMS_URL", "auth_env": "TEST_SMS_AUTH",
             "phones": ["13900000000"], "events": ["supervision", "overdue"]},
        ],
    }
    base.update(kw)
    return NotificationsConfig.model_validate(base)


def alert(n: int, kind: str = "new_alert") -> Notice:
    return Notice(kind, f"NS-2026-{n:06d}", "人行道违停 · 演示路1号", AT)  # type: ignore[arg-type]


def by_path(srv: Receiver, path: str) -> list[dict[str, object]]:
    return [json.loads(r.body) for r in srv.seen if r.path == path]


def test_a_burst_of_50_alerts_is_three_messages_per_robot_listing_them_all(
        robots: tuple[Robots, Receiver], clock: Clock) -> None:
    r, srv = robots
    n = Notifier(config(), clock=clock)
    for i in range(50):
        n.notify(alert(i))
        n.pump()
    clock.t += 10
    n.pump()
    assert r.refusals == []
    wecom = [m["markdown"]["content"] for m in by_path(srv, "/cgi-bin/webhook/send")]
    ding = [m["markdown"]["text"] for m in by_path(srv, "/robot/send")]
    assert len(wecom) == 3 and len(ding) == 3  # 20 + 20 + 10
    for texts in (wecom, ding):
        numbers = re.findall(r"NS-2026-\d{6}", "\n".join(texts))
        assert sorted(set(numbers)) == [f"NS-2026-{i:06d}" for i in range(50)]
    assert "### 新告警 20 条" in wecom[0] and "### 新告警 10 条" in wecom[2]
    assert "[查看](https://console.example/cases/NS-2026-000000)" in wecom[0] and "01-05 10:00" in wecom[0]
    assert "@13800000000" in ding[0] and by_path(srv, "/robot/send")[0]["at"]["atMobiles"] == ["13800000000"]
    assert by_path(srv, "/sms/send") == []  # the SMS channel takes only 督办 and overdue
    stats = n.stats()
    assert stats["wecom"].notices_sent == 50 and stats["ding"].sent == 3 and stats["wecom"].given_up == 0


def test_notices_wait_for_the_window_then_go_as_one_message(robots: tuple[Robots, Receiver], clock: Clock) -> None:
    _, srv = robots
    n = Notifier(config(), clock=clock)
    n.notify(alert(1))
    clock.t += 4
    n.notify(alert(2))
    assert n.pump() == 0 and srv.seen == []
    clock.t += 6  # ten seconds after the first
    assert n.pump() == 2
    (msg,) = by_path(srv, "/cgi-bin/webhook/send")
    assert "NS-2026-000001" in msg["markdown"]["content"] and "NS-2026-000002" in msg["markdown"]["content"]


def test_sms_gets_supervision_orders_with_its_auth_header(robots: tuple[Robots, Receiver], clock: Clock) -> None:
    r, srv = robots
    n = Notifier(config(window_s=0), clock=clock)
    n.notify(Notice("supervision", "NS-2026-000005", "占道经营 · 演示路3号", AT, "请今日内处置并反馈"))
    n.pump()
    assert r.refusals == []
    (sms,) = by_path(srv, "/sms/send")
    assert sms["phones"] == ["13900000000"]
    assert sms["content"] == "【城管告警】督办1条：NS-2026-000005 占道经营 · 演示路3号 01-05 10:00 请今日内处置并反馈"


def test_rate_limit_holds_messages_back_without_dropping_any(robots: tuple[Robots, Receiver], clock: Clock) -> None:
    _, srv = robots
    cfg = config(max_items=1, window_s=0, channels=[
        {"id": "wecom", "kind": "wecom", "url_env": "TEST_WECOM_URL", "rate_per_minute": 2}])
    n = Notifier(cfg, clock=clock)
    for i in range(5):
        n.notify(alert(i))
    assert n.pump() == 2
    clock.t += 30
    assert n.pump() == 0
    clock.t += 31
    assert n.pump() == 2
    clock.t += 61
    assert n.pump() == 1 and n.waiting() == 0
    numbers = [re.findall(r"NS-2026-\d{6}", m["markdown"]["content"])[0]
               for m in by_path(srv, "/cgi-bin/webhook/send")]
    assert numbers == [f"NS-2026-{i:06d}" for i in range(5)]  # in order


def test_failures_are_retried_with_backoff_and_refusals_are_given_up(
        robots: tuple[Robots, Receiver], clock: Clock, caplog: pytest.LogCaptureFixture) -> None:
    r, srv = robots
    r.script["/cgi-bin/webhook/send"] = [Reply(502), Reply(200, b'{"errcode":45009,"errmsg":"api freq out of limit"}')]
    r.script["/robot/send"] = [Reply(200, b'{"errcode":300001,"errmsg":"token is not exist"}')]
    def count(result: str) -> float:
        return REGISTRY.get_sample_value("nonsite_notifications_total", {"channel": "wecom", "result": result}) or 0

    before = {r: count(r) for r in ("sent", "failed", "given_up")}
    n = Notifier(config(window_s=0), clock=clock)
    n.notify(alert(1))
    assert n.pump() == 0
    assert n.pump() == 0  # the retry is not due yet
    clock.t += 10
    assert n.pump() == 0  # 45009: too fast, retried again
    clock.t += 20
    assert n.pump() == 1
    wecom = [r for r in srv.seen if r.path == "/cgi-bin/webhook/send"]
    assert len(wecom) == 3 and wecom[0].body == wecom[2].body  # the same message, sent once in the end
    stats = n.stats()
    assert stats["wecom"].sent == 1 and stats["wecom"].failed_attempts == 2
    assert stats["ding"].given_up == 1 and len([r for r in srv.seen if r.path == "/robot/send"]) == 1
    assert "token is not exist" in caplog.text
    assert {r: count(r) - before[r] for r in before} == {"sent": 1, "failed": 2, "given_up": 0}


def test_a_message_out_of_attempts_is_given_up(clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    with receiving(lambda req, i: Reply(503)) as srv:
        monkeypatch.setenv("TEST_WECOM_URL", f"{srv.url}/cgi-bin/webhook/send?key={WECOM_KEY}")
        cfg = config(window_s=0, max_attempts=3,
                     channels=[{"id": "wecom", "kind": "wecom", "url_env": "TEST_WECOM_URL"}])
        n = Notifier(cfg, clock=clock)
        n.notify(alert(1))
        for _ in range(6):
            n.pump()
            clock.t += 3600
    assert len(srv.seen) == 3 and n.stats()["wecom"].given_up == 1 and n.waiting() == 0


def test_logs_mask_the_robot_keys(robots: tuple[Robots, Receiver], clock: Clock,
                                  caplog: pytest.LogCaptureFixture) -> None:
    r, _ = robots
    caplog.set_level(logging.DEBUG)
    r.script["/cgi-bin/webhook/send"] = [Reply(500)]
    r.script["/robot/send"] = [Reply(500)]
    n = Notifier(config(window_s=0), clock=clock)
    n.notify(alert(1))
    n.pump()
    clock.t += 60
    n.pump()
    assert "key=***" in caplog.text and "access_token=***" in caplog.text
    for secret in (WECOM_KEY, DING_TOKEN, DING_SECRET, SMS_TOKEN):
        assert secret not in caplog.text


def test_markdown_in_case_values_cannot_make_links(robots: tuple[Robots, Receiver], clock: Clock) -> None:
    _, srv = robots
    n = Notifier(config(window_s=0), clock=clock)
    n.notify(Notice("overdue", "NS-2026-000009", "占道经营 · [点我](http://evil.example) *加粗*\n# 标题", AT))
    n.pump()
    (msg,) = by_path(srv, "/cgi-bin/webhook/send")
    content = msg["markdown"]["content"]
    assert "](http://evil" not in content and "［点我］（http://evil.example）" in content
    assert "\n# 标题" not in content and "＊加粗＊" in content


def test_long_lists_are_split_to_fit_wecom_and_sms_limits(robots: tuple[Robots, Receiver], clock: Clock) -> None:
    r, srv = robots
    n = Notifier(config(max_items=200, window_s=0), clock=clock)
    for i in range(120):
        n.notify(Notice("overdue", f"NS-2026-{i:06d}", "流浪犬 · " + "很长的地址" * 20, AT, "处置环节已超期"))
    for _ in range(10):  # past the rate limit (20 a minute)
        n.pump()
        clock.t += 61
    assert r.refusals == [] and n.waiting() == 0
    wecom = [m["markdown"]["content"] for m in by_path(srv, "/cgi-bin/webhook/send")]
    sms = [m["content"] for m in by_path(srv, "/sms/send")]
    assert 1 < len(wecom) <= 40 and all(len(t.encode()) <= 4096 for t in wecom)
    assert 1 < len(sms) <= 10 and all(len(t) <= 300 for t in sms)  # an SMS lists the numbers only
    assert sms[0].startswith("【城管告警】案件超期") and "、NS-2026-000001、" in sms[0]
    for texts in (wecom, sms):
        assert len(set(re.findall(r"NS-2026-\d{6}", "".join(texts)))) == 120


def test_stop_flushes_what_waits(robots: tuple[Robots, Receiver], clock: Clock) -> None:
    _, srv = robots
    n = Notifier(config(window_s=3600), clock=clock).start(interval_s=0.02)
    n.notify(alert(1))
    n.stop()
    assert len(by_path(srv, "/cgi-bin/webhook/send")) == 1 and n.waiting() == 0


def test_text_messages_and_mentions(robots: tuple[Robots, Receiver], clock: Clock) -> None:
    r, srv = robots
    cfg = config(window_s=0, channels=[
        {"id": "wecom", "kind": "wecom", "url_env": "TEST_WECOM_URL", "format": "text",
         "mention_mobiles": ["13800000000"]},
        {"id": "ding", "kind": "dingtalk", "url_env": "TEST_DING_URL", "secret_env": "TEST_DING_SECRET",
         "format": "text"}])
    n = Notifier(cfg, clock=clock)
    n.notify(alert(3))
    n.pump()
    (w,) = by_path(srv, "/cgi-bin/webhook/send")
    assert w["msgtype"] == "text" and w["text"]["mentioned_mobile_list"] == ["13800000000"]
    assert w["text"]["content"].startswith("【新告警】1 条\nNS-2026-000003")
    assert r.refusals == ["/robot/send: payload"]  # our receiver wants markdown from DingTalk; the sign was right


def test_dingtalk_sign_is_dingtalks_documented_algorithm() -> None:
    # DingTalk's example: string_to_sign = f"{timestamp}\n{secret}", HMAC-SHA256 keyed with the secret,
    # base64, then urllib.parse.quote_plus
    ts = 1577262236757
    digest = hmac.new(b"this is secret", f"{ts}\nthis is secret".encode(), hashlib.sha256).digest()
    from urllib.parse import quote_plus
    assert dingtalk_sign("this is secret", ts) == quote_plus(base64.b64encode(digest))
    assert "%2B" in dingtalk_sign("x", 1) or "%2F" in dingtalk_sign("x", 1) or "%3D" in dingtalk_sign("x", 1)


def test_missing_environment_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TEST_WECOM_URL", raising=False)
    with pytest.raises(MissingSecret, match="TEST_WECOM_URL"):
        Notifier(config(channels=[{"id": "wecom", "kind": "wecom", "url_env": "TEST_WECOM_URL"}]))


def test_config_checks() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="needs phones"):
        config(channels=[{"id": "s", "kind": "sms", "url_env": "X"}])
    with pytest.raises(ValidationError, match="appears twice"):
        config(channels=[{"id": "a", "kind": "wecom", "url_env": "X"}, {"id": "a", "kind": "wecom", "url_env": "Y"}])
    with pytest.raises(ValidationError, match="secret_env is DingTalk"):
        config(channels=[{"id": "a", "kind": "wecom", "url_env": "X", "secret_env": "Y"}])


def test_notice_from_a_case_row() -> None:
    from types import SimpleNamespace
    row = SimpleNamespace(number="NS-2026-000010", type="stray_dog", status="draft", camera_id="cam-fence-02",
                          camera_name="围栏", zone_id="z", zone_name="", address="", lat=None, lon=None,
                          started_at=AT, confirmed_at=AT, dwell_s=10.0, evidence=[], legal_basis={})
    n = notice_from_case(row, "new_alert")
    assert (n.case_number, n.summary, n.at) == ("NS-2026-000010", "流浪犬 · 围栏", AT)
