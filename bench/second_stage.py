"""Would a small second stage help? The network's probabilities plus what is known about the patient.

    python bench/compare_classifiers.py --data $D --split val --cards models/classifier.json \
        --out runs/shipped-val.json
    python bench/compare_classifiers.py --data $D --split test --cards models/classifier.json \
        --out runs/shipped-test.json
    python bench/second_stage.py --data $D --val runs/shipped-val.npz --test runs/shipped-test.npz \
        --out docs/models/second-stage.json

A multinomial logistic regression on the log-probabilities of the shipped classifier (scored as the worker
scores: U-Net crops, the card's temperature) and, per variant, the body site as the bot asks it (face, mouth
or genitals, elsewhere, or skipped) or HAM10000's full metadata (age, sex, eight body-site groups; an
upper bound: the bot does not ask age or sex). Missing answers are a category of their own. It is fitted on
the validation split (the regularisation chosen by lesion-grouped cross-validation there) and measured once
on the test split, with a paired bootstrap over test lesions of the melanoma AUC difference against the
network alone. The issue's rule: keep it only if that interval excludes zero.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ml.classification.metrics import binary_roc_auc, summarize
from ml.data.ham10000 import read_split_csv
from skintriage.vocabulary import LABELS, MEL_INDEX

# HAM10000 localization -> the bot's site question (ml.triage.red_flags.QUESTIONS["site"]); None = skipped.
# Hands and feet cannot be told apart from palms and soles here, so they count as "other".
BOT_SITE = {"face": "face", "ear": "face", "genital": "mouth_genitals", "unknown": None}
SITE_GROUPS = {
    "head_neck": ("face", "ear", "scalp", "neck"),
    "trunk_front": ("chest", "abdomen", "trunk"),
    "back": ("back",),
    "upper_extremity": ("upper extremity",),
    "lower_extremity": ("lower extremity",),
    "hand_foot": ("hand", "foot", "acral"),
    "genital": ("genital",),
}


def metadata(root: Path) -> dict[str, dict[str, str]]:
    with open(root / "HAM10000_metadata.csv", newline="") as fh:
        return {row["image_id"]: row for row in csv.DictReader(fh)}


def features(probs: np.ndarray, rows: list[dict[str, str]], variant: str) -> np.ndarray:
    """Design matrix: log-probabilities, then the variant's patient features (one-hot, missing included)."""
    cols = [np.log(np.clip(probs, 1e-6, 1.0))]
    if variant in ("bot_site", "full"):
        sites = [row.get("localization", "unknown") for row in rows]
        if variant == "bot_site":
            asked = [BOT_SITE.get(s, "other") for s in sites]
            for option in ("face", "mouth_genitals", "other", None):
                cols.append(np.array([[a == option] for a in asked], dtype=float))
        else:
            for members in SITE_GROUPS.values():
                cols.append(np.array([[s in members] for s in sites], dtype=float))
            cols.append(np.array([[s not in sum(SITE_GROUPS.values(), ())] for s in sites], dtype=float))
            ages = np.array([float(r["age"]) if r.get("age") else np.nan for r in rows])
            cols.append(np.nan_to_num((ages[:, None] - 50.0) / 20.0))
            cols.append(np.isnan(ages)[:, None].astype(float))
            for sex in ("male", "female"):
                cols.append(np.array([[r.get("sex") == sex] for r in rows], dtype=float))
    return np.hstack(cols)


def fit(x: np.ndarray, y: np.ndarray, groups: np.ndarray, seed: int):
    """Multinomial logistic regression; C by lesion-grouped 5-fold log-loss on the fitting split."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss
    from sklearn.model_selection import GroupKFold

    best = None
    for c in (0.01, 0.03, 0.1, 0.3, 1.0, 3.0):
        oof = np.zeros((len(y), len(LABELS)))
        for tr, te in GroupKFold(n_splits=5, shuffle=True, random_state=seed).split(x, y, groups):
            model = LogisticRegression(C=c, max_iter=5000).fit(x[tr], y[tr])
            oof[te] = model.predict_proba(x[te])
        loss = log_loss(y, oof, labels=list(range(len(LABELS))))
        if best is None or loss < best[0]:
            best = (loss, c)
    return LogisticRegression(C=best[1], max_iter=5000).fit(x, y), best[1]


def paired_auc_bootstrap(y_mel, a, b, groups, n_boot: int, seed: int) -> dict[str, float]:
    """AUC(b) - AUC(a) with a 95% interval, resampling lesions."""
    uniq, inverse = np.unique(groups, return_inverse=True)
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(n_boot):
        counts = np.bincount(rng.integers(0, len(uniq), len(uniq)), minlength=len(uniq))[inverse]
        idx = np.repeat(np.arange(len(y_mel)), counts)
        d = binary_roc_auc(y_mel[idx], b[idx]) - binary_roc_auc(y_mel[idx], a[idx])
        if np.isfinite(d):
            diffs.append(d)
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    return {"mean": float(binary_roc_auc(y_mel, b) - binary_roc_auc(y_mel, a)), "ci95": [float(lo), float(hi)]}


def load_split(npz: Path, samples) -> np.ndarray:
    with np.load(npz) as data:
        probs = data["probabilities"][0]
        if len(probs) != len(samples) or list(data["lesions"]) != [s.lesion_id for s in samples]:
            raise SystemExit(f"{npz} does not match the split's images; score the same split CSV")
    return probs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--split-csv", type=Path, default=Path("runs/split.csv"))
    parser.add_argument("--val", type=Path, required=True, help="compare_classifiers .npz of the val split")
    parser.add_argument("--test", type=Path, required=True, help="compare_classifiers .npz of the test split")
    parser.add_argument("--bootstrap", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/second-stage.json"))
    args = parser.parse_args()

    split = read_split_csv(args.split_csv, args.data)
    meta = metadata(args.data)
    parts = {}
    for name, npz in (("val", args.val), ("test", args.test)):
        samples = split[name]
        parts[name] = {
            "probs": load_split(npz, samples),
            "y": np.array([LABELS.index(s.label) for s in samples]),
            "groups": np.array([s.lesion_id for s in samples]),
            "rows": [meta[s.image_id] for s in samples],
        }
    val, test = parts["val"], parts["test"]
    y_mel = test["y"] == MEL_INDEX
    report: dict = {"fitted_on": "val", "measured_on": "test", "variants": {}}
    base = summarize(test["probs"], test["y"])
    report["variants"]["network alone"] = {
        "mel_auc": base["mel_auc"],
        "balanced_accuracy": base["balanced_accuracy"],
        "ece": base["ece"],
    }
    for variant in ("probs_only", "bot_site", "full"):
        model, c = fit(features(val["probs"], val["rows"], variant), val["y"], val["groups"], args.seed)
        p = model.predict_proba(features(test["probs"], test["rows"], variant))
        m = summarize(p, test["y"])
        report["variants"][variant] = {
            "C": c,
            "mel_auc": m["mel_auc"],
            "balanced_accuracy": m["balanced_accuracy"],
            "ece": m["ece"],
            "auc_minus_network": paired_auc_bootstrap(
                y_mel, test["probs"][:, MEL_INDEX], p[:, MEL_INDEX], test["groups"], args.bootstrap, args.seed
            ),
        }
    print(f"test split: {len(test['y'])} images, {int(y_mel.sum())} melanomas; second stage fitted on val")
    print("| variant | MEL AUC | AUC - network [95% CI, lesion bootstrap] | bacc | ECE |")
    print("| --- | --- | --- | --- | --- |")
    for name, r in report["variants"].items():
        d = r.get("auc_minus_network")
        diff = "—" if d is None else f"{d['mean']:+.4f} [{d['ci95'][0]:+.4f}, {d['ci95'][1]:+.4f}]"
        print(f"| {name} | {r['mel_auc']:.4f} | {diff} | {r['balanced_accuracy']:.4f} | {r['ece']:.4f} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
