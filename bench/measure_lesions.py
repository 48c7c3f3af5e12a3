"""Lesion measurements (ml.triage.measurements) on HAM10000's reference masks: their spread by class and their speed.

    python bench/measure_lesions.py --data ../shared/data/ham10000_sample --n 600 --out runs/measurements.json

Prints, per measurement, the median and quartiles for MEL, NV and OTHER, the MEL-vs-NV AUC of the
measurement on its own (0.5 = no separation), and the time per photo. The measurements are not used
by the tier; this says what clinicians will see on real photos.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ml.data.ham10000 import read_ham10000, read_image_rgb, read_mask
from ml.triage.measurements import measure_lesion

NUMBERS = (
    "asymmetry_major_axis",
    "asymmetry_minor_axis",
    "compactness",
    "convexity_ratio",
    "colour_count",
    "diameter_share",
    "area_share",
)


def auc(positive: list[float], negative: list[float]) -> float:
    """Mann-Whitney AUC: chance that a positive scores above a negative (ties count half)."""
    p, n = np.asarray(positive)[:, None], np.asarray(negative)[None, :]
    return float(((p > n).sum() + 0.5 * (p == n).sum()) / (p.size * n.size))


def main(argv: list[str] | None = None) -> int:
    """Measure --n random photos with reference masks and print the summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="HAM10000 folder (official layout)")
    parser.add_argument("--n", type=int, default=600, help="photos to measure (random, with a mask)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="write every photo's measurements here (JSON)")
    args = parser.parse_args(argv)

    samples = [s for s in read_ham10000(args.data) if s.mask_path is not None]
    rng = np.random.default_rng(args.seed)
    chosen = [samples[i] for i in rng.permutation(len(samples))[: args.n]]
    rows, times = [], []
    for sample in chosen:
        rgb, mask = read_image_rgb(sample.image_path), read_mask(sample.mask_path)
        start = time.perf_counter()
        measured = measure_lesion(mask, rgb).to_dict()
        times.append((time.perf_counter() - start) * 1000)
        rows.append({"image_id": sample.image_id, "dx": sample.dx, "label": sample.label, **measured})

    by_label = {label: [r for r in rows if r["label"] == label] for label in ("MEL", "NV", "OTHER")}
    print(
        f"{len(rows)} photos ({', '.join(f'{k} {len(v)}' for k, v in by_label.items())}); "
        f"{np.median(times):.1f} ms per photo (p50), {np.percentile(times, 95):.1f} ms (p95)"
    )
    print("| measurement | MEL p25 / p50 / p75 | NV p25 / p50 / p75 | OTHER p25 / p50 / p75 | AUC MEL vs NV |")
    print("| --- | --- | --- | --- | --- |")
    for name in NUMBERS:
        cells = []
        for label in ("MEL", "NV", "OTHER"):
            values = [r[name] for r in by_label[label]]
            q = np.percentile(values, [25, 50, 75]) if values else [np.nan] * 3
            cells.append(" / ".join(f"{v:.3g}" for v in q))
        mel, nv = [r[name] for r in by_label["MEL"]], [r[name] for r in by_label["NV"]]
        separation = auc(mel, nv) if mel and nv else float("nan")
        print(f"| {name} | {' | '.join(cells)} | {separation:.2f} |")
    touching = sum(r["touches_border"] for r in rows)
    print(f"lesions touching the photo's edge: {touching} of {len(rows)}")
    for label, group in by_label.items():
        counts = {}
        for r in group:
            for colour in r["colours"]:
                counts[colour] = counts.get(colour, 0) + 1
        shown = ", ".join(f"{c} {n / max(1, len(group)):.0%}" for c, n in sorted(counts.items(), key=lambda x: -x[1]))
        print(f"{label}: colours present in: {shown}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
