"""Console: the operators' web UI (alert queue, evidence viewer, review, tasks, cameras) and the REST API.

Uses :mod:`nonsite.cases` and :mod:`nonsite.evidence` only; business rules live in ``cases``. What the
serving process plugs in: an :class:`AuthBackend` (users, API tokens), a :class:`CameraControl` (the
running cameras) and a :class:`DocumentRenderer` (the case document).
"""

from __future__ import annotations

from nonsite.console.app import create_app
from nonsite.console.auth import AuthBackend, Principal, Role
from nonsite.console.cameras import CameraControl, CameraStatus
from nonsite.console.documents import DocumentRenderer

__all__ = ["AuthBackend", "CameraControl", "CameraStatus", "DocumentRenderer", "Principal", "Role", "create_app"]
