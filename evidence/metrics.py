"""Prometheus metrics of the evidence store path (defined once at import on the default registry)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

STORE_UP = Gauge(
    "nonsite_evidence_store_up", "1 while the evidence store accepts writes from this edge, 0 while it does not."
)
SPOOL_BYTES = Gauge("nonsite_evidence_spool_bytes", "Bytes of evidence waiting in the edge spool for the store.")
SPOOL_BLOBS = Gauge("nonsite_evidence_spool_blobs", "Evidence blobs waiting in the edge spool for the store.")
SPOOL_EVENTS = Gauge(
    "nonsite_evidence_spool_events",
    "Violation events held back until their spooled evidence is in the store (claim-check).",
)
SPOOL_FULL = Gauge(
    "nonsite_evidence_spool_full", "1 when the last spool write was refused because the spool is full."
)
SPOOL_REJECTED = Counter(
    "nonsite_evidence_spool_rejected_total",
    "Evidence blobs refused because the spool was full while the store was down (the event is not kept).",
)
UPLOADED = Counter("nonsite_evidence_spool_uploaded_total", "Spooled blobs uploaded once the store returned.")
