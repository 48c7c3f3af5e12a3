"""Infrastructure failures counted per case (cases.infra_failures), on SQLite and PostgreSQL.

The models failing on a case do not use up its attempts (a broken worker is not the photo's fault), but a case
that keeps hitting them, on whichever workers, must end and its patient be told.
"""

from __future__ import annotations

from sqlalchemy import select

from skintriage import cases
from skintriage.db import session_factory
from skintriage.models import AuditEvent, Case, CaseStatus
from skintriage.storage import LocalImageStore
from tests.factories import lesion_photo


def _claimed(session, tmp_path, *, owner: str = "host:1") -> int:
    user = cases.get_or_create_user(session=session, telegram_user_id=4001, chat_id=4001, language="en")
    case = cases.create_case(session=session, user=user, image=LocalImageStore(tmp_path).put(lesion_photo(64, 48)))
    session.commit()
    claim = cases.claim_for_processing(session=session, case_id=case.id, max_attempts=3, stale_after_s=300, owner=owner)
    assert claim.outcome == cases.Claim.CLAIMED
    return case.id


def _row(session, case_id: int) -> Case:
    return session.scalar(select(Case).where(Case.id == case_id).execution_options(populate_existing=True))


def test_an_infrastructure_failure_is_counted_on_the_case_and_refunds_the_attempt(db_url, tmp_path) -> None:
    with session_factory(db_url)() as session:
        case_id = _claimed(session, tmp_path)
        cases.release_for_retry(
            session=session, case_id=case_id, owner="host:1", refund_attempt=True, infra_failure=True
        )
        session.commit()
        case = _row(session, case_id)
        assert (case.status, case.attempts, case.infra_failures) == (CaseStatus.QUEUED, 0, 1)
        # A transient error (the database, the image store) is not the models failing: not counted.
        assert (
            cases.claim_for_processing(
                session=session, case_id=case_id, max_attempts=3, stale_after_s=300, owner="host:2"
            ).outcome
            == cases.Claim.CLAIMED
        )
        cases.release_for_retry(session=session, case_id=case_id, owner="host:2", refund_attempt=True)
        session.commit()
        assert _row(session, case_id).infra_failures == 1


def test_a_case_fails_once_its_infrastructure_failures_reach_the_cap(db_url, tmp_path) -> None:
    with session_factory(db_url)() as session:
        case_id = _claimed(session, tmp_path)
        cases.release_for_retry(
            session=session, case_id=case_id, owner="host:1", refund_attempt=True, infra_failure=True
        )
        session.commit()
        assert not cases.fail_after_infra_failures(session=session, case_id=case_id, max_failures=2)
        assert (
            cases.claim_for_processing(
                session=session, case_id=case_id, max_attempts=3, stale_after_s=300, owner="host:2"
            ).outcome
            == cases.Claim.CLAIMED
        )
        # Claimed by a worker: never failed under it, whatever the count.
        assert not cases.fail_after_infra_failures(session=session, case_id=case_id, max_failures=1)
        cases.release_for_retry(
            session=session, case_id=case_id, owner="host:2", refund_attempt=True, infra_failure=True
        )
        session.commit()

        assert cases.fail_after_infra_failures(session=session, case_id=case_id, max_failures=2)
        session.commit()
        case = _row(session, case_id)
        assert (case.status, case.error_code, case.attempts) == (CaseStatus.FAILED, "infrastructure_failures", 0)
        assert case.finished_at is not None and case.delivered_at is None  # the answer (result.failed) follows
        audits = session.scalars(select(AuditEvent.action).where(AuditEvent.case_id == case_id)).all()
        assert "case.failed" in audits
        assert not cases.fail_after_infra_failures(session=session, case_id=case_id, max_failures=2)  # once
