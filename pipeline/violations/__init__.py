"""The registry of violation types: one module per type, each declaring ``TYPE = ViolationType(...)``.

Types are found by discovery (every module of this package but ``base``) and, for types kept outside the
repository, in the modules named by ``NONSITE_VIOLATION_MODULES`` (comma-separated importable names). The
registry builds what depends on the set of types: the typed configuration model (``rules:``, the
camera/zone overrides, the zone-kind enumeration, the JSON schema) and the zone kind -> type maps.

Only the edge side (edge, pool, ``run``, ``eval``, ``config check`` / ``config schema``) imports this
package; the central roles know the types from the shared manifest (:mod:`nonsite.config.manifest`).
"""

from __future__ import annotations

import importlib
import os
import pkgutil
from functools import lru_cache
from pathlib import Path
from typing import Any

from nonsite.config.cameras import CameraConfig
from nonsite.config.loader import ConfigError
from nonsite.config.loader import config_schema as _schema_of
from nonsite.config.loader import load_config as _load_config
from nonsite.config.root import NonsiteConfig
from nonsite.config.typed import TypedModels, TypeSettings, typed_config_model
from nonsite.pipeline.violations.base import Hit, Scene, TypeState, ViolationType

__all__ = [
    "MODULES_ENV", "Hit", "Scene", "TypeState", "ViolationType", "config_schema", "exempted_by", "load_config",
    "models", "typed_camera", "typed_rules", "violation_types", "watched_by",
]

MODULES_ENV = "NONSITE_VIOLATION_MODULES"


def _module_names() -> tuple[str, ...]:
    here = [f"{__name__}.{m.name}" for m in pkgutil.iter_modules([str(Path(__file__).parent)]) if m.name != "base"]
    extra = [m.strip() for m in os.environ.get(MODULES_ENV, "").split(",") if m.strip()]
    return tuple(dict.fromkeys([*sorted(here), *extra]))


@lru_cache(maxsize=8)
def _load(names: tuple[str, ...]) -> tuple[ViolationType, ...]:
    found: dict[str, ViolationType] = {}
    for modname in names:
        try:
            module = importlib.import_module(modname)
        except ImportError as e:
            raise ConfigError(f"{MODULES_ENV}: cannot import violation type module '{modname}' ({e}); fix the "
                              "module name or put it on PYTHONPATH") from None
        vt = getattr(module, "TYPE", None)
        if not isinstance(vt, ViolationType):
            raise ConfigError(f"violation type module '{modname}' declares no TYPE = ViolationType(...)")
        if vt.name in found:
            raise ConfigError(f"violation type '{vt.name}' is declared twice (module '{modname}'); rename one")
        found[vt.name] = vt
    kinds: dict[str, str] = {}
    for vt in found.values():
        for kind in (*vt.watches, *vt.exempts):
            if kind in kinds:
                raise ConfigError(f"zone kind '{kind}' is claimed by {kinds[kind]} and {vt.name}; a kind belongs to "
                                  "one violation type")
            kinds[kind] = vt.name
    return tuple(sorted(found.values(), key=lambda t: (t.order, t.name)))


def violation_types() -> tuple[ViolationType, ...]:
    """The registered types, in listing order."""
    return _load(_module_names())


def watched_by(kind: str) -> ViolationType | None:
    """The type that watches zones of ``kind`` (None for an exempt area)."""
    return next((t for t in violation_types() if kind in t.watches), None)


def exempted_by(kind: str) -> ViolationType | None:
    """The type an allow zone of ``kind`` exempts (None for a watched zone)."""
    return next((t for t in violation_types() if kind in t.exempts), None)


@lru_cache(maxsize=8)
def _models(types: tuple[ViolationType, ...]) -> TypedModels:
    return typed_config_model([TypeSettings(t.name, t.config, t.description, t.watches, t.exempts) for t in types])


def models() -> TypedModels:
    """The typed configuration models for the registered types."""
    return _models(violation_types())


def load_config(path: str | os.PathLike[str], *, data: bytes | None = None) -> NonsiteConfig:
    """Load a config file with every type's own settings validated (file:line: key: fix on errors); ``data``:
    the file's bytes when already read (see :func:`nonsite.config.loader.load_config`)."""
    return _load_config(path, models().config, data=data)


def config_schema() -> dict[str, Any]:
    """The JSON schema of the config file with every type's settings (docs/config.schema.json)."""
    return _schema_of(models().config)


def typed_rules(rules: Any) -> Any:
    """``rules:`` as the typed model (a plain ``RulesConfig`` from a central-role config is validated now)."""
    typed = models().rules
    return rules if isinstance(rules, typed) else typed.model_validate(rules.model_dump())


def typed_camera(camera: CameraConfig) -> Any:
    """``camera`` as the typed model (its zones' kinds and overrides checked against the registry)."""
    typed = models().camera
    return camera if isinstance(camera, typed) else typed.model_validate(camera.model_dump())
