"""Event bus: one interface (:mod:`.base`), the embedded durable log, and Kafka (distributed mode)."""

from __future__ import annotations

from pathlib import Path

from nonsite.pipeline.bus.base import Bus, Consumer, Message
from nonsite.pipeline.bus.embedded import EmbeddedBus


def open_bus(kind: str, data_dir: str | Path) -> Bus:
    """The bus the configuration names."""
    if kind == "embedded":
        return EmbeddedBus(Path(data_dir) / "bus" / "bus.sqlite")
    raise ValueError(f"unknown bus kind {kind!r}")


__all__ = ["Bus", "Consumer", "EmbeddedBus", "Message", "open_bus"]
