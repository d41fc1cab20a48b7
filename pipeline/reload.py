"""Live reload of the cameras: watch the config file and apply its ``cameras:`` to a running edge.

The file is checked every ``edge.reload_poll_s`` seconds (its modification time and size, then its
content hash, so a touch without a change does nothing) and at once on SIGHUP. A file that does not
load is reported in the log with the loader's file:line message and ignored: the cameras keep running
as they are until the file is fixed.
"""

from __future__ import annotations

import hashlib
import logging
import os
import signal
import threading
from pathlib import Path

from nonsite.config import ConfigError
from nonsite.pipeline.edge import Change, EdgeRunner
from nonsite.pipeline.violations import load_config

log = logging.getLogger(__name__)


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

    def check(self, force: bool = False) -> dict[str, Change] | None:
        """Apply the file if it changed (or ``force``); returns what happened to each camera, or None when
        nothing was applied (unchanged, unreadable or invalid)."""
        with self._check_lock:
            stat = self._stat_now()
            if not force and stat == self._stat:
                return None
            self._stat = stat
            digest = self._digest_now()
            if digest is None or (not force and digest == self._digest):
                return None
            self._digest = digest
            try:
                cfg = load_config(self.path)
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
            forced = self._wake.wait(self.poll_s)
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
