"""Temperature scaling and the OOD energy threshold: known temperatures, hand-computed energies and percentiles."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from ml.classification.calibration import (
    MatrixScaling,
    energy_scores,
    energy_threshold,
    fit_matrix_scaling,
    fit_temperature,
    nll,
    ood_operating_point,
    out_of_fold_temperature,
    percentile_flag,
    softmax,
)
from ml.classification.metrics import expected_calibration_error


def _toy_overconfident(n: int = 4000, scale: float = 3.0, seed: int = 0):
    """Labels drawn from softmax(z); the "model" reports scale * z, i.e. it is overconfident."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 1.5, (n, 3))
    p = softmax(z)
    y = np.array([rng.choice(3, p=row) for row in p])
    return z * scale, y


def test_softmax_rows_sum_to_one_and_temperature_flattens():
    logits = np.array([[2.0, 0.0, -1.0]])
    sharp = softmax(logits)
    flat = softmax(logits, temperature=4.0)
    np.testing.assert_allclose(sharp.sum(1), 1.0)
    assert flat[0, 0] < sharp[0, 0]


def test_softmax_refuses_non_positive_temperature():
    with pytest.raises(ValueError, match="> 0"):
        softmax(np.zeros((1, 3)), temperature=0.0)


def test_nll_matches_hand_value():
    # softmax([0, 0, 0]) = 1/3 each -> NLL log 3
    assert nll(np.zeros((2, 3)), np.array([0, 2])) == pytest.approx(np.log(3))


def test_fit_temperature_recovers_the_overconfidence_factor():
    logits, y = _toy_overconfident(scale=3.0)
    assert fit_temperature(logits, y) == pytest.approx(3.0, rel=0.1)


def test_temperature_scaling_lowers_ece_of_an_overconfident_model():
    logits, y = _toy_overconfident(scale=3.0)
    val, test = slice(0, 2000), slice(2000, 4000)
    t = fit_temperature(logits[val], y[val])
    before = expected_calibration_error(softmax(logits[test]), y[test])
    after = expected_calibration_error(softmax(logits[test], t), y[test])
    assert before > 0.08
    assert after < before / 2


def test_temperature_scaling_does_not_change_predicted_class():
    logits, _ = _toy_overconfident(n=200)
    np.testing.assert_array_equal(softmax(logits).argmax(1), softmax(logits, 2.7).argmax(1))


def _toy_skewed(n: int = 4000, seed: int = 1):
    """Labels drawn from softmax(z); the "model" shifts the classes' logits (as a model trained on other class
    frequencies would): no temperature can undo that, a 3x3 matrix and 3 biases can."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 1.5, (n, 3))
    y = np.array([rng.choice(3, p=row) for row in softmax(z)])
    return z + np.array([2.0, 0.0, -2.0]), y


def test_matrix_scaling_fixes_a_per_class_miscalibration_that_temperature_cannot():
    logits, y = _toy_skewed()
    val, test = slice(0, 2000), slice(2000, 4000)
    scaling, fit = fit_matrix_scaling(logits[val], y[val], np.arange(2000), strengths=(0.1, 1.0, 10.0))
    t = fit_temperature(logits[val], y[val])
    with_temperature = expected_calibration_error(softmax(logits[test], t), y[test])
    with_matrix = expected_calibration_error(scaling.probabilities(logits[test]), y[test])
    assert with_temperature > 0.08
    assert with_matrix < with_temperature / 2
    # The out-of-fold answers over the fitting photos tell the same story without the held-out half.
    oof_temperature = out_of_fold_temperature(logits[val], y[val], np.arange(2000))
    assert expected_calibration_error(oof_temperature, y[val]) > 0.08
    assert expected_calibration_error(fit["oof_probabilities"], y[val]) < with_temperature / 2
    assert fit["C"] in fit["oof_log_loss"] and fit["oof_log_loss"][fit["C"]] == min(fit["oof_log_loss"].values())
    np.testing.assert_allclose(scaling.probabilities(logits[test]).sum(1), 1.0)


def test_matrix_scaling_out_of_fold_answers_keep_a_group_out_of_its_own_fit():
    """Two groups whose photos have the same logits but opposite labels: a fit that saw a group's own photos
    would learn its label; grouped folds cannot, so each group's out-of-fold answer is the other's label."""
    logits = np.repeat(np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [5.0, 0.0, 0.0]]), [50, 50, 50], axis=0)
    spread = np.linspace(-1, 1, 100)
    logits[:50, 1], logits[50:100, 1] = spread[0::2], spread[1::2]  # the two groups interleave: indistinguishable
    y = np.repeat([1, 2, 0], 50)
    groups = np.repeat(["a", "b", "c"], 50)
    _, fit = fit_matrix_scaling(logits, y, groups, folds=3)
    oof = fit["oof_probabilities"]
    # Group a (label 1) is judged by a fit on b (label 2) and c; folds that mixed a group's photos would give
    # about one half to each label.
    assert oof[:50, 2].mean() > 0.7
    assert oof[50:100, 1].mean() > 0.7


def test_matrix_scaling_round_trips_through_its_card_entry():
    scaling = MatrixScaling(np.array([[2.0, 0.1, 0.0], [0.0, 1.0, 0.0], [0.3, 0.0, 0.5]]), np.array([0.5, 0.0, -0.5]))
    entry = scaling.to_card(C=0.3)
    assert (entry["method"], entry["C"]) == ("matrix_scaling", 0.3)
    again = MatrixScaling.from_card(json.loads(json.dumps(entry)))
    logits = np.array([[1.0, -2.0, 0.5], [0.0, 0.0, 0.0]])
    np.testing.assert_allclose(again.probabilities(logits), scaling.probabilities(logits))
    np.testing.assert_allclose(scaling.probabilities(logits[1:]), softmax(np.array([[0.5, 0.0, -0.5]])))


@pytest.mark.parametrize(
    "entry, match",
    [
        ({"method": "isotonic"}, "unknown calibration method"),
        ({"method": "matrix_scaling", "weight": [[1.0]]}, "malformed"),
        ({"method": "matrix_scaling", "weight": [[1.0, 0.0]], "bias": [0.0, 0.0]}, "KxK"),
        ({"method": "matrix_scaling", "weight": [[1.0, 0.0], [0.0, float("nan")]], "bias": [0.0, 0.0]}, "finite"),
    ],
)
def test_matrix_scaling_refuses_another_method_and_malformed_entries(entry, match):
    with pytest.raises(ValueError, match=match):
        MatrixScaling.from_card(entry)


def test_fit_matrix_scaling_refuses_a_missing_class_and_mismatched_inputs():
    logits = np.zeros((10, 3))
    with pytest.raises(ValueError, match="every one of the 3 classes"):
        fit_matrix_scaling(logits, np.array([0, 1] * 5), np.arange(10))
    with pytest.raises(ValueError, match="groups"):
        fit_matrix_scaling(logits, np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 0]), np.arange(9))
    with pytest.raises(ValueError, match="at least two lesions"):
        fit_matrix_scaling(logits, np.array([0, 1, 2, 0, 1, 2, 0, 1, 2, 0]), np.zeros(10))


def test_fit_temperature_refuses_mismatched_inputs():
    with pytest.raises(ValueError, match="logits"):
        fit_temperature(np.zeros((3, 3)), np.zeros(2, dtype=int))


# ---- OOD energy threshold ---------------------------------------------------------------------------


def _with_energies(energies) -> np.ndarray:
    """3-class logits whose energy -logsumexp is exactly each given value: every logit -e - log 3."""
    e = np.asarray(energies, dtype=np.float64)
    return np.repeat((-e - np.log(3))[:, None], 3, axis=1)


def test_energy_is_minus_logsumexp_of_the_raw_logits():
    logits = np.array([[0.0, 0.0, 0.0], [1.0, 2.0, 3.0], [1000.0, 0.0, -1000.0]])
    np.testing.assert_allclose(
        energy_scores(logits), [-np.log(3), -np.log(np.e + np.e**2 + np.e**3), -1000.0], rtol=1e-12
    )


def test_energy_threshold_hand_values():
    energies = np.arange(1.0, 201.0)  # 1, 2, ..., 200
    logits = _with_energies(energies)
    # inverted CDF: the k-th smallest with k = ceil(p/100 * n); n = 200 -> k = 199 at 99.5, 198 at 99
    assert energy_threshold(logits, 99.5) == pytest.approx(199.0)
    assert energy_threshold(logits, 99.0) == pytest.approx(198.0)
    assert energy_threshold(logits, 50.0) == pytest.approx(100.0)
    assert energy_threshold(logits, 100.0) == pytest.approx(200.0)
    # Ten photos cannot resolve 0.5 %: the threshold is their maximum, none refused
    # (linear interpolation would give 9.955 and refuse one photo in ten).
    assert energy_threshold(_with_energies(np.arange(1.0, 11.0)), 99.5) == pytest.approx(10.0)


def test_energy_threshold_ignores_the_temperature_and_the_order_of_photos():
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 3, (500, 3))
    assert energy_threshold(logits[::-1]) == energy_threshold(logits)
    # Same value as the energy of one of the photos (an observed energy, not an interpolation).
    assert energy_threshold(logits) in set(energy_scores(logits).tolist())


@pytest.mark.parametrize("n", [7, 100, 199, 200, 1001])
@pytest.mark.parametrize("percentile", [90.0, 99.0, 99.5])
def test_energy_threshold_never_refuses_more_held_out_photos_than_promised(n: int, percentile: float):
    logits = np.random.default_rng(n).normal(0, 2, (n, 3))
    refused = (energy_scores(logits) > energy_threshold(logits, percentile)).mean()
    assert refused <= (100 - percentile) / 100 + 1e-12
    assert refused > (100 - percentile) / 100 - 1 / n  # and not needlessly fewer


def test_ood_operating_point_records_threshold_percentile_count_and_refused_share():
    op = ood_operating_point(_with_energies(np.arange(1.0, 201.0)), 99.5)
    assert op == {
        "ood_energy_threshold": pytest.approx(199.0),
        "ood_percentile": 99.5,
        "ood_val_images": 200,
        "ood_val_refused": pytest.approx(0.005),
    }


@pytest.mark.parametrize("percentile", [0.0, -1.0, 100.5])
def test_energy_threshold_refuses_a_percentile_outside_0_100(percentile: float):
    with pytest.raises(ValueError, match=r"in \(0, 100\]"):
        energy_threshold(np.zeros((3, 3)), percentile)


def test_energy_threshold_refuses_no_logits_and_broken_logits():
    with pytest.raises(ValueError, match="no validation logits"):
        energy_threshold(np.zeros((0, 3)))
    with pytest.raises(ValueError, match="NaN"):
        energy_threshold(np.array([[np.nan, 0.0, 0.0]]))
    with pytest.raises(ValueError, match=r"\(N, classes\)"):
        energy_scores(np.zeros(3))


def test_percentile_flag_accepts_0_to_100_and_explains_the_rest():
    assert percentile_flag("99.5") == 99.5
    assert percentile_flag("0") == 0.0
    with pytest.raises(argparse.ArgumentTypeError, match="outside"):
        percentile_flag("101")
    with pytest.raises(argparse.ArgumentTypeError, match="not a number"):
        percentile_flag("high")
