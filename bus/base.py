"""The bus interface shared by the embedded log and Kafka (claim-check: events only, never media)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Message:
    topic: str
    offset: int
    key: str
    value: bytes
    partition: int = 0  # Kafka partition (the embedded log has one per topic)


class Consumer(Protocol):
    def poll(self, max_records: int = 100, timeout_s: float = 1.0) -> list[Message]:
        """Messages after the group's committed position (at-least-once: redelivered until committed)."""

    def commit(self, message: Message) -> None:
        """Mark everything up to and including ``message`` as done for this group."""

    def close(self) -> None: ...


class Bus(Protocol):
    def publish(self, topic: str, key: str, value: bytes) -> None:
        """Durably append; returns once the message survives a crash."""

    def consumer(self, topic: str, group: str) -> Consumer:
        """A consumer of ``topic`` in consumer group ``group``."""

    def close(self) -> None: ...
