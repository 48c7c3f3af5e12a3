"""Side-by-side comparison of classifier cards on one split: each model, with flip TTA, and their ensemble.

    KERAS_BACKEND=tensorflow .venv/bin/python bench/compare_classifiers.py \
        --data ../shared/data/ham10000_sample --split val --tta \
        --cards models/classifier.json runs/cls-out-r18ft/classifier.json runs/cls-out-r50/classifier.json

Scores every image of the split with every card (a crop model crops by the U-Net's mask, as the worker
does), optionally also with the four flip views averaged (`--tta`), and the mean of the cards' calibrated
probabilities (the ensemble, when more than one card is given). Prints one row per variant: melanoma ROC
AUC, balanced accuracy (arg-max), specificity at melanoma sensitivities 0.90/0.94/0.98 and ECE, then a
paired bootstrap over *lesions* (one lesion's photos move together) of each variant's AUC minus the first
card's. The first card is the baseline: put the shipped one first. Writes JSON and the per-image
probabilities (`.npz` beside the JSON) for later analysis.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ml.classification.metrics import (
    SENSITIVITY_TARGET,
    binary_roc_auc,
    sensitivity_specificity,
    summarize,
    threshold_for_sensitivity,
)
from ml.data.ham10000 import read_split_csv
from ml.frameworks import load_torch_first
from skintriage.vocabulary import LABELS, MEL_INDEX

SENSITIVITIES = (SENSITIVITY_TARGET, 0.94, 0.98)


def bootstrap_auc_difference(
    is_mel: np.ndarray, p_base: np.ndarray, p_other: np.ndarray, groups: np.ndarray, *, n: int, seed: int
) -> dict:
    """Paired bootstrap over groups (lesions) of AUC(other) - AUC(base): mean, 95% interval, share other wins."""
    rng = np.random.default_rng(seed)
    _, inverse = np.unique(groups, return_inverse=True)
    members = [np.flatnonzero(inverse == g) for g in range(inverse.max() + 1)]
    diffs = []
    for _ in range(n):
        i = np.concatenate([members[g] for g in rng.integers(0, len(members), len(members))])
        if is_mel[i].all() or not is_mel[i].any():
            continue
        diffs.append(binary_roc_auc(is_mel[i], p_other[i]) - binary_roc_auc(is_mel[i], p_base[i]))
    d = np.array(diffs)
    return {
        "resamples": len(d),
        "mean": float(d.mean()),
        "ci95": [float(np.percentile(d, 2.5)), float(np.percentile(d, 97.5))],
        "share_better": float((d > 0).mean()),
    }


class CachedSegmenter:
    """The U-Net's masks computed once per image and reused by every variant (same images, same order)."""

    def __init__(self, segmenter) -> None:
        self.segmenter = segmenter
        self.cache: dict[bytes, np.ndarray] = {}

    def predict_masks(self, images: list[np.ndarray]) -> list[np.ndarray]:
        keys = [hashlib.sha1(img.tobytes()).digest() + str(img.shape).encode() for img in images]
        todo = [i for i, k in enumerate(keys) if k not in self.cache]
        if todo:
            fresh = self.segmenter.predict_masks([images[i] for i in todo])
            self.cache.update({keys[i]: np.asarray(m, np.uint8) for i, m in zip(todo, fresh, strict=True)})
        return [self.cache[k] for k in keys]


def row_for(probs: np.ndarray, y: np.ndarray) -> dict:
    """The headline numbers of one variant."""
    is_mel = y == MEL_INDEX
    p_mel = probs[:, MEL_INDEX]
    m = summarize(probs, y)
    return {
        "mel_auc": m["mel_auc"],
        "balanced_accuracy": m["balanced_accuracy"],
        "ece": m["ece"],
        "specificity_at_sensitivity": {
            f"{s:.2f}": sensitivity_specificity(is_mel, p_mel, threshold_for_sensitivity(is_mel, p_mel, s))[1]
            for s in SENSITIVITIES
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--split-csv", type=Path, default=Path("runs/split.csv"))
    parser.add_argument("--split", default="val", help="val to choose (the default), test only to report")
    parser.add_argument(
        "--cards", type=Path, nargs="+", required=True, help="classifier cards; the first is the baseline"
    )
    parser.add_argument("--limit", type=int, default=None, help="first N images only (a quick check, not a result)")
    parser.add_argument("--tta", action="store_true", help="also score each card with the four flip views averaged")
    parser.add_argument("--seg-card", type=Path, default=Path("models/segmentation.json"))
    parser.add_argument("--bootstrap", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("runs/compare_classifiers.json"))
    args = parser.parse_args()

    load_torch_first()  # every classifier loads before TensorFlow (ml/frameworks.py)
    import torch

    from ml.classification.classifier import Classifier
    from ml.classification.evaluate import evaluate

    torch.set_num_threads(args.threads)
    samples = read_split_csv(args.split_csv, args.data)[args.split][: args.limit]
    models = [Classifier.from_card(card) for card in args.cards]
    segmenter = None
    if any(m.input_variant == "crop" for m in models):
        from ml.segmentation.unet import Segmenter

        segmenter = CachedSegmenter(Segmenter.from_card(args.seg_card))
    y = np.array([LABELS.index(s.label) for s in samples])
    groups = np.array([s.lesion_id for s in samples])
    variants: dict[str, np.ndarray] = {}
    names = [m.version if [n.version for n in models].count(m.version) == 1 else f"{m.version} ({card})"
             for m, card in zip(models, args.cards, strict=True)]  # fmt: skip
    for model, version in zip(models, names, strict=True):
        for tta in (False, True) if args.tta else (False,):
            name = version + (" +TTA" if tta else "")
            print(f"scoring {name} ...", flush=True)
            variants[name] = np.array(
                evaluate(model, samples, masks="unet", segmenter=segmenter, tta=tta)["probabilities"]
            )
    if len(models) > 1:
        plain = [variants[name] for name in names]
        variants["ensemble (mean of " + ", ".join(names) + ")"] = np.mean(plain, axis=0)
    base_name = names[0]
    is_mel = y == MEL_INDEX
    rows = {name: row_for(p, y) for name, p in variants.items()}
    for name, p in variants.items():
        if name != base_name:
            rows[name]["auc_minus_baseline"] = bootstrap_auc_difference(
                is_mel, variants[base_name][:, MEL_INDEX], p[:, MEL_INDEX], groups, n=args.bootstrap, seed=args.seed
            )
    report = {
        "split": args.split,
        "n": len(samples),
        "melanomas": int(is_mel.sum()),
        "melanoma_lesions": len(set(groups[is_mel])),
        "baseline": base_name,
        "masks": "unet",
        "cards": [str(c) for c in args.cards],
        "variants": rows,
    }

    heads = " | ".join(f"spec@{s:.2f}" for s in SENSITIVITIES)
    print(
        f"\n{args.split} split: {len(samples)} images, {int(is_mel.sum())} melanomas "
        f"({report['melanoma_lesions']} lesions); U-Net masks\n"
    )
    print(f"| variant | MEL AUC | AUC - baseline [95% CI, lesion bootstrap] | bacc | {heads} | ECE |")
    print("| --- " * (5 + len(SENSITIVITIES)) + "|")
    for name, r in rows.items():
        d = r.get("auc_minus_baseline")
        diff = "baseline" if d is None else f"{d['mean']:+.4f} [{d['ci95'][0]:+.4f}, {d['ci95'][1]:+.4f}]"
        specs = " | ".join(f"{v:.3f}" for v in r["specificity_at_sensitivity"].values())
        print(f"| {name} | {r['mel_auc']:.4f} | {diff} | {r['balanced_accuracy']:.4f} | {specs} | {r['ece']:.4f} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    np.savez_compressed(
        args.out.with_suffix(".npz"),
        labels=y,
        lesions=groups,
        names=np.array(list(variants)),
        probabilities=np.stack(list(variants.values())),
    )
    print(f"wrote {args.out} and {args.out.with_suffix('.npz')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
