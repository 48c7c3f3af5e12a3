"""Lesion measurements from the U-Net's mask and the photo: asymmetry, border, colours, diameter, area.

They follow the dermoscopy ABCD rule's criteria, measured rather than scored, for clinicians to read
beside the classifier's answer; the tier does not use them. Definitions (also in docs/pipeline.md):

- asymmetry about each principal axis of the lesion (the eigenvectors of its pixel coordinates'
  covariance, through its centroid): the share of the lesion's area that its mirror image across that
  axis does not cover. 0 is symmetric, higher is more asymmetric (an L of two equal bars scores 0.71
  about one axis and 0 about the other).
- border: the compactness index P^2 / (4 pi A) (1 for a circle, larger for elongated or ragged
  outlines) and the convexity ratio P / P_hull (1 for any convex outline; only notches raise it).
  P and A are those of the outline smoothed by a 1-pixel Gaussian (so the pixel staircase is not
  counted as irregularity) and moved out half a pixel to the pixels' outer edges.
- colours: each lesion pixel takes the nearest of the six ABCD reference colours in CIELAB; a
  colour counts when it covers at least MIN_COLOUR_SHARE of the lesion.
- diameter: the maximum Feret diameter (the longest distance between two pixel corners of the
  lesion), in pixels and as a share of the photo's longer side; area: the lesion's share of the photo.

A lesion that touches the photo's edge is measured as far as it is seen (`touches_border` says so):
its mirror images may leave the frame, which counts as not covered.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import cv2
import numpy as np

# Bump when a definition changes, so stored measurements say which definitions they follow.
MEASUREMENTS_VERSION = 1

# The six colours of the ABCD rule, as sRGB reference values for nearest-colour assignment in CIELAB.
# Our choice of typical dermoscopy shades, not a published standard; tune them on labelled photos.
REFERENCE_COLOURS: dict[str, tuple[int, int, int]] = {
    "white": (235, 235, 230),
    "red": (200, 55, 55),
    "light_brown": (170, 115, 75),
    "dark_brown": (90, 55, 35),
    "blue_grey": (105, 120, 140),
    "black": (25, 25, 25),
}
COLOUR_NAMES = tuple(REFERENCE_COLOURS)
# A colour counts when at least this share of the lesion's pixels is nearest to it (specks do not).
MIN_COLOUR_SHARE = 0.05
# Outline smoothing (pixels) before perimeters are measured: removes the staircase, keeps real notches.
BORDER_SIGMA_PX = 1.0
# Asymmetry and colour shares are estimated on about this many lesion pixels (an even grid) at most.
MAX_SAMPLES = 50_000


@dataclass(frozen=True)
class LesionMeasurements:
    """What the mask and the photo say about a lesion's shape, border, colours and size (see the module doc)."""

    asymmetry_major_axis: float
    asymmetry_minor_axis: float
    compactness: float
    convexity_ratio: float
    colour_count: int
    colours: tuple[str, ...]
    colour_shares: dict[str, float] = field(hash=False)
    diameter_px: float
    diameter_share: float
    area_px: int
    area_share: float
    touches_border: bool
    version: int = MEASUREMENTS_VERSION

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values (lists for tuples), as stored with the case."""
        out = asdict(self)
        out["colours"] = list(self.colours)
        out["colour_shares"] = dict(self.colour_shares)
        return out


def measure_lesion(mask: np.ndarray, rgb: np.ndarray) -> LesionMeasurements:
    """Measure the lesion in a binary HxW mask on its HxWx3 uint8 RGB photo; ValueError for bad input."""
    lesion = _check_inputs(mask, rgb)
    h, w = lesion.shape
    area = int(lesion.sum())
    asym_major, asym_minor = asymmetry(lesion)
    compactness, convexity = border_irregularity(lesion)
    shares = colour_shares(lesion, rgb)
    colours = tuple(name for name in COLOUR_NAMES if shares[name] >= MIN_COLOUR_SHARE)
    diameter = max_feret_diameter(lesion)
    touches = bool(lesion[0].any() or lesion[-1].any() or lesion[:, 0].any() or lesion[:, -1].any())
    return LesionMeasurements(
        asymmetry_major_axis=round(asym_major, 4),
        asymmetry_minor_axis=round(asym_minor, 4),
        compactness=round(compactness, 4),
        convexity_ratio=round(convexity, 4),
        colour_count=len(colours),
        colours=colours,
        colour_shares={name: round(share, 4) for name, share in shares.items()},
        diameter_px=round(diameter, 1),
        diameter_share=round(diameter / max(h, w), 4),
        area_px=area,
        area_share=round(area / (h * w), 6),
        touches_border=touches,
    )


def _check_inputs(mask: np.ndarray, rgb: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"expected an HxW lesion mask, got shape {mask.shape}; pass one channel (mask[..., 0])")
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 RGB photo, got shape {rgb.shape}; convert greyscale or RGBA to RGB")
    if rgb.shape[:2] != mask.shape:
        raise ValueError(
            f"mask {mask.shape} and photo {rgb.shape[:2]} differ in size; resize the mask to the photo first"
        )
    if rgb.dtype != np.uint8:
        raise ValueError(f"expected a uint8 RGB photo, got {rgb.dtype}; scale it to 0..255 and cast to uint8")
    lesion = mask.astype(bool)
    if not lesion.any():
        raise ValueError("the lesion mask is empty (no pixel set); measure only photos in which a lesion was found")
    return lesion


def asymmetry(lesion: np.ndarray) -> tuple[float, float]:
    """Share of the lesion not covered by its mirror image across its (major, minor) principal axis."""
    m = cv2.moments(lesion.astype(np.uint8), binaryImage=True)
    centre = np.array([m["m10"] / m["m00"], m["m01"] / m["m00"]])
    covariance = np.array([[m["mu20"], m["mu11"]], [m["mu11"], m["mu02"]]]) / m["m00"]
    _, vectors = np.linalg.eigh(covariance)  # eigenvalues ascending
    minor, major = vectors[:, 0], vectors[:, 1]
    step = _sampling_step(lesion)
    ys, xs = np.nonzero(lesion[::step, ::step])
    points = np.stack([xs, ys], axis=1).astype(np.float64) * step
    return _mirror_miss(lesion, points, centre, major), _mirror_miss(lesion, points, centre, minor)


def _mirror_miss(lesion: np.ndarray, points: np.ndarray, centre: np.ndarray, axis: np.ndarray) -> float:
    """Share of lesion pixels whose mirror image across the line (centre, axis) falls outside the lesion.

    Reflection preserves area, so this is |L minus mirror(L)| / |L|. Mirrored pixels that leave the
    photo count as outside: what lies beyond the frame is unknown.
    """
    reflect = 2.0 * np.outer(axis, axis) - np.eye(2)
    mirrored = np.rint((points - centre) @ reflect.T + centre).astype(np.int64)
    h, w = lesion.shape
    x, y = mirrored[:, 0], mirrored[:, 1]
    inside = (x >= 0) & (x < w) & (y >= 0) & (y < h)
    hit = np.zeros(len(points), dtype=bool)
    hit[inside] = lesion[y[inside], x[inside]]
    return float(1.0 - hit.mean())


def border_irregularity(lesion: np.ndarray) -> tuple[float, float]:
    """(compactness P^2/(4 pi A), convexity ratio P/P_hull) of the lesion's outer outline(s)."""
    contours, _ = cv2.findContours(lesion.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    perimeter = area = hull_perimeter = 0.0
    for contour in contours:
        points = _smooth_closed(contour.reshape(-1, 2).astype(np.float64), BORDER_SIGMA_PX)
        length = _closed_length(points)
        inner_area = abs(cv2.contourArea(points.astype(np.float32)))
        hull = cv2.convexHull(points.astype(np.float32)).reshape(-1, 2).astype(np.float64)
        # The contour runs through the boundary pixels' centres; the lesion's edge lies half a pixel
        # further out. Steiner's formula for an outward offset d = 0.5: P + 2 pi d, A + P d + pi d^2.
        perimeter += length + np.pi
        area += inner_area + 0.5 * length + np.pi / 4
        hull_perimeter += _closed_length(hull) + np.pi
    return perimeter**2 / (4 * np.pi * area), perimeter / hull_perimeter


def _smooth_closed(points: np.ndarray, sigma: float) -> np.ndarray:
    """Circular Gaussian smoothing of a closed outline's points."""
    n = len(points)
    radius = min(int(np.ceil(3 * sigma)), (n - 1) // 2)
    if radius < 1:
        return points
    offsets = np.arange(-radius, radius + 1)
    weights = np.exp(-0.5 * (offsets / sigma) ** 2)
    weights /= weights.sum()
    padded = np.concatenate([points[-radius:], points, points[:radius]])
    return np.stack([np.convolve(padded[:, i], weights, mode="valid") for i in range(2)], axis=1)


def _closed_length(points: np.ndarray) -> float:
    if len(points) < 2:
        return 0.0
    return float(np.linalg.norm(np.diff(np.vstack([points, points[:1]]), axis=0), axis=1).sum())


def max_feret_diameter(lesion: np.ndarray) -> float:
    """Longest distance between two pixel corners of the lesion (a 3x4 rectangle of pixels gives 5)."""
    contours, _ = cv2.findContours(lesion.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    centres = np.concatenate([c.reshape(-1, 2) for c in contours]).astype(np.float64)
    corners = (centres[:, None, :] + np.array([[-0.5, -0.5], [-0.5, 0.5], [0.5, -0.5], [0.5, 0.5]])).reshape(-1, 2)
    hull = cv2.convexHull(corners.astype(np.float32)).reshape(-1, 2).astype(np.float64)
    diff = hull[:, None, :] - hull[None, :, :]
    return float(np.sqrt((diff**2).sum(-1)).max())


def colour_shares(lesion: np.ndarray, rgb: np.ndarray) -> dict[str, float]:
    """Share of the lesion's pixels nearest (CIELAB distance) to each ABCD reference colour."""
    step = _sampling_step(lesion)
    pixels = rgb[::step, ::step][lesion[::step, ::step]]
    lab = _to_lab(pixels)
    references = _to_lab(np.array(list(REFERENCE_COLOURS.values()), dtype=np.uint8))
    # Squared distances as |x|^2 - 2 x.r + |r|^2: no N x 6 x 3 temporary.
    distance = (references**2).sum(1)[None, :] - 2.0 * lab @ references.T
    counts = np.bincount(distance.argmin(axis=1), minlength=len(COLOUR_NAMES))
    return {name: float(c) / len(pixels) for name, c in zip(COLOUR_NAMES, counts, strict=True)}


def _sampling_step(lesion: np.ndarray) -> int:
    """Grid step leaving at most about MAX_SAMPLES lesion pixels (a share's standard error is then <= 0.003)."""
    return max(1, int(np.ceil(np.sqrt(np.count_nonzero(lesion) / MAX_SAMPLES))))


def _to_lab(pixels: np.ndarray) -> np.ndarray:
    """N x 3 uint8 sRGB -> N x 3 float CIELAB (L 0..100)."""
    rgb = pixels.reshape(-1, 1, 3).astype(np.float32) / 255.0
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB).reshape(-1, 3).astype(np.float64)
