"""Segmentation metrics on numpy masks: IoU, Dice, ISIC 2018 thresholded Jaccard and their summaries."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

ISIC_JACCARD_FLOOR = 0.65
STUDY_THRESHOLDS = (0.4, 0.5)


def _pair(pred: np.ndarray, true: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both masks as bool arrays of the same shape, or a ValueError saying which shapes differ."""
    pred = np.asarray(pred).astype(bool)
    true = np.asarray(true).astype(bool)
    if pred.shape != true.shape:
        raise ValueError(
            f"prediction shape {pred.shape} differs from mask shape {true.shape}; "
            "upsample the prediction to the mask's size first"
        )
    return pred, true


def iou(pred: np.ndarray, true: np.ndarray) -> float:
    """Jaccard index of two binary masks; 1.0 when both are empty."""
    pred, true = _pair(pred, true)
    union = np.logical_or(pred, true).sum()
    if union == 0:
        return 1.0
    return float(np.logical_and(pred, true).sum() / union)


def dice(pred: np.ndarray, true: np.ndarray) -> float:
    """Dice coefficient of two binary masks; 1.0 when both are empty."""
    pred, true = _pair(pred, true)
    total = pred.sum() + true.sum()
    if total == 0:
        return 1.0
    return float(2 * np.logical_and(pred, true).sum() / total)


def thresholded_jaccard(ious: Iterable[float], floor: float = ISIC_JACCARD_FLOOR) -> float:
    """ISIC 2018 score: mean per-image IoU where an IoU below the floor counts as 0."""
    values = np.asarray(list(ious), dtype=np.float64)
    if values.size == 0:
        raise ValueError("no IoU values to average; evaluate at least one image")
    return float(np.where(values >= floor, values, 0.0).mean())


def per_image_scores(probability: np.ndarray, true: np.ndarray, thresholds: Sequence[float]) -> dict[str, float]:
    """IoU and Dice of one probability map at each threshold, keyed like 'iou@0.4'."""
    out: dict[str, float] = {}
    for t in thresholds:
        pred = probability >= t
        out[f"iou@{t:g}"] = iou(pred, true)
        out[f"dice@{t:g}"] = dice(pred, true)
    return out


def summarize(rows: Sequence[dict[str, float]], *, iou_key: str) -> dict[str, float]:
    """Mean of every per-image score, the thresholded Jaccard of every IoU key, and the headline one.

    iou_key names the IoU column (e.g. 'iou@0.5') whose thresholded Jaccard is reported as
    'thresholded_jaccard'.
    """
    if not rows:
        raise ValueError("no per-image scores to summarise")
    keys = [k for k, v in rows[0].items() if isinstance(v, int | float)]
    if iou_key not in keys:
        raise ValueError(f"no {iou_key!r} among the scores {keys}")
    summary: dict[str, float] = {f"mean_{k}": float(np.mean([r[k] for r in rows])) for k in keys}
    for k in keys:
        if k.startswith("iou"):
            summary[f"thresholded_jaccard{k[3:]}"] = thresholded_jaccard(r[k] for r in rows)
    summary["thresholded_jaccard"] = thresholded_jaccard(r[iou_key] for r in rows)
    summary["images"] = len(rows)
    return summary


def batch_mean_iou(probabilities: np.ndarray, masks: np.ndarray, threshold: float = 0.5) -> float:
    """Mean per-image IoU of a batch (N, H, W[, 1]) of probabilities against 0/1 masks."""
    pred = np.asarray(probabilities).reshape(len(probabilities), -1) >= threshold
    true = np.asarray(masks).reshape(len(masks), -1).astype(bool)
    inter = np.logical_and(pred, true).sum(axis=1)
    union = np.logical_or(pred, true).sum(axis=1)
    return float(np.where(union == 0, 1.0, inter / np.maximum(union, 1)).mean())
