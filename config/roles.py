"""The sections of the distributed roles that run one per process: sealer, drafter and the detector pool.

(The edge's section is :mod:`nonsite.config.edge`, the console's is in :mod:`nonsite.config.services`.)
Each role serves ``/metrics``, ``/healthz`` and ``/readyz`` on the address in its ``metrics`` key.
"""

from __future__ import annotations

from pydantic import Field

from nonsite.config.base import Section
from nonsite.config.edge import MetricsConfig

_ROLE_HTTP = ("Where this role serves /metrics (Prometheus), /healthz (liveness) and /readyz (readiness); "
              "unset port = not served. `--metrics-port` overrides the port.")


class SealerConfig(Section):
    metrics: MetricsConfig = Field(default_factory=MetricsConfig, description=_ROLE_HTTP)
    verify_after_seal: bool = Field(
        True,
        description="Read every package back from the store after sealing it and verify hashes and signature "
        "(nonsite_evidence_verify_total{result}); a failure is logged as an error and alerts.",
    )


class DrafterConfig(Section):
    metrics: MetricsConfig = Field(default_factory=MetricsConfig, description=_ROLE_HTTP)


class PoolConfig(Section):
    """A central detector pool: `nonsite pool` workers share the cameras of `cameras:` through Kafka."""

    metrics: MetricsConfig = Field(default_factory=MetricsConfig, description=_ROLE_HTTP)
    topic: str = Field(
        "nonsite.assignments", pattern=r"^[A-Za-z0-9._-]{1,249}$",
        description="Kafka topic whose partitions carry the cameras: camera -> partition by the hash Kafka "
        "uses for keys (murmur2 of the camera id); workers own the cameras of the partitions the group assigns them.",
    )
    group: str = Field(
        "nonsite-pool", pattern=r"^[A-Za-z0-9._-]{1,249}$", description="Consumer group of the pool's workers."
    )
    partitions: int = Field(
        24, ge=1, le=10000,
        description="Partitions of the assignments topic (created with this many when missing): the most "
        "workers that can share the cameras; more partitions than workers spread them more evenly.",
    )
    worker_id: str | None = Field(
        None, pattern=r"^[A-Za-z0-9._-]{1,64}$",
        description="Name of this worker in logs, metrics and the assignment journal; default host name and "
        "process id. NONSITE_POOL_WORKER_ID overrides it.",
    )
    stop_timeout_s: float = Field(
        10.0, gt=0, le=120,
        description="Longest a revoked camera may take to stop (publish what it confirmed). A worker that cannot "
        "stop a camera in time exits, so the camera never runs on two workers.",
    )


class CameraStatusConfig(Section):
    """Camera status in the distributed mode: edges and pool workers publish each camera's health, zones and a small
    snapshot on ``nonsite.cameras``; a standalone console shows them and sends zone edits on
    ``nonsite.camera-control`` (docs/distributed.md, "Cameras")."""

    enabled: bool = Field(
        True, description="Publish camera status and apply zone commands (edge, pool; Kafka bus only) and show them "
        "on a standalone console's cameras page.")
    interval_s: float = Field(
        2.0, ge=0.2, le=60, description="Each camera's state is published at least this often (and at once when "
        "its state, errors or zones change).")
    snapshot_interval_s: float = Field(
        15.0, ge=1, le=600, description="A downscaled JPEG of the latest frame rides along with the state this "
        "often (a few per minute keep the bus light).")
    snapshot_width: int = Field(
        640, ge=64, le=1920, description="Snapshots wider than this are scaled down to it (aspect kept).")
    snapshot_quality: int = Field(70, ge=20, le=95, description="JPEG quality of the snapshots.")
    stale_after_s: float = Field(
        15.0, ge=1, le=3600, description="The console shows a camera as not reporting (state stale) when no state "
        "of it arrived for this long; at least three intervals of its worker are always allowed.")
