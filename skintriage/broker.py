"""The Celery app, built from Settings: queues, routes, reliability options and the beat schedule.

Below the bot and the console on purpose: both publish jobs (skintriage.queueing), so the app lives
in the domain package and neither imports worker/. Light: nothing here imports torch, TensorFlow or
python-telegram-bot (the `publishing-is-light` import contract). The tasks live in worker.tasks and
are only imported by worker processes; `celery -A worker.celery_app` names this app through worker/.

`app` is created on first access (module __getattr__), so importing this module has no side effects.
"""

from __future__ import annotations

import threading
from typing import Any

from celery import Celery
from kombu import Exchange, Queue

from skintriage.settings import Settings, get_settings

TRIAGE_QUEUE = "triage"  # the GPU worker: --pool solo, one process per GPU
REPLIES_QUEUE = "replies"  # the reply sender, plus the light periodic jobs

TRIAGE_TASK = "worker.tasks.triage_case"
DELIVER_TASK = "worker.tasks.deliver_case"
OUTBOX_TASK = "worker.tasks.send_outbox"
SWEEP_TASK = "worker.tasks.sweep"
PURGE_TASK = "worker.tasks.purge_images"
BOOKING_TASK = "worker.tasks.ask_booking"
REMINDER_TASK = "worker.tasks.send_reminders"

ROUTES = {
    TRIAGE_TASK: {"queue": TRIAGE_QUEUE},
    DELIVER_TASK: {"queue": REPLIES_QUEUE},
    OUTBOX_TASK: {"queue": REPLIES_QUEUE},
    SWEEP_TASK: {"queue": REPLIES_QUEUE},
    PURGE_TASK: {"queue": REPLIES_QUEUE},
    BOOKING_TASK: {"queue": REPLIES_QUEUE},
    REMINDER_TASK: {"queue": REPLIES_QUEUE},
}
# How often beat looks for HIGH answers whose booking question is due (it is asked days later; minutes do not matter).
BOOKING_CHECK_S = 1800.0
# How often beat looks for due re-check reminders (they come months apart; within the hour is soon enough).
REMINDER_CHECK_S = 1800.0

# Publishing must give up fast when the broker is down or hangs: the bot keeps the case and the sweeper
# enqueues it later, so a patient never waits on a dead Redis. The limits are settings (REDIS_*_TIMEOUT_S).

_apps: dict[tuple[str, str], Celery] = {}
_lock = threading.Lock()


def broker_options(settings: Settings) -> dict[str, Any]:
    """Transport options for the configured broker (folders for filesystem://, timeouts for Redis)."""
    url = settings.resolved_broker_url
    if url.startswith("filesystem://"):
        root = settings.broker_folder
        queue_dir, control_dir, processed_dir = root / "queue", root / "control", root / "processed"
        for folder in (queue_dir, control_dir, processed_dir):
            folder.mkdir(parents=True, exist_ok=True)
        # One folder for both directions: every process on this machine reads and writes the same queue.
        return {
            "data_folder_in": str(queue_dir),
            "data_folder_out": str(queue_dir),
            "control_folder": str(control_dir),
            "processed_folder": str(processed_dir),
            "store_processed": False,
            "polling_interval": 0.5,
        }
    if url.startswith(("redis://", "rediss://", "sentinel://")):
        return {
            "socket_connect_timeout": settings.redis_connect_timeout_s,
            "socket_timeout": settings.redis_socket_timeout_s,
            "socket_keepalive": True,
            "retry_on_timeout": False,
            # Connection attempts when publishing: one quick retry, not kombu's default 2 s sleeps.
            "max_retries": 1,
            "interval_start": 0.2,
            "interval_step": 0.5,
            "interval_max": 0.5,
            "health_check_interval": settings.redis_health_check_interval_s,
            # A job a dead worker held (acks_late) is redelivered after this; the sweeper is the backstop.
            "visibility_timeout": 3600,
        }
    return {}


def beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    """Periodic jobs: the sweeper every SWEEP_INTERVAL_S, the booking question's and the re-check reminders'
    checks, image retention daily."""
    return {
        "sweep-stuck-cases": {
            "task": SWEEP_TASK,
            "schedule": float(settings.sweep_interval_s),
            "options": {"queue": REPLIES_QUEUE, "expires": float(settings.sweep_interval_s)},
        },
        "ask-booking-questions": {
            "task": BOOKING_TASK,
            "schedule": BOOKING_CHECK_S,
            "options": {"queue": REPLIES_QUEUE, "expires": BOOKING_CHECK_S},
        },
        "send-recheck-reminders": {
            "task": REMINDER_TASK,
            "schedule": REMINDER_CHECK_S,
            "options": {"queue": REPLIES_QUEUE, "expires": REMINDER_CHECK_S},
        },
        "purge-expired-images": {
            "task": PURGE_TASK,
            "schedule": 24 * 3600.0,
            "options": {"queue": REPLIES_QUEUE, "expires": 3600.0},
        },
    }


def create_app(settings: Settings) -> Celery:
    """A Celery app configured from settings (no result backend: results live in the case rows)."""
    url = settings.resolved_broker_url
    if url.rstrip("/") == "filesystem:":
        url = "filesystem://localhost//"  # the same transport; kombu warns about a URL without a host
    app = Celery("skintriage", broker=url, include=["worker.tasks"], set_as_current=False)
    default_exchange = Exchange("skintriage", type="direct")
    app.conf.update(
        broker_transport_options=broker_options(settings),
        broker_connection_timeout=settings.redis_connect_timeout_s,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,  # a worker waits for the broker forever, never exits
        # Publishing from the bot: one quick try, no infinite retry (see skintriage.queueing).
        task_publish_retry=False,
        task_queues=(
            Queue(TRIAGE_QUEUE, default_exchange, routing_key=TRIAGE_QUEUE),
            Queue(REPLIES_QUEUE, default_exchange, routing_key=REPLIES_QUEUE),
        ),
        task_default_queue=REPLIES_QUEUE,
        task_default_exchange="skintriage",
        task_default_routing_key=REPLIES_QUEUE,
        task_routes=ROUTES,
        task_ignore_result=True,
        result_backend=None,
        task_serializer="json",
        accept_content=["json"],
        # A job is acknowledged only when it finished; a worker killed mid-job gives it back.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
        worker_send_task_events=False,
        worker_cancel_long_running_tasks_on_connection_loss=True,
        beat_schedule=beat_schedule(settings),
        beat_schedule_filename=str((settings.data_dir / "celerybeat-schedule").resolve()),
        timezone="UTC",
        enable_utc=True,
    )
    return app


def get_app(settings: Settings | None = None) -> Celery:
    """The process's app for the current settings (rebuilt when the broker or data folder changes)."""
    settings = settings or get_settings()
    key = (settings.resolved_broker_url, str(settings.data_dir.resolve()))
    with _lock:
        app = _apps.get(key)
        if app is None:
            app = _apps[key] = create_app(settings)
    return app


def __getattr__(name: str) -> Celery:
    # `celery -A worker.celery_app` (which re-exports this) and `from skintriage.broker import app` find it lazily.
    if name in {"app", "celery"}:
        return get_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
