"""`skintriage` whose worker analyses each photo RELIABILITY_SLOW_PIPELINE_S seconds late (tests only).

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

from worker import pipeline_cache

log = logging.getLogger("tests.reliability.slow_worker")
_load = pipeline_cache.get_pipeline


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


pipeline_cache.get_pipeline = get_pipeline

if __name__ == "__main__":
    from skintriage.cli import main

    sys.exit(main())
