"""What a failure means for a job: the one place that maps exceptions to a course of action.

`classify`: what a failed triage job means for its case.

    BAD_INPUT       about this job (the photo, or a bug it triggers): the case fails and the patient is
                    told; never retried, since the same photo would fail the same way.
    MODEL_MISSING   MODEL_DIR has no trusted model: the case stays queued, untouched, until one is installed.
    TRANSIENT       the database or the image store is away: retried with backoff, no attempt used.
    INFRASTRUCTURE  this worker cannot run the models (load error, out of memory, a crash in torch or
                    TensorFlow): the case goes back to the queue without using an attempt, and the failure
                    counts towards this worker declaring itself unhealthy (worker.health).

Photos that cannot be analysed never get here: the pipeline turns them into a RETAKE answer.

`send_failure`: what a failed send to Telegram means, for an answer and for an outbox message alike.

    WITHDRAWN  AnswerWithdrawn: the patient's /delete removed the message's row while it was on its way;
               what is not out yet is not sent, and there is no row left to record anything on.
    REFUSED    Forbidden (the patient blocked the bot, the chat is gone) or BadRequest (refused even as plain
               text): never retried; the row records why.
    WAIT       RetryAfter (flood control): wait as long as Telegram says, then send again.
    RETRY      TimedOut, NetworkError, another TelegramError, InvalidToken (logged as an error: fix
               TELEGRAM_BOT_TOKEN), the image store or the database away: back off and retry.
    Anything else is a bug and goes up.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum

from sqlalchemy.exc import DBAPIError, OperationalError
from telegram.error import BadRequest, Forbidden, InvalidToken, NetworkError, RetryAfter, TelegramError, TimedOut

from skintriage.exceptions import AnswerWithdrawn, ImageNotFound, InfrastructureError, InvalidKey, StorageError


class Failure(StrEnum):
    """The course a failed job takes (see the module docstring)."""

    BAD_INPUT = "bad_input"
    MODEL_MISSING = "model_missing"
    TRANSIENT = "transient"
    INFRASTRUCTURE = "infrastructure"


def _is_library_error(exc: BaseException) -> bool:
    """TensorFlow's own errors (e.g. ResourceExhaustedError, its out of memory), without importing TensorFlow."""
    tf = sys.modules.get("tensorflow")
    op_error = getattr(getattr(tf, "errors", None), "OpError", None)
    return isinstance(op_error, type) and isinstance(exc, op_error)


def classify(exc: BaseException) -> Failure:
    """The course a job takes after `exc`; anything not known to be the worker's or a service's fault is BAD_INPUT."""
    from ml.errors import InvalidImageError, ModelUnavailableError

    if isinstance(exc, ImageNotFound | InvalidKey | InvalidImageError):
        return Failure.BAD_INPUT
    if isinstance(exc, ModelUnavailableError):
        return Failure.MODEL_MISSING
    if isinstance(exc, StorageError | OperationalError):
        return Failure.TRANSIENT
    if isinstance(exc, DBAPIError):
        # A dropped connection surfaces as DBAPIError with connection_invalidated; others are our SQL's fault.
        return Failure.TRANSIENT if exc.connection_invalidated else Failure.BAD_INPUT
    # torch reports CUDA out of memory (torch.OutOfMemoryError), allocator and kernel failures as RuntimeError;
    # a model file that cannot be read is an OSError; a broken install an ImportError.
    if isinstance(exc, InfrastructureError | MemoryError | RuntimeError | OSError | ImportError):
        return Failure.INFRASTRUCTURE
    if _is_library_error(exc):
        return Failure.INFRASTRUCTURE
    return Failure.BAD_INPUT


class Send(StrEnum):
    """What a failed send does next (see the module docstring)."""

    WITHDRAWN = "withdrawn"
    REFUSED = "refused"
    WAIT = "wait"
    RETRY = "retry"


@dataclass(frozen=True)
class SendFailure:
    """A failed send, translated: what to do, why (recorded on the row and in the metrics), how long to wait."""

    action: Send
    reason: str
    wait_s: float | None = None


def _retry_after_s(exc: RetryAfter) -> float:
    value = exc.retry_after
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def send_failure(exc: BaseException) -> SendFailure | None:
    """What a failed send to Telegram means; None for an error that is no send failure (a bug: it goes up)."""
    # Order matters: BadRequest and TimedOut are NetworkErrors, every one of them a TelegramError.
    if isinstance(exc, AnswerWithdrawn):
        return SendFailure(Send.WITHDRAWN, "withdrawn")
    if isinstance(exc, Forbidden):
        return SendFailure(Send.REFUSED, "forbidden")
    if isinstance(exc, BadRequest):
        return SendFailure(Send.REFUSED, "bad_request")
    if isinstance(exc, RetryAfter):
        return SendFailure(Send.WAIT, "retry_after", _retry_after_s(exc))
    if isinstance(exc, InvalidToken):
        return SendFailure(Send.RETRY, "invalid_token")
    if isinstance(exc, TimedOut):
        return SendFailure(Send.RETRY, "timed_out")
    if isinstance(exc, NetworkError):
        return SendFailure(Send.RETRY, "network")
    if isinstance(exc, TelegramError):
        return SendFailure(Send.RETRY, "telegram")
    if isinstance(exc, StorageError):
        return SendFailure(Send.RETRY, "storage")
    if classify(exc) is Failure.TRANSIENT:
        return SendFailure(Send.RETRY, "database")
    return None
