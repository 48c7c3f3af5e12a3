"""How the models do on ordinary (clinical) phone photos: PAD-UFES-20, never used to train the classifier.

    python bench/evaluate_clinical.py --pad ../shared/data/pad_ufes_sample --model-dir models \
        --out docs/models/clinical.json

Runs the whole pipeline (quality gate, kind of photo, U-Net, classifier, policy) on every photo and
reports, with 95% bootstrap intervals over patients: melanoma sensitivity and specificity at the card's
threshold, melanoma AUC, the tiers patients would be told, and how often the modality check called the
photos ordinary. `--split test` keeps to the patients the modality check never saw.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ml.classification.metrics import binary_roc_auc
from ml.data.pad_ufes import read_pad
from ml.triage.pipeline import Pipeline


def bootstrap(values: dict[str, np.ndarray], statistic, groups: np.ndarray, n_boot: int, seed: int = 0):
    """Point estimate and 95% interval of statistic(values), resampling groups (patients) with replacement."""
    point = statistic(values)
    uniq, inverse = np.unique(groups, return_inverse=True)
    rng = np.random.default_rng(seed)
    stats = []
    for _ in range(n_boot):
        counts = np.bincount(rng.integers(0, len(uniq), len(uniq)), minlength=len(uniq))[inverse]
        idx = np.repeat(np.arange(len(groups)), counts)
        value = statistic({k: v[idx] for k, v in values.items()})
        if value is not None and np.isfinite(value):
            stats.append(value)
    low, high = np.percentile(stats, [2.5, 97.5]) if stats else (float("nan"), float("nan"))
    return {"point": point, "low": float(low), "high": float(high)}


def main() -> int:
    """Triage every PAD photo and print and write the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pad", type=Path, default=Path("../shared/data/pad_ufes_sample"))
    parser.add_argument("--model-dir", type=Path, default=Path("models"))
    parser.add_argument("--split", choices=("all", "test"), default="all")
    parser.add_argument("--allow-demo", action="store_true")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--boot", type=int, default=2000)
    parser.add_argument("--out", type=Path, default=Path("runs/clinical.json"))
    args = parser.parse_args()

    samples = [s for s in read_pad(args.pad) if args.split == "all" or s.split == "test"]
    pipeline = Pipeline.from_model_dir(
        args.model_dir, allow_demo=args.allow_demo, device="cpu", threads=args.threads, decode_workers=1
    )
    results = []
    for start in range(0, len(samples), 8):
        chunk = samples[start : start + 8]
        results += pipeline.run_batch([s.image_path.read_bytes() for s in chunk])
    is_mel = np.array([s.label == "MEL" for s in samples])
    judged = np.array([r.tier != "RETAKE" for r in results])
    p_mel = np.array([r.probabilities.get("MEL", np.nan) for r in results])
    high = np.array([r.tier == "HIGH" for r in results])
    low = np.array([r.tier == "LOW" for r in results])
    patients = np.array([s.patient_id for s in samples])
    values = {"mel": is_mel[judged], "p": p_mel[judged], "high": high[judged]}

    def sens(v):
        return float(v["high"][v["mel"]].mean()) if v["mel"].any() else None

    def spec(v):
        return float((~v["high"][~v["mel"]]).mean()) if (~v["mel"]).any() else None

    def auc(v):
        return binary_roc_auc(v["mel"], v["p"]) if 0 < v["mel"].sum() < len(v["mel"]) else None

    report = {
        "model_versions": pipeline.versions,
        "split": args.split,
        "photos": len(samples),
        "patients": int(len(np.unique(patients))),
        "melanomas": int(is_mel.sum()),
        "judged": int(judged.sum()),
        "refused": dict(Counter(str(r.retake_reason) for r in results if r.tier == "RETAKE")),
        "modality": dict(Counter(str(r.modality) for r in results)),
        "tiers": {
            label: dict(Counter(str(r.tier) for r, s in zip(results, samples, strict=True) if s.label == label))
            for label in ("MEL", "NV", "OTHER")
        },
        "melanomas_told_low": int((low & is_mel).sum()),
        "mel_threshold": pipeline.mel_threshold,
        "sensitivity_high": bootstrap(values, sens, patients[judged], args.boot),
        "specificity_high": bootstrap(values, spec, patients[judged], args.boot),
        "mel_auc": bootstrap(values, auc, patients[judged], args.boot),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(
        f"{report['photos']} photos of {report['patients']} patients ({report['melanomas']} melanomas), "
        f"{report['judged']} judged; refused {report['refused']}; modality {report['modality']}"
    )
    for key in ("sensitivity_high", "specificity_high", "mel_auc"):
        r = report[key]
        print(
            f"{key:18s} {r['point'] if r['point'] is not None else float('nan'):.3f}  [{r['low']:.3f}, {r['high']:.3f}]"
        )
    print(f"tiers by diagnosis: {report['tiers']}; melanomas told LOW: {report['melanomas_told_low']}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
