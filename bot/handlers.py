"""Thin Telegram handlers: parse the update, call the service off the event loop, reply.

Conversation state lives in the database (consent time and version, language), not in memory, so a restarted
bot carries on where it was. One application-wide error handler (`on_error`) answers the patient when
something fails; handlers carry no blanket try/except.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker
from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Update
from telegram.constants import ChatAction, ParseMode
from telegram.error import BadRequest, Forbidden, NetworkError, TelegramError
from telegram.ext import Application, CallbackQueryHandler, CommandHandler, ContextTypes, MessageHandler, filters

from bot import intake, patients, questions, spots
from bot.answers import compose
from bot.consent import ConsentState, consent_text, consent_version
from bot.delivery import send_reply
from bot.i18n import LANGUAGE_NAMES, LANGUAGES, Texts, language_for
from bot.intake import Decision, IncomingPhoto, Outcome
from bot.patients import Patient
from bot.warning_signs import find_warning_signs
from ml.errors import InvalidImageError
from skintriage.exceptions import StorageError
from skintriage.models import CaseStatus
from skintriage.settings import Settings
from skintriage.storage import ImageStore

log = logging.getLogger(__name__)

HISTORY_LIMIT = 10
CONSENT_YES = "consent:yes"
LANGUAGE_PATTERN = r"^lang:(en|ko)$"
CASE_PATTERN = r"^case:(\d{1,12})$"
DELETE_PATTERN = r"^delete:(yes|no)$"
COMMANDS = ("start", "help", "history", "reminders", "delete", "language", "privacy")  # the menu, in order


@dataclass
class Services:
    """What the handlers need, built once by bot.app.build_application."""

    settings: Settings
    sessions: sessionmaker[Session]
    store: ImageStore
    texts: Texts
    enqueue: Callable[[int], bool]
    consent_version: str = field(init=False)

    def __post_init__(self) -> None:
        self.consent_version = consent_version(self.texts, self.settings)


def _services(context: ContextTypes.DEFAULT_TYPE) -> Services:
    return context.application.bot_data["services"]


def _patient(update: Update) -> Patient:
    user, chat = update.effective_user, update.effective_chat
    if user is None:  # a message without a sender: in a private chat the chat id is the user's id
        return Patient(chat.id, chat.id, None)
    return Patient(user.id, chat.id, user.language_code)


async def _say(update: Update, text: str, markup: InlineKeyboardMarkup | None = None) -> int:
    message = await update.get_bot().send_message(
        update.effective_chat.id, text, parse_mode=ParseMode.HTML, reply_markup=markup
    )
    return message.message_id


def _keyboard(rows: list[list[tuple[str, str]]]) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup([[InlineKeyboardButton(t, callback_data=d) for t, d in row] for row in rows])


def _language_row() -> list[tuple[str, str]]:
    return [(LANGUAGE_NAMES[lang], f"lang:{lang}") for lang in reversed(LANGUAGES)]


def _introduction(svc: Services, lang: str, *lead: str) -> tuple[str, InlineKeyboardMarkup]:
    """The consent text (after the `lead` catalogue texts) with the consent and language buttons."""
    text = "\n\n".join([*(svc.texts.get(lang, key) for key in lead), consent_text(svc.texts, lang, svc.settings)])
    return text, _keyboard([[(svc.texts.get(lang, "button.consent"), CONSENT_YES)], _language_row()])


# --- commands -------------------------------------------------------------------------------


async def on_start(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/start: introduction and the consent button (again when the text changed), or a welcome back."""
    svc = _services(context)
    lang, state = await asyncio.to_thread(
        patients.start, sessions=svc.sessions, patient=_patient(update), version=svc.consent_version
    )
    if state is ConsentState.CURRENT:
        text = "\n\n".join([svc.texts.get(lang, "start.welcome_back"), svc.texts.get(lang, "tips.photo")])
        await _say(update, text, _keyboard([_language_row()]))
        return
    await _say(update, *_introduction(svc, lang, *(("consent.changed",) if state is ConsentState.OUTDATED else ())))


async def on_help(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/help: how to use the bot."""
    svc = _services(context)
    lang = await asyncio.to_thread(patients.language_of, sessions=svc.sessions, patient=_patient(update))
    await _say(update, "\n\n".join([svc.texts.get(lang, "help.text"), svc.texts.get(lang, "tips.photo")]))


async def on_privacy(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/privacy: what is stored and for how long."""
    svc = _services(context)
    lang = await asyncio.to_thread(patients.language_of, sessions=svc.sessions, patient=_patient(update))
    text = svc.texts.get(lang, "privacy.text", days=svc.settings.retention_days, operator=svc.settings.service_operator)
    await _say(update, text)


async def on_language(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/language: offer the languages."""
    svc = _services(context)
    lang = await asyncio.to_thread(patients.language_of, sessions=svc.sessions, patient=_patient(update))
    await _say(update, svc.texts.get(lang, "language.choose"), _keyboard([_language_row()]))


async def on_history(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/history: the latest cases, photos of one spot together, with a button to see each again."""
    svc = _services(context)
    lang, rows = await asyncio.to_thread(
        patients.recent_cases, sessions=svc.sessions, patient=_patient(update), limit=HISTORY_LIMIT
    )
    if not rows:
        await _say(update, svc.texts.get(lang, "history.empty"))
        return
    text, order = spots.history_screen(svc.texts, lang, rows)
    buttons = [[(svc.texts.get(lang, "history.button", case_id=case_id), f"case:{case_id}")] for case_id in order]
    await _say(update, text, _keyboard(buttons))


async def on_delete(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/delete: ask for confirmation."""
    svc = _services(context)
    lang = await asyncio.to_thread(patients.language_of, sessions=svc.sessions, patient=_patient(update))
    buttons = [
        [(svc.texts.get(lang, "button.delete_yes"), "delete:yes")],
        [(svc.texts.get(lang, "button.delete_no"), "delete:no")],
    ]
    await _say(update, svc.texts.get(lang, "delete.confirm"), _keyboard(buttons))


# --- buttons --------------------------------------------------------------------------------


async def on_consent_button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """The consent button: record consent to this text and ask for the photo, or analyse the photos held."""
    svc = _services(context)
    query = update.callback_query
    consent = await asyncio.to_thread(
        patients.give_consent, sessions=svc.sessions, patient=_patient(update), version=svc.consent_version
    )
    await query.answer()
    if query.message and query.message.reply_markup:
        await query.edit_message_reply_markup(None)
    lang = consent.language
    if consent.pending_photos:
        await _say(update, svc.texts.get(lang, "consent.thanks_pending"))
        for photo in consent.pending_photos:
            await _receive_image(update, context, IncomingPhoto.from_json(photo))
        return
    key = "consent.already" if consent.already else "consent.thanks"
    await _say(update, "\n\n".join([svc.texts.get(lang, key), svc.texts.get(lang, "tips.photo")]))


async def on_language_button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """A language button: store it and confirm in the new language (repeating the introduction before consent)."""
    svc = _services(context)
    query = update.callback_query
    lang = context.match.group(1)
    state = await asyncio.to_thread(
        patients.choose_language, sessions=svc.sessions, patient=_patient(update), language=lang,
        version=svc.consent_version,
    )  # fmt: skip
    await query.answer()
    if state is ConsentState.CURRENT:
        await _say(update, svc.texts.get(lang, "language.set"))
    else:
        await _say(update, *_introduction(svc, lang, *(("consent.changed",) if state is ConsentState.OUTDATED else ())))


async def on_case_button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """A /history button: show the patient's own case again (never anyone else's)."""
    svc = _services(context)
    query = update.callback_query
    case_id = int(context.match.group(1))
    lang, case, album = await asyncio.to_thread(
        patients.own_case, sessions=svc.sessions, patient=_patient(update), case_id=case_id
    )
    if case is None:
        await query.answer(svc.texts.get(lang, "history.not_found"), show_alert=True)
        return
    await query.answer()
    if case.status not in (CaseStatus.DONE, CaseStatus.REJECTED, CaseStatus.FAILED):
        await _say(update, svc.texts.get(lang, "history.still_open", case_id=case.id))
        return
    case.language = lang  # detached copy: answer in the patient's current language
    note = svc.texts.get(lang, "history.photo_deleted") if case.images_deleted_at else None
    await send_reply(
        query.get_bot(),
        chat_id=update.effective_chat.id,
        reply=compose(case, texts=svc.texts, album=album),
        store=svc.store,
        note=note,
    )


async def on_delete_button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """The /delete confirmation buttons: delete everything, or nothing."""
    svc = _services(context)
    query = update.callback_query
    await query.answer()
    if context.match.group(1) == "no":
        lang = await asyncio.to_thread(patients.language_of, sessions=svc.sessions, patient=_patient(update))
        await query.edit_message_text(svc.texts.get(lang, "delete.cancelled"), parse_mode=ParseMode.HTML)
        return
    lang, count = await asyncio.to_thread(
        patients.delete_everything, sessions=svc.sessions, store=svc.store, patient=_patient(update)
    )
    text = svc.texts.get(lang, "delete.nothing") if count is None else svc.texts.get(lang, "delete.done", count=count)
    await query.edit_message_text(text, parse_mode=ParseMode.HTML)


async def on_question_button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """A question's answer button: store it, show the next question, send a follow-up if it raised the urgency."""
    svc = _services(context)
    query = update.callback_query
    case_id, question, option = int(context.match.group(1)), context.match.group(2), context.match.group(3)
    tapped = await asyncio.to_thread(
        questions.record, sessions=svc.sessions, texts=svc.texts, patient=_patient(update), case_id=case_id,
        question=question, option=option,
    )  # fmt: skip
    if tapped.answers is None:
        await query.answer(svc.texts.get(tapped.language, "other.stale_button"))
        return
    await query.answer()
    text, markup = questions.screen_after(
        svc.texts, tapped.language, case_id=case_id, question=question, answers=tapped.answers
    )
    await questions.show(query, text, markup)
    if tapped.followup_id is not None:
        await questions.send_followup(context.bot, sessions=svc.sessions, message_id=tapped.followup_id)


async def on_stale_button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Any other button data (old keyboards, forged data): say it no longer works."""
    svc = _services(context)
    lang = language_for(update.effective_user.language_code)
    await update.callback_query.answer(svc.texts.get(lang, "other.stale_button"))


# --- photos and files -----------------------------------------------------------------------


async def on_photo(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """A photo (Telegram-compressed): take its largest size; warning signs in its caption are answered too."""
    photo = update.effective_message.photo[-1]
    incoming = _incoming(update, photo.file_id, photo.file_unique_id, photo.file_size)
    case_id = await _receive_image(update, context, incoming)
    await _answer_warning_signs(update, context, with_photo=True, case_id=case_id)


async def on_document(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """A file: images start a case, anything else gets a short explanation."""
    document = update.effective_message.document
    if not intake.is_image_document(document.mime_type, document.file_name):
        svc = _services(context)
        lang = await asyncio.to_thread(patients.language_of, sessions=svc.sessions, patient=_patient(update))
        await _say(update, svc.texts.get(lang, "intake.unsupported_file"))
        await _answer_warning_signs(update, context, with_photo=False)
        return
    incoming = _incoming(update, document.file_id, document.file_unique_id, document.file_size)
    case_id = await _receive_image(update, context, incoming)
    await _answer_warning_signs(update, context, with_photo=True, case_id=case_id)


def _incoming(update: Update, file_id: str, file_unique_id: str, file_size: int | None) -> IncomingPhoto:
    message = update.effective_message
    replied = message.reply_to_message.message_id if message.reply_to_message else None
    return IncomingPhoto(
        file_id, file_unique_id, file_size, message.message_id, update.update_id, message.media_group_id, replied
    )


async def _receive_image(update: Update, context: ContextTypes.DEFAULT_TYPE, photo: IncomingPhoto) -> int | None:
    """Checks, download, header check, store + commit, enqueue, acknowledge (see bot.intake); the photo's case.

    `photo` is the update's own photo, or one held while the patient re-read the consent text (then `update`
    is their press of "I agree"). Returns the case the photo started (or repeated), None when none.
    """
    svc, patient = _services(context), _patient(update)
    decision = await asyncio.to_thread(
        intake.before_download, sessions=svc.sessions, settings=svc.settings, patient=patient, photo=photo,
        consent_version=svc.consent_version,
    )  # fmt: skip
    if decision.outcome is not Outcome.PROCEED:
        await _explain(update, svc, decision)
        return decision.case_id if decision.outcome is Outcome.DUPLICATE else None
    # Recorded as under way (bot.intake): settled once the patient is answered, here or by on_error. A
    # cancellation (the bot stopping mid-download) leaves the record for the next start to tell the patient.
    try:
        case_id, settled = await _download_and_register(update, context, photo, decision.language)
    except Exception:
        await _settle(svc, patient.chat_id, photo.message_id)
        raise
    if not settled:
        await _settle(svc, patient.chat_id, photo.message_id)
    return case_id


async def _settle(svc: Services, chat_id: int, message_id: int) -> None:
    """Forget the photo message's intake record; a database error here only leaves it for the next start."""
    try:
        await asyncio.to_thread(intake.settle, sessions=svc.sessions, chat_id=chat_id, message_id=message_id)
    except Exception as exc:  # noqa: BLE001 - never hide the handler's own outcome behind this
        log.warning("could not settle the intake record (%s); the next start will check it", type(exc).__name__)


async def _download_and_register(
    update: Update, context: ContextTypes.DEFAULT_TYPE, photo: IncomingPhoto, lang: str
) -> tuple[int | None, bool]:
    """Download, header check, store + commit, enqueue, acknowledge, and ask the questions of a new spot.

    Returns the photo's case (None when none) and whether its intake record was settled here (with the
    acknowledgement, in one transaction).
    """
    svc, patient, bot = _services(context), _patient(update), context.bot
    file_id, file_size = photo.file_id, photo.file_size
    try:
        data = None if (file_size or 0) > svc.settings.max_file_bytes else await _download_typing(bot, patient, file_id)
    except DownloadFailed:
        await _say(update, svc.texts.get(lang, "intake.download_failed"))
        return None, False
    if data is None or len(data) > svc.settings.max_file_bytes:
        await _say(update, _too_big(svc, lang, file_size or (len(data) if data else 0)))
        return None, False
    try:
        data, info = await asyncio.to_thread(intake.prepare_image, data, settings=svc.settings)
    except InvalidImageError as exc:
        await _say(update, svc.texts.get(lang, "intake.unusable", reason=svc.texts.retake_reason(lang, exc.reason)))
        return None, False
    decision = await asyncio.to_thread(
        intake.register, sessions=svc.sessions, store=svc.store, settings=svc.settings, patient=patient, data=data,
        info=info, update_id=photo.update_id, message_id=photo.message_id, file_unique_id=photo.file_unique_id,
        media_group_id=photo.media_group_id, reply_to_message_id=photo.reply_to_message_id,
    )  # fmt: skip
    if decision.outcome is not Outcome.CREATED:
        await _explain(update, svc, decision)
        return (decision.case_id if decision.outcome is Outcome.DUPLICATE else None), False
    # The case is committed: from here a failure must not tell the patient their photo was lost (see on_error).
    saved = context.chat_data.setdefault(SAVED_CASES, {})
    saved[update.update_id] = _SavedCase(decision.case_id)
    # Only the broker call stands between the commit and the acknowledgement; "queued" is recorded with it.
    queued = await asyncio.to_thread(intake.publish, case_id=decision.case_id, enqueue=svc.enqueue)
    key = "intake.ack" if queued else "intake.delayed"
    message_id = await _say(update, svc.texts.get(lang, key, case_id=decision.case_id))
    saved[update.update_id].acknowledged = True
    await asyncio.to_thread(
        intake.acknowledged, sessions=svc.sessions, case_id=decision.case_id, message_id=message_id, queued=queued,
        chat_id=patient.chat_id, photo_message_id=photo.message_id,
    )  # fmt: skip
    if decision.first_of_album:  # a new photo: is it an earlier spot? And what a doctor would ask (no waiting)
        await spots.offer(bot, sessions=svc.sessions, texts=svc.texts, patient=patient, case_id=decision.case_id,
                          lang=lang)  # fmt: skip
        await _say(update, *questions.first_screen(svc.texts, lang, case_id=decision.case_id))
    saved.pop(update.update_id, None)
    return decision.case_id, True


# chat_data key: {update id: _SavedCase} for photos committed by an update still being handled.
SAVED_CASES = "saved_cases"


@dataclass
class _SavedCase:
    """A committed case whose handler has not finished: what on_error may (and may not) tell the patient."""

    case_id: int
    acknowledged: bool = False


def _saved_case(update: Update, context: ContextTypes.DEFAULT_TYPE) -> _SavedCase | None:
    """The case this update committed before it failed, if any (and forget it)."""
    saved = context.chat_data.get(SAVED_CASES) if context.chat_data is not None else None
    return saved.pop(update.update_id, None) if saved else None


# A download that takes longer than this shows "typing..." (a quick one needs no sign: the acknowledgement follows).
TYPING_AFTER_S = 1.0


async def _download_typing(bot, patient: Patient, file_id: str) -> bytes | None:  # noqa: ANN001 - Bot or ExtBot
    """`_download`, showing "typing..." to the patient once it has taken TYPING_AFTER_S.

    The chat action used to precede every download: one Bot API call per photo that a quick download does not
    need, on the way to the acknowledgement (docs/load.md). A failed chat action never fails the photo.
    """
    download = asyncio.ensure_future(_download(bot, file_id))
    try:
        done, _ = await asyncio.wait({download}, timeout=TYPING_AFTER_S)
        if not done:
            try:
                await bot.send_chat_action(patient.chat_id, ChatAction.TYPING)
            except TelegramError as exc:
                log.info("could not show typing during a slow download (%s)", type(exc).__name__)
        return await download
    finally:
        if not download.done():  # the handler was cancelled (the bot stopping): do not leave the download behind
            download.cancel()


class DownloadFailed(Exception):
    """Telegram did not hand the file over (gone, invalid, or the network failed): the patient resends it."""


async def _download(bot, file_id: str) -> bytes | None:  # noqa: ANN001 - telegram.Bot or ExtBot
    """The file's bytes, or None when Telegram refuses because it is too big for bots (20 MB)."""
    try:
        file = await bot.get_file(file_id)
        return bytes(await file.download_as_bytearray())
    except BadRequest as exc:
        if "too big" in exc.message.lower():
            return None
        log.warning("Telegram refused a patient's file: %s", exc.message)
        raise DownloadFailed from exc
    except NetworkError as exc:  # includes TimedOut; BadRequest (a subclass) is handled above
        log.warning("could not download a patient's file: %s", type(exc).__name__)
        raise DownloadFailed from exc


def _megabytes(size: int) -> str:
    value = size / (1024 * 1024)
    return f"{value:.0f}" if value >= 10 else f"{value:.2g}"


def _too_big(svc: Services, lang: str, size: int) -> str:
    size_mb = _megabytes(size) if size else "20+"
    return svc.texts.get(lang, "intake.too_big", size_mb=size_mb, limit_mb=_megabytes(svc.settings.max_file_bytes))


async def _explain(update: Update, svc: Services, decision: Decision) -> None:
    """Tell the patient why a photo did not start a new case."""
    lang, texts = decision.language, svc.texts
    if decision.outcome is Outcome.SEEN:
        log.info("update %d was delivered again; already handled", update.update_id)
    elif decision.outcome is Outcome.NEEDS_CONSENT:
        intro, markup = _introduction(svc, lang)
        await _say(update, "\n\n".join([texts.get(lang, "consent.required"), intro]), markup)
    elif decision.outcome is Outcome.NEEDS_RECONSENT:
        lead = ("consent.changed", "consent.photo_kept") if decision.held else ("consent.changed", "consent.resend")
        await _say(update, *_introduction(svc, lang, *lead))
    elif decision.outcome is Outcome.DUPLICATE:
        key = "intake.duplicate_done" if decision.finished else "intake.duplicate_open"
        await _say(update, texts.get(lang, key, case_id=decision.case_id))
    elif decision.outcome is Outcome.RATE_LIMITED:
        await _say(
            update, texts.get(lang, "intake.rate_limited", minutes=max(1, math.ceil(decision.retry_after_s / 60)))
        )
    elif decision.outcome is Outcome.IN_FLIGHT:
        await _say(update, texts.get(lang, "intake.in_flight", count=svc.settings.max_in_flight))


# --- the patient's own words ----------------------------------------------------------------


def warning_text(
    texts: Texts, lang: str, signs: list[str], *, with_photo: bool, noted: questions.Noted | None = None
) -> str:
    """The answer to warning signs in a patient's words: see a doctor soon, the answers they were stored as (when
    a case was found), and the disclaimer."""
    named = ", ".join(texts.get(lang, f"sign.{sign}") for sign in signs)
    follow = "warning.with_photo" if with_photo else "warning.send_photo"
    stored = [questions.noted_text(texts, lang, noted)] if noted is not None else []
    return "\n\n".join(
        [texts.get(lang, "warning.signs", signs=named), *stored, texts.get(lang, follow),
         texts.get(lang, "result.disclaimer")]
    )  # fmt: skip


async def _answer_warning_signs(
    update: Update, context: ContextTypes.DEFAULT_TYPE, *, with_photo: bool, case_id: int | None = None
) -> bool:
    """Answer warning signs (bleeding, growing, ...) in the message's text or caption and store them as the
    answers of the photo's case (`case_id`) or, for a text, of the latest case; False when there are none."""
    message = update.effective_message
    words = message.text or message.caption
    signs = find_warning_signs(words)
    if not signs:
        return False
    svc, patient = _services(context), _patient(update)
    lang = await asyncio.to_thread(patients.language_of, sessions=svc.sessions, patient=patient)
    noted = None
    if case_id is not None or not with_photo:  # a photo that was not kept has no case to store them with
        noted = await asyncio.to_thread(
            questions.record_words, sessions=svc.sessions, texts=svc.texts, patient=patient, text=words,
            signs=signs, case_id=case_id,
        )  # fmt: skip
    await _say(update, warning_text(svc.texts, lang, signs, with_photo=with_photo, noted=noted))
    if noted is not None and noted.followup_id is not None:
        await questions.send_followup(context.bot, sessions=svc.sessions, message_id=noted.followup_id)
    return True


async def on_text(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Free text: warning signs get the see-a-doctor advice; anything else the short "send a photo" answer
    (or, after the consent text changed, that text again)."""
    if await _answer_warning_signs(update, context, with_photo=False):
        return
    svc = _services(context)
    lang, state = await asyncio.to_thread(
        patients.consent_of, sessions=svc.sessions, patient=_patient(update), version=svc.consent_version
    )
    if state is ConsentState.OUTDATED:
        await _say(update, *_introduction(svc, lang, "consent.changed"))
    else:
        await _say(update, svc.texts.get(lang, "other.text"))


# --- everything else ------------------------------------------------------------------------


def _reply_with(key: str) -> Callable:
    async def handler(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        svc = _services(context)
        lang = await asyncio.to_thread(patients.language_of, sessions=svc.sessions, patient=_patient(update))
        await _say(update, svc.texts.get(lang, key))

    handler.__doc__ = f"Answer with the {key} text."
    handler.__name__ = f"on_{key.replace('.', '_')}"
    return handler


async def on_group(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Group chats: decline politely, store nothing (health data belongs in a private chat)."""
    svc = _services(context)
    lang = language_for(update.effective_user.language_code if update.effective_user else None)
    await _say(update, svc.texts.get(lang, "other.group", bot_username=context.bot.username))


async def on_channel_post(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Channel posts come from no patient: ignore them."""


async def on_edited(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Edited messages never start or change a case; say so once per edit."""
    if update.effective_chat and update.effective_chat.type == "private":
        await _reply_with("other.edited")(update, context)


async def on_error(update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
    """The one error handler: log with the traceback, tell the patient in plain words, never a stack trace."""
    error = context.error
    saved = _saved_case(update, context) if isinstance(update, Update) else None
    if isinstance(error, Forbidden):
        log.info("the patient blocked the bot; nothing to answer")
        return
    log.error("update failed: %s", type(error).__name__, exc_info=error)
    if not isinstance(update, Update) or update.effective_chat is None or update.effective_chat.type != "private":
        return
    svc = _services(context)
    lang = language_for(update.effective_user.language_code if update.effective_user else None)
    message = update.effective_message
    unavailable = isinstance(error, OperationalError | InterfaceError | StorageError)
    values: dict[str, int] = {}
    if saved is not None:
        # The photo is committed as a case: the sweeper queues it if it is not. Never ask for it again.
        if saved.acknowledged:
            return  # the patient already has their case number
        key, values = "intake.delayed", {"case_id": saved.case_id}
    elif unavailable and message is not None and (message.photo or message.document):
        key = "intake.unavailable"  # nothing was committed: the photo really is not saved
    else:
        key = "error.unavailable" if unavailable else "error.generic"
    try:
        await _say(update, svc.texts.get(lang, key, **values))
    except TelegramError as exc:  # Telegram itself may be what failed; the log above has the cause
        log.warning("could not tell the patient about the error: %s", type(exc).__name__)


def register(application: Application) -> None:
    """Add every handler, in the order they are tried."""
    application.add_handler(MessageHandler(filters.UpdateType.EDITED, on_edited))
    application.add_handler(MessageHandler(filters.ChatType.GROUPS, on_group))
    application.add_handler(MessageHandler(filters.ChatType.CHANNEL, on_channel_post))
    for name, callback in (
        ("start", on_start),
        ("help", on_help),
        ("privacy", on_privacy),
        ("language", on_language),
        ("history", on_history),
        ("delete", on_delete),
    ):
        application.add_handler(CommandHandler(name, callback))
    application.add_handler(MessageHandler(filters.COMMAND, _reply_with("other.unknown_command")))
    application.add_handler(MessageHandler(filters.PHOTO, on_photo))
    application.add_handler(MessageHandler(filters.Document.ALL, on_document))
    application.add_handler(
        MessageHandler(filters.VIDEO | filters.ANIMATION | filters.VIDEO_NOTE, _reply_with("other.video"))
    )
    application.add_handler(MessageHandler(filters.VOICE | filters.AUDIO, _reply_with("other.voice")))
    application.add_handler(MessageHandler(filters.Sticker.ALL, _reply_with("other.sticker")))
    application.add_handler(MessageHandler(filters.TEXT, on_text))
    application.add_handler(MessageHandler(filters.ALL, _reply_with("other.text")))
    application.add_handler(CallbackQueryHandler(on_consent_button, pattern=f"^{CONSENT_YES}$"))
    application.add_handler(CallbackQueryHandler(on_language_button, pattern=LANGUAGE_PATTERN))
    application.add_handler(CallbackQueryHandler(on_case_button, pattern=CASE_PATTERN))
    application.add_handler(CallbackQueryHandler(on_delete_button, pattern=DELETE_PATTERN))
    application.add_handler(CallbackQueryHandler(on_question_button, pattern=questions.QUESTION_PATTERN))
    application.add_handler(CallbackQueryHandler(on_stale_button))
    application.add_error_handler(on_error)
