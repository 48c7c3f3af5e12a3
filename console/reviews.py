"""The review form and the follow-up message as the console shows and checks them.

The domain stores them: skintriage.reviews (the review and its audit event), skintriage.outbox (the messages to
the patient).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from skintriage.models import AuditEvent, Case, Operator, Review
from skintriage.vocabulary import LABELS, REVIEW_VERDICTS, BookingAnswer, OutboxKind, ReviewVerdict

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
