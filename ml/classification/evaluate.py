"""`skintriage evaluate-classifier`: score a carded classifier on a split; JSON + Markdown report and PNG plots.

With --calibrate-ood it instead fits the card's out-of-distribution energy threshold on the validation
split and writes it into the card in place (for cards trained before train-classifier did so).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from ml.classification.calibration import (
    DEFAULT_OOD_PERCENTILE,
    OOD_KEYS,
    energy_scores,
    ood_operating_point,
    percentile_flag,
    softmax,
)
from ml.classification.classifier import Classifier
from ml.classification.metrics import (
    FULL_HAM10000_PREVALENCE,
    reliability_bins,
    roc_points,
    summarize,
)
from ml.data.ham10000 import SPLITS, Sample, read_image_rgb, read_mask, read_split_csv, split_hash
from ml.modelcard import CLASSIFIER_CARD, SEGMENTATION_CARD, ModelCard, ModelCardError
from skintriage.vocabulary import LABELS, Label

log = logging.getLogger(__name__)

# The reference study's published test figures (ImageNet ResNet50 fine-tuned, full HAM10000).
REFERENCE_STUDY = {"accuracy": 0.8504, "mel_f1": 0.70, "mel_recall": 0.88}
CHUNK = 64  # images decoded at a time: 600x450 photos are ~0.8 MB each


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the evaluate-classifier flags."""
    parser.add_argument("--model-dir", type=Path, default=Path("models"), help=f"folder holding {CLASSIFIER_CARD}")
    parser.add_argument("--card", type=Path, default=None, help=f"card path (default MODEL_DIR/{CLASSIFIER_CARD})")
    parser.add_argument("--data", type=Path, required=True, help="HAM10000 folder the split refers to")
    parser.add_argument("--split-csv", type=Path, default=Path("runs/split.csv"))
    parser.add_argument("--split", choices=SPLITS, default=None, help="default test; val with --calibrate-ood")
    parser.add_argument("--out", type=Path, default=None, help="report folder (default docs/classification/<name>)")
    parser.add_argument("--tta", action="store_true", help="average the four flip views")
    parser.add_argument(
        "--masks",
        choices=("gt", "unet"),
        default="gt",
        help="crop models: crop by the ground-truth masks or by the U-Net's masks",
    )
    parser.add_argument(
        "--seg-card",
        type=Path,
        default=None,
        help=f"segmentation card for --masks unet (default MODEL_DIR/{SEGMENTATION_CARD})",
    )
    parser.add_argument("--device", default=None)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    parser.add_argument(
        "--calibrate-ood",
        type=percentile_flag,
        nargs="?",
        const=DEFAULT_OOD_PERCENTILE,
        default=None,
        metavar="PERCENTILE",
        help="instead of a report, set the card's OOD energy threshold to this percentile of the "
        f"validation photos (default {DEFAULT_OOD_PERCENTILE}: at most 0.5 %% of them refused as "
        "'not skin') and rewrite the card in place; 0 removes the check",
    )
    parser.add_argument(
        "--calibrate-threshold",
        type=float,
        nargs="?",
        const=0.95,
        default=None,
        metavar="CONFIDENCE",
        help="instead of a report, choose the card's melanoma threshold on the validation photos "
        "(masks as --masks) so that this lower confidence bound of sensitivity (bootstrap over "
        "lesions, default 0.95) reaches the card's target sensitivity, and rewrite the card",
    )
    parser.add_argument(
        "--calibrate-probabilities",
        type=float,
        nargs="?",
        const=0.95,
        default=None,
        metavar="CONFIDENCE",
        help="instead of a report, fit matrix scaling (a multinomial logistic regression on the logits, its "
        "strength by lesion-grouped cross-validation) on the validation photos in place of the temperature, "
        "choose the melanoma threshold again with it as --calibrate-threshold does, and rewrite the card",
    )


def _masks_for(chunk: list[Sample], images: list[np.ndarray], source: str, segmenter: Any) -> list[np.ndarray]:
    """Lesion masks for a chunk: the dataset's ground truth or the U-Net's prediction."""
    if source == "unet":
        return [np.asarray(m, dtype=np.uint8) for m in segmenter.predict_masks(images)]
    masks = []
    for sample in chunk:
        if sample.mask_path is None:
            raise ValueError(f"image {sample.image_id} has no ground-truth mask; use --masks unet")
        masks.append(read_mask(sample.mask_path))
    return masks


def predict_logits(
    classifier: Classifier, samples: list[Sample], *, masks: str = "gt", segmenter: Any = None, tta: bool = False
) -> tuple[np.ndarray, dict[str, int]]:
    """Raw logits for every sample (cropping first for crop models) and counts of empty masks."""
    from tqdm import tqdm

    out = []
    empty = 0
    for start in tqdm(range(0, len(samples), CHUNK), desc="evaluating", mininterval=10, leave=False):
        chunk = samples[start : start + CHUNK]
        images = [read_image_rgb(s.image_path) for s in chunk]
        if classifier.input_variant == "crop":
            chunk_masks = _masks_for(chunk, images, masks, segmenter)
            empty += sum(int(not m.any()) for m in chunk_masks)
            images = [classifier.prepare(img, m) for img, m in zip(images, chunk_masks, strict=True)]
        out.append(classifier.logits(images, tta=tta))
    return np.concatenate(out), {"empty_masks": empty}


def evaluate(
    classifier: Classifier,
    samples: list[Sample],
    *,
    masks: str = "gt",
    segmenter: Any = None,
    tta: bool = False,
) -> dict[str, Any]:
    """Metrics before and after temperature scaling, at the card's melanoma operating point."""
    y = np.array([LABELS.index(s.label) for s in samples], dtype=np.int64)
    logits, counts = predict_logits(classifier, samples, masks=masks, segmenter=segmenter, tta=tta)
    raw = softmax(logits)
    calibrated = classifier.probabilities(logits)
    metrics = summarize(calibrated, y, mel_threshold=classifier.mel_threshold)
    energies = energy_scores(logits)
    ood_threshold = classifier.card.operating_point.get("ood_energy_threshold")
    uncalibrated = summarize(raw, y)
    curves = {}
    for i, label in enumerate(LABELS):
        f, t, _ = roc_points(y == i, calibrated[:, i])
        curves[label] = {"fpr": f.tolist(), "tpr": t.tolist()}
    return {
        "metrics": metrics,
        "ece_uncalibrated": uncalibrated["ece"],
        "ece_calibrated": metrics["ece"],
        "nll_uncalibrated": uncalibrated["nll"],
        "reliability": {
            "uncalibrated": {k: v.tolist() for k, v in reliability_bins(raw, y).items()},
            "calibrated": {k: v.tolist() for k, v in reliability_bins(calibrated, y).items()},
        },
        "roc": curves,
        "counts": counts,
        "ood": {
            "energy_median": float(np.median(energies)),
            "energy_max": float(energies.max()),
            "energy_threshold": ood_threshold,
            "refused": None if ood_threshold is None else float((energies > ood_threshold).mean()),
        },
        "labels": y.tolist(),
        "probabilities": calibrated.round(5).tolist(),
    }


def calibrate_ood(
    classifier: Classifier,
    samples: list[Sample],
    *,
    percentile: float = DEFAULT_OOD_PERCENTILE,
    masks: str = "gt",
    segmenter: Any = None,
) -> dict[str, float | int]:
    """The card's OOD entries fitted on these (validation) photos' raw logits, scored as the pipeline scores them."""
    logits, _ = predict_logits(classifier, samples, masks=masks, segmenter=segmenter)
    return ood_operating_point(logits, percentile)


def calibrate_threshold(
    classifier: Classifier,
    samples: list[Sample],
    *,
    confidence: float,
    masks: str = "gt",
    segmenter: Any = None,
    logits: np.ndarray | None = None,
) -> dict[str, Any]:
    """The card's melanoma operating point chosen on these (validation) photos with a sensitivity bound.

    Scored with the classifier's calibration as it stands (`logits`, when given, are these photos' raw logits).
    """
    from ml.classification.metrics import sensitivity_specificity
    from ml.classification.train import operating_threshold
    from skintriage.vocabulary import MEL_INDEX

    target = float(classifier.card.operating_point.get("target_sensitivity", 0.9))
    if logits is None:
        logits, _ = predict_logits(classifier, samples, masks=masks, segmenter=segmenter)
    p_mel = classifier.probabilities(logits)[:, MEL_INDEX]
    is_mel = np.array([s.label == Label.MEL for s in samples])
    rule = operating_threshold(
        is_mel, p_mel, np.array([s.lesion_id for s in samples]), target=target, confidence=confidence
    )
    sens, spec = sensitivity_specificity(is_mel, p_mel, rule["threshold"])
    threshold = rule.pop("threshold")
    return {
        "mel_threshold": threshold,
        "val_sensitivity": sens,
        "val_specificity": spec,
        "threshold_masks": masks,
        **rule,
    }


def calibrate_probabilities(
    classifier: Classifier,
    samples: list[Sample],
    *,
    confidence: float,
    masks: str = "gt",
    segmenter: Any = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Matrix scaling fitted on these (validation) photos, then the melanoma threshold chosen again with it.

    Returns the card's `calibration` entry (with out-of-fold figures beside the temperature's on the same
    photos) and the new operating point. The classifier is left using the new calibration.
    """
    from ml.classification.calibration import fit_matrix_scaling, out_of_fold_temperature

    y = np.array([LABELS.index(s.label) for s in samples], dtype=np.int64)
    groups = np.array([s.lesion_id for s in samples])
    logits, _ = predict_logits(classifier, samples, masks=masks, segmenter=segmenter)
    scaling, fit = fit_matrix_scaling(logits, y, groups)
    before = summarize(softmax(logits, classifier.temperature), y)
    temperature_oof = summarize(out_of_fold_temperature(logits, y, groups, folds=fit["folds"]), y)
    out_of_fold = summarize(fit["oof_probabilities"], y)
    in_sample = summarize(scaling.probabilities(logits), y)
    entry = scaling.to_card(
        fitted_on=f"val ({len(y)} photos, {len(np.unique(groups))} lesions; masks {masks})",
        C=fit["C"],
        folds=fit["folds"],
        val={
            "temperature": {"ece": before["ece"], "nll": before["nll"], "mel_auc": before["mel_auc"]},
            "temperature_out_of_fold": {
                "ece": temperature_oof["ece"], "nll": temperature_oof["nll"], "mel_auc": temperature_oof["mel_auc"],
            },
            "matrix_scaling_out_of_fold": {
                "ece": out_of_fold["ece"], "nll": out_of_fold["nll"], "mel_auc": out_of_fold["mel_auc"],
            },
            "matrix_scaling_in_sample": {
                "ece": in_sample["ece"], "nll": in_sample["nll"], "mel_auc": in_sample["mel_auc"],
            },
        },
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )  # fmt: skip
    classifier.calibration = scaling
    op = calibrate_threshold(classifier, samples, confidence=confidence, masks=masks, logits=logits)
    return entry, op


def write_operating_point_to_card(card_path: Path, op: dict[str, Any], *, weights_sha256: str) -> ModelCard:
    """Update the card's melanoma operating point in place; refuse when the card meanwhile names other weights."""
    card = ModelCard.load(card_path)
    if card.weights_sha256 != weights_sha256:
        raise ModelCardError(f"{card_path} changed during calibration (other weights); run the calibration again")
    # Test figures measured at the previous threshold no longer describe this operating point.
    for stale in ("test_sensitivity", "test_specificity"):
        card.operating_point.pop(stale, None)
    card.operating_point.update(op)
    card.save(card_path)
    card.verify(card_path)
    return card


def write_calibration_to_card(
    card_path: Path, entry: dict[str, Any], op: dict[str, Any], *, weights_sha256: str
) -> ModelCard:
    """Store a calibration and the operating point chosen with it in one write (never one without the other)."""
    card = ModelCard.load(card_path)
    if card.weights_sha256 != weights_sha256:
        raise ModelCardError(f"{card_path} changed during calibration (other weights); run the calibration again")
    for stale in ("test_sensitivity", "test_specificity"):
        card.operating_point.pop(stale, None)
    card.calibration = entry
    card.operating_point.update(op)
    card.save(card_path)
    card.verify(card_path)
    return card


def write_ood_to_card(card_path: Path, ood: dict[str, Any], *, weights_sha256: str) -> ModelCard:
    """Replace the card's OOD entries (OOD_KEYS) in place; refuse when the card meanwhile names other weights."""
    card = ModelCard.load(card_path)
    if card.weights_sha256 != weights_sha256:
        raise ModelCardError(
            f"{card_path} now names weights {card.weights_sha256[:12]}..., but the OOD threshold was fitted with "
            f"{weights_sha256[:12]}...; the card changed during calibration - run the calibration again"
        )
    for key in OOD_KEYS:
        card.operating_point.pop(key, None)
    card.operating_point.update(ood)
    card.save(card_path)
    card.verify(card_path)  # the weights hash lives in the card, not over it: rewriting keeps it valid
    return card


def plot_confusion(cm: np.ndarray, path: Path, title: str) -> None:
    """Confusion-matrix PNG with counts and row-normalised percentages."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.asarray(cm)
    rows = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(4.6, 4))
    ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(LABELS)):
        for j in range(len(LABELS)):
            ax.text(
                j,
                i,
                f"{cm[i, j]}\n{rows[i, j]:.0%}",
                ha="center",
                va="center",
                color="white" if rows[i, j] > 0.5 else "black",
                fontsize=9,
            )
    ax.set_xticks(range(len(LABELS)), LABELS)
    ax.set_yticks(range(len(LABELS)), LABELS)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_roc(result: dict[str, Any], path: Path, title: str) -> None:
    """One-vs-rest ROC curves with the melanoma operating point marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = result["metrics"]
    fig, ax = plt.subplots(figsize=(4.6, 4))
    for label, curve in result["roc"].items():
        ax.plot(
            curve["fpr"],
            curve["tpr"],
            label=f"{label} (AUC {metrics['auc'][label]:.3f})",
            linewidth=2 if label == Label.MEL else 1,
        )
    op = metrics["operating_point"]
    ax.plot(
        1 - op["specificity"],
        op["sensitivity"],
        "ko",
        label=f"MEL operating point\nsens {op['sensitivity']:.2f}, spec {op['specificity']:.2f}",
    )
    ax.plot([0, 1], [0, 1], ":", color="grey")
    ax.set_xlabel("false-positive rate (1 - specificity)")
    ax.set_ylabel("true-positive rate (sensitivity)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_reliability(result: dict[str, Any], path: Path, title: str) -> None:
    """Reliability diagram (top-label accuracy vs confidence) before and after temperature scaling."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(8, 3.8), sharey=True)
    for ax, key, ece in zip(
        axes, ("uncalibrated", "calibrated"), (result["ece_uncalibrated"], result["ece_calibrated"]), strict=True
    ):
        bins = result["reliability"][key]
        edges = np.asarray(bins["edges"])
        centers = (edges[:-1] + edges[1:]) / 2
        count = np.asarray(bins["count"])
        acc = np.where(count > 0, bins["accuracy"], np.nan)
        ax.bar(centers, acc, width=edges[1] - edges[0], edgecolor="black", alpha=0.7, label="accuracy")
        ax.plot([0, 1], [0, 1], ":", color="grey", label="perfect calibration")
        ax.set_title(f"{key} (ECE {ece:.3f})", fontsize=9)
        ax.set_xlabel("confidence of the top label")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
    axes[0].set_ylabel("accuracy")
    axes[0].legend(fontsize=7, loc="upper left")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def render_markdown(report: dict[str, Any]) -> str:
    """The Markdown report: headline numbers, per-class table, confusion matrix, plots."""
    m = report["metrics"]
    op = m["operating_point"]
    lines = [
        f"# Classifier evaluation: {report['model_version']} on the {report['split']} split",
        "",
        f"- card: `{report['card']}`; input `{report['input_variant']}` {report['input_size'][0]}x"
        f"{report['input_size'][1]}; masks: {report['masks']}; TTA: {'yes' if report['tta'] else 'no'}",
        f"- split hash {report['split_hash']} (card trained on {report['card_split_hash']}); {m['n']} images",
        f"- calibration: {report.get('calibration', 'temperature')} (temperature {report['temperature']:.3f}); "
        f"melanoma threshold {op['mel_threshold']:.4f} "
        f"(chosen on validation for sensitivity {report['target_sensitivity']:.2f})",
        "",
        "| metric | value |",
        "| --- | --- |",
        f"| accuracy (this sample's prevalence) | {m['accuracy']:.4f} |",
        f"| accuracy reweighted to full HAM10000 prevalence | {m['accuracy_full_prevalence']:.4f} |",
        f"| balanced accuracy | {m['balanced_accuracy']:.4f} |",
        f"| MEL ROC AUC | {m['mel_auc']:.4f} |",
        f"| macro ROC AUC | {m['macro_auc']:.4f} |",
        f"| MEL sensitivity at the operating point | {op['sensitivity']:.4f} |",
        f"| MEL specificity at the operating point | {op['specificity']:.4f} |",
    ]
    at = m.get("mel_spec_at_sens")
    if at is not None:
        lines.append(
            f"| MEL specificity at sensitivity {at['target']:.2f} on this split (threshold "
            f"{at['threshold']:.4f}, sensitivity {at['sensitivity']:.4f}) | {at['specificity']:.4f} |"
        )
    lines += [
        f"| ECE before / after calibration ({report.get('calibration', 'temperature')}) | "
        f"{report['ece_uncalibrated']:.4f} / "
        f"{report['ece_calibrated']:.4f} |",
        "",
        "| class | precision | recall | F1 | support |",
        "| --- | --- | --- | --- | --- |",
    ]
    for label in LABELS:
        c = m["per_class"][label]
        lines.append(f"| {label} | {c['precision']:.4f} | {c['recall']:.4f} | {c['f1']:.4f} | {int(c['support'])} |")
    lines += [
        "",
        "Confusion matrix (rows true, columns predicted by arg-max):",
        "",
        "| true \\ predicted | " + " | ".join(LABELS) + " |",
        "| --- |" + " --- |" * len(LABELS),
    ]
    for label, row in zip(LABELS, m["confusion_matrix"], strict=True):
        lines.append(f"| {label} | " + " | ".join(str(v) for v in row) + " |")
    prevalence = ", ".join(f"{k} {v:.1%}" for k, v in FULL_HAM10000_PREVALENCE.items())
    ood = report.get("ood") or {}
    if ood.get("energy_threshold") is not None:
        lines += [
            "",
            f"Out-of-distribution check: energy threshold {ood['energy_threshold']:.4f} (from the card) "
            f"would refuse {ood['refused']:.2%} of these photos as 'not skin'.",
        ]
    lines += [
        "",
        f"Reweighted accuracy = sum over classes of full-dataset prevalence ({prevalence}) x recall.",
        "",
        "![confusion matrix](confusion.png) ![ROC](roc.png)",
        "",
        "![reliability](reliability.png)",
        "",
    ]
    return "\n".join(lines)


def write_report(report: dict[str, Any], out_dir: Path) -> None:
    """Write report.json (without per-image rows), report.md and the three PNG plots."""
    out_dir.mkdir(parents=True, exist_ok=True)
    title = f"{report['model_version']} - {report['split']} ({report['input_variant']}, masks {report['masks']})"
    plot_confusion(np.asarray(report["metrics"]["confusion_matrix"]), out_dir / "confusion.png", title)
    plot_roc(report, out_dir / "roc.png", title)
    plot_reliability(report, out_dir / "reliability.png", title)
    slim = {k: v for k, v in report.items() if k not in ("labels", "probabilities", "roc")}
    (out_dir / "report.json").write_text(json.dumps(slim, indent=2) + "\n")
    (out_dir / "report.md").write_text(render_markdown(report))


def main(args: argparse.Namespace) -> int:
    """Run evaluate-classifier from parsed arguments; return the exit code."""
    import torch

    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    calibrating = any(
        flag is not None for flag in (args.calibrate_ood, args.calibrate_threshold, args.calibrate_probabilities)
    )
    split = args.split or ("val" if calibrating else "test")
    if calibrating and (split != "val" or args.tta):
        print(
            "error: --calibrate-ood, --calibrate-threshold and --calibrate-probabilities fit on the validation "
            "split without TTA, as the pipeline scores photos; drop --split and --tta",
            file=sys.stderr,
        )
        return 2
    card_path = args.card or args.model_dir / CLASSIFIER_CARD
    classifier = Classifier.from_card(card_path, device=args.device)
    if args.calibrate_ood is not None and not args.calibrate_ood:
        write_ood_to_card(card_path, {}, weights_sha256=classifier.card.weights_sha256)
        print(f"removed the OOD energy check from {card_path}")
        return 0
    if not args.split_csv.is_file():
        print(
            f"error: split file {args.split_csv} not found; pass the split the model was trained on "
            "(its hash is in the card under training.split_hash)",
            file=sys.stderr,
        )
        return 2
    samples = read_split_csv(args.split_csv, args.data)[split]
    digest = split_hash(args.split_csv)
    card_digest = classifier.card.training.get("split_hash", "unknown")
    if digest != card_digest and calibrating:
        print(
            f"error: split {args.split_csv} (hash {digest}) is not the one {card_path} was trained on "
            f"({card_digest}); its validation photos may have been trained on, which would make the OOD "
            "threshold refuse too many real photos - pass the training run's --split-csv",
            file=sys.stderr,
        )
        return 2
    if digest != card_digest:
        log.warning(
            "split %s differs from the one the model was trained on (%s); test images may have been seen in training",
            digest,
            card_digest,
        )
    segmenter = None
    masks = args.masks if classifier.input_variant == "crop" else "none (whole image)"
    if classifier.input_variant == "crop" and args.masks == "unet":
        from ml.segmentation.unet import Segmenter

        seg_card = args.seg_card or args.model_dir / SEGMENTATION_CARD
        segmenter = Segmenter.from_card(seg_card)
        masks = f"unet ({segmenter.version})"
    if args.calibrate_probabilities is not None:
        entry, op = calibrate_probabilities(
            classifier, samples, confidence=args.calibrate_probabilities, masks=args.masks, segmenter=segmenter
        )
        write_calibration_to_card(card_path, entry, op, weights_sha256=classifier.card.weights_sha256)
        val = entry["val"]
        print(
            f"wrote matrix scaling (C {entry['C']:g}) into {card_path}: validation ECE "
            f"{val['temperature']['ece']:.4f} with the card's temperature "
            f"({val['temperature_out_of_fold']['ece']:.4f} out of fold), "
            f"{val['matrix_scaling_out_of_fold']['ece']:.4f} out of fold with matrix scaling "
            f"({val['matrix_scaling_in_sample']['ece']:.4f} in sample); mel_threshold "
            f"{op['mel_threshold']:.4f} (validation sensitivity {op['val_sensitivity']:.3f}, bound "
            f"{op['val_sensitivity_lower_bound']:.3f}, specificity {op['val_specificity']:.3f}; masks {masks})"
        )
        return 0
    if args.calibrate_threshold is not None:
        op = calibrate_threshold(
            classifier, samples, confidence=args.calibrate_threshold, masks=args.masks, segmenter=segmenter
        )
        write_operating_point_to_card(card_path, op, weights_sha256=classifier.card.weights_sha256)
        print(
            f"wrote mel_threshold {op['mel_threshold']:.4f} ({op['threshold_rule']}; validation sensitivity "
            f"{op['val_sensitivity']:.3f}, bound {op['val_sensitivity_lower_bound']:.3f}, specificity "
            f"{op['val_specificity']:.3f}; masks {masks}) into {card_path}"
        )
        return 0
    if calibrating:
        ood = calibrate_ood(classifier, samples, percentile=args.calibrate_ood, masks=args.masks, segmenter=segmenter)
        write_ood_to_card(card_path, ood, weights_sha256=classifier.card.weights_sha256)
        print(
            f"wrote ood_energy_threshold {ood['ood_energy_threshold']:.4f} (percentile {ood['ood_percentile']:g} "
            f"of {ood['ood_val_images']} validation photos, masks {masks}; refuses {ood['ood_val_refused']:.2%} "
            f"of them) into {card_path}"
        )
        return 0
    result = evaluate(classifier, samples, masks=args.masks, segmenter=segmenter, tta=args.tta)
    report = {
        "card": str(card_path),
        "model_version": classifier.version,
        "input_variant": classifier.input_variant,
        "input_size": list(classifier.input_size),
        "split": split,
        "split_hash": digest,
        "card_split_hash": card_digest,
        "masks": masks,
        "tta": bool(args.tta),
        "temperature": classifier.temperature,
        "calibration": "matrix scaling" if classifier.calibration is not None else "temperature",
        "target_sensitivity": classifier.card.operating_point.get("target_sensitivity"),
        "reference_study": REFERENCE_STUDY,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        **result,
    }
    out_dir = args.out or Path("docs/classification") / classifier.card.name
    write_report(report, out_dir)
    m = report["metrics"]
    op = m["operating_point"]
    print(f"wrote {out_dir}/report.md, report.json, confusion.png, roc.png, reliability.png")
    print(
        f"{split}: accuracy {m['accuracy']:.4f} (full-prevalence {m['accuracy_full_prevalence']:.4f}), "
        f"balanced accuracy {m['balanced_accuracy']:.4f}, MEL AUC {m['mel_auc']:.4f}, macro AUC "
        f"{m['macro_auc']:.4f}, MEL sens {op['sensitivity']:.3f} spec {op['specificity']:.3f}, "
        f"ECE {report['ece_uncalibrated']:.4f} -> {report['ece_calibrated']:.4f}"
    )
    return 0


if __name__ == "__main__":
    _parser = argparse.ArgumentParser(prog="skintriage evaluate-classifier", description=__doc__)
    add_arguments(_parser)
    sys.exit(main(_parser.parse_args()))
