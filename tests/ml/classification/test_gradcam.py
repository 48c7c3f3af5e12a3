"""Grad-CAM explanations: the judge of an empty or diffuse map, the heatmap itself and its place in the pipeline."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ml.classification.gradcam import DIFFUSE_SHARE, explain, judge_map
from ml.triage.pipeline import HEATMAP_EMPTY_FLAG, Pipeline
from skintriage.vocabulary import LABELS, Tier
from tests.stack import ROOT, demo_model_dir

__all__ = ["demo_model_dir"]

MEL_PHOTO = next((ROOT / "devtools" / "demo_photos").glob("1-mel-*.jpg"))


@pytest.fixture(scope="module")
def pipeline(demo_model_dir: Path) -> Pipeline:
    """The demo models with explanations on, loaded once for this module on one CPU thread."""
    return Pipeline.from_model_dir(demo_model_dir, allow_demo=True, device="cpu", threads=1, explain=True)


def test_an_all_zero_map_shows_nothing() -> None:
    shows_nothing, reason, share = judge_map(np.zeros((7, 7)))
    assert shows_nothing and reason.startswith("empty map") and share == 0.0


def test_a_map_that_lights_up_everything_shows_nothing() -> None:
    cam = np.full((10, 10), 0.9)
    cam[0, 0] = 0.0  # 99% of the map at or above half its peak
    shows_nothing, reason, share = judge_map(cam)
    assert shows_nothing and reason.startswith("diffuse map") and share > DIFFUSE_SHARE


def test_a_focused_map_shows_something() -> None:
    cam = np.zeros((10, 10))
    cam[3:6, 3:6] = 1.0
    assert judge_map(cam) == (False, None, pytest.approx(0.09))


def test_nan_in_a_map_is_treated_as_no_evidence() -> None:
    assert judge_map(np.full((4, 4), np.nan))[0] is True


@pytest.mark.slow
def test_explain_returns_a_heatmap_jpeg_for_the_predicted_or_asked_label(pipeline: Pipeline) -> None:
    rgb = np.asarray(Image.open(MEL_PHOTO).convert("RGB"))
    predicted = LABELS[int(pipeline.classifier.predict_proba([pipeline.classifier.prepare(rgb, None)])[0].argmax())]

    default = explain(pipeline.classifier, rgb)
    asked = explain(pipeline.classifier, rgb, label="NV")

    assert default.label == predicted and asked.label == "NV"
    for result in (default, asked):
        image = Image.open(io.BytesIO(result.jpeg))
        assert image.format == "JPEG" and min(image.size) > 0
        assert result.shows_nothing == (result.reason is not None)
    with pytest.raises(ValueError, match="is not one of"):
        explain(pipeline.classifier, rgb, label="mel")


@pytest.mark.slow
def test_the_pipeline_adds_the_heatmap_of_the_reported_label(pipeline: Pipeline) -> None:
    details = pipeline.run_detailed(MEL_PHOTO.read_bytes())
    result = details.result

    assert result.tier is not Tier.RETAKE
    assert Image.open(io.BytesIO(result.heatmap_jpeg)).format == "JPEG"
    assert result.timings_ms["explain"] > 0
    again = explain(
        pipeline.classifier,
        np.asarray(Image.open(MEL_PHOTO).convert("RGB")),
        mask=np.asarray(Image.open(io.BytesIO(result.mask_png))) > 0,
        label=result.label,
    )
    assert (HEATMAP_EMPTY_FLAG in result.quality_flags) == again.shows_nothing


@pytest.mark.slow
def test_without_explain_there_is_no_heatmap_and_no_cost(pipeline: Pipeline) -> None:
    pipeline.explain = False
    try:
        result = pipeline.run(MEL_PHOTO.read_bytes())
    finally:
        pipeline.explain = True
    assert result.heatmap_jpeg is None and result.timings_ms["explain"] == 0.0


@pytest.mark.slow
def test_a_failing_explanation_never_costs_the_patient_the_answer(pipeline: Pipeline, monkeypatch) -> None:
    def broken(*args, **kwargs):
        raise RuntimeError("no gradients today")

    monkeypatch.setattr("ml.classification.gradcam.explain", broken)
    result = pipeline.run(MEL_PHOTO.read_bytes())
    assert result.tier is not Tier.RETAKE and result.overlay_jpeg and result.heatmap_jpeg is None
