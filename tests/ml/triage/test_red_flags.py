"""The patient's answers on the weighted 7-point checklist (NICE NG12) and their effect on the tier."""

from __future__ import annotations

import pytest

from ml.triage.red_flags import (
    QUESTIONS,
    REASON_ACRAL,
    REASON_CHANGING,
    REASON_CHECKLIST,
    REASON_OUT_OF_SCOPE,
    UNMAPPED,
    answered_tier,
    check_answer,
    score_checklist,
)


@pytest.mark.parametrize(
    ("answers", "points"),
    [
        ({}, 0),
        ({"change": "no", "symptoms": "none"}, 0),
        ({"change": "unknown", "symptoms": "skip"}, 0),
        ({"change": "size"}, 2),  # a major feature alone is below the line
        ({"change": "shape", "symptoms": "itches"}, 3),  # major + minor: urgent
        ({"change": "colour", "symptoms": "bleeds"}, 3),
        ({"symptoms": "itches_and_more"}, 2),  # itch + oozing/crusting
        ({"change": "several"}, 4),  # two or more major features
        ({"change": "several", "symptoms": "itches_and_more"}, 6),
        ({"site": "face", "age": "adult", "change": "no"}, 0),
    ],
)
def test_checklist_points(answers: dict[str, str], points: int) -> None:
    assert score_checklist(answers).points == points
    assert score_checklist(answers).urgent == (points >= 3)


def test_bleeding_and_crusting_are_one_item_and_unasked_items_are_named() -> None:
    # "bleeds" and "crusts" are both the checklist's oozing or crusting: counted once.
    assert score_checklist({"symptoms": "bleeds"}).items == {"oozing": 1}
    assert score_checklist({"symptoms": "crusts"}).items == {"oozing": 1}
    assert set(UNMAPPED) == {"diameter_7mm", "inflammation"}


def test_red_flags_make_any_tier_high_and_name_the_answers() -> None:
    answers = {"site": "other", "change": "size", "symptoms": "itches", "age": "adult"}
    for tier in ("LOW", "MEDIUM", "UNCERTAIN", "RETAKE", None):
        result = answered_tier(tier, answers)
        assert result.tier == "HIGH" and result.reason == REASON_CHECKLIST
        assert result.raised_by == ("change:size", "symptoms:itches")
    high = answered_tier("HIGH", answers)
    assert high.tier == "HIGH" and not high.raised and high.reason is None


@pytest.mark.parametrize(
    ("answers", "scope"),
    [({"age": "child"}, "child"), ({"site": "nail"}, "nail"), ({"site": "mouth_genitals"}, "mouth_genitals")],
)
def test_out_of_scope_goes_to_a_doctor_with_the_reason(answers: dict[str, str], scope: str) -> None:
    for tier in ("LOW", "MEDIUM", "RETAKE", None):
        result = answered_tier(tier, answers)
        assert result.tier == "UNCERTAIN" and result.reason == REASON_OUT_OF_SCOPE
        assert result.scope == (scope,) and result.raised
    # Never softened: HIGH and UNCERTAIN (near the melanoma line, say) stay, the reason is still known.
    for tier in ("HIGH", "UNCERTAIN"):
        result = answered_tier(tier, answers)
        assert result.tier == tier and not result.raised and result.scope == (scope,)


def test_palm_or_sole_is_never_low_but_keeps_a_more_urgent_tier() -> None:
    low = answered_tier("LOW", {"site": "palm_sole"})
    assert (low.tier, low.reason, low.raised_by) == ("UNCERTAIN", REASON_ACRAL, ("site:palm_sole",))
    assert low.scope == ("acral",)
    for tier in ("HIGH", "UNCERTAIN", "MEDIUM"):
        assert answered_tier(tier, {"site": "palm_sole"}).tier == tier
    # A photo that could not be judged stays a retake: the patient sends a better photo.
    assert answered_tier("RETAKE", {"site": "palm_sole"}).tier == "RETAKE"


def test_a_change_below_the_line_is_never_called_a_common_mole() -> None:
    result = answered_tier("LOW", {"change": "colour"})
    assert (result.tier, result.reason, result.raised_by) == ("UNCERTAIN", REASON_CHANGING, ("change:colour",))
    assert answered_tier("MEDIUM", {"change": "colour"}).tier == "MEDIUM"
    assert not answered_tier("LOW", {"change": "no", "symptoms": "none", "site": "face", "age": "adult"}).raised


def test_skipped_or_missing_answers_change_nothing() -> None:
    for tier in ("HIGH", "UNCERTAIN", "MEDIUM", "LOW", "RETAKE", None):
        assert answered_tier(tier, {q: "skip" for q in QUESTIONS}).tier == tier
        assert answered_tier(tier, None).tier == tier


def test_forged_answers_are_refused_with_the_options() -> None:
    check_answer("site", "nail")
    check_answer("age", "skip")
    with pytest.raises(ValueError, match="use one of"):
        check_answer("site", "elbow")
    with pytest.raises(ValueError, match="unknown question"):
        check_answer("weight", "80")
    # Unknown stored values (an older version's options) count for nothing rather than fail.
    assert answered_tier("LOW", {"site": "elbow", "change": "huge"}).tier == "LOW"
