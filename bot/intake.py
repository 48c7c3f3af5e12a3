"""Photo intake: from a patient's photo to a committed, queued case.

Order matters and each step is a plain blocking function the handler runs off the event loop:
  1. `before_download`: repeated update? consent? same Telegram file just now? rate limit, cases in flight?
     A patient who agreed to an older consent text is asked again; their photo's Telegram reference (never
     the bytes) is held on their row and analysed once they agree (`bot.handlers.on_consent_button`).
  2. the handler downloads the bytes; `prepare_image` reads the header (format, size, pixel bomb), then drops
     EXIF (GPS included) and other metadata, applying the orientation, so the stored photo carries none
  3. `register`: store the image, then in ONE transaction mark the message (chat id, message id) processed,
     reuse a case for the same bytes within the duplicate window or create the case, and COMMIT
  4. `publish`: enqueue the committed case, then the handler acknowledges, and `acknowledged` records in one
     transaction the case queued, the acknowledgement and the intake record settled. When the broker is down
     the case stays "received" and the sweeper enqueues it later, so the photo is never lost.

Telegram counts an update as delivered once the bot fetched it, before any handler ran. So when the checks
pass, step 1 also records the message (`pending_intakes`) in its transaction, before the download; `settle`
removes the record once the patient has been answered. A bot killed in between leaves the record, and at its
next start `recover_interrupted` tells that patient the photo was not saved and asks for it again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from enum import StrEnum
from pathlib import PurePosixPath
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from bot.consent import ConsentState
from bot.patients import Patient, consent_state, ensure_user
from ml.triage.decode import ImageInfo, probe_image, strip_metadata
from skintriage import cases
from skintriage.exceptions import RateLimited, TooManyInFlight
from skintriage.models import Case, CaseStatus
from skintriage.observability import PHOTOS_RECEIVED
from skintriage.settings import Settings
from skintriage.storage import ImageStore

log = logging.getLogger(__name__)

# Store extensions by decoded format; anything else ml.triage.decode accepts is kept as .bin.
STORE_EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "HEIF": "heic", "AVIF": "heic"}
IMAGE_MIME_TYPES = {"image/jpeg", "image/jpg", "image/png", "image/webp", "image/heic", "image/heif", "image/avif"}
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".jpe", ".png", ".webp", ".heic", ".heif", ".avif"}


class Outcome(StrEnum):
    """What became of a photo."""

    PROCEED = "proceed"  # checks passed: download it
    SEEN = "seen"  # a repeated delivery of an update already handled: say nothing
    NEEDS_CONSENT = "needs_consent"  # never agreed: the photo is not kept, the patient sends it again
    NEEDS_RECONSENT = "needs_reconsent"  # agreed to an older consent text: the photo is held until they agree
    DUPLICATE = "duplicate"  # the same photo within the duplicate window: its case is reused
    RATE_LIMITED = "rate_limited"
    IN_FLIGHT = "in_flight"
    CREATED = "created"


@dataclass(frozen=True)
class Decision:
    """An outcome and what the reply needs to say."""

    outcome: Outcome
    language: str
    case_id: int | None = None
    finished: bool = False
    retry_after_s: int = 0
    first_of_album: bool = True  # a new spot: the questions are asked (once per album)
    held: bool = False  # NEEDS_RECONSENT: the photo's reference is kept until the patient agrees


@dataclass(frozen=True)
class IncomingPhoto:
    """A photo or image file as Telegram announced it (no bytes yet)."""

    file_id: str
    file_unique_id: str | None
    file_size: int | None
    message_id: int
    update_id: int
    media_group_id: str | None = None
    # The message this photo replies to (Telegram's reply): an earlier case's message marks the same spot.
    reply_to_message_id: int | None = None

    def to_json(self) -> dict[str, Any]:
        """The reference held on the patient's row while they re-read the consent text."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> IncomingPhoto:
        """A held reference back."""
        return cls(**{f.name: data.get(f.name) for f in fields(cls)})


def is_image_document(mime_type: str | None, file_name: str | None) -> bool:
    """Whether a file sent "as a document" claims to be an image worth downloading."""
    if mime_type and mime_type.lower() in IMAGE_MIME_TYPES:
        return True
    suffix = PurePosixPath(file_name or "").suffix.lower()
    return suffix in IMAGE_SUFFIXES and (not mime_type or mime_type.lower() in {"application/octet-stream", ""})


def _reusable(case: Case | None) -> bool:
    # A failed case told the patient to send the photo again: that resend must start a new case.
    return case is not None and case.status != CaseStatus.FAILED


def before_download(
    *,
    sessions: sessionmaker[Session],
    settings: Settings,
    patient: Patient,
    photo: IncomingPhoto,
    consent_version: str,
) -> Decision:
    """The checks that need no bytes: repeated update, consent, same file just now, rate limit, cases in flight."""
    file_unique_id = photo.file_unique_id
    with sessions.begin() as session:
        user = ensure_user(session, patient)
        if cases.update_seen(session=session, chat_id=patient.chat_id, message_id=photo.message_id):
            return Decision(Outcome.SEEN, user.language)
        state = consent_state(user, consent_version)
        if state is ConsentState.NONE:
            return Decision(Outcome.NEEDS_CONSENT, user.language)
        if state is ConsentState.OUTDATED:
            # They agreed to photos being kept under the older text: hold the reference, not the bytes.
            held = cases.hold_photo(session=session, user=user, photo=photo.to_json())
            return Decision(Outcome.NEEDS_RECONSENT, user.language, held=held)
        if file_unique_id:
            same = cases.find_recent_same_file(
                session=session, user=user, file_unique_id=file_unique_id, window_s=settings.duplicate_window_s
            )
            if _reusable(same):
                return Decision(Outcome.DUPLICATE, user.language, same.id, same.status in cases.FINAL_STATUSES)
        try:
            cases.check_intake_limits(
                session=session,
                user=user,
                rate_limit=settings.rate_limit_photos,
                window_s=settings.rate_limit_window_s,
                max_in_flight=settings.max_in_flight,
            )
        except RateLimited as exc:
            return Decision(Outcome.RATE_LIMITED, user.language, retry_after_s=exc.retry_after_s)
        except TooManyInFlight:
            return Decision(Outcome.IN_FLIGHT, user.language)
        cases.begin_intake(session=session, user=user, chat_id=patient.chat_id, message_id=photo.message_id)
        return Decision(Outcome.PROCEED, user.language)


def settle(*, sessions: sessionmaker[Session], chat_id: int, message_id: int) -> None:
    """The patient has been answered about this photo message: forget that its handling was under way."""
    with sessions.begin() as session:
        cases.end_intake(session=session, chat_id=chat_id, message_id=message_id)


@dataclass(frozen=True)
class Interrupted:
    """A photo message whose handling never answered (the bot stopped): who to tell, in which language."""

    chat_id: int
    message_id: int
    language: str
    saved: bool  # a case was committed for it: the reply queue answers it, nothing to ask


def interrupted(*, sessions: sessionmaker[Session]) -> list[Interrupted]:
    """Photo messages left under way by an earlier run of the bot (there is one bot per deployment)."""
    with sessions.begin() as session:
        return [
            Interrupted(pending.chat_id, pending.message_id, user.language, saved)
            for pending, user, saved in cases.interrupted_intakes(session=session)
        ]


def inspect_image(data: bytes, *, settings: Settings) -> ImageInfo:
    """Read the header only; raises ml.errors.InvalidImageError with the reason the patient is told."""
    return probe_image(data, max_pixels=settings.max_image_pixels)


def prepare_image(data: bytes, *, settings: Settings) -> tuple[bytes, ImageInfo]:
    """The bytes to store and their header: EXIF (GPS included) and other metadata dropped, orientation applied.

    Raises ml.errors.InvalidImageError with the reason the patient is told. The header is checked first, so
    a pixel bomb is refused before anything is decoded.
    """
    info = inspect_image(data, settings=settings)
    clean = strip_metadata(data, max_pixels=settings.max_image_pixels)
    if clean is data:
        return data, info
    return clean, inspect_image(clean, settings=settings)


def register(
    *,
    sessions: sessionmaker[Session],
    store: ImageStore,
    settings: Settings,
    patient: Patient,
    data: bytes,
    info: ImageInfo,
    update_id: int,
    message_id: int,
    file_unique_id: str | None,
    media_group_id: str | None = None,
    reply_to_message_id: int | None = None,
) -> Decision:
    """Store the photo and commit its case (or find the case of the same bytes); the case is not queued yet.

    A photo sent as a reply to one of the patient's earlier cases (its acknowledgement, answer or photo) is the
    same spot again: the new case is linked to that one, and its answer compares the two.
    """
    image = store.put(data, kind="photo", ext=STORE_EXTENSIONS.get(info.format.upper(), "bin"))
    with sessions.begin() as session:
        user = ensure_user(session, patient)
        if not cases.mark_update_processed(
            session=session, chat_id=patient.chat_id, message_id=message_id, update_id=update_id
        ):
            return Decision(Outcome.SEEN, user.language)
        same = cases.find_recent_duplicate(
            session=session, user=user, sha256=image.sha256, window_s=settings.duplicate_window_s
        )
        if _reusable(same):
            return Decision(Outcome.DUPLICATE, user.language, same.id, same.status in cases.FINAL_STATUSES)
        earlier = (
            cases.find_replied_case(session=session, user=user, message_id=reply_to_message_id)
            if reply_to_message_id is not None
            else None
        )
        case = cases.create_case(
            session=session,
            user=user,
            image=image,
            width=info.width,
            height=info.height,
            update_id=update_id,
            message_id=message_id,
            file_unique_id=file_unique_id,
            media_group_id=media_group_id,
            previous_case_id=earlier.id if earlier is not None else None,
        )
        first = cases.is_first_of_album(session=session, case_id=case.id)
        decision = Decision(Outcome.CREATED, user.language, case.id, first_of_album=first)
    PHOTOS_RECEIVED.inc()
    log.info("case %d received", decision.case_id)
    return decision


def publish(*, case_id: int, enqueue: Callable[[int], bool]) -> bool:
    """Hand a committed case to the broker; False (the broker is down) leaves it for the sweeper."""
    if not enqueue(case_id):
        log.warning("case %d kept as received: the broker is unreachable; the sweeper will enqueue it", case_id)
        return False
    return True


def acknowledged(
    *,
    sessions: sessionmaker[Session],
    case_id: int,
    message_id: int | None,
    queued: bool,
    chat_id: int | None = None,
    photo_message_id: int | None = None,
) -> None:
    """After the acknowledgement, in one transaction: the case queued (when `publish` succeeded), acknowledged
    (and the delay notice when the broker was down), and the photo message's intake record settled.

    One transaction instead of three keeps the database round trips of a photo to three (checks, commit, this),
    so the patient's next photo waits less for this one (docs/load.md). Marking "queued" after the broker call
    and the message is safe: a worker that already took the case is not set back (`cases.mark_queued` only
    moves a received case), and a bot stopped in between leaves a received case for the sweeper.
    """
    with sessions.begin() as session:
        if queued:
            cases.mark_queued(session=session, case_id=case_id)
        cases.mark_acknowledged(session=session, case_id=case_id, message_id=message_id)
        if not queued:
            cases.mark_delay_notice(session=session, case_id=case_id)
        if chat_id is not None and photo_message_id is not None:
            cases.end_intake(session=session, chat_id=chat_id, message_id=photo_message_id)
