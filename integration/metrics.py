"""Prometheus metrics of the platform hand-off and the notifications (default registry, defined once)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

PLATFORM_ATTEMPTS = Counter(
    "nonsite_platform_attempts_total",
    "Attempts to send a case report to the city platform, by result (delivered, duplicate, retry, dead).",
    ["platform", "result"],
)
PLATFORM_REPORTS = Gauge(
    "nonsite_platform_reports",
    "Case reports in the hand-off outbox by state (pending, delivered, dead), as of the last delivery round.",
    ["platform", "state"],
)
NOTIFICATIONS = Counter(
    "nonsite_notifications_total",
    "Notification messages by channel and result (sent, failed attempt, given up).",
    ["channel", "result"],
)
