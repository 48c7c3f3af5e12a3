"""Whether this triage worker can still be trusted with jobs: its failure streak, and a watchdog for hung jobs.

A worker whose models keep failing (WORKER_MAX_INFRA_FAILURES infrastructure failures in a row, see
worker.failures) or whose job runs past JOB_DEADLINE_S (the solo pool enforces no time limit) turns itself
unhealthy for good: /healthz answers 503 with the reason, it stops consuming the triage queue, and a job
that still reaches it is handed back to the queue for a healthy worker. Only a restart makes it healthy
again (a fresh process, a fresh CUDA context): the orchestrator restarts it on the failing /healthz.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

log = logging.getLogger(__name__)


class WorkerHealth:
    """The failure streak, the job under way and the reason this worker became unhealthy, if it did."""

    def __init__(self, *, max_failures: int = 3, job_deadline_s: float = 0.0) -> None:
        self.max_failures = max_failures
        self.job_deadline_s = job_deadline_s
        self.failures_in_a_row = 0
        self.unhealthy_reason: str | None = None
        self._jobs: dict[int, float] = {}  # case id -> monotonic start, for the jobs under way
        self._overdue: set[int] = set()  # jobs the watchdog already acted on
        self._listeners: list[Callable[[str], None]] = []
        self._lock = threading.Lock()

    def configure(self, *, max_failures: int, job_deadline_s: float) -> None:
        """Apply the settings (the worker's start)."""
        self.max_failures, self.job_deadline_s = max_failures, job_deadline_s

    @property
    def healthy(self) -> bool:
        """False once this worker stopped taking triage jobs."""
        return self.unhealthy_reason is None

    def on_unhealthy(self, listener: Callable[[str], None]) -> None:
        """Call `listener(reason)` once, when the worker becomes unhealthy (e.g. to stop consuming)."""
        self._listeners.append(listener)

    def mark_unhealthy(self, reason: str) -> None:
        """Stop trusting this worker; the first reason is kept and the listeners are told once."""
        with self._lock:
            if self.unhealthy_reason is not None:
                return
            self.unhealthy_reason = reason
        log.error("worker unhealthy: %s; it takes no more triage jobs until it is restarted", reason)
        for listener in self._listeners:
            try:
                listener(reason)
            except Exception:  # one broken listener must not keep the others from running
                log.exception("unhealthy listener %r failed", listener)

    def record_success(self) -> None:
        """A job ran the models: the streak of failures is over."""
        with self._lock:
            self.failures_in_a_row = 0

    def record_infrastructure_failure(self, exc: BaseException) -> None:
        """The models failed on this worker (not the photo's fault); too many in a row make it unhealthy."""
        with self._lock:
            self.failures_in_a_row += 1
            count = self.failures_in_a_row
        if self.max_failures and count >= self.max_failures:
            self.mark_unhealthy(f"{count} infrastructure failures in a row, the last {type(exc).__name__}")

    @contextmanager
    def job(self, case_id: int) -> Iterator[None]:
        """Mark the case as the job under way, for the watchdog."""
        with self._lock:
            self._jobs[case_id] = time.monotonic()
        try:
            yield
        finally:
            with self._lock:
                self._jobs.pop(case_id, None)
                self._overdue.discard(case_id)

    def overdue_job(self, now: float | None = None) -> tuple[int, float] | None:
        """(case id, seconds running) of a job past the deadline that the watchdog has not acted on yet."""
        if not self.job_deadline_s:
            return None
        now = time.monotonic() if now is None else now
        with self._lock:
            for case_id, started in self._jobs.items():
                if now - started > self.job_deadline_s and case_id not in self._overdue:
                    self._overdue.add(case_id)
                    return case_id, now - started
        return None

    def report(self) -> dict[str, Any]:
        """The part of /healthz this state answers."""
        now = time.monotonic()
        with self._lock:
            report: dict[str, Any] = {"infrastructure_failures_in_a_row": self.failures_in_a_row}
            if self._jobs:
                report["longest_job_s"] = round(now - min(self._jobs.values()), 1)
        if self.unhealthy_reason is not None:
            report["unhealthy"] = self.unhealthy_reason
        return report


# This process's worker (one triage job at a time with the solo pool).
state = WorkerHealth()


def watch(on_overdue: Callable[[int, float], None], *, health: WorkerHealth = state) -> threading.Thread:
    """Start the watchdog thread: a job past JOB_DEADLINE_S makes the worker unhealthy and calls on_overdue."""

    def loop() -> None:
        while True:
            time.sleep(max(min(health.job_deadline_s / 4, 1.0), 0.1))
            overdue = health.overdue_job()
            if overdue is None:
                continue
            case_id, elapsed = overdue
            health.mark_unhealthy(
                f"the job for case {case_id} has run {elapsed:.0f} s, past JOB_DEADLINE_S={health.job_deadline_s:g}"
            )
            try:
                on_overdue(case_id, elapsed)
            except Exception:  # the watchdog must keep watching whatever the database does
                log.exception("watchdog could not hand case %d back", case_id)

    thread = threading.Thread(target=loop, name="job-watchdog", daemon=True)
    thread.start()
    return thread
