"""Files and folders only this user may read: the data directory and everything nonsite writes in it.

The data directory holds the case database, the evidence, the signing key, the bus and the spools; other
local users must read none of it. Every creator makes its folders ``0700`` and its files ``0600`` at
creation (not by a later ``chmod``: there is no moment when they are open to others), whatever the
process's umask. Folders and files that already exist keep their modes (an operator may have chosen them);
a data directory open to every local user is reported once in the log.

This module sits in the bottom layer (``config``) so that every package, the bus included, can use it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
from pathlib import Path

__all__ = ["PRIVATE_DIR_MODE", "PRIVATE_FILE_MODE", "private_data_dir", "private_dir", "private_file",
           "warn_if_open"]

PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600

log = logging.getLogger(__name__)
_warned: set[Path] = set()


def private_dir(path: str | os.PathLike[str]) -> Path:
    """``path`` as a folder, each missing part of it created ``0700``; the path returned."""
    p = Path(path)
    missing = []
    for part in (p, *p.parents):
        if part.is_dir():
            break
        missing.append(part)
    for part in reversed(missing):
        with contextlib.suppress(FileExistsError):  # another process made it first
            part.mkdir(mode=PRIVATE_DIR_MODE)
    if not p.is_dir():
        raise NotADirectoryError(f"{p} is not a folder")
    return p


def private_data_dir(path: str | os.PathLike[str]) -> Path:
    """The data directory: :func:`private_dir`, and a warning when an existing one is open to every user."""
    p = private_dir(path)
    warn_if_open(p, "the data directory")
    return p


def private_file(path: str | os.PathLike[str]) -> Path:
    """``path`` created empty ``0600`` when missing (before a library such as SQLite creates it with its own
    mode), its folder created ``0700``; an existing file is left as it is. The path returned."""
    p = Path(path)
    private_dir(p.parent)
    try:
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
    except FileExistsError:
        return p
    os.close(fd)
    return p


def warn_if_open(path: str | os.PathLike[str], what: str) -> None:
    """Log once when ``path`` can be read or entered by any local user (world bits set)."""
    p = Path(path)
    try:
        mode = stat.S_IMODE(p.stat().st_mode)
    except OSError:
        return
    if mode & 0o007 and p not in _warned:
        _warned.add(p)
        log.warning("%s %s is open to other users (mode %o); it holds evidence and the case database: "
                    "run chmod 700 %s", what, p, mode, p)
