"""Evidence, bus, cases and console sections."""

from __future__ import annotations

import ipaddress
from typing import Literal

from pydantic import AwareDatetime, Field, model_validator

from nonsite.config.base import Section


class S3Config(Section):
    """An S3-compatible evidence store (MinIO, AWS S3, ...). Credentials come from the environment only."""

    endpoint: str = Field(
        "127.0.0.1:9000",
        description="host:port of the S3 API (a http:// or https:// prefix also sets `secure`); "
        "use ${NONSITE_S3_ENDPOINT} to take it from the environment.",
    )
    bucket: str = Field(
        "nonsite-evidence", pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$",
        description="Bucket of the evidence packages; created when missing.",
    )
    region: str = Field("us-east-1", description="Region of the bucket.")
    secure: bool = Field(False, description="Use HTTPS.")
    access_key_env: str = Field(
        "NONSITE_S3_ACCESS_KEY", description="Name of the environment variable holding the access key (never the key)."
    )
    secret_key_env: str = Field(
        "NONSITE_S3_SECRET_KEY", description="Name of the environment variable holding the secret key (never the key)."
    )
    object_lock: bool = Field(
        True,
        description="Create the bucket with object lock and set object retention on sealed packages where the "
        "server supports it (a warning, not an error, where it does not).",
    )
    presign_expiry_s: int = Field(
        300, ge=1, le=7 * 24 * 3600, description="Lifetime of the presigned evidence links the console hands out."
    )
    timeout_s: float = Field(10.0, gt=0, description="Connect and read timeout of one S3 request.")


class SpoolConfig(Section):
    """Where the edge keeps evidence while the store is unreachable (uploaded, then published, when it returns)."""

    path: str | None = Field(None, description="Spool directory; default DATA_DIR/spool.")
    max_bytes: int = Field(
        2 * 1024**3, ge=1024**2,
        description="Most bytes the spool holds; when full, new evidence is refused with an error log and the "
        "nonsite_evidence_spool_rejected_total metric (never dropped silently).",
    )
    retry_s: float = Field(5.0, gt=0, description="Seconds between upload attempts while the store is down.")


class RetentionConfig(Section):
    """How long evidence is kept: locked at sealing, extended for confirmed cases, deleted for dismissed ones."""

    mode: Literal["compliance", "governance"] = Field(
        "compliance",
        description="Object-lock mode (compliance: nobody, not even an administrator, can delete or shorten it).",
    )
    seal_days: int = Field(
        30, ge=0, description="Days of object retention set on every package when sealed (0: none)."
    )
    confirmed_days: int = Field(
        1825, ge=0,
        description="Days (from sealing) the retention job keeps the evidence of confirmed cases; their lock is "
        "extended to that date where the store supports it.",
    )
    dismissed_delete_after_days: int = Field(
        30, ge=0,
        description="The retention job deletes the evidence of dismissed cases this many days after dismissal "
        "(a lock still in force is reported and kept).",
    )


class TrustedKeyConfig(Section):
    """A public key whose signatures `verify`, the console and the drafter accept, pinned by fingerprint."""

    fingerprint: str = Field(
        pattern=r"^[0-9a-f]{64}$",
        description="sha256 fingerprint of the raw Ed25519 public key, as `nonsite evidence public-key` prints it.",
    )
    description: str = Field("", description="Whose key this is and why it is trusted (e.g. 'sealer 2026, HSM 1').")
    valid_from: AwareDatetime | None = Field(
        None, description="Packages sealed before this time (ISO 8601 with zone) are not accepted with this key.",
    )
    valid_until: AwareDatetime | None = Field(
        None, description="Packages sealed after this time are not accepted with this key (set when it is rotated "
        "out: the old packages keep verifying, new ones must carry the new key).",
    )
    public_key: str | None = Field(
        None, description="PEM file of this key (relative to DATA_DIR); default: found by fingerprint among "
        "--public-key, evidence.public_key, this node's signing key and the keys published in the store.",
    )


class EvidenceConfig(Section):
    store: Literal["local", "s3"] = Field(
        "local", description="Evidence store: local (a directory under data_dir) or s3 (MinIO / S3, see `s3`)."
    )
    path: str | None = Field(None, description="Directory of the local store; default DATA_DIR/evidence.")
    pre_roll_s: float = Field(3.0, ge=0, le=60, description="Seconds of video kept before the violation onset.")
    post_roll_s: float = Field(2.0, ge=0, le=60, description="Seconds of video recorded after confirmation.")
    max_clip_s: float = Field(
        120.0, gt=0, description="Longest stretch of an episode in its clip, up to the confirmation: a longer episode "
        "keeps its start and end. The frames after the confirmation (post_roll_s, and any wait for the second "
        "overview still) follow whole."
    )
    jpeg_quality: int = Field(92, ge=50, le=100, description="JPEG quality of stills.")
    clip_preset: Literal["ultrafast", "superfast", "veryfast", "faster", "fast", "medium"] = Field(
        "superfast",
        description="x264 preset of clip.mp4 (quality is fixed by CRF 21, no B-frames; a faster preset makes a "
        "larger file). "
        "Measured on 75 moving 1080p frames on 2 cores: veryfast 4.5 CPU s and 4.7 MB, superfast 2.5 s and "
        "6.3 MB, ultrafast 1.3 s and 9.1 MB. The clip is encoded on the edge box when a violation is published, "
        "so a slower preset takes CPU from the cameras and delays alerts that come together.",
    )
    pre_roll_jpeg_quality: int = Field(
        85, ge=50, le=100,
        description="JPEG quality of the frames each camera keeps for its clips (the pre-roll ring buffer, then "
        "the episode's frames): they are re-encoded to H.264 for clip.mp4, so above ~85 only costs memory "
        "(about a quarter more per frame at 92) and encoding time. Stills use jpeg_quality.",
    )
    pre_roll_max_mb: float = Field(
        64.0, gt=0, le=4096,
        description="Most memory (MiB of JPEGs) one camera's pre-roll ring buffer may hold; the oldest frames go "
        "first when it is full. pre_roll_s of frames normally needs far less (5 fps 1080p: about 3 MiB for 3 s); "
        "this caps a camera whose frames are huge or whose fps is high. Clips then start later than pre_roll_s "
        "before the onset.",
    )
    min_still_gap_s: float = Field(
        10.0, ge=0, le=600,
        description="Two-stage evidence (GA/T 832): a further overview still (role overview_2) is taken this "
        "many seconds after the onset still while the object stays, so two overview stills of a standing "
        "object lie at least this far apart; when the dwell is shorter, publishing waits for it (or for the "
        "object to leave). 0 switches it off.",
    )
    signing_key: str | None = Field(
        None,
        description="Ed25519 private key file (PEM) that signs manifests; default DATA_DIR/keys/signing.pem, "
        "created on first use.",
    )
    public_key: str | None = Field(
        None,
        description="The sealer's public key (PEM) that `verify` and the console check signatures with, when the "
        "sealer runs elsewhere; default: this node's key, else the key the sealer published in the store.",
    )
    trusted_keys: list[TrustedKeyConfig] = Field(
        default_factory=list,
        description="The signing keys whose seals are accepted, pinned by fingerprint, each with an optional "
        "validity period (key rotation: add the new key, set valid_until on the old one). Empty: only this node's "
        "own signing key, evidence.public_key or --public-key is trusted (never a bare public-key file), and "
        "verify says the key is not pinned.",
    )
    s3: S3Config = Field(default_factory=S3Config, description="The S3 store (when store is s3).")
    spool: SpoolConfig = Field(default_factory=SpoolConfig, description="Edge spool for store outages (s3).")
    retention: RetentionConfig = Field(default_factory=RetentionConfig, description="Evidence retention.")


class KafkaConfig(Section):
    """The Kafka cluster of the distributed mode (any Kafka-protocol broker)."""

    bootstrap_servers: str = Field(
        "127.0.0.1:9092",
        description="Comma-separated host:port list; use ${NONSITE_KAFKA_BOOTSTRAP} to take it from the environment.",
    )
    client_id: str = Field("nonsite", description="Client id prefix (the role is appended).")
    partitions: int = Field(6, ge=1, le=10000, description="Partitions of each topic created at start.")
    replication_factor: int = Field(1, ge=1, le=16, description="Replication factor of each topic created at start.")
    retention_hours: float = Field(
        168.0, gt=0, description="retention.ms of the violations, evidence and cases topics, in hours."
    )
    dead_letter_retention_hours: float = Field(
        720.0, gt=0, description="retention.ms of the dead-letter topic, in hours."
    )
    create_topics: bool = Field(True, description="Create missing topics at start with the admin client.")
    max_message_bytes: int = Field(
        1024**2, ge=1024, description="Largest message published (events are small: media never rides the bus)."
    )
    publish_timeout_s: float = Field(
        10.0, gt=0, description="How long a publish waits for the broker's ack before it spools to the outbox."
    )
    session_timeout_ms: int = Field(
        10000, ge=1000, description="Consumer-group session timeout (a dead member's partitions move after it)."
    )
    outbox_path: str | None = Field(
        None, description="Directory of the durable outbox (events waiting for the broker); default DATA_DIR/bus."
    )
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="Kafka security protocol."
    )
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        None, description="SASL mechanism (with SASL_* protocols)."
    )
    sasl_username_env: str = Field(
        "NONSITE_KAFKA_USERNAME", description="Name of the environment variable holding the SASL user name."
    )
    sasl_password_env: str = Field(
        "NONSITE_KAFKA_PASSWORD",
        description="Name of the environment variable holding the SASL password (never logged).",
    )
    ssl_cafile: str | None = Field(None, description="CA bundle that signs the brokers' certificates (SSL).")

    @model_validator(mode="after")
    def _sasl(self) -> KafkaConfig:
        if self.security_protocol.startswith("SASL") and self.sasl_mechanism is None:
            raise ValueError(f"security_protocol {self.security_protocol} needs sasl_mechanism "
                             "(PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512)")
        return self


class BusConfig(Section):
    kind: Literal["embedded", "kafka"] = Field(
        "embedded", description="embedded: a durable log in DATA_DIR/bus; kafka: the cluster in `kafka`."
    )
    kafka: KafkaConfig = Field(default_factory=KafkaConfig, description="Kafka settings (when kind is kafka).")


class RecheckConfig(Section):
    """Camera re-check before closing (docs/recheck.md): when a case is reported rectified, the camera that saw the
    violation checks the zone; the reviewer closes on a clear zone, a case whose object is still there goes back to
    the team."""

    enabled: bool = Field(
        False, description="Ask the camera to re-check the zone whenever a case is reported rectified (field officer "
        "or console feedback); off: cases close as before, without a re-check.")
    clear_s: float = Field(
        30.0, gt=0, le=3600, description="Seconds the zone must stay free of the violating object for 'clear'.")
    timeout_s: float = Field(
        600.0, gt=0, le=86400, description="Seconds the camera watches at most; an object still seen then is 'present' "
        "and the case goes back to the team.")
    answer_grace_s: float = Field(
        120.0, ge=0, le=86400, description="Seconds after the timeout the case waits for the camera side's answer; "
        "with none by then the re-check counts as 'unavailable' (the reviewer may close with a reason).")
    min_confidence: float = Field(
        0.25, ge=0, le=1, description="Detections below this confidence do not count as the object.")
    match_box: bool = Field(
        True, description="Only objects overlapping the original object's box count (a neighbour elsewhere in the "
        "zone does not keep the case open); off: any object of the classes in the zone counts.")
    types: list[str] = Field(
        default_factory=list, description="Violation types to re-check (e.g. [sidewalk_parking, street_vending]); "
        "empty: every type.")


class CasesConfig(Section):
    database_url: str | None = Field(
        None, description="SQLAlchemy URL of the case database; default sqlite:///DATA_DIR/cases.db."
    )
    number_prefix: str = Field("NS", pattern=r"^[A-Z0-9-]{1,12}$", description="Prefix of case numbers.")
    legal_basis: str | None = Field(
        None,
        description="The city's legal-basis catalogue (YAML: provisions, penalties, discretion table per violation "
        "type); default: the shipped cases/legal_basis.yaml. Relative paths are relative to the config file.",
    )
    organisation: str | None = Field(
        None,
        description="The bureau's organisation (YAML: districts, streets, grids, teams; see examples/organisation.yaml "
        "and cases/organisation.py): who a new case is routed to. Relative paths are relative to the config file.",
    )
    document_font: str | None = Field(
        None,
        description="TrueType font with Chinese glyphs embedded in case PDFs; default: the Debian package "
        "fonts-wqy-zenhei. Relative paths are relative to the config file.",
    )
    documents: str | None = Field(
        None,
        description="Folder of the city's enforcement-document templates (documents.yaml and one .txt per kind, as "
        "cases/templates/documents; `nonsite documents check`); default: the shipped templates. Relative paths are "
        "relative to the config file.",
    )
    reminders: bool = Field(
        False,
        description="Run the reminder job in the console process: every `reminder_interval_s` it plans the reminders "
        "before each open step's deadline and the escalations after it (docs/bureau.md), shows them in the console "
        "(the bell, /notifications) and sends them to integration.notifications' channels when configured. Off: run "
        "`nonsite reminders run --once` from a timer instead.",
    )
    reminder_interval_s: float = Field(
        60.0, gt=0, le=3600, description="Seconds between two rounds of the reminder job (default one minute).")
    recheck: RecheckConfig = Field(
        default_factory=RecheckConfig, description="Camera re-check before closing a rectified case (docs/recheck.md).")


class ConsoleConfig(Section):
    host: str = Field("127.0.0.1", description="Address the console listens on.")
    port: int = Field(8080, ge=0, le=65535, description="Port of the console (0 picks a free one).")
    language: Literal["zh", "en"] = Field("zh", description="Default console language.")
    secure_cookies: bool | None = Field(
        None,
        description="Mark the session cookie Secure, so browsers send it over HTTPS only (put the console behind "
        "TLS). Default: on when `host` is not a loopback address, off on loopback (127.0.0.1, ::1, localhost).",
    )
    metrics_token_env: str | None = Field(
        None, pattern=r"^[A-Z_][A-Z0-9_]{0,127}$",
        description="Name of an environment variable holding a bearer token that reads the detailed /metrics "
        "and /readyz (what Prometheus sends: `authorization: {credentials_file: ...}`). Without it only an "
        "admin's session or an API token with the scope metrics:read sees them; others get 401 from /metrics "
        "and the bare status from /readyz.",
    )

    def cookies_secure(self) -> bool:
        """``secure_cookies``, or its default for ``host``: Secure unless the console listens on loopback."""
        if self.secure_cookies is not None:
            return self.secure_cookies
        host = self.host.strip().strip("[]").lower()
        if host == "localhost":
            return False
        try:
            return not ipaddress.ip_address(host).is_loopback
        except ValueError:  # a host name: assume it is reachable from elsewhere
            return True
