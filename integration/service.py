"""The notifications inside a running process: :class:`NotificationService` watches the case database and hands
what is news to the :class:`~nonsite.integration.notify.Notifier` (which batches, rate-limits and sends).

Every ``integration.notifications.poll_s`` seconds a round reads, from the case database:

- the drafts created since the last round → ``new_alert`` notices
  (:func:`~nonsite.integration.relay.notify_new_alerts`);
- the 督办 orders issued since the last round → ``supervision`` notices naming the case and the instruction
  (:func:`~nonsite.integration.relay.notify_new_supervisions`).

Both remember where they stopped in the hand-off database (table ``integration_cursors``), so a restart neither
repeats what was sent nor floods the chats with history (a first start begins at the newest row). The bureau's
reminder job (``cases.reminders``) hands its reminders and overdue escalations to the same notifier through
:meth:`NotificationService.reminder_send`.

Which process runs it: the one that serves the console (``nonsite run``, or the distributed ``nonsite console``
role — never the drafter), built by ``app.console_app`` and stopped with the console
(:meth:`NotificationService.stop`: the watch thread ends, then what waits is flushed once and the hand-off
database is closed). Run one console instance with notifications enabled: two would both send.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from nonsite.config.root import NonsiteConfig
from nonsite.integration.notify import Notifier
from nonsite.integration.outbox import HandoffStore
from nonsite.integration.relay import (
    build_notifier,
    notify_new_alerts,
    notify_new_supervisions,
    open_store,
    reminder_sender,
)

__all__ = ["NotificationService", "build_notification_service"]

log = logging.getLogger(__name__)


class NotificationService:
    """The watch thread over the case database, the notifier and its worker (see the module docstring)."""

    def __init__(self, notifier: Notifier, store: HandoffStore, session_factory: sessionmaker[Session], *,
                 poll_s: float = 5.0, timezone: str = "Asia/Shanghai") -> None:
        if poll_s <= 0:
            raise ValueError("the notifications' poll interval must be above 0 seconds (e.g. 5)")
        self.notifier, self.store, self.session_factory = notifier, store, session_factory
        self.poll_s, self.timezone = poll_s, timezone
        self.rounds = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> tuple[int, int]:
        """One round: (new alerts, 督办 orders) queued on the notifier."""
        alerts = notify_new_alerts(self.session_factory, self.notifier, self.store)
        orders = notify_new_supervisions(self.session_factory, self.notifier, self.store, timezone=self.timezone)
        self.rounds += 1
        return alerts, orders

    def reminder_send(self) -> Callable[[Any, Any], None]:
        """What the bureau's reminder job calls for each fresh reminder / escalation (``reminder`` / ``overdue``)."""
        return reminder_sender(self.notifier)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> NotificationService:
        """Start the notifier's worker and the watch thread (its first round sets the cursors on a first start)."""
        if self._thread is None:
            self.notifier.start()
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="notifications-watch", daemon=True)
            self._thread.start()
            log.info("notifications: %d channel(s), new alerts and 督办 checked every %.0f s",
                     len(self.notifier.channels), self.poll_s)
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception:  # a database hiccup: the cursor did not move, the next round takes it up
                log.exception("notification round failed; retrying in %.0f s", self.poll_s)
            self._stop.wait(self.poll_s)

    def stop(self) -> None:
        """End the watch thread, stop the notifier (what waits is sent once more) and close the hand-off database."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        self.notifier.stop(flush=True)
        self.store.close()


def build_notification_service(cfg: NonsiteConfig,
                               session_factory: sessionmaker[Session]) -> NotificationService | None:
    """The service of ``integration.notifications`` (None when not enabled or without channels); MissingSecret
    names an environment variable a channel needs and that is unset."""
    n = cfg.integration.notifications
    if not n.enabled or not n.channels:
        return None
    notifier = build_notifier(cfg)
    return NotificationService(notifier, open_store(cfg), session_factory, poll_s=n.poll_s,
                               timezone=cfg.timezone)
