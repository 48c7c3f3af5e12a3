"""Temperature scaling: the fit recovers a known temperature and lowers ECE on a miscalibrated toy model."""

from __future__ import annotations

import numpy as np
import pytest

from ml.calibration import fit_temperature, nll, softmax
from ml.classification_metrics import expected_calibration_error


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


def test_fit_temperature_refuses_mismatched_inputs():
    with pytest.raises(ValueError, match="logits"):
        fit_temperature(np.zeros((3, 3)), np.zeros(2, dtype=int))
