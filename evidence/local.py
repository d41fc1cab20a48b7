"""Evidence store in a local directory (embedded mode): one file per key, written atomically."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

from nonsite.config.files import PRIVATE_FILE_MODE, private_dir
from nonsite.evidence.store import StoreError

_TMP_PREFIX = ".nonsite-tmp-"


def check_key(key: str) -> list[str]:
    """The '/'-separated parts of ``key``; StoreError when it could escape the store or name nothing."""
    if not isinstance(key, str) or not key:
        raise StoreError("a store key must be a non-empty string such as 'events/<event_id>/onset.jpg'")
    if key.startswith("/") or "\\" in key or "\x00" in key:
        raise StoreError(f"store key {key!r} must be a relative path with '/' separators (no leading '/')")
    parts = key.split("/")
    for part in parts:
        if part in ("", ".", ".."):
            raise StoreError(f"store key {key!r} has an empty, '.' or '..' part; keys name files inside the store")
        if part.startswith(_TMP_PREFIX):
            raise StoreError(f"store key {key!r} uses the reserved prefix {_TMP_PREFIX!r}")
    return parts


class LocalStore:
    """A :class:`~nonsite.evidence.store.Store` over the directory ``root`` (created when missing)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).absolute()
        try:
            private_dir(self.root)  # 0700: evidence is for this user only (files 0600)
        except OSError as e:
            raise StoreError(
                f"cannot create the evidence directory {self.root}: {e.strerror or e}; "
                "set evidence.path to a writable directory"
            ) from None

    def __repr__(self) -> str:
        return f"LocalStore({str(self.root)!r})"

    def _error(self, verb: str, key: str, e: OSError) -> StoreError:
        return StoreError(f"cannot {verb} {key!r} in the evidence directory {self.root}: {e.strerror or e}")

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*check_key(key))

    def path_of(self, key: str) -> Path:
        """The file that holds ``key`` (for serving it directly); KeyError when absent."""
        p = self._path(key)
        if not p.is_file():
            raise KeyError(key)
        return p

    def put(self, key: str, data: bytes, content_type: str) -> None:
        """Write ``data`` under ``key`` (timed: nonsite_evidence_write_seconds{store="local"})."""
        from nonsite.evidence.metrics import WRITE_SECONDS

        with WRITE_SECONDS.labels(store="local").time():
            self._put(key, data, content_type)

    def _put(self, key: str, data: bytes, content_type: str) -> None:
        """Write ``data`` under ``key``: temp file, fsync, rename, fsync the directory."""
        path = self._path(key)
        tmp = path.parent / f"{_TMP_PREFIX}{path.name}.{uuid.uuid4().hex}"
        try:
            private_dir(path.parent)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
            try:
                view = memoryview(data)
                while view:
                    n = os.write(fd, view)
                    view = view[n:]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
            fsync_dir(path.parent)
        except OSError as e:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise self._error("write", key, e) from None

    def get(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return path.read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise KeyError(key) from None
        except OSError as e:
            raise self._error("read", key, e) from None

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str = "") -> Iterator[str]:
        """Every key that starts with ``prefix`` (a plain string prefix), in sorted order."""
        if prefix:
            if prefix.startswith("/") or "\\" in prefix:
                raise StoreError(f"store prefix {prefix!r} must be relative with '/' separators")
            dir_part = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
            if dir_part:
                check_key(dir_part)
        else:
            dir_part = ""
        base = self.root.joinpath(*dir_part.split("/")) if dir_part else self.root
        if not base.is_dir():
            return iter(())
        keys: list[str] = []
        for dirpath, dirnames, filenames in os.walk(base):
            rel = os.path.relpath(dirpath, self.root)
            rel_parts = [] if rel == "." else rel.split(os.sep)
            dirnames[:] = [d for d in dirnames if not d.startswith(_TMP_PREFIX)]
            for name in filenames:
                if name.startswith(_TMP_PREFIX):
                    continue
                key = "/".join([*rel_parts, name])
                if key.startswith(prefix):
                    keys.append(key)
        keys.sort()
        return iter(keys)

    def delete(self, key: str) -> None:
        """Remove ``key``; deleting an absent key is not an error."""
        path = self._path(key)
        try:
            path.unlink()
        except FileNotFoundError:
            return
        except OSError as e:
            raise self._error("delete", key, e) from None
        fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    """fsync a directory so a rename or unlink in it survives a crash (best effort where not allowed)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
