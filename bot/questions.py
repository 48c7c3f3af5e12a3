"""The questions a doctor would ask about a new spot: where, changed, symptoms, age (ml.triage.red_flags.QUESTIONS).

Asked once per spot (a photo, or the first photo of an album) right after the acknowledgement, in one message
that each tap turns into the next question: four taps at most, each question skippable. The analysis never
waits for them. The answers are stored with the case (cases.record_answer) and the answer's tier takes them in
when it is composed (bot.answers.answered). A tap after the answer was sent that makes it more urgent queues
a follow-up (bot.answers.queue_answers_followup), which the bot sends at once; should that fail, the reply
queue's sweeper sends it.

Plain blocking functions like bot.intake (the handler runs them off the event loop), and one async sender.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy.orm import Session, sessionmaker
from telegram import Bot, CallbackQuery, InlineKeyboardButton, InlineKeyboardMarkup
from telegram.constants import ParseMode
from telegram.error import BadRequest, Forbidden, TelegramError

from bot.answers import queue_answers_followup
from bot.delivery import send_outbox_message
from bot.i18n import Html, Texts, language_for
from bot.patients import Patient
from bot.warning_signs import as_answers
from ml.triage.red_flags import QUESTIONS, SKIP
from skintriage import cases
from skintriage.exceptions import CaseNotFound
from skintriage.models import OutboxMessage, utcnow

log = logging.getLogger(__name__)

# Free text with warning words speaks about the patient's latest case when it came this recently.
WORDS_CASE_WINDOW = timedelta(days=1)
QUESTION_PATTERN = r"^q:(\d{1,12}):(" + "|".join(QUESTIONS) + r"):([a-z_]{1,20})$"
ORDER: tuple[str, ...] = tuple(QUESTIONS)
BUTTONS_PER_ROW = 2


def callback_data(case_id: int, question: str, option: str) -> str:
    """A button's data: q:<case>:<question>:<option> (well under Telegram's 64 bytes)."""
    return f"q:{case_id}:{question}:{option}"


def next_question(question: str) -> str | None:
    """The question asked after `question`; None after the last."""
    index = ORDER.index(question) + 1
    return ORDER[index] if index < len(ORDER) else None


def _keyboard(texts: Texts, lang: str, case_id: int, question: str) -> InlineKeyboardMarkup:
    options = [*QUESTIONS[question], SKIP]
    labels = [texts.get(lang, "option.skip" if o == SKIP else f"option.{question}.{o}") for o in options]
    buttons = [InlineKeyboardButton(label, callback_data=callback_data(case_id, question, o))
               for label, o in zip(labels, options, strict=True)]  # fmt: skip
    return InlineKeyboardMarkup([buttons[i : i + BUTTONS_PER_ROW] for i in range(0, len(buttons), BUTTONS_PER_ROW)])


def first_screen(texts: Texts, lang: str, *, case_id: int) -> tuple[str, InlineKeyboardMarkup]:
    """The first question of a new spot, with what the questions are for."""
    intro = texts.get(lang, "questions.intro", case_id=case_id)
    return "\n\n".join([intro, texts.get(lang, f"question.{ORDER[0]}")]), _keyboard(texts, lang, case_id, ORDER[0])


def screen_after(
    texts: Texts, lang: str, *, case_id: int, question: str, answers: dict[str, str]
) -> tuple[str, InlineKeyboardMarkup | None]:
    """What the question message turns into after a tap on `question`: the next question, or the thanks."""
    following = next_question(question)
    if following is not None:
        return texts.get(lang, f"question.{following}"), _keyboard(texts, lang, case_id, following)
    given = [texts.get(lang, "answers.quoted", option=texts.get(lang, f"option.{q}.{answers[q]}"))
             for q in ORDER if answers.get(q) in QUESTIONS[q]]  # fmt: skip
    if not given:
        return texts.get(lang, "questions.done_none", case_id=case_id), None
    return texts.get(lang, "questions.done", case_id=case_id, answers=Html(", ".join(given))), None


async def show(query: CallbackQuery, text: str, markup: InlineKeyboardMarkup | None) -> None:
    """Turn the question message into `text`; a second tap on the same button (already shown) changes nothing."""
    try:
        await query.edit_message_text(text, parse_mode=ParseMode.HTML, reply_markup=markup)
    except BadRequest as exc:
        if "not modified" not in exc.message.lower():
            raise


@dataclass(frozen=True)
class Tapped:
    """The outcome of a tap: the patient's language, the case's answers (None: not theirs, or a forged option)
    and the follow-up to send now that the answers raised a sent answer's urgency."""

    language: str
    answers: dict[str, str] | None
    followup_id: int | None = None


def record(
    *, sessions: sessionmaker[Session], texts: Texts, patient: Patient, case_id: int, question: str, option: str
) -> Tapped:
    """Store a tap on the patient's own case (and its album) and queue a follow-up if it raises the urgency."""
    with sessions.begin() as session:
        user = cases.get_user(session=session, telegram_user_id=patient.telegram_user_id)
        if user is None:  # a button of a patient who deleted everything, or a forged one
            return Tapped(language_for(patient.language_code), None)
        try:
            case = cases.get_user_case(session=session, user=user, case_id=case_id)
            cases.record_answer(session=session, case=case, question=question, option=option)
        except (CaseNotFound, ValueError):
            return Tapped(user.language, None)
        session.flush()
        followup = queue_answers_followup(session=session, case=case, texts=texts)
        return Tapped(user.language, dict(case.patient_answers or {}), followup)


@dataclass(frozen=True)
class Noted:
    """Warning words stored as answers: the case, the answers they added (question -> option) and the follow-up to
    send now that they raised a sent answer's urgency."""

    case_id: int
    answers: dict[str, str]
    followup_id: int | None = None


def record_words(
    *, sessions: sessionmaker[Session], texts: Texts, patient: Patient, text: str | None, signs: list[str],
    case_id: int | None = None,
) -> Noted | None:  # fmt: skip
    """Store the warning signs of a caption (`case_id`: its photo's case) or a free text (the latest case of the
    last WORDS_CASE_WINDOW) as the patient's answers, as a tap would; None when there is no case or nothing new."""
    with sessions.begin() as session:
        user = cases.get_user(session=session, telegram_user_id=patient.telegram_user_id)
        if user is None:
            return None
        if case_id is None:
            case = cases.latest_case(session=session, user=user, since=utcnow() - WORDS_CASE_WINDOW)
        else:
            try:
                case = cases.get_user_case(session=session, user=user, case_id=case_id)
            except CaseNotFound:
                return None
        found = as_answers(text, signs, dict(case.patient_answers or {})) if case is not None else {}
        if not found:
            return None
        for question, option in found.items():
            cases.record_answer(session=session, case=case, question=question, option=option)
        session.flush()
        return Noted(case.id, found, queue_answers_followup(session=session, case=case, texts=texts))


def noted_text(texts: Texts, lang: str, noted: Noted) -> Html:
    """The line saying which answers the words were stored as, quoted as the buttons read."""
    given = [texts.get(lang, "answers.quoted", option=texts.get(lang, f"option.{q}.{noted.answers[q]}"))
             for q in ORDER if q in noted.answers]  # fmt: skip
    return texts.get(lang, "warning.noted", case_id=noted.case_id, answers=Html(", ".join(given)))


def _claim(sessions: sessionmaker[Session], message_id: int) -> OutboxMessage | None:
    with sessions.begin() as session:
        message = cases.claim_outbox(session=session, message_id=message_id)
        if message is not None:
            # Composing it (bot.followups) reads these after the session closes: load them now.
            _ = (message.user, message.case, message.review)
        return message


def _finish(
    sessions: sessionmaker[Session], message_id: int, error: str | None, *, final: bool, text: str | None = None
) -> None:
    with sessions.begin() as session:
        if error is None:
            cases.mark_outbox_sent(session=session, message_id=message_id, text=text)
        elif final:
            cases.mark_outbox_failed(session=session, message_id=message_id, error=error)
        else:
            cases.release_outbox(session=session, message_id=message_id, error=error)


async def send_followup(bot: Bot, *, sessions: sessionmaker[Session], message_id: int) -> None:
    """Send a queued follow-up now; when Telegram fails, leave it to the reply queue's sweeper."""
    message = await asyncio.to_thread(_claim, sessions, message_id)
    if message is None:
        return
    try:
        _, text = await send_outbox_message(bot, message=message)
    except (Forbidden, BadRequest) as exc:  # the chat is gone: retrying cannot help
        await asyncio.to_thread(_finish, sessions, message_id, f"{type(exc).__name__}: {exc}", final=True)
        return
    except TelegramError as exc:  # network, flood control: the sweeper retries
        log.warning("follow-up %d not sent (%s); the sweeper sends it", message_id, type(exc).__name__)
        await asyncio.to_thread(_finish, sessions, message_id, type(exc).__name__, final=False)
        return
    await asyncio.to_thread(_finish, sessions, message_id, None, final=False, text=text)
