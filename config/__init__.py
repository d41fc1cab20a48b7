"""Configuration: one YAML file, pydantic models one file per section (``extra="forbid"``)."""

from nonsite.config.cameras import CameraConfig, LocationConfig, SourceConfig, ZoneConfig, mask_url
from nonsite.config.detector import DetectorConfig, TrackerConfig
from nonsite.config.edge import EdgeConfig, MetricsConfig
from nonsite.config.loader import ConfigError, config_schema, load_config
from nonsite.config.root import NonsiteConfig
from nonsite.config.rules import RuleCommon, RuleOverrides, RulesConfig
from nonsite.config.services import BusConfig, CasesConfig, ConsoleConfig, EvidenceConfig

__all__ = [
    "BusConfig", "CameraConfig", "CasesConfig", "ConfigError", "ConsoleConfig", "DetectorConfig", "EdgeConfig",
    "MetricsConfig",
    "EvidenceConfig", "LocationConfig", "NonsiteConfig", "RuleCommon", "RuleOverrides", "RulesConfig",
    "SourceConfig", "TrackerConfig", "ZoneConfig", "config_schema",
    "load_config", "mask_url",
]
