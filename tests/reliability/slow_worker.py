"""`skintriage` whose worker analyses each photo RELIABILITY_SLOW_PIPELINE_S seconds late (tests only).

RELIABILITY_SLOW_ANSWER_S likewise makes reading each answer's overlay (as from a slow image store) and
composing each outbox message slow: after the delivery was claimed, before anything is sent; for the tests of
a /delete while an answer is on its way.

The fault tests need a job that is deterministically in the middle of its work when they SIGKILL the
worker or hand the same case to a second worker. The worker, its Celery app, its claims and its real
models are untouched: only `worker.pipeline_cache.get_pipeline` is wrapped so that `run` sleeps first,
after the case was claimed (status processing). Run as `python -m tests.reliability.slow_worker worker ...`.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any

import bot.followups
from skintriage.storage import LocalImageStore
from worker import pipeline_cache

log = logging.getLogger("tests.reliability.slow_worker")
_load = pipeline_cache.get_pipeline
_get_image = LocalImageStore.get
_compose_followup = bot.followups.compose


class SlowPipeline:
    """The real pipeline, with a pause before each analysis."""

    def __init__(self, inner: Any, delay_s: float) -> None:
        self.inner = inner
        self.delay_s = delay_s

    def run(self, image_bytes: bytes) -> Any:
        """Sleep, then run the real pipeline."""
        log.warning("slow pipeline: analysis starts in %.1f s", self.delay_s)
        time.sleep(self.delay_s)
        return self.inner.run(image_bytes)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def get_pipeline(settings: Any) -> Any:
    """The worker's pipeline, slowed down."""
    return SlowPipeline(_load(settings), float(os.environ.get("RELIABILITY_SLOW_PIPELINE_S", "0")))


def _slow_answer(what: str) -> None:
    delay_s = float(os.environ.get("RELIABILITY_SLOW_ANSWER_S", "0"))
    if delay_s:
        log.warning("%s takes %.1f s", what, delay_s)
        time.sleep(delay_s)


def get_image(self: LocalImageStore, key: str) -> bytes:
    """Read an image; an answer's overlay slowly."""
    if key.startswith("overlay/"):
        _slow_answer("slow answer: reading the overlay")
    return _get_image(self, key)


def compose_followup(*args: Any, **kwargs: Any) -> Any:
    """Compose an outbox message, slowly."""
    _slow_answer("slow message: composing")
    return _compose_followup(*args, **kwargs)


pipeline_cache.get_pipeline = get_pipeline
LocalImageStore.get = get_image  # type: ignore[method-assign]
bot.followups.compose = compose_followup

if __name__ == "__main__":
    from skintriage.cli import main

    sys.exit(main())
