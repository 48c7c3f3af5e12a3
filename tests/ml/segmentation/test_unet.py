"""The Keras U-Net: shapes, the reference profile, size errors, the carded Segmenter and backend equivalence."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from ml.modelcard import SEGMENTATION_CARD, ModelCard, ModelCardError
from ml.segmentation.preprocess import SegmentationPreset
from ml.segmentation.unet import (
    REFERENCE_PROFILE,
    Segmenter,
    UNetConfig,
    build_unet,
    check_input_size,
    save_segmentation_model,
)

TINY = UNetConfig(input_size=(32, 32), base_filters=4, depth=2, dropout=0.3)
REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def tiny_card(tmp_path_factory) -> Path:
    """A saved, carded tiny U-Net with random (seeded) weights."""
    keras.utils.set_random_seed(1)
    model = build_unet(TINY)
    out = tmp_path_factory.mktemp("tiny_unet")
    _, card_path = save_segmentation_model(
        model,
        out,
        config=TINY,
        preset=SegmentationPreset(TINY.input_size),
        threshold=0.5,
        training={"split_hash": "0" * 16},
        metrics={},
    )
    return card_path


def test_unet_maps_an_rgb_batch_to_probabilities_of_the_same_size():
    model = build_unet(UNetConfig(input_size=(32, 48), base_filters=4, depth=3, dropout=0.1))
    x = np.random.default_rng(0).integers(0, 256, (2, 32, 48, 3)).astype("float32")
    y = np.asarray(model.predict(x, verbose=0))
    assert y.shape == (2, 32, 48, 1)
    assert y.min() >= 0.0 and y.max() <= 1.0


def test_reference_profile_is_the_studys_architecture():
    assert REFERENCE_PROFILE.input_size == (448, 592) and REFERENCE_PROFILE.dropout == 0.3
    model = build_unet(REFERENCE_PROFILE)
    kinds = {type(layer).__name__ for layer in model.layers}
    assert {"Conv2D", "Dropout", "MaxPooling2D", "Conv2DTranspose", "Concatenate"} <= kinds
    assert tuple(model.input_shape) == (None, 448, 592, 3)
    assert {layer.rate for layer in model.layers if type(layer).__name__ == "Dropout"} == {0.3}
    pools = [layer for layer in model.layers if type(layer).__name__ == "MaxPooling2D"]
    assert len(pools) == REFERENCE_PROFILE.depth


def test_width_and_depth_are_configurable():
    small = build_unet(UNetConfig(input_size=(32, 32), base_filters=4, depth=2))
    wide = build_unet(UNetConfig(input_size=(32, 32), base_filters=8, depth=3))
    assert small.count_params() < wide.count_params()
    assert len([la for la in wide.layers if type(la).__name__ == "MaxPooling2D"]) == 3


def test_size_not_divisible_by_two_to_the_depth_names_the_nearest_valid_size():
    with pytest.raises(ValueError, match=r"2\*\*depth=16.*\(96, 144\)"):
        check_input_size((100, 150), 4)
    with pytest.raises(ValueError, match=r"\(448, 608\)"):
        build_unet(UNetConfig(input_size=(450, 600), depth=4))
    check_input_size((448, 592), 4)


def test_card_records_kind_threshold_size_and_weights_hash(tiny_card):
    card = ModelCard.load(tiny_card)
    assert card.kind == "segmentation" and card.threshold == 0.5 and card.input_size == [32, 32]
    assert card.weights_file.startswith("unet-") and card.weights_file.endswith(".keras")
    assert card.weights_file[5:17] == card.weights_sha256[:12]
    assert card.verify(tiny_card).is_file()


def test_segmenter_returns_probabilities_at_each_original_size(tiny_card):
    segmenter = Segmenter.from_card(tiny_card, batch_size=2)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, shape, dtype=np.uint8) for shape in ((45, 60, 3), (32, 32, 3), (70, 50, 3))]
    probs = segmenter.predict_proba(images)
    assert [p.shape for p in probs] == [(45, 60), (32, 32), (70, 50)]
    assert all(p.dtype == np.float32 and p.min() >= 0 and p.max() <= 1 for p in probs)
    assert segmenter.version == ModelCard.load(tiny_card).version
    assert [m.dtype for m in segmenter.predict_masks(images[:1])] == [np.bool_]


def test_segmenter_refuses_wrong_input_with_the_expected_format(tiny_card):
    segmenter = Segmenter.from_card(tiny_card)
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        segmenter.predict_proba([np.zeros((10, 10), np.uint8)])
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        segmenter.predict_proba([np.zeros((10, 10, 3), np.float32)])


def test_segmenter_refuses_weights_that_do_not_match_the_card(tiny_card, tmp_path):
    card = ModelCard.load(tiny_card)
    weights = card.weights_path(tiny_card)
    copy_dir = tmp_path / "models"
    copy_dir.mkdir()
    (copy_dir / weights.name).write_bytes(weights.read_bytes() + b"tampered")
    (copy_dir / SEGMENTATION_CARD).write_text(tiny_card.read_text())
    with pytest.raises(ModelCardError, match="SHA-256"):
        Segmenter.from_card(copy_dir / SEGMENTATION_CARD)


_PREDICT = """
import sys, numpy as np
from pathlib import Path
import keras
from ml.segmentation.unet import Segmenter
assert keras.backend.backend() == sys.argv[3], keras.backend.backend()
data = np.load(sys.argv[2])
seg = Segmenter.from_card(Path(sys.argv[1]))
probs = seg.predict_proba([data["a"], data["b"]])
np.savez(sys.argv[4], a=probs[0], b=probs[1])
"""


@pytest.mark.slow
def test_weights_give_the_same_masks_under_tensorflow_and_torch(tiny_card, tmp_path):
    rng = np.random.default_rng(3)
    inputs = tmp_path / "inputs.npz"
    np.savez(
        inputs, a=rng.integers(0, 256, (45, 60, 3), dtype=np.uint8), b=rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    )
    # Both backends at once (each process mostly imports its framework): half the wall time of one after the other.
    procs = {}
    for backend in ("tensorflow", "torch"):
        env = {**os.environ, "KERAS_BACKEND": backend, "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "2"}
        procs[backend] = subprocess.Popen(
            [sys.executable, "-c", _PREDICT, str(tiny_card), str(inputs), backend, str(tmp_path / f"{backend}.npz")],
            cwd=REPO,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
    results = {}
    for backend, proc in procs.items():
        _, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr[-2000:]
        results[backend] = np.load(tmp_path / f"{backend}.npz")
    threshold = json.loads(tiny_card.read_text())["threshold"]
    for key in ("a", "b"):
        tf_p, torch_p = results["tensorflow"][key], results["torch"][key]
        np.testing.assert_allclose(tf_p, torch_p, atol=1e-4)
        decided = np.abs(tf_p - threshold) > 1e-3  # pixels on the threshold may flip on float noise
        assert decided.mean() > 0.9
        np.testing.assert_array_equal((tf_p >= threshold)[decided], (torch_p >= threshold)[decided])


def test_flip_tta_averages_the_four_flipped_predictions(tiny_card):
    from ml.segmentation.unet import predict_small

    segmenter = Segmenter.from_card(tiny_card)
    batch = np.random.default_rng(5).integers(0, 256, (2, 32, 32, 3)).astype(np.float32)
    flipped = (batch, batch[:, :, ::-1], batch[:, ::-1], batch[:, ::-1, ::-1])
    plain = [predict_small(segmenter.model, x) for x in flipped]
    expected = (plain[0] + plain[1][:, :, ::-1] + plain[2][:, ::-1] + plain[3][:, ::-1, ::-1]) / 4
    np.testing.assert_allclose(predict_small(segmenter.model, batch, tta=True), expected, atol=1e-5)
