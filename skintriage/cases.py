"""The case service: every change to users and cases goes through these functions.

State changes that two processes could race on (claiming a case for processing, claiming its
reply for delivery) are single conditional UPDATEs, so a redelivered or duplicated job can never
produce a second answer.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import and_, delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ml.triage.red_flags import check_answer
from skintriage.exceptions import CaseNotFound, RateLimited, TooManyInFlight
from skintriage.models import (
    AuditEvent,
    Case,
    CaseStatus,
    OutboxMessage,
    PendingIntake,
    ProcessedUpdate,
    RecheckReminder,
    User,
    utcnow,
)
from skintriage.storage import ImageStore, StoredImage
from skintriage.vocabulary import Tier

log = logging.getLogger(__name__)

FINAL_STATUSES = (CaseStatus.DONE, CaseStatus.REJECTED, CaseStatus.FAILED)
OPEN_STATUSES = (CaseStatus.RECEIVED, CaseStatus.QUEUED, CaseStatus.PROCESSING)


def worker_identity() -> str:
    """host:pid of this process, recorded on the cases it processes."""
    return f"{socket.gethostname()}:{os.getpid()}"


def database_now(session: Session) -> datetime:
    """Now by the database's clock (PostgreSQL's clock_timestamp()); this process's clock on SQLite.

    Claims, leases, flood-control waits and "stuck" ages are written by one machine and compared by another;
    with each machine's own clock, one running minutes ahead would take over live claims and leases. The
    embedded SQLite setup runs on one machine, so its clock is the only one.
    """
    if session.get_bind().dialect.name != "postgresql":
        return utcnow()
    now = session.scalar(select(func.clock_timestamp()))
    return now.astimezone(UTC) if now.tzinfo else now.replace(tzinfo=UTC)


def owner_is_dead(owner: str | None) -> bool:
    """True when the owner ran on this host and its process no longer exists."""
    if not owner or ":" not in owner:
        return False
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


# --- patients -------------------------------------------------------------------------------


def get_user(*, session: Session, telegram_user_id: int) -> User | None:
    """The patient with this Telegram id, if known."""
    return session.scalar(select(User).where(User.telegram_user_id == telegram_user_id))


def get_or_create_user(*, session: Session, telegram_user_id: int, chat_id: int, language: str) -> User:
    """Find the patient or create them (without consent) and flush."""
    user = get_user(session=session, telegram_user_id=telegram_user_id)
    if user is not None:
        if user.chat_id != chat_id:
            user.chat_id = chat_id
        return user
    user = User(telegram_user_id=telegram_user_id, chat_id=chat_id, language=language)
    try:
        with session.begin_nested():
            session.add(user)
    except IntegrityError:
        # Another update for the same patient created it concurrently.
        user = get_user(session=session, telegram_user_id=telegram_user_id)
        if user is None:
            raise
    return user


MAX_PENDING_PHOTOS = 10


def record_consent(*, session: Session, user: User, version: str) -> list[dict[str, Any]]:
    """Store the time and the version of the consent text the patient agreed to; returns (and forgets) the photos
    held while their consent was outdated, oldest first."""
    previous = user.consent_version if user.consent_at is not None else None
    user.consent_at = utcnow()
    user.consent_version = version
    pending, user.pending_photos = list(user.pending_photos or []), None
    detail = {"user_id": user.id, "version": version, "previous_version": previous, "pending_photos": len(pending)}
    audit(session=session, actor="patient", action="consent.given", detail=detail)
    return pending


def hold_photo(*, session: Session, user: User, photo: dict[str, Any]) -> bool:
    """Keep a photo's Telegram reference until the patient agrees to the current consent text; False when
    MAX_PENDING_PHOTOS are held already (the photo is not kept)."""
    pending = list(user.pending_photos or [])
    if any(p.get("message_id") == photo.get("message_id") for p in pending):
        return True  # a repeated delivery of a message already held
    if len(pending) >= MAX_PENDING_PHOTOS:
        return False
    user.pending_photos = [*pending, photo]  # a new list: SQLAlchemy does not see changes inside a JSON value
    return True


def set_language(*, session: Session, user: User, language: str) -> None:
    """Change the patient's language."""
    user.language = language


def mark_update_processed(*, session: Session, chat_id: int, message_id: int, update_id: int | None = None) -> bool:
    """Remember a Telegram message by (chat id, message id); False when it was handled before (a repeated delivery).

    Not by update id: Telegram may start update ids again, which would make a new photo look like an old one.
    """
    try:
        with session.begin_nested():
            session.add(ProcessedUpdate(chat_id=chat_id, message_id=message_id, update_id=update_id))
    except IntegrityError:
        return False
    return True


# Telegram keeps an unconfirmed update for 24 hours; a week of memory is ample for repeated deliveries.
PROCESSED_UPDATES_KEEP = timedelta(days=7)


def prune_processed_updates(
    *, session: Session, keep: timedelta = PROCESSED_UPDATES_KEEP, now: datetime | None = None
) -> int:
    """Forget handled messages older than `keep` (Telegram redelivers nothing that old); returns rows deleted."""
    cutoff = (now or utcnow()) - keep
    result = session.execute(
        delete(ProcessedUpdate).where(ProcessedUpdate.at < cutoff).execution_options(synchronize_session=False)
    )
    return result.rowcount or 0


# --- intake ---------------------------------------------------------------------------------


def check_intake_limits(
    *, session: Session, user: User, rate_limit: int, window_s: int, max_in_flight: int, now: datetime | None = None
) -> None:
    """Raise RateLimited or TooManyInFlight when the patient must wait before sending another photo."""
    now = now or utcnow()
    since = now - timedelta(seconds=window_s)
    recent = session.scalars(
        select(Case.received_at).where(Case.user_id == user.id, Case.received_at >= since).order_by(Case.received_at)
    ).all()
    if len(recent) >= rate_limit:
        oldest = recent[len(recent) - rate_limit]
        retry = int((oldest + timedelta(seconds=window_s) - now).total_seconds()) + 1
        raise RateLimited(max(retry, 1))
    in_flight = session.scalar(
        select(func.count()).select_from(Case).where(Case.user_id == user.id, Case.status.in_(OPEN_STATUSES))
    )
    if (in_flight or 0) >= max_in_flight:
        raise TooManyInFlight(f"{in_flight} cases are still being analysed")


def find_recent_duplicate(
    *, session: Session, user: User, sha256: str, window_s: int, now: datetime | None = None
) -> Case | None:
    """The patient's case for the same photo within the window, to reuse instead of a new case."""
    now = now or utcnow()
    return session.scalar(
        select(Case)
        .where(
            Case.user_id == user.id,
            Case.image_sha256 == sha256,
            Case.received_at >= now - timedelta(seconds=window_s),
        )
        .order_by(Case.id.desc())
        .limit(1)
    )


def update_seen(*, session: Session, chat_id: int, message_id: int) -> bool:
    """Whether a Telegram message was already handled (a cheap check before downloading a photo)."""
    same = (ProcessedUpdate.chat_id == chat_id, ProcessedUpdate.message_id == message_id)
    return session.scalar(select(ProcessedUpdate.id).where(*same)) is not None


def find_recent_same_file(
    *, session: Session, user: User, file_unique_id: str, window_s: int, now: datetime | None = None
) -> Case | None:
    """The patient's case for the same Telegram file within the window (found before downloading it)."""
    now = now or utcnow()
    return session.scalar(
        select(Case)
        .where(
            Case.user_id == user.id,
            Case.telegram_file_unique_id == file_unique_id,
            Case.received_at >= now - timedelta(seconds=window_s),
        )
        .order_by(Case.id.desc())
        .limit(1)
    )


def create_case(
    *,
    session: Session,
    user: User,
    image: StoredImage,
    width: int | None = None,
    height: int | None = None,
    update_id: int | None = None,
    message_id: int | None = None,
    file_unique_id: str | None = None,
    media_group_id: str | None = None,
    previous_case_id: int | None = None,
) -> Case:
    """Create a case for a stored photo (status received) and flush to get its number.

    `previous_case_id`: the patient's earlier case of the same spot (find_replied_case), or None.
    """
    case = Case(
        user_id=user.id,
        status=CaseStatus.RECEIVED,
        received_at=database_now(session),  # the sweeper compares it with the database's clock
        language=user.language,
        image_key=image.key,
        image_sha256=image.sha256,
        image_bytes=image.size,
        image_width=width,
        image_height=height,
        source_update_id=update_id,
        source_message_id=message_id,
        telegram_file_unique_id=file_unique_id,
        media_group_id=media_group_id,
        previous_case_id=previous_case_id,
        quality_flags=[],
        model_versions={},
        timings_ms={},
    )
    session.add(case)
    session.flush()
    audit(session=session, actor="patient", action="case.received", case_id=case.id)
    return case


def find_replied_case(*, session: Session, user: User, message_id: int) -> Case | None:
    """The patient's own case whose acknowledgement, answer or photo message is `message_id` (a Telegram reply).

    Photos of an album share one answer message: the oldest of them is taken. Anyone else's case is never found.
    """
    return session.scalar(
        select(Case)
        .where(
            Case.user_id == user.id,
            or_(
                Case.ack_message_id == message_id,
                Case.reply_message_id == message_id,
                Case.source_message_id == message_id,
            ),
        )
        .order_by(Case.id)
        .limit(1)
    )


def get_case(*, session: Session, case_id: int) -> Case | None:
    """A case by id (worker and console use; never from patient input)."""
    return session.get(Case, case_id)


def case_exists(*, session: Session, case_id: int) -> bool:
    """Whether the case row is there (the patient's /delete removes it), asked of the database, not the session."""
    return session.scalar(select(Case.id).where(Case.id == case_id)) is not None


def get_user_case(*, session: Session, user: User, case_id: int) -> Case:
    """The patient's own case; CaseNotFound for anyone else's, so ids cannot be probed."""
    case = session.scalar(select(Case).where(Case.id == case_id, Case.user_id == user.id))
    if case is None:
        raise CaseNotFound(f"no case {case_id} for this patient")
    return case


def history(*, session: Session, user: User, limit: int = 10) -> list[Case]:
    """The patient's latest cases, newest first."""
    return list(
        session.scalars(select(Case).where(Case.user_id == user.id).order_by(Case.id.desc()).limit(limit)).all()
    )


def latest_case(*, session: Session, user: User, since: datetime) -> Case | None:
    """The patient's latest case received after `since` (what their free text most likely speaks about), or None."""
    return session.scalar(
        select(Case).where(Case.user_id == user.id, Case.received_at >= since).order_by(Case.id.desc()).limit(1)
    )


def album_of(*, session: Session, case: Case) -> list[Case]:
    """The patient's cases sent together with this one (one Telegram album), oldest first; [case] when alone."""
    if not case.media_group_id:
        return [case]
    return list(
        session.scalars(
            select(Case)
            .where(Case.user_id == case.user_id, Case.media_group_id == case.media_group_id)
            .order_by(Case.id)
        ).all()
    )


def previous_case(*, session: Session, case: Case) -> Case | None:
    """The patient's latest case before this one, not counting photos of the same album."""
    query = select(Case).where(Case.user_id == case.user_id, Case.id < case.id)
    if case.media_group_id:
        query = query.where(or_(Case.media_group_id.is_(None), Case.media_group_id != case.media_group_id))
    return session.scalar(query.order_by(Case.id.desc()).limit(1))


def spot_roots(*, session: Session, user: User) -> dict[int, int]:
    """Case id -> the id of the first photo of its spot, for all the patient's cases.

    Cases linked by previous_case_id (a reply to an earlier answer, or the "same spot" button) are one spot;
    a case without a link is a spot of its own (photos of one album are told apart by media_group_id).
    """
    links = dict(session.execute(select(Case.id, Case.previous_case_id).where(Case.user_id == user.id)).all())
    roots: dict[int, int] = {}
    for case_id in links:
        chain, current = [case_id], links[case_id]
        while current is not None and current in links and current not in chain and current not in roots:
            chain.append(current)
            current = links[current]
        root = roots.get(current, chain[-1]) if current is not None else chain[-1]
        roots.update(dict.fromkeys(chain, root))
    return roots


def latest_of_spots(*, session: Session, user: User, case: Case, limit: int = 3) -> list[Case]:
    """The latest finished photo of each of the patient's earlier spots, newest first (the case's album left out)."""
    roots = spot_roots(session=session, user=user)
    album = {c.id for c in album_of(session=session, case=case)}
    latest: dict[int, Case] = {}
    earlier = session.scalars(
        select(Case)
        .where(Case.user_id == user.id, Case.id < case.id, Case.status.in_(FINAL_STATUSES))
        .order_by(Case.id.desc())
    )
    for other in earlier:
        if other.id not in album and roots.get(other.id, other.id) not in latest:
            latest[roots.get(other.id, other.id)] = other
            if len(latest) >= limit:
                break
    return list(latest.values())


def link_same_spot(*, session: Session, user: User, case_id: int, previous_id: int) -> Case | None:
    """The patient says their photo (and its album) shows the spot of `previous_id`: link them as a reply does.

    Returns the case, or None when either is not the patient's, the earlier one is not earlier, or the photo
    is already linked (a reply, or an earlier tap). Only photos without a link are linked.
    """
    case = session.scalar(select(Case).where(Case.id == case_id, Case.user_id == user.id))
    previous = session.scalar(select(Case).where(Case.id == previous_id, Case.user_id == user.id))
    if case is None or previous is None or previous.id >= case.id:
        return None
    album = album_of(session=session, case=case)
    if previous.id in {c.id for c in album} or any(c.previous_case_id is not None for c in album):
        return None
    for photo in album:
        photo.previous_case_id = previous.id
    audit(session=session, actor="patient", action="case.same_spot", case_id=case.id, detail={"previous": previous.id})
    return case


# --- the patient's answers -------------------------------------------------------------------


def record_answer(*, session: Session, case: Case, question: str, option: str) -> list[Case]:
    """Store the patient's answer to one question (ml.triage.red_flags.QUESTIONS) on every photo of the case's album.

    Returns the album. Raises ValueError for a question or option the bot never offers (a forged button).
    A later tap on the same question replaces the earlier one.
    """
    check_answer(question, option)
    album = album_of(session=session, case=case)
    for photo in album:
        # A new dict, so SQLAlchemy sees the JSON change.
        photo.patient_answers = {**(photo.patient_answers or {}), question: option}
    audit(session=session, actor="patient", action="case.answered", case_id=case.id, detail={"question": question})
    return album


def is_first_of_album(*, session: Session, case_id: int) -> bool:
    """Whether no earlier photo of the case's album exists (the questions are asked once per spot)."""
    case = session.get(Case, case_id)
    return case is not None and album_of(session=session, case=case)[0].id == case.id


def raise_told_tier(*, session: Session, case_ids: list[int], was: str | None, tier: str) -> bool:
    """Record that the patient is now told `tier` for these photos, only if they were told `was` (one winner).

    The bot (a late answer) and the reply queue (an answer that arrived while the reply was being sent) may
    both find a raise; the conditional UPDATE lets only one of them send the follow-up.
    """
    told = Case.told_tier.is_(None) if was is None else Case.told_tier == was
    result = session.execute(
        update(Case)
        .where(Case.id.in_(case_ids), told)
        .values(told_tier=tier)
        .execution_options(synchronize_session=False)
    )
    return (result.rowcount or 0) > 0


def queue_patient_message(*, session: Session, case: Case, kind: str, text: str) -> OutboxMessage:
    """Store a system message to the case's patient for the reply queue (plain text); the caller commits, then sends."""
    user = case.user
    message = OutboxMessage(user_id=user.id, case_id=case.id, chat_id=user.chat_id, kind=kind, text=text)
    session.add(message)
    session.flush()
    audit(session=session, actor="system", action="message.queued", case_id=case.id,
          detail={"message_id": message.id, "kind": kind})  # fmt: skip
    return message


# --- queueing and processing ----------------------------------------------------------------


def mark_queued(*, session: Session, case_id: int) -> None:
    """Record that the job was handed to the broker."""
    session.execute(
        update(Case)
        .where(Case.id == case_id, Case.status.in_((CaseStatus.RECEIVED, CaseStatus.QUEUED)))
        .values(status=CaseStatus.QUEUED, queued_at=database_now(session))
    )


def mark_acknowledged(*, session: Session, case_id: int, message_id: int | None) -> None:
    """Record that the patient was told the photo was received."""
    session.execute(update(Case).where(Case.id == case_id).values(acknowledged_at=utcnow(), ack_message_id=message_id))


class Claim(StrEnum):
    """Outcome of trying to take a case for processing."""

    CLAIMED = "claimed"
    FINISHED = "finished"  # already done/rejected/failed: nothing to do
    BUSY = "busy"  # a live worker holds it
    EXHAUSTED = "exhausted"  # the attempt cap was reached; the case is now failed
    MISSING = "missing"  # deleted (e.g. the patient used /delete)


@dataclass
class ClaimResult:
    """A claim and the case row as it is after it."""

    outcome: Claim
    case: Case | None


def claim_for_processing(
    *, session: Session, case_id: int, max_attempts: int, stale_after_s: int, owner: str | None = None
) -> ClaimResult:
    """Atomically take a case for processing, counting the attempt.

    The caller commits (ends its unit of work) before processing, so that other workers see the claim.
    """
    owner = owner or worker_identity()
    now = database_now(session)
    stale = now - timedelta(seconds=stale_after_s)
    case = session.get(Case, case_id)
    if case is None:
        return ClaimResult(Claim.MISSING, None)
    if case.status in FINAL_STATUSES:
        return ClaimResult(Claim.FINISHED, case)
    reclaimable = or_(
        Case.status.in_((CaseStatus.RECEIVED, CaseStatus.QUEUED)),
        and_(Case.status == CaseStatus.PROCESSING, Case.started_at < stale),
    )
    if case.status == CaseStatus.PROCESSING and owner_is_dead(case.processing_owner):
        # The worker that held it died on this host (e.g. SIGKILL); take it over now.
        reclaimable = or_(reclaimable, Case.processing_owner == case.processing_owner)
    if case.attempts >= max_attempts:
        if case.status == CaseStatus.PROCESSING and not (
            owner_is_dead(case.processing_owner) or (case.started_at and case.started_at < stale)
        ):
            return ClaimResult(Claim.BUSY, case)
        # Fail it only while the dead or stale holder still has it: it may finish the case meanwhile.
        holder = case.processing_owner if case.status == CaseStatus.PROCESSING else None
        mark_failed(session=session, case_id=case_id, error_code="attempts_exhausted", owner=holder)
        session.refresh(case)
        return ClaimResult(Claim.EXHAUSTED, case)
    result = session.execute(
        update(Case)
        .where(Case.id == case_id, Case.attempts < max_attempts, reclaimable)
        .values(
            status=CaseStatus.PROCESSING,
            started_at=now,
            processing_owner=owner,
            attempts=Case.attempts + 1,
        )
        .execution_options(synchronize_session=False)
    )
    session.refresh(case)
    if result.rowcount == 1:
        return ClaimResult(Claim.CLAIMED, case)
    if case.status in FINAL_STATUSES:
        return ClaimResult(Claim.FINISHED, case)
    return ClaimResult(Claim.BUSY, case)


def release_for_retry(
    *,
    session: Session,
    case_id: int,
    owner: str | None = None,
    refund_attempt: bool = False,
    infra_failure: bool = False,
) -> None:
    """Give a case back to the queue after a transient error.

    The attempt stays counted unless refund_attempt: the attempt cap is for jobs that kill their
    worker, so an outage of the database or the image store should not use up a patient's attempts.
    `infra_failure`: the models failed on it; counted in `infra_failures` (see fail_after_infra_failures).
    """
    owner = owner or worker_identity()
    values: dict[str, Any] = {"status": CaseStatus.QUEUED, "processing_owner": None, "queued_at": database_now(session)}
    if refund_attempt:
        # A PROCESSING case was claimed, so attempts >= 1 here.
        values["attempts"] = Case.attempts - 1
    if infra_failure:
        values["infra_failures"] = Case.infra_failures + 1
    session.execute(
        update(Case)
        .where(Case.id == case_id, Case.status == CaseStatus.PROCESSING, Case.processing_owner == owner)
        .values(**values)
        .execution_options(synchronize_session=False)
    )


def fail_after_infra_failures(*, session: Session, case_id: int, max_failures: int) -> bool:
    """Fail a queued case the models failed on `max_failures` times or more (the patient is told); False otherwise.

    One conditional UPDATE: a case another worker has claimed meanwhile is left to it.
    """
    result = session.execute(
        update(Case)
        .where(Case.id == case_id, Case.status == CaseStatus.QUEUED, Case.infra_failures >= max_failures)
        .values(status=CaseStatus.FAILED, finished_at=database_now(session), error_code="infrastructure_failures")
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        return False
    audit(session=session, actor="system", action="case.failed", case_id=case_id,
          detail={"error_code": "infrastructure_failures"})  # fmt: skip
    return True


@dataclass(frozen=True)
class CaseResult:
    """What the pipeline found for a case, as its row stores it (the worker builds it from ml.triage's TriageResult).

    The image keys name the mask, overlay and heatmap already written to the image store. A RETAKE result
    finishes the case as rejected, any other as done.
    """

    tier: str
    tier_reason: str | None = None
    label: str | None = None
    prob_mel: float | None = None
    prob_nv: float | None = None
    prob_other: float | None = None
    mel_threshold: float | None = None
    lesion_area_px: int | None = None
    lesion_diameter_px: float | None = None
    quality_flags: list[str] = field(default_factory=list)
    retake_reason: str | None = None
    model_versions: dict[str, str] = field(default_factory=dict)
    timings_ms: dict[str, float] = field(default_factory=dict)
    demo_model: bool = False
    modality: str | None = None
    # Left as they are on the row when None: the photo's size measured at intake, no measurements or images.
    measurements: dict[str, Any] | None = None
    image_width: int | None = None
    image_height: int | None = None
    mask_key: str | None = None
    overlay_key: str | None = None
    heatmap_key: str | None = None

    _KEPT_WHEN_NONE = ("measurements", "image_width", "image_height", "mask_key", "overlay_key", "heatmap_key")

    @property
    def status(self) -> CaseStatus:
        """The status the result finishes its case with."""
        return CaseStatus.REJECTED if self.tier == Tier.RETAKE else CaseStatus.DONE

    def columns(self) -> dict[str, Any]:
        """The case columns this result sets."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        return {k: v for k, v in values.items() if v is not None or k not in self._KEPT_WHEN_NONE}


def save_result(*, session: Session, case_id: int, result: CaseResult, owner: str | None = None) -> bool:
    """Store the pipeline's result and finish the case; False when another worker finished it first."""
    owner = owner or worker_identity()
    updated = session.execute(
        update(Case)
        .where(Case.id == case_id, Case.status == CaseStatus.PROCESSING, Case.processing_owner == owner)
        .values(status=result.status, finished_at=database_now(session), **result.columns())
        .execution_options(synchronize_session=False)
    )
    return updated.rowcount == 1


def mark_failed(*, session: Session, case_id: int, error_code: str, owner: str | None = None) -> bool:
    """Finish an open case as failed with a code (the patient is told); False when it was not ours to fail.

    A worker passes its `owner` identity: once its claim went stale and another worker took the case over,
    the case is no longer its to fail, whether the new owner is still working on it or has finished it.
    Without an owner (attempt cap, operators) any open case fails.
    """
    condition = Case.status.in_(OPEN_STATUSES)
    if owner is not None:
        condition = and_(Case.status == CaseStatus.PROCESSING, Case.processing_owner == owner)
    result = session.execute(
        update(Case)
        .where(Case.id == case_id, condition)
        .values(status=CaseStatus.FAILED, finished_at=database_now(session), error_code=error_code)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        return False
    audit(session=session, actor="system", action="case.failed", case_id=case_id, detail={"error_code": error_code})
    return True


# --- delivery -------------------------------------------------------------------------------


def claim_delivery(*, session: Session, case_id: int, lease_s: int = 120) -> Case | None:
    """Atomically take the right to send a finished case's answer; None if sent or held by someone else.

    The caller commits before sending, so that other jobs see the claim.
    """
    now = database_now(session)
    result = session.execute(
        update(Case)
        .where(
            Case.id == case_id,
            Case.status.in_(FINAL_STATUSES),
            Case.delivered_at.is_(None),
            or_(Case.delivery_claimed_at.is_(None), Case.delivery_claimed_at < now - timedelta(seconds=lease_s)),
            or_(Case.delivery_not_before.is_(None), Case.delivery_not_before <= now),
        )
        .values(delivery_claimed_at=now)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        return None
    case = session.get(Case, case_id)
    if case is not None:
        session.refresh(case)
    return case


def release_delivery(*, session: Session, case_id: int, wait_s: float | None = None) -> None:
    """Let another attempt send the answer (after a failed send); none before `wait_s` seconds when given.

    Telegram's flood control (429) names how long to wait; sending earlier only earns another 429, so the
    wait is kept in the row, where the retry and the sweeper both see it.
    """
    not_before = database_now(session) + timedelta(seconds=wait_s) if wait_s else None
    session.execute(
        update(Case)
        .where(Case.id == case_id, Case.delivered_at.is_(None))
        .values(delivery_claimed_at=None, delivery_not_before=not_before)
        .execution_options(synchronize_session=False)
    )


def mark_reply_started(*, session: Session, case_id: int, message_id: int) -> bool:
    """Record that the first message of a two-part answer reached Telegram, so a retry sends only the rest.

    Only the message id is set: delivered_at and reply_text (mark_delivered) stay empty until the rest is sent.
    False when the case is gone (deleted) or already answered.
    """
    result = session.execute(
        update(Case)
        .where(Case.id == case_id, Case.delivered_at.is_(None))
        .values(reply_message_id=message_id)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


def mark_delivered(
    *, session: Session, case_id: int, message_id: int | None, text: str, told_tier: str | None = None
) -> None:
    """Record that the answer reached Telegram, exactly what it said and its tier with the patient's answers."""
    session.execute(
        update(Case)
        .where(Case.id == case_id)
        .values(delivered_at=utcnow(), reply_message_id=message_id, reply_text=text, told_tier=told_tier)
        .execution_options(synchronize_session=False)
    )
    audit(session=session, actor="system", action="case.delivered", case_id=case_id)


def mark_answered_with(*, session: Session, case_ids: list[int], answer: Case) -> None:
    """Record that photos of an album were answered by the album's one answer (`answer`, already delivered)."""
    if not case_ids:
        return
    session.execute(
        update(Case)
        .where(Case.id.in_(case_ids), Case.delivered_at.is_(None))
        .values(
            delivered_at=utcnow(),
            reply_message_id=answer.reply_message_id,
            reply_text=answer.reply_text,
            told_tier=answer.told_tier,
        )
        .execution_options(synchronize_session=False)
    )
    for case_id in case_ids:
        audit(session=session, actor="system", action="case.delivered", case_id=case_id, detail={"answer": answer.id})


def mark_undeliverable(*, session: Session, case_id: int, reason: str) -> None:
    """Stop trying to send a case's answer (the patient blocked the bot, the chat is gone).

    delivered_at is set so the sweeper leaves it; reply_text stays empty, the reason goes to
    error_code (unless the case already has one) and to the audit trail.
    """
    session.execute(
        update(Case)
        .where(Case.id == case_id, Case.delivered_at.is_(None))
        .values(
            delivered_at=utcnow(),
            reply_message_id=None,
            reply_text=None,
            error_code=func.coalesce(Case.error_code, f"undeliverable:{reason}"[:64]),
        )
        .execution_options(synchronize_session=False)
    )
    audit(session=session, actor="system", action="case.undeliverable", case_id=case_id, detail={"reason": reason})


def mark_delay_notice(*, session: Session, case_id: int) -> None:
    """Record that the patient was told their answer is delayed."""
    session.execute(update(Case).where(Case.id == case_id).values(delay_notice_at=utcnow()))


# --- outbox (clinicians' reviews and words, the booking question) ---------------------------------------


def claim_outbox(*, session: Session, message_id: int, lease_s: int = 120) -> OutboxMessage | None:
    """Atomically take the right to send an outbox message; None if sent or held by someone else.

    The caller commits before sending, so that other jobs see the claim.
    """
    now = database_now(session)
    result = session.execute(
        update(OutboxMessage)
        .where(
            OutboxMessage.id == message_id,
            OutboxMessage.sent_at.is_(None),
            or_(OutboxMessage.claimed_at.is_(None), OutboxMessage.claimed_at < now - timedelta(seconds=lease_s)),
            or_(OutboxMessage.not_before.is_(None), OutboxMessage.not_before <= now),
        )
        .values(claimed_at=now, attempts=OutboxMessage.attempts + 1)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        return None
    message = session.get(OutboxMessage, message_id)
    if message is not None:
        session.refresh(message)
    return message


def outbox_message_exists(*, session: Session, message_id: int) -> bool:
    """Whether the outbox message is still there (the patient's /delete removes it)."""
    return session.scalar(select(OutboxMessage.id).where(OutboxMessage.id == message_id)) is not None


def release_outbox(*, session: Session, message_id: int, error: str | None = None, wait_s: float | None = None) -> None:
    """Let another attempt send the message (after a failed send), noting why; none before `wait_s` seconds."""
    not_before = database_now(session) + timedelta(seconds=wait_s) if wait_s else None
    session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.id == message_id, OutboxMessage.sent_at.is_(None))
        .values(claimed_at=None, error=error[:255] if error else None, not_before=not_before)
        .execution_options(synchronize_session=False)
    )


def mark_outbox_sent(*, session: Session, message_id: int, text: str | None = None) -> None:
    """Record that the message reached Telegram and, when given, exactly what the patient read."""
    session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.id == message_id)
        .values(sent_at=utcnow(), error=None, sent_text=text)
        .execution_options(synchronize_session=False)
    )
    audit(session=session, actor="system", action="outbox.sent", detail={"message_id": message_id})


def mark_outbox_failed(*, session: Session, message_id: int, error: str) -> None:
    """Give up on a message for good (patient blocked the bot): sent_at set with an error means not sent."""
    session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.id == message_id, OutboxMessage.sent_at.is_(None))
        .values(sent_at=utcnow(), error=error[:255])
        .execution_options(synchronize_session=False)
    )
    audit(session=session, actor="system", action="outbox.failed", detail={"message_id": message_id, "error": error})


# --- sweeping and retention -----------------------------------------------------------------


@dataclass
class SweepPlan:
    """What the sweeper should re-enqueue."""

    to_process: list[int]
    to_deliver: list[int]
    outbox: list[int]


def find_stuck(*, session: Session, stuck_after_s: int, now: datetime | None = None) -> SweepPlan:
    """Cases lost between steps: never queued, queued or processing too long, or finished but unanswered.

    An answer or message that Telegram's flood control asked to hold is left alone until its wait is over.
    """
    now = now or database_now(session)
    old = now - timedelta(seconds=stuck_after_s)
    to_process = session.scalars(
        select(Case.id).where(
            or_(
                and_(Case.status == CaseStatus.RECEIVED, Case.received_at < now - timedelta(seconds=5)),
                and_(Case.status == CaseStatus.QUEUED, Case.queued_at < old),
                and_(Case.status == CaseStatus.PROCESSING, Case.started_at < old),
            )
        )
    ).all()
    to_deliver = session.scalars(
        select(Case.id).where(
            Case.status.in_(FINAL_STATUSES),
            Case.delivered_at.is_(None),
            Case.finished_at < now - timedelta(seconds=min(stuck_after_s, 30)),
            or_(Case.delivery_claimed_at.is_(None), Case.delivery_claimed_at < old),
            or_(Case.delivery_not_before.is_(None), Case.delivery_not_before <= now),
        )
    ).all()
    outbox = session.scalars(
        select(OutboxMessage.id).where(
            OutboxMessage.sent_at.is_(None),
            OutboxMessage.created_at < now - timedelta(seconds=min(stuck_after_s, 30)),
            or_(OutboxMessage.claimed_at.is_(None), OutboxMessage.claimed_at < old),
            or_(OutboxMessage.not_before.is_(None), OutboxMessage.not_before <= now),
        )
    ).all()
    return SweepPlan(list(to_process), list(to_deliver), list(outbox))


def purge_expired_images(
    *, session: Session, store: ImageStore, retention_days: int, now: datetime | None = None
) -> int:
    """Delete images of cases older than the retention period; keep the case records. Returns cases purged."""
    now = now or utcnow()
    cutoff = now - timedelta(days=retention_days)
    expired = session.scalars(select(Case).where(Case.received_at < cutoff, Case.images_deleted_at.is_(None))).all()
    purged = 0
    for case in expired:
        for attr in ("image_key", "mask_key", "overlay_key", "heatmap_key"):
            key = getattr(case, attr)
            if key is None:
                continue
            # Content-addressed: a younger case may hold the same bytes; keep them for it.
            shared = session.scalar(
                select(func.count())
                .select_from(Case)
                .where(
                    Case.id != case.id,
                    Case.images_deleted_at.is_(None),
                    Case.received_at >= cutoff,
                    or_(Case.image_key == key, Case.mask_key == key, Case.overlay_key == key, Case.heatmap_key == key),
                )
            )
            if not shared:
                store.delete(key)
            setattr(case, attr, None)
        case.images_deleted_at = now
        purged += 1
    if purged:
        audit(session=session, actor="system", action="retention.purge", detail={"cases": purged})
    return purged


def unreferenced_image_keys(*, session: Session, keys: list[str]) -> set[str]:
    """The keys no case names as its photo, mask, overlay or heatmap (content-addressed keys may be shared)."""
    columns = (Case.image_key, Case.mask_key, Case.overlay_key, Case.heatmap_key)
    used: set[str] = set()
    for start in range(0, len(keys), 500):
        chunk = keys[start : start + 500]
        for column in columns:
            used.update(session.scalars(select(column).where(column.in_(chunk))).all())
    return set(keys) - used


def begin_intake(*, session: Session, user: User, chat_id: int, message_id: int) -> None:
    """Record that a photo message's handling began (before its download); the caller commits."""
    exists = session.scalar(
        select(PendingIntake.id).where(PendingIntake.chat_id == chat_id, PendingIntake.message_id == message_id)
    )
    if exists is None:
        session.add(PendingIntake(user_id=user.id, chat_id=chat_id, message_id=message_id))


def end_intake(*, session: Session, chat_id: int, message_id: int) -> None:
    """The patient was answered about this photo message (case saved, or told why not)."""
    session.execute(
        delete(PendingIntake).where(PendingIntake.chat_id == chat_id, PendingIntake.message_id == message_id)
    )


def interrupted_intakes(*, session: Session) -> list[tuple[PendingIntake, User, bool]]:
    """Photo messages whose handling never answered, with their patient and whether a case was saved for them."""
    rows = session.execute(
        select(PendingIntake, User).join(User, User.id == PendingIntake.user_id).order_by(PendingIntake.id)
    ).all()
    out = []
    for pending, user in rows:
        saved = session.scalar(
            select(Case.id).where(Case.user_id == user.id, Case.source_message_id == pending.message_id).limit(1)
        )
        out.append((pending, user, saved is not None))
    return out


def delete_user_data(*, session: Session, store: ImageStore, user: User) -> int:
    """Remove a patient's images, cases and profile (the /delete command). Returns cases deleted."""
    cases = session.scalars(select(Case).where(Case.user_id == user.id)).all()
    keys = {k for c in cases for k in (c.image_key, c.mask_key, c.overlay_key, c.heatmap_key) if k}
    case_ids = [c.id for c in cases]
    for key in keys:
        others = session.scalar(
            select(func.count())
            .select_from(Case)
            .where(
                Case.user_id != user.id,
                or_(Case.image_key == key, Case.mask_key == key, Case.overlay_key == key, Case.heatmap_key == key),
            )
        )
        if not others:
            store.delete(key)
    session.execute(delete(OutboxMessage).where(OutboxMessage.user_id == user.id))
    session.execute(delete(PendingIntake).where(PendingIntake.user_id == user.id))
    session.execute(delete(RecheckReminder).where(RecheckReminder.user_id == user.id))  # /delete ends reminders
    session.execute(delete(Case).where(Case.user_id == user.id))
    session.delete(user)
    audit(session=session, actor="patient", action="patient.deleted", detail={"cases": len(case_ids)})
    return len(case_ids)


def audit(
    *,
    session: Session,
    actor: str,
    action: str,
    case_id: int | None = None,
    operator_id: int | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    """Append an audit event (ids only: no names, no images, no message text)."""
    session.add(AuditEvent(actor=actor, action=action, case_id=case_id, operator_id=operator_id, detail=detail or {}))
