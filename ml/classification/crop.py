"""Lesion crops: a square box around a lesion mask with a margin, so the classifier sees the lesion large."""

from __future__ import annotations

import numpy as np

# Fraction of the lesion box's longer side added on every side: the border and the surrounding
# skin carry diagnostic signal (asymmetry, irregular border), so the crop keeps some of both.
DEFAULT_MARGIN = 0.2


def lesion_box(mask: np.ndarray, *, margin: float = DEFAULT_MARGIN) -> tuple[int, int, int, int] | None:
    """Square (x0, y0, x1, y1) box around the mask's foreground plus margin, kept inside the image.

    Returns None when the mask is empty. When the square would leave the image it is shifted
    back inside; when it is larger than the image's short side it is clipped to that side.
    """
    if mask.ndim != 2:
        raise ValueError(f"expected a 2-D HxW mask, got shape {mask.shape}; pass mask[..., 0] for HxWx1")
    if margin < 0:
        raise ValueError(f"margin {margin} must be >= 0 (a fraction of the lesion's longer side)")
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        return None
    h, w = mask.shape
    x_min, x_max, y_min, y_max = int(xs.min()), int(xs.max()) + 1, int(ys.min()), int(ys.max()) + 1
    side = max(x_max - x_min, y_max - y_min)
    side = int(round(side * (1 + 2 * margin)))
    side = max(1, min(side, h, w))
    cx, cy = (x_min + x_max) / 2, (y_min + y_max) / 2
    x0 = int(round(cx - side / 2))
    y0 = int(round(cy - side / 2))
    x0 = min(max(0, x0), w - side)
    y0 = min(max(0, y0), h - side)
    return x0, y0, x0 + side, y0 + side


def crop_to_lesion(image: np.ndarray, mask: np.ndarray, *, margin: float = DEFAULT_MARGIN) -> np.ndarray:
    """Crop an HxWx3 image to the square lesion box of an HxW mask; the whole image if the mask is empty."""
    if image.shape[:2] != mask.shape[:2]:
        raise ValueError(
            f"mask shape {mask.shape[:2]} differs from image shape {image.shape[:2]}; "
            f"resize the mask to {image.shape[:2]} (nearest neighbour) before cropping"
        )
    box = lesion_box(mask if mask.ndim == 2 else mask[..., 0], margin=margin)
    if box is None:
        return image
    x0, y0, x1, y1 = box
    return np.ascontiguousarray(image[y0:y1, x0:x1])
