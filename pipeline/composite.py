"""Composite clips: moved to :mod:`nonsite.streams.composite` (a composite is a source of frames: the eval's
``composite:`` clips and ``*.composite.yaml`` camera sources); this name stays for existing imports."""

from __future__ import annotations

from nonsite.streams.composite import (
    CompositeSource,
    CompositeSpec,
    Light,
    Paste,
    add_rain,
    apply_gain,
    composite_frames,
    load_crop,
    media_paths,
    paste,
    shift,
)

__all__ = [
    "CompositeSource", "CompositeSpec", "Light", "Paste", "add_rain", "apply_gain", "composite_frames", "load_crop",
    "media_paths", "paste", "shift",
]
