"""Console users (password login) and API tokens for integrators.

Passwords are hashed with argon2id (argon2-cffi; parameters upgraded on the next successful login when
the library's defaults grow). API tokens are 256-bit random strings shown once at creation; only their
sha256 is stored (a token has the entropy a password lacks, so a fast hash is enough and lookups are
direct). A token acts with a role (the same permission table as users) and carries scopes that the console
checks per endpoint. A token may act for a console user (its ``owner``): what it does counts as that
person's (the four-eyes rule of the workflow), it stops working when the owner is disabled, and its role may
not exceed the owner's. Logged-in console sessions live here too (:func:`start_session`): logout, a password
change and disabling a user end them for good, whatever process or restart comes next. Nothing here logs a
password or a token.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from functools import cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from nonsite.cases.db import ApiToken, ConsoleSession, User, utcnow, write_session
from nonsite.cases.workflow import PERMISSIONS, REVIEW_ACTIONS, Role, WorkflowError, parse_role

__all__ = [
    "MIN_PASSWORD_LENGTH",
    "SCOPES",
    "TOKEN_PREFIX",
    "ApiToken",
    "User",
    "UserError",
    "authenticate",
    "create_token",
    "end_session",
    "end_user_sessions",
    "create_user",
    "get_user",
    "list_tokens",
    "list_users",
    "revoke_token",
    "set_active",
    "set_password",
    "set_role",
    "session_active",
    "start_session",
    "unlock",
    "verify_token",
]

MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 1024
#: Scopes an API token may carry, with what each allows (the console's route table maps every endpoint onto one).
SCOPE_HELP: dict[str, str] = {
    "cases:read": "list, read and follow cases (/api/cases, /api/events, case pages and documents)",
    "cases:write": "apply case actions and record feedback (POST /api/cases/{number}/...)",
    "evidence:read": "download evidence files (/evidence/...)",
    "cameras:read": "camera health and snapshots (/api/cameras)",
    "cameras:write": "change a camera's zones (PUT /api/cameras/{id}/zones)",
    "metrics:read": "the detailed /metrics and /readyz (case counts, store and database detail)",
    "platform:admin": "the city platform's outbox: list and requeue its dead letters (/api/platform/...)",
    "stats:read": "the bureau's statistics: /api/stats/* (the big screen), the /stats page, its exports and reports",
}
SCOPES: tuple[str, ...] = tuple(SCOPE_HELP)
#: The longest token lifetime ``create_token`` accepts (ten years).
MAX_TOKEN_DAYS = 3650
#: Every token starts with this, so a leaked one is recognisable (and secret scanners can match it).
TOKEN_PREFIX = "nst_"
_USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
_TOKEN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
#: Update ``last_used_at`` at most this often per token (a write per API request would be wasteful).
_LAST_USED_GRANULARITY = timedelta(minutes=1)

_hasher = PasswordHasher()


@cache
def _dummy_hash() -> str:
    """Verified against when the username is unknown, so a miss costs as long as a wrong password."""
    return _hasher.hash(secrets.token_urlsafe(16))


class UserError(ValueError):
    """A user or token request that cannot be carried out; the message says why and what to do."""


def _check_password(password: str) -> None:
    if not isinstance(password, str) or len(password) < MIN_PASSWORD_LENGTH:
        raise UserError(f"the password is too short; use at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise UserError(f"the password is longer than {MAX_PASSWORD_LENGTH} characters; use a shorter one")


def _check_username(username: str) -> str:
    name = (username or "").strip()
    if not _USERNAME.match(name):
        raise UserError(f"user name {username!r} is not allowed; use 1-64 letters, digits and . _ @ - "
                        "(starting with a letter or digit)")
    return name


def create_user(
    session_factory: sessionmaker[Session], username: str, password: str, role: Role | str,
    display_name: str = "",
) -> User:
    """Add a user; raises :class:`UserError` for a taken name, a bad role or a short password."""
    name = _check_username(username)
    try:
        r = parse_role(role)
    except WorkflowError as exc:
        raise UserError(str(exc)) from None
    _check_password(password)
    now = utcnow()
    user = User(username=name, display_name=(display_name or "").strip()[:128], role=r.value,
                password_hash=_hasher.hash(password), active=True, created_at=now, password_changed_at=now)
    try:
        with write_session(session_factory) as session:
            session.add(user)
    except IntegrityError:
        raise UserError(f"user {name} exists already; pick another name or change its password") from None
    return user


def get_user(session_factory: sessionmaker[Session], username: str) -> User | None:
    with session_factory() as session:
        return session.scalar(select(User).where(User.username == (username or "").strip()))


def list_users(session_factory: sessionmaker[Session]) -> list[User]:
    with session_factory() as session:
        return list(session.scalars(select(User).order_by(User.username)))


def _load_user(session: Session, username: str) -> User:
    user = session.scalar(select(User).where(User.username == (username or "").strip()).with_for_update())
    if user is None:
        raise UserError(f"no user {username!r}; add it with `nonsite users add`")
    return user


def set_password(session_factory: sessionmaker[Session], username: str, password: str) -> User:
    _check_password(password)
    with write_session(session_factory) as session:
        user = _load_user(session, username)
        user.password_hash = _hasher.hash(password)
        user.password_changed_at = utcnow()
        _end_sessions(session, user.username, "password_changed")
    return user


def set_role(session_factory: sessionmaker[Session], username: str, role: Role | str) -> User:
    try:
        r = parse_role(role)
    except WorkflowError as exc:
        raise UserError(str(exc)) from None
    with write_session(session_factory) as session:
        user = _load_user(session, username)
        user.role = r.value
    return user


def set_active(session_factory: sessionmaker[Session], username: str, active: bool) -> User:
    """Disable (or re-enable) a user: a disabled user cannot log in, and their open sessions end."""
    with write_session(session_factory) as session:
        user = _load_user(session, username)
        user.active = bool(active)
        if not active:
            _end_sessions(session, user.username, "disabled")
    return user


def unlock(session_factory: sessionmaker[Session], username: str) -> User:
    """Clear the user's failed logins: the console ignores failures before now (``nonsite users unlock``)."""
    with write_session(session_factory) as session:
        user = _load_user(session, username)
        user.unlocked_at = utcnow()
    return user


def authenticate(session_factory: sessionmaker[Session], username: str, password: str) -> User | None:
    """The active user with this name and password, else None (same cost for unknown names).

    Records the login time and re-hashes the password when argon2's parameters have grown.
    """
    if not isinstance(password, str) or not password or len(password) > MAX_PASSWORD_LENGTH:
        return None
    with session_factory() as session:
        user = session.scalar(select(User).where(User.username == (username or "").strip()))
    stored = user.password_hash if user is not None else _dummy_hash()
    try:
        _hasher.verify(stored, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return None
    if user is None or not user.active:
        return None
    with write_session(session_factory) as session:
        row = session.get(User, user.id)
        if row is None:
            return None
        row.last_login_at = utcnow()
        if _hasher.check_needs_rehash(row.password_hash):
            row.password_hash = _hasher.hash(password)
        user = row
    return user


# --- API tokens -------------------------------------------------------------------------------------------


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _check_scopes(scopes: Iterable[str]) -> list[str]:
    out: list[str] = []
    for s in scopes:
        if s not in SCOPES:
            raise UserError(f"unknown scope {s!r}; use any of {', '.join(SCOPES)}")
        if s not in out:
            out.append(s)
    if not out:
        raise UserError(f"a token needs at least one scope; use any of {', '.join(SCOPES)}")
    return out


def create_token(
    session_factory: sessionmaker[Session],
    name: str,
    *,
    role: Role | str = Role.OPERATOR,
    scopes: Sequence[str] = ("cases:read",),
    created_by: str = "",
    expires_in: timedelta | None = None,
    owner: str | None = None,
) -> tuple[str, ApiToken]:
    """A new API token: ``(plaintext, record)``. The plaintext is returned only here; store it safely.

    ``owner`` is the console user the token acts for (its actions are theirs; the token's role may not exceed
    theirs: the same role, or any role for an admin's token); without one the token is its own identity.
    """
    tname = (name or "").strip()
    if not _TOKEN_NAME.match(tname):
        raise UserError(f"token name {name!r} is not allowed; use 1-64 letters, digits and . _ -")
    try:
        r = parse_role(role)
    except WorkflowError as exc:
        raise UserError(str(exc)) from None
    scope_list = _check_scopes(scopes)
    if expires_in is not None and not timedelta(0) < expires_in <= timedelta(days=MAX_TOKEN_DAYS):
        raise UserError(f"a token's lifetime must be between 1 and {MAX_TOKEN_DAYS} days")
    owner_name: str | None = None
    if owner is not None:
        user = get_user(session_factory, owner)
        if user is None or not user.active:
            raise UserError(f"no active user {owner!r} to own the token; add it with `nonsite users add`")
        if not _role_within(r.value, user.role):
            raise UserError(f"a token of {user.username} ({user.role}) cannot act as {r.value}; use --role "
                            f"{user.role}")
        owner_name = user.username
    elif "cases:write" in scope_list and any(r in PERMISSIONS[a] for a in REVIEW_ACTIONS):
        raise UserError(f"a {r.value} token with cases:write may approve or return cases, so it must act for a "
                        "person: add --user USER (the four-eyes rule then counts its actions as theirs)")
    plaintext = TOKEN_PREFIX + secrets.token_urlsafe(32)
    now = utcnow()
    record = ApiToken(
        name=tname, token_hash=_token_hash(plaintext), prefix=plaintext[: len(TOKEN_PREFIX) + 6], role=r.value,
        scopes=scope_list, created_by=created_by, created_at=now, owner=owner_name,
        expires_at=now + expires_in if expires_in is not None else None,
    )
    try:
        with write_session(session_factory) as session:
            session.add(record)
    except IntegrityError:
        raise UserError(f"a token named {tname} exists already (names are never reused); pick another name") from None
    return plaintext, record


def verify_token(session_factory: sessionmaker[Session], token: str, scope: str | None = None) -> ApiToken | None:
    """The live token record for ``token`` (not revoked, not expired, holding ``scope`` when given), else None."""
    if not isinstance(token, str) or not token.startswith(TOKEN_PREFIX) or len(token) > 256:
        return None
    digest = _token_hash(token)
    with session_factory() as session:
        record = session.scalar(select(ApiToken).where(ApiToken.token_hash == digest))
    if record is None or not hmac.compare_digest(record.token_hash, digest):
        return None
    now = utcnow()
    if record.revoked_at is not None or (record.expires_at is not None and record.expires_at <= now):
        return None
    if scope is not None and scope not in record.scopes:
        return None
    if record.owner is not None:
        owner = get_user(session_factory, record.owner)
        if owner is None or not owner.active or not _role_within(record.role, owner.role):
            return None  # the person it acts for is gone, disabled or no longer holds its role
    if record.last_used_at is None or now - record.last_used_at >= _LAST_USED_GRANULARITY:
        with write_session(session_factory) as session:
            row = session.get(ApiToken, record.id)
            if row is not None:
                row.last_used_at = now
                record = row
    return record


def _role_within(token_role: str, user_role: str) -> bool:
    """Whether a token of a user with ``user_role`` may act as ``token_role`` (admins may issue any role)."""
    return token_role == user_role or user_role == Role.ADMIN.value


def list_tokens(session_factory: sessionmaker[Session], include_revoked: bool = False) -> list[ApiToken]:
    with session_factory() as session:
        stmt = select(ApiToken).order_by(ApiToken.created_at, ApiToken.id)
        if not include_revoked:
            stmt = stmt.where(ApiToken.revoked_at.is_(None))
        return list(session.scalars(stmt))


def revoke_token(session_factory: sessionmaker[Session], name: str) -> ApiToken:
    """Revoke the token named ``name`` (idempotent); raises :class:`UserError` if there is none."""
    with write_session(session_factory) as session:
        record = session.scalar(select(ApiToken).where(ApiToken.name == (name or "").strip()).with_for_update())
        if record is None:
            raise UserError(f"no token named {name!r}; list them with `nonsite users token list`")
        if record.revoked_at is None:
            record.revoked_at = utcnow()
    return record


def token_expired(record: ApiToken, now: datetime | None = None) -> bool:
    return record.expires_at is not None and record.expires_at <= (now or utcnow())


# --- console sessions ----------------------------------------------------------------------------------------


def _sid_hash(sid: str) -> str:
    return hashlib.sha256(sid.encode("utf-8")).hexdigest()


def start_session(session_factory: sessionmaker[Session], sid: str, username: str, expires_at: datetime,
                  address: str = "") -> None:
    """Record a logged-in session (the id's hash only); drops sessions that expired more than a day ago."""
    now = utcnow()
    with write_session(session_factory) as session:
        session.query(ConsoleSession).filter(ConsoleSession.expires_at < now - timedelta(days=1)).delete()
        session.add(ConsoleSession(sid_hash=_sid_hash(sid), username=username, address=address[:64],
                                   created_at=now, expires_at=expires_at))


def session_active(session_factory: sessionmaker[Session], sid: str, username: str) -> bool:
    """Whether the session ``sid`` of ``username`` was started, has not ended and has not expired."""
    with session_factory() as session:
        row = session.scalar(select(ConsoleSession).where(ConsoleSession.sid_hash == _sid_hash(sid)))
    return (row is not None and row.username == username and row.ended_at is None
            and row.expires_at > utcnow())


def end_session(session_factory: sessionmaker[Session], sid: str, reason: str = "logout") -> None:
    with write_session(session_factory) as session:
        row = session.scalar(select(ConsoleSession).where(ConsoleSession.sid_hash == _sid_hash(sid)))
        if row is not None and row.ended_at is None:
            row.ended_at, row.end_reason = utcnow(), reason


def _end_sessions(session: Session, username: str, reason: str) -> int:
    rows = list(session.scalars(select(ConsoleSession).where(ConsoleSession.username == username,
                                                              ConsoleSession.ended_at.is_(None))))
    now = utcnow()
    for row in rows:
        row.ended_at, row.end_reason = now, reason
    return len(rows)


def end_user_sessions(session_factory: sessionmaker[Session], username: str, reason: str = "revoked") -> int:
    """End every open session of ``username`` (``nonsite users logout``); returns how many."""
    with write_session(session_factory) as session:
        return _end_sessions(session, (username or "").strip(), reason)
