"""`celery -A worker.celery_app`: the Celery app of skintriage.broker, where the bot and console publish too.

The app and its configuration moved to skintriage.broker so that the bot and the console can publish
jobs without importing worker/ (the `layers` import contract); this module keeps the names the worker
processes, the compose files and `celery -A` use.
"""

from __future__ import annotations

from celery import Celery

from skintriage.broker import (
    BOOKING_CHECK_S,
    BOOKING_TASK,
    DELIVER_TASK,
    OUTBOX_TASK,
    PURGE_TASK,
    REMINDER_CHECK_S,
    REMINDER_TASK,
    REPLIES_QUEUE,
    ROUTES,
    SWEEP_TASK,
    TRIAGE_QUEUE,
    TRIAGE_TASK,
    beat_schedule,
    broker_options,
    create_app,
    get_app,
)

__all__ = [
    "BOOKING_CHECK_S",
    "BOOKING_TASK",
    "DELIVER_TASK",
    "OUTBOX_TASK",
    "PURGE_TASK",
    "REMINDER_CHECK_S",
    "REMINDER_TASK",
    "REPLIES_QUEUE",
    "ROUTES",
    "SWEEP_TASK",
    "TRIAGE_QUEUE",
    "TRIAGE_TASK",
    "beat_schedule",
    "broker_options",
    "create_app",
    "get_app",
]


def __getattr__(name: str) -> Celery:
    # `celery -A worker.celery_app` and `from worker.celery_app import app` find the app lazily.
    if name in {"app", "celery"}:
        return get_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
