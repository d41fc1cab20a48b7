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


class GatingConfig(Section):
    """Motion-gated detection: a still scene is detected at a keep-alive rate, a moving one at the camera's fps."""

    enabled: bool = Field(
        True, description="Run the detector on a sampled frame only when the picture changed in or near the zones "
        "since the last frame the detector saw, or keepalive_s passed; the other frames reuse the last detections "
        "(tracks, dwell clocks and evidence carry on by timestamp). Off = every sampled frame is detected.",
    )
    keepalive_s: float = Field(
        2.0, gt=0, le=60,
        description="While the scene is still, detect at least once every this many seconds (video time). An alert "
        "is late by at most this much when a change too small for the gate matters to a rule.",
    )
    hold_s: float = Field(
        1.0, ge=0, le=60,
        description="After a change, keep detecting every frame for this many seconds (an object that just stopped "
        "gets its track confirmed and its position settled before the gate closes).",
    )
    width: int = Field(
        160, ge=32, le=640, description="Width in pixels of the small grey frame the change is measured on.")
    pixel_threshold: float = Field(
        15.0, gt=0, le=255,
        description="A pixel of the small blurred grey frame counts as changed when it differs from the last "
        "detected frame by more than this many grey levels (0-255); above sensor and compression noise.",
    )
    min_changed: float = Field(
        0.001, gt=0, le=1,
        description="Share of the region's pixels that must change to count as motion (0.001 of a 160x90 frame = "
        "about 14 pixels: a person far away).",
    )
    margin: float = Field(
        0.15, ge=0, le=1,
        description="The region watched is the bounding box of the camera's zones grown by this share of the "
        "frame's width and height on each side (objects near a zone matter to its rules); no zones = whole frame.",
    )


class EdgeConfig(Section):
    max_batch: int = Field(
        0, ge=0, le=64,
        description="Most frames (from different cameras, round-robin) in one detector call; 0 = the backend's "
        "own preference (4 for OpenVINO and ONNX Runtime on CPU, 8 on CUDA, 1 for PyTorch on CPU; see bench/).",
    )
    queue_frames: int = Field(
        2, ge=1, le=64,
        description="Frames waiting per camera between its reader and the detector. Live cameras drop the "
        "oldest when it is full (latest-frame semantics, counted as dropped); files wait instead, and the "
        "file cameras together may read ahead two batches (2 x max_batch frames, shared among them; at least "
        "this many each).",
    )
    writer_queue: int = Field(
        32, ge=1, le=1024,
        description="Evidence packages (a violation's stills and clip frames) waiting for the package writer, which "
        "writes them off the detection loop; past it, the loop waits for the writer (memory stays bounded when "
        "cameras confirm faster than the box can encode clips).",
    )
    writer_threads: int = Field(
        2, ge=1, le=16,
        description="Threads writing evidence packages side by side (several cameras confirming at once, or one "
        "camera confirming several objects), and as many again for the work done while packages wait (their "
        "clips' frames, plate readings); a camera's packages still get their sequence numbers and are published "
        "in order.",
    )
    writer_nice: int = Field(
        10, ge=0, le=19,
        description="Niceness added to the package writer's thread (Linux; 0 = as the rest of the edge): "
        "writing a package may wait a second, a camera's next frame may not, so on a busy box detection comes "
        "first and packages are written with the CPU left over.",
    )
    reload: bool = Field(
        True,
        description="Watch the config file while running and apply changes to cameras: without restarting the "
        "others (added, removed, changed; a zones-only change does not even reconnect). SIGHUP applies at once.",
    )
    reload_poll_s: float = Field(
        2.0, gt=0, le=3600, description="How often the config file is checked for changes, in seconds."
    )
    gating: GatingConfig = Field(
        default_factory=GatingConfig,
        description="Motion-gated detection: the detector runs at full rate while things move in or near the zones "
        "and at a keep-alive rate while the scene is still (a camera's gating: overrides enabled).",
    )
    metrics: MetricsConfig = Field(
        default_factory=MetricsConfig,
        description="`nonsite edge`: where it serves /metrics, /healthz and /readyz; unset port = not served "
        "(`--metrics-port` overrides). `nonsite run` uses the top-level metrics: section.",
    )



class ViewGuardConfig(Section):
    """Camera view guard: rules pause while a camera looks elsewhere than where its zones were drawn."""

    enabled: bool = Field(
        True, description="Compare each camera's view with the reference snapshot taken when its zones were saved "
        "or loaded (kept in DATA_DIR/edge/views/<camera>/); pause the camera's rules while it looks elsewhere "
        "(a dome camera on another preset, a knocked camera). Cameras without zones are not checked.",
    )
    check_interval_s: float = Field(
        5.0, gt=0, le=3600, description="Seconds between two checks of a camera's view (one small grey frame).")
    confirm_checks: int = Field(
        2, ge=1, le=100,
        description="Checks in a row that must agree before the state changes (a bus passing in front of the lens "
        "is not a moved camera). The time to notice a move is about check_interval_s x confirm_checks.",
    )
    width: int = Field(320, ge=64, le=1920, description="Width in pixels of the grey frame the check works on.")
    features: int = Field(1000, ge=50, le=5000, description="ORB features found per frame.")
    min_inliers: int = Field(
        15, ge=4, description="Least number of features that must agree with one homography for the view to match.")
    min_inlier_ratio: float = Field(
        0.2, ge=0, le=1, description="... and least fraction of the matched features that agree with it.")
    still_shift: float = Field(
        0.025, ge=0, le=1,
        description="A view whose points moved by at most this fraction of the frame diagonal has not moved.",
    )
    reregister_max_shift: float = Field(
        0.08, ge=0, le=1,
        description="A view that moved by more than still_shift and at most this fraction of the diagonal is "
        "re-registered: the zones follow it through the homography and the rules go on (logged, shown on the "
        "camera page as 'shifted'). Further than this, or no match at all: 'view moved', the rules pause. "
        "0 = never re-register.",
    )
