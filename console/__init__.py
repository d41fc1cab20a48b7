"""Console: the operators' web UI (alert queue, evidence viewer, review) and the REST API.

Uses :mod:`nonsite.cases` and :mod:`nonsite.evidence` only; business rules live in ``cases``.
"""

from __future__ import annotations

from nonsite.console.app import create_app

__all__ = ["create_app"]
