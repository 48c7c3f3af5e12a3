"""The patient's account as the bot sees it: language, consent, history, deletion.

Plain blocking functions over the case service; handlers run them with `asyncio.to_thread` so a slow
database never stalls other patients' updates. Each call is one unit of work (`sessions.begin()`): it
commits when it returns and rolls back when it raises.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session, sessionmaker

from bot.consent import ConsentState
from bot.i18n import language_for
from ml.triage.lesion_change import LesionChange, compare
from skintriage import cases
from skintriage.exceptions import CaseNotFound
from skintriage.models import Case, User
from skintriage.storage import ImageStore


@dataclass(frozen=True)
class Patient:
    """Who sent an update: Telegram user, private chat and the app's language code."""

    telegram_user_id: int
    chat_id: int
    language_code: str | None = None


@dataclass(frozen=True)
class CaseSummary:
    """One line of /history: the case, its spot (the id of the spot's first photo) and its earlier photo's id."""

    case_id: int
    received_at: datetime
    status: str
    tier: str | None
    spot: int | None = None
    previous_case_id: int | None = None
    change: LesionChange | None = None  # since the earlier photo of the spot; None: not measured or no link


def ensure_user(session: Session, patient: Patient) -> User:
    """The patient's row, created (without consent) on first contact in their Telegram language."""
    return cases.get_or_create_user(
        session=session,
        telegram_user_id=patient.telegram_user_id,
        chat_id=patient.chat_id,
        language=language_for(patient.language_code),
    )


def language_of(*, sessions: sessionmaker[Session], patient: Patient) -> str:
    """The patient's chosen language, or their Telegram language when they are not known yet."""
    with sessions.begin() as session:
        user = cases.get_user(session=session, telegram_user_id=patient.telegram_user_id)
        return user.language if user else language_for(patient.language_code)


def consent_state(user: User | None, version: str) -> ConsentState:
    """Whether the patient agreed to the current consent text, to an older one, or never."""
    if user is None or user.consent_at is None:
        return ConsentState.NONE
    return ConsentState.CURRENT if user.consent_version == version else ConsentState.OUTDATED


def start(*, sessions: sessionmaker[Session], patient: Patient, version: str) -> tuple[str, ConsentState]:
    """Register the patient on /start; returns (language, where they stand with the consent text)."""
    with sessions.begin() as session:
        user = ensure_user(session, patient)
        return user.language, consent_state(user, version)


def consent_of(*, sessions: sessionmaker[Session], patient: Patient, version: str) -> tuple[str, ConsentState]:
    """The patient's language and where they stand with the consent text (nothing is created)."""
    with sessions.begin() as session:
        user = cases.get_user(session=session, telegram_user_id=patient.telegram_user_id)
        lang = user.language if user else language_for(patient.language_code)
        return lang, consent_state(user, version)


@dataclass(frozen=True)
class Consent:
    """What pressing "I agree" did."""

    language: str
    already: bool  # they had agreed to this very text before
    pending_photos: list[dict]  # photos held while their consent was outdated, to analyse now


def give_consent(*, sessions: sessionmaker[Session], patient: Patient, version: str) -> Consent:
    """Record consent to this version of the text (once) and hand back the photos held until then."""
    with sessions.begin() as session:
        user = ensure_user(session, patient)
        if consent_state(user, version) is ConsentState.CURRENT:
            return Consent(user.language, True, [])
        pending = cases.record_consent(session=session, user=user, version=version)
        return Consent(user.language, False, pending)


def choose_language(*, sessions: sessionmaker[Session], patient: Patient, language: str, version: str) -> ConsentState:
    """Store the patient's language; returns where they stand with the consent text."""
    with sessions.begin() as session:
        user = ensure_user(session, patient)
        cases.set_language(session=session, user=user, language=language)
        return consent_state(user, version)


def recent_cases(
    *, sessions: sessionmaker[Session], patient: Patient, limit: int = 10
) -> tuple[str, list[CaseSummary]]:
    """The patient's language and latest cases, newest first."""
    with sessions.begin() as session:
        user = cases.get_user(session=session, telegram_user_id=patient.telegram_user_id)
        if user is None:
            return language_for(patient.language_code), []
        rows = cases.history(session=session, user=user, limit=limit)
        roots = cases.spot_roots(session=session, user=user)
        summaries = []
        for c in rows:
            previous = c.previous_case if c.previous_case_id is not None else None
            change = compare(previous.measurements, c.measurements) if previous is not None else None
            summaries.append(
                # The tier the patient was told (their answers may have raised the photo's), else the photo's.
                CaseSummary(
                    c.id,
                    c.received_at,
                    c.status,
                    c.told_tier or c.tier,
                    roots.get(c.id, c.id),
                    c.previous_case_id,
                    change,
                )
            )
        return user.language, summaries


def own_case(*, sessions: sessionmaker[Session], patient: Patient, case_id: int) -> tuple[str, Case | None, list[int]]:
    """The patient's language, the case whose answer to show again and its album's case ids ([] when alone).

    The case is None when it is not theirs or does not exist. A photo of a finished album shows the album's one
    answer (its most urgent case), as it was sent; of an unfinished album, the photo still being analysed.
    """
    from bot.answers import urgency_rank

    with sessions.begin() as session:
        user = cases.get_user(session=session, telegram_user_id=patient.telegram_user_id)
        if user is None:
            return language_for(patient.language_code), None, []
        try:
            case = cases.get_user_case(session=session, user=user, case_id=case_id)
        except CaseNotFound:
            return user.language, None, []
        album = cases.album_of(session=session, case=case)
        if len(album) > 1:
            still_open = [c for c in album if c.status not in cases.FINAL_STATUSES]
            # The album's one answer waits for its last photo: say which one is still being analysed.
            case = still_open[0] if still_open else min(album, key=lambda c: (urgency_rank(c), c.id))
        session.expunge(case)
        return user.language, case, [c.id for c in album] if len(album) > 1 else []


def delete_everything(
    *, sessions: sessionmaker[Session], store: ImageStore, patient: Patient
) -> tuple[str, int | None]:
    """Delete the patient's images, cases and profile; returns (language, cases deleted or None if unknown)."""
    with sessions.begin() as session:
        user = cases.get_user(session=session, telegram_user_id=patient.telegram_user_id)
        if user is None:
            return language_for(patient.language_code), None
        language = user.language
        return language, cases.delete_user_data(session=session, store=store, user=user)
