"""`skintriage train-modality`: fit the dermoscopic / clinical / not-a-skin-photo check and write its card.

Data: HAM10000 (dermoscopic; its lesion-grouped split CSV, shared with the other models) and PAD-UFES-20
(clinical; split by patient, `ml.pad_data.pad_split`). Fitted on the train parts, thresholds chosen on
val, accuracy reported on test: patients and lesions never seen in fitting.
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

from ml.data import load_or_make_split, read_image_rgb
from ml.modality import FEATURE_SIDE, FEATURE_VERSION, MODALITY_CARD, ModalityParams, photo_features
from ml.modelcard import ModelCard, sha256_file
from ml.pad_data import read_pad

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the train-modality flags."""
    parser.add_argument("--ham", type=Path, required=True, help="HAM10000 folder (dermoscopic photos)")
    parser.add_argument("--pad", type=Path, required=True, help="PAD-UFES-20 folder (smartphone photos)")
    parser.add_argument("--split-csv", type=Path, default=Path("runs/split.csv"), help="HAM10000 lesion split")
    parser.add_argument("--out", type=Path, default=Path("models"), help="MODEL_DIR for modality.json + arrays")
    parser.add_argument("--cache", type=Path, default=Path("runs/modality-features.npz"))
    parser.add_argument("--C", type=float, default=1.0, help="inverse L2 strength of the logistic regression")
    parser.add_argument("--distance-percentile", type=float, default=99.8,
                        help="refuse photos farther from the lesion photos than this percentile of the validation "
                        "photos of either kind (the higher of the two)")
    parser.add_argument("--distance-margin", type=float, default=1.25,
                        help="multiply the chosen distance limit by this (few validation photos: keep a margin)")
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
    """Fit on train, choose thresholds on val, score test, write the arrays and the card."""
    from sklearn.covariance import LedoitWolf
    from sklearn.linear_model import LogisticRegression

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

    mean = x[part["train"]].mean(0)
    scale = x[part["train"]].std(0) + 1e-6
    z = (x - mean) / scale
    lr = LogisticRegression(C=args.C, class_weight="balanced", max_iter=5000)
    lr.fit(z[part["train"]], y[part["train"]])
    cov = LedoitWolf().fit(z[part["train"]])
    params = ModalityParams(mean=mean.astype(np.float64), scale=scale.astype(np.float64),
                            coef=lr.coef_[0].astype(np.float64), intercept=float(lr.intercept_[0]),
                            centre=cov.location_.astype(np.float64), precision=cov.precision_.astype(np.float64))
    p = params.p_clinical(x)
    dist = params.distance(x)

    # Threshold on val: the midpoint of the band that keeps both kinds best (balanced accuracy).
    candidates = np.linspace(0.05, 0.95, 91)
    val = part["val"]
    scores = [0.5 * ((p[val & ~y] < t).mean() + (p[val & y] >= t).mean()) for t in candidates]
    best = np.flatnonzero(np.isclose(scores, max(scores)))
    threshold = float(candidates[best[len(best) // 2]])
    limits = [float(np.percentile(dist[val & kind], args.distance_percentile)) for kind in (~y, y)]
    max_distance = max(limits) * args.distance_margin

    metrics: dict[str, Any] = {}
    for name, mask in part.items():
        metrics[name] = accuracy_each_way(p[mask], y[mask], threshold)
        metrics[name]["refused_as_not_skin_dermoscopic"] = float((dist[mask & ~y] > max_distance).mean())
        metrics[name]["refused_as_not_skin_clinical"] = float((dist[mask & y] > max_distance).mean())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / ".modality.tmp.npz"
    params.save(tmp)
    sha = sha256_file(tmp)
    weights = out / f"modality-{sha[:12]}.npz"
    tmp.replace(weights)
    card = ModelCard(
        kind="modality",
        name="modality-lr",
        weights_file=weights.name,
        weights_sha256=sha,
        input_size=[FEATURE_SIDE, FEATURE_SIDE],
        architecture={"name": "logistic regression + Ledoit-Wolf Mahalanobis distance",
                      "features": "ml.modality.photo_features", "feature_version": FEATURE_VERSION},
        preprocessing={"view": "centre square, resized to 96x96 (INTER_AREA)"},
        labels=["dermoscopic", "clinical"],
        operating_point={"clinical_threshold": threshold, "max_distance": max_distance,
                         "distance_percentile": args.distance_percentile, "distance_margin": args.distance_margin},
        training={"ham": str(args.ham), "pad": str(args.pad), "split_csv": str(args.split_csv), "split_hash": digest,
                  "pad_split": "sha256(patient_id) mod 10: 0-5 train, 6-7 val, 8-9 test", "C": args.C,
                  "n_images": {name: {"dermoscopic": int((mask & ~y).sum()), "clinical": int((mask & y).sum())}
                               for name, mask in part.items()},
                  "data_licences": "HAM10000 CC BY-NC 4.0; PAD-UFES-20 CC BY 4.0"},
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
