"""Classification metrics in LABELS order: confusion, per-class P/R/F1, AUC, ECE and the melanoma operating point."""

from __future__ import annotations

from typing import Any

import numpy as np

from skintriage.vocabulary import LABELS, MEL_INDEX, Label

# Class prevalence of the full HAM10000 dataset (the sample over-represents MEL and OTHER);
# accuracy reweighted to it is comparable with the reference study's accuracy.
# Melanoma sensitivity every operating point and report is measured against.
SENSITIVITY_TARGET = 0.9

FULL_HAM10000_PREVALENCE: dict[str, float] = {Label.MEL: 0.111, Label.NV: 0.670, Label.OTHER: 0.219}


def _labels_array(y_true: np.ndarray | list[int], n_classes: int) -> np.ndarray:
    """Integer labels as an array, checked against the number of classes."""
    y = np.asarray(y_true, dtype=np.int64)
    if y.ndim != 1:
        raise ValueError(f"labels must be 1-D class indices, got shape {y.shape}")
    if y.size and (y.min() < 0 or y.max() >= n_classes):
        raise ValueError(f"labels must lie in [0, {n_classes - 1}], got {y.min()}..{y.max()}")
    return y


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int = len(LABELS)) -> np.ndarray:
    """Counts with rows = true class and columns = predicted class (every class, even an absent one)."""
    from sklearn import metrics

    t = _labels_array(y_true, n_classes)
    p = _labels_array(y_pred, n_classes)
    if t.shape != p.shape:
        raise ValueError(f"y_true has {t.size} labels but y_pred has {p.size}")
    return metrics.confusion_matrix(t, p, labels=np.arange(n_classes)).astype(np.int64)


def _expand(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The (true, predicted) label pairs a confusion matrix counts, for sklearn's label-based metrics."""
    n = cm.shape[0]
    pairs = np.repeat(np.arange(n * n), cm.ravel())
    return pairs // n, pairs % n


def per_class_prf(cm: np.ndarray) -> dict[str, np.ndarray]:
    """Precision, recall, F1 and support per class from a confusion matrix (0 where undefined)."""
    from sklearn.metrics import precision_recall_fscore_support

    t, p = _expand(cm)
    precision, recall, f1, support = precision_recall_fscore_support(
        t, p, labels=np.arange(cm.shape[0]), zero_division=0
    )
    return {
        "precision": precision.astype(np.float64),
        "recall": recall.astype(np.float64),
        "f1": f1.astype(np.float64),
        "support": support.astype(np.float64),
    }


def balanced_accuracy(cm: np.ndarray) -> float:
    """Mean recall over the classes that occur."""
    from sklearn.metrics import balanced_accuracy_score

    if not cm.sum():
        raise ValueError("confusion matrix is empty; balanced accuracy needs at least one sample")
    t, p = _expand(cm)
    return float(balanced_accuracy_score(t, p))


def binary_roc_auc(y_binary: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC (ties count one half); NaN where only one class occurs (sklearn would raise)."""
    from sklearn.metrics import roc_auc_score

    y = np.asarray(y_binary).astype(bool)
    if y.all() or not y.any():
        return float("nan")
    return float(roc_auc_score(y, np.asarray(scores, dtype=np.float64)))


def roc_points(y_binary: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """False-positive rate, true-positive rate and thresholds of the ROC curve (descending thresholds)."""
    from sklearn.metrics import roc_curve

    fpr, tpr, thresholds = roc_curve(np.asarray(y_binary).astype(int), np.asarray(scores, dtype=np.float64))
    return fpr, tpr, thresholds


def sensitivity_specificity(y_binary: np.ndarray, scores: np.ndarray, threshold: float) -> tuple[float, float]:
    """Sensitivity and specificity of the rule score >= threshold."""
    y = np.asarray(y_binary).astype(bool)
    flagged = np.asarray(scores, dtype=np.float64) >= threshold
    sens = float((flagged & y).sum() / y.sum()) if y.any() else float("nan")
    spec = float((~flagged & ~y).sum() / (~y).sum()) if (~y).any() else float("nan")
    return sens, spec


def threshold_for_sensitivity(y_binary: np.ndarray, scores: np.ndarray, target: float = 0.9) -> float:
    """The highest threshold whose rule score >= threshold reaches the target sensitivity.

    The highest such threshold gives the best specificity at that sensitivity.
    """
    if not 0 < target <= 1:
        raise ValueError(f"target sensitivity {target} must be in (0, 1]")
    y = np.asarray(y_binary).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    if not y.any():
        raise ValueError("no positive (melanoma) samples to choose a threshold on; use a larger validation split")
    pos = np.sort(s[y])[::-1]
    # Flagging the k highest-scoring positives needs threshold <= the k-th score.
    k = int(np.ceil(target * len(pos) - 1e-9))
    return float(pos[max(k, 1) - 1])


def threshold_for_sensitivity_bound(
    y_binary: np.ndarray,
    scores: np.ndarray,
    groups: np.ndarray,
    *,
    target: float = 0.9,
    confidence: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
) -> dict[str, float]:
    """The highest threshold whose lower confidence bound of sensitivity reaches the target.

    A threshold chosen for a point estimate of 0.90 on a few hundred melanomas falls below 0.90 on new data
    about half the time. Here the melanoma *groups* (lesions: one lesion's photos are not independent) are
    resampled with replacement `n_boot` times; the bound is the (1 - confidence) quantile of the resampled
    sensitivities, and the threshold is the highest at which that bound still reaches the target.
    """
    if not 0 < target <= 1 or not 0 < confidence < 1:
        raise ValueError(f"target {target} must be in (0, 1] and confidence {confidence} in (0, 1)")
    y = np.asarray(y_binary).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    g = np.asarray(groups)
    if not y.any():
        raise ValueError("no positive (melanoma) samples to choose a threshold on; use a larger validation split")
    pos, pos_groups = s[y], g[y]
    _, inverse = np.unique(pos_groups, return_inverse=True)
    n_groups = int(inverse.max()) + 1
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n_groups, size=(n_boot, n_groups))
    group_weights = np.stack([np.bincount(row, minlength=n_groups) for row in draws]).astype(np.float64)
    weights = group_weights[:, inverse]  # (n_boot, positives): how often each photo is drawn
    totals = weights.sum(1)
    chosen = float(pos.min())
    bound = point = 1.0
    for threshold in np.unique(pos)[::-1]:  # highest first: the first that reaches the target is the best
        detected = (pos >= threshold).astype(np.float64)
        lower = float(np.quantile(weights @ detected / totals, 1 - confidence))
        if lower >= target:
            chosen, bound, point = float(threshold), lower, float(detected.mean())
            break
    return {
        "threshold": chosen,
        "sensitivity": point,
        "sensitivity_lower_bound": bound,
        "confidence": confidence,
        "n_boot": n_boot,
        "n_positive_groups": n_groups,
    }


def expected_calibration_error(probs: np.ndarray, y_true: np.ndarray, n_bins: int = 15) -> float:
    """Top-label ECE: bin by confidence (equal-width bins), weight |accuracy - confidence| by bin size."""
    bins = reliability_bins(probs, y_true, n_bins=n_bins)
    total = bins["count"].sum()
    gaps = np.abs(bins["accuracy"] - bins["confidence"]) * bins["count"]
    return float(gaps.sum() / total)


def reliability_bins(probs: np.ndarray, y_true: np.ndarray, n_bins: int = 15) -> dict[str, np.ndarray]:
    """Per-bin count, mean confidence and accuracy of the top-label prediction."""
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2:
        raise ValueError(f"probabilities must be (N, classes), got shape {p.shape}")
    y = _labels_array(y_true, p.shape[1])
    if len(y) != len(p) or len(y) == 0:
        raise ValueError(f"need one label per probability row, got {len(y)} labels for {len(p)} rows")
    confidence = p.max(axis=1)
    correct = (p.argmax(axis=1) == y).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # Bins are (lo, hi]; confidence is never 0 for a top label, so the first bin starts open.
    index = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, n_bins - 1)
    count = np.bincount(index, minlength=n_bins).astype(np.float64)
    conf_sum = np.bincount(index, weights=confidence, minlength=n_bins)
    acc_sum = np.bincount(index, weights=correct, minlength=n_bins)
    nonzero = count > 0
    return {
        "edges": edges,
        "count": count,
        "confidence": np.divide(conf_sum, count, out=np.zeros(n_bins), where=nonzero),
        "accuracy": np.divide(acc_sum, count, out=np.zeros(n_bins), where=nonzero),
    }


def reweighted_accuracy(recall: np.ndarray, prevalence: dict[str, float] = FULL_HAM10000_PREVALENCE) -> float:
    """Accuracy expected at another class prevalence: sum over classes of prevalence x recall."""
    weights = np.array([prevalence[label] for label in LABELS], dtype=np.float64)
    return float((weights / weights.sum() * np.asarray(recall, dtype=np.float64)).sum())


def summarize(probs: np.ndarray, y_true: np.ndarray, *, mel_threshold: float | None = None) -> dict[str, Any]:
    """All headline metrics for (N, 3) probabilities in LABELS order, as plain JSON-able values."""
    p = np.asarray(probs, dtype=np.float64)
    y = _labels_array(y_true, len(LABELS))
    if p.shape != (len(y), len(LABELS)):
        raise ValueError(f"probabilities must have shape ({len(y)}, {len(LABELS)}), got {p.shape}")
    pred = p.argmax(axis=1)
    cm = confusion_matrix(y, pred)
    prf = per_class_prf(cm)
    aucs = {label: binary_roc_auc(y == i, p[:, i]) for i, label in enumerate(LABELS)}
    is_mel = y == MEL_INDEX
    out: dict[str, Any] = {
        "n": int(len(y)),
        "accuracy": float((pred == y).mean()),
        "balanced_accuracy": balanced_accuracy(cm),
        "accuracy_full_prevalence": reweighted_accuracy(prf["recall"]),
        "per_class": {
            label: {k: float(prf[k][i]) for k in ("precision", "recall", "f1", "support")}
            for i, label in enumerate(LABELS)
        },
        "mel_auc": aucs[Label.MEL],
        "macro_auc": float(np.nanmean(list(aucs.values()))),
        "auc": aucs,
        "confusion_matrix": cm.tolist(),
        "ece": expected_calibration_error(p, y),
        "nll": float(-np.mean(np.log(np.clip(p[np.arange(len(y)), y], 1e-12, None)))),
    }
    if is_mel.any() and (~is_mel).any():
        # The target metric: the best specificity among thresholds that keep sensitivity >= 0.90.
        at = threshold_for_sensitivity(is_mel, p[:, MEL_INDEX], SENSITIVITY_TARGET)
        sens_at, spec_at = sensitivity_specificity(is_mel, p[:, MEL_INDEX], at)
        out["mel_spec_at_sens"] = {
            "target": SENSITIVITY_TARGET,
            "threshold": at,
            "sensitivity": sens_at,
            "specificity": spec_at,
        }
    if mel_threshold is not None:
        sens, spec = sensitivity_specificity(is_mel, p[:, MEL_INDEX], mel_threshold)
        out["operating_point"] = {"mel_threshold": float(mel_threshold), "sensitivity": sens, "specificity": spec}
    return out
