"""Processing a case, on SQLite and PostgreSQL: whose claim it is, retries that refund an attempt, results and failures.

A worker whose claim went stale may wake up after another took the case over: it must not fail or
overwrite what the new owner does.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select, update

from skintriage import cases
from skintriage.db import session_factory
from skintriage.models import AuditEvent, Case, CaseStatus, utcnow
from tests.factories import claimed_case, lesion_photo


def test_release_for_retry_keeps_the_attempt_by_default(db_url, store):
    with session_factory(db_url)() as session:
        case_id = claimed_case(session, store)
        cases.release_for_retry(session=session, case_id=case_id, owner="host:1")
        session.commit()
        case = session.get(Case, case_id)
        session.refresh(case)
        assert (case.status, case.attempts, case.processing_owner) == (CaseStatus.QUEUED, 1, None)


def test_release_for_retry_can_refund_the_attempt_after_a_transient_error(db_url, store):
    with session_factory(db_url)() as session:
        case_id = claimed_case(session, store)
        cases.release_for_retry(session=session, case_id=case_id, owner="host:1", refund_attempt=True)
        session.commit()
        case = session.get(Case, case_id)
        session.refresh(case)
        assert (case.status, case.attempts) == (CaseStatus.QUEUED, 0)


def test_release_for_retry_ignores_a_case_another_worker_holds(db_url, store):
    with session_factory(db_url)() as session:
        case_id = claimed_case(session, store, owner="host:1")
        cases.release_for_retry(session=session, case_id=case_id, owner="host:2", refund_attempt=True)
        session.commit()
        case = session.get(Case, case_id)
        session.refresh(case)
        assert (case.status, case.attempts, case.processing_owner) == (CaseStatus.PROCESSING, 1, "host:1")


def _taken_over(session, store) -> int:
    """A case claimed by host:1 whose claim went stale, then claimed by host:2."""
    case_id = claimed_case(session, store, owner="host:1")
    session.execute(update(Case).where(Case.id == case_id).values(started_at=utcnow() - timedelta(hours=1)))
    session.commit()
    claim = cases.claim_for_processing(
        session=session, case_id=case_id, max_attempts=3, stale_after_s=300, owner="host:2"
    )
    assert claim.outcome == cases.Claim.CLAIMED
    return case_id


def _failed_audits(session, case_id: int) -> list[str]:
    return session.scalars(
        select(AuditEvent.action).where(AuditEvent.case_id == case_id, AuditEvent.action == "case.failed")
    ).all()


def test_slow_worker_cannot_fail_a_case_the_new_owner_finished(db_url, store):
    with session_factory(db_url)() as session:
        case_id = _taken_over(session, store)
        assert cases.save_result(session=session, case_id=case_id, result=cases.CaseResult(tier="LOW"), owner="host:2")
        session.commit()
        assert not cases.mark_failed(session=session, case_id=case_id, error_code="pipeline_error", owner="host:1")
        session.commit()
        case = session.get(Case, case_id)
        session.refresh(case)
        assert (case.status, case.tier, case.error_code) == (CaseStatus.DONE, "LOW", None)
        assert _failed_audits(session, case_id) == []


def test_slow_worker_cannot_fail_a_case_the_new_owner_is_working_on(db_url, store):
    with session_factory(db_url)() as session:
        case_id = _taken_over(session, store)
        assert not cases.mark_failed(session=session, case_id=case_id, error_code="image_missing", owner="host:1")
        session.commit()
        case = session.get(Case, case_id)
        session.refresh(case)
        assert (case.status, case.processing_owner) == (CaseStatus.PROCESSING, "host:2")
        assert cases.save_result(session=session, case_id=case_id, result=cases.CaseResult(tier="LOW"), owner="host:2")
        session.commit()
        assert _failed_audits(session, case_id) == []


def test_owner_fails_its_own_case_once(db_url, store):
    with session_factory(db_url)() as session:
        case_id = claimed_case(session, store, owner="host:1")
        assert cases.mark_failed(session=session, case_id=case_id, error_code="pipeline_error", owner="host:1")
        session.commit()
        assert not cases.mark_failed(session=session, case_id=case_id, error_code="pipeline_error", owner="host:1")
        session.commit()
        case = session.get(Case, case_id)
        session.refresh(case)
        assert (case.status, case.error_code) == (CaseStatus.FAILED, "pipeline_error")
        assert _failed_audits(session, case_id) == ["case.failed"]


def test_save_result_stores_the_lesion_measurements_as_json(db_url, store):
    import cv2
    import numpy as np

    from ml.triage.measurements import measure_lesion

    mask = np.zeros((120, 160), np.uint8)
    cv2.ellipse(mask, (80, 60), (50, 30), 25, 0, 360, 1, thickness=-1)
    rgb = np.full((120, 160, 3), (170, 115, 75), np.uint8)
    measured = measure_lesion(mask, rgb).to_dict()
    with session_factory(db_url)() as session:
        case_id = claimed_case(session, store)
        result = cases.CaseResult(tier="LOW", label="NV", lesion_area_px=measured["area_px"], measurements=measured)
        assert cases.save_result(session=session, case_id=case_id, result=result, owner="host:1")
        session.commit()
        rejected_id = claimed_case(session, store, owner="host:2")
        assert cases.save_result(
            session=session,
            case_id=rejected_id,
            result=cases.CaseResult(tier="RETAKE", retake_reason="blurry"),
            owner="host:2",
        )
        session.commit()
    with session_factory(db_url)() as session:
        case = session.get(Case, case_id)
        assert case.measurements == measured
        assert case.measurements["colours"] == ["light_brown"] and case.measurements["touches_border"] is False
        assert session.get(Case, rejected_id).measurements is None


def test_a_result_finishes_its_case_by_tier_and_keeps_what_it_does_not_know(db_url, store):
    with session_factory(db_url)() as session:
        user = cases.get_or_create_user(session=session, telegram_user_id=2002, chat_id=2002, language="en")
        case = cases.create_case(session=session, user=user, image=store.put(lesion_photo(64, 48)), width=64, height=48)
        session.commit()
        cases.claim_for_processing(session=session, case_id=case.id, max_attempts=3, stale_after_s=300, owner="w:1")
        session.commit()
        result = cases.CaseResult(tier="RETAKE", retake_reason="blurry")
        assert result.status == CaseStatus.REJECTED and cases.CaseResult(tier="HIGH").status == CaseStatus.DONE
        assert cases.save_result(session=session, case_id=case.id, result=result, owner="w:1")
        session.commit()
        session.refresh(case)
        # The photo's size measured at intake stays; no image keys or measurements are invented.
        assert (case.status, case.image_width, case.image_height) == (CaseStatus.REJECTED, 64, 48)
        assert (case.mask_key, case.overlay_key, case.retake_reason) == (None, None, "blurry")
