"""Live reload of the cameras: watch the config file and apply its ``cameras:`` to a running edge.

The file is checked every ``edge.reload_poll_s`` seconds (its modification time and size, then its
content hash, so a touch without a change does nothing) and at once on SIGHUP. A file that does not
load is reported in the log with the loader's file:line message and ignored: the cameras keep running
as they are until the file is fixed.

A file caught while it is being saved is never applied: an editor (or ``write_text``) saving in place
truncates the file before it writes it, and an empty file is a valid config without cameras, so the
watcher skips an empty file, skips a file whose stat changed while it was read, and validates exactly the
bytes it read. A file modified within :data:`RACY_S` of the last look is hashed again at the next poll,
however its stat looks: a second edit of the same size within one mtime tick (a second on some file
systems) leaves the stat as it was.
"""

from __future__ import annotations

import hashlib
import logging
import os
import signal
import threading
import time
from pathlib import Path

from nonsite.config import ConfigError
from nonsite.pipeline.edge import Change, EdgeRunner
from nonsite.pipeline.violations import load_config

log = logging.getLogger(__name__)

#: How recent (seconds, by the file's mtime against the time it was read) a file must be for its stat to prove
#: nothing: an edit after the read but within the same mtime tick leaves mtime and size alike (the coarsest
#: common file-system tick is 2 s, FAT; ext4 and tmpfs tick at a few ms, NFS and SMB at 1 s or more).
RACY_S = 2.0


class ConfigWatcher:
    def __init__(self, path: str | os.PathLike[str], runner: EdgeRunner, poll_s: float = 2.0) -> None:
        self.path = Path(path)
        self.runner = runner
        self.poll_s = poll_s
        self.last_error: str | None = None
        """The loader's message for the file as it is now, when it does not load; else None."""
        self.reloads = 0
        """Times a changed file was applied."""
        self._stat = self._stat_now()
        self._digest = self._digest_now()
        self._read_ns = time.time_ns()
        self._empty_logged: tuple[int, int] | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._check_lock = threading.Lock()

    def _stat_now(self) -> tuple[int, int] | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size

    def _digest_now(self) -> str | None:
        try:
            return hashlib.sha256(self.path.read_bytes()).hexdigest()
        except OSError:
            return None

    def _racy(self, stat: tuple[int, int] | None) -> bool:
        """Whether the file was modified so close to the last read that an edit after it may share its stat."""
        return stat is not None and stat[0] >= self._read_ns - int(RACY_S * 1e9)

    def check(self, force: bool = False) -> dict[str, Change] | None:
        """Apply the file if it changed (or ``force``); returns what happened to each camera, or None when
        nothing was applied (unchanged, unreadable, invalid, or caught while being written)."""
        with self._check_lock:
            stat = self._stat_now()
            if not force and stat == self._stat and not self._racy(stat):
                return None
            read_ns = time.time_ns()
            try:
                data = self.path.read_bytes()
            except OSError:  # gone, or not readable: nothing to apply until it changes
                self._stat = stat
                return None
            if self._stat_now() != stat:  # written while it was read: not recorded, so the next poll looks again
                if force:
                    self._wake.set()  # and a forced look (SIGHUP) is retried at once, not at the next poll
                return None
            if not data.strip():
                # Truncated and not yet written (a save in place), or emptied by mistake: an empty file is a
                # config without cameras, and a node does not stop every camera for it. Not recorded, so the
                # next poll looks again; `cameras: []` is how a file stops them all.
                if self._empty_logged != stat:
                    self._empty_logged = stat
                    log.warning("config reload: %s is empty; ignored, the cameras keep running as they are",
                                self.path)
                return None
            self._stat, self._read_ns = stat, read_ns
            digest = hashlib.sha256(data).hexdigest()
            if not force and digest == self._digest:
                return None
            self._digest = digest
            try:
                cfg = load_config(self.path, data=data)
            except ConfigError as e:
                self.last_error = str(e)
                log.error("config reload: %s; the cameras keep running as they are until this is fixed", e)
                return None
            self.last_error = None
            changes = self.runner.apply_config(cfg)
            self.reloads += 1
            if changes:
                log.warning("config reload: %s", ", ".join(f"{cid} {what}" for cid, what in changes.items()))
            else:
                log.info("config reload: no camera changed")
            return changes

    def trigger(self) -> None:
        """Check the file now (what SIGHUP does)."""
        self._wake.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.poll_s)
            # Cleared only when seen set: a SIGHUP landing after the wait timed out stays set for the next
            # turn (a clear here regardless would lose it, and the poll would not force the reload it asks for).
            forced = self._wake.is_set()
            if forced:
                self._wake.clear()
            if self._stop.is_set():
                break
            try:
                self.check(force=forced)
            except Exception:  # a reload must never take the node down
                log.exception("config reload failed")

    def start(self) -> ConfigWatcher:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="config-watch", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def install_sighup(self) -> bool:
        """Make SIGHUP reload the file; only possible from the main thread on POSIX. Returns whether it did."""
        if not hasattr(signal, "SIGHUP") or threading.current_thread() is not threading.main_thread():
            return False
        signal.signal(signal.SIGHUP, lambda *_: self.trigger())
        return True
