"""Classical lesion segmentation baseline: Otsu on the blue channel plus morphology and component selection."""

from __future__ import annotations

import cv2
import numpy as np

# Working width for the baseline; morphology sizes below are for this scale.
WORK_WIDTH = 300


def otsu_segment(image_rgb: np.ndarray) -> np.ndarray:
    """Boolean lesion mask at the image's size from Otsu thresholding the blurred blue channel.

    Pigmented lesions absorb blue light most, so the blue channel separates them from skin
    best. Dermatoscope vignettes (dark corners) also fall below the threshold, so the
    component kept is the largest one, weighted towards the centre and against touching
    the corners.
    """
    if image_rgb.ndim != 3 or image_rgb.shape[2] != 3 or image_rgb.dtype != np.uint8:
        raise ValueError(f"expected an HxWx3 uint8 RGB image, got shape {image_rgb.shape} {image_rgb.dtype}")
    h, w = image_rgb.shape[:2]
    scale = min(1.0, WORK_WIDTH / w)
    small = cv2.resize(image_rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    blue = cv2.GaussianBlur(small[..., 2], (7, 7), 0)
    _, dark = cv2.threshold(blue, 0, 1, cv2.THRESH_BINARY_INV + cv2.THRESH_OTSU)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (7, 7))
    dark = cv2.morphologyEx(dark, cv2.MORPH_OPEN, kernel)
    dark = cv2.morphologyEx(dark, cv2.MORPH_CLOSE, kernel, iterations=2)
    mask = _central_component(dark)
    mask = _fill_holes(mask)
    return cv2.resize(mask, (w, h), interpolation=cv2.INTER_NEAREST).astype(bool)


def _central_component(binary: np.ndarray) -> np.ndarray:
    """Keep the connected component with the best area-times-centrality score (0/1 uint8)."""
    count, labels, stats, centroids = cv2.connectedComponentsWithStats(binary.astype(np.uint8), connectivity=8)
    if count <= 1:
        return np.zeros_like(binary, dtype=np.uint8)
    h, w = binary.shape
    corners = {labels[0, 0], labels[0, w - 1], labels[h - 1, 0], labels[h - 1, w - 1]}
    best, best_score = 0, -1.0
    diag = np.hypot(h / 2, w / 2)
    for idx in range(1, count):
        area = stats[idx, cv2.CC_STAT_AREA]
        cx, cy = centroids[idx]
        centrality = 1.0 - np.hypot(cx - w / 2, cy - h / 2) / diag
        score = area * max(centrality, 0.05) * (0.2 if idx in corners else 1.0)
        if score > best_score:
            best, best_score = idx, score
    return (labels == best).astype(np.uint8)


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill enclosed holes of a 0/1 mask (lesions are solid regions)."""
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    filled = np.zeros_like(mask)
    cv2.drawContours(filled, contours, -1, 1, thickness=-1)
    return filled
