"""The booking question's periodic job: queue the question for HIGH answers old enough, then enqueue it.

Runs from beat (the `ask_booking` task) every BOOKING_CHECK_S. Each question is committed before it is
enqueued; when the broker is down the sweeper sends it later, like any outbox message.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from skintriage import booking
from skintriage.db import session_factory
from skintriage.settings import Settings
from worker import enqueue

log = logging.getLogger(__name__)


def ask_once(*, settings: Settings, now: datetime | None = None) -> int:
    """Queue and enqueue every due booking question once (none with BOOKING_QUESTION_DAYS=0); returns how many."""
    if settings.booking_question_days <= 0:
        return 0
    after = timedelta(days=settings.booking_question_days)
    asked = 0
    sessions = session_factory(settings.resolved_database_url)
    with sessions.begin() as session:
        due = booking.due_cases(session=session, after=after, now=now)
    for case_id in due:
        with sessions.begin() as session:  # committed before it is enqueued
            message = booking.queue_question(session=session, case_id=case_id, now=now)
        if message is None:
            continue  # asked meanwhile (another run, or a photo of the same album)
        asked += 1
        if not enqueue.enqueue_outbox(message.id):
            log.warning("reply queue unreachable; booking question %s waits for the sweeper", message.id)
    if asked:
        log.info("queued %d booking questions", asked)
    return asked
