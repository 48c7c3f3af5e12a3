"""Claims, leases and "stuck" ages use the database's clock, not the clock of the machine that asks.

Each test lets one process act with the right time, then runs the next step as a process whose clock runs an
hour ahead (this process's `utcnow`, as the case service and the leases read it, skewed): on PostgreSQL it must
see the same live claim, lease or fresh case as everyone else.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from skintriage import cases, leases
from skintriage.db import session_factory
from skintriage.exceptions import AlreadyRunning
from skintriage.models import Case, utcnow
from skintriage.storage import LocalImageStore
from tests.factories import lesion_photo

pytestmark = pytest.mark.postgres

AHEAD = timedelta(hours=1)


def _new_case(session, tmp_path, *, seed: int = 0) -> Case:
    user = cases.get_or_create_user(session=session, telegram_user_id=3001, chat_id=3001, language="en")
    image = LocalImageStore(tmp_path / "images").put(lesion_photo(64, 48, seed=seed))
    case = cases.create_case(session=session, user=user, image=image)
    session.flush()
    return case


@pytest.fixture
def skew_clock(monkeypatch: pytest.MonkeyPatch) -> Callable[[], None]:
    """skew_clock(): from now on this process's clock (as the services read it) runs an hour ahead."""

    def skew() -> None:
        def ahead() -> datetime:
            return datetime.now(UTC) + AHEAD

        monkeypatch.setattr(cases, "utcnow", ahead)

    return skew


def test_database_now_is_the_servers_clock_even_when_ours_is_off(pg_url: str, skew_clock) -> None:
    skew_clock()
    with session_factory(pg_url)() as session:
        assert abs(cases.database_now(session) - utcnow()) < timedelta(seconds=5)
        assert cases.utcnow() - utcnow() > timedelta(minutes=59)  # the skew is in place


def test_a_bot_whose_clock_runs_ahead_does_not_take_a_live_lease(pg_url: str, skew_clock) -> None:
    sessions = session_factory(pg_url)
    with sessions.begin() as session:
        leases.acquire(session=session, name="bot", holder="host-a:100", ttl_s=30)
    skew_clock()
    with sessions.begin() as session, pytest.raises(AlreadyRunning):
        leases.acquire(session=session, name="bot", holder="host-b:200", ttl_s=30)
    with sessions.begin() as session:
        # host-a renews from its machine; the lease's end is the database's now + TTL, not an hour away.
        assert leases.renew(session=session, name="bot", holder="host-a:100", ttl_s=30)
        row = session.get(leases.ServiceLease, "bot")
        assert row.expires_at - utcnow() < timedelta(seconds=35)


def test_a_worker_whose_clock_runs_ahead_does_not_take_over_a_live_claim(pg_url: str, skew_clock, tmp_path) -> None:
    sessions = session_factory(pg_url)
    with sessions.begin() as session:
        case_id = _new_case(session, tmp_path).id
        first = cases.claim_for_processing(
            session=session, case_id=case_id, max_attempts=3, stale_after_s=300, owner="host-a:1"
        )
        assert first.outcome == cases.Claim.CLAIMED
    skew_clock()
    with sessions.begin() as session:
        second = cases.claim_for_processing(
            session=session, case_id=case_id, max_attempts=3, stale_after_s=300, owner="host-b:2"
        )
        assert second.outcome == cases.Claim.BUSY
        assert session.get(Case, case_id).processing_owner == "host-a:1"


def test_a_sweeper_whose_clock_runs_ahead_leaves_fresh_work_alone(pg_url: str, skew_clock, tmp_path) -> None:
    sessions = session_factory(pg_url)
    with sessions.begin() as session:
        queued = _new_case(session, tmp_path, seed=1)
        finished = _new_case(session, tmp_path, seed=2)
        cases.mark_queued(session=session, case_id=queued.id)
        claim = cases.claim_for_processing(session=session, case_id=finished.id, max_attempts=3, stale_after_s=300)
        assert claim.outcome == cases.Claim.CLAIMED
        assert cases.save_result(session=session, case_id=finished.id, result=cases.CaseResult(tier="LOW"))
    with sessions.begin() as session:
        assert cases.claim_delivery(session=session, case_id=finished.id) is not None
    skew_clock()
    with sessions.begin() as session:
        plan = cases.find_stuck(session=session, stuck_after_s=300)
        assert queued.id not in plan.to_process and finished.id not in plan.to_deliver
        # Nor does a reply job on that machine take the answer another job is sending.
        assert cases.claim_delivery(session=session, case_id=finished.id) is None
