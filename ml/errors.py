"""Errors raised by the ML code.

MLError
 +-- InvalidImageError     the photo cannot be decoded or used; carries a RetakeReason for the patient
 +-- ModelUnavailableError no trusted model to run (missing card, hash mismatch, bad label order)

WeightsUnavailableError (a ValueError: a training argument points at weights that cannot be used)
"""

from __future__ import annotations

from skintriage.vocabulary import RetakeReason


class MLError(Exception):
    """Base class of the ML package's errors."""


class InvalidImageError(MLError):
    """The bytes are not a usable photo; `reason` says which advice the patient gets."""

    def __init__(self, reason: RetakeReason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


class ModelUnavailableError(MLError):
    """No model can be trusted to run; the worker must not answer patients."""


class WeightsUnavailableError(ValueError):
    """Requested initial weights cannot be found or read; the message says where to put them."""
