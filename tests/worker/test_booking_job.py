"""The booking question's periodic job: on beat's schedule, and off with BOOKING_QUESTION_DAYS=0."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from skintriage import cases
from skintriage.db import session_factory
from skintriage.models import Case, CaseStatus, OutboxMessage, utcnow
from skintriage.settings import get_settings


def test_beat_runs_the_booking_job_on_the_replies_queue(settings_env) -> None:
    from worker.celery_app import BOOKING_TASK, REPLIES_QUEUE, ROUTES, beat_schedule

    entry = beat_schedule(get_settings())["ask-booking-questions"]
    assert entry["task"] == BOOKING_TASK == "worker.tasks.ask_booking"
    assert entry["options"]["queue"] == REPLIES_QUEUE == ROUTES[BOOKING_TASK]["queue"]
    import worker.tasks

    assert worker.tasks.ask_booking.name == BOOKING_TASK


def test_no_question_when_booking_question_days_is_zero(settings_env, sqlite_url, monkeypatch) -> None:
    from worker.booking import ask_once

    with session_factory(sqlite_url)() as session:
        user = cases.get_or_create_user(session=session, telegram_user_id=901, chat_id=901, language="en")
        session.flush()
        at = utcnow() - timedelta(days=5)
        session.add(Case(
            user_id=user.id, status=CaseStatus.DONE, tier="HIGH", language="en", image_sha256="0" * 64,
            received_at=at, delivered_at=at, reply_text="Case #1", quality_flags=[], model_versions={}, timings_ms={},
        ))  # fmt: skip
        session.commit()
    monkeypatch.setenv("DATABASE_URL", sqlite_url)
    monkeypatch.setenv("BOOKING_QUESTION_DAYS", "0")
    get_settings.cache_clear()
    assert ask_once(settings=get_settings()) == 0
    monkeypatch.setenv("BOOKING_QUESTION_DAYS", "3")
    get_settings.cache_clear()
    assert ask_once(settings=get_settings()) == 1
    with session_factory(sqlite_url)() as session:
        assert [m.kind for m in session.scalars(select(OutboxMessage))] == ["booking"]
