"""Temperature scaling: one scalar that divides the logits, fitted on validation by minimising the NLL."""

from __future__ import annotations

import argparse

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
