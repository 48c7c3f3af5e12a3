"""worker.health: the failure streak that makes a worker unhealthy, and the watchdog over hung jobs."""

from __future__ import annotations

import threading
import time

from worker.health import WorkerHealth, watch


def test_failures_in_a_row_make_the_worker_unhealthy_once() -> None:
    health = WorkerHealth(max_failures=3)
    told: list[str] = []
    health.on_unhealthy(told.append)
    health.record_infrastructure_failure(RuntimeError("CUDA out of memory"))
    health.record_infrastructure_failure(RuntimeError("CUDA out of memory"))
    health.record_success()  # a photo analysed: the streak is over
    health.record_infrastructure_failure(MemoryError())
    health.record_infrastructure_failure(MemoryError())
    assert health.healthy and told == []
    health.record_infrastructure_failure(MemoryError())
    assert not health.healthy
    assert told == ["3 infrastructure failures in a row, the last MemoryError"]
    health.record_infrastructure_failure(MemoryError())
    health.record_success()
    assert not health.healthy and len(told) == 1, "only a restart makes it healthy again"
    assert health.report()["unhealthy"] == told[0]


def test_zero_max_failures_never_stops_the_worker() -> None:
    health = WorkerHealth(max_failures=0)
    for _ in range(50):
        health.record_infrastructure_failure(RuntimeError("x"))
    assert health.healthy


def test_the_watchdog_acts_once_on_a_job_past_the_deadline() -> None:
    health = WorkerHealth(job_deadline_s=0.3)
    overdue: list[int] = []
    acted = threading.Event()

    def on_overdue(case_id: int, elapsed: float) -> None:
        assert elapsed > 0.3
        overdue.append(case_id)
        acted.set()

    watch(on_overdue, health=health)
    with health.job(41):
        time.sleep(0.1)  # a quick job is left alone
    assert health.healthy and overdue == []
    with health.job(42):
        assert acted.wait(5), "the watchdog did not notice the hung job"
        time.sleep(0.5)  # still hung: not handed back twice
    assert overdue == [42]
    assert "the job for case 42 has run" in (health.unhealthy_reason or "")
    assert "past JOB_DEADLINE_S=0.3" in (health.unhealthy_reason or "")


def test_no_deadline_means_no_watchdog_verdict() -> None:
    health = WorkerHealth(job_deadline_s=0)
    with health.job(7):
        assert health.overdue_job(now=time.monotonic() + 10_000) is None
