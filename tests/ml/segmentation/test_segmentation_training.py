"""`train-segmentation` end to end on synthetic data, its presets, augmentation and loss."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import keras
import numpy as np
import pytest

from ml.data.ham10000 import DatasetError, read_ham10000, split_hash
from ml.modelcard import SEGMENTATION_CARD, ModelCard
from ml.segmentation.losses import BCEDiceLoss, soft_dice_loss
from ml.segmentation.preprocess import SegmentationAugment, SegmentationPreset, remove_hair
from ml.segmentation.train import add_arguments, cache_arrays, train
from ml.segmentation.unet import Segmenter, UNetConfig, build_unet


def _args(data: Path, tmp: Path, *extra: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(
        [
            "--data",
            str(data),
            "--out",
            str(tmp / "models"),
            "--run-dir",
            str(tmp / "run"),
            "--split",
            str(tmp / "split.csv"),
            "--input-size",
            "32x40",
            "--base-filters",
            "4",
            "--depth",
            "2",
            "--dropout",
            "0.1",
            "--batch-size",
            "4",
            "--lr",
            "5e-3",
            *extra,
        ]
    )


def _loss_on(model, images, masks) -> float:
    probs = model.predict(np.asarray(images, np.float32), verbose=0)
    return float(BCEDiceLoss()(np.asarray(masks, np.float32)[..., None], probs))


@pytest.mark.slow
def test_one_epoch_lowers_the_loss_and_writes_a_verifiable_card(synthetic_ham, tmp_path):
    args = _args(synthetic_ham, tmp_path, "--epochs", "1", "--no-augment")
    keras.utils.set_random_seed(args.seed)  # the same initial weights train() starts from
    initial = build_unet(UNetConfig((32, 40), 4, 2, 0.1))
    train(args)
    images = np.load(tmp_path / "run" / "cache" / "train-32x40-images.npy")
    masks = np.load(tmp_path / "run" / "cache" / "train-32x40-masks.npy")
    trained = keras.saving.load_model(tmp_path / "run" / "last.keras", compile=False)
    assert _loss_on(trained, images, masks) < _loss_on(initial, images, masks)

    card_path = tmp_path / "models" / SEGMENTATION_CARD
    card = ModelCard.load(card_path)
    card.verify(card_path)
    assert card.kind == "segmentation" and card.input_size == [32, 40]
    assert 0.3 <= card.threshold <= 0.7
    assert card.training["split_hash"] == split_hash(tmp_path / "split.csv")
    assert card.preprocessing["hair_removal"] is None
    assert "val_mean_iou@0.4" in card.metrics
    probs = Segmenter.from_card(card_path).predict_proba([np.zeros((64, 80, 3), np.uint8)])
    assert probs[0].shape == (64, 80)


@pytest.mark.slow
def test_rerun_resumes_from_the_run_dir_instead_of_restarting(synthetic_ham, tmp_path):
    train(_args(synthetic_ham, tmp_path, "--epochs", "1"))
    train(_args(synthetic_ham, tmp_path, "--epochs", "2"))
    state = json.loads((tmp_path / "run" / "state.json").read_text())
    assert state["epoch"] == 2
    assert [row["epoch"] for row in state["history"]] == [1, 2]


@pytest.mark.slow
def test_resume_with_different_architecture_is_refused(synthetic_ham, tmp_path):
    train(_args(synthetic_ham, tmp_path, "--epochs", "1"))
    with pytest.raises(ValueError, match="--no-resume"):
        train(_args(synthetic_ham, tmp_path, "--epochs", "2", "--base-filters", "8"))


@pytest.mark.slow
def test_time_budget_stops_after_the_first_epoch_and_keeps_its_checkpoint(synthetic_ham, tmp_path):
    train(_args(synthetic_ham, tmp_path, "--epochs", "5", "--max-minutes", "0.0001"))
    state = json.loads((tmp_path / "run" / "state.json").read_text())
    assert state["epoch"] == 1
    assert (tmp_path / "run" / "best.keras").is_file()
    assert (tmp_path / "models" / SEGMENTATION_CARD).is_file()


@pytest.mark.slow
def test_hair_removal_flag_is_recorded_in_the_card(synthetic_ham, tmp_path):
    train(_args(synthetic_ham, tmp_path, "--epochs", "1", "--hair-removal", "--limit", "8"))
    card = ModelCard.load(tmp_path / "models" / SEGMENTATION_CARD)
    assert card.preprocessing["hair_removal"] == "dullrazor"
    assert list((tmp_path / "run" / "cache").glob("train-32x40-hair-images.npy"))


def test_training_refuses_images_without_masks(synthetic_ham, tmp_path):
    samples = [s for s in read_ham10000(synthetic_ham)][:3]
    broken = [samples[0].__class__(**{**samples[0].__dict__, "mask_path": None}), *samples[1:]]
    with pytest.raises(DatasetError, match="no lesion mask"):
        cache_arrays(broken, SegmentationPreset((32, 40)), tmp_path / "cache" / "train")


def test_hair_removal_erases_thin_dark_lines_but_keeps_the_lesion():
    image = np.full((90, 120, 3), (200, 160, 140), np.uint8)
    cv2.circle(image, (60, 45), 20, (90, 60, 50), -1)
    hairy = image.copy()
    cv2.line(hairy, (0, 10), (119, 80), (30, 25, 20), 1)
    cleaned = remove_hair(hairy)
    line = np.zeros((90, 120), np.uint8)
    cv2.line(line, (0, 10), (119, 80), 1, 1)
    skin_line = line.astype(bool) & (np.abs(image.astype(int) - [200, 160, 140]).sum(-1) == 0)
    assert np.abs(cleaned[skin_line].astype(int) - hairy[skin_line]).mean() > 60  # hair pixels changed
    assert np.abs(cleaned[skin_line].astype(int) - image[skin_line]).mean() < 40  # ... back towards skin
    assert np.abs(cleaned[45, 60].astype(int) - [90, 60, 50]).max() < 10  # lesion centre untouched


def test_augmentation_moves_image_and_mask_together():
    image = np.full((64, 80, 3), 220, np.uint8)
    mask = np.zeros((64, 80), np.uint8)
    cv2.rectangle(mask, (10, 8), (40, 30), 1, -1)
    image[mask.astype(bool)] = 30
    augment = SegmentationAugment(seed=0, brightness=0.0, contrast=0.0, saturation=0.0, hue_deg=0.0)
    for _ in range(5):
        out_image, out_mask = augment(image, mask)
        assert out_image.shape == image.shape and out_mask.shape == mask.shape
        dark = out_image.mean(-1) < 125
        assert (dark == out_mask.astype(bool)).mean() > 0.95


def test_bce_dice_loss_is_near_zero_for_a_perfect_prediction_and_dice_matches_hand_value():
    y = np.zeros((1, 4, 4, 1), np.float32)
    y[0, :2] = 1
    perfect = np.clip(y, 1e-6, 1 - 1e-6)
    assert float(BCEDiceLoss()(y, perfect)) < 0.01
    half = np.full_like(y, 0.5)
    # soft Dice: 2 * (8 * 0.5) / (8 + 8) = 0.5 with smoothing 0.
    assert float(soft_dice_loss(y, half, smooth=0.0)) == pytest.approx(0.5)
    assert float(BCEDiceLoss()(y, half)) > float(BCEDiceLoss()(y, perfect))


@pytest.mark.slow
def test_init_from_a_shipped_card_starts_from_its_weights_and_shape(synthetic_ham, tmp_path):
    from ml.segmentation.unet import Segmenter
    from ml.ship_models import ship

    train(_args(synthetic_ham, tmp_path / "first", "--epochs", "1"))
    shipped = ship(tmp_path / "first" / "models" / SEGMENTATION_CARD, tmp_path / "shipped")
    start = Segmenter.from_card(shipped).model.get_weights()

    # Other shape flags are overridden by the card's; a learning rate of ~0 keeps the weights where they began.
    args = _args(
        synthetic_ham,
        tmp_path / "second",
        "--epochs",
        "1",
        "--no-augment",
        "--lr",
        "1e-12",
        "--base-filters",
        "8",
        "--depth",
        "3",
        "--init-from",
        str(shipped),
    )
    card = train(args)
    assert card["architecture"]["base_filters"] == 4 and card["architecture"]["depth"] == 2
    after = keras.saving.load_model(tmp_path / "second" / "run" / "last.keras", compile=False).get_weights()
    assert len(after) == len(start)
    # float16 shipping rounds the weights; training at lr 1e-12 moves them by far less than that.
    assert all(np.allclose(a, b, atol=2e-3) for a, b in zip(after, start, strict=True))


def test_init_from_refuses_a_card_of_another_kind(synthetic_ham, tmp_path):
    import hashlib

    card = tmp_path / "classifier.json"
    (tmp_path / "w.safetensors").write_bytes(b"x")
    ModelCard(
        kind="classifier",
        name="c",
        labels=["MEL", "NV", "OTHER"],
        input_size=[8, 8],
        weights_file="w.safetensors",
        weights_sha256=hashlib.sha256(b"x").hexdigest(),
    ).save(card)
    with pytest.raises(ValueError, match="'classifier' card, not a segmentation card"):
        train(_args(synthetic_ham, tmp_path, "--epochs", "1", "--init-from", str(card)))
