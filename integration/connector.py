"""Push case reports to the city platform: outbox, signed POST, retries with backoff, dead letters, worker.

:meth:`PlatformConnector.enqueue` puts a case's report in the outbox (idempotent on case number + revision);
:meth:`PlatformConnector.deliver_due` sends what is due, each as::

    POST <url>
    Content-Type: application/json; charset=utf-8
    Idempotency-Key: NS-2026-000123:7
    X-Nonsite-Timestamp: 1765000000
    X-Nonsite-Signature: sha256=<hex HMAC-SHA256(secret, "1765000000\\n" + body)>

and files the answer:

- 2xx: delivered (with ``response_code_field`` set, only when the business code in the JSON answer is one of
  ``response_ok_codes``; one of ``response_duplicate_codes`` counts as a 409, any other as a refusal);
- 409: delivered (the platform already had this key: a resend after a lost answer);
- 408, 425, 429, 5xx, 401, 403, no answer, timeout: retried after an exponential backoff with jitter
  (``Retry-After`` honoured);
- any other 4xx (400 validation error, 404, 413, 422 ...), or a report that cannot be rendered: dead letter at
  once (retrying cannot help);
- ``max_attempts`` reached: dead letter.

Admins list the dead letters and requeue them (:meth:`dead_letters`, :meth:`requeue`) once the cause is
fixed. The body is rendered afresh at every attempt, so the evidence links it carries are always valid for
``link_expiry_s`` from the send. :class:`ConnectorWorker` runs it on a thread until ``stop()``.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import jinja2

from nonsite.config.integration import PlatformConfig
from nonsite.integration.http import HttpResult, TransportError, backoff_delay, mask_url, post, retry_after_s
from nonsite.integration.metrics import PLATFORM_ATTEMPTS, PLATFORM_REPORTS
from nonsite.integration.outbox import Delivery, DeliveryState, HandoffStore
from nonsite.integration.platform import (
    CaseReport,
    LinkMaker,
    ReportError,
    load_template,
    render_report,
    report_from_case,
)
from nonsite.integration.signing import signature_headers

__all__ = ["ConnectorWorker", "Outcome", "PlatformConnector"]

log = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({401, 403, 408, 425, 429})
Result = Literal["delivered", "duplicate", "retry", "dead"]
Poster = Callable[[str, bytes, Mapping[str, str], float], HttpResult]


@dataclass(frozen=True)
class Outcome:
    """What one attempt did."""

    delivery_id: int
    idempotency_key: str
    result: Result
    status: int | None
    error: str = ""
    next_attempt_at: float | None = None


class PlatformConnector:
    """Outbound hand-off to one platform (``cfg``), over the outbox in ``store``."""

    def __init__(self, cfg: PlatformConfig, store: HandoffStore, *, secret: bytes, links: LinkMaker | None = None,
                 timezone: str = "Asia/Shanghai", clock: Callable[[], float] = time.time,
                 rng: random.Random | None = None, poster: Poster = post) -> None:
        if not cfg.url:
            raise ValueError("integration.platform.url is not set")
        self.cfg, self.store = cfg, store
        self._secret, self._links, self._tz = secret, links, timezone
        self._clock, self._rng, self._post = clock, rng or random.Random(), poster
        self._counted_at: float | None = None
        self._template: jinja2.Template | None = None
        self._template_error: str | None = None
        try:
            self._template = load_template(cfg.template)
        except ReportError as exc:  # kept: every report goes to the dead letters with the reason
            self._template_error = str(exc)
            log.error("platform %s: %s", cfg.name, exc)

    # -- queue -----------------------------------------------------------------------------------------

    def enqueue(self, case: CaseReport | Any, revision: int) -> bool:
        """Queue a report of ``case`` (a :class:`CaseReport` or a case row) at ``revision`` (a number that grows
        with each report of the case: the relay uses the decision's time in milliseconds); False when that
        revision is already queued."""
        report = case if isinstance(case, CaseReport) else report_from_case(case)
        return self.store.enqueue(self.cfg.name, report, revision, self._clock())

    def dead_letters(self, limit: int = 100) -> list[Delivery]:
        return self.store.deliveries(self.cfg.name, DeliveryState.DEAD, limit)

    def requeue(self, ids: Sequence[int] | None = None) -> int:
        """Dead letters (``ids``, or all) back into the queue, due now with their attempts reset."""
        n = self.store.requeue(self.cfg.name, ids, self._clock())
        if n:
            log.info("platform %s: %d dead report(s) requeued", self.cfg.name, n)
        return n

    def counts(self) -> dict[str, int]:
        return self.store.counts(self.cfg.name)

    # -- delivery --------------------------------------------------------------------------------------

    def deliver_due(self, limit: int = 20) -> list[Outcome]:
        """Send every report due now (up to ``limit``); the outcome of each attempt, in order."""
        lease = self.cfg.timeout_s * 2 + 30
        outcomes: list[Outcome] = []
        for _ in range(limit):  # one claim per send, so a lease never runs out while earlier ones are sent
            claimed = self.store.claim_due(self.cfg.name, self._clock(), lease, 1)
            if not claimed:
                break
            outcomes.append(self._attempt(claimed[0]))
        now = self._clock()
        for o in outcomes:
            PLATFORM_ATTEMPTS.labels(self.cfg.name, o.result).inc()
        if outcomes or self._counted_at is None or now - self._counted_at >= 60:
            for state, n in self.counts().items():
                PLATFORM_REPORTS.labels(self.cfg.name, state).set(n)
            self._counted_at = now
        return outcomes

    def _attempt(self, d: Delivery) -> Outcome:
        attempts = d.attempts + 1
        now = self._clock()
        try:
            if self._template is None:
                raise ReportError(self._template_error or "no platform template")
            body = render_report(self._template, d.report, d.revision, self.cfg, links=self._links,
                                 timezone=self._tz, now=datetime.fromtimestamp(now, UTC))
        except ReportError as exc:
            return self._dead(d, attempts, f"not sent: {exc}", None)
        headers = {"Content-Type": "application/json; charset=utf-8", "User-Agent": "nonsite-platform/1",
                   self.cfg.idempotency_header: d.idempotency_key,
                   **signature_headers(self._secret, body, timestamp=int(now),
                                       signature_header=self.cfg.signature_header,
                                       timestamp_header=self.cfg.timestamp_header)}
        url = str(self.cfg.url)
        try:
            res = self._post(url, body, headers, self.cfg.timeout_s)
        except TransportError as exc:
            return self._retry(d, attempts, str(exc), None, None)
        refused = self._business_refusal(res)
        if refused is not None and refused != "duplicate":
            return self._dead(d, attempts, f"refused: {mask_url(url)} answered {res.status} with {refused}",
                              res.status)
        if res.ok or res.status == 409:
            dup = res.status == 409 or refused == "duplicate"
            self.store.mark_delivered(d.id, attempts=attempts, status=res.status, duplicate=dup, now=self._clock())
            log.info("platform %s: %s delivered (%s%s)", self.cfg.name, d.idempotency_key, res.status,
                     ", already there" if dup else "")
            return Outcome(d.id, d.idempotency_key, "duplicate" if dup else "delivered", res.status)
        error = f"{mask_url(url)} answered {res.status}: {res.text(300)}"
        if res.status >= 500 or res.status in RETRY_STATUSES:
            return self._retry(d, attempts, error, res.status, retry_after_s(res))
        return self._dead(d, attempts, f"refused: {error}", res.status)

    def _business_refusal(self, res: HttpResult) -> str | None:
        """For a 2xx answer with a business code (``response_code_field``): None when it means accepted,
        "duplicate" when it means already there, else what the platform said."""
        path = self.cfg.response_code_field
        if not path or not res.ok:
            return None
        try:
            data: Any = json.loads(res.body or b"null")
        except ValueError:
            return f"a body that is not JSON: {res.text(200)}"
        for part in path.split("."):
            data = data.get(part) if isinstance(data, dict) else None
        code = "" if data is None else str(data)
        if code in self.cfg.response_ok_codes:
            return None
        if code in self.cfg.response_duplicate_codes:
            return "duplicate"
        return f"code {code or '(none)'}: {res.text(300)}"

    def _retry(self, d: Delivery, attempts: int, error: str, status: int | None, at_least: float | None) -> Outcome:
        if attempts >= self.cfg.max_attempts:
            return self._dead(d, attempts, f"gave up after {attempts} attempts: {error}", status)
        wait = backoff_delay(attempts, self.cfg.backoff_base_s, self.cfg.backoff_max_s, self._rng)
        if at_least is not None:
            wait = max(wait, min(at_least, self.cfg.backoff_max_s))
        next_at = self._clock() + wait
        self.store.mark_retry(d.id, attempts=attempts, next_at=next_at, error=error, status=status, now=self._clock())
        log.warning("platform %s: %s attempt %d failed (%s); next in %.0f s", self.cfg.name, d.idempotency_key,
                    attempts, error, wait)
        return Outcome(d.id, d.idempotency_key, "retry", status, error, next_at)

    def _dead(self, d: Delivery, attempts: int, error: str, status: int | None) -> Outcome:
        self.store.mark_dead(d.id, attempts=attempts, error=error, status=status, now=self._clock())
        log.error("platform %s: %s moved to the dead letters: %s", self.cfg.name, d.idempotency_key, error)
        return Outcome(d.id, d.idempotency_key, "dead", status, error)


class ConnectorWorker:
    """Runs :meth:`PlatformConnector.deliver_due` on a daemon thread every ``interval_s`` until :meth:`stop`."""

    def __init__(self, connector: PlatformConnector, interval_s: float = 1.0) -> None:
        self.connector, self.interval_s = connector, interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> ConnectorWorker:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"platform-{self.connector.cfg.name}",
                                            daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                busy = len(self.connector.deliver_due()) > 0
            except Exception:  # the outbox database is down: keep everything, try again later
                log.exception("platform %s: delivery round failed", self.connector.cfg.name)
                busy = False
            if not busy:
                self._stop.wait(self.interval_s)

    def stop(self, timeout_s: float | None = None) -> None:
        """Stop after the request in flight (at most one timeout); reports not sent stay in the outbox."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s if timeout_s is not None else self.connector.cfg.timeout_s + 5)
            self._thread = None
