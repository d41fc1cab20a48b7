"""How the edge runs many cameras on one box (batching, queues, live reload) and where it publishes metrics."""

from __future__ import annotations

from pydantic import Field

from nonsite.config.base import Section


class MetricsConfig(Section):
    port: int | None = Field(
        None, ge=0, le=65535,
        description="Serve Prometheus metrics on http://HOST:PORT/metrics (0 picks a free port); "
        "unset = not served on a port of their own.",
    )
    host: str = Field("127.0.0.1", description="Address the metrics endpoint listens on.")


class EdgeConfig(Section):
    max_batch: int = Field(
        0, ge=0, le=64,
        description="Most frames (from different cameras, round-robin) in one detector call; 0 = the backend's "
        "own preference (4 for OpenVINO and ONNX Runtime on CPU, 8 on CUDA, 1 for PyTorch on CPU; see bench/).",
    )
    queue_frames: int = Field(
        2, ge=1, le=64,
        description="Frames waiting per camera between its reader and the detector. Live cameras drop the "
        "oldest when it is full (latest-frame semantics, counted as dropped); files wait instead (and may "
        "read ahead up to the batch size).",
    )
    reload: bool = Field(
        True,
        description="Watch the config file while running and apply changes to cameras: without restarting the "
        "others (added, removed, changed; a zones-only change does not even reconnect). SIGHUP applies at once.",
    )
    reload_poll_s: float = Field(
        2.0, gt=0, le=3600, description="How often the config file is checked for changes, in seconds."
    )
    metrics: MetricsConfig = Field(
        default_factory=MetricsConfig,
        description="`nonsite edge`: where it serves /metrics, /healthz and /readyz; unset port = not served "
        "(`--metrics-port` overrides). `nonsite run` uses the top-level metrics: section.",
    )

