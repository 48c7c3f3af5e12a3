"""The re-check reminders' periodic job: queue every due reminder once, then enqueue it.

Runs from beat (the `send_reminders` task) every REMINDER_CHECK_S. Each reminder is committed (with its next
time moved on) before it is enqueued; when the broker is down the sweeper sends it later, like any outbox message.
"""

from __future__ import annotations

import logging
from datetime import datetime

from skintriage import reminders
from skintriage.db import session_factory
from skintriage.settings import Settings
from worker import enqueue

log = logging.getLogger(__name__)


def send_once(*, settings: Settings, now: datetime | None = None) -> int:
    """Queue and enqueue every due re-check reminder once; returns how many were queued."""
    queued = 0
    with session_factory(settings.resolved_database_url)() as session:
        for reminder_id in reminders.due(session=session, now=now):
            message = reminders.queue_due(session=session, reminder_id=reminder_id, now=now)
            session.commit()
            if message is None:
                continue  # sent meanwhile by another run, or stopped
            queued += 1
            if not enqueue.enqueue_outbox(message.id):
                log.warning("reply queue unreachable; reminder %s waits for the sweeper", message.id)
    if queued:
        log.info("queued %d re-check reminders", queued)
    return queued
