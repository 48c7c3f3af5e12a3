"""`skintriage` whose worker's models fail with a real torch out-of-memory error (tests only).

RELIABILITY_MODEL_FAULT says where:
  - "load": loading the models fails (as a GPU without room for the weights does);
  - "run": the models load, then every analysis fails (as a GPU that runs out of memory mid-job does).
The error is torch's own: the pipeline asks torch for more memory than any machine has, and torch's
allocator raises the RuntimeError it raises for CUDA and CPU out of memory. The worker, its Celery app,
its claims, its health and its database are untouched: only `ml.triage.pipeline.Pipeline.from_model_dir` is
replaced, so no real model is loaded (this worker never gets to use one).
Run as `python -m tests.reliability.broken_worker worker ...`.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from ml.triage.pipeline import Pipeline

log = logging.getLogger("tests.reliability.broken_worker")
FAULT_ENV = "RELIABILITY_MODEL_FAULT"
TOO_MUCH = 1 << 62  # bytes: 4 EiB


def out_of_memory() -> None:
    """Ask torch for 4 EiB; its allocator raises RuntimeError ("can't allocate memory")."""
    import torch

    log.warning("broken models: asking torch for %d bytes", TOO_MUCH)
    torch.empty(TOO_MUCH, dtype=torch.uint8)


class BrokenPipeline:
    """Models that load but cannot analyse anything."""

    versions: dict[str, str] = {"broken": "1"}

    def run(self, image_bytes: bytes) -> Any:
        """Fail the way a GPU out of memory does."""
        out_of_memory()
        raise AssertionError("torch allocated 4 EiB")


def from_model_dir(*_: Any, **__: Any) -> Any:
    """Fail loading, or load models that fail, as RELIABILITY_MODEL_FAULT says."""
    fault = os.environ.get(FAULT_ENV, "")
    if fault == "load":
        out_of_memory()
    if fault == "run":
        return BrokenPipeline()
    raise SystemExit(f"{FAULT_ENV} must be 'load' or 'run', got {fault!r}")


Pipeline.from_model_dir = staticmethod(from_model_dir)  # type: ignore[method-assign]

if __name__ == "__main__":
    from skintriage.cli import main

    sys.exit(main())
