"""The one place that pins the class order, the HAM10000 label mapping and the risk tiers."""

from __future__ import annotations

from enum import StrEnum

# Index order of the classifier's output. Changing it silently turns melanoma into nevus:
# tests pin it, model cards record it and loading refuses a card whose order differs.
LABELS: tuple[str, ...] = ("MEL", "NV", "OTHER")
MEL_INDEX = LABELS.index("MEL")

# HAM10000's seven diagnoses merged into three classes, as in the reference study.
DX_TO_LABEL: dict[str, str] = {
    "mel": "MEL",
    "nv": "NV",
    "bkl": "OTHER",
    "bcc": "OTHER",
    "akiec": "OTHER",
    "vasc": "OTHER",
    "df": "OTHER",
}


def label_for_dx(dx: str) -> str:
    """Map a HAM10000 diagnosis code to MEL, NV or OTHER."""
    key = dx.strip().lower()
    if key not in DX_TO_LABEL:
        raise ValueError(f"unknown HAM10000 diagnosis {dx!r}; expected one of {sorted(DX_TO_LABEL)}")
    return DX_TO_LABEL[key]


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
