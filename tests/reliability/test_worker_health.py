"""A broken worker must not fail patients, and one bot and one beat run per deployment (real processes).

- A worker whose models fail (torch out of memory at load or at every analysis) leaves the case's attempts
  alone, turns unhealthy after WORKER_MAX_INFRA_FAILURES failures in a row, stops taking triage jobs, and a
  healthy worker answers the case.
- A job that hangs past JOB_DEADLINE_S is noticed by the worker's watchdog: the worker turns unhealthy and the
  case goes to another worker at once (not after STUCK_AFTER_S).
- A second bot, a second beat and a worker with an embedded beat next to a beat refuse to start.
"""

from __future__ import annotations

import itertools
import subprocess
import time
from typing import Any

import pytest

from skintriage.models import CaseStatus
from tests.reliability.conftest import Service, wait
from tests.reliability.test_faults import ANSWER_TIMEOUT_S, _held_jobs, _photo_case, _slow_analysis_started
from tests.stack import healthz, spawn, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.redis, pytest.mark.postgres]

_patients = itertools.count(7_300_001)

# The sweeper runs often, but treats work as stuck only after 30 s: an analysis on a busy machine is not
# mistaken for a stuck one, and what recovers a case within a test is the worker's health, not the sweeper.
SWEEP = {"STUCK_AFTER_S": "30", "SWEEP_INTERVAL_S": "2"}


def _unhealthy(proc: Any) -> dict[str, Any] | None:
    """The worker's /healthz report once it says unhealthy."""
    report = healthz(proc.health_port)
    return report if report and report.get("unhealthy") and report.get("ok") is False else None


@pytest.mark.parametrize("fault", ["run", "load"])
def test_models_failing_on_a_worker_leave_the_case_to_a_healthy_worker(make_service, fault: str) -> None:
    svc = make_service(**SWEEP)
    broken = svc.start_worker("broken-worker", fault=fault, expect_models=fault == "run", WORKER_MAX_INFRA_FAILURES="2")
    svc.start_bot()
    user_id = next(_patients)
    svc.consent(user_id)
    case, ack_seq = _photo_case(svc, user_id, seed=91, since=svc.client.last_seq())

    report = wait(lambda: _unhealthy(broken), timeout=120, what="the broken worker reporting itself unhealthy")
    assert "2 infrastructure failures in a row, the last InfrastructureError" in report["unhealthy"] or (
        "2 infrastructure failures in a row, the last RuntimeError" in report["unhealthy"]
    )
    log = svc.log("broken-worker")
    assert f"case {case.id}: the models failed on this worker (" in log and "can't allocate memory" in log
    assert "stops consuming the triage queue" in log
    time.sleep(5)  # the broken worker hands back whatever still reaches it; none of it may fail the case
    waiting = svc.case(case.id)
    assert waiting.status == CaseStatus.QUEUED, "the case waits for a healthy worker"
    assert waiting.attempts == 0 and waiting.error_code is None, "the worker's failures are not the case's"
    assert svc.messages(user_id, since=ack_seq) == [], "the patient is told nothing wrong meanwhile"
    assert _unhealthy(broken) is not None, "it stays unhealthy until restarted"

    svc.start_worker("worker", beat=True)
    case = svc.wait_delivered(case.id, timeout=ANSWER_TIMEOUT_S, proc_names=("worker", "bot"))
    assert case.status == CaseStatus.DONE and case.attempts == 1
    assert case.processing_owner.endswith(f":{svc.procs['worker'].pid}")
    svc.settle()
    svc.assert_answered_once(user_id, case.id, since=ack_seq)
    svc.assert_alive()


def test_a_case_the_models_keep_failing_on_ends_and_the_patient_is_told(make_service) -> None:
    # A worker that never turns unhealthy (as if every worker failed on this photo): the case's own count ends it.
    svc = make_service(MAX_CASE_INFRA_FAILURES="3", **SWEEP)
    svc.start_worker("broken-worker", fault="run", beat=True, WORKER_MAX_INFRA_FAILURES="0")
    svc.start_bot()
    user_id = next(_patients)
    svc.consent(user_id)
    case, ack_seq = _photo_case(svc, user_id, seed=95, since=svc.client.last_seq())

    case = svc.wait_delivered(case.id, timeout=ANSWER_TIMEOUT_S, proc_names=("broken-worker", "bot"))
    assert case.status == CaseStatus.FAILED and case.error_code == "infrastructure_failures"
    assert case.infra_failures == 3 and case.attempts == 0, "counted as the models' failures, not attempts"
    assert svc.expect("result.failed", case_id=case.id) in case.reply_text
    assert f"case {case.id}: the models failed on it 3 times; it fails and the patient is told" in svc.log(
        "broken-worker"
    )
    svc.settle()
    svc.assert_answered_once(user_id, case.id, since=ack_seq)
    svc.assert_alive()


def test_hung_job_is_noticed_by_the_watchdog_and_the_case_goes_to_another_worker(make_service) -> None:
    # STUCK_AFTER_S of 5 minutes and no beat: only the watchdog can hand the case on within the test.
    svc = make_service(STUCK_AFTER_S="300")
    hung = svc.start_worker("hung-worker", slow_s=900, JOB_DEADLINE_S="5")
    svc.start_bot()
    user_id = next(_patients)
    svc.consent(user_id)
    case, ack_seq = _photo_case(svc, user_id, seed=93, since=svc.client.last_seq())
    wait(lambda: _slow_analysis_started(svc, "hung-worker", case.id), timeout=60, what="analysis under way")

    report = wait(lambda: _unhealthy(hung), timeout=60, what="the watchdog noticing the hung job")
    assert f"the job for case {case.id} has run" in report["unhealthy"]
    assert "past JOB_DEADLINE_S=5" in report["unhealthy"]
    released = wait(
        lambda: (c := svc.case(case.id)).status == CaseStatus.QUEUED and c, timeout=30, what="the case released"
    )
    assert released.processing_owner is None and released.attempts == 1
    # The hand-over is committed before it is logged: wait for the line rather than read the log once.
    handed = f"case {case.id}: its job hung on this worker; handed to another worker"
    wait(lambda: handed in svc.log("hung-worker"), timeout=30, what="the hand-over in the hung worker's log")
    hung_jobs = _held_jobs(svc)  # the hung job itself, still held by the hung worker
    assert hung.poll() is None, "the hung worker is not killed: it is still running its job"

    svc.start_worker("worker")
    case = svc.wait_delivered(case.id, timeout=ANSWER_TIMEOUT_S, proc_names=("worker", "bot", "hung-worker"))
    assert case.status == CaseStatus.DONE and case.attempts == 2
    assert case.processing_owner.endswith(f":{svc.procs['worker'].pid}")
    svc.settle(ignore_unacked=hung_jobs)
    svc.assert_answered_once(user_id, case.id, since=ack_seq)
    svc.assert_alive()


def _refused(svc: Service, name: str, argv: list[str], **env: str) -> str:
    """Start `skintriage ARGV` and return its log once it exited with an error (it must not keep running)."""
    proc = spawn(name, argv, {**svc.env, **env}, log_dir=svc.log_dir)
    svc.procs[name] = proc
    try:
        returncode = proc.wait(60)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{name} started next to the running one and is still running:\n{svc.log(name)[-2000:]}")
    svc.procs.pop(name, None)
    assert returncode != 0, f"{name} exited with 0:\n{svc.log(name)[-2000:]}"
    return svc.log(name)


def _lease_holder(svc: Service, name: str) -> str | None:
    from skintriage.models import ServiceLease

    with svc.session() as session:
        lease = session.get(ServiceLease, name)
        return lease.holder if lease is not None else None


@pytest.mark.parametrize("database", ["postgres", "sqlite"])
def test_a_second_bot_and_a_second_beat_refuse_to_start(make_service, request, database: str) -> None:
    db_url = request.getfixturevalue("pg_url" if database == "postgres" else "sqlite_url")
    svc = make_service(db_url=db_url)
    first = svc.start_bot("bot")

    log = _refused(svc, "bot-2", ["bot"])
    assert "another bot is already running" in log and f":{first.pid})" in log
    assert "only one bot may run per database" in log
    assert _lease_holder(svc, "bot").endswith(f":{first.pid}")

    beat = spawn("beat", ["beat"], svc.env, log_dir=svc.log_dir)
    svc.procs["beat"] = beat
    wait_for(lambda: "beat: Starting" in svc.log("beat"), timeout=60, what="the beat running", proc=beat)
    assert "another beat is already running" in _refused(svc, "beat-2", ["beat"])
    assert _lease_holder(svc, "beat").endswith(f":{beat.pid}")
    embedded = _refused(svc, "worker-beat", ["worker", "--queues", "replies", "--beat"], HEALTH_PORT="0")
    assert "another beat is already running" in embedded
    svc.assert_alive()

    # Stopped politely, the first bot hands its lease back and a new one starts at once.
    svc.stop("bot")
    assert _lease_holder(svc, "bot") is None
    svc.start_bot("bot-3")
    svc.assert_alive()
