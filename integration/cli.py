"""``nonsite platform ...`` (the hand-off's outbox and dead letters, for admins), ``nonsite notify test`` and
``nonsite reminders run --once`` (the bureau's reminder job, sending to the notification channels).
Registered on the main parser by :func:`add_parsers`."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from typing import Any

from nonsite.config import ConfigError, NonsiteConfig, load_config


def _cfg(a: argparse.Namespace) -> NonsiteConfig:
    return load_config(a.config)


def _when(ts: float | None) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds") if ts else "-"


def cmd_status(a: argparse.Namespace) -> int:
    from nonsite.integration.relay import open_store

    cfg = _cfg(a)
    store = open_store(cfg)
    try:
        counts = store.counts(cfg.integration.platform.name)
    finally:
        store.close()
    print(" ".join(f"{k}={v}" for k, v in counts.items()))
    return 0


def cmd_dead_letters(a: argparse.Namespace) -> int:
    from nonsite.integration.outbox import DeliveryState
    from nonsite.integration.relay import open_store

    cfg = _cfg(a)
    store = open_store(cfg)
    try:
        dead = store.deliveries(cfg.integration.platform.name, DeliveryState.DEAD, a.limit)
    finally:
        store.close()
    for d in dead:
        print(f"{d.id}\t{d.idempotency_key}\tattempts={d.attempts}\tstatus={d.last_status or '-'}\t"
              f"since={_when(d.created_at)}\t{d.last_error}")
    print(f"{len(dead)} dead report(s)", file=sys.stderr)
    return 0


def cmd_requeue(a: argparse.Namespace) -> int:
    from nonsite.integration.relay import open_store

    if not a.all and not a.id:
        raise ConfigError("name the dead reports to requeue with --id N (repeatable) or --all")
    cfg = _cfg(a)
    store = open_store(cfg)
    try:
        n = store.requeue(cfg.integration.platform.name, None if a.all else a.id,
                          datetime.now(UTC).timestamp())
    finally:
        store.close()
    print(f"{n} report(s) requeued")
    return 0


def cmd_check(a: argparse.Namespace) -> int:
    from nonsite.config.manifest import type_names
    from nonsite.integration.platform import ReportError, load_template, render_report, sample_report

    cfg = _cfg(a)
    p = cfg.integration.platform
    try:
        missing = [t for t in type_names() if t not in p.event_codes]
        report = sample_report()
        body = render_report(load_template(p.template), report, 1, p, timezone=cfg.timezone,
                             links=lambda key, s: f"https://evidence.example/{key}?expires={s}")
    except ReportError as exc:
        raise ConfigError(str(exc)) from None
    print(json.dumps(json.loads(body), ensure_ascii=False, indent=2))
    if missing:
        print(f"warning: no 事件类型编码 for {', '.join(missing)} (integration.platform.event_codes): their cases "
              "would go to the dead letters", file=sys.stderr)
        return 1
    return 0


def cmd_notify_test(a: argparse.Namespace) -> int:
    from nonsite.integration.relay import build_notifier

    cfg = _cfg(a)
    notifier = build_notifier(cfg)
    try:
        results = notifier.test(a.channel or None)
    except KeyError as exc:
        raise ConfigError(f"{exc.args[0]}; the channels are {', '.join(notifier.channels) or 'none'}") from None
    for cid, r in results.items():
        print(f"{cid}: sent" if r.ok else f"{cid}: FAILED: {r.error}")
    return 0 if all(r.ok for r in results.values()) else 1


def cmd_reminders_run(a: argparse.Namespace) -> int:
    """One round of the reminder job (``--once``): the reminders and escalations due now, stored for the console's
    bell and sent to the configured notification channels."""
    from nonsite.cases.cli import _config, _sessions, _when
    from nonsite.cases.notifications import run_once
    from nonsite.cases.organisation import load_organisation
    from nonsite.integration.relay import build_notifier, reminder_sender

    cfg = _config(a)
    now = _when(a.now, cfg.timezone, "--now") if a.now else datetime.now(UTC)
    assert now is not None
    sf = _sessions(a, cfg)
    notifier = None
    send = None
    if cfg.integration.notifications.channels and not a.no_channels:
        notifier = build_notifier(cfg)
        send = reminder_sender(notifier)
    try:
        organisation = load_organisation(cfg.cases.organisation) if cfg.cases.organisation else None
        result = run_once(sf, organisation, now, send=send)
        if notifier is not None:
            notifier.pump(flush=True)
    finally:
        sf.kw["bind"].dispose()
    for n in result.notices:
        print(f"{n.kind}\t{n.case_number}\t{n.step}\tlevel {n.level}\t{','.join(n.recipients)}"
              + (f"\tcc {','.join(n.copy_to)}" if n.copy_to else ""))
    print(f"{result.planned} notices due, {result.stored} notifications stored, {result.sent} sent to channels",
          file=sys.stderr)
    return 0


def add_parsers(sub: Any) -> None:
    """Register ``platform``, ``notify`` and ``reminders`` on the main parser's subcommands."""
    p = sub.add_parser("platform", help="city platform hand-off: outbox, dead letters, template check") \
        .add_subparsers(dest="platform_cmd", required=True)
    for name, fn, help_ in [("status", cmd_status, "reports pending, delivered and dead"),
                            ("dead-letters", cmd_dead_letters, "list the reports the platform refused or that ran "
                                                               "out of attempts, with the reason"),
                            ("requeue", cmd_requeue, "send dead reports again (after fixing the cause)"),
                            ("check", cmd_check, "render the platform template on a sample case; warn about types "
                                                 "without an event code")]:
        s = p.add_parser(name, help=help_)
        s.add_argument("--config", required=True, help="the YAML config")
        s.set_defaults(fn=fn)
        if name == "dead-letters":
            s.add_argument("--limit", type=int, default=100, help="most rows to list (default 100)")
        if name == "requeue":
            s.add_argument("--id", type=int, action="append", help="id of a dead report (repeatable)")
            s.add_argument("--all", action="store_true", help="every dead report")
    n = sub.add_parser("notify", help="team notifications").add_subparsers(dest="notify_cmd", required=True)
    t = n.add_parser("test", help="send a test message to each notification channel now")
    t.add_argument("--config", required=True, help="the YAML config")
    t.add_argument("--channel", action="append", help="only this channel id (repeatable)")
    t.set_defaults(fn=cmd_notify_test)
    from nonsite.cases.cli import _db_args

    rm = sub.add_parser("reminders", help="reminders before a deadline, escalations after it").add_subparsers(
        dest="reminders_cmd", required=True)
    rr = rm.add_parser("run", help="plan and store the reminders and escalations due now (console bell; channels)")
    _db_args(rr)
    rr.add_argument("--once", action="store_true", required=True,
                    help="one round, then exit (the console's own job runs every minute: cases.reminders)")
    rr.add_argument("--now", help="the instant to plan at (ISO time with a zone, or YYYY-MM-DD); default: now")
    rr.add_argument("--no-channels", action="store_true", help="store the console notifications only")
    rr.set_defaults(fn=cmd_reminders_run)
