"""train-classifier and evaluate-classifier on the tiny synthetic HAM10000 (32 px, a few epochs)."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from ml.classification import evaluate as evaluate_classifier
from ml.classification import train as train_classifier
from ml.classification.calibration import energy_threshold
from ml.classification.classifier import Classifier
from ml.data.ham10000 import read_split_csv
from ml.modelcard import CLASSIFIER_CARD, ModelCard, ModelCardError
from skintriage.vocabulary import LABELS

# Settings that let ResNet50 memorise ~30 images within a few epochs: no smoothing, light
# augmentation, constant learning rate; the strong profile's regularisers are for real data.
FAST = [
    "--size",
    "32",
    "--weights",
    "none",
    "--batch-size",
    "8",
    "--threads",
    "1",
    "--augment",
    "light",
    "--label-smoothing",
    "0",
    "--balance",
    "none",
    "--ema",
    "0",
    "--schedule",
    "constant",
    "--warmup",
    "0",
    "--lr",
    "1e-3",
    "--optimizer",
    "adamw",
]


def _args(parser_module, argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser_module.add_arguments(parser)
    return parser.parse_args(argv)


def _train_argv(data: Path, root: Path, *extra: str) -> list[str]:
    return [
        "--data",
        str(data),
        "--out",
        str(root / "model"),
        "--run-dir",
        str(root / "run"),
        "--split-csv",
        str(root / "split.csv"),
        *FAST,
        *extra,
    ]


@pytest.fixture(scope="module")
def trained(synthetic_ham: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """One 8-epoch training run shared by the tests below: (workdir, train() result)."""
    root = tmp_path_factory.mktemp("cls_train")
    result = train_classifier.train(
        _args(
            train_classifier,
            _train_argv(synthetic_ham, root, "--epochs", "8", "--input", "whole", "--ood-percentile", "99.5"),
        )
    )
    return root, result


def test_reference_profile_matches_the_study():
    s = train_classifier.PROFILES["reference"]
    assert (s["optimizer"], s["lr"], s["batch_size"], s["patience"], s["label_smoothing"]) == ("sgd", 1e-3, 64, 50, 0.0)
    assert s["epochs"] == 999


def test_flags_override_profile_defaults():
    args = _args(train_classifier, ["--data", "x", "--profile", "reference", "--lr", "0.01"])
    settings = train_classifier.resolve_settings(args)
    assert settings["lr"] == 0.01
    assert settings["optimizer"] == "sgd"


def test_lesion_crop_is_the_default_input():
    # docs/classification.md: at equal settings the crop beat the whole image on melanoma AUC and
    # specificity at the operating point, so it is what a plain train-classifier run trains.
    assert _args(train_classifier, ["--data", "x"]).input == "crop"


def test_lr_factor_warms_up_then_anneals_to_one_percent():
    f = train_classifier.lr_factor
    assert f(0.025, schedule="cosine", warmup=0.05) == pytest.approx(0.5)
    assert f(0.05, schedule="cosine", warmup=0.05) == pytest.approx(1.0)
    assert f(1.0, schedule="cosine", warmup=0.05) == pytest.approx(0.01)
    assert f(0.7, schedule="constant", warmup=0.0) == 1.0


def test_class_weights_are_inverse_frequency_with_mean_sample_weight_one():
    labels = np.array([0, 1, 1, 1, 2, 2])
    w = train_classifier.class_weights(labels)
    np.testing.assert_allclose(w, [2.0, 2 / 3, 1.0])
    assert w[labels].mean() == pytest.approx(1.0)


def test_ema_warmup_follows_the_model_early():
    update = train_classifier.ema_with_warmup(0.99)
    averaged, current = [torch.zeros(2)], [torch.ones(2)]
    update(averaged, current, torch.tensor(1))  # decay min(0.99, 2/11)
    assert averaged[0][0].item() == pytest.approx(1 - 2 / 11)


@pytest.mark.slow
def test_short_training_run_lowers_the_loss(trained):
    _, result = trained
    history = ModelCard.load(Path(result["card"])).training["history"]
    losses = [h["train_loss"] for h in history]
    assert len(losses) == 8
    assert np.mean(losses[-2:]) < 0.7 * np.mean(losses[:2])


@pytest.mark.slow
def test_training_writes_a_verified_card_with_calibration_and_operating_point(trained):
    _, result = trained
    card_path = Path(result["card"])
    card = ModelCard.load(card_path)
    card.verify(card_path)
    assert card.kind == "classifier"
    assert card.labels == list(LABELS)
    assert card.weights_file == f"resnet50-{card.weights_sha256[:12]}.pt"
    assert card.temperature > 0
    op = card.operating_point
    assert op["target_sensitivity"] == 0.9
    assert op["val_sensitivity"] >= 0.9
    assert set(op) >= {"mel_threshold", "val_specificity", "test_sensitivity", "test_specificity"}
    assert card.preprocessing["input_variant"] == "whole"
    assert card.preprocessing["mean"] == [0.485, 0.456, 0.406]
    assert card.input_size == [32, 32]
    assert len(card.training["split_hash"]) == 16
    assert {"accuracy", "balanced_accuracy", "mel_auc", "ece", "ece_uncalibrated"} <= set(card.metrics["test"])


@pytest.mark.slow
def test_checkpoint_records_args_labels_size_normalisation_and_split(trained):
    root, _ = trained
    ckpt = torch.load(root / "run" / "last.pt", weights_only=True)
    assert ckpt["labels"] == list(LABELS)
    assert ckpt["input_size"] == [32, 32]
    assert ckpt["normalization"]["std"] == [0.229, 0.224, 0.225]
    assert ckpt["split_hash"] == ModelCard.load(root / "model" / CLASSIFIER_CARD).training["split_hash"]
    assert ckpt["args"]["size"] == "32"
    assert ckpt["state"]["epoch"] == 8


@pytest.mark.slow
def test_inference_wrapper_reproduces_the_training_time_validation_numbers(trained, synthetic_ham: Path):
    root, result = trained
    classifier = Classifier.from_card(root / "model" / CLASSIFIER_CARD, device="cpu")
    val = read_split_csv(root / "split.csv", synthetic_ham)["val"]
    out = evaluate_classifier.evaluate(classifier, val)
    assert out["metrics"]["accuracy"] == pytest.approx(result["val"]["accuracy"])
    assert out["metrics"]["nll"] == pytest.approx(result["val"]["nll"], rel=1e-3)


@pytest.mark.slow
def test_resume_continues_from_the_last_checkpoint(trained, synthetic_ham: Path, tmp_path: Path):
    root, _ = trained
    shutil.copytree(root / "run", tmp_path / "run")
    shutil.copy(root / "split.csv", tmp_path / "split.csv")
    argv = _train_argv(synthetic_ham, tmp_path, "--epochs", "9", "--resume", "--input", "whole")
    args = _args(train_classifier, argv)
    result = train_classifier.train(args)
    history = ModelCard.load(Path(result["card"])).training["history"]
    assert [h["epoch"] for h in history] == list(range(1, 10))
    first = json.loads((root / "model" / CLASSIFIER_CARD).read_text())["training"]["history"]
    assert history[:8] == first


@pytest.mark.slow
def test_time_budget_stops_cleanly_and_crop_input_is_recorded(synthetic_ham: Path, tmp_path: Path):
    args = _args(
        train_classifier,
        _train_argv(synthetic_ham, tmp_path, "--epochs", "50", "--input", "crop", "--max-minutes", "0.0001"),
    )
    result = train_classifier.train(args)
    card = ModelCard.load(Path(result["card"]))
    assert card.training["epochs_run"] == 1
    assert card.training["stop_reason"].startswith("time budget")
    assert card.preprocessing["input_variant"] == "crop"
    assert card.preprocessing["crop_margin"] == pytest.approx(0.2)


@pytest.mark.slow
def test_evaluate_classifier_writes_json_markdown_and_plots(trained, synthetic_ham: Path, tmp_path: Path):
    root, _ = trained
    args = _args(
        evaluate_classifier,
        [
            "--card",
            str(root / "model" / CLASSIFIER_CARD),
            "--data",
            str(synthetic_ham),
            "--split-csv",
            str(root / "split.csv"),
            "--out",
            str(tmp_path / "report"),
            "--tta",
        ],
    )
    assert evaluate_classifier.main(args) == 0
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["tta"] is True
    assert set(report["metrics"]["per_class"]) == set(LABELS)
    assert {"ece_uncalibrated", "ece_calibrated"} <= set(report)
    assert "accuracy_full_prevalence" in report["metrics"]
    for name in ("report.md", "confusion.png", "roc.png", "reliability.png"):
        assert (tmp_path / "report" / name).stat().st_size > 0


# ---- the out-of-distribution energy threshold ------------------------------------------------------


@pytest.mark.slow
def test_training_card_carries_the_ood_energy_threshold_from_validation(trained, synthetic_ham: Path):
    root, _ = trained
    card_path = root / "model" / CLASSIFIER_CARD
    op = ModelCard.load(card_path).operating_point
    val = read_split_csv(root / "split.csv", synthetic_ham)["val"]
    assert op["ood_percentile"] == 99.5
    assert op["ood_val_images"] == len(val)
    assert op["ood_val_refused"] <= 0.005
    assert 0 <= op["ood_test_refused"] <= 1
    # Scored like the pipeline scores photos: the inference wrapper's raw logits of the same val photos.
    logits, _ = evaluate_classifier.predict_logits(Classifier.from_card(card_path, device="cpu"), val)
    assert op["ood_energy_threshold"] == pytest.approx(energy_threshold(logits, 99.5), abs=1e-4)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ([], 99.5),  # pretrained (imagenet) start: the check is written
        (["--weights", "none"], 0.0),  # from scratch: no check unless asked for
        (["--weights", "none", "--ood-percentile", "99"], 99.0),
        (["--weights", "resnet50.pth", "--ood-percentile", "0"], 0.0),
    ],
)
def test_ood_check_defaults_to_off_for_a_model_trained_from_scratch(argv, expected):
    assert train_classifier.ood_percentile_for(_args(train_classifier, ["--data", "x", *argv])) == expected


def test_ood_percentile_zero_leaves_the_check_out():
    assert train_classifier.ood_check(np.zeros((4, 3)), np.zeros((4, 3)), 0.0) == {}
    with pytest.raises(SystemExit):
        _args(train_classifier, ["--data", "x", "--ood-percentile", "150"])


@pytest.mark.slow
def test_calibrate_ood_rewrites_an_existing_card_in_place(trained, synthetic_ham: Path, tmp_path: Path):
    root, _ = trained
    model_dir = tmp_path / "model"
    shutil.copytree(root / "model", model_dir)
    card_path = model_dir / CLASSIFIER_CARD
    before = ModelCard.load(card_path)
    trained_op = dict(before.operating_point)
    before.operating_point = {k: v for k, v in trained_op.items() if not k.startswith("ood_")}
    before.save(card_path)  # as a card written before train-classifier calibrated the OOD check
    argv = [
        "--model-dir",
        str(model_dir),
        "--data",
        str(synthetic_ham),
        "--split-csv",
        str(root / "split.csv"),
        "--threads",
        "1",
    ]

    assert evaluate_classifier.main(_args(evaluate_classifier, [*argv, "--calibrate-ood"])) == 0

    after = ModelCard.load(card_path)
    after.verify(card_path)  # the rewritten card still matches its weights
    op = after.operating_point
    assert op["ood_energy_threshold"] == pytest.approx(trained_op["ood_energy_threshold"], abs=1e-4)
    assert (op["ood_percentile"], op["ood_val_images"]) == (99.5, trained_op["ood_val_images"])
    assert "ood_test_refused" not in op  # evaluate-classifier calibrates on val only
    assert {k: v for k, v in op.items() if not k.startswith("ood_")} == before.operating_point
    assert {**vars(after), "operating_point": None} == {**vars(before), "operating_point": None}
    assert json.loads(card_path.read_text())["operating_point"] == op  # round-trips through the JSON

    # An explicit percentile replaces the threshold; 0 removes the check.
    assert evaluate_classifier.main(_args(evaluate_classifier, [*argv, "--calibrate-ood", "50"])) == 0
    assert ModelCard.load(card_path).operating_point["ood_percentile"] == 50.0
    assert evaluate_classifier.main(_args(evaluate_classifier, [*argv, "--calibrate-ood", "0"])) == 0
    assert ModelCard.load(card_path).operating_point == before.operating_point


@pytest.mark.slow
def test_calibrate_probabilities_stores_matrix_scaling_and_the_threshold_chosen_with_it(
    trained, synthetic_ham: Path, tmp_path: Path
):
    root, _ = trained
    model_dir = tmp_path / "model"
    shutil.copytree(root / "model", model_dir)
    card_path = model_dir / CLASSIFIER_CARD
    before = ModelCard.load(card_path)
    argv = ["--model-dir", str(model_dir), "--data", str(synthetic_ham), "--split-csv", str(root / "split.csv"),
            "--threads", "1"]  # fmt: skip

    assert evaluate_classifier.main(_args(evaluate_classifier, [*argv, "--calibrate-probabilities"])) == 0

    after = ModelCard.load(card_path)
    after.verify(card_path)
    entry = after.calibration
    assert entry["method"] == "matrix_scaling" and entry["C"] > 0
    assert set(entry["val"]) == {
        "temperature",
        "temperature_out_of_fold",
        "matrix_scaling_out_of_fold",
        "matrix_scaling_in_sample",
    }
    # The threshold in the card is the one the lower-bound rule picks on the new probabilities.
    classifier = Classifier.from_card(card_path, device="cpu")
    samples = read_split_csv(root / "split.csv", synthetic_ham)["val"]
    again = evaluate_classifier.calibrate_threshold(classifier, samples, confidence=0.95)
    assert after.operating_point["mel_threshold"] == pytest.approx(again["mel_threshold"])
    assert after.operating_point["val_sensitivity_lower_bound"] == pytest.approx(again["val_sensitivity_lower_bound"])
    # Only the calibration and the operating point changed; the temperature stays for the record.
    assert {**vars(after), "calibration": None, "operating_point": None} == {
        **vars(before),
        "calibration": None,
        "operating_point": None,
    }
    # The test report says which calibration it scored with.
    out = tmp_path / "report"
    assert evaluate_classifier.main(_args(evaluate_classifier, [*argv, "--out", str(out)])) == 0
    assert json.loads((out / "report.json").read_text())["calibration"] == "matrix scaling"
    assert "matrix scaling" in (out / "report.md").read_text()


@pytest.mark.slow
def test_calibrate_ood_refuses_the_test_split_and_a_foreign_split(trained, synthetic_ham: Path, tmp_path: Path):
    root, _ = trained
    card = str(root / "model" / CLASSIFIER_CARD)
    before = (root / "model" / CLASSIFIER_CARD).read_text()
    base = ["--card", card, "--data", str(synthetic_ham), "--calibrate-ood"]
    assert (
        evaluate_classifier.main(
            _args(evaluate_classifier, [*base, "--split-csv", str(root / "split.csv"), "--split", "test"])
        )
        == 2
    )
    other = tmp_path / "split.csv"
    other.write_text((root / "split.csv").read_text() + "\n")
    assert evaluate_classifier.main(_args(evaluate_classifier, [*base, "--split-csv", str(other)])) == 2
    assert (root / "model" / CLASSIFIER_CARD).read_text() == before


@pytest.mark.slow
def test_write_ood_to_card_refuses_a_card_that_now_names_other_weights(trained, tmp_path: Path):
    root, _ = trained
    shutil.copytree(root / "model", tmp_path / "model")
    with pytest.raises(ModelCardError, match="run the calibration again"):
        evaluate_classifier.write_ood_to_card(tmp_path / "model" / CLASSIFIER_CARD, {}, weights_sha256="0" * 64)


@pytest.mark.slow
def test_clinical_photos_join_training_cropped_by_the_unet(synthetic_ham: Path, tmp_path: Path):
    """--clinical-data: PAD train patients join training (repeated), val patients are scored, test never used."""
    from ml.data.pad_ufes import read_pad
    from tests.ml.conftest import write_synthetic_pad

    pad = write_synthetic_pad(tmp_path / "pad")
    seg_card = Path(__file__).resolve().parents[3] / "models" / "segmentation.json"
    argv = _train_argv(synthetic_ham, tmp_path, "--epochs", "1", "--input", "crop", "--arch", "resnet18")
    argv += ["--clinical-data", str(pad), "--clinical-repeat", "2", "--seg-card", str(seg_card)]
    card = ModelCard.load(Path(train_classifier.train(_args(train_classifier, argv))["card"]))

    photos = read_pad(pad)
    ham_train = len(read_split_csv(tmp_path / "split.csv", synthetic_ham)["train"])
    n_train = sum(s.split == "train" for s in photos)
    n_val = sum(s.split == "val" for s in photos)
    assert card.training["n_images"]["train"] == ham_train + 2 * n_train
    assert card.training["n_images"]["pad_val"] == n_val
    clinical = card.training["clinical"]
    assert clinical["crop_masks"] == ModelCard.load(seg_card).version and clinical["repeat"] == 2
    assert "mel_auc" in clinical["val_patients_metrics"]
    assert 0.0 <= card.training["history"][0]["pad_val_mel_auc"] <= 1.0
    assert "clinical photos" in card.preprocessing["crop_masks"]
    # The U-Net crops are cached once per split for later runs.
    assert sorted(p.name.split("-")[1] for p in (tmp_path / "run" / "cache").glob("pad-*.npy")) == ["train", "val"]


def test_clinical_photos_need_the_crop_input(synthetic_ham: Path, tmp_path: Path):
    pad = tmp_path / "pad"
    argv = _train_argv(synthetic_ham, tmp_path, "--epochs", "1", "--input", "whole", "--clinical-data", str(pad))
    with pytest.raises(ValueError, match="--input crop"):
        train_classifier.train(_args(train_classifier, argv))
