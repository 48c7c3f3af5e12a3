"""The domain's errors.

SkinTriageError
 +-- ConfigurationError   settings that cannot work (placeholder secret outside the demo, bad URL)
 |    +-- AlreadyRunning  a second bot or beat for the same database; only one may run
 +-- InfrastructureError  this worker cannot run the models (load error, out of memory, library crash);
 |                        the case waits for a healthy worker and keeps its attempts
 +-- TransientError       the database, the image store or Telegram is away for now; the worker retries the job
 |                        (worker.failures translates the libraries' errors into it)
 +-- StorageError         the image store failed to read or write
 |    +-- ImageNotFound   no object under that key (deleted by retention or by the patient)
 |    +-- InvalidKey      a key that is not one of ours (path traversal, odd characters)
 +-- CaseError            a case cannot move to the requested state
      +-- CaseNotFound    no such case for this patient
      +-- RateLimited     the patient sent too many photos; `retry_after_s` says when to try again
      +-- TooManyInFlight the patient already has the maximum number of cases being analysed
      +-- AnswerWithdrawn the patient deleted their data while the answer was on its way: send no more of it
"""

from __future__ import annotations


class SkinTriageError(Exception):
    """Base class of the domain's errors."""


class ConfigurationError(SkinTriageError):
    """Settings that cannot work; the message says which variable to change."""


class AlreadyRunning(ConfigurationError):
    """Another process holds this role's lease (one bot and one beat per deployment)."""


class InfrastructureError(SkinTriageError):
    """The worker's models, memory or libraries failed; not the photo's fault, so not the case's."""


class TransientError(SkinTriageError):
    """A failure a later try gets past (raised `from` the library's error); the reply tasks retry it with backoff."""


class StorageError(SkinTriageError):
    """The image store failed."""


class ImageNotFound(StorageError):
    """No image under that key."""


class InvalidKey(StorageError):
    """A storage key that is not content-addressed by us."""


class CaseError(SkinTriageError):
    """A case cannot do what was asked."""


class CaseNotFound(CaseError):
    """No such case for this patient."""


class RateLimited(CaseError):
    """Too many photos in the rate window."""

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(f"rate limit reached; try again in {retry_after_s} s")
        self.retry_after_s = retry_after_s


class TooManyInFlight(CaseError):
    """Too many of the patient's cases are still being analysed."""


class AnswerWithdrawn(CaseError):
    """The case is gone (the patient's /delete) while its answer was on its way; nothing more of it is sent."""
