"""What a failed triage job means for its case: the one place that maps exceptions to a course of action.

    BAD_INPUT       about this job (the photo, or a bug it triggers): the case fails and the patient is
                    told; never retried, since the same photo would fail the same way.
    MODEL_MISSING   MODEL_DIR has no trusted model: the case stays queued, untouched, until one is installed.
    TRANSIENT       the database or the image store is away: retried with backoff, no attempt used.
    INFRASTRUCTURE  this worker cannot run the models (load error, out of memory, a crash in torch or
                    TensorFlow): the case goes back to the queue without using an attempt, and the failure
                    counts towards this worker declaring itself unhealthy (worker.health).

Photos that cannot be analysed never get here: the pipeline turns them into a RETAKE answer.
"""

from __future__ import annotations

import sys
from enum import StrEnum

from sqlalchemy.exc import DBAPIError, OperationalError

from skintriage.exceptions import ImageNotFound, InfrastructureError, InvalidKey, StorageError


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
