"""Re-check reminders in the chat: the offer's buttons and `/reminders` (list, stop), over skintriage.reminders.

The offer and the reminders themselves are outbox messages (bot.followups composes them). Registered before
bot.handlers' catch-all command and button handlers (bot.app.build_application).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime

from babel.dates import format_date
from sqlalchemy.orm import Session, sessionmaker
from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Update
from telegram.constants import ParseMode
from telegram.ext import Application, CallbackQueryHandler, CommandHandler, ContextTypes

from bot.followups import REMINDER_PATTERN, REMINDER_PREFIX, reminder_button
from bot.i18n import Texts, language_for
from bot.patients import Patient
from skintriage import cases, reminders


def _patient(update: Update) -> Patient:
    user, chat = update.effective_user, update.effective_chat
    return Patient(user.id, chat.id, user.language_code)


@dataclass(frozen=True)
class Listed:
    """One running reminder as /reminders shows it."""

    case_id: int
    photo_at: datetime
    every_months: int
    next_at: datetime


def listing(*, sessions: sessionmaker[Session], patient: Patient) -> tuple[str, list[Listed]]:
    """The patient's language and running reminders, soonest first."""
    with sessions.begin() as session:
        user = cases.get_user(session=session, telegram_user_id=patient.telegram_user_id)
        if user is None:
            return language_for(patient.language_code), []
        rows = reminders.active(session=session, user=user)
        return user.language, [Listed(r.case_id, r.case.received_at, r.every_months, r.next_at) for r in rows]


def tap(*, sessions: sessionmaker[Session], patient: Patient, action: str, case_id: int, months: int) -> tuple:
    """Store a tap on the patient's own case: (language, key of the answer text, values) or None when not theirs."""
    with sessions.begin() as session:
        who = patient.telegram_user_id
        if action == "yes":
            found = reminders.accept(session=session, telegram_user_id=who, case_id=case_id, every_months=months)
            if found is None:
                return None
            lang, reminder = found
            date = format_date(reminder.next_at, format="medium", locale=lang)
            return lang, "reminder.set", {"case_id": case_id, "months": months, "date": date}
        if action == "no":
            lang = reminders.language_of_case(session=session, telegram_user_id=who, case_id=case_id)
            return None if lang is None else (lang, "reminder.declined", {})
        stopped = reminders.stop(session=session, telegram_user_id=who, case_id=case_id)
        if stopped is None:
            return None
        lang, was_running = stopped
        return lang, "reminders.stopped" if was_running else "reminders.already_stopped", {"case_id": case_id}


def list_text(texts: Texts, lang: str, rows: list[Listed]) -> tuple[str, InlineKeyboardMarkup | None]:
    """/reminders: one line per running reminder and a stop button for each (or that there are none)."""
    if not rows:
        return texts.get(lang, "reminders.empty"), None
    lines = [texts.get(lang, "reminders.title")]
    for row in rows:
        lines.append(
            texts.get(
                lang,
                "reminders.line",
                case_id=row.case_id,
                months=row.every_months,
                date=format_date(row.photo_at, format="medium", locale=lang),
                next=format_date(row.next_at, format="medium", locale=lang),
            )  # fmt: skip
        )
    buttons = [
        [reminder_button(texts.get(lang, "button.reminders_stop", case_id=row.case_id), "stop", row.case_id)]
        for row in rows
    ]
    return "\n".join(lines), InlineKeyboardMarkup(buttons)


async def on_reminders(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/reminders: the patient's running re-check reminders, each with a button to stop it."""
    svc = context.application.bot_data["services"]  # bot.handlers.Services
    lang, rows = await asyncio.to_thread(listing, sessions=svc.sessions, patient=_patient(update))
    text, markup = list_text(svc.texts, lang, rows)
    await update.get_bot().send_message(update.effective_chat.id, text, parse_mode=ParseMode.HTML, reply_markup=markup)


async def on_reminder_button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """The offer's Yes/No and the stop buttons: store the choice, take the tapped button away, confirm."""
    svc = context.application.bot_data["services"]
    query = update.callback_query
    action, case_id = context.match.group(1), int(context.match.group(2))
    months = svc.settings.recheck_reminder_months or reminders.DEFAULT_MONTHS
    found = await asyncio.to_thread(
        tap, sessions=svc.sessions, patient=_patient(update), action=action, case_id=case_id, months=months
    )
    if found is None:  # deleted with /delete, or not this patient's case
        await query.answer(svc.texts.get(language_for(update.effective_user.language_code), "other.stale_button"))
        return
    lang, key, values = found
    await query.answer()
    if query.message and query.message.reply_markup:
        await query.edit_message_reply_markup(_without(query.message.reply_markup, query.data))
    text = svc.texts.get(lang, key, **values)
    await query.get_bot().send_message(update.effective_chat.id, text, parse_mode=ParseMode.HTML)


def _without(markup: InlineKeyboardMarkup, data: str | None) -> InlineKeyboardMarkup | None:
    """The keyboard without the tapped button's row (an offer loses both answers; /reminders the stopped one)."""
    if data and not data.startswith(f"{REMINDER_PREFIX}:stop:"):
        return None
    rows = [
        [InlineKeyboardButton(b.text, callback_data=b.callback_data) for b in row if b.callback_data != data]
        for row in markup.inline_keyboard
    ]
    rows = [row for row in rows if row]
    return InlineKeyboardMarkup(rows) if rows else None


def register(application: Application) -> None:
    """Add /reminders and the reminder buttons; call before bot.handlers.register (its catch-alls come last)."""
    application.add_handler(CommandHandler("reminders", on_reminders))
    application.add_handler(CallbackQueryHandler(on_reminder_button, pattern=REMINDER_PATTERN))
