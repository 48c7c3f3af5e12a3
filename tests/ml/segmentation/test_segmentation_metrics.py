"""Segmentation metrics against hand-computed values, and the Otsu baseline on a clear blob."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from ml.segmentation.baseline import otsu_segment
from ml.segmentation.metrics import batch_mean_iou, dice, iou, per_image_scores, summarize, thresholded_jaccard


def _masks():
    pred = np.zeros((4, 4), bool)
    true = np.zeros((4, 4), bool)
    pred[0, :3] = True  # 3 pixels
    true[0, 1:] = True  # 3 pixels, 2 shared
    return pred, true


def test_iou_and_dice_match_hand_computed_values():
    pred, true = _masks()
    assert iou(pred, true) == pytest.approx(2 / 4)  # intersection 2, union 4
    assert dice(pred, true) == pytest.approx(2 * 2 / 6)


def test_iou_and_dice_of_two_empty_masks_are_one_and_of_disjoint_masks_zero():
    empty = np.zeros((3, 3), bool)
    assert iou(empty, empty) == 1.0 and dice(empty, empty) == 1.0
    a, b = empty.copy(), empty.copy()
    a[0, 0], b[2, 2] = True, True
    assert iou(a, b) == 0.0 and dice(a, b) == 0.0


def test_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"\(4, 4\).*\(2, 2\)"):
        iou(np.zeros((4, 4)), np.zeros((2, 2)))


def test_thresholded_jaccard_zeroes_scores_below_065():
    assert thresholded_jaccard([0.9, 0.64, 0.7, 0.2]) == pytest.approx((0.9 + 0.7) / 4)
    assert thresholded_jaccard([0.65]) == pytest.approx(0.65)
    with pytest.raises(ValueError):
        thresholded_jaccard([])


def test_per_image_scores_apply_each_threshold():
    prob = np.array([[0.45, 0.55], [0.1, 0.9]], np.float32)
    true = np.array([[1, 1], [0, 1]], np.uint8)
    scores = per_image_scores(prob, true, (0.4, 0.5))
    assert scores["iou@0.4"] == pytest.approx(1.0)
    assert scores["iou@0.5"] == pytest.approx(2 / 3)
    assert scores["dice@0.5"] == pytest.approx(2 * 2 / 5)


def test_summarize_means_and_thresholded_jaccard_per_iou_key():
    rows = [{"iou@0.5": 0.9, "dice@0.5": 0.95}, {"iou@0.5": 0.5, "dice@0.5": 0.6}]
    summary = summarize(rows, iou_key="iou@0.5")
    assert summary["mean_iou@0.5"] == pytest.approx(0.7)
    assert summary["mean_dice@0.5"] == pytest.approx(0.775)
    assert summary["thresholded_jaccard"] == pytest.approx(0.45)
    assert summary["thresholded_jaccard@0.5"] == pytest.approx(0.45)
    assert summary["images"] == 2


def test_batch_mean_iou_matches_per_image_iou():
    rng = np.random.default_rng(0)
    probs = rng.random((3, 8, 8, 1))
    masks = rng.random((3, 8, 8)) > 0.5
    expected = np.mean([iou(p[..., 0] >= 0.5, m) for p, m in zip(probs, masks, strict=True)])
    assert batch_mean_iou(probs, masks) == pytest.approx(expected)


def test_otsu_baseline_finds_a_dark_central_blob_and_ignores_dark_corners():
    image = np.full((120, 160, 3), (210, 170, 150), np.uint8)
    true = np.zeros((120, 160), np.uint8)
    cv2.ellipse(true, (80, 60), (35, 25), 20, 0, 360, 1, -1)
    image[true.astype(bool)] = (90, 60, 50)
    for y, x in ((0, 0), (0, 150), (110, 0), (110, 150)):
        image[y : y + 10, x : x + 10] = (10, 10, 10)  # dermatoscope vignette
    assert iou(otsu_segment(image), true) > 0.9


def test_otsu_baseline_keeps_the_input_size(synthetic_ham):
    path = next((synthetic_ham / "HAM10000_images_part_1").iterdir())
    image = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    assert otsu_segment(image).shape == image.shape[:2]
