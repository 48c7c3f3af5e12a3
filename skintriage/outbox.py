"""Clinicians' messages to patients through the outbox: queued (audited) here, sent by the worker (bot.followups).

System messages (booking questions, reminders, raised urgency) are queued by skintriage.cases.queue_patient_message.
"""

from __future__ import annotations

import logging

from sqlalchemy.orm import Session

from skintriage.cases import audit
from skintriage.models import Case, Operator, OutboxMessage, Review
from skintriage.vocabulary import OutboxKind

log = logging.getLogger(__name__)


def create_review_message(
    *, session: Session, case: Case, operator: Operator, review: Review, words: str = ""
) -> OutboxMessage:
    """Queue the review's message to the patient (with the reviewer's optional words), audited; the caller commits,
    then enqueues it.

    Every verdict reaches the patient: an agreement confirms the advice, a disagreement gives the new advice, a
    "cannot assess" says so and what to do. The text is composed in the patient's language when it is sent
    (bot.followups), from the review as it is then.
    """
    return _queue(session=session, case=case, operator=operator, kind=OutboxKind.REVIEW, text=words, review=review)


def create_followup(*, session: Session, case: Case, operator: Operator, text: str) -> OutboxMessage:
    """Queue a clinician's own words for the case's patient, audited; the caller commits, then enqueues it.

    The patient reads them with the case number, "a clinician of the service" and the disclaimer (bot.followups).
    """
    return _queue(session=session, case=case, operator=operator, kind=OutboxKind.FOLLOWUP, text=text)


def _queue(
    *, session: Session, case: Case, operator: Operator, kind: str, text: str, review: Review | None = None
) -> OutboxMessage:
    user = case.user
    message = OutboxMessage(
        user_id=user.id,
        case_id=case.id,
        operator_id=operator.id,
        review_id=review.id if review is not None else None,
        chat_id=user.chat_id,
        kind=kind,
        text=text.strip(),
    )
    session.add(message)
    session.flush()
    # Ids and the language only: the text itself stays out of the audit log.
    audit(
        session=session,
        actor="operator",
        action="message.queued",
        case_id=case.id,
        operator_id=operator.id,
        detail={"message_id": message.id, "kind": kind, "language": user.language, "chars": len(message.text)},
    )
    return message


def enqueue_followup(message_id: int) -> bool:
    """Hand a committed message to the bot's reply queue; False leaves it to the sweeper."""
    from skintriage.queueing import enqueue_outbox

    queued = enqueue_outbox(message_id)
    if not queued:
        log.warning("reply queue unreachable; outbox message %s waits for the sweeper", message_id)
    return queued
