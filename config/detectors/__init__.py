"""The detector backends, each declared by its own module here: its name, where its implementation lives,
its batch size and its own settings (a config section under ``detector:``).

A module in this package that defines ``BACKEND = DetectorBackend(...)`` is a backend: ``detector.backend``
accepts its name, the config schema gets its section, ``nonsite detect --backend`` offers it, the edge
batches frames as it says, and :func:`nonsite.models.create_detector` imports its implementation (only then,
so no role loads a runtime it does not use, and the config never imports :mod:`nonsite.models`). How to add
one: docs/architecture.md, "Adding a detector backend".
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass

from nonsite.config.base import Section


@dataclass(frozen=True)
class DetectorBackend:
    name: str
    """The value of ``detector.backend``; the settings section's key under ``detector:``."""
    summary: str
    """One sentence for the config schema and the CLI help: what runs, where it is the right choice."""
    implementation: str
    """``module:Class`` of the detector (a :class:`nonsite.models.Detector`, constructed as
    ``Class(detector_config, download=...)``), imported when the backend is created."""
    cpu_batch: int = 1
    """Frames per detector call on the CPU when ``edge.max_batch`` is 0 (measured in bench/)."""
    gpu_batch: int = 8
    """The same on a CUDA device."""
    settings: type[Section] | None = None
    """This backend's own settings (``detector.<name>:``), or None when it has none."""
    legacy_keys: tuple[str, ...] = ()
    """Keys of ``settings`` that older configs wrote directly under ``detector:`` (still accepted there)."""

    def preferred_batch(self, device: str) -> int:
        return self.gpu_batch if device.startswith("cuda") else self.cpu_batch


def _discover() -> dict[str, DetectorBackend]:
    found: dict[str, DetectorBackend] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        backend = getattr(importlib.import_module(f"{__name__}.{info.name}"), "BACKEND", None)
        if isinstance(backend, DetectorBackend):
            if backend.name in found:
                raise ImportError(f"detector backend '{backend.name}' is declared twice ({info.name})")
            found[backend.name] = backend
    return found


DETECTOR_BACKENDS: dict[str, DetectorBackend] = _discover()
"""Every declared backend by name."""

__all__ = ["DETECTOR_BACKENDS", "DetectorBackend"]
