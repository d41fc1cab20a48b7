"""Fault injection for the crash tests: ``NONSITE_FAULT=<point>[,<point>...]`` makes this process SIGKILL
itself when it reaches one of the named points (a real crash: no cleanup, no flush, no commit).

Points: ``sealer.after_manifest`` (manifest written, not signed), ``sealer.before_commit`` (package sealed
and announced, the violation not yet committed). Unset in production: the check is one dict lookup.
"""

from __future__ import annotations

import logging
import os
import signal

ENV = "NONSITE_FAULT"

log = logging.getLogger(__name__)


def fault_point(name: str) -> None:
    """SIGKILL this process when ``$NONSITE_FAULT`` names ``name``."""
    spec = os.environ.get(ENV)
    if spec and name in (p.strip() for p in spec.split(",")):
        log.critical("fault injection: killing process %d at %s", os.getpid(), name)
        for h in logging.getLogger().handlers:
            h.flush()
        os.kill(os.getpid(), signal.SIGKILL)
