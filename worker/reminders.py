"""The re-check reminders' periodic job: queue every due reminder once, then enqueue it.

Runs from beat (the `send_reminders` task) every REMINDER_CHECK_S. Each reminder is committed (with its next
time moved on) in its own unit of work before it is enqueued; when the broker is down the sweeper sends it
later, like any outbox message.
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
    sessions = session_factory(settings.resolved_database_url)
    with sessions.begin() as session:
        due = reminders.due(session=session, now=now)
    queued = 0
    for reminder_id in due:
        with sessions.begin() as session:
            message = reminders.queue_due(session=session, reminder_id=reminder_id, now=now)
            message_id = message.id if message is not None else None
        if message_id is None:
            continue  # sent meanwhile by another run, or stopped
        queued += 1
        if not enqueue.enqueue_outbox(message_id):
            log.warning("reply queue unreachable; reminder %s waits for the sweeper", message_id)
    if queued:
        log.info("queued %d re-check reminders", queued)
    return queued
