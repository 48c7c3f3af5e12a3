"""The case service on SQLite and PostgreSQL: intake limits, claims, delivery, retention, deletion."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from skintriage import cases
from skintriage.db import session_factory
from skintriage.exceptions import CaseNotFound, RateLimited, TooManyInFlight
from skintriage.models import AuditEvent, Case, CaseStatus, User, utcnow
from skintriage.storage import LocalImageStore
from tests.factories import lesion_photo


@pytest.fixture
def store(tmp_path):
    return LocalImageStore(tmp_path / "images")


def _patient(session, tg_id=1001):
    user = cases.get_or_create_user(session=session, telegram_user_id=tg_id, chat_id=tg_id, language="en")
    session.flush()
    return user


def _case(session, store, user, seed=0):
    image = store.put(lesion_photo(64, 48, seed=seed))
    return cases.create_case(session=session, user=user, image=image)


def test_get_or_create_user_is_idempotent(db_url):
    with session_factory(db_url)() as session:
        a = _patient(session)
        b = _patient(session)
        session.commit()
        assert a.id == b.id
        assert session.scalar(select(User).where(User.telegram_user_id == 1001)).language == "en"


def test_repeated_update_is_detected(db_url):
    with session_factory(db_url)() as session:
        assert cases.mark_update_processed(session=session, chat_id=1001, message_id=77) is True
        assert cases.mark_update_processed(session=session, chat_id=1001, message_id=77) is False
        assert cases.mark_update_processed(session=session, chat_id=1001, message_id=78) is True
        session.commit()


def test_rate_limit_and_in_flight_cap(db_url, store):
    with session_factory(db_url)() as session:
        user = _patient(session)
        for seed in range(3):
            _case(session, store, user, seed)
        session.commit()
        with pytest.raises(TooManyInFlight):
            cases.check_intake_limits(session=session, user=user, rate_limit=10, window_s=3600, max_in_flight=3)
        with pytest.raises(RateLimited) as info:
            cases.check_intake_limits(session=session, user=user, rate_limit=3, window_s=3600, max_in_flight=99)
        assert 3500 < info.value.retry_after_s <= 3601
        cases.check_intake_limits(session=session, user=user, rate_limit=4, window_s=3600, max_in_flight=4)


def test_duplicate_photo_within_window_is_found(db_url, store):
    with session_factory(db_url)() as session:
        user = _patient(session)
        first = _case(session, store, user, seed=5)
        session.commit()
        dup = cases.find_recent_duplicate(session=session, user=user, sha256=first.image_sha256, window_s=60)
        assert dup is not None and dup.id == first.id
        later = utcnow() + timedelta(seconds=120)
        assert (
            cases.find_recent_duplicate(session=session, user=user, sha256=first.image_sha256, window_s=60, now=later)
            is None
        )


def test_claim_is_exclusive_and_counts_attempts(db_url, store):
    factory = session_factory(db_url)
    with factory() as session:
        case_id = _case(session, store, _patient(session)).id
        session.commit()
    # Each claim is a unit of work of its own (the service leaves the commit to its caller).
    with factory.begin() as s1:
        first = cases.claim_for_processing(session=s1, case_id=case_id, max_attempts=3, stale_after_s=300, owner="h:1")
    with factory.begin() as s2:
        second = cases.claim_for_processing(
            session=s2, case_id=case_id, max_attempts=3, stale_after_s=300, owner="other-host:2"
        )
    assert first.outcome == cases.Claim.CLAIMED
    assert second.outcome == cases.Claim.BUSY
    with factory() as session:
        assert session.get(Case, case_id).attempts == 1


def test_result_saved_once_and_delivery_claimed_once(db_url, store):
    factory = session_factory(db_url)
    with factory() as session:
        case_id = _case(session, store, _patient(session)).id
        session.commit()
        cases.claim_for_processing(session=session, case_id=case_id, max_attempts=3, stale_after_s=300, owner="w:1")
        result = cases.CaseResult(tier="LOW", label="NV", prob_mel=0.1, prob_nv=0.8, prob_other=0.1)
        assert cases.save_result(session=session, case_id=case_id, result=result, owner="w:1")
        session.commit()
        assert not cases.save_result(session=session, case_id=case_id, result=result, owner="w:1")
    with factory.begin() as s1:
        assert cases.claim_delivery(session=s1, case_id=case_id) is not None
    with factory.begin() as s2:
        assert cases.claim_delivery(session=s2, case_id=case_id) is None
    with factory.begin() as s1:
        cases.mark_delivered(session=s1, case_id=case_id, message_id=5, text="answer")
    with factory() as session:
        assert cases.claim_delivery(session=session, case_id=case_id) is None
        case = session.get(Case, case_id)
        assert case.status == CaseStatus.DONE and case.delivered_at is not None
        assert case.probabilities == {"MEL": 0.1, "NV": 0.8, "OTHER": 0.1}


def test_attempt_cap_fails_the_case(db_url, store):
    factory = session_factory(db_url)
    with factory() as session:
        case_id = _case(session, store, _patient(session)).id
        session.commit()
        for _ in range(2):
            claim = cases.claim_for_processing(
                session=session, case_id=case_id, max_attempts=2, stale_after_s=0, owner="gone-host:1"
            )
            assert claim.outcome == cases.Claim.CLAIMED
        claim = cases.claim_for_processing(session=session, case_id=case_id, max_attempts=2, stale_after_s=0)
        assert claim.outcome == cases.Claim.EXHAUSTED
        assert claim.case.status == CaseStatus.FAILED
        assert claim.case.error_code == "attempts_exhausted"


def test_dead_local_owner_is_taken_over_at_once(db_url, store):
    factory = session_factory(db_url)
    with factory() as session:
        case_id = _case(session, store, _patient(session)).id
        session.commit()
        import socket

        dead = f"{socket.gethostname()}:999999"
        cases.claim_for_processing(session=session, case_id=case_id, max_attempts=3, stale_after_s=300, owner=dead)
        claim = cases.claim_for_processing(session=session, case_id=case_id, max_attempts=3, stale_after_s=300)
        assert claim.outcome == cases.Claim.CLAIMED
        assert claim.case.attempts == 2


def test_find_stuck_lists_lost_cases(db_url, store):
    factory = session_factory(db_url)
    with factory() as session:
        user = _patient(session)
        never_queued = _case(session, store, user, 1)
        never_queued.received_at = utcnow() - timedelta(minutes=1)
        fresh = _case(session, store, user, 2)
        cases.mark_queued(session=session, case_id=fresh.id)
        session.commit()
        plan = cases.find_stuck(session=session, stuck_after_s=60)
        assert never_queued.id in plan.to_process and fresh.id not in plan.to_process
        later = cases.find_stuck(session=session, stuck_after_s=60, now=utcnow() + timedelta(minutes=5))
        assert fresh.id in later.to_process


def test_patient_cannot_reach_another_patients_case(db_url, store):
    with session_factory(db_url)() as session:
        alice, bob = _patient(session, 1), _patient(session, 2)
        case = _case(session, store, alice)
        session.commit()
        assert cases.get_user_case(session=session, user=alice, case_id=case.id).id == case.id
        with pytest.raises(CaseNotFound):
            cases.get_user_case(session=session, user=bob, case_id=case.id)


def test_delete_user_data_removes_images_cases_and_profile(db_url, store):
    with session_factory(db_url)() as session:
        alice, bob = _patient(session, 1), _patient(session, 2)
        a_case = _case(session, store, alice, seed=1)
        shared = _case(session, store, bob, seed=1)  # same bytes as alice's photo
        own = _case(session, store, alice, seed=2)
        own_key, shared_key = own.image_key, shared.image_key
        session.commit()
        assert cases.delete_user_data(session=session, store=store, user=alice) == 2
        session.commit()
        assert session.scalar(select(User).where(User.telegram_user_id == 1)) is None
        assert session.get(Case, a_case.id) is None
        assert not store.exists(own_key)
        assert store.exists(shared_key), "bob's identical photo must survive alice's deletion"
        actions = session.scalars(select(AuditEvent.action)).all()
        assert "patient.deleted" in actions


def test_retention_purges_old_images_and_keeps_records(db_url, store):
    with session_factory(db_url)() as session:
        user = _patient(session)
        old = _case(session, store, user, seed=1)
        old.received_at = utcnow() - timedelta(days=40)
        new = _case(session, store, user, seed=2)
        old_key = old.image_key
        session.commit()
        assert cases.purge_expired_images(session=session, store=store, retention_days=30) == 1
        session.commit()
        session.refresh(old)
        assert old.image_key is None and old.images_deleted_at is not None
        assert not store.exists(old_key)
        assert store.exists(new.image_key)


def test_photos_are_held_once_each_up_to_the_cap_and_handed_back_when_the_patient_agrees_again(db_url):
    with session_factory(db_url)() as session:
        user = _patient(session)
        assert cases.record_consent(session=session, user=user, version="old") == []
        photos = [{"file_id": f"F{i}", "message_id": i, "update_id": 100 + i} for i in range(cases.MAX_PENDING_PHOTOS)]
        for photo in photos:
            assert cases.hold_photo(session=session, user=user, photo=photo) is True
        assert cases.hold_photo(session=session, user=user, photo=photos[0]) is True  # delivered again: held once
        assert cases.hold_photo(session=session, user=user, photo={"file_id": "late", "message_id": 99}) is False
        session.commit()
    with session_factory(db_url)() as session:
        user = session.scalar(select(User).where(User.telegram_user_id == 1001))
        assert user.pending_photos == photos  # stored, in order
        assert cases.record_consent(session=session, user=user, version="new") == photos
        session.commit()
    with session_factory(db_url)() as session:
        user = session.scalar(select(User).where(User.telegram_user_id == 1001))
        assert user.consent_version == "new" and user.pending_photos is None
        given = select(AuditEvent).where(AuditEvent.action == "consent.given").order_by(AuditEvent.id)
        details = [e.detail for e in session.scalars(given)]
        assert [(d["version"], d["previous_version"], d["pending_photos"]) for d in details] == [
            ("old", None, 0),
            ("new", "old", cases.MAX_PENDING_PHOTOS),
        ]


@pytest.mark.slow
def test_a_reply_finds_only_the_patients_own_case_and_linked_cases_delete_with_the_patient(db_url, store):
    """find_replied_case: by acknowledgement, answer or photo message, never another patient's; /delete still works."""
    with session_factory(db_url)() as session:
        alice, bob = _patient(session, 1), _patient(session, 2)
        bobs = _case(session, store, bob, seed=3)
        earlier = _case(session, store, alice, seed=1)
        bobs.ack_message_id = earlier.ack_message_id = 11  # message numbers are per chat: they repeat across chats
        earlier.reply_message_id, earlier.source_message_id = 14, 10
        session.flush()
        for message_id in (10, 11, 14):
            assert cases.find_replied_case(session=session, user=alice, message_id=message_id).id == earlier.id
        assert cases.find_replied_case(session=session, user=alice, message_id=12) is None
        assert cases.find_replied_case(session=session, user=bob, message_id=14) is None
        later = cases.create_case(
            session=session, user=alice, image=store.put(lesion_photo(64, 48, seed=2)),
            previous_case_id=earlier.id,
        )  # fmt: skip
        session.commit()
        assert later.previous_case.id == earlier.id
        assert cases.delete_user_data(session=session, store=store, user=alice) == 2
        session.commit()
        assert session.scalar(select(func.count()).select_from(Case)) == 1  # bob's case stays
