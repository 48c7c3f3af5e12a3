"""The kind-of-photo check: features, its carded arrays, fitting it, and the shipped model on real photos."""

from __future__ import annotations

import argparse
import hashlib
import json
from importlib import resources
from pathlib import Path

import cv2
import numpy as np
import pytest

from ml.data.pad_ufes import pad_split, read_pad
from ml.modelcard import ModelCardError
from ml.triage.modality import MODALITY_CARD, N_FEATURES, ModalityModel, ModalityParams, photo_features
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


def test_glare_and_fine_texture_features_tell_a_lamp_lit_photo_from_dermoscopy() -> None:
    rng = np.random.default_rng(3)
    glare = slice(76, 79)  # feature version 4: share of glare pixels, log count of glare spots, their contrast
    phone, derm = photo_features(phone_like(rng, 300)), photo_features(dermoscopy_like(rng, 300))
    assert phone[glare][1] > derm[glare][1]
    lbp = photo_features(dermoscopy_like(rng, 300))[79:]
    np.testing.assert_allclose([lbp[:10].sum(), lbp[10:20].sum(), lbp[20:].sum()], 1.0, rtol=1e-5)


def test_cards_of_the_previous_feature_version_still_load_and_judge(tmp_path: Path, synthetic_ham: Path) -> None:
    _, out = _fit(tmp_path, synthetic_ham)
    card = json.loads((out / MODALITY_CARD).read_text())
    weights = out / card["weights_file"]
    with np.load(weights, allow_pickle=False) as data:
        arrays = dict(data)
    old = ModalityParams(
        mean=arrays["mean"][:76],
        scale=arrays["scale"][:76],
        coef=arrays["coef"][:76],
        intercept=float(arrays["intercept"]),
        centre=arrays["centre"][:76],
        precision=np.linalg.inv(np.linalg.inv(arrays["precision"])[:76, :76]),
        feature_version=3,
    )
    old.save(tmp_path / "old.npz")
    loaded = ModalityParams.load(tmp_path / "old.npz")
    assert loaded.feature_version == 3
    features = photo_features(phone_like(np.random.default_rng(2)))
    assert loaded.p_clinical(features).shape == (1,) and np.isfinite(loaded.distance(features)).all()
    with pytest.raises(ValueError, match="expected 109 features"):
        loaded.p_clinical(features[:76])


def test_arrays_of_an_unknown_feature_version_are_refused_with_how_to_fix(tmp_path: Path, synthetic_ham: Path) -> None:
    _, out = _fit(tmp_path, synthetic_ham)
    card = json.loads((out / MODALITY_CARD).read_text())
    weights = out / card["weights_file"]
    with np.load(weights, allow_pickle=False) as data:
        arrays = dict(data)
    arrays["feature_version"] = np.int64(2)
    np.savez(weights, **arrays)
    card["weights_sha256"] = hashlib.sha256(weights.read_bytes()).hexdigest()
    (out / MODALITY_CARD).write_text(json.dumps(card))
    with pytest.raises(ModelCardError, match="feature version 2.*retrain it with `skintriage train-modality`"):
        ModalityModel.from_card(out / MODALITY_CARD)
