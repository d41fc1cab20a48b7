"""The city platform hand-off inside a running process: what the console serves and starts.

:class:`PlatformHub` holds the hand-off's store, the connector and the callback secret; :meth:`PlatformHub.start`
runs the relay (``nonsite.cases`` decisions → the outbox, consumer group ``nonsite-platform``) and the delivery
worker (:class:`~nonsite.integration.connector.ConnectorWorker`) on daemon threads; :meth:`PlatformHub.callback`
is the body of the console's status-change route: verify, deduplicate and map a callback
(:func:`~nonsite.integration.inbound.handle_callback`), then apply it to the workflow as ``platform:<name>``, or
record it on the case's audit trail (``platform_status``) when it maps to no action or does not fit the case's
status. :func:`build_hub` makes one from the configuration (secrets from the environment; a missing one is a
one-line error).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from nonsite.bus import Bus
from nonsite.cases.db import AuditEntry, utcnow, write_session
from nonsite.cases.workflow import CaseNotFound, InvalidReason, InvalidTransition, apply_action, load_for_update
from nonsite.config.integration import PlatformConfig
from nonsite.config.root import NonsiteConfig
from nonsite.evidence import Store
from nonsite.integration.connector import ConnectorWorker, PlatformConnector
from nonsite.integration.inbound import CallbackDecision, CallbackRejected, handle_callback
from nonsite.integration.outbox import HandoffStore
from nonsite.integration.relay import build_connector, open_store, run_platform_relay
from nonsite.integration.signing import secret_from_env

__all__ = ["PlatformHub", "build_hub", "record_platform_note"]

log = logging.getLogger(__name__)


def record_platform_note(session_factory: sessionmaker[Session], d: CallbackDecision, why: str = "") -> None:
    """An audit entry ``platform_status`` on the case (the status unchanged): the platform's status and note."""
    at = utcnow()
    detail: dict[str, Any] = d.audit_detail()
    if why:
        detail["not_applied"] = why
    with write_session(session_factory) as session:
        case = load_for_update(session, d.case_number)
        session.add(AuditEntry(case_id=case.id, at=at, actor=d.actor, action="platform_status",
                               before_status=case.status.value, after_status=case.status.value, detail=detail))


@dataclass
class PlatformHub:
    """The hand-off of one platform in a console or node process."""

    cfg: PlatformConfig
    store: HandoffStore
    connector: PlatformConnector
    callback_secret: bytes
    session_factory: sessionmaker[Session]
    link_secret: bytes = b""
    """Verifies the signed evidence links of a local store (``link_secret_env``; empty: no ``link_base_url``)."""
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _worker: ConnectorWorker | None = None

    @property
    def name(self) -> str:
        return self.cfg.name

    def start(self, bus: Bus | None, *, interval_s: float = 1.0) -> PlatformHub:
        """Start the delivery worker and, with a ``bus``, the relay of the workflow's decisions."""
        if self._worker is None:
            self._worker = ConnectorWorker(self.connector, interval_s).start()
        if bus is not None and not self._threads:
            t = threading.Thread(target=run_platform_relay, args=(bus, self.session_factory, self.connector,
                                                                   self._stop),
                                 name=f"platform-relay-{self.name}", daemon=True)
            t.start()
            self._threads.append(t)
        log.info("platform %s: hand-off started (relay %s)", self.name, "on" if self._threads else "off")
        return self

    @property
    def running(self) -> bool:
        return self._worker is not None and all(t.is_alive() for t in self._threads)

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=10)
        self._threads.clear()
        if self._worker is not None:
            self._worker.stop()
            self._worker = None

    def close(self) -> None:
        self.stop()
        self.store.close()

    def callback(self, name: str, headers: Mapping[str, str], body: bytes) -> tuple[int, dict[str, Any]]:
        """A status change POSTed by the platform: (HTTP status, JSON answer). See the module docstring."""
        if name != self.name:
            return 404, {"error": {"code": "not_found", "message": f"no platform {name!r} here"}}
        try:
            d = handle_callback(headers, body, cfg=self.cfg, secret=self.callback_secret, store=self.store)
        except CallbackRejected as exc:
            return exc.status_code, {"error": {"code": "rejected", "message": str(exc)}}
        if d.duplicate:
            return 200, {"duplicate": True}
        try:
            if d.action is None:
                record_platform_note(self.session_factory, d)
                return 200, {"ok": True, "applied": None}
            try:
                apply_action(self.session_factory, d.case_number, d.action, d.actor, note=d.note, reason=d.reason)
            except (InvalidTransition, InvalidReason) as exc:  # does not fit the case now: noted, not retried
                record_platform_note(self.session_factory, d, str(exc))
                return 200, {"ok": True, "applied": None, "noted": str(exc)}
            return 200, {"ok": True, "applied": d.action}
        except CaseNotFound:
            return 404, {"error": {"code": "not_found", "message": f"no case {d.case_number}"}}
        except SQLAlchemyError as exc:  # the database is down: let the platform's retry be taken
            log.warning("platform %s: callback %s not applied (%s); released for a retry", self.name, d.event_id,
                        exc)
            self.store.release_callback(self.name, d.event_id)
            return 503, {"error": {"code": "unavailable", "message": "the case database is unavailable; retry"}}


def build_hub(cfg: NonsiteConfig, session_factory: sessionmaker[Session],
              evidence: Store | None = None) -> PlatformHub | None:
    """The hub of ``integration.platform`` (None when it is not enabled); MissingSecret names an unset variable."""
    p = cfg.integration.platform
    if not p.enabled:
        return None
    callback_secret = secret_from_env(p.callback_secret_env)
    link_secret = secret_from_env(p.link_secret_env) if p.link_base_url else b""
    store = open_store(cfg)
    try:
        connector = build_connector(cfg, store, evidence)
    except BaseException:
        store.close()
        raise
    return PlatformHub(p, store, connector, callback_secret, session_factory, link_secret)
