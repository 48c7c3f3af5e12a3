"""The worker stores why a case has its tier, so the patient's answer can say it in words."""

from __future__ import annotations

from ml.triage.result import TriageResult
from skintriage.settings import Settings
from skintriage.vocabulary import RetakeReason, Tier
from worker.tasks import tier_reason

SETTINGS = Settings(UNCERTAIN_MARGIN=0.05, MIN_CONFIDENCE=0.5)


def result(tier: Tier, probs: tuple[float, float, float], flags: list[str] | None = None) -> TriageResult:
    return TriageResult(
        tier=tier,
        probabilities=dict(zip(("MEL", "NV", "OTHER"), probs, strict=True)),
        mel_threshold=0.3,
        quality_flags=flags or [],
    )


def test_the_reason_is_the_policys_for_the_same_probabilities_threshold_and_gate_flags() -> None:
    assert tier_reason(result(Tier.HIGH, (0.31, 0.6, 0.09)), settings=SETTINGS) == "above_threshold"
    assert tier_reason(result(Tier.UNCERTAIN, (0.27, 0.63, 0.10)), settings=SETTINGS) == "near_threshold"
    assert tier_reason(result(Tier.UNCERTAIN, (0.2, 0.45, 0.35)), settings=SETTINGS) == "low_confidence"
    gate = result(Tier.UNCERTAIN, (0.1, 0.8, 0.1), ["borderline_sharpness", "lesion_touches_border"])
    assert tier_reason(gate, settings=SETTINGS) == "gate_unsure"
    assert tier_reason(result(Tier.LOW, (0.1, 0.8, 0.1), ["lesion_touches_border"]), settings=SETTINGS) == "most_likely"


def test_no_reason_is_claimed_for_a_retake_or_a_tier_the_policy_would_not_give() -> None:
    retake = TriageResult(tier=Tier.RETAKE, retake_reason=RetakeReason.BLURRY)
    assert tier_reason(retake, settings=SETTINGS) is None
    assert tier_reason(result(Tier.MEDIUM, (0.1, 0.8, 0.1)), settings=SETTINGS) is None


def test_a_reason_the_pipeline_hands_over_itself_is_kept() -> None:
    own = result(Tier.UNCERTAIN, (0.1, 0.8, 0.1))
    own.tier_reason = "gate_unsure"  # a pipeline that passes the policy's reason on (ml/ is being changed)
    assert tier_reason(own, settings=SETTINGS) == "gate_unsure"
