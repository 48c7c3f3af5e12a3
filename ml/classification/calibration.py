"""Calibration: temperature scaling (one scalar that divides the logits) or matrix scaling (a multinomial
logistic regression on the logits, Guo et al. 2017), both fitted on validation; and the energy OOD check."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

import numpy as np

# Search range for log(T): T in [0.05, 20] covers every network we have seen; a fit at the
# edge means the logits are degenerate and is reported, not silently accepted.
_LOG_T_BOUNDS = (float(np.log(0.05)), float(np.log(20.0)))


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of logits / temperature, numerically stable."""
    if temperature <= 0:
        raise ValueError(f"temperature {temperature} must be > 0")
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def nll(logits: np.ndarray, y_true: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of the true classes under softmax(logits / temperature)."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    log_probs = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    y = np.asarray(y_true, dtype=np.int64)
    return float(-log_probs[np.arange(len(y)), y].mean())


def fit_temperature(logits: np.ndarray, y_true: np.ndarray) -> float:
    """The temperature minimising validation NLL (bounded 1-D search over log T)."""
    from scipy.optimize import minimize_scalar

    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(y_true, dtype=np.int64)
    if z.ndim != 2 or len(z) != len(y) or len(y) == 0:
        raise ValueError(f"need (N, classes) logits and N labels, got {z.shape} and {y.shape}")
    result = minimize_scalar(
        lambda log_t: nll(z, y, float(np.exp(log_t))),
        bounds=_LOG_T_BOUNDS,
        method="bounded",
        options={"xatol": 1e-4},
    )
    return float(np.exp(result.x))


# ---- matrix scaling: softmax(W z + b) on the raw logits z ----------------------------------------------------

MATRIX_SCALING = "matrix_scaling"
# Inverse L2 strengths tried by the grouped cross-validation (scikit-learn's C); small C pulls W towards 0.
MATRIX_SCALING_STRENGTHS = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)


@dataclass(frozen=True)
class MatrixScaling:
    """Calibrated probabilities softmax(W z + b) of the raw logits z: a K x K weight and K biases.

    More freedom than one temperature (it can move one class's probabilities without the others'), fitted
    as an L2-regularised multinomial logistic regression whose strength is chosen by lesion-grouped
    cross-validation, so that 12 parameters for 3 classes do not overfit a few hundred validation photos.
    """

    weight: np.ndarray
    bias: np.ndarray

    def __post_init__(self) -> None:
        k = self.bias.shape[0] if self.bias.ndim == 1 else -1
        if self.weight.shape != (k, k) or not (np.isfinite(self.weight).all() and np.isfinite(self.bias).all()):
            raise ValueError(f"matrix scaling needs a finite KxK weight and K biases, got {self.weight.shape} "
                             f"and {self.bias.shape}")  # fmt: skip

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        """(N, K) calibrated probabilities of (N, K) raw logits."""
        z = np.asarray(logits, dtype=np.float64)
        if z.ndim != 2 or z.shape[1] != self.bias.shape[0]:
            raise ValueError(f"expected (N, {self.bias.shape[0]}) logits, got shape {z.shape}")
        return softmax(z @ self.weight.T + self.bias)

    def to_card(self, **facts: Any) -> dict[str, Any]:
        """The card's `calibration` entry: the method, its parameters and how it was fitted."""
        return {"method": MATRIX_SCALING, "weight": self.weight.tolist(), "bias": self.bias.tolist(), **facts}

    @classmethod
    def from_card(cls, entry: dict[str, Any]) -> MatrixScaling:
        """Read a card's `calibration` entry; ValueError when it is another method or malformed."""
        if entry.get("method") != MATRIX_SCALING:
            raise ValueError(f"unknown calibration method {entry.get('method')!r}; expected {MATRIX_SCALING!r}")
        try:
            return cls(np.asarray(entry["weight"], dtype=np.float64), np.asarray(entry["bias"], dtype=np.float64))
        except (KeyError, TypeError) as exc:
            raise ValueError(f"malformed matrix-scaling entry: {exc}") from exc


def fit_matrix_scaling(
    logits: np.ndarray,
    y_true: np.ndarray,
    groups: np.ndarray,
    *,
    strengths: tuple[float, ...] = MATRIX_SCALING_STRENGTHS,
    folds: int = 5,
    seed: int = 0,
) -> tuple[MatrixScaling, dict[str, Any]]:
    """Matrix scaling fitted on all the photos given, its strength chosen by grouped `folds`-fold log-loss.

    Returns the fitted scaling and what the choice rests on: the strength, the out-of-fold log-loss of
    each strength, and the out-of-fold probabilities of the chosen one (an honest estimate of how the
    calibration does on photos it was not fitted on: the photos of a group never straddle two folds).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss
    from sklearn.model_selection import GroupKFold

    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(y_true, dtype=np.int64)
    groups = np.asarray(groups)
    k = z.shape[1] if z.ndim == 2 else 0
    if z.ndim != 2 or len(z) != len(y) or len(y) != len(groups) or len(y) == 0:
        raise ValueError(f"need (N, classes) logits, N labels and N groups, got {z.shape}, {y.shape}, {groups.shape}")
    if len(np.unique(y)) != k:
        raise ValueError(f"every one of the {k} classes must occur among the photos to fit matrix scaling")
    folds = min(folds, len(np.unique(groups)))  # a small validation set: one group per fold at most
    if folds < 2:
        raise ValueError("matrix scaling needs photos of at least two lesions to choose its strength")
    splitter = GroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    losses: dict[float, float] = {}
    oofs: dict[float, np.ndarray] = {}
    for c in strengths:
        oof = oofs[c] = np.zeros((len(y), k))
        for train, held in splitter.split(z, y, groups):
            model = LogisticRegression(C=c, max_iter=5000).fit(z[train], y[train])
            oof[held] = _full_proba(model, z[held], k)
        losses[c] = float(log_loss(y, oof, labels=list(range(k))))
    chosen = min(losses, key=losses.__getitem__)
    model = LogisticRegression(C=chosen, max_iter=5000).fit(z, y)
    scaling = MatrixScaling(model.coef_.astype(np.float64), model.intercept_.astype(np.float64))
    return scaling, {"C": chosen, "folds": folds, "oof_log_loss": losses, "oof_probabilities": oofs[chosen]}


def out_of_fold_temperature(
    logits: np.ndarray, y_true: np.ndarray, groups: np.ndarray, *, folds: int = 5, seed: int = 0
) -> np.ndarray:
    """Probabilities of each photo under a temperature fitted without its group, on the folds matrix scaling
    uses (same `folds` and `seed`): the two calibrations compared on photos neither was fitted on."""
    from sklearn.model_selection import GroupKFold

    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(y_true, dtype=np.int64)
    folds = min(folds, len(np.unique(groups)))
    oof = np.zeros_like(z)
    for train, held in GroupKFold(n_splits=folds, shuffle=True, random_state=seed).split(z, y, groups):
        oof[held] = softmax(z[held], fit_temperature(z[train], y[train]))
    return oof


def _full_proba(model: Any, z: np.ndarray, k: int) -> np.ndarray:
    """predict_proba with a column for every class, also when a fold's training part lacked one."""
    out = np.zeros((len(z), k))
    out[:, model.classes_] = model.predict_proba(z)
    return out


# ---- out-of-distribution check: energy score against a validation percentile ------------------------

# Operating-point keys of the OOD check (the pipeline reads ood_energy_threshold); a new calibration
# replaces all of them, so no figure of an older threshold survives beside a new one.
OOD_KEYS = ("ood_energy_threshold", "ood_percentile", "ood_val_images", "ood_val_refused", "ood_test_refused")
DEFAULT_OOD_PERCENTILE = 99.5


def percentile_flag(text: str) -> float:
    """argparse type for --ood-percentile / --calibrate-ood: a number in [0, 100], 0 meaning no OOD check."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number; give a percentile such as 99.5") from None
    if not 0 <= value <= 100:
        raise argparse.ArgumentTypeError(f"{value:g} is outside [0, 100]; give e.g. 99.5, or 0 for no OOD check")
    return value


def energy_scores(logits: np.ndarray) -> np.ndarray:
    """Energy score -logsumexp(logits) per row (Liu et al. 2020); higher means less like the training data.

    Computed on the raw logits (temperature 1), as in the paper: temperature scaling is for the
    probabilities, and the pipeline and the calibration must use the same score.
    """
    z = np.asarray(logits, dtype=np.float64)
    if z.ndim != 2 or z.shape[1] == 0:
        raise ValueError(f"expected (N, classes) logits, got shape {z.shape}")
    zmax = z.max(axis=1)
    return -(zmax + np.log(np.exp(z - zmax[:, None]).sum(axis=1)))


def energy_threshold(logits: np.ndarray, percentile: float = DEFAULT_OOD_PERCENTILE) -> float:
    """The energy at `percentile` of held-out lesion photos: at most (100 - percentile) % of them score above it.

    Uses the inverted-CDF percentile (the smallest observed energy with at least `percentile` % of
    the photos at or below it), so the refusal rate on the calibration photos never exceeds the
    target; linear interpolation would refuse up to one photo more than promised.
    """
    if not 0 < percentile <= 100:
        raise ValueError(f"percentile {percentile} must be in (0, 100], e.g. 99.5 to refuse at most 0.5 %")
    energies = energy_scores(logits)
    if len(energies) == 0:
        raise ValueError("no validation logits; the OOD threshold needs held-out lesion photos")
    if not np.isfinite(energies).all():
        raise ValueError("validation logits contain NaN or infinity; the model's outputs are broken")
    return float(np.percentile(energies, percentile, method="inverted_cdf"))


def ood_operating_point(logits: np.ndarray, percentile: float = DEFAULT_OOD_PERCENTILE) -> dict[str, float | int]:
    """The operating-point entries for the OOD check (OOD_KEYS), calibrated on validation logits."""
    threshold = energy_threshold(logits, percentile)
    refused = float((energy_scores(logits) > threshold).mean())
    return {
        "ood_energy_threshold": threshold,
        "ood_percentile": float(percentile),
        "ood_val_images": int(len(logits)),
        "ood_val_refused": refused,
    }
