"""A city platform (城运平台) for tests: it files nonsite's case reports as a real platform would (checks the
HMAC and the required fields, 409 for an idempotency key it already has) and sends signed status changes
back to a callback URL. Built on :mod:`http_receiver` (a real HTTP server on loopback)."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from http_receiver import Receiver, Reply, Seen, receiving

REQUIRED = ("externalCaseNo", "eventTypeCode", "description", "longitude", "latitude", "occurTime")


class PlatformSimulator:
    def __init__(self, report_secret: bytes, callback_secret: bytes) -> None:
        self.report_secret, self.callback_secret = report_secret, callback_secret
        self.cases: dict[str, dict[str, Any]] = {}  # idempotency key -> report
        self.refused: list[str] = []
        self.receiver: Receiver | None = None

    @property
    def url(self) -> str:
        assert self.receiver is not None
        return self.receiver.url + "/api/v1/cases/report"

    def respond(self, req: Seen, index: int) -> Reply:
        ts, sig = req.headers.get("x-nonsite-timestamp", ""), req.headers.get("x-nonsite-signature", "")
        mac = hmac.new(self.report_secret, ts.encode() + b"\n" + req.body, hashlib.sha256).hexdigest()
        if not ts.isdigit() or not hmac.compare_digest("sha256=" + mac, sig):
            self.refused.append("signature")
            return Reply(401, b'{"code":"E401","msg":"bad signature"}')
        key = req.headers.get("idempotency-key", "")
        if key in self.cases:
            return Reply(409, b'{"code":"E409","msg":"duplicate"}')
        report = json.loads(req.body)
        missing = [f for f in REQUIRED if report.get(f) in (None, "")]
        if missing:
            self.refused.append(f"missing {missing}")
            return Reply(400, json.dumps({"code": "E400", "msg": f"缺少字段 {missing}"}).encode())
        self.cases[key] = report
        return Reply(200, json.dumps({"code": "0", "caseId": f"CY-{len(self.cases):06d}"}).encode())

    def send_status(self, callback_url: str, case_number: str, status: str, event_id: str,
                    comment: str = "") -> tuple[int, dict[str, Any]]:
        """POST a signed status change to nonsite's callback; (HTTP status, JSON answer)."""
        body = json.dumps({"event_id": event_id, "case_number": case_number, "status": status,
                           "comment": comment}, ensure_ascii=False).encode()
        ts = str(int(time.time()))
        sig = "sha256=" + hmac.new(self.callback_secret, ts.encode() + b"\n" + body, hashlib.sha256).hexdigest()
        req = urllib.request.Request(callback_url, data=body, method="POST", headers={
            "Content-Type": "application/json", "X-Nonsite-Timestamp": ts, "X-Nonsite-Signature": sig})
        try:
            # generous: on a loaded machine the console's answer (an audited workflow step) can take seconds
            with urllib.request.urlopen(req, timeout=60) as resp:
                return resp.status, json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"{}")


@contextmanager
def platform(report_secret: bytes, callback_secret: bytes) -> Iterator[PlatformSimulator]:
    sim = PlatformSimulator(report_secret, callback_secret)
    with receiving(sim.respond) as r:
        sim.receiver = r
        yield sim
