"""The tier policy: calibrated probabilities + the model card's operating threshold -> the patient's risk tier.

Safety rules, in order:
1. P(MEL) at or above the operating threshold is HIGH, whatever else is true: a melanoma alert is
   never softened into UNCERTAIN, because both send the patient to a doctor and HIGH says "soon".
2. Anything that makes the answer unreliable is UNCERTAIN: P(MEL) just below the threshold
   (within `uncertain_margin`), a top probability below `min_confidence`, MEL being the most
   likely class while below the threshold, or a quality gate that passed the photo but was unsure.
3. Otherwise the most likely class decides: OTHER -> MEDIUM, NV -> LOW, except that an ordinary
   (clinical, not dermoscopic) photo is never LOW: it is UNCERTAIN, and the answer says a doctor
   should look because the models are not validated on such photos.

The patient's own answers (where, changed, symptoms, age) are applied to this tier when the answer is
composed, never lowering it: ml/triage/red_flags.py (NICE NG12's weighted 7-point checklist, out-of-scope sites).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from skintriage.vocabulary import LABELS, MEL_INDEX, Label, Modality, Tier

# Most likely class (below every alert and doubt rule) -> tier.
TIER_FOR_LABEL: dict[str, Tier] = {Label.MEL: Tier.UNCERTAIN, Label.NV: Tier.LOW, Label.OTHER: Tier.MEDIUM}


@dataclass(frozen=True)
class PolicyConfig:
    """Knobs of the tier policy (Settings: UNCERTAIN_MARGIN, MIN_CONFIDENCE)."""

    # P(MEL) in [threshold - margin, threshold) is UNCERTAIN rather than LOW/MEDIUM.
    uncertain_margin: float = 0.05
    # A top probability below this is UNCERTAIN (the model cannot tell the classes apart).
    min_confidence: float = 0.5
    # Override of the classifier card's operating threshold (None: use the card's).
    mel_threshold: float | None = None
    # Whether a photo the quality gate was unsure about is UNCERTAIN (unless it is HIGH).
    uncertain_when_gate_unsure: bool = True

    def __post_init__(self) -> None:
        if not 0 <= self.uncertain_margin < 1:
            raise ValueError(f"uncertain_margin {self.uncertain_margin} must be in [0, 1), e.g. 0.05")
        if not 0 <= self.min_confidence <= 1:
            raise ValueError(f"min_confidence {self.min_confidence} must be in [0, 1], e.g. 0.5")
        if self.mel_threshold is not None and not 0 < self.mel_threshold <= 1:
            raise ValueError(f"mel_threshold {self.mel_threshold} must be in (0, 1] or None for the card's")

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form."""
        return asdict(self)

    @classmethod
    def from_settings(cls, settings: Any) -> PolicyConfig:
        """The policy a skintriage Settings object describes (UNCERTAIN_MARGIN, MIN_CONFIDENCE)."""
        # Duck-typed so that ml/ never imports the domain package.
        return cls(
            uncertain_margin=float(getattr(settings, "uncertain_margin", cls.uncertain_margin)),
            min_confidence=float(getattr(settings, "min_confidence", cls.min_confidence)),
        )


# Why a tier was chosen, as a stable code (Decision.reason) the patient's answer can put into words.
REASON_ABOVE_THRESHOLD = "above_threshold"  # HIGH
REASON_NEAR_THRESHOLD = "near_threshold"  # UNCERTAIN: P(MEL) just below the operating threshold
REASON_LOW_CONFIDENCE = "low_confidence"  # UNCERTAIN: no class is likely enough
REASON_GATE_UNSURE = "gate_unsure"  # UNCERTAIN: the quality gate passed the photo but was unsure
REASON_MEL_MOST_LIKELY = "mel_most_likely"  # UNCERTAIN: MEL the most likely class, below the threshold
REASON_MOST_LIKELY = "most_likely"  # MEDIUM / LOW: the most likely class decides
# UNCERTAIN: an ordinary (clinical) photo that would have been LOW. The models learnt on dermoscopy and do not
# reach melanoma sensitivity 0.90 with a supporting interval on phone photos (docs/models.md), so an ordinary
# photo is never told LOW: a doctor should look.
REASON_CLINICAL_PHOTO = "clinical_photo"
REASONS: tuple[str, ...] = (
    REASON_ABOVE_THRESHOLD, REASON_NEAR_THRESHOLD, REASON_LOW_CONFIDENCE, REASON_GATE_UNSURE,
    REASON_MEL_MOST_LIKELY, REASON_MOST_LIKELY, REASON_CLINICAL_PHOTO,
)  # fmt: skip


@dataclass(frozen=True)
class Decision:
    """The tier, the label reported with it, why (for logs and the console) and the reason code (for the patient)."""

    tier: Tier
    label: str
    why: str
    reason: str = REASON_MOST_LIKELY


def _as_vector(probabilities: Mapping[str, float] | Sequence[float] | np.ndarray) -> np.ndarray:
    """Probabilities in LABELS order, checked."""
    if isinstance(probabilities, Mapping):
        missing = [label for label in LABELS if label not in probabilities]
        if missing:
            raise ValueError(f"probabilities lack {missing}; pass one value per label in {list(LABELS)}")
        vector = np.array([float(probabilities[label]) for label in LABELS])
    else:
        vector = np.asarray(probabilities, dtype=np.float64).reshape(-1)
        if vector.shape != (len(LABELS),):
            raise ValueError(f"expected {len(LABELS)} probabilities in order {list(LABELS)}, got shape {vector.shape}")
    if not np.all(np.isfinite(vector)) or (vector < 0).any() or abs(vector.sum() - 1) > 1e-3:
        raise ValueError(f"probabilities {vector.tolist()} must be finite, non-negative and sum to 1")
    return vector


def decide_tier(
    probabilities: Mapping[str, float] | Sequence[float] | np.ndarray,
    *,
    mel_threshold: float,
    config: PolicyConfig | None = None,
    gate_unsure: bool = False,
    modality: str | None = None,
) -> Decision:
    """Tier for one photo's calibrated probabilities (LABELS order or keyed by label).

    modality: the kind of photo (ml.triage.modality); an ordinary ("clinical") photo is never LOW.
    """
    config = config or PolicyConfig()
    threshold = config.mel_threshold if config.mel_threshold is not None else float(mel_threshold)
    if not 0 < threshold <= 1:
        raise ValueError(f"mel_threshold {threshold} must be in (0, 1]; check the classifier card's operating_point")
    p = _as_vector(probabilities)
    p_mel = float(p[MEL_INDEX])
    top = int(np.argmax(p))
    top_label = LABELS[top]
    if p_mel >= threshold:
        return Decision(
            Tier.HIGH, Label.MEL, f"P(MEL)={p_mel:.3f} >= operating threshold {threshold:.3f}", REASON_ABOVE_THRESHOLD
        )
    if p_mel >= threshold - config.uncertain_margin:
        return Decision(
            Tier.UNCERTAIN,
            top_label,
            f"P(MEL)={p_mel:.3f} within {config.uncertain_margin:g} below threshold {threshold:.3f}",
            REASON_NEAR_THRESHOLD,
        )
    if float(p[top]) < config.min_confidence:
        return Decision(
            Tier.UNCERTAIN, top_label,
            f"top probability {float(p[top]):.3f} < min_confidence {config.min_confidence:g}", REASON_LOW_CONFIDENCE,
        )  # fmt: skip
    if gate_unsure and config.uncertain_when_gate_unsure:
        return Decision(
            Tier.UNCERTAIN, top_label, "the quality gate passed the photo but was unsure", REASON_GATE_UNSURE
        )
    tier = TIER_FOR_LABEL[top_label]
    if tier is Tier.UNCERTAIN:
        return Decision(
            tier, top_label, f"MEL most likely but P(MEL)={p_mel:.3f} below threshold {threshold:.3f}",
            REASON_MEL_MOST_LIKELY,
        )  # fmt: skip
    if tier is Tier.LOW and modality == Modality.CLINICAL:
        return Decision(
            Tier.UNCERTAIN, top_label,
            f"{top_label} most likely ({float(p[top]):.3f}), but an ordinary photo is never told LOW",
            REASON_CLINICAL_PHOTO,
        )  # fmt: skip
    return Decision(tier, top_label, f"{top_label} most likely ({float(p[top]):.3f})")
