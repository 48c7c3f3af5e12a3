"""Classification metrics against values computed by hand."""

from __future__ import annotations

import numpy as np
import pytest

from ml.classification.metrics import (
    balanced_accuracy,
    binary_roc_auc,
    confusion_matrix,
    expected_calibration_error,
    per_class_prf,
    reliability_bins,
    reweighted_accuracy,
    sensitivity_specificity,
    summarize,
    threshold_for_sensitivity,
)
from skintriage.vocabulary import LABELS

Y_TRUE = np.array([0, 0, 0, 1, 1, 1, 1, 2, 2, 2])
Y_PRED = np.array([0, 0, 1, 1, 1, 1, 2, 2, 2, 0])


def test_confusion_matrix_counts_rows_true_columns_predicted():
    cm = confusion_matrix(Y_TRUE, Y_PRED)
    assert cm.tolist() == [[2, 1, 0], [0, 3, 1], [1, 0, 2]]


def test_per_class_precision_recall_f1_match_hand_values():
    prf = per_class_prf(confusion_matrix(Y_TRUE, Y_PRED))
    # MEL: tp 2, predicted 3, support 3 -> P 2/3, R 2/3, F1 2/3
    # NV: tp 3, predicted 4, support 4 -> P 3/4, R 3/4
    # OTHER: tp 2, predicted 3, support 3 -> P 2/3, R 2/3
    np.testing.assert_allclose(prf["precision"], [2 / 3, 3 / 4, 2 / 3])
    np.testing.assert_allclose(prf["recall"], [2 / 3, 3 / 4, 2 / 3])
    np.testing.assert_allclose(prf["f1"], [2 / 3, 3 / 4, 2 / 3])
    np.testing.assert_allclose(prf["support"], [3, 4, 3])


def test_f1_is_harmonic_mean_when_precision_and_recall_differ():
    # MEL: 1 of 2 true found (R 0.5), 1 of 1 predicted right (P 1) -> F1 2/3
    prf = per_class_prf(confusion_matrix([0, 0, 1], [0, 1, 1]))
    assert prf["precision"][0] == pytest.approx(1.0)
    assert prf["recall"][0] == pytest.approx(0.5)
    assert prf["f1"][0] == pytest.approx(2 / 3)


def test_balanced_accuracy_is_mean_recall():
    assert balanced_accuracy(confusion_matrix(Y_TRUE, Y_PRED)) == pytest.approx((2 / 3 + 3 / 4 + 2 / 3) / 3)


def test_roc_auc_counts_ties_as_half():
    # Positive/negative pairs: (0.9, 0.1) win, (0.9, 0.4) win, (0.4, 0.1) win, (0.4, 0.4) tie -> 3.5 / 4
    assert binary_roc_auc([1, 0, 1, 0], [0.9, 0.1, 0.4, 0.4]) == pytest.approx(0.875)


def test_roc_auc_matches_sklearn_on_random_scores():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    s = np.round(rng.random(200) + 0.3 * y, 2)  # rounding creates ties
    assert binary_roc_auc(y, s) == pytest.approx(roc_auc_score(y, s))


def test_roc_auc_is_nan_without_both_classes():
    assert np.isnan(binary_roc_auc([1, 1], [0.2, 0.3]))


def test_ece_matches_hand_computed_value():
    # Two bins used (of 10): confidences 0.9 (2 samples, 1 correct) and 0.6 (2 samples, 2 correct).
    probs = np.array([[0.9, 0.05, 0.05], [0.9, 0.05, 0.05], [0.2, 0.6, 0.2], [0.2, 0.6, 0.2]])
    y = np.array([0, 1, 1, 1])
    # |0.5 - 0.9| * 2/4 + |1.0 - 0.6| * 2/4 = 0.2 + 0.2
    assert expected_calibration_error(probs, y, n_bins=10) == pytest.approx(0.4)


def test_ece_is_zero_when_confidence_equals_accuracy():
    probs = np.array([[0.5, 0.3, 0.2]] * 4)
    y = np.array([0, 0, 1, 2])
    assert expected_calibration_error(probs, y, n_bins=10) == pytest.approx(0.0)


def test_reliability_bins_put_confidence_on_upper_edge_in_lower_bin():
    bins = reliability_bins(np.array([[0.6, 0.4, 0.0], [1.0, 0.0, 0.0]]), np.array([0, 0]), n_bins=5)
    # 0.6 falls in (0.4, 0.6], 1.0 in (0.8, 1.0]
    assert bins["count"].tolist() == [0, 0, 1, 0, 1]


def test_threshold_search_reaches_target_with_best_specificity():
    pos = np.array([0.95, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1])
    neg = np.array([0.05, 0.15, 0.25, 0.35, 0.45])
    scores = np.concatenate([pos, neg])
    y = np.concatenate([np.ones(10), np.zeros(5)])
    threshold = threshold_for_sensitivity(y, scores, 0.9)
    assert threshold == pytest.approx(0.2)  # the 9th highest positive
    sens, spec = sensitivity_specificity(y, scores, threshold)
    assert sens == pytest.approx(0.9)
    assert spec == pytest.approx(2 / 5)  # 0.05 and 0.15 stay below
    higher_sens, _ = sensitivity_specificity(y, scores, np.nextafter(threshold, 1.0))
    assert higher_sens < 0.9


def test_threshold_search_rounds_target_up_to_whole_positives():
    # 3 positives, target 0.9 -> all 3 must be flagged
    assert threshold_for_sensitivity([1, 1, 1, 0], [0.9, 0.5, 0.3, 0.1], 0.9) == pytest.approx(0.3)


def test_threshold_search_refuses_split_without_melanoma():
    with pytest.raises(ValueError, match="no positive"):
        threshold_for_sensitivity([0, 0], [0.1, 0.2], 0.9)


def test_reweighted_accuracy_uses_full_prevalence_in_label_order():
    # recall MEL 1, NV 0, OTHER 0 -> full-dataset MEL prevalence 0.111
    assert reweighted_accuracy(np.array([1.0, 0.0, 0.0])) == pytest.approx(0.111)
    assert reweighted_accuracy(np.array([0.0, 1.0, 0.0])) == pytest.approx(0.670)


def test_summarize_reports_per_class_in_labels_order():
    probs = np.array([[0.8, 0.1, 0.1], [0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8]])
    y = np.array([0, 0, 1, 2])
    out = summarize(probs, y, mel_threshold=0.75)
    assert list(out["per_class"]) == list(LABELS)
    assert out["per_class"]["MEL"]["support"] == 2
    assert out["accuracy"] == pytest.approx(1.0)
    assert out["operating_point"]["sensitivity"] == pytest.approx(0.5)  # only 0.8 >= 0.75
    assert out["operating_point"]["specificity"] == pytest.approx(1.0)
    assert out["mel_auc"] == pytest.approx(1.0)


def test_summarize_refuses_wrong_number_of_columns():
    with pytest.raises(ValueError, match="shape"):
        summarize(np.array([[0.5, 0.5]]), np.array([0]))


def test_threshold_with_a_sensitivity_bound_keeps_a_margin() -> None:
    from ml.classification.metrics import threshold_for_sensitivity, threshold_for_sensitivity_bound

    rng = np.random.default_rng(0)
    y = np.r_[np.ones(120, bool), np.zeros(600, bool)]
    scores = np.r_[rng.beta(5, 2, 120), rng.beta(2, 5, 600)]
    groups = np.r_[np.arange(120) // 2, 1000 + np.arange(600)]  # two photos per melanoma lesion
    point = threshold_for_sensitivity(y, scores, 0.9)
    bounded = threshold_for_sensitivity_bound(y, scores, groups, target=0.9, confidence=0.95, n_boot=500)
    assert bounded["threshold"] < point  # the margin costs a lower threshold
    assert bounded["sensitivity_lower_bound"] >= 0.9
    assert bounded["sensitivity"] >= (scores[y] >= point).mean()
    assert bounded["n_positive_groups"] == 60
    # The bound is a real lower bound: a higher threshold would have missed the target.
    higher = np.unique(scores[y])[np.unique(scores[y]) > bounded["threshold"]].min()
    assert (scores[y] >= higher).mean() < 1.0
    with pytest.raises(ValueError, match="no positive"):
        threshold_for_sensitivity_bound(np.zeros(5, bool), np.zeros(5), np.arange(5))


def test_summarize_reports_specificity_at_the_target_sensitivity():
    # Ten melanomas scored 0.1..1.0 and ten others 0.05..0.95: keeping 9 of 10 melanomas needs threshold 0.2,
    # which flags the eight others scored 0.25..0.95 as well.
    mel = np.linspace(0.1, 1.0, 10)
    other = np.linspace(0.05, 0.95, 10)
    p_mel = np.r_[mel, other]
    probs = np.c_[p_mel, (1 - p_mel) / 2, (1 - p_mel) / 2]
    y = np.r_[np.zeros(10, int), np.ones(10, int)]
    at = summarize(probs, y)["mel_spec_at_sens"]
    assert at["threshold"] == pytest.approx(0.2)
    assert at["sensitivity"] == pytest.approx(0.9)
    assert at["specificity"] == pytest.approx(0.2)  # only 0.05 and 0.15 fall below 0.2
