"""`skintriage evaluate-segmentation`: U-Net vs Otsu baseline at full resolution; JSON, Markdown and a PNG grid."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np

from ml.data.ham10000 import DatasetError, Sample, load_or_make_split, read_image_rgb, read_mask
from ml.modelcard import SEGMENTATION_CARD, ModelCard, ModelCardError

log = logging.getLogger(__name__)

STUDY_IOU_AT_04 = 0.7149
GRID_PANEL = (225, 300)  # height, width of each grid tile


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `skintriage evaluate-segmentation`."""
    parser.add_argument("--data", type=Path, required=True, help="HAM10000 folder (official layout)")
    parser.add_argument("--model-dir", type=Path, default=Path("models"), help=f"folder with {SEGMENTATION_CARD}")
    parser.add_argument("--split", type=Path, default=Path("runs/split.csv"), help="split CSV used in training")
    parser.add_argument("--subset", choices=("train", "val", "test"), default="test")
    parser.add_argument("--report-dir", type=Path, default=Path("docs/segmentation"), help="JSON/MD/PNG output")
    parser.add_argument("--limit", type=int, default=None, help="evaluate only the first N images")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for the backend")
    parser.add_argument("--grid", type=int, default=4, help="best and worst images shown in the grid")
    parser.add_argument("--update-card", action="store_true", help="write the metrics into the model card")


def _outlined(image: np.ndarray, true: np.ndarray, pred: np.ndarray, caption: str) -> np.ndarray:
    """One grid tile: the photo with the reference outline in green and the prediction in red."""
    import cv2

    h, w = GRID_PANEL
    tile = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
    for mask, colour in ((true, (0, 220, 0)), (pred, (255, 40, 40))):
        small = cv2.resize(mask.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST)
        contours, _ = cv2.findContours(small, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(tile, contours, -1, colour, 2)
    cv2.rectangle(tile, (0, 0), (w, 22), (0, 0, 0), -1)
    cv2.putText(tile, caption, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
    return tile


def write_grid(segmenter, samples: list[Sample], rows: list[dict[str, Any]], key: str, n: int, path: Path) -> None:
    """PNG with the n best (top row) and n worst (bottom row) images by the given IoU key."""
    import cv2

    order = sorted(range(len(rows)), key=lambda i: rows[i][key])
    n = min(n, len(rows) // 2 or 1)
    picks = [list(reversed(order[-n:])), order[:n]]
    lines = []
    for which, idxs in zip(("best", "worst"), picks, strict=True):
        images = [read_image_rgb(samples[i].image_path) for i in idxs]
        masks = segmenter.predict_masks(images)
        tiles = [
            _outlined(
                img, read_mask(samples[i].mask_path), pred, f"{which} {samples[i].image_id} IoU {rows[i][key]:.3f}"
            )
            for img, pred, i in zip(images, masks, idxs, strict=True)
        ]
        lines.append(np.concatenate(tiles, axis=1))
    width = max(line.shape[1] for line in lines)
    lines = [np.pad(line, ((0, 0), (0, width - line.shape[1]), (0, 0))) for line in lines]
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(np.concatenate(lines, axis=0), cv2.COLOR_RGB2BGR))


def evaluate(
    *, segmenter, samples: list[Sample], batch_size: int = 16
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Per-image scores of the model (at 0.4, 0.5 and its threshold) and of the Otsu baseline, full size."""
    from tqdm import tqdm

    from ml.segmentation.baseline import otsu_segment
    from ml.segmentation.metrics import dice, iou, per_image_scores

    missing = [s.image_id for s in samples if s.mask_path is None]
    if missing:
        raise DatasetError(f"{len(missing)} image(s) lack masks (e.g. {missing[:3]}); restore them to evaluate")
    thresholds = sorted({0.4, 0.5, segmenter.threshold})
    model_rows, base_rows = [], []
    for start in tqdm(range(0, len(samples), batch_size), desc="evaluate", mininterval=10):
        chunk = samples[start : start + batch_size]
        images = [read_image_rgb(s.image_path) for s in chunk]
        probs = segmenter.predict_proba(images)
        for s, image, prob in zip(chunk, images, probs, strict=True):
            true = read_mask(s.mask_path)  # type: ignore[arg-type]
            if true.shape != image.shape[:2]:
                raise DatasetError(f"{s.image_path} is {image.shape[:2]} but its mask is {true.shape}")
            model_rows.append({"image_id": s.image_id, "label": s.label, **per_image_scores(prob, true, thresholds)})
            base = otsu_segment(image)
            base_rows.append(
                {"image_id": s.image_id, "label": s.label, "iou": iou(base, true), "dice": dice(base, true)}
            )
    return model_rows, base_rows


def markdown_report(report: dict[str, Any]) -> str:
    """The Markdown table of the report: U-Net, Otsu baseline and the study side by side."""
    m, b, t = report["model"], report["baseline"], report["threshold"]
    fmt = lambda v: "—" if v is None else f"{v:.4f}"  # noqa: E731
    rows = [
        ("mean IoU @0.4", m["mean_iou@0.4"], b["mean_iou"], STUDY_IOU_AT_04),
        ("mean IoU @0.5", m["mean_iou@0.5"], b["mean_iou"], None),
        (
            "thresholded Jaccard @0.4 (ISIC 2018, floor 0.65)",
            m["thresholded_jaccard@0.4"],
            b["thresholded_jaccard"],
            None,
        ),
        ("thresholded Jaccard @0.5", m["thresholded_jaccard@0.5"], b["thresholded_jaccard"], None),
    ]
    if t not in (0.4, 0.5):
        rows += [
            (f"mean IoU @{t:g} (model threshold)", m[f"mean_iou@{t:g}"], b["mean_iou"], None),
            (f"thresholded Jaccard @{t:g} (model threshold)", m["thresholded_jaccard"], b["thresholded_jaccard"], None),
        ]
    rows.append((f"mean Dice @{t:g}", m[f"mean_dice@{t:g}"], b["mean_dice"], None))
    lines = [
        f"# Segmentation evaluation: {report['model_version']} on the {report['subset']} split",
        "",
        f"{report['images']} images, split `{report['split_csv']}` (hash `{report['split_hash']}`), "
        f"metrics at full resolution (probability map upsampled to the original size). "
        f"Otsu baseline: blue channel, morphology, central component (`ml/segmentation/baseline.py`).",
        "",
        "| metric | U-Net | Otsu baseline | study |",
        "| --- | --- | --- | --- |",
        *[f"| {name} | {fmt(a)} | {fmt(c)} | {fmt(d)} |" for name, a, c, d in rows],
        "",
        "Per label (mean IoU @0.4, U-Net / Otsu):",
        "",
        "| label | images | U-Net | Otsu |",
        "| --- | --- | --- | --- |",
        *[
            f"| {label} | {v['images']} | {v['model_iou@0.4']:.4f} | {v['baseline_iou']:.4f} |"
            for label, v in report["per_label"].items()
        ],
        "",
        f"![best and worst outlines]({Path(report['grid']).name}) — green: reference mask, red: U-Net "
        f"at {t:g}; top row best, bottom row worst.",
        "",
    ]
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    """Entry point of `skintriage evaluate-segmentation`."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from ml.segmentation.train import configure_runtime

    configure_runtime(args.threads, mixed_precision=False)
    from ml.segmentation.metrics import summarize
    from ml.segmentation.unet import Segmenter

    card_path = Path(args.model_dir) / SEGMENTATION_CARD
    try:
        segmenter = Segmenter.from_card(card_path, batch_size=args.batch_size)
        split, digest = load_or_make_split(args.data, args.split)
    except (ModelCardError, DatasetError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    trained_on = segmenter.card.training.get("split_hash")
    if trained_on and trained_on != digest:
        print(
            f"warning: the model was trained on split {trained_on}, this is split {digest}; "
            "test images may have been seen in training",
            file=sys.stderr,
        )
    samples = split[args.subset][: args.limit] if args.limit else split[args.subset]
    model_rows, base_rows = evaluate(segmenter=segmenter, samples=samples, batch_size=args.batch_size)
    t = segmenter.threshold
    per_label = {}
    for label in sorted({r["label"] for r in model_rows}):
        idx = [i for i, r in enumerate(model_rows) if r["label"] == label]
        per_label[label] = {
            "images": len(idx),
            "model_iou@0.4": float(np.mean([model_rows[i]["iou@0.4"] for i in idx])),
            "baseline_iou": float(np.mean([base_rows[i]["iou"] for i in idx])),
        }
    report_dir = Path(args.report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    stem = f"eval-{args.subset}"
    grid = report_dir / f"{stem}-grid.png"
    report = {
        "model_version": segmenter.version,
        "card": str(card_path),
        "subset": args.subset,
        "images": len(samples),
        "split_csv": str(args.split),
        "split_hash": digest,
        "threshold": t,
        "model": summarize(model_rows, iou_key=f"iou@{t:g}"),
        "baseline": summarize(base_rows, iou_key="iou"),
        "study": {"mean_iou@0.4": STUDY_IOU_AT_04},
        "per_label": per_label,
        "grid": str(grid),
        "per_image": [{**r, "baseline_iou": b["iou"]} for r, b in zip(model_rows, base_rows, strict=True)],
    }
    write_grid(segmenter, samples, model_rows, f"iou@{t:g}", args.grid, grid)
    (report_dir / f"{stem}.json").write_text(json.dumps(report, indent=1) + "\n")
    (report_dir / f"{stem}.md").write_text(markdown_report(report))
    if args.update_card:
        card = ModelCard.load(card_path)
        card.metrics[args.subset] = {"model": report["model"], "baseline": report["baseline"], "split_hash": digest}
        card.save(card_path)
    m, b = report["model"], report["baseline"]
    print(
        f"{args.subset}: {len(samples)} images | U-Net IoU@0.4 {m['mean_iou@0.4']:.4f} IoU@0.5 {m['mean_iou@0.5']:.4f} "
        f"Dice@{t:g} {m[f'mean_dice@{t:g}']:.4f} thresholded Jaccard@{t:g} {m['thresholded_jaccard']:.4f} | "
        f"Otsu IoU {b['mean_iou']:.4f} thresholded Jaccard {b['thresholded_jaccard']:.4f} | "
        f"report {report_dir / stem}.md"
    )
    return 0


if __name__ == "__main__":
    _parser = argparse.ArgumentParser(prog="skintriage evaluate-segmentation", description=__doc__)
    add_arguments(_parser)
    sys.exit(main(_parser.parse_args()))
