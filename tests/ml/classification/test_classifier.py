"""The carded classifier: label order end to end, refusing bad cards, preprocessing, crops and Grad-CAM."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from ml.classification.calibration import MatrixScaling, softmax
from ml.classification.classifier import Classifier, build_resnet50, export_weights, init_model
from ml.classification.crop import crop_to_lesion, lesion_box
from ml.classification.gradcam import explain, judge_map
from ml.classification.preprocess import Normalize, TrainAugment, fit_to_input, parse_size
from ml.classification.train import label_indices
from ml.data.ham10000 import read_ham10000
from ml.errors import ModelUnavailableError, WeightsUnavailableError
from ml.modelcard import CLASSIFIER_CARD, ModelCard
from skintriage.vocabulary import LABELS, MEL_INDEX

INPUT = 32


def _rigged_state(winner: int) -> dict[str, torch.Tensor]:
    """A ResNet50 whose head ignores the image and always scores class `winner` highest."""
    torch.manual_seed(0)
    model = build_resnet50()
    with torch.no_grad():
        model.fc.weight.zero_()
        model.fc.bias.copy_(torch.tensor([0.0, 0.0, 0.0]))
        model.fc.bias[winner] = 3.0
    return model.state_dict()


def _write_card(model_dir: Path, state: dict[str, torch.Tensor], **overrides) -> Path:
    """Export weights and a classifier card the way train-classifier does."""
    weights, sha = export_weights(state, model_dir)
    fields = {
        "kind": "classifier",
        "name": "test-resnet50",
        "weights_file": weights.name,
        "weights_sha256": sha,
        "input_size": [INPUT, INPUT],
        "labels": list(LABELS),
        "temperature": 2.0,
        "operating_point": {"mel_threshold": 0.4, "target_sensitivity": 0.9},
        "preprocessing": {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "input_variant": "whole"},
    }
    fields.update(overrides)
    card_path = model_dir / CLASSIFIER_CARD
    ModelCard(**fields).save(card_path)
    return card_path


@pytest.fixture(scope="module")
def mel_card(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A card whose model always says MEL (index 0)."""
    return _write_card(tmp_path_factory.mktemp("mel_model"), _rigged_state(winner=0))


def _photo(h: int = 45, w: int = 60, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_labels_are_pinned_in_this_order():
    assert LABELS == ("MEL", "NV", "OTHER")
    assert MEL_INDEX == 0


def test_dataset_labels_map_to_pinned_indices(synthetic_ham: Path):
    samples = read_ham10000(synthetic_ham)
    idx = label_indices(samples)
    by_dx = {dx: set(idx[[s.dx == dx for s in samples]].tolist()) for dx in {s.dx for s in samples}}
    assert by_dx["mel"] == {0}
    assert by_dx["nv"] == {1}
    assert by_dx["bkl"] == {2}
    assert by_dx["bcc"] == {2}


@pytest.mark.slow
def test_output_column_zero_is_melanoma_end_to_end(mel_card: Path):
    classifier = Classifier.from_card(mel_card, device="cpu")
    probs = classifier.predict_proba([_photo(), _photo(seed=1)])
    assert probs.shape == (2, 3)
    assert probs.argmax(1).tolist() == [0, 0]
    assert LABELS[int(probs[0].argmax())] == "MEL"
    assert classifier.is_melanoma_alert(probs).all()


def test_nevus_model_is_not_a_melanoma_alert(tmp_path: Path):
    classifier = Classifier.from_card(_write_card(tmp_path, _rigged_state(winner=1)), device="cpu")
    probs = classifier.predict_proba([_photo()])
    assert LABELS[int(probs[0].argmax())] == "NV"
    assert not classifier.is_melanoma_alert(probs).any()


@pytest.mark.slow
def test_predict_proba_is_softmax_of_logits_over_temperature(mel_card: Path):
    classifier = Classifier.from_card(mel_card, device="cpu")
    images = [_photo(seed=2), _photo(80, 50, seed=3)]
    logits = classifier.logits(images)
    np.testing.assert_allclose(classifier.predict_proba(images), softmax(logits, 2.0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(classifier.predict_proba(images).sum(1), 1.0, rtol=1e-5)
    assert classifier.temperature == 2.0
    assert classifier.mel_threshold == 0.4
    assert classifier.version.startswith("test-resnet50@")


@pytest.mark.slow
def test_a_card_with_matrix_scaling_uses_it_instead_of_the_temperature(tmp_path: Path):
    scaling = MatrixScaling(np.diag([0.5, 1.0, 2.0]), np.array([1.0, 0.0, -1.0]))
    card = _write_card(tmp_path, _rigged_state(winner=0), calibration=scaling.to_card(C=1.0))
    classifier = Classifier.from_card(card, device="cpu")
    images = [_photo(seed=4)]
    logits = classifier.logits(images)
    np.testing.assert_allclose(classifier.predict_proba(images), scaling.probabilities(logits), rtol=1e-5, atol=1e-6)
    assert not np.allclose(classifier.predict_proba(images), softmax(logits, 2.0), atol=1e-3)


def test_loading_refuses_a_malformed_calibration(tmp_path: Path):
    card = _write_card(tmp_path, _rigged_state(winner=0), calibration={"method": "isotonic"})
    with pytest.raises(ModelUnavailableError, match="unknown calibration method"):
        Classifier.from_card(card, device="cpu")


def test_loading_refuses_swapped_label_order(tmp_path: Path):
    card = _write_card(tmp_path, _rigged_state(winner=0), labels=["NV", "MEL", "OTHER"])
    with pytest.raises(ModelUnavailableError, match="label order"):
        Classifier.from_card(card, device="cpu")


def test_loading_refuses_weights_whose_hash_does_not_match(tmp_path: Path):
    card = _write_card(tmp_path, _rigged_state(winner=0))
    data = json.loads(card.read_text())
    (tmp_path / data["weights_file"]).write_bytes((tmp_path / data["weights_file"]).read_bytes() + b"x")
    with pytest.raises(ModelUnavailableError, match="SHA-256"):
        Classifier.from_card(card, device="cpu")


def test_loading_refuses_a_segmentation_card(tmp_path: Path):
    card = _write_card(tmp_path, _rigged_state(winner=0), kind="segmentation")
    with pytest.raises(ModelUnavailableError, match="classifier"):
        Classifier.from_card(card, device="cpu")


def test_exported_weights_are_a_plain_state_dict_named_by_hash(mel_card: Path):
    card = ModelCard.load(mel_card)
    path = card.weights_path(mel_card)
    assert path.name == f"resnet50-{card.weights_sha256[:12]}.pt"
    state = torch.load(path, weights_only=True)
    assert isinstance(state, dict)
    assert all(isinstance(v, torch.Tensor) for v in state.values())


def test_predict_proba_refuses_wrong_input(mel_card: Path):
    classifier = Classifier.from_card(mel_card, device="cpu")
    with pytest.raises(ValueError, match="list"):
        classifier.predict_proba(np.stack([_photo(), _photo()]))
    with pytest.raises(ValueError, match="uint8"):
        classifier.predict_proba([_photo().astype(np.float32)])
    with pytest.raises(ValueError, match="no images"):
        classifier.predict_proba([])


def test_imagenet_weights_missing_offline_says_how_to_provide_them(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(WeightsUnavailableError, match="--weights none") as info:
        init_model("imagenet", allow_download=False)
    assert str(tmp_path) in str(info.value)
    assert "download.pytorch.org" in str(info.value)


def test_init_from_a_1000_class_state_dict_keeps_body_and_drops_head(tmp_path: Path):
    from torchvision.models import resnet50

    torch.manual_seed(1)
    source = resnet50(weights=None, num_classes=1000).state_dict()
    path = tmp_path / "imagenet-like.pth"
    torch.save(source, path)
    model = init_model(str(path))
    assert model.fc.out_features == len(LABELS)
    assert torch.equal(model.state_dict()["conv1.weight"], source["conv1.weight"])


def test_init_refuses_missing_weights_file(tmp_path: Path):
    with pytest.raises(WeightsUnavailableError, match="does not exist"):
        init_model(str(tmp_path / "nope.pt"))


def test_parse_size_accepts_square_and_height_by_width():
    assert parse_size("128") == (128, 128)
    assert parse_size("96x128") == (96, 128)
    with pytest.raises(ValueError, match="height x width"):
        parse_size("big")


def test_fit_to_input_centre_crops_to_aspect_instead_of_squashing():
    image = np.zeros((40, 80, 3), np.uint8)
    image[:, 20:60] = 255  # the central square is white, the sides black
    out = fit_to_input(image, (32, 32))
    assert out.shape == (32, 32, 3)
    assert out.min() == 255


def test_normalize_and_train_augment_shapes():
    batch = np.stack([_photo(40, 40, seed=i) for i in range(4)])
    x = TrainAugment((32, 32), strength="strong", seed=0)(batch)
    assert x.shape == (4, 3, 32, 32)
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    assert Normalize()(batch).shape == (4, 3, 40, 40)


def test_lesion_box_is_square_with_margin_and_inside_image():
    mask = np.zeros((100, 200), np.uint8)
    mask[40:60, 90:110] = 1  # 20x20 lesion
    x0, y0, x1, y1 = lesion_box(mask, margin=0.25)
    assert (x1 - x0, y1 - y0) == (30, 30)
    assert (x0, y0) == (85, 35)
    corner = np.zeros((100, 200), np.uint8)
    corner[0:10, 0:10] = 1
    assert lesion_box(corner, margin=0.5)[:2] == (0, 0)


def test_crop_to_lesion_keeps_whole_image_for_empty_mask_and_checks_shape():
    image = _photo(50, 60)
    assert crop_to_lesion(image, np.zeros((50, 60), np.uint8)) is image
    with pytest.raises(ValueError, match="resize the mask"):
        crop_to_lesion(image, np.zeros((10, 10), np.uint8))


def test_judge_map_flags_empty_and_diffuse_maps():
    assert judge_map(np.zeros((8, 8)))[0] is True
    assert judge_map(np.ones((8, 8)))[0] is True
    peaked = np.zeros((8, 8))
    peaked[3:5, 3:5] = 1.0
    shows_nothing, reason, share = judge_map(peaked)
    assert shows_nothing is False and reason is None
    assert share == pytest.approx(4 / 64)


@pytest.mark.slow
def test_gradcam_returns_a_decodable_overlay_and_a_verdict(mel_card: Path):
    import cv2

    classifier = Classifier.from_card(mel_card, device="cpu")
    result = explain(classifier, _photo(45, 60))
    decoded = cv2.imdecode(np.frombuffer(result.jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert decoded is not None and decoded.shape[2] == 3
    assert result.label == "MEL"
    # The rigged head ignores the image (zero weights), so Grad-CAM has nothing to show.
    assert result.shows_nothing is True
    assert result.reason
