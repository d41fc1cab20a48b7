"""Notifications to the channels Chinese teams use: WeCom (企业微信) and DingTalk (钉钉) group robots, an SMS gateway.

:meth:`Notifier.notify` takes a :class:`Notice` (a new alert, a 督办, an overdue case, a reminder) and queues it
on every channel that subscribes to its kind; :meth:`Notifier.pump` (the worker thread calls it) turns what
waits into messages and sends them:

- **batched**: notices of one kind wait up to ``window_s`` (or until ``max_items`` are waiting) and go out as
  one message listing them all; a burst larger than ``max_items`` — or than the channel's size limit — is
  split into as few messages as fit;
- **rate-limited** per channel: at most ``rate_per_minute`` messages in any 60 s (the robots' own limit is 20);
  what exceeds it waits, nothing is dropped;
- **retried** with exponential backoff and jitter on no answer, 5xx, 429 and the robots' "too fast" codes
  (WeCom 45009, DingTalk 130101); a refusal that retrying cannot fix (bad key, bad message) and a message out
  of attempts are logged as errors and counted.

Webhook URLs (they carry the robot's key) and secrets come from the environment; logs show the URLs masked
(``key=***``, ``access_token=***``). Case values are data: markdown characters in them are replaced by their
full-width forms so an address cannot turn into a link.

DingTalk's signed-secret mode (加签) follows its documentation: ``timestamp`` in milliseconds,
``sign = urlencode(base64(HMAC-SHA256(key=secret, msg=f"{timestamp}\\n{secret}")))``, both appended to the
webhook URL as query parameters.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, quote_plus, urlsplit
from zoneinfo import ZoneInfo

import jinja2
from jinja2.sandbox import SandboxedEnvironment

from nonsite.config.integration import ChannelConfig, NoticeKind, NotificationsConfig
from nonsite.integration.http import SECRET_PARAMS, HttpResult, TransportError, backoff_delay, mask_url, post
from nonsite.integration.metrics import NOTIFICATIONS
from nonsite.integration.platform import report_from_case
from nonsite.integration.signing import MissingSecret

__all__ = ["ChannelOverview", "ChannelStats", "Notice", "Notifier", "TestResult", "dingtalk_sign", "notice_from_case"]

log = logging.getLogger(__name__)

KIND_TITLES: dict[str, str] = {"new_alert": "新告警", "supervision": "督办", "overdue": "案件超期",
                               "reminder": "办理提醒", "test": "连通测试"}
#: The channels' own size limits (WeCom: bytes of UTF-8, markdown 4096 and text 2048; the others: characters).
DEFAULT_LIMITS: dict[str, int] = {"wecom": 4096, "dingtalk": 5000, "sms": 300}
RATE_LIMIT_CODES = frozenset({45009, 130101, -1})  # WeCom too fast, DingTalk too fast, "system busy"
_MARKDOWN = str.maketrans({"[": "［", "]": "］", "(": "（", ")": "）", "*": "＊", "_": "＿", "`": "｀", "#": "＃",
                           "<": "＜", ">": "＞", "\n": " ", "\r": " "})
Poster = Callable[[str, bytes, Mapping[str, str], float], HttpResult]


@dataclass(frozen=True)
class Notice:
    """One thing to tell a team."""

    kind: NoticeKind
    case_number: str
    summary: str  # one line: type and place (人行道违停 · 示范路1号)
    at: datetime  # when it happened (UTC)
    detail: str = ""  # the 督办's instruction, the overdue step, ...


def notice_from_case(case: Any, kind: NoticeKind, *, detail: str = "", at: datetime | None = None) -> Notice:
    """A notice about a case row (type name and place from the case)."""
    r = report_from_case(case)
    place = r.address or r.camera_name or r.camera_id
    return Notice(kind, r.number, f"{r.type_name or r.type} · {place}", at or r.confirmed_at, detail)


def dingtalk_sign(secret: str, timestamp_ms: int) -> str:
    """DingTalk's robot signature: urlencoded base64 of HMAC-SHA256(secret, "timestamp\\nsecret")."""
    digest = hmac.new(secret.encode("utf-8"), f"{timestamp_ms}\n{secret}".encode(), hashlib.sha256).digest()
    return quote_plus(base64.b64encode(digest))


@dataclass
class _Message:
    kind: str
    title: str
    text: str
    count: int
    attempts: int = 0
    next_at: float = 0.0


@dataclass
class ChannelStats:
    """One channel's counts since the process started (what ``nonsite_notifications_total`` counts for it)."""

    sent: int = 0
    notices_sent: int = 0
    failed_attempts: int = 0
    given_up: int = 0
    last_error: str = ""  # the last failure (secrets masked)
    last_error_at: float | None = None  # Unix seconds


@dataclass(frozen=True)
class TestResult:
    """What a test message to one channel gave (:meth:`Notifier.test`)."""

    __test__ = False  # not a pytest class

    channel: str
    ok: bool
    error: str  # empty when sent; secrets masked
    at: float  # Unix seconds


@dataclass(frozen=True)
class ChannelOverview:
    """A channel as an admin sees it: never its URL's key or its secrets."""

    id: str
    kind: str
    url: str  # masked (key=***, access_token=***)
    events: tuple[str, ...]
    stats: ChannelStats
    last_test: TestResult | None


def _env(name: str, what: str) -> str:
    value = os.environ.get(name, "")
    if not value:
        raise MissingSecret(f"environment variable {name} ({what}) is not set; export it before starting")
    return value


class _Channel:
    """One configured channel: its queue, its rate window, how it builds and judges a request."""

    def __init__(self, cfg: ChannelConfig, *, clock: Callable[[], float]) -> None:
        self.cfg = cfg
        self.url = _env(cfg.url_env, f"the {cfg.kind} URL of channel {cfg.id}")
        self.secret = _env(cfg.secret_env, f"the DingTalk secret of channel {cfg.id}") if cfg.secret_env else None
        self.auth = _env(cfg.auth_env, f"the SMS credential of channel {cfg.id}") if cfg.auth_env else None
        self.markdown = cfg.kind != "sms" and cfg.format == "markdown"
        own = 2048 if cfg.kind == "wecom" and not self.markdown else DEFAULT_LIMITS[cfg.kind]  # WeCom text: 2048 B
        self.limit = min(cfg.max_chars, own) if cfg.max_chars else own
        self.pending: dict[str, list[tuple[float, Notice]]] = {}
        self.outgoing: deque[_Message] = deque()
        self.sent_at: deque[float] = deque()
        self.stats = ChannelStats()
        self._clock = clock
        self._body: jinja2.Template | None = None
        if cfg.kind == "sms":
            env = SandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False)
            env.filters["json"] = lambda v: json.dumps(v, ensure_ascii=False)
            self._body = env.from_string(cfg.body_template)

    def size(self, text: str) -> int:
        return len(text.encode("utf-8")) if self.cfg.kind == "wecom" else len(text)

    def mask(self, text: str) -> str:
        """``text`` (an error, an answer) without the URL's key, the signing secret or the SMS credential."""
        text = text.replace(self.url, mask_url(self.url))
        parts = urlsplit(self.url)
        keys = [v for k, v in parse_qsl(parts.query) if k.lower() in SECRET_PARAMS]  # an answer may echo the key
        for secret in (*keys, parts.password, self.secret, self.auth):
            if secret and len(secret) >= 4:
                text = text.replace(secret, "***")
        return text

    def request(self, msg: _Message) -> tuple[str, bytes, dict[str, str]]:
        headers = {"Content-Type": "application/json; charset=utf-8"}
        kind, url = self.cfg.kind, self.url
        if kind == "sms":
            assert self._body is not None
            body = self._body.render(phones=list(self.cfg.phones), text=msg.text)
            json.loads(body)  # the template must give JSON; a TemplateError/ValueError is a permanent failure
            if self.auth:
                headers[self.cfg.auth_header] = self.auth
            return url, body.encode("utf-8"), headers
        mobiles = list(self.cfg.mention_mobiles)
        if kind == "wecom":
            payload: dict[str, Any] = (
                {"msgtype": "markdown", "markdown": {"content": msg.text}} if self.markdown
                else {"msgtype": "text", "text": {"content": msg.text, "mentioned_mobile_list": mobiles}})
        else:
            at = {"atMobiles": mobiles, "isAtAll": False}
            mention = "".join(f" @{m}" for m in mobiles)
            payload = ({"msgtype": "markdown", "markdown": {"title": msg.title, "text": msg.text + mention}, "at": at}
                       if self.markdown else {"msgtype": "text", "text": {"content": msg.text}, "at": at})
            if self.secret:
                ts = int(self._clock() * 1000)
                url += ("&" if "?" in url else "?") + f"timestamp={ts}&sign={dingtalk_sign(self.secret, ts)}"
        return url, json.dumps(payload, ensure_ascii=False).encode("utf-8"), headers

    def judge(self, res: HttpResult) -> tuple[bool, bool, str]:
        """(delivered, worth retrying, error) of an answer."""
        if res.status >= 500 or res.status == 429:
            return False, True, f"answered {res.status}"
        if not res.ok:
            return False, False, f"answered {res.status}: {res.text(200)}"
        if self.cfg.kind == "sms":
            return True, False, ""
        try:
            data = json.loads(res.body or b"{}")
            code = int(data.get("errcode", 0))
        except (ValueError, TypeError, AttributeError):
            return False, True, f"answered {res.status} with a body that is not the robot's JSON"
        if code == 0:
            return True, False, ""
        return False, code in RATE_LIMIT_CODES, f"errcode {code}: {str(data.get('errmsg', ''))[:200]}"


class Notifier:
    """Batches, rate-limits and sends notices to the configured channels (thread-safe)."""

    def __init__(self, cfg: NotificationsConfig, *, timezone: str = "Asia/Shanghai",
                 clock: Callable[[], float] = time.time, rng: random.Random | None = None,
                 poster: Poster = post) -> None:
        self.cfg = cfg
        self._tz = ZoneInfo(timezone)
        self._clock, self._rng, self._post = clock, rng or random.Random(), poster
        self._lock = threading.Lock()
        self.channels = {c.id: _Channel(c, clock=clock) for c in cfg.channels}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._tests: dict[str, TestResult] = {}

    def notify(self, notice: Notice) -> None:
        """Queue ``notice`` on every channel that takes its kind."""
        now = self._clock()
        with self._lock:
            for ch in self.channels.values():
                if notice.kind in ch.cfg.events:
                    ch.pending.setdefault(notice.kind, []).append((now, notice))

    def stats(self) -> dict[str, ChannelStats]:
        return {cid: ch.stats for cid, ch in self.channels.items()}

    def waiting(self) -> int:
        """Notices and messages not yet sent, over all channels."""
        with self._lock:
            return sum(sum(len(v) for v in ch.pending.values()) + len(ch.outgoing) for ch in self.channels.values())

    def pump(self, *, flush: bool = False) -> int:
        """Form the messages that are due (``flush``: all that wait, window or not) and send what the rate limit
        and the retry schedule allow; returns how many messages were delivered."""
        done = 0
        for ch in self.channels.values():
            now = self._clock()
            with self._lock:
                for kind, items in list(ch.pending.items()):
                    if items and (flush or len(items) >= self.cfg.max_items
                                  or now - items[0][0] >= self.cfg.window_s):
                        ch.outgoing.extend(self._messages(ch, kind, [n for _, n in items]))
                        del ch.pending[kind]
            done += self._send_due(ch)
        return done

    # -- formatting ------------------------------------------------------------------------------------

    def _line(self, ch: _Channel, n: Notice) -> str:
        when = n.at.astimezone(self._tz).strftime("%m-%d %H:%M")
        summary, detail = n.summary.translate(_MARKDOWN), n.detail.translate(_MARKDOWN)
        if ch.cfg.kind == "sms":
            return f"{n.case_number} {summary} {when}" + (f" {detail}" if detail else "")
        base = ch.cfg.console_url.rstrip("/")
        if ch.markdown:
            link = f" [查看]({base}/cases/{n.case_number})" if base else ""
            return f"- **{n.case_number}** {summary} {when}" + (f"：{detail}" if detail else "") + link
        link = f" {base}/cases/{n.case_number}" if base else ""
        return f"{n.case_number} {summary} {when}" + (f"：{detail}" if detail else "") + link

    def _messages(self, ch: _Channel, kind: str, notices: list[Notice]) -> list[_Message]:
        title = KIND_TITLES.get(kind, kind)
        compact = ch.cfg.kind == "sms" and len(notices) > 1  # an SMS lists the case numbers only
        lines = [n.case_number if compact else self._line(ch, n) for n in notices]

        def head(count: int, part: int, parts: int) -> str:
            suffix = f"（{part}/{parts}）" if parts > 1 else ""
            if ch.cfg.kind == "sms":
                return f"【城管告警】{title}{count}条{suffix}："
            return f"### {title} {count} 条{suffix}" if ch.markdown else f"【{title}】{count} 条{suffix}"

        sep = ("、" if compact else "；") if ch.cfg.kind == "sms" else "\n"
        room = ch.limit - ch.size(head(999, 99, 99)) - 1
        chunks: list[list[str]] = [[]]
        for line in lines:
            line = _clip(line, room, ch.size)
            current = chunks[-1]
            if current and (len(current) >= self.cfg.max_items
                            or ch.size(sep.join([*current, line])) > room):
                chunks.append([])
            chunks[-1].append(line)
        out = []
        for i, chunk in enumerate(chunks, 1):
            text = head(len(chunk), i, len(chunks)) + ("" if ch.cfg.kind == "sms" else "\n") + sep.join(chunk)
            out.append(_Message(kind, title, text, len(chunk)))
        return out

    # -- sending ---------------------------------------------------------------------------------------

    def _send_due(self, ch: _Channel) -> int:
        done = 0
        while True:
            now = self._clock()
            with self._lock:
                while ch.sent_at and ch.sent_at[0] <= now - 60:
                    ch.sent_at.popleft()
                if not ch.outgoing or ch.outgoing[0].next_at > now or len(ch.sent_at) >= ch.cfg.rate_per_minute:
                    return done
                msg = ch.outgoing.popleft()
                ch.sent_at.append(now)
            ok = self._send(ch, msg)
            done += ok

    def _attempt(self, ch: _Channel, msg: _Message) -> tuple[bool, bool, str]:
        """Send ``msg`` once: (delivered, worth retrying, error with the secrets masked); counted."""
        msg.attempts += 1
        try:
            url, body, headers = ch.request(msg)
            res = self._post(url, body, headers, self.cfg.timeout_s)
            ok, retry, error = ch.judge(res)
        except TransportError as exc:
            ok, retry, error = False, True, str(exc)
        except (jinja2.TemplateError, ValueError) as exc:
            ok, retry, error = False, False, f"cannot build the message: {exc}"
        NOTIFICATIONS.labels(ch.cfg.id, "sent" if ok else "failed").inc()
        error = ch.mask(error)
        if ok:
            ch.stats.sent += 1
            ch.stats.notices_sent += msg.count
        else:
            ch.stats.failed_attempts += 1
            ch.stats.last_error, ch.stats.last_error_at = error, self._clock()
        return ok, retry, error

    def _send(self, ch: _Channel, msg: _Message) -> bool:
        masked = mask_url(ch.url)
        ok, retry, error = self._attempt(ch, msg)
        if ok:
            log.info("notify %s (%s): %s, %d item(s) sent to %s", ch.cfg.id, ch.cfg.kind, msg.title, msg.count, masked)
            return True
        if retry and msg.attempts < self.cfg.max_attempts:
            msg.next_at = self._clock() + backoff_delay(msg.attempts, self.cfg.backoff_base_s,
                                                        self.cfg.backoff_max_s, self._rng)
            with self._lock:
                ch.outgoing.appendleft(msg)  # keep the order: it goes before the messages formed after it
            log.warning("notify %s: %s to %s failed (%s); attempt %d, retrying", ch.cfg.id, msg.title, masked,
                        error, msg.attempts)
            return False
        ch.stats.given_up += 1
        NOTIFICATIONS.labels(ch.cfg.id, "given_up").inc()
        log.error("notify %s: %s (%d item(s)) to %s not delivered after %d attempt(s): %s", ch.cfg.id, msg.title,
                  msg.count, masked, msg.attempts, error)
        return False

    # -- test and overview -------------------------------------------------------------------------------

    def test(self, channel_ids: list[str] | None = None, *, by: str = "") -> dict[str, TestResult]:
        """Send one test message (连通测试) to each channel, or to those of ``channel_ids``, now and once (no retry,
        within the channel's rate limit); the results are kept for :meth:`overview`. ``by``: who asked (logged)."""
        unknown = [c for c in channel_ids or [] if c not in self.channels]
        if unknown:
            raise KeyError(f"no notification channel {unknown[0]!r}")
        results: dict[str, TestResult] = {}
        for cid, ch in self.channels.items():
            if channel_ids and cid not in channel_ids:
                continue
            now = self._clock()
            notice = Notice("new_alert", "NS-TEST-000000", "测试消息 · nonsite", datetime.fromtimestamp(now, UTC),
                            f"通知渠道连通测试{f'（{by}）' if by else ''}")
            with self._lock:
                while ch.sent_at and ch.sent_at[0] <= now - 60:
                    ch.sent_at.popleft()
                limited = len(ch.sent_at) >= ch.cfg.rate_per_minute
                if not limited:
                    ch.sent_at.append(now)
            if limited:
                result = TestResult(cid, False, f"not sent: the channel's rate limit ({ch.cfg.rate_per_minute} a "
                                    "minute) is reached; try again in a minute", now)
            else:
                [msg] = self._messages(ch, "test", [notice])
                ok, _, error = self._attempt(ch, msg)
                result = TestResult(cid, ok, error, self._clock())
            with self._lock:
                self._tests[cid] = result
            results[cid] = result
            (log.info if result.ok else log.warning)(
                "notify %s: test message%s to %s: %s", cid, f" asked by {by}" if by else "", mask_url(ch.url),
                "sent" if result.ok else result.error)
        return results

    def overview(self) -> list[ChannelOverview]:
        """Each channel: kind, masked URL, the notices it takes, its counts and its last test."""
        with self._lock:
            return [ChannelOverview(cid, ch.cfg.kind, mask_url(ch.url), tuple(ch.cfg.events), replace(ch.stats),
                                    self._tests.get(cid)) for cid, ch in self.channels.items()]

    # -- worker ----------------------------------------------------------------------------------------

    def start(self, interval_s: float = 0.5) -> Notifier:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, args=(interval_s,), name="notifier", daemon=True)
            self._thread.start()
        return self

    def _run(self, interval_s: float) -> None:
        while not self._stop.wait(interval_s):
            try:
                self.pump()
            except Exception:  # a bug in one round must not end the notifications
                log.exception("notification round failed")

    def stop(self, *, flush: bool = True) -> None:
        """Stop the worker; ``flush``: send what waits once more (window ignored, rate limit kept)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.cfg.timeout_s + 5)
            self._thread = None
        if flush:
            self.pump(flush=True)


def _clip(line: str, room: int, size: Callable[[str], int]) -> str:
    if size(line) <= room:
        return line
    while line and size(line + "…") > room:
        line = line[:-1]
    return line + "…"
