"""The models shipped in models/: trusted cards, the size budget, real answers on a fresh clone, and ship-models."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from ml.modelcard import CLASSIFIER_CARD, SEGMENTATION_CARD, ModelCard, ModelCardError
from ml.ship_models import MAX_SHIPPED_MB, SHIPPED_DIR, ship, shipped_megabytes
from ml.triage.cli import SCHEMA_FILE
from ml.triage.modality import MODALITY_CARD
from skintriage.settings import SHIPPED_MODEL_DIR
from tests.stack import ROOT, demo_model_dir

__all__ = ["demo_model_dir"]

PHOTOS = ROOT / "devtools" / "demo_photos"
CARDS = (SEGMENTATION_CARD, CLASSIFIER_CARD, MODALITY_CARD)
shipped = pytest.mark.skipif(
    not all((SHIPPED_DIR / c).is_file() for c in CARDS), reason="models/ does not hold all three shipped models"
)


def test_the_default_model_dir_is_the_shipped_folder() -> None:
    assert SHIPPED_MODEL_DIR == SHIPPED_DIR == ROOT / "models"


@shipped
def test_shipped_cards_are_trusted_real_models_within_the_size_budget() -> None:
    splits = set()
    for name in CARDS:
        card = ModelCard.load(SHIPPED_DIR / name)
        card.verify(SHIPPED_DIR / name)
        assert card.demo is False, name
        assert card.metrics.get("test"), f"{name} records no test metrics"
        splits.add(card.training.get("split_hash"))
    assert len(splits) == 1, f"the shipped models were trained on different splits: {splits}"
    assert shipped_megabytes(SHIPPED_DIR) <= MAX_SHIPPED_MB


@pytest.mark.slow
@shipped
def test_skintriage_triage_with_the_shipped_models_names_the_kind_of_photo(tmp_path: Path) -> None:
    """A fresh clone's `skintriage triage` on a dermoscopy image and a phone photo: a tier and the kind of photo."""
    derm, phone = PHOTOS / "1-mel-ISIC_0025964.jpg", next(PHOTOS.glob("6-phone-*.jpg"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_") and k != "MODEL_DIR"}
    env.update({"KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(ROOT)})
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "skintriage.cli",
            "triage",
            str(derm),
            str(phone),
            "--json",
            "--out",
            str(tmp_path / "out"),
            "--threads",
            "1",
        ],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA_FILE.read_text()))
    for record in records:
        validator.validate(record)
    by_file = {Path(r["file"]).name: r for r in records}
    d, p = by_file[derm.name], by_file[phone.name]
    assert d["demo_model"] is False and d["model_versions"]["modality"].startswith("modality-lr@")
    assert (d["modality"], p["modality"]) == ("dermoscopic", "clinical")
    assert d["tier"] in {"HIGH", "MEDIUM", "LOW", "UNCERTAIN"}
    assert p["tier"] in {"HIGH", "MEDIUM", "UNCERTAIN", "RETAKE"}  # an ordinary photo is never told LOW


@pytest.mark.slow
def test_ship_models_writes_compact_weights_that_answer_as_the_originals(demo_model_dir: Path, tmp_path: Path) -> None:
    from ml.classification.classifier import Classifier
    from ml.data.ham10000 import read_image_rgb
    from ml.segmentation.unet import Segmenter

    source = tmp_path / "trained"
    shutil.copytree(demo_model_dir, source)
    for name in (SEGMENTATION_CARD, CLASSIFIER_CARD):
        card = ModelCard.load(source / name)
        with pytest.raises(ModelCardError, match="demo models are never shipped"):
            ship(source / name, tmp_path / "refused")
        card.demo = False  # stands in for a real training run's card
        card.save(source / name)
    out = tmp_path / "models"
    for name in (SEGMENTATION_CARD, CLASSIFIER_CARD):
        ship(source / name, out)
        shipped_card = ModelCard.load(out / name)
        assert shipped_card.weights_file.endswith(".safetensors")
        assert shipped_card.training["compacted_from"]["weights_sha256"] == ModelCard.load(source / name).weights_sha256
    photo = read_image_rgb(PHOTOS / "1-mel-ISIC_0025964.jpg")
    original, compact = Segmenter.from_card(source / SEGMENTATION_CARD), Segmenter.from_card(out / SEGMENTATION_CARD)
    assert np.abs(original.predict_proba([photo])[0] - compact.predict_proba([photo])[0]).max() < 0.02
    a, b = Classifier.from_card(source / CLASSIFIER_CARD, "cpu"), Classifier.from_card(out / CLASSIFIER_CARD, "cpu")
    np.testing.assert_allclose(a.predict_proba([photo]), b.predict_proba([photo]), atol=0.01)
    assert sum(p.stat().st_size for p in out.iterdir()) < sum(p.stat().st_size for p in source.iterdir())
