"""Event bus: one interface (:mod:`.base`), the embedded durable log, and Kafka (distributed mode)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nonsite.bus.base import Bus, Consumer, Message
from nonsite.bus.embedded import EmbeddedBus

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from nonsite.config.services import BusConfig


def open_bus(cfg: BusConfig | str, data_dir: str | Path, role: str = "node") -> Bus:
    """The bus the configuration names (``cfg`` is the ``bus:`` section, or just its kind).

    ``role`` (edge, sealer, drafter, node) names the Kafka client and the outbox file of this process.
    """
    from nonsite.config.services import BusConfig

    if isinstance(cfg, str):
        if cfg not in ("embedded", "kafka"):
            raise ValueError(f"unknown bus kind {cfg!r}; use 'embedded' or 'kafka'")
        cfg = BusConfig(kind=cfg)  # type: ignore[arg-type]
    if cfg.kind == "embedded":
        return EmbeddedBus(Path(data_dir) / "bus" / "bus.sqlite")
    if cfg.kind == "kafka":
        from nonsite.bus.kafka import KafkaBus

        k = cfg.kafka
        outbox = Path(data_dir) / "bus" if not k.outbox_path else _under(data_dir, k.outbox_path)
        return KafkaBus(k, outbox, role=role)
    raise ValueError(f"unknown bus kind {cfg.kind!r}; use 'embedded' or 'kafka'")


def tail(bus: Bus, topic: str, *, from_start: bool = False) -> Consumer:
    """A reader of ``topic`` from its end on, outside any consumer group (every reader sees every new message):
    what a console follows camera states with, and what every edge / pool worker follows zone commands with.

    ``from_start``: from the oldest message the topic still keeps instead; the reader's ``caught_up()`` then says
    when it has read everything that was there when it started (what a starting worker replays zone commands with).
    """
    reader = getattr(bus, "tail", None)
    if reader is None:
        raise TypeError(f"{type(bus).__name__} cannot be read from its end")
    consumer: Consumer = reader(topic, from_start=True) if from_start else reader(topic)
    return consumer


def follow(bus: Bus, topic: str, handle: Callable[[Message], Any], *, stop: threading.Event,
           listening: threading.Event, what: str, from_start: bool = False, max_records: int = 200,
           before_listening: Callable[[Consumer], None] | None = None) -> None:
    """Read ``topic`` with :func:`tail` and give every message to ``handle`` until ``stop`` is set (run it in a
    thread). ``listening`` is set once the reader is assigned (and after ``before_listening``, e.g. a catch-up,
    has run); a message whose handling raises is logged as ``what`` and never stops the reader."""
    reader: Consumer | None = None
    try:
        reader = tail(bus, topic, from_start=from_start)
        ready = getattr(reader, "ready", None)
        while not stop.is_set() and ready is not None and not ready():
            stop.wait(1.0)
        if before_listening is not None:
            before_listening(reader)
        listening.set()
        while not stop.is_set():
            for msg in reader.poll(max_records=max_records, timeout_s=0.5):
                try:
                    handle(msg)
                except Exception:  # one bad message never stops the reader
                    log.exception("%s at %s:%d failed", what, msg.topic, msg.offset)
    finally:
        if reader is not None:
            reader.close()


def publish_volatile(bus: Bus, topic: str, key: str, value: bytes) -> bool:
    """Publish a message only worth its newest value (a camera state): sent now or dropped (False) on Kafka, never
    queued in the outbox; appended on the embedded bus."""
    send = getattr(bus, "publish_volatile", None)
    if send is not None:
        return bool(send(topic, key, value))
    bus.publish(topic, key, value)
    return True


def _under(data_dir: str | Path, value: str) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else Path(data_dir) / p


__all__ = ["Bus", "Consumer", "EmbeddedBus", "Message", "follow", "open_bus", "publish_volatile", "tail"]
