"""The same spot over time in the chat: /history grouped by spot, and the "same spot as case #N" buttons.

A photo sent as a Telegram reply to an earlier answer is linked to that case at intake (bot.intake). A photo sent
on its own by a patient with earlier answers gets, after its acknowledgement, a question with one button per
earlier spot (its latest photo) and "a new spot": a tap links the photo and its album like a reply does
(cases.link_same_spot), so the answer compares the two photos; when the answer was sent already, the
comparison follows as a message of its own. Registered before bot.handlers' catch-all button handler.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime

from babel.dates import format_date
from sqlalchemy.orm import Session, sessionmaker
from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup, Update
from telegram.constants import ParseMode
from telegram.error import BadRequest
from telegram.ext import Application, CallbackQueryHandler, ContextTypes

from bot.answers import comparison
from bot.i18n import Html, Texts, language_for
from bot.patients import CaseSummary, Patient
from ml.triage.lesion_change import Direction
from skintriage import cases
from skintriage.models import CaseStatus

SPOT_PATTERN = r"^spot:(\d{1,12}):(\d{1,12}|new)$"
MAX_SPOTS = 3  # buttons offered: the latest earlier spots


def _patient(update: Update) -> Patient:
    user, chat = update.effective_user, update.effective_chat
    return Patient(user.id, chat.id, user.language_code)


# --- /history ---------------------------------------------------------------------------------


def _status(texts: Texts, lang: str, row: CaseSummary) -> Html:
    if row.status == CaseStatus.DONE and row.tier:
        return texts.get(lang, f"tier.{row.tier}")
    if row.status == CaseStatus.REJECTED:
        return texts.get(lang, "tier.RETAKE")
    if row.status == CaseStatus.FAILED:
        return texts.get(lang, "status.failed")
    return texts.get(lang, "status.open")


def _change(texts: Texts, lang: str, row: CaseSummary) -> Html:
    """The brief change since the spot's earlier photo: asymmetry, border and colours (never size)."""
    if row.change is None:
        return texts.get(lang, "history.change", case_id=row.previous_case_id,
                         change=texts.get(lang, "history.change_unmeasured"))  # fmt: skip
    word = {d: texts.get(lang, f"compare.{d}") for d in Direction}
    measured = texts.get(
        lang, "history.change_measured", asymmetry=word[row.change.asymmetry_major_axis],
        border=word[row.change.border], before=row.change.colours_before, after=row.change.colours_after,
    )  # fmt: skip
    return texts.get(lang, "history.change", case_id=row.previous_case_id, change=measured)


def history_screen(texts: Texts, lang: str, rows: list[CaseSummary]) -> tuple[str, list[int]]:
    """/history: the latest cases, newest first, photos of one spot together (with the change between them).

    Returns the text and the case ids in the order shown (one button each).
    """
    spots: dict[int, list[CaseSummary]] = {}
    for row in rows:  # newest first, so spots are ordered by their newest photo
        spots.setdefault(row.spot if row.spot is not None else row.case_id, []).append(row)
    lines, order = [texts.get(lang, "history.title")], []
    for photos in spots.values():
        if len(photos) > 1:
            lines.append(texts.get(lang, "history.spot", count=len(photos)))
        for row in photos:
            date = format_date(row.received_at, format="medium", locale=lang)
            status = _status(texts, lang, row)
            lines.append(texts.get(lang, "history.line", case_id=row.case_id, date=date, status=status))
            if row.previous_case_id is not None:
                lines.append(_change(texts, lang, row))
            order.append(row.case_id)
    return "\n".join(lines), order


# --- "same spot as case #N" -------------------------------------------------------------------


@dataclass(frozen=True)
class EarlierSpot:
    """An earlier spot's latest photo, offered as a button."""

    case_id: int
    received_at: datetime


def earlier_spots(*, sessions: sessionmaker[Session], patient: Patient, case_id: int) -> list[EarlierSpot]:
    """The spots to offer for a new photo: none when it is linked already (a reply) or the patient has no others."""
    with sessions.begin() as session:
        user = cases.get_user(session=session, telegram_user_id=patient.telegram_user_id)
        case = cases.get_case(session=session, case_id=case_id)
        if user is None or case is None or case.user_id != user.id or case.previous_case_id is not None:
            return []
        latest = cases.latest_of_spots(session=session, user=user, case=case, limit=MAX_SPOTS)
        return [EarlierSpot(c.id, c.received_at) for c in latest]


def offer_screen(
    texts: Texts, lang: str, *, case_id: int, spots: list[EarlierSpot]
) -> tuple[str, InlineKeyboardMarkup]:
    """The question whether a new photo shows an earlier spot: one button per spot, and "a new spot"."""
    rows = [
        [
            InlineKeyboardButton(
                texts.get(
                    lang,
                    "button.same_spot",
                    case_id=spot.case_id,
                    date=format_date(spot.received_at, format="medium", locale=lang),
                ),
                callback_data=f"spot:{case_id}:{spot.case_id}",
            )  # fmt: skip
        ]
        for spot in spots
    ]
    rows.append([InlineKeyboardButton(texts.get(lang, "button.new_spot"), callback_data=f"spot:{case_id}:new")])
    return texts.get(lang, "spot.ask", case_id=case_id), InlineKeyboardMarkup(rows)


async def offer(bot: Bot, *, sessions: sessionmaker[Session], texts: Texts, patient: Patient, case_id: int,
                lang: str) -> None:  # fmt: skip
    """After a new photo's acknowledgement: ask whether it shows an earlier spot (nothing when there is none)."""
    spots = await asyncio.to_thread(earlier_spots, sessions=sessions, patient=patient, case_id=case_id)
    if spots:
        text, markup = offer_screen(texts, lang, case_id=case_id, spots=spots)
        await bot.send_message(patient.chat_id, text, parse_mode=ParseMode.HTML, reply_markup=markup)


@dataclass(frozen=True)
class Linked:
    """What a tap did: the patient's language, whether the photos are now linked, and the comparison to send now
    (the answer went out before the tap), if any."""

    language: str
    linked: bool
    comparison: str | None = None


def link(
    *, sessions: sessionmaker[Session], texts: Texts, patient: Patient, case_id: int, previous_id: int
) -> Linked | None:
    """Link the patient's photo to an earlier spot; None when the case is not theirs."""
    with sessions.begin() as session:
        user = cases.get_user(session=session, telegram_user_id=patient.telegram_user_id)
        if user is None:
            return None
        lang = user.language
        case = cases.link_same_spot(session=session, user=user, case_id=case_id, previous_id=previous_id)
        if case is None:
            own = cases.get_case(session=session, case_id=case_id)
            return Linked(lang, False) if own is not None and own.user_id == user.id else None
        session.flush()
        if case.delivered_at is None or case.status != CaseStatus.DONE:
            return Linked(lang, True)  # the answer, still to come, compares the two
        section = comparison(texts, lang, case, case.previous_case)
        return Linked(lang, True, "\n\n".join([*section, texts.get(lang, "result.disclaimer")]))


async def on_spot_button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """A "same spot as case #N" or "a new spot" tap: link the photos (or not) and say so in the question's place."""
    svc = context.application.bot_data["services"]  # bot.handlers.Services
    query = update.callback_query
    case_id, choice = int(context.match.group(1)), context.match.group(2)
    patient = _patient(update)
    if choice == "new":
        lang = await asyncio.to_thread(_language_if_own, sessions=svc.sessions, patient=patient, case_id=case_id)
        found = None if lang is None else Linked(lang, False)
        key, values = "spot.new", {"case_id": case_id}
    else:
        found = await asyncio.to_thread(
            link, sessions=svc.sessions, texts=svc.texts, patient=patient, case_id=case_id, previous_id=int(choice)
        )
        key, values = ("spot.linked" if found and found.linked else "spot.not_linked"), {
            "case_id": case_id, "previous_id": int(choice),
        }  # fmt: skip
    if found is None:
        await query.answer(svc.texts.get(language_for(update.effective_user.language_code), "other.stale_button"))
        return
    await query.answer()
    try:
        await query.edit_message_text(svc.texts.get(found.language, key, **values), parse_mode=ParseMode.HTML)
    except BadRequest as exc:  # a second tap on the same button: already shown
        if "not modified" not in exc.message.lower():
            raise
    if found.comparison:
        await query.get_bot().send_message(update.effective_chat.id, found.comparison, parse_mode=ParseMode.HTML)


def _language_if_own(*, sessions: sessionmaker[Session], patient: Patient, case_id: int) -> str | None:
    with sessions.begin() as session:
        user = cases.get_user(session=session, telegram_user_id=patient.telegram_user_id)
        case = cases.get_case(session=session, case_id=case_id)
        return user.language if user is not None and case is not None and case.user_id == user.id else None


def register(application: Application) -> None:
    """Add the same-spot buttons' handler; call before bot.handlers.register, whose last handler takes any button."""
    application.add_handler(CallbackQueryHandler(on_spot_button, pattern=SPOT_PATTERN))
