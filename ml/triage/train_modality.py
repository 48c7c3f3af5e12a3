"""`skintriage train-modality`: fit the dermoscopic / clinical / not-a-skin-photo check and write its card.

Data: HAM10000 (dermoscopic; its lesion-grouped split CSV, shared with the other models) and PAD-UFES-20
(clinical; split by patient, `ml.data.pad_ufes.pad_split`). Fitted on train + val, with the thresholds
chosen on grouped out-of-fold answers over them; accuracy reported on test: lesions and patients never seen
in fitting.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from ml.data.ham10000 import load_or_make_split, read_image_rgb
from ml.data.pad_ufes import read_pad
from ml.modelcard import ModelCard, name_by_hash
from ml.triage.modality import (
    FEATURE_SIDE,
    FEATURE_VERSION,
    MODALITY_CARD,
    TEXTURE_SIDE,
    ModalityParams,
    photo_features,
)

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the train-modality flags."""
    parser.add_argument("--ham", type=Path, required=True, help="HAM10000 folder (dermoscopic photos)")
    parser.add_argument("--pad", type=Path, required=True, help="PAD-UFES-20 folder (smartphone photos)")
    parser.add_argument("--split-csv", type=Path, default=Path("runs/split.csv"), help="HAM10000 lesion split")
    parser.add_argument("--out", type=Path, default=Path("models"), help="MODEL_DIR for modality.json + arrays")
    parser.add_argument("--cache", type=Path, default=Path("runs/modality-features.npz"))
    parser.add_argument("--C", type=float, default=1.0, help="inverse L2 strength of the logistic regression")
    parser.add_argument("--folds", type=int, default=5, help="grouped cross-validation folds over train + val")
    parser.add_argument(
        "--distance-percentile",
        type=float,
        default=99.0,
        help="refuse photos farther from the lesion photos than this percentile of the out-of-fold "
        "distances of either kind (the higher of the two)",
    )
    parser.add_argument(
        "--distance-margin",
        type=float,
        default=1.25,
        help="multiply the chosen distance limit by this (few clinical photos: keep a margin)",
    )
    parser.add_argument("--seed", type=int, default=42)


def _features(paths: list[Path], cache: Path) -> np.ndarray:
    """Feature rows for the photos, cached by path list and feature version."""
    listing = "\n".join(str(p) for p in paths).encode()
    key = f"v{FEATURE_VERSION}-{FEATURE_SIDE}-{hashlib.sha256(listing).hexdigest()[:16]}"
    if cache.is_file():
        with np.load(cache, allow_pickle=False) as data:
            if str(data["key"]) == key:
                return data["features"]
    from tqdm import tqdm

    rows = np.stack([photo_features(read_image_rgb(p)) for p in tqdm(paths, desc="features", mininterval=10)])
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, features=rows, key=np.array(key))
    return rows


def _fit_params(x: np.ndarray, y: np.ndarray, c: float) -> ModalityParams:
    """Standardise, fit the logistic regression and the Ledoit-Wolf density of the lesion photos."""
    from sklearn.covariance import LedoitWolf
    from sklearn.linear_model import LogisticRegression

    mean = x.mean(0)
    scale = x.std(0) + 1e-6
    z = (x - mean) / scale
    lr = LogisticRegression(C=c, class_weight="balanced", max_iter=5000).fit(z, y)
    cov = LedoitWolf().fit(z)
    return ModalityParams(
        mean=mean.astype(np.float64),
        scale=scale.astype(np.float64),
        coef=lr.coef_[0].astype(np.float64),
        intercept=float(lr.intercept_[0]),
        centre=cov.location_.astype(np.float64),
        precision=cov.precision_.astype(np.float64),
    )


def accuracy_each_way(p_clinical: np.ndarray, is_clinical: np.ndarray, threshold: float) -> dict[str, float]:
    """Share right among dermoscopic photos and among clinical photos, with counts."""
    said_clinical = p_clinical >= threshold
    return {
        "dermoscopic_correct": float((~said_clinical[~is_clinical]).mean()),
        "clinical_correct": float(said_clinical[is_clinical].mean()),
        "n_dermoscopic": int((~is_clinical).sum()),
        "n_clinical": int(is_clinical.sum()),
    }


def fit(args: argparse.Namespace) -> dict[str, Any]:
    """Fit on train + val, choose thresholds out of fold, score test, write the arrays and the card."""
    from sklearn.model_selection import StratifiedGroupKFold

    ham_split, digest = load_or_make_split(args.ham, args.split_csv, seed=args.seed)
    pad = read_pad(args.pad)
    paths: list[Path] = []
    split: list[str] = []
    clinical: list[bool] = []
    for name, samples in ham_split.items():
        paths += [s.image_path for s in samples]
        split += [name] * len(samples)
        clinical += [False] * len(samples)
    paths += [s.image_path for s in pad]
    split += [s.split for s in pad]
    clinical += [True] * len(pad)
    x = _features(paths, args.cache)
    split_arr, y = np.array(split), np.array(clinical)
    part = {name: split_arr == name for name in ("train", "val", "test")}

    groups = np.array(
        [s.lesion_id for samples in ham_split.values() for s in samples] + [f"PAD-{s.patient_id}" for s in pad]
    )
    fit_part = part["train"] | part["val"]
    # Out-of-fold answers over train + val (grouped by lesion / patient) choose the thresholds: more photos
    # than val alone, and none of them scored by a model that saw them. Test stays untouched.
    oof_p, oof_d = np.zeros(len(y)), np.zeros(len(y))
    folds = StratifiedGroupKFold(n_splits=args.folds, shuffle=True, random_state=args.seed)
    idx = np.flatnonzero(fit_part)
    for tr, te in folds.split(x[idx], y[idx], groups[idx]):
        fold = _fit_params(x[idx[tr]], y[idx[tr]], args.C)
        oof_p[idx[te]] = fold.p_clinical(x[idx[te]])
        oof_d[idx[te]] = fold.distance(x[idx[te]])
    params = _fit_params(x[fit_part], y[fit_part], args.C)
    p = params.p_clinical(x)
    dist = params.distance(x)

    # The threshold where the worse of the two kinds is best; among ties the lowest, which favours "clinical"
    # (the cautious policy) when unsure.
    candidates = np.round(np.linspace(0.05, 0.95, 91), 2)
    fp, fy = oof_p[fit_part], y[fit_part]
    worst = [min((fp[~fy] < t).mean(), (fp[fy] >= t).mean()) for t in candidates]
    threshold = float(candidates[int(np.argmax(worst))])
    fd = oof_d[fit_part]
    max_distance = max(float(np.percentile(fd[kind], args.distance_percentile)) for kind in (~fy, fy))
    max_distance *= args.distance_margin

    metrics: dict[str, Any] = {"cross_validated_train_val": accuracy_each_way(fp, fy, threshold)}
    metrics["cross_validated_train_val"]["refused_as_not_skin_dermoscopic"] = float((fd[~fy] > max_distance).mean())
    metrics["cross_validated_train_val"]["refused_as_not_skin_clinical"] = float((fd[fy] > max_distance).mean())
    metrics["out_of_fold_distance_percentiles"] = {
        kind: dict(
            zip(
                ("50", "95", "99", "99.5", "99.7", "100"),
                np.percentile(fd[sel], (50, 95, 99, 99.5, 99.7, 100)).round(1).tolist(),
                strict=True,
            )
        )
        for kind, sel in (("dermoscopic", ~fy), ("clinical", fy))
    }
    for name, mask in part.items():
        metrics[name] = accuracy_each_way(p[mask], y[mask], threshold)
        metrics[name]["refused_as_not_skin_dermoscopic"] = float((dist[mask & ~y] > max_distance).mean())
        metrics[name]["refused_as_not_skin_clinical"] = float((dist[mask & y] > max_distance).mean())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / ".modality.tmp.npz"
    params.save(tmp)
    weights, sha = name_by_hash(tmp, out, "modality")
    card = ModelCard(
        kind="modality",
        name="modality-lr",
        weights_file=weights.name,
        weights_sha256=sha,
        input_size=[FEATURE_SIDE, FEATURE_SIDE],
        architecture={
            "name": "logistic regression + Ledoit-Wolf Mahalanobis distance",
            "features": "ml.triage.modality.photo_features",
            "feature_version": FEATURE_VERSION,
        },
        preprocessing={
            "view": f"centre square, resized to {FEATURE_SIDE}x{FEATURE_SIDE} and "
            f"{TEXTURE_SIDE}x{TEXTURE_SIDE} (INTER_AREA)"
        },
        labels=["dermoscopic", "clinical"],
        operating_point={
            "clinical_threshold": threshold,
            "max_distance": max_distance,
            "distance_percentile": args.distance_percentile,
            "distance_margin": args.distance_margin,
        },
        training={
            "ham": str(args.ham),
            "pad": str(args.pad),
            "split_csv": str(args.split_csv),
            "split_hash": digest,
            "pad_split": "sha256(patient_id) mod 10: 0-5 train, 6-7 val, 8-9 test",
            "C": args.C,
            "fitted_on": "train + val; thresholds from grouped out-of-fold answers",
            "folds": args.folds,
            "n_images": {
                name: {"dermoscopic": int((mask & ~y).sum()), "clinical": int((mask & y).sum())}
                for name, mask in part.items()
            },
            "data_licences": "HAM10000 CC BY-NC 4.0; PAD-UFES-20 CC BY 4.0",
        },
        metrics=metrics,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    card.save(out / MODALITY_CARD)
    log.info("modality threshold %.2f, distance limit %.1f; test %s", threshold, max_distance, metrics["test"])
    return {"card": str(out / MODALITY_CARD), "metrics": metrics}


def main(args: argparse.Namespace) -> int:
    """Run train-modality; print the test accuracy each way."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    result = fit(args)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    _parser = argparse.ArgumentParser(prog="skintriage train-modality", description=__doc__)
    add_arguments(_parser)
    sys.exit(main(_parser.parse_args()))
