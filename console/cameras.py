"""What the console needs from the running cameras: the contract is :mod:`nonsite.ops.cameras` (neutral, so
the edge implements it without importing the console and the console uses it without importing the
pipeline)."""

from __future__ import annotations

from nonsite.ops.cameras import CameraControl, CameraStatus

__all__ = ["CameraControl", "CameraStatus"]
