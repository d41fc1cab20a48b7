"""``nonsite cases ...`` and ``nonsite users ...``: schema migrations, negatives export, case documents, users
and API tokens. Registered on the main parser by :func:`add_parsers`.

Passwords never come from the command line (they would land in the shell history and the process list):
they are read from ``$NONSITE_PASSWORD``, or from standard input (one line; prompted twice on a terminal).
A new API token is printed once, on standard output, and never stored in the clear.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import os
import sys
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from nonsite.config import ConfigError, NonsiteConfig, load_config

PASSWORD_ENV = "NONSITE_PASSWORD"


class CasesCliError(ConfigError):
    """Bad input to a cases/users command: printed as one line, exit code 2."""


# --- where things are --------------------------------------------------------------------------------------


def _config(a: argparse.Namespace) -> NonsiteConfig:
    path = getattr(a, "config", None)
    if path:
        return load_config(path)
    default = Path("examples/demo.yaml")
    return load_config(default) if default.is_file() else NonsiteConfig()


def _data_dir(a: argparse.Namespace, cfg: NonsiteConfig) -> Path:
    return Path(getattr(a, "data_dir", None) or os.environ.get("NONSITE_DATA_DIR") or cfg.data_dir).resolve()


def database_url(a: argparse.Namespace, cfg: NonsiteConfig | None = None) -> str:
    """``--database-url``, else ``cases.database_url`` of the config, else ``sqlite:///DATA_DIR/cases.db``."""
    if getattr(a, "database_url", None):
        return str(a.database_url)
    cfg = cfg or _config(a)
    return cfg.cases.database_url or f"sqlite:///{_data_dir(a, cfg) / 'cases.db'}"


def _sessions(a: argparse.Namespace, cfg: NonsiteConfig | None = None) -> Any:
    from nonsite.cases.db import open_db

    try:
        return open_db(database_url(a, cfg))
    except ValueError as exc:
        raise CasesCliError(str(exc)) from None


def _when(text: str | None, tz: str, what: str) -> datetime | None:
    """YYYY-MM-DD (midnight on the city's clock) or an ISO datetime with a zone."""
    from nonsite.cases.queries import day_range

    if not text:
        return None
    try:
        return day_range(date.fromisoformat(text), tz=tz)[0]
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise CasesCliError(f"{what} {text!r} is not a date; use YYYY-MM-DD or an ISO time like "
                            "2026-11-21T08:00:00+08:00") from None
    if dt.tzinfo is None:
        raise CasesCliError(f"{what} {text!r} has no time zone; add one (e.g. +08:00) or give a date")
    return dt.astimezone(UTC)


def _read_password(confirm: bool) -> str:
    env = os.environ.get(PASSWORD_ENV)
    if env is not None:
        return env
    if sys.stdin.isatty():
        first = getpass.getpass("password: ")
        if confirm and getpass.getpass("again: ") != first:
            raise CasesCliError("the two passwords differ; run the command again")
        return first
    line = sys.stdin.readline()
    if not line:
        raise CasesCliError(f"no password given: pipe it on standard input or set {PASSWORD_ENV}")
    return line.rstrip("\r\n")


# --- cases -------------------------------------------------------------------------------------------------


def cmd_migrate(a: argparse.Namespace) -> int:
    from sqlalchemy.engine import make_url

    from nonsite.cases.db import head_revision, migrate, normalise_url, open_db, schema_revision

    url = database_url(a)
    try:
        shown = make_url(normalise_url(url)).render_as_string(hide_password=True)
    except ValueError as exc:
        raise CasesCliError(str(exc)) from None
    sf = open_db(url, upgrade=False)
    engine = sf.kw["bind"]
    try:
        if a.show:
            print(f"{shown}: at revision {schema_revision(engine) or '(none)'}; newest is {head_revision()}")
            return 0
        before, after = migrate(engine, a.revision)
    finally:
        engine.dispose()
    if before == after:
        print(f"{shown}: already at {after}")
    else:
        print(f"{shown}: migrated from {before or '(empty)'} to {after}")
    return 0


def cmd_export_negatives(a: argparse.Namespace) -> int:
    from nonsite.cases.negatives import export_negatives
    from nonsite.evidence import open_store

    cfg = _config(a)
    since, until = _when(a.since, cfg.timezone, "--since"), _when(a.until, cfg.timezone, "--until")
    data = _data_dir(a, cfg)
    sf = _sessions(a, cfg)
    try:
        result = export_negatives(sf, open_store(cfg.evidence, data), Path(a.out), since=since, until=until)
    except OSError as exc:
        raise CasesCliError(f"cannot write the dataset to {a.out}: {exc.strerror or exc}; pick a writable "
                            "folder") from None
    finally:
        sf.kw["bind"].dispose()
    print(result.summary())
    return 0


def cmd_document(a: argparse.Namespace) -> int:
    from nonsite.cases.document import render_case_html, render_case_pdf
    from nonsite.cases.legal_basis import load_catalogue
    from nonsite.cases.queries import audit_trail, get_case
    from nonsite.evidence import open_store
    from nonsite.evidence.trust import key_ring
    from nonsite.evidence.verify import verify_package

    cfg = _config(a)
    data = _data_dir(a, cfg)
    store = open_store(cfg.evidence, data)
    # The trusted keys (pinned, or this node's own), never a public-key file that merely lies in the data dir.
    ring = key_ring(cfg.evidence, data, store, Path(a.public_key).read_bytes() if a.public_key else None)
    verification = None
    if ring.keys or ring.pinned:

        def verification(case: Any) -> Any:
            return verify_package(store, case.event_id, ring)

    sf = _sessions(a, cfg)
    try:
        with sf() as s:
            case = get_case(s, a.number)
            if case is None:
                raise CasesCliError(f"no case {a.number}; check the number (e.g. NS-2026-000001)")
            audit = audit_trail(s, case)
    finally:
        sf.kw["bind"].dispose()
    out = Path(a.out)
    kw: dict[str, Any] = {"verification": verification, "audit": audit,
                          "catalogue": load_catalogue(cfg.cases.legal_basis)}
    if out.suffix.lower() == ".pdf":
        content: bytes = render_case_pdf(case, store, a.lang, cfg.timezone, font_path=cfg.cases.document_font, **kw)
    elif out.suffix.lower() in (".html", ".htm"):
        content = render_case_html(case, a.lang, cfg.timezone, store=store, **kw).encode("utf-8")
    else:
        raise CasesCliError(f"{out}: name the output .pdf or .html")
    try:
        out.write_bytes(content)
    except OSError as exc:
        raise CasesCliError(f"cannot write {out}: {exc.strerror or exc}") from None
    print(f"wrote {out}")
    return 0


# --- users and tokens ---------------------------------------------------------------------------------------


@contextlib.contextmanager
def _user_db(a: argparse.Namespace) -> Iterator[Any]:
    """The case database for a users/tokens command: a :class:`UserError` becomes a one-line CLI error."""
    from nonsite.cases.users import UserError

    sf = _sessions(a)
    try:
        yield sf
    except UserError as exc:
        raise CasesCliError(str(exc)) from None
    finally:
        sf.kw["bind"].dispose()


def cmd_users_add(a: argparse.Namespace) -> int:
    from nonsite.cases.users import create_user

    password = _read_password(confirm=True)
    with _user_db(a) as sf:
        user = create_user(sf, a.username, password, a.role, a.display_name or "")
    print(f"added user {user.username} ({user.role})")
    return 0


def cmd_users_passwd(a: argparse.Namespace) -> int:
    from nonsite.cases.users import set_password

    password = _read_password(confirm=True)
    with _user_db(a) as sf:
        set_password(sf, a.username, password)
    print(f"changed the password of {a.username}")
    return 0


def cmd_users_active(a: argparse.Namespace) -> int:
    from nonsite.cases.users import set_active

    with _user_db(a) as sf:
        set_active(sf, a.username, a.active)
    print(f"{'enabled' if a.active else 'disabled'} {a.username}")
    return 0


def cmd_users_unlock(a: argparse.Namespace) -> int:
    from nonsite.cases.users import unlock

    with _user_db(a) as sf:
        unlock(sf, a.username)
    print(f"unlocked {a.username}: the console forgets its failed logins (within a login attempt)")
    return 0


def cmd_users_logout(a: argparse.Namespace) -> int:
    from nonsite.cases.users import UserError, end_user_sessions, get_user

    with _user_db(a) as sf:
        if get_user(sf, a.username) is None:
            raise UserError(f"no user {a.username!r}; list them with `nonsite users list`")
        n = end_user_sessions(sf, a.username, "revoked")
    print(f"ended {n} console session(s) of {a.username}")
    return 0


def cmd_users_list(a: argparse.Namespace) -> int:
    from nonsite.cases.users import list_users

    with _user_db(a) as sf:
        users = list_users(sf)
    for u in users:
        last = u.last_login_at.isoformat(timespec="seconds") if u.last_login_at else "never"
        print(f"{u.username}\t{u.role}\t{'active' if u.active else 'disabled'}\tlast login {last}\t{u.display_name}")
    return 0


def cmd_token_create(a: argparse.Namespace) -> int:
    from nonsite.cases.users import MAX_TOKEN_DAYS, UserError, create_token, get_user

    with _user_db(a) as sf:
        if a.expires_days is not None and not 1 <= a.expires_days <= MAX_TOKEN_DAYS:
            raise UserError(f"--expires-days {a.expires_days} is out of range; use 1 to {MAX_TOKEN_DAYS}")
        owner = get_user(sf, a.user) if a.user else None
        plaintext, record = create_token(
            sf, a.name, role=a.role or (owner.role if owner is not None else "operator"),
            scopes=a.scope or ["cases:read"], created_by=getpass.getuser(), owner=a.user,
            expires_in=timedelta(days=a.expires_days) if a.expires_days else None,
        )
    acts_for = f"; acts for {record.owner}" if record.owner else ""
    print(f"token {record.name} ({record.role}; {', '.join(record.scopes)}{acts_for}) - shown once, store it now:",
          file=sys.stderr)
    print(plaintext)
    return 0


def cmd_token_list(a: argparse.Namespace) -> int:
    from nonsite.cases.users import list_tokens

    with _user_db(a) as sf:
        tokens = list_tokens(sf, include_revoked=a.all)
    for t in tokens:
        state = "revoked" if t.revoked_at else (f"expires {t.expires_at.isoformat(timespec='seconds')}"
                                                 if t.expires_at else "no expiry")
        used = t.last_used_at.isoformat(timespec="seconds") if t.last_used_at else "never"
        print(f"{t.name}\t{t.prefix}…\t{t.role}\t{','.join(t.scopes)}\t{state}\tlast used {used}")
    return 0


def cmd_token_revoke(a: argparse.Namespace) -> int:
    from nonsite.cases.users import revoke_token

    with _user_db(a) as sf:
        revoke_token(sf, a.name)
    print(f"revoked token {a.name}")
    return 0


# --- the parsers ----------------------------------------------------------------------------------------------


def cmd_audit_verify(a: argparse.Namespace) -> int:
    """Recompute the audit hash chain and check every signed checkpoint in the evidence store: names each row
    that was edited or removed; exit 1 when any is."""
    from nonsite.cases.audit import verify_chain

    cfg = _config(a)
    sf = _sessions(a, cfg)
    try:
        report = verify_chain(sf)
        problems = list(report.problems)
        checked, notes = _check_checkpoints(a, cfg, sf, problems)
    finally:
        sf.kw["bind"].dispose()
    for p in problems:
        print(f"FAIL {p}")
    for n in notes:
        print(f"note: {n}", file=sys.stderr)
    verdict = "does not verify" if problems else "verifies"
    print(f"audit chain of {report.entries} entries {verdict} (head {report.head_seq}, "
          f"{report.head_hash[:16]}...); {checked} signed checkpoint(s) checked")
    return 1 if problems else 0


def _checkpoints_store(a: argparse.Namespace, cfg: NonsiteConfig) -> tuple[Any, Path]:
    from nonsite.evidence import open_store
    from nonsite.evidence.store import StoreError

    data = _data_dir(a, cfg)
    try:
        return open_store(cfg.evidence, data), data
    except StoreError as exc:
        raise CasesCliError(str(exc)) from None


def _check_checkpoints(a: argparse.Namespace, cfg: NonsiteConfig, sf: Any, problems: list[str]
                       ) -> tuple[int, list[str]]:
    """Verify each checkpoint's signature (trusted keys) and that the chain still holds it."""
    import json

    from nonsite.cases.audit import CHECKPOINTS, verify_checkpoint
    from nonsite.evidence.manifest import parse_time
    from nonsite.evidence.trust import UntrustedKeyError, key_ring

    store, data = _checkpoints_store(a, cfg)
    ring = key_ring(cfg.evidence, data, store)
    names = sorted(k for k in store.list(CHECKPOINTS) if k.endswith(".json"))
    if not names:
        return 0, ["no signed checkpoint in the store yet: run `nonsite cases audit checkpoint` daily, or a "
                   "rewrite of the whole chain cannot be noticed"]
    for key in names:
        raw = store.get(key)
        try:
            record = json.loads(raw)
            ring.verify(raw, store.get(key + ".sig"), str(record.get("signed_by", "")),
                        parse_time(str(record.get("at"))))
        except KeyError:
            problems.append(f"checkpoint {key} is not signed")
            continue
        except (ValueError, AttributeError, UntrustedKeyError) as exc:
            problems.append(f"checkpoint {key}: {exc}")
            continue
        why = verify_checkpoint(sf, record)
        if why:
            problems.append(why)
    return len(names), []


def cmd_audit_checkpoint(a: argparse.Namespace) -> int:
    """Sign the audit chain's head with the sealer's key and keep it in the evidence store (run it daily)."""
    from nonsite.cases.audit import CHECKPOINTS, checkpoint_record, verify_chain
    from nonsite.evidence import signing_key_path
    from nonsite.evidence.manifest import canonical_json
    from nonsite.evidence.signing import Signer, SigningError

    cfg = _config(a)
    store, data = _checkpoints_store(a, cfg)
    key = signing_key_path(cfg.evidence, data)
    if not key.is_file():
        raise CasesCliError(f"no signing key at {key}; run the checkpoint where the sealer's key is")
    try:
        signer = Signer.load_or_create(key)
    except SigningError as exc:
        raise CasesCliError(str(exc)) from None
    sf = _sessions(a, cfg)
    try:
        report = verify_chain(sf)
    finally:
        sf.kw["bind"].dispose()
    if not report.ok:
        for p in report.problems:
            print(f"FAIL {p}")
        print("the audit chain does not verify: no checkpoint signed (investigate first)")
        return 1
    record = {**checkpoint_record(report), "signed_by": signer.fingerprint()}
    data_bytes = canonical_json(record)
    name = f"{CHECKPOINTS}{str(record['at']).replace(':', '-')}.json"
    store.put(name, data_bytes, "application/json")
    store.put(name + ".sig", signer.sign(data_bytes), "application/octet-stream")
    print(f"checkpoint {name}: {report.head_seq} entries, head {report.head_hash[:16]}..., signed by key "
          f"{signer.fingerprint()[:16]}...")
    return 0


def _db_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML config (default examples/demo.yaml when present)")
    p.add_argument("--data-dir", help="data directory (default: from the config or NONSITE_DATA_DIR)")
    p.add_argument("--database-url", help="case database URL (default: cases.database_url or DATA_DIR/cases.db)")


def add_parsers(sub: Any) -> None:
    """Register ``cases`` and ``users`` on the main parser's subcommands."""
    from nonsite.cases.users import SCOPE_HELP, SCOPES
    from nonsite.cases.workflow import Role

    roles = [r.value for r in Role]
    c = sub.add_parser("cases", help="case database and case files").add_subparsers(dest="cases_cmd", required=True)
    m = c.add_parser("migrate", help="bring the case database schema to the newest revision (runs on open too)")
    _db_args(m)
    m.add_argument("--revision", default="head", help="target revision (default: head)")
    m.add_argument("--show", action="store_true", help="only print the current and the newest revision")
    m.set_defaults(fn=cmd_migrate)

    n = c.add_parser("export-negatives", help="export alerts dismissed as false positives as a YOLO dataset "
                                              "of hard negatives (images, empty labels, wrong boxes as JSON)")
    _db_args(n)
    n.add_argument("--out", required=True, help="output folder (created; files are overwritten)")
    n.add_argument("--since", help="only dismissals from this date (YYYY-MM-DD on the city's clock) or time")
    n.add_argument("--until", help="only dismissals before this date or time")
    n.set_defaults(fn=cmd_export_negatives)

    d = c.add_parser("document", help="write the case file of a case as PDF or HTML")
    _db_args(d)
    d.add_argument("number", help="case number, e.g. NS-2026-000001")
    d.add_argument("--out", required=True, help="output file, .pdf or .html")
    d.add_argument("--lang", choices=["zh", "en"], default="zh")
    d.add_argument("--public-key", help="PEM public key to verify the package (default: the node's own)")
    d.set_defaults(fn=cmd_document)

    au = c.add_parser("audit", help="the audit trail's hash chain").add_subparsers(dest="audit_cmd", required=True)
    av = au.add_parser("verify", help="recompute the audit hash chain and the signed checkpoints; name every row "
                                      "edited or removed (exit 1)")
    _db_args(av)
    av.set_defaults(fn=cmd_audit_verify)
    ac = au.add_parser("checkpoint", help="sign the chain's head with the sealer's key into the evidence store "
                                          "(daily, e.g. from cron)")
    _db_args(ac)
    ac.set_defaults(fn=cmd_audit_checkpoint)

    u = sub.add_parser("users", help="console users and API tokens").add_subparsers(dest="users_cmd", required=True)
    ua = u.add_parser("add", help=f"add a user (password from ${PASSWORD_ENV} or standard input)")
    _db_args(ua)
    ua.add_argument("username")
    ua.add_argument("--role", required=True, choices=roles)
    ua.add_argument("--display-name", help="name shown in the console and the audit trail")
    ua.set_defaults(fn=cmd_users_add)
    up = u.add_parser("passwd", help=f"set a user's password (from ${PASSWORD_ENV} or standard input)")
    _db_args(up)
    up.add_argument("username")
    up.set_defaults(fn=cmd_users_passwd)
    for name, active in (("disable", False), ("enable", True)):
        ud = u.add_parser(name, help=f"{name} a user's login")
        _db_args(ud)
        ud.add_argument("username")
        ud.set_defaults(fn=cmd_users_active, active=active)
    uu = u.add_parser("unlock", help="clear a user's failed logins (after too many wrong passwords)")
    _db_args(uu)
    uu.add_argument("username")
    uu.set_defaults(fn=cmd_users_unlock)
    uo = u.add_parser("logout", help="end every console session of a user (everywhere, at once)")
    _db_args(uo)
    uo.add_argument("username")
    uo.set_defaults(fn=cmd_users_logout)
    ul = u.add_parser("list", help="list users")
    _db_args(ul)
    ul.set_defaults(fn=cmd_users_list)

    t = u.add_parser("token", help="API tokens for integrators").add_subparsers(dest="token_cmd", required=True)
    scopes_help = "; ".join(f"{name}: {what}" for name, what in SCOPE_HELP.items())
    tc = t.add_parser("create", help="create a token (printed once)",
                      description="An API token for an integrator, printed once. A token is limited by its role "
                      "AND its scopes: " + scopes_help + ".")
    _db_args(tc)
    tc.add_argument("--name", required=True, help="name of the token (the audit trail shows token:NAME)")
    tc.add_argument("--user", help="the console user the token acts for: its actions count as theirs (one "
                    "person in the four-eyes rule), it stops when they are disabled; required for a reviewer or "
                    "admin token with cases:write; default: the token is its own identity")
    tc.add_argument("--role", choices=roles, help="role the token acts with (default: the --user's role, else "
                    "operator; a user's token may not exceed their role)")
    tc.add_argument("--scope", action="append", choices=list(SCOPES), metavar="SCOPE",
                    help="what the token may do (repeatable; default cases:read): " + ", ".join(SCOPES))
    tc.add_argument("--expires-days", type=int, help="lifetime in days, 1 to 3650 (default: until revoked)")
    tc.set_defaults(fn=cmd_token_create)
    tl = t.add_parser("list", help="list tokens (never their secret)")
    _db_args(tl)
    tl.add_argument("--all", action="store_true", help="include revoked tokens")
    tl.set_defaults(fn=cmd_token_list)
    tr = t.add_parser("revoke", help="revoke a token")
    _db_args(tr)
    tr.add_argument("name")
    tr.set_defaults(fn=cmd_token_revoke)
