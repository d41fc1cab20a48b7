"""Relay of the transactional outbox to the bus (``nonsite.cases`` decisions for the city platform).

The workflow writes each :class:`~nonsite.bus.events.CaseDecision` into the ``outbox`` table in
the same transaction as the status change; :func:`relay_outbox` publishes what is pending, oldest
first, and marks it published only after the bus accepted it (at-least-once; consumers dedupe on
case number + status).
"""

from __future__ import annotations

import logging
import threading

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from nonsite.bus import Bus
from nonsite.cases.db import OutboxMessage, utcnow, write_session

log = logging.getLogger(__name__)


def relay_outbox(bus: Bus, session_factory: sessionmaker[Session], limit: int = 100) -> int:
    """Publish up to ``limit`` pending outbox messages in order; returns how many were published."""
    with session_factory() as session:
        pending = session.scalars(
            select(OutboxMessage).where(OutboxMessage.published_at.is_(None)).order_by(OutboxMessage.id).limit(limit)
        ).all()
    done = 0
    for msg in pending:
        bus.publish(msg.topic, msg.key, msg.value.encode("utf-8"))
        with write_session(session_factory) as session:
            row = session.get(OutboxMessage, msg.id)
            if row is not None and row.published_at is None:
                row.published_at = utcnow()
        done += 1
    return done


def run_outbox_relay(
    bus: Bus, session_factory: sessionmaker[Session], stop: threading.Event, interval_s: float = 1.0
) -> None:
    """Relay the outbox until ``stop`` is set (a failed publish is retried on the next round)."""
    while not stop.is_set():
        try:
            n = relay_outbox(bus, session_factory)
        except Exception as exc:  # the bus or the DB is down: keep the messages, try again later
            log.warning("outbox relay failed, will retry: %s", exc)
            n = 0
        if n == 0:
            stop.wait(interval_s)
