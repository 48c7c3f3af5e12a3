"""The kind-of-photo check: features, its carded arrays, fitting it, and the shipped model on real photos."""

from __future__ import annotations

import argparse
import json
from importlib import resources
from pathlib import Path

import cv2
import numpy as np
import pytest

from ml.data.pad_ufes import pad_split, read_pad
from ml.modelcard import ModelCardError
from ml.triage.modality import MODALITY_CARD, N_FEATURES, ModalityModel, photo_features
from ml.triage.train_modality import add_arguments, fit
from skintriage.vocabulary import Modality
from tests.ml.conftest import phone_like, write_synthetic_pad

SHIPPED = Path(__file__).resolve().parents[3] / "models"


def dermoscopy_like(rng: np.random.Generator, size: int = 160) -> np.ndarray:
    """Evenly lit pink-brown skin with a dark round vignette and a brown blob: how a dermatoscope sees."""
    yy, xx = np.mgrid[0:size, 0:size]
    r = np.hypot(yy - size / 2, xx - size / 2) / (size / 2)
    skin = np.array([215, 150, 140], np.float32) + rng.normal(0, 10, 3)
    img = np.ones((size, size, 3), np.float32) * skin + rng.normal(0, 5, (size, size, 3))
    blob = r < rng.uniform(0.3, 0.5)
    img[blob] = img[blob] * 0.5
    img[r > 0.95] = 8
    return np.clip(img, 0, 255).astype(np.uint8)


def test_features_depend_on_the_centre_square_not_on_size_or_aspect() -> None:
    rng = np.random.default_rng(0)
    square = dermoscopy_like(rng, 300)
    wide = np.concatenate([np.zeros((300, 60, 3), np.uint8), square, np.zeros((300, 60, 3), np.uint8)], axis=1)
    assert photo_features(square).shape == (N_FEATURES,)
    np.testing.assert_allclose(photo_features(wide), photo_features(square), rtol=1e-5, atol=1e-4)
    bigger = cv2.resize(square, (600, 600), interpolation=cv2.INTER_CUBIC)
    a, b = photo_features(square), photo_features(bigger)
    colour = slice(0, 20)  # colour statistics do not move with the photo's resolution
    np.testing.assert_allclose(a[colour], b[colour], atol=3.0)


def test_features_refuse_what_is_not_an_rgb_photo() -> None:
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        photo_features(np.zeros((10, 10), np.uint8))
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        photo_features(np.zeros((10, 10, 3), np.float32))


def _synthetic_datasets(root: Path, synthetic_ham: Path) -> Path:
    """A PAD-UFES-20-layout folder of phone-like photos (three patients per split bucket at least)."""
    return write_synthetic_pad(root / "pad")


def test_pad_reader_and_patient_split(tmp_path: Path, synthetic_ham: Path) -> None:
    pad = read_pad(_synthetic_datasets(tmp_path, synthetic_ham))
    assert len(pad) == 60 and pad[0].symptoms["itch"] is False and pad[0].symptoms["bleed"] is None
    assert {s.split for s in pad} == {"train", "val", "test"}
    assert pad_split("PAT_7") == pad_split("PAT_7")  # a pure function of the patient


def _fit(tmp_path: Path, synthetic_ham: Path) -> tuple[dict, Path]:
    """train-modality on the synthetic datasets; returns its result and the output folder."""
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    out = tmp_path / "models"
    args = parser.parse_args(
        [
            "--ham",
            str(synthetic_ham),
            "--pad",
            str(_synthetic_datasets(tmp_path, synthetic_ham)),
            "--split-csv",
            str(tmp_path / "split.csv"),
            "--out",
            str(out),
            "--cache",
            str(tmp_path / "f.npz"),
            "--folds",
            "3",
        ]
    )
    return fit(args), out


def test_fitted_check_tells_the_kinds_apart_and_refuses_non_skin(tmp_path: Path, synthetic_ham: Path) -> None:
    result, out = _fit(tmp_path, synthetic_ham)
    assert result["metrics"]["test"]["clinical_correct"] == 1.0
    model = ModalityModel.from_card(out / MODALITY_CARD)
    rng = np.random.default_rng(5)
    assert model.judge(phone_like(rng)).modality is Modality.CLINICAL
    green = np.zeros((200, 200, 3), np.uint8)
    green[...] = (40, 160, 60)
    assert model.judge(green).skin_photo is False
    card = json.loads((out / MODALITY_CARD).read_text())
    assert card["kind"] == "modality" and card["training"]["split_hash"]


def test_tampered_arrays_are_refused(tmp_path: Path, synthetic_ham: Path) -> None:
    _, out = _fit(tmp_path, synthetic_ham)
    weights = next(out.glob("modality-*.npz"))
    weights.write_bytes(weights.read_bytes() + b"x")
    with pytest.raises(ModelCardError, match="SHA-256"):
        ModalityModel.from_card(out / MODALITY_CARD)


@pytest.mark.skipif(not (SHIPPED / MODALITY_CARD).is_file(), reason="no shipped modality model")
def test_shipped_check_on_real_photos() -> None:
    model = ModalityModel.from_card(SHIPPED / MODALITY_CARD)
    photos = resources.files("devtools") / "demo_photos"

    def judge(name: str):
        data = np.frombuffer((photos / name).read_bytes(), np.uint8)
        return model.judge(cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB))

    for name in ("1-mel-ISIC_0025964.jpg", "2-nv-ISIC_0024693.jpg", "3-bkl-ISIC_0027419.jpg"):
        verdict = judge(name)
        assert verdict.modality is Modality.DERMOSCOPIC and verdict.skin_photo, name
    phone = judge("6-phone-nv-PAD_PAT_1107_427_352.jpg")
    assert phone.modality is Modality.CLINICAL and phone.skin_photo
