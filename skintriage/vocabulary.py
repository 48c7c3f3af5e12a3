"""The domain's words: classes, risk tiers, retake reasons, photo kinds, review verdicts, outbox kinds.

Every package uses these names (the models in `ml/`, the bot's texts, the worker, the database rows, the
console), so they live here, in a module that imports nothing but the standard library: `ml/` may import
it without pulling in the database, and the bot and the console without pulling in a model
(pyproject.toml's import contract "vocabulary-is-pure" keeps it so). The values are what the database
stores and the model cards record: renaming one is a data migration.
"""

from __future__ import annotations

from enum import StrEnum


class Label(StrEnum):
    """A class the classifier tells apart: melanoma, common mole (nevus), any other lesion."""

    MEL = "MEL"
    NV = "NV"
    OTHER = "OTHER"


# Index order of the classifier's output. Changing it silently turns melanoma into nevus:
# tests pin it, model cards record it and loading refuses a card whose order differs.
LABELS: tuple[str, ...] = (Label.MEL.value, Label.NV.value, Label.OTHER.value)
MEL_INDEX = LABELS.index(Label.MEL)


class Tier(StrEnum):
    """Risk tier that decides the guidance a patient gets."""

    HIGH = "HIGH"
    MEDIUM = "MEDIUM"
    LOW = "LOW"
    UNCERTAIN = "UNCERTAIN"
    RETAKE = "RETAKE"


class RetakeReason(StrEnum):
    """Why a photo cannot be judged; each has its own advice to the patient."""

    UNREADABLE = "unreadable"
    TOO_SMALL = "too_small"
    TOO_LARGE = "too_large"
    BLURRY = "blurry"
    TOO_DARK = "too_dark"
    WASHED_OUT = "washed_out"
    NO_LESION = "no_lesion"
    LESION_TOO_LARGE = "lesion_too_large"
    NOT_SKIN = "not_skin"


class Modality(StrEnum):
    """The kind of photo the models judged (stored with every case, said in every answer)."""

    DERMOSCOPIC = "dermoscopic"
    CLINICAL = "clinical"
    UNKNOWN = "unknown"  # no modality model installed


class ReviewVerdict(StrEnum):
    """What a reviewer says about the model's answer.

    It is right, it is wrong (and the review names the right label), or the photo does not allow a judgement
    (blurred, no lesion, failed case); the last counts in no agreement figure.
    """

    AGREE = "agree"
    DISAGREE = "disagree"
    CANNOT_ASSESS = "cannot_assess"


REVIEW_VERDICTS: tuple[str, ...] = tuple(v.value for v in ReviewVerdict)


class OutboxKind(StrEnum):
    """A message to a patient that is not a case result (skintriage.models.OutboxMessage)."""

    FOLLOWUP = "followup"  # an operator's own words
    REVIEW = "review"  # what a review changes for the patient
    BOOKING = "booking"  # the question whether the patient booked a dermatologist
    ANSWERS = "answers"  # the patient's answers to the questions raised the urgency (composed by the bot)
    REMINDER_OFFER = "reminder_offer"  # whether to remind the patient to photograph the spot again
    REMINDER = "reminder"  # that re-check reminder


OUTBOX_KINDS: tuple[str, ...] = tuple(k.value for k in OutboxKind)


class BookingAnswer(StrEnum):
    """The patient's answer to "Have you booked an appointment with a dermatologist?" (skintriage.booking)."""

    BOOKED = "booked"
    NOT_YET = "not_yet"
    DECLINED = "declined"


BOOKING_ANSWERS: tuple[str, ...] = tuple(a.value for a in BookingAnswer)
