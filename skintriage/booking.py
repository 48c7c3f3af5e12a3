"""The booking question: a few days after a HIGH answer, "Have you booked an appointment with a dermatologist?"

Asked once per case (once per album: photos sent together are one spot), through the outbox, so it is durable
and retried like any message; queuing it is a conditional UPDATE of `booking_asked_at`, so two periodic runs
never ask twice. A patient's /delete removes their cases and unsent messages, so nothing is asked after it.
Not asked when a clinician's latest review said no earlier appointment is needed, nor about answers more than
ASK_WITHIN past due.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from skintriage.cases import album_of, audit, get_user, get_user_case
from skintriage.exceptions import CaseNotFound
from skintriage.models import Case, CaseStatus, OutboxMessage, Review, utcnow
from skintriage.vocabulary import BOOKING_ANSWERS, Label, OutboxKind, ReviewVerdict, Tier

log = logging.getLogger(__name__)


def _still_advised(review: Review | None) -> bool:
    """Whether the patient is still advised to see a dermatologist soon after the latest review (if any)."""
    if review is None:
        return True
    if review.urgency:
        return review.urgency != "routine"
    # Agreeing keeps the HIGH advice; "cannot assess" sends the patient to a dermatologist in person.
    return review.verdict != ReviewVerdict.DISAGREE or review.corrected_label == Label.MEL


# A question is asked only this long after it became due: after an outage of the periodic job, or when the
# feature is first deployed, patients are not asked about answers they had weeks ago.
ASK_WITHIN = timedelta(days=7)


def due_cases(*, session: Session, after: timedelta, now: datetime | None = None) -> list[int]:
    """HIGH answers delivered `after` ago (up to ASK_WITHIN more) whose booking question was not asked, oldest first."""
    now = now or utcnow()
    rows = session.scalars(
        select(Case)
        .where(
            Case.status == CaseStatus.DONE,
            Case.tier == Tier.HIGH,
            Case.booking_asked_at.is_(None),
            Case.reply_text.is_not(None),  # the answer reached the patient (not undeliverable)
            Case.delivered_at <= now - after,
            Case.delivered_at > now - after - ASK_WITHIN,
        )
        .order_by(Case.delivered_at, Case.id)
    ).all()
    return [case.id for case in rows if _still_advised(case.reviews[-1] if case.reviews else None)]


def queue_question(*, session: Session, case_id: int, now: datetime | None = None) -> OutboxMessage | None:
    """Queue the question for a case once (its album's photos count as asked); None when asked already or gone.

    The caller commits, then enqueues the message (skintriage.queueing.enqueue_outbox); the sweeper sends it otherwise.
    """
    now = now or utcnow()
    case = session.get(Case, case_id)
    if case is None:
        return None
    album = [c.id for c in album_of(session=session, case=case)]
    taken = session.execute(
        update(Case)
        .where(Case.id == case_id, Case.booking_asked_at.is_(None))
        .values(booking_asked_at=now)
        .execution_options(synchronize_session=False)
    )
    if taken.rowcount != 1:
        return None
    session.execute(
        update(Case)
        .where(Case.id.in_(album), Case.booking_asked_at.is_(None))
        .values(booking_asked_at=now)
        .execution_options(synchronize_session=False)
    )
    user = case.user
    message = OutboxMessage(user_id=user.id, case_id=case.id, chat_id=user.chat_id, kind=OutboxKind.BOOKING, text="")
    session.add(message)
    session.flush()
    audit(session=session, actor="system", action="booking.asked", case_id=case.id, detail={"message_id": message.id})
    return message


def record_answer(*, session: Session, telegram_user_id: int, case_id: int, answer: str) -> tuple[str, bool] | None:
    """Store the patient's tapped answer on their own case; (language, first answer) or None when not theirs."""
    if answer not in BOOKING_ANSWERS:
        raise ValueError(f"unknown booking answer {answer!r}; expected one of {BOOKING_ANSWERS}")
    user = get_user(session=session, telegram_user_id=telegram_user_id)
    if user is None:
        return None
    try:
        case = get_user_case(session=session, user=user, case_id=case_id)
    except CaseNotFound:
        return None
    first = case.booking_answer is None
    case.booking_answer = answer
    case.booking_answered_at = utcnow()
    audit(session=session, actor="patient", action="booking.answered", case_id=case.id, detail={"answer": answer})
    return user.language, first
