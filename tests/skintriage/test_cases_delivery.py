"""Delivering answers and outbox messages, on SQLite and PostgreSQL: claims, flood-control waits, undeliverable.

A patient's answer (a case) and a message that is not a case result (the outbox) are each sent once,
held back while Telegram asks to wait, and never swept again once given up.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select, update

from skintriage import cases
from skintriage.db import session_factory
from skintriage.models import AuditEvent, Case, CaseStatus, OutboxMessage, utcnow
from tests.factories import claimed_case


def test_mark_undeliverable_stops_the_sweeper_and_keeps_an_earlier_error(db_url, store):
    with session_factory(db_url)() as session:
        case_id = claimed_case(session, store)
        cases.mark_failed(session=session, case_id=case_id, error_code="attempts_exhausted")
        session.commit()
        assert cases.claim_delivery(session=session, case_id=case_id) is not None
        cases.mark_undeliverable(session=session, case_id=case_id, reason="forbidden")
        session.commit()
        case = session.get(Case, case_id)
        session.refresh(case)
        assert case.delivered_at is not None
        assert case.reply_text is None
        assert case.error_code == "attempts_exhausted"
        later = utcnow() + timedelta(hours=1)
        assert case_id not in cases.find_stuck(session=session, stuck_after_s=60, now=later).to_deliver
        actions = session.scalars(select(AuditEvent.action).where(AuditEvent.case_id == case_id)).all()
        assert "case.undeliverable" in actions


def test_mark_undeliverable_records_the_reason_on_a_done_case(db_url, store):
    with session_factory(db_url)() as session:
        case_id = claimed_case(session, store)
        assert cases.save_result(session=session, case_id=case_id, result=cases.CaseResult(tier="LOW"), owner="host:1")
        session.commit()
        cases.mark_undeliverable(session=session, case_id=case_id, reason="forbidden")
        session.commit()
        case = session.get(Case, case_id)
        session.refresh(case)
        assert case.error_code == "undeliverable:forbidden"
        assert case.status == CaseStatus.DONE


def test_flood_control_wait_holds_the_answer_from_the_retry_and_the_sweeper(db_url, store):
    with session_factory(db_url)() as session:
        case_id = claimed_case(session, store)
        assert cases.save_result(session=session, case_id=case_id, result=cases.CaseResult(tier="LOW"), owner="host:1")
        session.execute(update(Case).where(Case.id == case_id).values(finished_at=utcnow() - timedelta(minutes=10)))
        session.commit()
        assert cases.claim_delivery(session=session, case_id=case_id) is not None
        cases.release_delivery(session=session, case_id=case_id, wait_s=600)  # Telegram: retry after 600 s
        session.commit()
        assert cases.claim_delivery(session=session, case_id=case_id) is None
        assert case_id not in cases.find_stuck(session=session, stuck_after_s=60).to_deliver
        later = utcnow() + timedelta(seconds=601)
        assert case_id in cases.find_stuck(session=session, stuck_after_s=60, now=later).to_deliver
        session.execute(update(Case).where(Case.id == case_id).values(delivery_not_before=utcnow()))
        session.commit()
        assert cases.claim_delivery(session=session, case_id=case_id) is not None


def _outbox(session) -> int:
    message = OutboxMessage(chat_id=2001, text="Please see a dermatologist this week.")
    session.add(message)
    session.commit()
    return message.id


def test_flood_control_wait_holds_an_outbox_message(db_url):
    with session_factory(db_url)() as session:
        message_id = _outbox(session)
        session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id == message_id)
            .values(created_at=utcnow() - timedelta(minutes=10))
        )
        session.commit()
        assert cases.claim_outbox(session=session, message_id=message_id) is not None
        cases.release_outbox(session=session, message_id=message_id, error="flood control", wait_s=600)
        session.commit()
        assert cases.claim_outbox(session=session, message_id=message_id) is None
        assert message_id not in cases.find_stuck(session=session, stuck_after_s=60).outbox
        later = utcnow() + timedelta(seconds=601)
        assert message_id in cases.find_stuck(session=session, stuck_after_s=60, now=later).outbox


def test_outbox_message_is_claimed_once_and_counts_attempts(db_url):
    with session_factory(db_url)() as session:
        message_id = _outbox(session)
        first = cases.claim_outbox(session=session, message_id=message_id)
        assert first is not None and first.attempts == 1
        assert cases.claim_outbox(session=session, message_id=message_id) is None
        cases.release_outbox(session=session, message_id=message_id, error="TimedOut")
        session.commit()
        again = cases.claim_outbox(session=session, message_id=message_id)
        assert again is not None and again.attempts == 2 and again.error == "TimedOut"
        cases.mark_outbox_sent(session=session, message_id=message_id)
        session.commit()
        assert cases.claim_outbox(session=session, message_id=message_id) is None
        sent = session.get(OutboxMessage, message_id)
        session.refresh(sent)
        assert sent.sent_at is not None and sent.error is None


def test_outbox_claim_expires_after_its_lease(db_url):
    with session_factory(db_url)() as session:
        message_id = _outbox(session)
        assert cases.claim_outbox(session=session, message_id=message_id) is not None
        session.get(OutboxMessage, message_id).claimed_at = utcnow() - timedelta(seconds=600)
        session.commit()
        assert cases.claim_outbox(session=session, message_id=message_id, lease_s=120) is not None


def test_failed_outbox_message_is_not_swept_again(db_url):
    with session_factory(db_url)() as session:
        message_id = _outbox(session)
        cases.claim_outbox(session=session, message_id=message_id)
        cases.mark_outbox_failed(session=session, message_id=message_id, error="Forbidden: bot was blocked by the user")
        session.commit()
        message = session.get(OutboxMessage, message_id)
        session.refresh(message)
        assert message.sent_at is not None and message.error.startswith("Forbidden")
        later = utcnow() + timedelta(hours=1)
        assert message_id not in cases.find_stuck(session=session, stuck_after_s=60, now=later).outbox
