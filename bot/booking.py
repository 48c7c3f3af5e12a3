"""The booking question's buttons (`booking:<case>:<answer>`, sent by bot.followups): store the tap, answer it.

Registered before bot.handlers' catch-all button handler (bot.app.build_application).
"""

from __future__ import annotations

import asyncio

from sqlalchemy.orm import Session, sessionmaker
from telegram import Update
from telegram.constants import ParseMode
from telegram.ext import Application, CallbackQueryHandler, ContextTypes

from bot.followups import BOOKING_PATTERN
from bot.i18n import language_for
from bot.patients import Patient
from skintriage import booking


def _patient(update: Update) -> Patient:
    user, chat = update.effective_user, update.effective_chat
    return Patient(user.id, chat.id, user.language_code)


def answer(*, sessions: sessionmaker[Session], patient: Patient, case_id: int, choice: str) -> str | None:
    """Store the patient's answer on their own case; their language, or None when the case is not theirs."""
    with sessions.begin() as session:
        stored = booking.record_answer(
            session=session, telegram_user_id=patient.telegram_user_id, case_id=case_id, answer=choice
        )
        return stored[0] if stored else None


async def on_booking_button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """A booking answer: store it, take the buttons away, and say what to do next (with the disclaimer)."""
    svc = context.application.bot_data["services"]  # bot.handlers.Services
    query = update.callback_query
    case_id, choice = int(context.match.group(1)), context.match.group(2)
    lang = await asyncio.to_thread(
        answer, sessions=svc.sessions, patient=_patient(update), case_id=case_id, choice=choice
    )
    if lang is None:  # deleted with /delete, or not this patient's case
        fallback = language_for(update.effective_user.language_code)
        await query.answer(svc.texts.get(fallback, "other.stale_button"))
        return
    await query.answer()
    if query.message and query.message.reply_markup:
        await query.edit_message_reply_markup(None)
    text = "\n\n".join([svc.texts.get(lang, f"booking.{choice}"), svc.texts.get(lang, "result.disclaimer")])
    await query.get_bot().send_message(update.effective_chat.id, text, parse_mode=ParseMode.HTML)


def register(application: Application) -> None:
    """Add the booking buttons' handler; call before bot.handlers.register, whose last handler takes any button."""
    application.add_handler(CallbackQueryHandler(on_booking_button, pattern=BOOKING_PATTERN))
