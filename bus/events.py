"""Event contracts that cross the bus (importable without detection code: pydantic only).

Topics:
- ``nonsite.violations``: :class:`ViolationEvent`, published by an edge worker after its blobs are stored.
- ``nonsite.evidence``: :class:`EvidenceSealed`, published by the sealer after the manifest is signed.
- ``nonsite.cases``: :class:`CaseDecision`, published when a case changes status.
- ``nonsite.recheck``: :class:`RecheckRequest`, published (through the case database's outbox) when a case is
  reported rectified: the camera that saw the violation checks its zone again (docs/recheck.md). The answer is
  an *after* evidence package: a :class:`ViolationEvent` whose ``recheck`` block (:class:`RecheckResult`) says
  the outcome, sealed and signed like every package and announced on ``nonsite.evidence``.
- ``nonsite.cameras``: :class:`CameraState`, published by edges and pool workers every few seconds per camera they
  run (health, applied zones, now and then a small snapshot); short retention, read by standalone consoles.
- ``nonsite.camera-control``: :class:`CameraZonesCommand`, published by a console when an operator saves a camera's
  zones; every edge / pool worker that has the camera applies it (the one running it, live).
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

SCHEMA_VERSION = 1

TOPIC_VIOLATIONS = "nonsite.violations"
TOPIC_EVIDENCE = "nonsite.evidence"
TOPIC_CASES = "nonsite.cases"
TOPIC_DEAD_LETTER = "nonsite.dead-letter"
TOPIC_RECHECK = "nonsite.recheck"
TOPIC_CAMERAS = "nonsite.cameras"
TOPIC_CAMERA_CONTROL = "nonsite.camera-control"

def _utc(v: datetime) -> datetime:
    if v.tzinfo is None:
        raise ValueError("timestamps must carry a time zone (UTC)")
    return v.astimezone(UTC)


UtcDatetime = Annotated[datetime, AfterValidator(_utc)]

#: Characters a store key may use (each '/'-separated part also must not be empty, '.' or '..').
STORE_KEY_CHARSET = "A-Za-z0-9._/-"
_STORE_KEY = re.compile(rf"^[{STORE_KEY_CHARSET}]{{1,512}}$")


def check_store_key(key: str) -> str:
    """``key`` if it can only name a blob inside the evidence store, else ValueError saying why.

    A key is relative ('/'-separated, no leading '/'), has no empty, '.' or '..' part, at most 512 characters of
    letters, digits, '.', '_', '-' and '/'. Checked at the contract, so a poisoned event is rejected (and
    dead-lettered) before any consumer touches the store with it.
    """
    if not isinstance(key, str) or not _STORE_KEY.match(key):
        raise ValueError(
            f"store key {key!r} must be 1-512 characters of letters, digits, '.', '_', '-' and '/' "
            "(e.g. events/<event_id>/onset.jpg)"
        )
    if key.startswith("/") or any(part in ("", ".", "..") for part in key.split("/")):
        raise ValueError(f"store key {key!r} must be relative, without empty, '.' or '..' parts")
    return key


StoreKey = Annotated[str, AfterValidator(check_store_key)]


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_event_id() -> str:
    return str(uuid.uuid4())


class _Event(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EvidenceItem(_Event):
    """One stored artifact of an evidence package."""

    role: str = Field(
        description="onset | confirm (overview stills, originals), onset_annotated | confirm_annotated, "
        "closeup, clip, manifest, signature"
    )
    key: StoreKey = Field(
        description="Key of the blob in the evidence store: relative, '/'-separated, no '.' or '..' parts, "
        "letters, digits, '.', '_', '-' only (e.g. events/<event_id>/onset.jpg)."
    )
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="Hex sha256 of the blob's bytes.")
    bytes: int = Field(ge=0, description="Size of the blob.")
    content_type: str = Field(description="MIME type, e.g. image/jpeg or video/mp4.")


class BoxRecord(_Event):
    """A box drawn on a still, in pixels of that still."""

    xyxy: tuple[float, float, float, float] = Field(description="x1, y1, x2, y2 in pixels.")
    class_name: str = Field(description="Detector class name.")
    confidence: float = Field(ge=0, le=1, description="Detector confidence.")
    track_id: int | None = Field(None, description="Tracker id, when tracked.")


class ModelInfo(_Event):
    name: str = Field(description="Registry name of the detector weights.")
    version: str = Field(description="Version of the weights.")
    sha256: str = Field(description="sha256 of the weights file.")
    backend: str = Field("", description="Backend that ran it (onnx, ultralytics, ...).")


class Location(_Event):
    address: str = Field("", description="Street address of the camera.")
    lat: float | None = Field(None, description="Latitude (WGS84).")
    lon: float | None = Field(None, description="Longitude (WGS84).")


class OffenderHint(_Event):
    """What identifies the offender, when it could be read (never invented)."""

    plate: str | None = Field(None, description="Licence plate text as read, matching a configured plate format.")
    plate_confidence: float | None = Field(None, ge=0, le=1, description="OCR confidence of the plate text.")
    plate_format: str | None = Field(None, description="Name of the plate format it matched (e.g. cn_standard).")
    plate_role: str | None = Field(None, description="Evidence role of the plate crop (e.g. plate).")


#: Outcomes of a camera re-check: the zone stayed clear for ``clear_s``; the object was still seen at the timeout;
#: the camera could not look (not running here, failed, removed while watching).
RECHECK_OUTCOMES: tuple[str, ...] = ("clear", "present", "unavailable")
_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"


def _pixel_boxes(v: list[tuple[float, float, float, float]]) -> list[tuple[float, float, float, float]]:
    for x1, y1, x2, y2 in v:
        if not (0 <= x1 < x2 <= 100_000 and 0 <= y1 < y2 <= 100_000):
            raise ValueError("each box must be pixels x1 < x2, y1 < y2, from 0 to 100000")
    return v


class RecheckResult(_Event):
    """The ``recheck`` block of an *after* package: which request it answers and what the camera saw."""

    request_id: str = Field(pattern=_ID_PATTERN, description="The RecheckRequest's request_id it answers.")
    case_number: str = Field(max_length=40, description="Case number the request was for.")
    outcome: Literal["clear", "present", "unavailable"] = Field(
        description="clear: no object of the classes in the zone for clear_s; present: still seen at the timeout; "
        "unavailable: the camera could not look (detail says why)."
    )
    watched_from: UtcDatetime = Field(description="First frame the check looked at (the request's time when none).")
    clear_since: UtcDatetime | None = Field(
        None, description="Start of the clear stretch that decided 'clear' (None for the other outcomes).")
    observed_at: UtcDatetime = Field(description="Frame (or instant) that decided the outcome.")
    frames: int = Field(0, ge=0, description="Frames the check looked at.")
    detail: str = Field("", max_length=500, description="Why, in words (e.g. why the camera was unavailable).")


class RecheckRequest(_Event):
    """Published to ``nonsite.recheck`` (key = camera id): look at the case's zone until it stays clear."""

    schema_version: Literal[1] = Field(SCHEMA_VERSION, description="Schema version of this event.")
    request_id: str = Field(
        pattern=_ID_PATTERN, description="UUID; the idempotency key, and the event id of the after package.")
    case_number: str = Field(max_length=40, description="Case number the re-check is for.")
    camera_id: str = Field(min_length=1, max_length=128, description="Camera that saw the violation.")
    zone_id: str = Field(min_length=1, max_length=128, description="Zone of that camera the violation was in.")
    violation_type: str = Field(pattern=r"^[a-z][a-z0-9_]{0,63}$", description="The case's violation type.")
    classes: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(
        min_length=1, max_length=32,
        description="Detector classes that count as the violating object (those of the original boxes).")
    boxes_px: Annotated[list[tuple[float, float, float, float]], AfterValidator(_pixel_boxes)] = Field(
        default_factory=list, max_length=32,
        description="The original objects' boxes, pixels x1, y1, x2, y2 of the camera's frames (its confirmation "
        "still); when given, only objects overlapping one of them count (a neighbour elsewhere in the zone does not "
        "keep the case open). Empty: any object of the classes in the zone counts.")
    clear_s: float = Field(gt=0, le=3600, description="Seconds the zone must stay free of the object.")
    timeout_s: float = Field(gt=0, le=86400, description="Seconds to watch at most before answering 'present'.")
    min_confidence: float = Field(0.25, ge=0, le=1, description="Detections below this confidence are ignored.")
    requested_at: UtcDatetime = Field(default_factory=utcnow, description="When the case asked (UTC).")


class ViolationEvent(_Event):
    """Published to ``nonsite.violations`` (key = camera id) once the edge has stored the blobs."""

    schema_version: Literal[1] = Field(SCHEMA_VERSION, description="Schema version of this event.")
    event_id: str = Field(default_factory=new_event_id, description="UUID; the idempotency key.")
    type: str = Field(
        pattern=r"^[a-z][a-z0-9_]{0,63}$",
        description="Violation type: the name of a registered type (sidewalk_parking, street_vending, stray_dog "
        "or one added later), lower-case letters, digits and '_'.",
    )
    camera_id: str = Field(description="Camera that saw it.")
    camera_name: str = Field("", description="Human name of the camera.")
    zone_id: str = Field(description="Zone the violation happened in.")
    zone_name: str = Field("", description="Human name of the zone.")
    started_at: UtcDatetime = Field(description="Onset of the violating condition (UTC).")
    confirmed_at: UtcDatetime = Field(description="When the dwell was reached (UTC).")
    track_ids: list[int] = Field(description="Tracker ids of the objects involved.")
    boxes: dict[str, list[BoxRecord]] = Field(description="Boxes per still role (onset, confirm).")
    confidence: float = Field(ge=0, le=1, description="Mean detector confidence of the main object.")
    dwell_s: float = Field(ge=0, description="Seconds from onset to confirmation.")
    model: ModelInfo = Field(description="Detector that produced it.")
    rule_config_hash: str = Field(description="sha256 of the rule and zone configuration in force.")
    evidence: list[EvidenceItem] = Field(description="The stored blobs of the package.")
    location: Location = Field(default_factory=Location, description="Where the camera stands.")
    offender_hint: OffenderHint | None = Field(None, description="Plate read from the close-up, when one was read.")
    recheck: RecheckResult | None = Field(
        None, description="Set on an *after* package only: the answer to a RecheckRequest (the case is not drafted "
        "again; the drafter links the package to the case).")
    published_at: UtcDatetime = Field(default_factory=utcnow, description="When the edge published it.")


class EvidenceSealed(_Event):
    """Published to ``nonsite.evidence`` once the sealer verified the blobs and signed the manifest."""

    schema_version: Literal[1] = Field(SCHEMA_VERSION, description="Schema version of this event.")
    event_id: str = Field(description="The violation's event id.")
    violation: ViolationEvent = Field(description="The violation event as received.")
    manifest_key: StoreKey = Field(description="Store key of manifest.json (a store key, as evidence keys).")
    manifest_sha256: str = Field(description="sha256 of manifest.json.")
    signature_key: StoreKey = Field(
        description="Store key of the detached Ed25519 signature over manifest.json (a store key, as evidence keys)."
    )
    public_key_fingerprint: str = Field(description="sha256 of the raw Ed25519 public key that verifies it.")
    sealed_at: UtcDatetime = Field(default_factory=utcnow, description="When it was sealed.")
    problems: list[str] = Field(
        default_factory=list, description="Blobs that were missing or did not match their sha256 when sealed."
    )


class CaseDecision(_Event):
    """Published to ``nonsite.cases`` when a case changes status."""

    schema_version: Literal[1] = Field(SCHEMA_VERSION, description="Schema version of this event.")
    case_number: str = Field(description="Case number.")
    event_id: str = Field(description="Violation event id.")
    status: str = Field(description="New status.")
    previous_status: str = Field(description="Status before.")
    actor: str = Field(description="User who acted.")
    reason: str = Field("", description="Reason or comment.")
    at: UtcDatetime = Field(default_factory=utcnow, description="When.")


#: Largest snapshot (JPEG bytes, before base64) a camera state may carry: the bus is for small messages.
MAX_SNAPSHOT_BYTES = 200_000
_B64_LIMIT = (MAX_SNAPSHOT_BYTES * 4) // 3 + 4
_CAMERA_ID = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"


class ViewChangeState(_Event):
    ts: float = Field(description="When the view guard's state changed (unix seconds).")
    state: Literal["ok", "shifted", "moved"] = Field(description="The state it entered.")
    message: str = Field("", max_length=1000, description="English, for the log and the API.")


class ViewState(_Event):
    """The camera view guard's verdict, as :class:`nonsite.ops.cameras.ViewStatus` (a camera's view checked against
    the reference snapshot of its zones)."""

    state: Literal["ok", "shifted", "moved"] = Field(description="ok | shifted (zones re-registered) | moved (rules "
                                                     "paused).")
    since: float | None = Field(None, description="Since when (unix seconds).")
    shift: float | None = Field(None, description="Movement at the last check, fraction of the frame diagonal.")
    inliers: int | None = Field(None, description="Feature matches that agree with the movement.")
    matches: int | None = Field(None, description="Feature matches found.")
    reference_taken_at: float | None = Field(None, description="When the reference snapshot was taken.")
    changes: list[ViewChangeState] = Field(default_factory=list, max_length=50,
                                           description="The latest state changes, newest first.")
    changes_by_state: dict[str, int] = Field(default_factory=dict, description="Times each state was entered.")


class CameraState(_Event):
    """Published to ``nonsite.cameras`` (key = camera id) by the edge or pool worker running the camera: every
    ``camera_status.interval_s`` seconds and at once on a change; every ``camera_status.snapshot_interval_s``
    seconds it carries a downscaled JPEG of the latest frame. Never a password: ``last_error`` is masked."""

    schema_version: Literal[1] = Field(SCHEMA_VERSION, description="Schema version of this message.")
    camera_id: str = Field(pattern=_CAMERA_ID, description="The camera.")
    camera_name: str = Field("", max_length=256, description="Human name of the camera.")
    address: str = Field("", max_length=512, description="Street address of the camera.")
    worker_id: str = Field(min_length=1, max_length=256, description="The edge or pool worker that runs it now.")
    state: Literal["connecting", "up", "down", "finished", "disabled"] = Field(
        description="The camera's connection: connecting | up | down | finished (a file ended) | disabled.")
    fps: float = Field(ge=0, description="Frames processed per second over the last minute.")
    last_frame_ts: float | None = Field(None, description="Wall-clock time of the latest frame (unix seconds).")
    reconnects: int = Field(0, ge=0, description="Reconnections since the camera started on this worker.")
    last_error: str | None = Field(None, max_length=2000, description="The latest error, credentials masked.")
    zones: list[dict[str, Any]] = Field(default_factory=list, max_length=256,
                                        description="The zones the worker applies now (config form).")
    zone_revision: int = Field(0, ge=0, description="Revision of the last zone command applied to this camera "
                               "(0: the zones of the worker's config file at its start).")
    zone_error: str | None = Field(None, max_length=2000, description="Why the latest zone command was refused "
                                   "by the worker (None: it was applied, or none came).")
    zone_error_revision: int = Field(0, ge=0, description="Revision of the refused zone command (0: none).")
    view: ViewState | None = Field(None, description="The view guard's verdict (None: not checked).")
    interval_s: float = Field(gt=0, description="How often the worker publishes this camera's state.")
    snapshot_jpeg: str | None = Field(None, max_length=_B64_LIMIT, description="Base64 JPEG of the latest frame, "
                                      f"downscaled, at most {MAX_SNAPSHOT_BYTES} bytes (on some messages only).")
    snapshot_ts: float | None = Field(None, description="Time of the snapshot's frame (unix seconds).")
    reference_jpeg: str | None = Field(None, max_length=_B64_LIMIT, description="Base64 JPEG of the view guard's "
                                       "reference snapshot (when it changed, and now and then).")
    published_at: UtcDatetime = Field(default_factory=utcnow, description="When the worker published it.")


class CameraZonesCommand(_Event):
    """Published to ``nonsite.camera-control`` (key = camera id) by a console once the operator's zones are saved in
    its config file (the source of truth): every edge / pool worker that has the camera writes them into its own
    config file, if it has one, and the worker running it applies them live. Idempotent by ``command_id``; a
    worker skips a revision not above the one it applied."""

    schema_version: Literal[1] = Field(SCHEMA_VERSION, description="Schema version of this message.")
    command_id: str = Field(default_factory=new_event_id, pattern=r"^[0-9a-f-]{36}$",
                            description="UUID; the idempotency key.")
    camera_id: str = Field(pattern=_CAMERA_ID, description="The camera whose zones change.")
    zones: list[dict[str, Any]] = Field(max_length=256, description="The camera's complete new zones, as the "
                                        "console's zone editor saved them (config form).")
    revision: int = Field(ge=1, description="Increasing revision of this camera's zones (the console's clock in "
                          "milliseconds when it saved them).")
    issued_by: str = Field("", max_length=256, description="The console (host) that saved them.")
    issued_at: UtcDatetime = Field(default_factory=utcnow, description="When.")
