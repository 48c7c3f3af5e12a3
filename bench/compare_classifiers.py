"""Paired comparison of two classifier cards on one split: melanoma AUC difference and specificity.

    KERAS_BACKEND=tensorflow .venv/bin/python bench/compare_classifiers.py \
        --data ../shared/data/ham10000_sample --a runs/cls-out-whole/classifier.json \
        --b runs/cls-out-crop/classifier.json --seg-card models/segmentation.json

Scores every image of the split with both models (a crop model crops by the U-Net's mask), then
prints the melanoma ROC AUC of each, a paired bootstrap of the AUC difference (B minus A, images
resampled with replacement) and each model's specificity at equal melanoma sensitivities. Writes JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ml.classification_metrics import (  # noqa: E402
    binary_roc_auc,
    sensitivity_specificity,
    threshold_for_sensitivity,
)
from ml.data import read_split_csv  # noqa: E402
from ml.frameworks import load_torch_first  # noqa: E402
from ml.labels import LABELS, MEL_INDEX  # noqa: E402

SENSITIVITIES = (0.90, 0.94, 0.98)


def bootstrap_auc_difference(is_mel: np.ndarray, p_a: np.ndarray, p_b: np.ndarray, *, n: int, seed: int) -> dict:
    """Paired bootstrap of AUC(b) - AUC(a): mean, 95% interval and the share of resamples where b wins."""
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(n):
        i = rng.integers(0, len(is_mel), len(is_mel))
        if is_mel[i].all() or not is_mel[i].any():
            continue
        diffs.append(binary_roc_auc(is_mel[i], p_b[i]) - binary_roc_auc(is_mel[i], p_a[i]))
    d = np.array(diffs)
    return {"resamples": len(d), "mean": float(d.mean()), "ci95": [float(np.percentile(d, 2.5)),
            float(np.percentile(d, 97.5))], "share_b_better": float((d > 0).mean())}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--split-csv", type=Path, default=Path("runs/split.csv"))
    parser.add_argument("--split", default="test")
    parser.add_argument("--a", type=Path, required=True, help="first classifier card")
    parser.add_argument("--b", type=Path, required=True, help="second classifier card")
    parser.add_argument("--seg-card", type=Path, default=Path("models/segmentation.json"))
    parser.add_argument("--bootstrap", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("runs/compare_classifiers.json"))
    args = parser.parse_args()

    import torch

    from ml.classifier import Classifier
    from ml.evaluate_classifier import evaluate

    torch.set_num_threads(args.threads)
    samples = read_split_csv(args.split_csv, args.data)[args.split]
    # Both classifiers load before TensorFlow (ml/frameworks.py).
    load_torch_first()
    models = {"a": Classifier.from_card(args.a), "b": Classifier.from_card(args.b)}
    segmenter = None
    if any(m.input_variant == "crop" for m in models.values()):
        from ml.unet import Segmenter

        segmenter = Segmenter.from_card(args.seg_card)
    probs = {key: np.array(evaluate(model, samples, masks="unet", segmenter=segmenter)["probabilities"])[:, MEL_INDEX]
             for key, model in models.items()}
    is_mel = np.array([s.label == LABELS[MEL_INDEX] for s in samples])
    report = {
        "split": args.split, "n": len(samples), "melanomas": int(is_mel.sum()),
        "a": {"card": str(args.a), "version": models["a"].version}, "b": {"card": str(args.b),
              "version": models["b"].version},
        "mel_auc": {k: binary_roc_auc(is_mel, p) for k, p in probs.items()},
        "auc_difference_b_minus_a": bootstrap_auc_difference(is_mel, probs["a"], probs["b"], n=args.bootstrap,
                                                             seed=args.seed),
        "specificity_at_sensitivity": {
            f"{s:.2f}": {k: sensitivity_specificity(is_mel, p, threshold_for_sensitivity(is_mel, p, s))[1]
                         for k, p in probs.items()} for s in SENSITIVITIES},
    }
    print(f"| | A {report['a']['version']} | B {report['b']['version']} |\n| --- | --- | --- |")
    print(f"| melanoma AUC | {report['mel_auc']['a']:.3f} | {report['mel_auc']['b']:.3f} |")
    for s, row in report["specificity_at_sensitivity"].items():
        print(f"| specificity at sensitivity {s} | {row['a']:.3f} | {row['b']:.3f} |")
    d = report["auc_difference_b_minus_a"]
    print(f"\nAUC(B) - AUC(A): {d['mean']:+.4f}, 95% interval [{d['ci95'][0]:+.4f}, {d['ci95'][1]:+.4f}], "
          f"B better in {d['share_b_better']:.1%} of {d['resamples']} paired resamples")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
