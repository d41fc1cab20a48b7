"""Prometheus metrics of the bus: outbox depth, broker reachability, consumer lag, dead letters.

Defined once at import on the default registry (importing this module twice, or opening many buses in one
process, registers nothing twice). Per-instance series are labelled by ``client`` (the Kafka client id of
the publisher or consumer) and removed when that instance closes.
"""

from __future__ import annotations

import contextlib

from prometheus_client import Counter, Gauge

OUTBOX_DEPTH = Gauge(
    "nonsite_bus_outbox_depth",
    "Messages in the local durable outbox waiting for the broker's acknowledgement.",
    ["client"],
)
BROKER_UP = Gauge(
    "nonsite_bus_broker_up",
    "1 while the last exchange with the Kafka broker succeeded, 0 while it is unreachable.",
    ["client"],
)
PUBLISHED = Counter(
    "nonsite_bus_published_total", "Messages the broker acknowledged (acks=all).", ["topic"]
)
SPOOLED = Counter(
    "nonsite_bus_spooled_total", "Messages that went to the local outbox because the broker was not reachable.",
    ["topic"],
)
CONSUMER_LAG = Gauge(
    "nonsite_bus_consumer_lag",
    "Messages in the partitions this consumer owns that its group has not committed yet.",
    ["topic", "group", "client"],
)
DEAD_LETTERS = Counter(
    "nonsite_bus_dead_letters_total", "Messages a consumer rejected to the dead-letter topic.", ["topic", "group"]
)


def forget(gauge: Gauge, *labels: str) -> None:
    """Drop one labelled series (an instance that closed); absent series are fine."""
    with contextlib.suppress(KeyError):
        gauge.remove(*labels)
