"""Messages that follow an answer: a clinician's review, a clinician's own words, the booking question, the
re-check reminder's offer and the reminder itself.

They are stored in the outbox (skintriage.models.OutboxMessage) by the console or the periodic jobs and
composed here, in the patient's language, when the reply queue sends them (worker.tasks.send_outbox).
Composing at send time, as for case answers, means one place writes what patients read, in the language
the patient has chosen by then, with the deployment's guidance overrides; the console only stores the
clinician's decision and words, and `sent_text` keeps exactly what went out.

Every message names the case number and who speaks ("a clinician of the service"), and ends with the
disclaimer. A clinician's words are a value inside a catalogue text, so they are escaped, never markup.
"""

from __future__ import annotations

import html
from dataclasses import dataclass

from babel.dates import format_date
from telegram import InlineKeyboardButton, InlineKeyboardMarkup

from bot.answers import NEAR_LINE_REASONS
from bot.i18n import DEFAULT_LANGUAGE, Html, Texts
from skintriage.models import Case, OutboxMessage, Review
from skintriage.reminders import DEFAULT_MONTHS
from skintriage.settings import get_settings
from skintriage.vocabulary import BOOKING_ANSWERS, Label, OutboxKind, ReviewVerdict, Tier

# A corrected label -> the tier whose guidance says what to do about it (the same words as the bot's answers).
LABEL_TIER = {Label.MEL: Tier.HIGH, Label.OTHER: Tier.MEDIUM, Label.NV: Tier.LOW}
BOOKING_PREFIX = "booking"
BOOKING_PATTERN = rf"^{BOOKING_PREFIX}:(\d{{1,12}}):({'|'.join(BOOKING_ANSWERS)})$"
REMINDER_PREFIX = "reminder"
# reminder:<yes|no|stop>:<case>: the offer's answers, and stopping a case's reminder (the reminder, /reminders).
REMINDER_PATTERN = rf"^{REMINDER_PREFIX}:(yes|no|stop):(\d{{1,12}})$"


@dataclass(frozen=True)
class Outgoing:
    """A composed outbox message: Telegram HTML and, for a question, its buttons."""

    html: str
    markup: InlineKeyboardMarkup | None = None


def language_of(message: OutboxMessage) -> str:
    """The patient's language now (their profile), else the case's, else English."""
    if message.user is not None:
        return message.user.language
    if message.case is not None:
        return message.case.language
    return DEFAULT_LANGUAGE


def answer_guidance(case: Case, *, texts: Texts, lang: str) -> Html:
    """The guidance the patient's answer gave for this case (a near-line UNCERTAIN answer takes HIGH's)."""
    if case.tier not in {t.value for t in Tier}:
        return texts.guidance(lang, Tier.UNCERTAIN if case.tier else Tier.RETAKE)
    if case.tier == Tier.UNCERTAIN and case.tier_reason in NEAR_LINE_REASONS:
        return texts.guidance(lang, Tier.HIGH)
    return texts.guidance(lang, case.tier)


def review_advice(review: Review, case: Case, *, texts: Texts, lang: str) -> Html:
    """What to do after a review: the clinician's urgency if set, else the guidance for their label."""
    if review.verdict == "cannot_assess":
        if review.urgency:
            return texts.get(lang, f"review.urgency.{review.urgency}")
        return texts.get(lang, "review.cannot_assess_advice")
    if review.urgency:
        return texts.get(lang, f"review.urgency.{review.urgency}")
    if review.verdict == ReviewVerdict.AGREE:
        return answer_guidance(case, texts=texts, lang=lang)
    return texts.guidance(lang, LABEL_TIER.get(review.corrected_label or "", Tier.UNCERTAIN))


def compose_review(message: OutboxMessage, *, texts: Texts, lang: str) -> str:
    """The message about a clinician's review: case number, that a clinician looked, the advice, their words."""
    review, case = message.review, message.case
    if review is None or case is None:
        raise ValueError(f"outbox message {message.id} of kind review needs its review and case; both were deleted?")
    parts = [
        texts.get(lang, f"review.{review.verdict}", case_id=case.id),
        review_advice(review, case, texts=texts, lang=lang),
    ]
    if message.text.strip():
        parts.append(texts.get(lang, "review.words", words=message.text.strip()))
    parts.append(texts.get(lang, "result.disclaimer"))
    return "\n\n".join(parts)


def compose_followup(message: OutboxMessage, *, texts: Texts, lang: str) -> str:
    """A clinician's own words, framed: case number, who writes, the words, the disclaimer."""
    title = (
        texts.get(lang, "followup.title", case_id=message.case_id)
        if message.case_id is not None
        else texts.get(lang, "followup.title_no_case")
    )
    words = html.escape(message.text.strip(), quote=False)  # the clinician's words are never markup
    return "\n\n".join([title, words, texts.get(lang, "result.disclaimer")])


def booking_buttons(case_id: int, *, texts: Texts, lang: str) -> InlineKeyboardMarkup:
    """The booking question's answers, one per row; data `booking:<case>:<answer>`."""
    return InlineKeyboardMarkup(
        [
            [
                InlineKeyboardButton(
                    texts.get(lang, f"button.booking_{answer}"), callback_data=f"{BOOKING_PREFIX}:{case_id}:{answer}"
                )
            ]
            for answer in BOOKING_ANSWERS
        ]
    )


def compose_booking(message: OutboxMessage, *, texts: Texts, lang: str) -> Outgoing:
    """The question whether the patient booked a dermatologist, with its buttons."""
    if message.case_id is None:
        raise ValueError(f"outbox message {message.id} of kind booking has no case; it was deleted?")
    text = "\n\n".join(
        [texts.get(lang, "booking.question", case_id=message.case_id), texts.get(lang, "result.disclaimer")]
    )
    return Outgoing(text, booking_buttons(message.case_id, texts=texts, lang=lang))


def reminder_button(text: str, action: str, case_id: int) -> InlineKeyboardButton:
    """A re-check reminder button; data `reminder:<yes|no|stop>:<case>`."""
    return InlineKeyboardButton(text, callback_data=f"{REMINDER_PREFIX}:{action}:{case_id}")


def compose_reminder_offer(message: OutboxMessage, *, texts: Texts, lang: str) -> Outgoing:
    """The offer, after a LOW or MEDIUM answer, to remind the patient to photograph the spot again."""
    if message.case_id is None:
        raise ValueError(f"outbox message {message.id} of kind reminder_offer has no case; it was deleted?")
    months = get_settings().recheck_reminder_months or DEFAULT_MONTHS  # queued while the setting was on
    offer = texts.get(lang, "reminder.offer", case_id=message.case_id, months=months)
    text = "\n\n".join([offer, texts.get(lang, "result.disclaimer")])
    markup = InlineKeyboardMarkup(
        [
            [reminder_button(texts.get(lang, "button.reminder_yes", months=months), "yes", message.case_id)],
            [reminder_button(texts.get(lang, "button.reminder_no"), "no", message.case_id)],
        ]
    )
    return Outgoing(text, markup)


def compose_reminder(message: OutboxMessage, *, texts: Texts, lang: str) -> Outgoing:
    """A due re-check reminder: photograph the spot again, or see a doctor if it changed; a button stops it."""
    case = message.case
    if case is None:
        raise ValueError(f"outbox message {message.id} of kind reminder has no case; it was deleted?")
    date = format_date(case.received_at, format="medium", locale=lang)
    text = "\n\n".join(
        [texts.get(lang, "reminder.due", case_id=case.id, date=date), texts.get(lang, "result.disclaimer")]
    )
    markup = InlineKeyboardMarkup([[reminder_button(texts.get(lang, "button.reminder_stop"), "stop", case.id)]])
    return Outgoing(text, markup)


def compose(message: OutboxMessage, *, texts: Texts) -> Outgoing:
    """The patient's text for an outbox message, in their language now (its rows must be loaded or attached)."""
    lang = language_of(message)
    if message.kind == OutboxKind.REVIEW:
        return Outgoing(compose_review(message, texts=texts, lang=lang))
    if message.kind == OutboxKind.BOOKING:
        return compose_booking(message, texts=texts, lang=lang)
    if message.kind == OutboxKind.REMINDER_OFFER:
        return compose_reminder_offer(message, texts=texts, lang=lang)
    if message.kind == OutboxKind.REMINDER:
        return compose_reminder(message, texts=texts, lang=lang)
    if message.kind == OutboxKind.ANSWERS:
        # Composed by the bot when it was queued (bot.delivery.answers_followup), disclaimer included; plain text.
        return Outgoing(html.escape(message.text, quote=False))
    return Outgoing(compose_followup(message, texts=texts, lang=lang))
