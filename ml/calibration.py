"""Temperature scaling: one scalar that divides the logits, fitted on validation by minimising the NLL."""

from __future__ import annotations

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
