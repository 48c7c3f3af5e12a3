"""The tier policy at and around each of its thresholds, and its refusal of malformed input."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from ml.triage.policy import TIER_FOR_LABEL, PolicyConfig, decide_tier
from skintriage.vocabulary import LABELS, Tier

# Operating threshold from a classifier card; the default policy has margin 0.05 and min_confidence 0.5.
T = 0.3


def test_probabilities_are_in_labels_order() -> None:
    # Every vector below is (MEL, NV, OTHER); the policy must read it in the pinned order.
    assert LABELS == ("MEL", "NV", "OTHER")
    assert TIER_FOR_LABEL == {"MEL": Tier.UNCERTAIN, "NV": Tier.LOW, "OTHER": Tier.MEDIUM}


@pytest.mark.parametrize(
    ("p", "tier", "label"),
    [
        # At or above the operating threshold: HIGH, whatever is most likely.
        ([0.30, 0.60, 0.10], Tier.HIGH, "MEL"),
        ([0.31, 0.09, 0.60], Tier.HIGH, "MEL"),
        ([1.00, 0.00, 0.00], Tier.HIGH, "MEL"),
        # Just below, within uncertain_margin (0.05): UNCERTAIN, reported with the most likely label.
        ([0.299, 0.601, 0.100], Tier.UNCERTAIN, "NV"),
        ([0.26, 0.10, 0.64], Tier.UNCERTAIN, "OTHER"),
        ([0.251, 0.649, 0.100], Tier.UNCERTAIN, "NV"),
        # Just below the margin: the most likely label's tier.
        ([0.249, 0.651, 0.100], Tier.LOW, "NV"),
        ([0.249, 0.100, 0.651], Tier.MEDIUM, "OTHER"),
        ([0.00, 1.00, 0.00], Tier.LOW, "NV"),
        ([0.00, 0.00, 1.00], Tier.MEDIUM, "OTHER"),
    ],
)
def test_tier_around_the_operating_threshold(p: list[float], tier: Tier, label: str) -> None:
    decision = decide_tier(p, mel_threshold=T)
    assert (decision.tier, decision.label) == (tier, label)


@pytest.mark.parametrize(("p_mel", "tier"), [(0.25, Tier.UNCERTAIN), (0.2499, Tier.LOW)])
def test_lower_edge_of_the_margin_is_uncertain(p_mel: float, tier: Tier) -> None:
    # Binary-exact numbers: threshold 0.375 - margin 0.125 = 0.25 with no rounding.
    config = PolicyConfig(uncertain_margin=0.125)
    assert decide_tier([p_mel, 1 - p_mel, 0.0], mel_threshold=0.375, config=config).tier is tier


def test_zero_margin_makes_just_below_the_threshold_decisive() -> None:
    config = PolicyConfig(uncertain_margin=0.0)
    assert decide_tier([0.299, 0.601, 0.1], mel_threshold=T, config=config).tier is Tier.LOW


@pytest.mark.parametrize(
    ("p", "tier", "label"),
    [
        ([0.20, 0.45, 0.35], Tier.UNCERTAIN, "NV"),
        ([0.20, 0.35, 0.45], Tier.UNCERTAIN, "OTHER"),
        ([0.20, 0.499, 0.301], Tier.UNCERTAIN, "NV"),
        ([0.20, 0.50, 0.30], Tier.LOW, "NV"),  # exactly min_confidence is confident enough
        ([0.20, 0.30, 0.50], Tier.MEDIUM, "OTHER"),
    ],
)
def test_top_probability_below_min_confidence_is_uncertain(p: list[float], tier: Tier, label: str) -> None:
    decision = decide_tier(p, mel_threshold=T)
    assert (decision.tier, decision.label) == (tier, label)
    if tier is Tier.UNCERTAIN:
        assert "min_confidence 0.5" in decision.why


@pytest.mark.parametrize("p", [[0.80, 0.15, 0.05], [0.60, 0.30, 0.10], [0.51, 0.00, 0.49]])
def test_mel_most_likely_but_below_the_threshold_is_uncertain(p: list[float]) -> None:
    decision = decide_tier(p, mel_threshold=0.9)
    assert (decision.tier, decision.label) == (Tier.UNCERTAIN, "MEL")
    assert "MEL most likely" in decision.why


@pytest.mark.parametrize(
    ("p", "tier"),
    [
        ([0.10, 0.80, 0.10], Tier.UNCERTAIN),
        ([0.10, 0.10, 0.80], Tier.UNCERTAIN),
        ([0.30, 0.60, 0.10], Tier.HIGH),  # a melanoma alert is never softened
        ([0.35, 0.60, 0.05], Tier.HIGH),
    ],
)
def test_gate_unsure_is_uncertain_unless_high(p: list[float], tier: Tier) -> None:
    decision = decide_tier(p, mel_threshold=T, gate_unsure=True)
    assert decision.tier is tier
    if tier is Tier.UNCERTAIN:
        assert "quality gate" in decision.why


def test_gate_unsure_can_be_ignored_by_config() -> None:
    config = PolicyConfig(uncertain_when_gate_unsure=False)
    assert decide_tier([0.1, 0.8, 0.1], mel_threshold=T, config=config, gate_unsure=True).tier is Tier.LOW


@pytest.mark.parametrize(
    ("card_threshold", "override", "p", "tier"),
    [
        (0.3, 0.5, [0.40, 0.60, 0.00], Tier.LOW),  # HIGH with the card's 0.3; below 0.5 - margin
        (0.3, 0.5, [0.46, 0.54, 0.00], Tier.UNCERTAIN),  # within the margin of the override
        (0.3, 0.5, [0.50, 0.50, 0.00], Tier.HIGH),
        (0.9, 0.2, [0.20, 0.80, 0.00], Tier.HIGH),  # LOW with the card's 0.9
    ],
)
def test_config_threshold_overrides_the_card(
    card_threshold: float, override: float, p: list[float], tier: Tier
) -> None:
    decision = decide_tier(p, mel_threshold=card_threshold, config=PolicyConfig(mel_threshold=override))
    assert decision.tier is tier
    if tier is Tier.HIGH:
        assert f"operating threshold {override:.3f}" in decision.why


def test_mapping_and_array_inputs_agree_with_the_sequence() -> None:
    as_list = decide_tier([0.1, 0.7, 0.2], mel_threshold=T)
    as_map = decide_tier({"OTHER": 0.2, "NV": 0.7, "MEL": 0.1}, mel_threshold=T)
    as_array = decide_tier(np.array([0.1, 0.7, 0.2], np.float32), mel_threshold=T)
    assert as_list == as_map == as_array
    assert as_list.tier is Tier.LOW


def test_rounding_in_the_sum_is_tolerated() -> None:
    assert decide_tier([0.3333, 0.3333, 0.3334], mel_threshold=0.5).tier is Tier.UNCERTAIN


@pytest.mark.parametrize(
    ("p", "message"),
    [
        ([0.5, 0.5], r"expected 3 probabilities in order \['MEL', 'NV', 'OTHER'\], got shape \(2,\)"),
        ([0.1, 0.2, 0.3, 0.4], r"expected 3 probabilities in order \['MEL', 'NV', 'OTHER'\], got shape \(4,\)"),
        ([], r"expected 3 probabilities"),
        ([0.5, 0.5, 0.5], "must be finite, non-negative and sum to 1"),
        ([0.1, 0.1, 0.1], "must be finite, non-negative and sum to 1"),
        ([0.2, 0.3, 0.498], "must be finite, non-negative and sum to 1"),
        ([math.nan, 0.5, 0.5], "must be finite, non-negative and sum to 1"),
        ([math.inf, 0.0, 0.0], "must be finite, non-negative and sum to 1"),
        ([-0.1, 0.6, 0.5], "must be finite, non-negative and sum to 1"),
        ({"MEL": 0.5, "NV": 0.5}, r"probabilities lack \['OTHER'\]; pass one value per label"),
    ],
)
def test_malformed_probabilities_raise_value_error(p: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        decide_tier(p, mel_threshold=T)  # type: ignore[arg-type]


@pytest.mark.parametrize("threshold", [0.0, -0.1, 1.01, 3.0, math.nan])
def test_bad_operating_threshold_raises_value_error(threshold: float) -> None:
    with pytest.raises(ValueError, match=r"must be in \(0, 1\]; check the classifier card's operating_point"):
        decide_tier([0.1, 0.8, 0.1], mel_threshold=threshold)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"uncertain_margin": -0.01}, r"uncertain_margin -0.01 must be in \[0, 1\)"),
        ({"uncertain_margin": 1.0}, r"uncertain_margin 1.0 must be in \[0, 1\)"),
        ({"min_confidence": 1.5}, r"min_confidence 1.5 must be in \[0, 1\]"),
        ({"min_confidence": -0.5}, r"min_confidence -0.5 must be in \[0, 1\]"),
        ({"mel_threshold": 0.0}, r"mel_threshold 0.0 must be in \(0, 1\] or None"),
        ({"mel_threshold": 1.2}, r"mel_threshold 1.2 must be in \(0, 1\] or None"),
    ],
)
def test_bad_policy_config_raises_value_error(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PolicyConfig(**kwargs)


def test_threshold_of_one_is_allowed() -> None:
    assert decide_tier([1.0, 0.0, 0.0], mel_threshold=1.0).tier is Tier.HIGH
    assert decide_tier([0.97, 0.03, 0.0], mel_threshold=1.0).tier is Tier.UNCERTAIN


def test_from_settings_reads_margin_and_confidence_only() -> None:
    config = PolicyConfig.from_settings(SimpleNamespace(uncertain_margin="0.1", min_confidence=0.6))
    assert config == PolicyConfig(uncertain_margin=0.1, min_confidence=0.6)
    assert PolicyConfig.from_settings(SimpleNamespace()) == PolicyConfig()


@pytest.mark.parametrize(
    ("p", "gate_unsure", "tier", "reason"),
    [
        ([0.31, 0.60, 0.09], False, Tier.HIGH, "above_threshold"),
        ([0.27, 0.63, 0.10], False, Tier.UNCERTAIN, "near_threshold"),
        ([0.20, 0.45, 0.35], False, Tier.UNCERTAIN, "low_confidence"),
        ([0.10, 0.80, 0.10], True, Tier.UNCERTAIN, "gate_unsure"),
        ([0.10, 0.80, 0.10], False, Tier.LOW, "most_likely"),
        ([0.10, 0.10, 0.80], False, Tier.MEDIUM, "most_likely"),
    ],
)
def test_every_decision_carries_a_reason_code_for_the_patients_words(p, gate_unsure, tier, reason) -> None:
    from ml.triage.policy import REASONS

    decision = decide_tier(p, mel_threshold=T, gate_unsure=gate_unsure)
    assert (decision.tier, decision.reason) == (tier, reason)
    assert decision.reason in REASONS


def test_mel_most_likely_below_the_threshold_has_its_own_reason() -> None:
    assert decide_tier([0.60, 0.30, 0.10], mel_threshold=0.9).reason == "mel_most_likely"


@pytest.mark.parametrize(
    ("p", "modality", "tier", "reason"),
    [
        # An ordinary photo is never told LOW: the models are not validated on such photos.
        ([0.05, 0.90, 0.05], "clinical", Tier.UNCERTAIN, "clinical_photo"),
        ([0.05, 0.90, 0.05], "dermoscopic", Tier.LOW, "most_likely"),
        ([0.05, 0.90, 0.05], None, Tier.LOW, "most_likely"),
        # Every other rule comes first and is unchanged.
        ([0.40, 0.50, 0.10], "clinical", Tier.HIGH, "above_threshold"),
        ([0.05, 0.10, 0.85], "clinical", Tier.MEDIUM, "most_likely"),
        ([0.27, 0.63, 0.10], "clinical", Tier.UNCERTAIN, "near_threshold"),
    ],
)
def test_an_ordinary_photo_is_never_low(p: list[float], modality: str | None, tier: Tier, reason: str) -> None:
    decision = decide_tier(p, mel_threshold=T, modality=modality)
    assert (decision.tier, decision.reason) == (tier, reason)
