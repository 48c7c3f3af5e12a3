"""The whole triage pipeline on the demo models: results, batching, bad bytes and the trust checks on model cards."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from ml.errors import ModelUnavailableError
from ml.modelcard import CLASSIFIER_CARD, SEGMENTATION_CARD, ModelCard
from ml.triage.modality import MODALITY_CARD, ModalityVerdict
from ml.triage.pipeline import STAGES, UNLIKE_LESION_PHOTOS_FLAG, Pipeline, load_verified_card
from ml.triage.policy import decide_tier
from ml.triage.quality import QualityReport
from ml.triage.result import TriageResult
from skintriage.vocabulary import LABELS, Modality, RetakeReason, Tier
from tests.factories import lesion_photo
from tests.stack import ROOT, demo_model_dir

__all__ = ["demo_model_dir"]

PHOTOS = ROOT / "devtools" / "demo_photos"
EXIF_ORIENTATION = 0x0112


def _photo(pattern: str) -> Path:
    (path,) = sorted(PHOTOS.glob(pattern))
    return path


MEL_PHOTO = _photo("1-mel-*.jpg")
NV_PHOTO = _photo("2-nv-*.jpg")
UNUSABLE_PHOTO = _photo("5-unusable-*.jpg")


@pytest.fixture(scope="module")
def pipeline(demo_model_dir: Path) -> Pipeline:
    """The demo models loaded once for this module, on CPU with one thread (the machine is shared)."""
    return Pipeline.from_model_dir(demo_model_dir, allow_demo=True, device="cpu", threads=1, decode_workers=2)


def _decoded(data: bytes | None) -> Image.Image:
    assert data is not None
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def _assert_same(batched: TriageResult, single: TriageResult) -> None:
    """Two results of the same photo agree (batched model calls may differ in float rounding only)."""
    for name in (
        "tier",
        "label",
        "retake_reason",
        "quality_flags",
        "image_width",
        "image_height",
        "lesion_area_px",
        "lesion_diameter_px",
        "model_versions",
        "demo_model",
        "mel_threshold",
        "measurements",
    ):
        assert getattr(batched, name) == getattr(single, name), name
    assert list(batched.probabilities) == list(single.probabilities)
    for label, p in single.probabilities.items():
        assert batched.probabilities[label] == pytest.approx(p, abs=1e-5)
    assert (batched.mask_png is None) == (single.mask_png is None)
    if single.mask_png is not None:
        assert np.array_equal(np.asarray(_decoded(batched.mask_png)), np.asarray(_decoded(single.mask_png)))


# ---- results on real photos -------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("photo", [MEL_PHOTO, NV_PHOTO], ids=lambda p: p.name)
def test_real_photo_gives_a_full_result(pipeline: Pipeline, demo_model_dir: Path, photo: Path) -> None:
    width, height = Image.open(photo).size
    result = pipeline.run(photo.read_bytes())

    assert result.tier is not Tier.RETAKE, result
    assert result.retake_reason is None
    assert (result.image_width, result.image_height) == (width, height)

    overlay = _decoded(result.overlay_jpeg)
    assert (overlay.format, overlay.size, overlay.mode) == ("JPEG", (width, height), "RGB")
    mask = _decoded(result.mask_png)
    assert (mask.format, mask.size, mask.mode) == ("PNG", (width, height), "L")
    mask_array = np.asarray(mask)
    assert set(np.unique(mask_array)) <= {0, 255}
    assert int((mask_array > 0).sum()) == result.lesion_area_px > 0
    assert result.lesion_diameter_px is not None and result.lesion_diameter_px > 0
    # Measurements of the same mask, on the photo itself (ml.triage.measurements has the definitions' tests).
    m = result.measurements
    assert m is not None and m.area_px == result.lesion_area_px
    assert m.area_share == pytest.approx(result.lesion_area_px / (width * height), abs=1e-5)
    assert m.diameter_px == pytest.approx(result.lesion_diameter_px, abs=1.5)
    assert m.diameter_share == pytest.approx(m.diameter_px / max(width, height), abs=1e-3)
    assert 0 <= m.asymmetry_major_axis <= 1 and 0 <= m.asymmetry_minor_axis <= 1
    assert m.compactness >= 0.95 and m.convexity_ratio >= 0.99
    assert 1 <= m.colour_count == len(m.colours) <= 6

    assert list(result.probabilities) == list(LABELS)
    assert sum(result.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    assert all(0.0 <= p <= 1.0 for p in result.probabilities.values())
    assert result.label in LABELS

    assert set(result.timings_ms) == set(STAGES)
    # Every stage ran and took time, but Grad-CAM, which this module's pipeline leaves off (explain=False).
    assert all(result.timings_ms[stage] > 0 for stage in STAGES if stage != "explain"), result.timings_ms
    assert result.timings_ms["explain"] == 0.0
    assert result.timings_ms["total"] >= max(result.timings_ms[s] for s in STAGES if s != "total")

    seg = ModelCard.load(demo_model_dir / SEGMENTATION_CARD)
    cls = ModelCard.load(demo_model_dir / CLASSIFIER_CARD)
    assert result.model_versions == {"segmentation": seg.version, "classifier": cls.version}
    assert result.demo_model is True
    assert result.mel_threshold == pytest.approx(cls.operating_point["mel_threshold"])

    # The tier is the policy's answer to the reported probabilities and flags.
    gate_unsure = QualityReport(flags=list(result.quality_flags)).unsure
    expected = decide_tier(result.probabilities, mel_threshold=result.mel_threshold, gate_unsure=gate_unsure)
    assert (result.tier, result.label) == (expected.tier, expected.label)


@pytest.mark.slow
def test_exif_rotated_photo_comes_back_in_its_displayed_size(pipeline: Pipeline) -> None:
    stored = Image.open(MEL_PHOTO)
    exif = stored.getexif()
    exif[EXIF_ORIENTATION] = 6  # displayed rotated by 90 degrees: 600x450 stored shows as 450x600
    buf = io.BytesIO()
    stored.save(buf, format="JPEG", exif=exif.tobytes(), quality=92)
    displayed = ImageOps.exif_transpose(Image.open(io.BytesIO(buf.getvalue())))
    assert displayed.size == (450, 600)

    result = pipeline.run(buf.getvalue())

    assert result.tier is not Tier.RETAKE, result
    assert (result.image_width, result.image_height) == (450, 600)
    overlay = _decoded(result.overlay_jpeg)
    assert overlay.size == (450, 600)
    assert _decoded(result.mask_png).size == (450, 600)
    # The overlay is drawn on the rotated photo, not on the stored pixels squeezed into its size.
    difference = np.abs(np.asarray(overlay, np.int16) - np.asarray(displayed.convert("RGB"), np.int16))
    assert float(np.median(difference)) < 4


@pytest.mark.slow
def test_quality_failure_is_a_retake_without_model_outputs(pipeline: Pipeline) -> None:
    result = pipeline.run(UNUSABLE_PHOTO.read_bytes())
    assert (result.tier, result.retake_reason) == (Tier.RETAKE, RetakeReason.TOO_DARK)
    assert result.overlay_jpeg is None and result.mask_png is None and result.probabilities == {}
    assert result.measurements is None
    assert result.timings_ms["segment"] == 0 and result.timings_ms["classify"] == 0
    assert (result.image_width, result.image_height) == (600, 450)


@pytest.mark.slow
def test_failing_measurements_do_not_cost_the_patient_the_answer(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(mask: np.ndarray, rgb: np.ndarray) -> None:
        raise RuntimeError("bug in a measurement")

    monkeypatch.setattr("ml.triage.pipeline.measure_lesion", broken)
    result = pipeline.run(MEL_PHOTO.read_bytes())
    assert result.tier is not Tier.RETAKE and result.label in LABELS
    assert result.measurements is None
    assert "lesion measurements failed (RuntimeError" in caplog.text


@pytest.mark.slow
def test_photo_over_the_pixel_limit_is_too_large(pipeline: Pipeline) -> None:
    strict = Pipeline(pipeline.segmenter, pipeline.classifier, max_pixels=600 * 450 - 1)
    result = strict.run(MEL_PHOTO.read_bytes())
    assert (result.tier, result.retake_reason) == (Tier.RETAKE, RetakeReason.TOO_LARGE)


# ---- batches --------------------------------------------------------------------------------------


@pytest.mark.slow
def test_run_batch_matches_one_by_one_in_input_order(pipeline: Pipeline) -> None:
    photos = [
        NV_PHOTO.read_bytes(),
        b"",
        lesion_photo(seed=1),
        MEL_PHOTO.read_bytes(),
        UNUSABLE_PHOTO.read_bytes(),
        lesion_photo(width=500, height=400, seed=2, fmt="PNG"),
    ]
    singles = [pipeline.run(data) for data in photos]
    batched = pipeline.run_batch(photos)

    assert len(batched) == len(photos)
    for i, (b, s) in enumerate(zip(batched, singles, strict=True)):
        assert b.image_width == s.image_width, f"photo {i} out of order"
        _assert_same(b, s)
    # The batch really mixes outcomes, so order mistakes would show.
    assert [r.tier is Tier.RETAKE for r in batched] == [False, True, False, False, True, False]
    assert [r.image_width for r in batched] == [600, None, 600, 600, 600, 500]


@pytest.mark.slow
def test_run_batch_of_nothing_and_of_bare_bytes(pipeline: Pipeline) -> None:
    assert pipeline.run_batch([]) == []
    with pytest.raises(ValueError, match="use run"):
        pipeline.run_batch(MEL_PHOTO.read_bytes())


# ---- bad bytes ------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    "data",
    [
        b"",
        np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes(),
        b"Dear doctor,\nplease look at the mole on my back.\n" * 20,
        MEL_PHOTO.read_bytes()[:200],
    ],
    ids=["empty", "random", "text", "truncated-header"],
)
def test_bad_bytes_are_an_unreadable_retake(pipeline: Pipeline, data: bytes) -> None:
    result = pipeline.run(data)
    assert (result.tier, result.retake_reason) == (Tier.RETAKE, RetakeReason.UNREADABLE)
    assert result.overlay_jpeg is None and result.mask_png is None
    assert result.probabilities == {} and result.label is None
    assert result.image_width is None and result.image_height is None
    assert set(result.timings_ms) == set(STAGES)


@pytest.mark.slow
def test_bad_bytes_do_not_spoil_a_batch(pipeline: Pipeline) -> None:
    results = pipeline.run_batch([b"not an image", MEL_PHOTO.read_bytes(), b""])
    assert [r.retake_reason for r in results] == [RetakeReason.UNREADABLE, None, RetakeReason.UNREADABLE]
    assert results[1].overlay_jpeg is not None


# ---- which models the pipeline trusts ---------------------------------------------------------


def _copy_models(src: Path, dst: Path) -> Path:
    """A copy of a model folder: cards copied, weights symlinked (replace a link before changing its file)."""
    dst.mkdir()
    for path in src.iterdir():
        if path.suffix == ".json":
            shutil.copy2(path, dst / path.name)
        else:
            (dst / path.name).symlink_to(path.resolve())
    return dst


def _edit_card(card_path: Path, **changes: object) -> None:
    data = json.loads(card_path.read_text())
    data.update(changes)
    card_path.write_text(json.dumps(data))


@pytest.fixture
def model_copy(demo_model_dir: Path, tmp_path: Path) -> Path:
    """A private, still valid copy of the demo models to tamper with."""
    copy = _copy_models(demo_model_dir, tmp_path / "models")
    load_verified_card(copy / SEGMENTATION_CARD, kind="segmentation", allow_demo=True)
    load_verified_card(copy / CLASSIFIER_CARD, kind="classifier", allow_demo=True)
    return copy


@pytest.mark.slow
@pytest.mark.parametrize("card_name", [SEGMENTATION_CARD, CLASSIFIER_CARD])
def test_flipped_bytes_in_the_weights_are_refused(model_copy: Path, card_name: str) -> None:
    weights = model_copy / ModelCard.load(model_copy / card_name).weights_file
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.unlink()  # the link points at the session's models; write a private file instead
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelUnavailableError, match=r"have SHA-256 .* the file was changed or swapped") as info:
        Pipeline.from_model_dir(model_copy, allow_demo=True, device="cpu")
    assert str(weights.name) in str(info.value)
    assert "skintriage train-segmentation" in str(info.value)  # says how to get working models


@pytest.mark.slow
def test_changed_label_order_in_the_classifier_card_is_refused(model_copy: Path) -> None:
    _edit_card(model_copy / CLASSIFIER_CARD, labels=["NV", "MEL", "OTHER"])
    with pytest.raises(
        ModelUnavailableError, match=r"label order \['NV', 'MEL', 'OTHER'\], expected \['MEL', 'NV', 'OTHER'\]"
    ):
        Pipeline.from_model_dir(model_copy, allow_demo=True, device="cpu")


@pytest.mark.slow
def test_segmentation_card_naming_the_classifier_weights_is_refused(model_copy: Path) -> None:
    classifier_weights = ModelCard.load(model_copy / CLASSIFIER_CARD).weights_file
    _edit_card(model_copy / SEGMENTATION_CARD, weights_file=classifier_weights)
    with pytest.raises(ModelUnavailableError, match=r"have SHA-256 .* but card .*segmentation\.json expects"):
        Pipeline.from_model_dir(model_copy, allow_demo=True, device="cpu")


@pytest.mark.slow
def test_swapped_cards_are_refused_by_kind(model_copy: Path) -> None:
    seg, cls = model_copy / SEGMENTATION_CARD, model_copy / CLASSIFIER_CARD
    seg_text, cls_text = seg.read_text(), cls.read_text()
    seg.write_text(cls_text)
    cls.write_text(seg_text)
    with pytest.raises(ModelUnavailableError, match="is a 'classifier' card, expected a 'segmentation' card"):
        Pipeline.from_model_dir(model_copy, allow_demo=True, device="cpu")


@pytest.mark.slow
def test_missing_weights_and_missing_card_are_refused(model_copy: Path) -> None:
    (model_copy / ModelCard.load(model_copy / CLASSIFIER_CARD).weights_file).unlink()
    with pytest.raises(ModelUnavailableError, match="which do not exist"):
        Pipeline.from_model_dir(model_copy, allow_demo=True, device="cpu")
    (model_copy / SEGMENTATION_CARD).unlink()
    with pytest.raises(ModelUnavailableError, match="no model card at"):
        Pipeline.from_model_dir(model_copy, allow_demo=True, device="cpu")


@pytest.mark.slow
def test_demo_models_are_refused_unless_allowed(demo_model_dir: Path) -> None:
    with pytest.raises(ModelUnavailableError, match=r"demo model .*set ALLOW_DEMO_MODELS=true"):
        Pipeline.from_model_dir(demo_model_dir, allow_demo=False, device="cpu")


@pytest.mark.slow
def test_allowed_demo_models_say_so(pipeline: Pipeline) -> None:
    assert pipeline.demo is True
    assert pipeline.run(NV_PHOTO.read_bytes()).demo_model is True


# ---- the out-of-distribution energy check -----------------------------------------------------


@pytest.mark.slow
def test_photo_above_the_cards_ood_energy_threshold_is_a_not_skin_retake(pipeline: Pipeline, model_copy: Path) -> None:
    assert pipeline.ood_energy_threshold is None  # the demo card has no OOD calibration: nothing is refused
    energy = {photo: pipeline.run_detailed(photo.read_bytes()).ood["energy"] for photo in (MEL_PHOTO, NV_PHOTO)}
    familiar, unfamiliar = sorted(energy, key=energy.__getitem__)
    assert energy[unfamiliar] - energy[familiar] > 1e-3, energy
    threshold = (energy[familiar] + energy[unfamiliar]) / 2
    card_path = model_copy / CLASSIFIER_CARD
    card = ModelCard.load(card_path)
    card.operating_point.update(
        ood_energy_threshold=threshold, ood_percentile=99.5, ood_val_images=40, ood_val_refused=0.0
    )
    card.save(card_path)

    strict = Pipeline.from_model_dir(model_copy, allow_demo=True, device="cpu", threads=1)  # verifies the card
    assert strict.ood_energy_threshold == threshold
    kept, refused = strict.run_batch_detailed([familiar.read_bytes(), unfamiliar.read_bytes()])

    assert kept.result.tier is not Tier.RETAKE, kept.result
    assert "unfamiliar_to_classifier" not in kept.result.quality_flags
    assert kept.ood["energy"] == pytest.approx(energy[familiar], abs=1e-4)
    assert (refused.result.tier, refused.result.retake_reason) == (Tier.RETAKE, RetakeReason.NOT_SKIN)
    assert "unfamiliar_to_classifier" in refused.result.quality_flags
    assert refused.ood["energy"] > threshold
    assert refused.result.overlay_jpeg is None and refused.result.label is None


# ---- the kind of photo ------------------------------------------------------------------------


PHONE_PHOTO = _photo("6-phone-*.jpg")
SHIPPED = ROOT / "models"


@pytest.mark.slow
@pytest.mark.skipif(not (SHIPPED / MODALITY_CARD).is_file(), reason="no shipped modality model")
def test_the_kind_of_photo_is_judged_and_non_skin_photos_are_refused(model_copy: Path) -> None:
    for path in SHIPPED.glob("modality*"):
        shutil.copyfile(path, model_copy / path.name)
    pipeline = Pipeline.from_model_dir(model_copy, allow_demo=True, device="cpu", threads=1)
    assert pipeline.versions["modality"].startswith("modality-lr@")
    from sklearn.datasets import load_sample_image

    buffer = io.BytesIO()
    Image.fromarray(load_sample_image("china.jpg")).save(buffer, "JPEG")  # passed every other check before
    derm, phone, china = pipeline.run_batch([MEL_PHOTO.read_bytes(), PHONE_PHOTO.read_bytes(), buffer.getvalue()])

    assert derm.modality == "dermoscopic" and derm.p_clinical < 0.5
    assert phone.modality == "clinical" and phone.p_clinical > 0.5
    if phone.tier is not Tier.RETAKE:
        assert phone.tier is not Tier.LOW  # an ordinary photo is never told LOW
    assert (china.tier, china.retake_reason) == (Tier.RETAKE, RetakeReason.NOT_SKIN)
    assert UNLIKE_LESION_PHOTOS_FLAG in china.quality_flags


@pytest.mark.slow
def test_without_a_modality_card_the_kind_is_unknown(pipeline: Pipeline) -> None:
    result = pipeline.run(MEL_PHOTO.read_bytes())
    assert "modality" not in pipeline.versions
    assert result.modality == "unknown" and result.p_clinical is None


class _HesitantSegmenter:
    """The demo U-Net's interface, answering with a map it cannot commit to (confidence 0.2)."""

    def __init__(self, real) -> None:  # the pipeline's Segmenter
        self.threshold, self.version = real.threshold, real.version

    def predict_proba(self, images: list[np.ndarray]) -> list[np.ndarray]:
        maps = []
        for image in images:
            h, w = image.shape[:2]
            yy, xx = np.ogrid[:h, :w]
            disc = (yy - h / 2) ** 2 + (xx - w / 2) ** 2 <= (min(h, w) / 4) ** 2
            maps.append(np.where(disc, 0.6, 0.4).astype(np.float32))
        return maps


class _Kind:
    """A modality check that calls every photo `modality`."""

    def __init__(self, modality: Modality) -> None:
        self.modality = modality

    def judge(self, rgb: np.ndarray) -> ModalityVerdict:
        return ModalityVerdict(self.modality, 1.0 if self.modality is Modality.CLINICAL else 0.0, 1.0, True)


@pytest.mark.slow
def test_a_hesitant_mask_refuses_a_dermoscopic_photo_and_leaves_an_ordinary_one_uncertain(
    pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pipeline, "segmenter", _HesitantSegmenter(pipeline.segmenter))
    data = MEL_PHOTO.read_bytes()

    monkeypatch.setattr(pipeline, "modality", _Kind(Modality.DERMOSCOPIC))
    dermoscopic = pipeline.run(data)
    assert (dermoscopic.tier, dermoscopic.retake_reason) == (Tier.RETAKE, RetakeReason.NOT_SKIN)

    monkeypatch.setattr(pipeline, "modality", _Kind(Modality.CLINICAL))
    ordinary = pipeline.run(data)
    assert ordinary.tier in (Tier.UNCERTAIN, Tier.HIGH), ordinary  # the gate was unsure: never LOW or MEDIUM
    assert "uncertain_mask" in ordinary.quality_flags
    assert ordinary.modality == "clinical" and ordinary.overlay_jpeg is not None
