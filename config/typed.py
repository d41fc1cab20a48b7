"""The configuration model with every violation type's own settings (the "typed" model).

The plain :class:`~nonsite.config.NonsiteConfig` is what the central roles validate: ``rules:`` and the
camera/zone overrides only have to name known violation types, a zone kind has to be a known kind (see
:mod:`nonsite.config.manifest`). Where rules run (edge, pool, ``run``, ``eval``, ``config check``, ``config
schema``) the registry of violation types (:mod:`nonsite.pipeline.violations`) builds the typed model with
:func:`typed_config_model`: ``rules.<type>`` becomes the type's own model (its fields, defaults and
descriptions, in the JSON schema), the overrides likewise, ``kind`` an enumeration of the registered kinds,
and a zone may override only the rule that watches it. Nothing here imports a type module.
"""

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pydantic import Field, create_model

from nonsite.config.cameras import CameraConfig, ZoneConfig
from nonsite.config.root import NonsiteConfig
from nonsite.config.rules import RuleCommon, typed_rules_models


@dataclass(frozen=True)
class TypeSettings:
    """What the configuration needs of one violation type."""

    name: str
    model: type[RuleCommon]
    description: str
    watches: tuple[str, ...]
    exempts: tuple[str, ...] = ()


@dataclass(frozen=True)
class TypedModels:
    config: type[NonsiteConfig]
    camera: type[CameraConfig]
    zone: type[ZoneConfig]
    rules: type[Any]
    overrides: type[Any]
    zone_kind: type[StrEnum]


def _kind_description(types: list[TypeSettings]) -> str:
    watch = "; ".join(f"{' / '.join(t.watches)} ({t.name})" for t in types if t.watches)
    exempt = "; ".join(f"{' / '.join(t.exempts)} (exempt from {t.name})" for t in types if t.exempts)
    return f"What the zone means: a zone the rule watches ({watch}) or an exempt area ({exempt})."


def _same_field(model: type[Any], name: str, default: Any) -> Any:
    """The field ``name`` of ``model`` again (its description) with a default of the typed model."""
    desc = model.model_fields[name].description
    if callable(default):
        return Field(default_factory=default, description=desc)
    return Field(default, description=desc)


def typed_config_model(types: list[TypeSettings]) -> TypedModels:
    """The configuration models for the violation types ``types`` (in order)."""
    rules, overrides = typed_rules_models([(t.name, t.model, t.description) for t in types])
    kinds = [k for t in types for k in t.watches] + [k for t in types for k in t.exempts]
    zone_kind = StrEnum("ZoneKind", {k: k for k in kinds})  # type: ignore[misc]
    zone_kind.__doc__ = "What a zone means; it decides which rule watches it."
    zone = create_model(
        "ZoneConfig", __base__=ZoneConfig,
        kind=(zone_kind, Field(description=_kind_description(types))),
        rules=(overrides | None, _same_field(ZoneConfig, "rules", None)),
    )
    zone.rule_of_kind = {k: t.name for t in types for k in t.watches}
    zone.__doc__ = ZoneConfig.__doc__
    camera = create_model(
        "CameraConfig", __base__=CameraConfig,
        zones=(list[zone], _same_field(CameraConfig, "zones", list)),  # type: ignore[valid-type]
        rules=(overrides | None, _same_field(CameraConfig, "rules", None)),
    )
    camera.__doc__ = CameraConfig.__doc__
    config = create_model(
        "NonsiteConfig", __base__=NonsiteConfig,
        rules=(rules, _same_field(NonsiteConfig, "rules", rules)),
        cameras=(list[camera], _same_field(NonsiteConfig, "cameras", list)),  # type: ignore[valid-type]
    )
    config.__doc__ = NonsiteConfig.__doc__
    return TypedModels(config, camera, zone, rules, overrides, zone_kind)
