"""Prometheus metrics of the evidence store path (defined once at import on the default registry)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

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
SPOOL_MAX_BYTES = Gauge(
    "nonsite_evidence_spool_max_bytes", "Configured capacity of the edge spool (evidence.spool.max_bytes)."
)
WRITE_SECONDS = Histogram(
    "nonsite_evidence_write_seconds", "Seconds one evidence blob took to be written durably to the store.",
    ["store"], buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
VERIFIED = Counter(
    "nonsite_evidence_verify",
    "Evidence packages verified (hashes, signature, nothing extra), by result: ok or failed. The sealer "
    "verifies every package it seals; console views and `nonsite evidence verify` count too.",
    ["result"],
)
