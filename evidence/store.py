"""The evidence-store interface (local directory now, MinIO in distributed mode)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol


class StoreError(Exception):
    """The store cannot do what was asked; the message says why."""


class BadKeyError(StoreError, ValueError):
    """The key can never name a blob (escapes the store, empty, reserved): retrying cannot help."""


class Store(Protocol):
    def put(self, key: str, data: bytes, content_type: str) -> None:
        """Write ``data`` under ``key`` durably (overwriting an identical retry is harmless)."""

    def get(self, key: str) -> bytes:
        """The bytes under ``key``; raises KeyError when absent."""

    def exists(self, key: str) -> bool: ...

    def list(self, prefix: str) -> Iterator[str]:
        """Every key that starts with ``prefix``."""

    def delete(self, key: str) -> None: ...
