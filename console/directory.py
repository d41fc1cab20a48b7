"""The console's user directory and case documents over the case database (``nonsite.cases``).

:class:`CasesDirectory` implements :class:`~nonsite.console.auth.AuthBackend` with ``cases/users.py``
(argon2id passwords, hashed API tokens); :class:`CasesDocuments` implements
:class:`~nonsite.console.documents.DocumentRenderer` with ``cases/document.py``.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from nonsite.cases import users
from nonsite.cases.db import Case
from nonsite.cases.document import render_case_html, render_case_pdf
from nonsite.cases.legal_basis import Catalogue
from nonsite.cases.queries import audit_trail
from nonsite.console.auth import Principal


class CasesDirectory:
    """Console logins and API tokens checked against the case database's users and tokens."""

    def __init__(self, session_factory: sessionmaker[Session]) -> None:
        self.sf = session_factory

    def authenticate(self, username: str, password: str) -> Principal | None:
        try:
            user = users.authenticate(self.sf, username, password)
        except Exception:  # a directory failure must read as "no", never as a login
            return None
        return Principal(user.username, user.display_name or user.username, user.role) if user else None

    def verify_token(self, token: str) -> Principal | None:
        try:
            record = users.verify_token(self.sf, token)
        except Exception:
            return None
        if record is None:
            return None
        return Principal(record.actor, record.name, record.role, via_token=True, scopes=frozenset(record.scopes),
                         owner=record.owner)

    def principal(self, username: str) -> Principal | None:
        user = users.get_user(self.sf, username)
        if user is None or not user.active:
            return None
        return Principal(user.username, user.display_name or user.username, user.role)

    def unlocked_at(self, username: str) -> datetime | None:
        """When an admin last cleared the user's failed logins (``nonsite users unlock``)."""
        user = users.get_user(self.sf, username)
        return user.unlocked_at if user is not None else None



class CasesDocuments:
    """Case documents (HTML and PDF) with the legal basis, the stills and the seal check."""

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        store: Any,
        *,
        timezone: str,
        catalogue: Catalogue | None = None,
        verify: Callable[[Case], Any] | None = None,
        font_path: str | None = None,
    ) -> None:
        self.sf, self.store, self.tz = session_factory, store, timezone
        self.catalogue, self.verify, self.font_path = catalogue, verify, font_path

    def _audit(self, case: Case) -> list[Any]:
        with self.sf() as session:
            return audit_trail(session, case.id)

    def html(self, case: Case, lang: str) -> str:
        return render_case_html(
            case, lang, self.tz, verification=self.verify, audit=self._audit(case), catalogue=self.catalogue,
            image_src=lambda role, key: f"/evidence/{case.event_id}/{key.rsplit('/', 1)[-1]}",
        )

    def pdf(self, case: Case, lang: str) -> bytes:
        return render_case_pdf(
            case, self.store, lang, self.tz, verification=self.verify, audit=self._audit(case),
            catalogue=self.catalogue, font_path=self.font_path,
        )


def session_secret(path: Path) -> bytes:
    """The console's cookie-signing key, created once (0600) so sessions survive a restart."""
    if path.is_file():
        return path.read_bytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_bytes(32)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(key)
    tmp.chmod(0o600)
    tmp.replace(path)
    return key


def ensure_admin(session_factory: sessionmaker[Session], path: Path) -> str | None:
    """First start with no users: create ``admin`` with the password from ``$NONSITE_ADMIN_PASSWORD`` or a
    random one, written to ``path`` (0600) — never printed or logged.

    Returns the password when the user was created now, else None.
    """
    if users.list_users(session_factory):
        return None
    password = os.environ.get("NONSITE_ADMIN_PASSWORD") or secrets.token_urlsafe(12)
    users.create_user(session_factory, "admin", password, "admin", display_name="管理员")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(f"admin\n{password}\n", encoding="utf-8")
    tmp.chmod(0o600)
    tmp.replace(path)
    return password
