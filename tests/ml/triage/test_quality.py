"""The quality gate: each RetakeReason from a constructed photo or probability map, and the unsure flags."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from ml.triage.decode import decode_image
from ml.triage.quality import UNSURE_FLAGS, QualityConfig, QualityReport, check_image, check_mask
from skintriage.vocabulary import RetakeReason
from tests.factories import lesion_photo

CONFIG = QualityConfig()
SKIN_RGB = (214, 170, 150)


@pytest.fixture(scope="module")
def good() -> np.ndarray:
    """A 600x450 dark lesion on noisy skin (lossless, so the metrics do not depend on JPEG); do not modify."""
    image = decode_image(lesion_photo(fmt="PNG"), max_pixels=10**7)
    image.setflags(write=False)
    return image


def _scaled(image: np.ndarray, gain: float) -> np.ndarray:
    """Exposure changed by a gain, clipped like a sensor."""
    return np.clip(image.astype(np.float32) * gain, 0, 255).astype(np.uint8)


def _metric_between(report: QualityReport, name: str, low: float, high: float) -> None:
    """Guard that the construction hit the band the test is about."""
    value = report.metrics[name]
    assert low <= value < high, f"constructed image has {name}={value}, outside [{low}, {high}): fix the test image"


# ---- stage 1: check_image ----------------------------------------------------------------------


def test_good_constructed_photo_passes_without_flags(good: np.ndarray) -> None:
    report = check_image(good)
    assert report.passed and report.reason is None
    assert report.flags == []
    assert not report.unsure
    assert report.metrics["width"] == 600 and report.metrics["height"] == 450


@pytest.mark.parametrize(
    ("height", "width", "reason"),
    [(199, 300, RetakeReason.TOO_SMALL), (300, 199, RetakeReason.TOO_SMALL), (200, 300, None)],
)
def test_short_side_below_min_side_is_too_small(
    good: np.ndarray, height: int, width: int, reason: RetakeReason | None
) -> None:
    report = check_image(np.ascontiguousarray(good[:height, :width]))
    assert report.reason is reason
    if reason is not None:
        # Nothing else is measured on a photo too small to judge.
        assert report.metrics == {"width": float(width), "height": float(height)}


def test_tiny_downscaled_photo_is_too_small(good: np.ndarray) -> None:
    tiny = cv2.resize(good, (120, 90), interpolation=cv2.INTER_AREA)
    assert check_image(tiny).reason is RetakeReason.TOO_SMALL


def test_min_side_comes_from_the_config(good: np.ndarray) -> None:
    tiny = cv2.resize(good, (160, 120), interpolation=cv2.INTER_AREA)
    assert check_image(tiny).reason is RetakeReason.TOO_SMALL
    assert check_image(tiny, QualityConfig(min_side=100)).reason is not RetakeReason.TOO_SMALL


@pytest.mark.parametrize("sigma", [2.0, 3.0, 5.0, 10.0])
def test_gaussian_blur_is_blurry(good: np.ndarray, sigma: float) -> None:
    report = check_image(cv2.GaussianBlur(good, (0, 0), sigma))
    assert report.reason is RetakeReason.BLURRY
    assert report.metrics["sharpness"] < CONFIG.min_sharpness


@pytest.mark.parametrize("gain", [0.0, 0.1, 0.15])
def test_darkened_photo_is_too_dark(good: np.ndarray, gain: float) -> None:
    report = check_image(_scaled(good, gain))
    assert report.reason is RetakeReason.TOO_DARK
    assert report.metrics["bright_p95"] < CONFIG.min_bright_p95


# Overexposure from moderate to total. Clipped white is perfectly flat: before the fix the gate called
# gains 2.0 to 6.0 "not skin" (a featureless image) while 1.8 and 10 were "washed out".
@pytest.mark.parametrize("gain", [1.7, 2.0, 2.5, 4.0, 6.0, 10.0, 100.0])
def test_overexposed_photo_is_washed_out_at_every_strength(good: np.ndarray, gain: float) -> None:
    report = check_image(_scaled(good, gain))
    assert report.reason is RetakeReason.WASHED_OUT, report.metrics


def test_flash_glare_over_most_of_the_frame_is_washed_out(good: np.ndarray) -> None:
    glare = good.copy()
    glare[:, : int(0.6 * glare.shape[1])] = 255
    report = check_image(glare)
    assert report.reason is RetakeReason.WASHED_OUT
    assert report.metrics["clipped_fraction"] > CONFIG.max_clipped_fraction


def test_pure_white_has_nothing_informative_and_is_washed_out() -> None:
    report = check_image(np.full((450, 600, 3), 255, np.uint8))
    assert report.reason is RetakeReason.WASHED_OUT
    assert report.metrics["informative_fraction"] < CONFIG.min_informative_fraction


def test_no_contrast_left_is_washed_out() -> None:
    # Pale, barely varying, nowhere clipped: even the darkest 5 % are brighter than max_dark_p5.
    rng = np.random.default_rng(0)
    pale = (np.array([249, 243, 240]) - rng.integers(0, 4, (450, 600, 3))).astype(np.uint8)
    report = check_image(pale)
    assert report.reason is RetakeReason.WASHED_OUT
    assert report.metrics["clipped_fraction"] == 0
    assert report.metrics["dark_p5"] > CONFIG.max_dark_p5


@pytest.mark.parametrize("channels", [[2, 1, 0], [1, 0, 2]], ids=["blue", "green"])
def test_blue_or_green_image_is_not_skin(good: np.ndarray, channels: list[int]) -> None:
    report = check_image(np.ascontiguousarray(good[..., channels]))
    assert report.reason is RetakeReason.NOT_SKIN
    assert report.metrics["skin_fraction"] < CONFIG.min_skin_fraction


def test_half_blue_frame_is_not_skin(good: np.ndarray) -> None:
    image = good.copy()
    image[:, :300] = image[:, :300, ::-1]
    report = check_image(image)
    assert report.reason is RetakeReason.NOT_SKIN
    _metric_between(report, "skin_fraction", 0.0, CONFIG.min_skin_fraction)


def test_greyscale_photo_is_not_skin(good: np.ndarray) -> None:
    grey = np.repeat(cv2.cvtColor(good, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=2)
    report = check_image(grey)
    assert report.reason is RetakeReason.NOT_SKIN
    assert report.metrics["neutral_fraction"] > CONFIG.max_neutral_fraction


def test_solid_skin_colour_is_featureless_and_not_skin() -> None:
    report = check_image(np.full((450, 600, 3), SKIN_RGB, np.uint8))
    assert report.reason is RetakeReason.NOT_SKIN
    assert report.metrics["flat_fraction"] > CONFIG.max_flat_fraction


def test_sharp_but_flat_drawing_is_not_skin() -> None:
    drawing = np.full((450, 600, 3), SKIN_RGB, np.uint8)
    for x in range(0, 600, 30):
        cv2.line(drawing, (x, 0), (x, 449), (90, 60, 45), 2)
    report = check_image(drawing)
    assert report.reason is RetakeReason.NOT_SKIN
    assert report.metrics["sharpness"] >= CONFIG.min_sharpness
    _metric_between(report, "flat_fraction", CONFIG.max_sharp_flat_fraction, CONFIG.max_flat_fraction)


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((450, 600), np.uint8),
        np.zeros((450, 600, 4), np.uint8),
        np.zeros((450, 600, 3), np.float32),
        [[0, 0, 0]],
    ],
    ids=["grey-2d", "rgba", "float", "list"],
)
def test_check_image_refuses_anything_but_hxwx3_uint8(bad: object) -> None:
    with pytest.raises(ValueError, match="expected an HxWx3 uint8 RGB image.*decode with ml.triage.decode"):
        check_image(bad)  # type: ignore[arg-type]


# ---- stage 1: borderline values pass with an unsure flag ----------------------------------------


def test_borderline_sharpness_passes_unsure(good: np.ndarray) -> None:
    report = check_image(cv2.GaussianBlur(good, (0, 0), 1.7))
    _metric_between(report, "sharpness", CONFIG.min_sharpness, CONFIG.unsure_sharpness)
    assert report.passed
    assert report.flags == ["borderline_sharpness"]
    assert report.unsure


def test_dim_photo_passes_with_borderline_exposure(good: np.ndarray) -> None:
    report = check_image(_scaled(good, 0.3))
    _metric_between(report, "bright_p95", CONFIG.min_bright_p95, CONFIG.unsure_bright_p95)
    assert report.passed
    assert report.flags == ["borderline_exposure"]
    assert report.unsure


def test_some_glare_passes_with_borderline_exposure(good: np.ndarray) -> None:
    glare = good.copy()
    glare[:, : int(0.3 * glare.shape[1])] = 255
    report = check_image(glare)
    _metric_between(report, "clipped_fraction", CONFIG.unsure_clipped_fraction, CONFIG.max_clipped_fraction)
    assert report.passed
    assert report.flags == ["borderline_exposure"]
    assert report.unsure


def test_partly_non_skin_frame_passes_with_borderline_skin(good: np.ndarray) -> None:
    image = good.copy()
    image[:, :180] = image[:, :180, ::-1]  # 30 % of the frame blue
    report = check_image(image)
    _metric_between(report, "skin_fraction", CONFIG.min_skin_fraction, CONFIG.unsure_skin_fraction)
    assert report.passed
    assert report.flags == ["borderline_skin"]
    assert report.unsure


def test_failed_photo_carries_no_unsure_flags(good: np.ndarray) -> None:
    # Flags are for photos that pass; a retake already says what is wrong.
    report = check_image(cv2.GaussianBlur(good, (0, 0), 3.0))
    assert report.reason is RetakeReason.BLURRY
    assert report.flags == []


def test_unsure_only_for_unsure_flags() -> None:
    assert sorted(UNSURE_FLAGS) == ["borderline_exposure", "borderline_sharpness", "borderline_skin", "uncertain_mask"]
    for flag in UNSURE_FLAGS:
        assert QualityReport(flags=[flag]).unsure
    assert not QualityReport(flags=["lesion_touches_border", "unfamiliar_to_classifier"]).unsure
    assert not QualityReport().unsure


def test_merged_report_later_failure_wins_and_flags_add_up() -> None:
    first = QualityReport(flags=["borderline_skin"], metrics={"sharpness": 50.0})
    second = QualityReport(
        reason=RetakeReason.NO_LESION, flags=["borderline_skin", "uncertain_mask"], metrics={"lesion_fraction": 0.0}
    )
    merged = first.merged(second)
    assert merged.reason is RetakeReason.NO_LESION
    assert merged.flags == ["borderline_skin", "uncertain_mask"]
    assert merged.metrics == {"sharpness": 50.0, "lesion_fraction": 0.0}
    # A passing later stage keeps the earlier failure.
    assert QualityReport(reason=RetakeReason.BLURRY).merged(QualityReport()).reason is RetakeReason.BLURRY


# ---- stage 2: check_mask on constructed probability maps ----------------------------------------

THRESHOLD = 0.5


def _disc_map(
    shape: tuple[int, int], centre: tuple[int, int], radius: int, inside: float, outside: float
) -> np.ndarray:
    """A probability map: `inside` on a disc, `outside` elsewhere."""
    disc = np.zeros(shape, np.uint8)
    cv2.circle(disc, centre, radius, 1, thickness=-1)
    return np.where(disc > 0, inside, outside).astype(np.float32)


def test_crisp_centred_lesion_passes() -> None:
    prob = _disc_map((200, 240), (120, 100), 40, 0.98, 0.02)
    report, lesion = check_mask(prob, threshold=THRESHOLD)
    assert report.passed and report.flags == [] and not report.unsure
    assert lesion.dtype == bool and lesion.shape == prob.shape
    assert lesion.sum() == (prob >= THRESHOLD).sum()
    assert report.metrics["mask_confidence"] == pytest.approx(0.96)


def test_empty_map_is_no_lesion() -> None:
    report, lesion = check_mask(np.full((200, 240), 0.02, np.float32), threshold=THRESHOLD)
    assert report.reason is RetakeReason.NO_LESION
    assert not lesion.any()


@pytest.mark.parametrize(("pixels", "reason"), [(29, RetakeReason.NO_LESION), (30, None)])
def test_lesion_fraction_at_and_below_min_lesion_fraction(pixels: int, reason: RetakeReason | None) -> None:
    # 100x100 map: min_lesion_fraction 0.003 is exactly 30 pixels, here one compact block.
    prob = np.zeros((100, 100), np.float32)
    rows, cols = np.divmod(np.arange(pixels), 6)
    prob[40 + rows, 40 + cols] = 1.0
    report, _ = check_mask(prob, threshold=THRESHOLD)
    assert report.metrics["lesion_fraction"] == pytest.approx(pixels / 10_000)
    assert report.reason is reason


def test_map_covering_the_whole_frame_is_lesion_too_large() -> None:
    report, _ = check_mask(np.full((200, 240), 0.99, np.float32), threshold=THRESHOLD)
    assert report.reason is RetakeReason.LESION_TOO_LARGE
    assert report.metrics["mask_fraction_all_components"] > CONFIG.max_lesion_fraction


@pytest.mark.parametrize(("covered_rows", "reason"), [(95, None), (96, RetakeReason.LESION_TOO_LARGE)])
def test_lesion_fraction_at_and_above_max_lesion_fraction(covered_rows: int, reason: RetakeReason | None) -> None:
    # 100x100 map: max_lesion_fraction 0.95 is exactly 95 full rows.
    prob = np.full((100, 100), 0.01, np.float32)
    prob[:covered_rows] = 0.99
    report, _ = check_mask(prob, threshold=THRESHOLD)
    assert report.metrics["mask_fraction_all_components"] == pytest.approx(covered_rows / 100)
    assert report.reason is reason


def test_lesion_too_large_counts_every_component() -> None:
    # Two halves split by a background column: the largest component is under half the frame,
    # yet the mask as a whole fills it.
    prob = np.full((100, 100), 0.99, np.float32)
    prob[:, 50] = 0.01
    report, _ = check_mask(prob, threshold=THRESHOLD)
    assert report.metrics["lesion_fraction"] == pytest.approx(0.5)
    assert report.reason is RetakeReason.LESION_TOO_LARGE


def test_hesitant_map_is_not_skin() -> None:
    # The U-Net hovering around 0.5 is what skin-coloured non-lesion images produce.
    prob = _disc_map((200, 240), (120, 100), 40, 0.6, 0.4)
    report, _ = check_mask(prob, threshold=THRESHOLD)
    assert report.reason is RetakeReason.NOT_SKIN
    assert report.metrics["mask_confidence"] == pytest.approx(0.2)


def test_hesitant_map_of_an_ordinary_photo_is_flagged_not_refused() -> None:
    # The pipeline passes refuse_hesitant=False for ordinary phone photos (the dermoscopy U-Net hesitates on some).
    prob = _disc_map((200, 240), (120, 100), 40, 0.6, 0.4)
    report, lesion = check_mask(prob, threshold=THRESHOLD, refuse_hesitant=False)
    assert report.passed and report.flags == ["uncertain_mask"] and report.unsure
    assert lesion.any()
    # The other refusals stand: nothing found is still no lesion.
    report, _ = check_mask(np.full((200, 240), 0.02, np.float32), threshold=THRESHOLD, refuse_hesitant=False)
    assert report.reason is RetakeReason.NO_LESION


def test_moderately_confident_map_passes_with_uncertain_mask() -> None:
    prob = _disc_map((200, 240), (120, 100), 40, 0.75, 0.25)
    report, lesion = check_mask(prob, threshold=THRESHOLD)
    assert report.passed
    assert report.metrics["mask_confidence"] == pytest.approx(0.5)
    assert report.flags == ["uncertain_mask"]
    assert report.unsure
    assert lesion.any()


def test_lesion_touching_the_border_is_flagged_but_not_unsure() -> None:
    prob = _disc_map((200, 240), (0, 100), 40, 0.98, 0.02)
    report, _ = check_mask(prob, threshold=THRESHOLD)
    assert report.passed
    assert report.flags == ["lesion_touches_border"]
    assert not report.unsure


def test_mask_is_the_largest_component_with_holes_filled() -> None:
    prob = np.zeros((200, 240), np.float32)
    ring = np.zeros((200, 240), np.uint8)
    cv2.circle(ring, (80, 100), 40, 1, thickness=10)
    prob[ring > 0] = 0.99
    cv2.circle(prob, (200, 40), 10, 0.99, thickness=-1)  # a smaller second blob
    report, lesion = check_mask(prob, threshold=THRESHOLD)
    assert report.passed
    assert lesion[100, 80], "the ring's hole is filled"
    assert not lesion[40, 200], "the smaller blob is dropped"
    outer = np.zeros((200, 240), np.uint8)
    cv2.circle(outer, (80, 100), 45, 1, thickness=-1)  # about the ring's outer edge, filled
    assert abs(int(lesion.sum()) - int(outer.sum())) < 0.05 * int(outer.sum())


def test_check_mask_uses_the_given_threshold() -> None:
    prob = _disc_map((200, 240), (120, 100), 40, 0.4, 0.0)
    assert check_mask(prob, threshold=0.5)[0].reason is RetakeReason.NO_LESION
    assert check_mask(prob, threshold=0.3)[1].any()


def test_check_mask_refuses_a_map_with_channels() -> None:
    with pytest.raises(ValueError, match=r"expected an HxW probability map, got shape \(200, 240, 1\)"):
        check_mask(np.zeros((200, 240, 1), np.float32), threshold=THRESHOLD)
