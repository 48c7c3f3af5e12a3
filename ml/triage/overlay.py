"""What the patient sees: the lesion's outline drawn on their own photo, plus the mask and its measurements."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# Outline colours (RGB): a dark under-stroke keeps the bright line visible on pale and dark skin alike.
OUTLINE_RGB = (0, 255, 170)
UNDERSTROKE_RGB = (0, 0, 0)
JPEG_QUALITY = 90


@dataclass(frozen=True)
class LesionGeometry:
    """Size of the segmented lesion in pixels of the original photo."""

    area_px: int
    diameter_px: float  # largest distance between two points of the outline (maximum Feret diameter)
    bbox: tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive)


def outline_contours(mask: np.ndarray) -> list[np.ndarray]:
    """External contours of a boolean mask, with the subpixel-smooth points findContours gives."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    return list(contours)


def geometry(mask: np.ndarray) -> LesionGeometry | None:
    """Area, maximum diameter and bounding box of a lesion mask; None when it is empty."""
    mask = mask.astype(bool)
    area = int(mask.sum())
    if area == 0:
        return None
    points = np.concatenate([c.reshape(-1, 2) for c in outline_contours(mask)]).astype(np.float64)
    hull = cv2.convexHull(points.astype(np.float32)).reshape(-1, 2).astype(np.float64)
    if len(hull) > 1:
        diff = hull[:, None, :] - hull[None, :, :]
        diameter = float(np.sqrt((diff**2).sum(-1)).max()) + 1.0  # +1: pixel centres to pixel edges
    else:
        diameter = 1.0
    ys, xs = np.nonzero(mask)
    return LesionGeometry(area, diameter, (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1))


def line_width(height: int, width: int) -> int:
    """Outline thickness that reads the same on a 450-px and a 4000-px photo."""
    return max(2, int(round(min(height, width) / 200)))


def draw_outline(image_rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """A copy of the photo with the mask's contour drawn as an anti-aliased line (not a filled mask)."""
    if image_rgb.shape[:2] != mask.shape[:2]:
        raise ValueError(
            f"mask {mask.shape[:2]} and photo {image_rgb.shape[:2]} differ; resize the mask to the photo first"
        )
    canvas = np.ascontiguousarray(image_rgb.copy())
    contours = outline_contours(mask)
    if not contours:
        return canvas
    h, w = mask.shape[:2]
    sigma = max(1.0, 0.004 * max(h, w))
    smooth = [_smoothed(c.reshape(-1, 2).astype(np.float64), sigma) for c in contours]
    t = line_width(h, w)
    # Fractional coordinates (shift bits) keep the smoothed curve from snapping back to the pixel grid.
    cv2.polylines(canvas, smooth, True, UNDERSTROKE_RGB, thickness=t + 2, lineType=cv2.LINE_AA, shift=_SHIFT)
    cv2.polylines(canvas, smooth, True, OUTLINE_RGB, thickness=t, lineType=cv2.LINE_AA, shift=_SHIFT)
    return canvas


_SHIFT = 4


def _smoothed(points: np.ndarray, sigma: float) -> np.ndarray:
    """Circular Gaussian smoothing of a closed contour, returned as fixed-point int32 for polylines.

    The mask is a threshold of a probability map upsampled from the network's resolution; its
    pixel staircase would show as jaggies along the outline.
    """
    n = len(points)
    if n >= 8:
        radius = min(int(3 * sigma), (n - 1) // 2)
        if radius >= 1:
            x = np.arange(-radius, radius + 1)
            kernel = np.exp(-0.5 * (x / sigma) ** 2)
            kernel /= kernel.sum()
            padded = np.concatenate([points[-radius:], points, points[:radius]])
            points = np.stack([np.convolve(padded[:, i], kernel, mode="valid") for i in range(2)], axis=1)
    return np.round(points * (1 << _SHIFT)).astype(np.int32).reshape(-1, 1, 2)


def encode_jpeg(image_rgb: np.ndarray, *, quality: int = JPEG_QUALITY) -> bytes:
    """RGB array -> JPEG bytes."""
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError(f"could not encode an image of shape {image_rgb.shape} as JPEG")
    return buf.tobytes()


def encode_mask_png(mask: np.ndarray) -> bytes:
    """Boolean mask -> single-channel 0/255 PNG bytes at the mask's size."""
    ok, buf = cv2.imencode(".png", mask.astype(np.uint8) * 255, [cv2.IMWRITE_PNG_COMPRESSION, 3])
    if not ok:
        raise ValueError(f"could not encode a mask of shape {mask.shape} as PNG")
    return buf.tobytes()
