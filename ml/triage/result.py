"""The result the triage pipeline hands back to the worker."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from skintriage.vocabulary import RetakeReason, Tier

if TYPE_CHECKING:
    from ml.triage.measurements import LesionMeasurements


@dataclass
class TriageResult:
    """Everything the worker stores for a case and the bot tells the patient.

    probabilities: calibrated, keyed by label (MEL, NV, OTHER); empty for RETAKE before classification.
    mask_png / overlay_jpeg: encoded images of the photo's own size (None when not produced).
    measurements: asymmetry, border, colours and size of the lesion (ml.triage.measurements); None for RETAKE.
    """

    tier: Tier
    label: str | None = None
    probabilities: dict[str, float] = field(default_factory=dict)
    mel_threshold: float | None = None
    retake_reason: RetakeReason | None = None
    quality_flags: list[str] = field(default_factory=list)
    lesion_area_px: int | None = None
    lesion_diameter_px: float | None = None
    image_width: int | None = None
    image_height: int | None = None
    mask_png: bytes | None = None
    overlay_jpeg: bytes | None = None
    heatmap_jpeg: bytes | None = None
    model_versions: dict[str, str] = field(default_factory=dict)
    timings_ms: dict[str, float] = field(default_factory=dict)
    demo_model: bool = False
    measurements: LesionMeasurements | None = None
    # The kind of photo judged (ml.triage.modality.Modality: dermoscopic, clinical, unknown) and P(ordinary photo).
    modality: str | None = None
    p_clinical: float | None = None
    # Why the tier (ml.triage.policy REASON_*), for the patient's answer; None for RETAKE.
    tier_reason: str | None = None
