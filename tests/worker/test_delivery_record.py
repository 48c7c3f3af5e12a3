"""The reply job that carries an answer already sent (`sent=`): it records it and sends nothing.

When the database stays away longer than RECORD_SENT_FOR_S after Telegram took an answer, the delivery job is
retried carrying the sent message; that retried job must only record it (a second send would be a duplicate).
The job runs here in this process, on SQLite with the filesystem broker and on PostgreSQL with Redis.
"""

from __future__ import annotations

import pytest

from skintriage import cases
from skintriage.db import session_factory
from tests.stack import PATIENT_ID

pytestmark = pytest.mark.slow


def test_a_job_carrying_a_sent_answer_records_it_and_sends_nothing(stack) -> None:
    from worker.tasks import deliver_case

    case_id = stack.new_case()
    sessions = session_factory(stack.settings.resolved_database_url)
    with sessions.begin() as session:
        claim = cases.claim_for_processing(session=session, case_id=case_id, max_attempts=3, stale_after_s=300)
        assert claim.outcome == cases.Claim.CLAIMED
    with sessions.begin() as session:
        assert cases.save_result(session=session, case_id=case_id, result=cases.CaseResult(tier="LOW"))
    with sessions.begin() as session:
        assert cases.claim_delivery(session=session, case_id=case_id) is not None  # the first run's claim
    seen = stack.client.last_seq()

    result = deliver_case.apply(args=[case_id], kwargs={"sent": [case_id, 77, "the answer as sent", "LOW"]})

    assert result.get() == "recorded"
    case = stack.case(case_id)
    assert (case.reply_message_id, case.reply_text, case.told_tier) == (77, "the answer as sent", "LOW")
    assert case.delivered_at is not None
    assert stack.client.messages(PATIENT_ID, since=seen) == []
