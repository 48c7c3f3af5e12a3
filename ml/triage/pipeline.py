"""The triage pipeline: photo bytes -> decode -> quality gate + kind of photo -> U-Net -> outline -> crop ->
classifier -> tier.

Models are loaded once (`Pipeline.from_model_dir`) after their cards are verified (SHA-256 of the
weights, label order, demo flag). `run` and `run_batch` never raise for a bad photo: it becomes a
RETAKE result with its reason. They raise only when the models themselves fail, which the worker
retries.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ml.errors import InvalidImageError, ModelUnavailableError
from ml.frameworks import load_torch_first
from ml.modelcard import CLASSIFIER_CARD, SEGMENTATION_CARD, ModelCard, ModelCardError
from ml.triage.decode import decode_image
from ml.triage.measurements import LesionMeasurements, measure_lesion
from ml.triage.modality import MODALITY_CARD, ModalityModel, ModalityVerdict
from ml.triage.overlay import draw_outline, encode_jpeg, encode_mask_png, geometry
from ml.triage.policy import Decision, PolicyConfig, decide_tier
from ml.triage.quality import QualityConfig, QualityReport, check_image, check_mask
from ml.triage.result import TriageResult
from skintriage.vocabulary import LABELS, Modality, RetakeReason, Tier

log = logging.getLogger(__name__)

DEFAULT_MAX_PIXELS = 40_000_000
STAGES = ("decode", "quality", "segment", "classify", "overlay", "explain", "total")
# Quality flag when the modality check finds the photo unlike every lesion photo it was fitted on.
UNLIKE_LESION_PHOTOS_FLAG = "unlike_lesion_photos"
# The classifier's energy check: logits unlike its validation photos (refused as not skin).
UNFAMILIAR_TO_CLASSIFIER_FLAG = "unfamiliar_to_classifier"
# Quality flag when Grad-CAM singles out no region (the console says so instead of showing a blank map).
HEATMAP_EMPTY_FLAG = "heatmap_shows_nothing"
HOW_TO_GET_MODELS = (
    "train them (`skintriage train-segmentation` and `skintriage train-classifier`, see README 'Models') "
    "or, for a demo only, run `skintriage demo`"
)


@dataclass
class TriageDetails:
    """What the pipeline measured on the way, beyond the TriageResult: for the CLI, benchmarks and logs."""

    result: TriageResult
    quality_metrics: dict[str, float] = field(default_factory=dict)
    decision: str = ""
    ood: dict[str, float] = field(default_factory=dict)


def configure_runtime(device: str, *, threads: int | None = None) -> None:
    """Thread counts on CPU and TensorFlow GPU memory growth, before any model is loaded."""
    load_torch_first()
    import torch

    if device == "cpu":
        # Intra-op threads = usable cores: the stages run one after the other, never side by side.
        torch.set_num_threads(max(1, threads or _usable_cores()))
    backend = os.environ.get("KERAS_BACKEND") or _keras_backend()
    if backend == "tensorflow":
        import tensorflow as tf

        try:
            if device == "cpu" and threads:
                tf.config.threading.set_intra_op_parallelism_threads(threads)
                tf.config.threading.set_inter_op_parallelism_threads(1)
            # Without memory growth TensorFlow reserves nearly all GPU memory and torch runs out.
            for gpu in tf.config.list_physical_devices("GPU"):
                tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError as exc:  # already initialised in this process: keep its settings
            log.info("TensorFlow runtime already initialised (%s); keeping its settings", exc)


def _usable_cores() -> int:
    """Cores this process may run on (respects taskset/cgroup affinity, unlike os.cpu_count)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _keras_backend() -> str:
    import keras

    return keras.backend.backend()


def pick_device(device: str | None = None) -> str:
    """'cuda' when a GPU is visible to torch, else 'cpu' (or the caller's explicit choice)."""
    if device:
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_verified_card(card_path: Path, *, kind: str, allow_demo: bool) -> ModelCard:
    """Load a card, check its kind, weights hash, label order and demo flag; raise ModelUnavailableError."""
    try:
        card = ModelCard.load(card_path)
        if card.kind != kind:
            raise ModelCardError(f"{card_path} is a {card.kind!r} card, expected a {kind!r} card")
        card.verify(card_path)
    except ModelCardError as exc:
        raise ModelUnavailableError(f"{exc}; to get working models, {HOW_TO_GET_MODELS}") from exc
    if card.demo and not allow_demo:
        raise ModelUnavailableError(
            f"{card_path} is a demo model (trained on synthetic images, not fit for patients); "
            "set ALLOW_DEMO_MODELS=true to run it anyway in a demo, or train real models: "
            "`skintriage train-segmentation` and `skintriage train-classifier`"
        )
    return card


class Pipeline:
    """Loaded models plus the gate and policy configuration; one per worker process."""

    def __init__(
        self,
        segmenter: Any,
        classifier: Any,
        *,
        policy: PolicyConfig | None = None,
        quality: QualityConfig | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        decode_workers: int = 1,
        explain: bool = False,
        modality: ModalityModel | None = None,
    ) -> None:
        self.segmenter = segmenter
        # Dermoscopic or ordinary photo, and "not a skin photo at all" (optional: without its card every
        # photo is judged as of unknown kind).
        self.modality = modality
        self.classifier = classifier
        self.policy = policy or PolicyConfig()
        self.quality = quality or QualityConfig()
        self.max_pixels = max_pixels
        self.decode_workers = max(1, decode_workers)
        # Grad-CAM heatmap for the operator console: one extra forward and backward pass per photo.
        self.explain = explain
        self.mel_threshold = float(
            self.policy.mel_threshold if self.policy.mel_threshold is not None else classifier.mel_threshold
        )
        op = getattr(classifier.card, "operating_point", {}) or {}
        # Optional out-of-distribution limit on the energy score, calibrated on validation photos by
        # train-classifier or `evaluate-classifier --calibrate-ood` (ml.classification.calibration.ood_operating_point).
        self.ood_energy_threshold: float | None = (
            float(op["ood_energy_threshold"]) if op.get("ood_energy_threshold") is not None else None
        )
        self.demo = bool(segmenter.card.demo or classifier.card.demo)
        self.versions: dict[str, str] = {"segmentation": segmenter.version, "classifier": classifier.version}
        if modality is not None:
            self.versions["modality"] = modality.version

    @classmethod
    def from_model_dir(
        cls,
        model_dir: Path,
        *,
        allow_demo: bool,
        policy: PolicyConfig | None = None,
        quality: QualityConfig | None = None,
        device: str | None = None,
        threads: int | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        decode_workers: int | None = None,
        explain: bool = False,
    ) -> Pipeline:
        """Verify and load the models named by MODEL_DIR's cards; raise ModelUnavailableError when untrusted."""
        model_dir = Path(model_dir)
        seg_card = model_dir / SEGMENTATION_CARD
        cls_card = model_dir / CLASSIFIER_CARD
        # Verify both cards before importing either framework: a bad card should fail fast and clearly.
        load_verified_card(seg_card, kind="segmentation", allow_demo=allow_demo)
        load_verified_card(cls_card, kind="classifier", allow_demo=allow_demo)
        device = pick_device(device)
        configure_runtime(device, threads=threads)
        from ml.classification.classifier import Classifier
        from ml.segmentation.unet import Segmenter

        try:
            segmenter = Segmenter.from_card(seg_card)
        except ModelCardError as exc:
            raise ModelUnavailableError(f"{exc}; to get working models, {HOW_TO_GET_MODELS}") from exc
        except (OSError, ValueError, TypeError) as exc:
            raise ModelUnavailableError(f"cannot load the U-Net named by {seg_card}: {exc}") from exc
        classifier = Classifier.from_card(cls_card, device=device)
        modality = None
        if (model_dir / MODALITY_CARD).is_file():
            try:
                modality = ModalityModel.from_card(model_dir / MODALITY_CARD)
            except ModelCardError as exc:
                raise ModelUnavailableError(f"{exc}; retrain it with `skintriage train-modality`") from exc
        else:
            log.warning(
                "no %s in %s: the kind of photo (dermoscopic or ordinary) is not checked", MODALITY_CARD, model_dir
            )
        if decode_workers is None:
            decode_workers = min(8, _usable_cores())
        pipeline = cls(
            segmenter,
            classifier,
            policy=policy,
            quality=quality,
            max_pixels=max_pixels,
            decode_workers=decode_workers,
            explain=explain,
            modality=modality,
        )
        log.info("pipeline ready on %s: %s%s", device, pipeline.versions, " (DEMO models)" if pipeline.demo else "")
        return pipeline

    # ---- public API -------------------------------------------------------------------------------

    def run(self, image_bytes: bytes) -> TriageResult:
        """Triage one photo; a RETAKE result (never an exception) when the photo is unusable."""
        return self.run_batch([image_bytes])[0]

    def run_batch(self, images: Sequence[bytes]) -> list[TriageResult]:
        """Triage several photos with batched model calls; results in input order."""
        return [d.result for d in self.run_batch_detailed(images)]

    def run_detailed(self, image_bytes: bytes) -> TriageDetails:
        """Like run, plus the quality metrics, the policy's reason and the OOD scores."""
        return self.run_batch_detailed([image_bytes])[0]

    def run_batch_detailed(self, images: Sequence[bytes]) -> list[TriageDetails]:
        """Like run_batch, with the details of each photo."""
        if isinstance(images, bytes | bytearray):
            raise ValueError("run_batch takes a list of photos' bytes; use run() for one photo")
        states = self._decode_and_gate(images)
        live = [s for s in states if s.report.passed]
        self._segment(live)
        live = [s for s in live if s.report.passed]
        self._classify(live)
        for s in live:
            self._finish(s)
        return [self._result(s) for s in states]

    # ---- stages -----------------------------------------------------------------------------------

    def _decode_and_gate(self, images: Sequence[bytes]) -> list[_State]:
        def one(data: bytes) -> _State:
            state = _State(start=time.perf_counter())
            t = state.start
            try:
                state.rgb = decode_image(bytes(data), max_pixels=self.max_pixels)
            except InvalidImageError as exc:
                state.report = QualityReport(reason=exc.reason)
                state.detail = exc.detail
                state.timings["decode"] = _ms(t)
                return state
            state.timings["decode"] = _ms(t)
            t = time.perf_counter()
            state.report = check_image(state.rgb, self.quality)
            if state.report.passed and self.modality is not None:
                state.modality = self.modality.judge(state.rgb)
                if not state.modality.skin_photo:
                    state.report = state.report.merged(QualityReport(flags=[UNLIKE_LESION_PHOTOS_FLAG]))
                    state.report.reason = RetakeReason.NOT_SKIN
            state.timings["quality"] = _ms(t)
            return state

        if self.decode_workers > 1 and len(images) > 1:
            # PIL and OpenCV release the GIL while decoding and filtering, so threads scale.
            with ThreadPoolExecutor(max_workers=min(self.decode_workers, len(images))) as pool:
                return list(pool.map(one, images))
        return [one(data) for data in images]

    def _segment(self, states: list[_State]) -> None:
        if not states:
            return
        t = time.perf_counter()
        probs = self.segmenter.predict_proba([s.rgb for s in states])
        share = _ms(t) / len(states)
        for s, prob in zip(states, probs, strict=True):
            t = time.perf_counter()
            ordinary = s.modality is not None and s.modality.modality == Modality.CLINICAL
            report, lesion = check_mask(
                prob, threshold=self.segmenter.threshold, config=self.quality, refuse_hesitant=not ordinary
            )
            s.report = s.report.merged(report)
            s.mask = lesion
            s.timings["segment"] = share
            s.timings["quality"] = s.timings.get("quality", 0.0) + _ms(t)

    def _classify(self, states: list[_State]) -> None:
        if not states:
            return
        from ml.classification.calibration import energy_scores

        t = time.perf_counter()
        views = [self.classifier.prepare(s.rgb, s.mask) for s in states]
        logits = self.classifier.logits(views)
        probs = self.classifier.probabilities(logits)
        # Energy score of the raw logits (Liu et al. 2020): high for inputs unlike the training data.
        # The same function calibrates the card's threshold (train-classifier, evaluate-classifier).
        energies = energy_scores(logits)
        share = _ms(t) / len(states)
        for s, row, energy in zip(states, probs, energies.tolist(), strict=True):
            s.probabilities = {label: float(row[i]) for i, label in enumerate(LABELS)}
            s.ood = {"energy": energy, "max_probability": float(np.max(row))}
            if self.ood_energy_threshold is not None and energy > self.ood_energy_threshold:
                s.report = s.report.merged(QualityReport(flags=[UNFAMILIAR_TO_CLASSIFIER_FLAG]))
                s.report.reason = RetakeReason.NOT_SKIN
            s.timings["classify"] = share

    def _finish(self, s: _State) -> None:
        if not s.report.passed:
            return
        t = time.perf_counter()
        s.overlay_jpeg = encode_jpeg(draw_outline(s.rgb, s.mask))
        s.mask_png = encode_mask_png(s.mask)
        s.geometry = geometry(s.mask)
        s.measurements = _measure(s.mask, s.rgb)
        s.timings["overlay"] = _ms(t)
        s.decision = decide_tier(
            s.probabilities,
            mel_threshold=self.mel_threshold,
            config=self.policy,
            gate_unsure=s.report.unsure,
            modality=s.modality.modality if s.modality is not None else None,
        )
        if self.explain:
            self._explain(s)

    def _explain(self, s: _State) -> None:
        """Grad-CAM of the reported label; never fails the photo (the heatmap is for clinicians, not the answer)."""
        from ml.classification.gradcam import explain

        t = time.perf_counter()
        try:
            heatmap = explain(self.classifier, s.rgb, mask=s.mask, label=s.decision.label)
        except Exception as exc:  # noqa: BLE001 - a missing heatmap must not cost the patient the answer
            log.warning("Grad-CAM failed (%s); the case is stored without a heatmap", type(exc).__name__)
        else:
            s.heatmap_jpeg = heatmap.jpeg
            if heatmap.shows_nothing:
                s.report = s.report.merged(QualityReport(flags=[HEATMAP_EMPTY_FLAG]))
        s.timings["explain"] = _ms(t)

    def _result(self, s: _State) -> TriageDetails:
        s.timings["total"] = _ms(s.start)
        timings = {stage: round(s.timings.get(stage, 0.0), 3) for stage in STAGES}
        h, w = s.rgb.shape[:2] if s.rgb is not None else (None, None)
        common: dict[str, Any] = {
            "quality_flags": list(s.report.flags),
            "image_width": w,
            "image_height": h,
            "model_versions": dict(self.versions),
            "timings_ms": timings,
            "demo_model": self.demo,
            "mel_threshold": self.mel_threshold,
            "modality": str(s.modality.modality if s.modality is not None else Modality.UNKNOWN),
            "p_clinical": s.modality.p_clinical if s.modality is not None else None,
        }
        if not s.report.passed or s.decision is None:
            result = TriageResult(
                tier=Tier.RETAKE,
                retake_reason=s.report.reason or RetakeReason.UNREADABLE,
                probabilities=dict(s.probabilities),
                **common,
            )
            why = f"retake: {result.retake_reason}" + (f" ({s.detail})" if s.detail else "")
        else:
            g = s.geometry
            result = TriageResult(
                tier=s.decision.tier,
                label=s.decision.label,
                probabilities=dict(s.probabilities),
                lesion_area_px=g.area_px if g else None,
                lesion_diameter_px=round(g.diameter_px, 1) if g else None,
                mask_png=s.mask_png,
                overlay_jpeg=s.overlay_jpeg,
                heatmap_jpeg=s.heatmap_jpeg,
                measurements=s.measurements,
                tier_reason=s.decision.reason,
                **common,
            )
            why = s.decision.why
        return TriageDetails(result=result, quality_metrics=dict(s.report.metrics), decision=why, ood=dict(s.ood))


@dataclass
class _State:
    """One photo on its way through the stages."""

    start: float
    rgb: np.ndarray | None = None
    report: QualityReport = field(default_factory=QualityReport)
    mask: np.ndarray | None = None
    modality: ModalityVerdict | None = None
    probabilities: dict[str, float] = field(default_factory=dict)
    ood: dict[str, float] = field(default_factory=dict)
    decision: Decision | None = None
    geometry: Any = None
    measurements: LesionMeasurements | None = None
    overlay_jpeg: bytes | None = None
    mask_png: bytes | None = None
    heatmap_jpeg: bytes | None = None
    timings: dict[str, float] = field(default_factory=dict)
    detail: str = ""


def _measure(mask: np.ndarray, rgb: np.ndarray) -> LesionMeasurements | None:
    """Lesion measurements for clinicians; never fails the photo (they are not part of the patient's answer)."""
    try:
        return measure_lesion(mask, rgb)
    except Exception as exc:  # noqa: BLE001 - missing measurements must not cost the patient the answer
        log.warning("lesion measurements failed (%s: %s); the case is stored without them", type(exc).__name__, exc)
        return None


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0
