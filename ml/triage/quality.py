"""The quality gate: is this photo good enough, and is it a skin lesion at all, before any diagnosis.

Two stages. `check_image` looks at pixels only (size, exposure, skin colour, sharpness) and runs
before the U-Net; `check_mask` looks at the U-Net's probability map (lesion found, not the whole
frame, confidently segmented). Each failure names a RetakeReason; borderline values pass with a
flag in UNSURE_FLAGS, which the tier policy turns into UNCERTAIN.

Thresholds were calibrated on real HAM10000 photos against obvious non-skin images
(bench/calibrate_quality.py; docs/pipeline.md has the numbers, including the real photos it refuses).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import cv2
import numpy as np

from skintriage.vocabulary import RetakeReason

# Flags that mean "the gate passed the photo but is not sure"; the policy answers UNCERTAIN.
UNSURE_FLAGS: frozenset[str] = frozenset(
    {"borderline_sharpness", "borderline_exposure", "borderline_skin", "uncertain_mask"}
)


@dataclass(frozen=True)
class QualityConfig:
    """Thresholds of the gate; docs/pipeline.md shows how each default was chosen on real photos."""

    # Photos smaller than this on the short side carry too little detail for a 224-px classifier.
    min_side: int = 200
    # Metrics are computed on a copy whose long side is at most this, so they do not depend on resolution.
    work_side: int = 512
    # Variance of the Laplacian of the grey work copy (real photos: min 31, p0.5 56).
    min_sharpness: float = 25.0
    unsure_sharpness: float = 40.0
    # 95th percentile of luminance below this: the whole frame is dark (real photos: min 129).
    min_bright_p95: float = 45.0
    unsure_bright_p95: float = 80.0
    # Washed out: more than this fraction of pixels clipped to white (real: max 0.08), or even the
    # darkest 5 % brighter than max_dark_p5 (real: max 200), i.e. no contrast left.
    max_clipped_fraction: float = 0.5
    unsure_clipped_fraction: float = 0.2
    max_dark_p5: float = 235.0
    # Fraction of informative pixels (not near-black, not clipped) whose chroma is skin-like
    # (real: min 0.70, p0.5 0.95; landscapes, flowers, portraits, noise: 0.0-0.55).
    min_skin_fraction: float = 0.6
    unsure_skin_fraction: float = 0.8
    # Exactly grey pixels (R == G == B) among the informative ones: screenshots, greyscale graphics (real: max 0.014).
    max_neutral_fraction: float = 0.5
    # Pixels in perfectly flat 3x3 patches: featureless (solid colour) above max_flat_fraction;
    # sharp yet flat above max_sharp_flat_fraction means a drawing or a screenshot (real: max 0.23;
    # blurred real photos reach 0.6 but are rejected as blurry first).
    max_flat_fraction: float = 0.9
    max_sharp_flat_fraction: float = 0.5
    # Below this fraction of informative pixels there is nothing to judge colour on (pure white, pure black).
    min_informative_fraction: float = 0.02
    # Lesion mask as a fraction of the image: below min -> no lesion, above max -> fills the frame
    # (ground-truth masks of real photos: 0.012 to 0.96; the two full-frame ones are annotated so).
    min_lesion_fraction: float = 0.003
    max_lesion_fraction: float = 0.95
    # Mean confidence |2p - 1| over the lesion and its surroundings; a unsure U-Net hovers near p = 0.5.
    min_mask_confidence: float = 0.35
    unsure_mask_confidence: float = 0.55

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form for reports."""
        return asdict(self)


@dataclass
class QualityReport:
    """Outcome of one stage: the failure reason (None when passed), flags and the measured metrics."""

    reason: RetakeReason | None = None
    flags: list[str] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        """True when the photo may go on to the next stage."""
        return self.reason is None

    @property
    def unsure(self) -> bool:
        """True when a borderline value passed; the tier policy then answers UNCERTAIN."""
        return any(flag in UNSURE_FLAGS for flag in self.flags)

    def merged(self, other: QualityReport) -> QualityReport:
        """This report followed by a later stage's (the later failure wins, flags and metrics add up)."""
        return QualityReport(
            reason=other.reason or self.reason,
            flags=[*self.flags, *(f for f in other.flags if f not in self.flags)],
            metrics={**self.metrics, **other.metrics},
        )


def work_copy(image_rgb: np.ndarray, work_side: int) -> np.ndarray:
    """Area-downscale so the long side is at most work_side (never upscale)."""
    h, w = image_rgb.shape[:2]
    scale = work_side / max(h, w)
    if scale >= 1:
        return image_rgb
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(image_rgb, size, interpolation=cv2.INTER_AREA)


def sharpness(grey: np.ndarray) -> float:
    """Variance of the Laplacian: low when the photo has no sharp edges (defocus or motion blur)."""
    return float(cv2.Laplacian(grey, cv2.CV_64F, ksize=3).var())


# Skin chroma model, in the (Cr - 128, Cb - 128) plane of YCrCb: skin of every type, pink and
# bluish dermoscopy light and brown, red, purple or black pigment are either near-neutral or lie
# in the red half-plane within SKIN_MAX_ANGLE_DEG of the +Cr axis; green, cyan, blue and yellow do
# not. Checked on 1,000 real HAM10000 photos (bench/calibrate_quality.py): over 99.8 % of their
# coloured pixels (chroma > 15) lie within +-75 degrees, and every photo keeps >= 70 % of its pixels in.
SKIN_NEUTRAL_RADIUS = 15.0
SKIN_MAX_ANGLE_DEG = 75.0
SKIN_MAX_RADIUS = 100.0


def skin_mask(image_rgb: np.ndarray) -> np.ndarray:
    """Pixels whose chroma is skin- or pigment-like (near-neutral, or reddish within the skin sector)."""
    ycrcb = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2YCrCb)
    dcr = ycrcb[..., 1].astype(np.float32) - 128.0
    dcb = ycrcb[..., 2].astype(np.float32) - 128.0
    r2 = dcr * dcr + dcb * dcb
    in_sector = (dcr > 0) & (np.abs(dcb) <= np.tan(np.radians(SKIN_MAX_ANGLE_DEG)) * dcr)
    return (r2 < SKIN_NEUTRAL_RADIUS**2) | (in_sector & (r2 <= SKIN_MAX_RADIUS**2))


def _percentile_u8(values: np.ndarray, q: float) -> float:
    """Percentile of a uint8 array through its histogram (much faster than np.percentile)."""
    hist = np.bincount(values.ravel(), minlength=256).cumsum()
    return float(np.searchsorted(hist, q / 100 * hist[-1]))


def image_metrics(image_rgb: np.ndarray, *, work_side: int = QualityConfig.work_side) -> dict[str, float]:
    """Pixel-only metrics of a photo: size, sharpness, exposure, skin-colour, grey and flat fractions."""
    h, w = image_rgb.shape[:2]
    small = work_copy(image_rgb, work_side)
    grey = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
    clipped = small.min(axis=2) >= 250
    informative = ~clipped & (grey >= 25)
    n_informative = int(informative.sum())
    neutral = small.max(axis=2) == small.min(axis=2)
    g = grey.astype(np.float32)
    local_var = cv2.blur(g * g, (3, 3)) - cv2.blur(g, (3, 3)) ** 2
    return {
        "width": float(w),
        "height": float(h),
        "sharpness": sharpness(grey),
        "bright_p95": _percentile_u8(grey, 95),
        "dark_p5": _percentile_u8(grey, 5),
        "clipped_fraction": float(clipped.mean()),
        "informative_fraction": float(n_informative / grey.size),
        "skin_fraction": float((skin_mask(small) & informative).sum() / n_informative) if n_informative else 0.0,
        "neutral_fraction": float((neutral & informative).sum() / n_informative) if n_informative else 0.0,
        "flat_fraction": float((local_var < 0.01).mean()),
    }


def _first_failure(m: dict[str, float], c: QualityConfig) -> RetakeReason | None:
    """The first failed check, in an order where each reason is the most useful advice."""
    # Dark first: colour and sharpness are meaningless in the noise of an underexposed photo.
    if m["bright_p95"] < c.min_bright_p95:
        return RetakeReason.TOO_DARK
    if m["informative_fraction"] < c.min_informative_fraction:
        return RetakeReason.WASHED_OUT
    # Colour before exposure: a screenshot of text is mostly white, but it is not skin either.
    if m["skin_fraction"] < c.min_skin_fraction or m["neutral_fraction"] > c.max_neutral_fraction:
        return RetakeReason.NOT_SKIN
    # Exposure before flatness: clipped white is perfectly flat, so an overexposed photo of skin
    # would otherwise read as a featureless non-photo and get the wrong advice.
    if m["clipped_fraction"] > c.max_clipped_fraction or m["dark_p5"] > c.max_dark_p5:
        return RetakeReason.WASHED_OUT
    if m["flat_fraction"] > c.max_flat_fraction:
        return RetakeReason.NOT_SKIN
    if m["sharpness"] < c.min_sharpness:
        return RetakeReason.BLURRY
    # Sharp edges yet large perfectly flat areas: a drawing, a logo or a screenshot, not a photo.
    if m["flat_fraction"] > c.max_sharp_flat_fraction:
        return RetakeReason.NOT_SKIN
    return None


def check_image(image_rgb: np.ndarray, config: QualityConfig | None = None) -> QualityReport:
    """Stage 1, before segmentation: too small, too dark, washed out, not skin, blurry."""
    config = config or QualityConfig()
    if (
        not isinstance(image_rgb, np.ndarray)
        or image_rgb.ndim != 3
        or image_rgb.shape[2] != 3
        or (image_rgb.dtype != np.uint8)
    ):
        shape, dtype = getattr(image_rgb, "shape", None), getattr(image_rgb, "dtype", None)
        raise ValueError(f"expected an HxWx3 uint8 RGB image, got shape {shape} {dtype}; decode with ml.triage.decode")
    h, w = image_rgb.shape[:2]
    if min(h, w) < config.min_side:
        return QualityReport(RetakeReason.TOO_SMALL, metrics={"width": float(w), "height": float(h)})
    m = image_metrics(image_rgb, work_side=config.work_side)
    report = QualityReport(reason=_first_failure(m, config), metrics=m)
    if report.passed:
        if m["bright_p95"] < config.unsure_bright_p95 or m["clipped_fraction"] > config.unsure_clipped_fraction:
            report.flags.append("borderline_exposure")
        if m["skin_fraction"] < config.unsure_skin_fraction:
            report.flags.append("borderline_skin")
        if m["sharpness"] < config.unsure_sharpness:
            report.flags.append("borderline_sharpness")
    return report


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected foreground component of a boolean mask, with its holes filled."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if n <= 1:
        return np.zeros(mask.shape, bool)
    biggest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    component = (labels == biggest).astype(np.uint8)
    contours, _ = cv2.findContours(component, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    filled = np.zeros_like(component)
    cv2.drawContours(filled, contours, -1, 1, thickness=cv2.FILLED)
    return filled.astype(bool)


def mask_confidence(prob: np.ndarray, lesion: np.ndarray) -> float:
    """Mean |2p - 1| over the lesion and a band around it: 1 = crisp mask, 0 = the U-Net is guessing."""
    if not lesion.any():
        return float(np.abs(2 * prob - 1).mean())
    h, w = lesion.shape
    k = max(3, int(round(0.05 * max(h, w))) | 1)
    region = cv2.dilate(lesion.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))) > 0
    return float(np.abs(2 * prob[region] - 1).mean())


def check_mask(
    prob: np.ndarray, *, threshold: float, config: QualityConfig | None = None, refuse_hesitant: bool = True
) -> tuple[QualityReport, np.ndarray]:
    """Stage 2, on the U-Net's probability map: returns the report and the lesion mask (largest component).

    refuse_hesitant: a map the U-Net cannot commit to (confidence below min_mask_confidence) is refused as not
    skin; False only flags it "uncertain_mask" (so the tier is UNCERTAIN unless HIGH). The pipeline passes
    False for ordinary phone photos: the dermoscopy-trained U-Net hesitates on some real ones, and there the
    refusal's wording ("not skin") would be wrong while a doctor's look is what the answer asks for anyway.
    """
    config = config or QualityConfig()
    if prob.ndim != 2:
        raise ValueError(f"expected an HxW probability map, got shape {prob.shape}")
    raw = prob >= threshold
    lesion = largest_component(raw)
    raw_fraction = float(raw.mean())
    fraction = float(lesion.mean())
    confidence = mask_confidence(prob, lesion)
    report = QualityReport(
        metrics={
            "lesion_fraction": fraction,
            "mask_fraction_all_components": raw_fraction,
            "mask_confidence": confidence,
            "max_probability": float(prob.max()) if prob.size else 0.0,
        }
    )
    if fraction < config.min_lesion_fraction:
        report.reason = RetakeReason.NO_LESION
    elif raw_fraction > config.max_lesion_fraction:
        report.reason = RetakeReason.LESION_TOO_LARGE
    elif confidence < config.min_mask_confidence and refuse_hesitant:
        # A mask the U-Net cannot commit to is what skin-coloured non-lesion images produce.
        report.reason = RetakeReason.NOT_SKIN
    elif confidence < config.unsure_mask_confidence:
        report.flags.append("uncertain_mask")
    if report.passed:
        ys, xs = np.nonzero(lesion)
        h, w = lesion.shape
        if ys.min() == 0 or xs.min() == 0 or ys.max() == h - 1 or xs.max() == w - 1:
            report.flags.append("lesion_touches_border")
    return report, lesion
