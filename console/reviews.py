"""Operators' verdicts on cases and their follow-up messages to patients (both audited)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from skintriage.cases import audit
from skintriage.models import AuditEvent, Case, Operator, OutboxMessage, Review
from skintriage.vocabulary import LABELS, REVIEW_VERDICTS, BookingAnswer, OutboxKind, ReviewVerdict

log = logging.getLogger(__name__)

# How each verdict reads on the case page, the dashboard and the audit log.
VERDICT_WORDS: dict[str, str] = {
    ReviewVerdict.AGREE: "agrees",
    ReviewVerdict.DISAGREE: "disagrees",
    ReviewVerdict.CANNOT_ASSESS: "cannot assess",
}
# How soon the patient should see a doctor, in the operator's judgement.
URGENCIES: dict[str, str] = {
    "routine": "Routine: next regular skin check",
    "soon": "Soon: within 4 weeks",
    "urgent": "Urgent: within a week",
    "same_day": "Same day",
}
# The outbox's kinds of message and the patient's booking answers, as shown.
MESSAGE_KINDS: dict[str, str] = {
    OutboxKind.FOLLOWUP: "Clinician's message",
    OutboxKind.REVIEW: "Review told to the patient",
    OutboxKind.BOOKING: "Booking question",
    OutboxKind.ANSWERS: "The patient's answers raised the urgency",
    OutboxKind.REMINDER_OFFER: "Re-check reminder offered",
    OutboxKind.REMINDER: "Re-check reminder",
}
BOOKING_WORDS: dict[str, str] = {
    BookingAnswer.BOOKED: "booked an appointment",
    BookingAnswer.NOT_YET: "not booked yet",
    BookingAnswer.DECLINED: "does not want to book",
}
NOTE_MAX = 4000
MESSAGE_MAX = 2000  # Telegram allows 4096; leave room for the bot's header and disclaimer
# ReviewInput.read for a blinded second read (the case page was shown without the earlier reviews).
SECOND_READ = "second"


@dataclass
class ReviewInput:
    """A review form as submitted."""

    verdict: str  # one of REVIEW_VERDICTS (vocabulary.ReviewVerdict)
    corrected_label: str = ""
    urgency: str = ""
    note: str = ""
    message: str = ""
    read: str = ""  # "" for an ordinary review, SECOND_READ for a blinded second read


def validate_review(form: ReviewInput, *, case: Case) -> list[str]:
    """Problems with a review form, as messages for the operator (empty when it can be saved)."""
    errors: list[str] = []
    if form.verdict not in REVIEW_VERDICTS:
        errors.append("Choose agree, disagree or cannot assess.")
    if form.verdict == ReviewVerdict.CANNOT_ASSESS and form.corrected_label:
        errors.append("You could not assess the case, so give no label; choose disagree to correct the model.")
    if form.corrected_label and form.corrected_label not in LABELS:
        errors.append(f"Corrected label must be one of {', '.join(LABELS)}.")
    if form.verdict == ReviewVerdict.DISAGREE and not form.corrected_label:
        errors.append("When you disagree, give the label you think is right.")
    if form.verdict == ReviewVerdict.DISAGREE and form.corrected_label and form.corrected_label == case.label:
        errors.append("The corrected label equals the model's; choose agree instead.")
    if form.verdict == ReviewVerdict.AGREE and form.corrected_label and form.corrected_label != case.label:
        errors.append("You agreed but gave a different label; choose disagree to correct it.")
    if form.urgency and form.urgency not in URGENCIES:
        errors.append(f"Urgency must be one of {', '.join(URGENCIES)}.")
    if len(form.note) > NOTE_MAX:
        errors.append(f"The note is longer than {NOTE_MAX} characters.")
    errors.extend(validate_message(form.message, required=False))
    if form.read not in ("", SECOND_READ):
        errors.append(f"read must be empty or {SECOND_READ}.")
    return errors


def second_read_problem(*, session: Session, case: Case, operator: Operator) -> str | None:
    """Why this operator cannot give this case a blinded second read, or None when they can.

    A second read needs a first (unblinded) review by someone else, and a reader who has not reviewed the case
    and has not opened its ordinary page or its patient's page, which show the reviews, since the first review was
    saved (audit log).
    """
    reviews = session.scalars(select(Review).where(Review.case_id == case.id).order_by(Review.created_at)).all()
    first = [r for r in reviews if not r.blinded]
    if not first:
        return "This case has no review yet, so there is nothing to read a second time: review it normally."
    if any(r.operator_id == operator.id for r in reviews):
        return "You have already reviewed this case, so your second read would not be blind."
    views = session.scalars(
        select(AuditEvent.detail).where(
            AuditEvent.action == "case.viewed",
            AuditEvent.case_id == case.id,
            AuditEvent.operator_id == operator.id,
            AuditEvent.at >= first[0].created_at,
        )
    ).all()
    if any((detail or {}).get("read") != SECOND_READ for detail in views):
        return "You have seen this case's reviews, so your second read would not be blind."
    patient_views = session.scalars(
        select(AuditEvent.detail).where(
            AuditEvent.action == "patient.viewed",
            AuditEvent.operator_id == operator.id,
            AuditEvent.at >= first[0].created_at,
        )
    ).all()
    if any(case.id in ((detail or {}).get("cases") or []) for detail in patient_views):
        return "You have seen this case's reviews on its patient's page, so your second read would not be blind."
    return None


def validate_message(text: str, *, required: bool = True) -> list[str]:
    """Problems with a follow-up message text."""
    if required and not text.strip():
        return ["Write the message first."]
    if len(text) > MESSAGE_MAX:
        return [f"The message is longer than {MESSAGE_MAX} characters."]
    return []


def record_review(*, session: Session, case: Case, operator: Operator, form: ReviewInput) -> Review:
    """Store a validated review and audit it (the caller commits)."""
    review = Review(
        case_id=case.id,
        operator_id=operator.id,
        agrees=form.verdict == ReviewVerdict.AGREE,
        verdict=form.verdict,
        corrected_label=form.corrected_label or (case.label if form.verdict == ReviewVerdict.AGREE else None),
        urgency=form.urgency or None,
        note=form.note.strip() or None,
        blinded=form.read == SECOND_READ,
    )
    session.add(review)
    session.flush()
    audit(
        session=session,
        actor="operator",
        action="case.reviewed",
        case_id=case.id,
        operator_id=operator.id,
        detail={
            "review_id": review.id,
            "verdict": review.verdict,
            "agrees": review.agrees,
            "model_label": case.label,
            "corrected_label": review.corrected_label,
            "urgency": review.urgency,
            "blinded": review.blinded,
        },
    )
    return review


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
