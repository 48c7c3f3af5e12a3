"""Hand jobs to the broker by task name; never raises and never blocks the bot for long.

Callers commit the row first, then call these. A False return means the broker could not be reached
within ENQUEUE_TIMEOUT_S: the row stays as it is and the periodic sweeper enqueues it later, so a
broker outage delays answers but loses no case. Imports nothing heavy: the bot and the console import
this (it lives in the domain package so that neither imports worker/).
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

from skintriage.broker import DELIVER_TASK, OUTBOX_TASK, REPLIES_QUEUE, TRIAGE_QUEUE, TRIAGE_TASK, get_app
from skintriage.logconfig import redact

log = logging.getLogger(__name__)

ENQUEUE_TIMEOUT_S = 2.0

# Publishing runs on a small pool so a hung broker connection can never hold the caller past the
# timeout; a publish that completes late only produces a duplicate job, which the tasks ignore.
_executor: ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()


def _pool() -> ThreadPoolExecutor:
    global _executor
    with _executor_lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="enqueue")
        return _executor


def _publish(task: str, arg: int, queue: str) -> None:
    app = get_app()
    app.send_task(task, args=[arg], queue=queue, routing_key=queue, retry=False)


def _send(task: str, arg: int, queue: str) -> bool:
    if not isinstance(arg, int) or isinstance(arg, bool):
        raise ValueError(f"jobs take an integer row id, got {type(arg).__name__}")
    try:
        future = _pool().submit(_publish, task, arg, queue)
        future.result(timeout=ENQUEUE_TIMEOUT_S)
    except FutureTimeout:
        log.warning("broker did not answer within %.1f s; %s(%d) left for the sweeper", ENQUEUE_TIMEOUT_S, task, arg)
        return False
    except Exception as exc:  # noqa: BLE001 - any broker failure means "not enqueued", never a crash in the bot
        log.warning("could not enqueue %s(%d): %s: %s", task, arg, type(exc).__name__, redact(str(exc)))
        return False
    log.debug("enqueued %s(%d) on %s", task, arg, queue)
    return True


def enqueue_triage(case_id: int) -> bool:
    """Queue a committed case for analysis on the triage queue; False when the broker is unreachable."""
    return _send(TRIAGE_TASK, case_id, TRIAGE_QUEUE)


def enqueue_delivery(case_id: int) -> bool:
    """Queue sending a finished case's answer on the replies queue; False when the broker is unreachable."""
    return _send(DELIVER_TASK, case_id, REPLIES_QUEUE)


def enqueue_outbox(message_id: int) -> bool:
    """Queue sending a committed outbox message on the replies queue; False when the broker is unreachable."""
    return _send(OUTBOX_TASK, message_id, REPLIES_QUEUE)
