"""The whole configuration file."""

from __future__ import annotations

from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator, model_validator

from nonsite.config.base import Section
from nonsite.config.cameras import CameraConfig
from nonsite.config.clock import ClockConfig
from nonsite.config.detector import DetectorConfig, TrackerConfig
from nonsite.config.edge import EdgeConfig, MetricsConfig, ViewGuardConfig
from nonsite.config.integration import IntegrationConfig
from nonsite.config.plates import PlatesConfig
from nonsite.config.roles import CameraStatusConfig, DrafterConfig, PoolConfig, SealerConfig
from nonsite.config.rules import RulesConfig
from nonsite.config.services import BusConfig, CasesConfig, ConsoleConfig, EvidenceConfig


class NonsiteConfig(Section):
    data_dir: str = Field(
        "data", description="Where a run writes everything (bus log, evidence, database). "
        "NONSITE_DATA_DIR overrides it; relative paths are relative to the config file."
    )
    timezone: str = Field("Asia/Shanghai", description="The city's time zone for display; storage is UTC.")
    detector: DetectorConfig = Field(default_factory=DetectorConfig, description="Detector backend.")
    tracker: TrackerConfig = Field(default_factory=TrackerConfig, description="Multi-object tracker.")
    rules: RulesConfig = Field(default_factory=RulesConfig, description="Violation rules.")
    plates: PlatesConfig = Field(default_factory=PlatesConfig, description="Licence-plate reading (parking cases).")
    cameras: list[CameraConfig] = Field(default_factory=list, description="The cameras this node runs.")
    evidence: EvidenceConfig = Field(default_factory=EvidenceConfig, description="Evidence capture and store.")
    bus: BusConfig = Field(default_factory=BusConfig, description="Event bus.")
    cases: CasesConfig = Field(default_factory=CasesConfig, description="Case database.")
    console: ConsoleConfig = Field(default_factory=ConsoleConfig, description="Operators' web console.")
    edge: EdgeConfig = Field(default_factory=EdgeConfig, description="Many cameras on one box: batching, queues, "
                             "live reload of the cameras.")
    metrics: MetricsConfig = Field(
        default_factory=MetricsConfig, description="`nonsite run` (embedded mode): its Prometheus metrics endpoint."
    )
    view_guard: ViewGuardConfig = Field(
        default_factory=ViewGuardConfig,
        description="Camera view guard: the rules of a camera pause while its view does not match the reference "
        "snapshot of its zones; a small shift re-registers the zones.",
    )
    sealer: SealerConfig = Field(default_factory=SealerConfig, description="`nonsite sealer` (distributed mode).")
    drafter: DrafterConfig = Field(default_factory=DrafterConfig, description="`nonsite drafter` (distributed mode).")
    pool: PoolConfig = Field(
        default_factory=PoolConfig,
        description="`nonsite pool`: detector-pool workers that share the cameras of `cameras:` through Kafka.",
    )
    camera_status: CameraStatusConfig = Field(
        default_factory=CameraStatusConfig,
        description="Distributed mode: camera health, snapshots and zone edits between the edges / pool workers and "
        "a standalone console, over the bus.",
    )
    integration: IntegrationConfig = Field(default_factory=IntegrationConfig, description="The city platform hand-off "
                                           "and the teams' notifications (docs/integration.md).")
    clock: ClockConfig = Field(default_factory=ClockConfig, description="Clock health: the device clock compared "
                               "with (S)NTP servers; evidence needs it within about a second of standard time.")

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone '{v}'; use an IANA name such as Asia/Shanghai") from None
        return v

    @model_validator(mode="after")
    def _unique_cameras(self) -> NonsiteConfig:
        seen: set[str] = set()
        for c in self.cameras:
            if c.id in seen:
                raise ValueError(f"camera id '{c.id}' appears twice; camera ids must be unique")
            seen.add(c.id)
        return self
