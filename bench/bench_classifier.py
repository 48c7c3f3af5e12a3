"""CPU inference benchmark of the carded classifier: latency p50/p95 and throughput at batch 1 and 16, peak memory.

Usage: .venv/bin/python bench/bench_classifier.py [--card models/classifier.json] [--threads 1]
Times Classifier.predict_proba end to end (fit to input, normalise, ResNet50, temperature softmax)
on 600x450 photos, the size of HAM10000 images. Prints a table and writes docs/classification/bench.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ml.classification.classifier import Classifier, build_resnet50, export_weights  # noqa: E402
from ml.modelcard import CLASSIFIER_CARD, ModelCard  # noqa: E402
from skintriage.vocabulary import LABELS  # noqa: E402


def _peak_rss_mib() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _random_card(size: int, folder: Path) -> Path:
    """A throw-away card with random weights, for timing when no trained model exists."""
    weights, sha = export_weights(build_resnet50().state_dict(), folder)
    card = ModelCard(
        kind="classifier",
        name="bench-random",
        weights_file=weights.name,
        weights_sha256=sha,
        input_size=[size, size],
        labels=list(LABELS),
        temperature=1.0,
        operating_point={"mel_threshold": 0.5},
        preprocessing={"input_variant": "whole"},
    )
    path = folder / CLASSIFIER_CARD
    card.save(path)
    return path


def _time(classifier: Classifier, images: list[np.ndarray], repeats: int) -> list[float]:
    """Seconds per predict_proba call over `repeats` calls, after two warm-up calls."""
    for _ in range(2):
        classifier.predict_proba(images)
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        classifier.predict_proba(images)
        out.append(time.perf_counter() - start)
    return out


def main() -> int:
    """Run the benchmark, print the table, write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--card", type=Path, default=ROOT / "models" / CLASSIFIER_CARD)
    parser.add_argument("--size", type=int, default=96, help="input size of the random model if no card exists")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=30, help="timed calls at batch 1 (batch 16 uses a third)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "classification" / "bench.json")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    rss_start = _peak_rss_mib()
    with tempfile.TemporaryDirectory() as tmp:
        card_path = args.card if args.card.is_file() else _random_card(args.size, Path(tmp))
        classifier = Classifier.from_card(card_path, device="cpu")
    rss_loaded = _peak_rss_mib()
    rng = np.random.default_rng(0)
    photos = [rng.integers(0, 256, (450, 600, 3), dtype=np.uint8) for _ in range(16)]
    rows = []
    for batch, repeats in ((1, args.repeats), (16, max(3, args.repeats // 3))):
        seconds = np.array(_time(classifier, photos[:batch], repeats))
        rows.append(
            {
                "batch": batch,
                "calls": repeats,
                "latency_p50_ms": float(np.percentile(seconds, 50) * 1000),
                "latency_p95_ms": float(np.percentile(seconds, 95) * 1000),
                "throughput_img_s": float(batch / np.median(seconds)),
            }
        )
    result = {
        "model": classifier.version,
        "card": str(card_path) if args.card.is_file() else "random weights (no card found)",
        "input_size": list(classifier.input_size),
        "threads": args.threads,
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "load_average_1min": os.getloadavg()[0],
        "peak_rss_mib": {"before_model": rss_start, "after_load": rss_loaded, "after_bench": _peak_rss_mib()},
        "rows": rows,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")

    print(
        f"classifier {result['model']}  input {classifier.input_size[0]}x{classifier.input_size[1]}  "
        f"threads {args.threads}  load avg {result['load_average_1min']:.1f}"
    )
    print("| batch | p50 latency (ms) | p95 latency (ms) | throughput (img/s) |")
    print("| --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['batch']} | {r['latency_p50_ms']:.1f} | {r['latency_p95_ms']:.1f} | {r['throughput_img_s']:.1f} |")
    print(
        f"peak RSS: {rss_loaded:.0f} MiB after loading, {result['peak_rss_mib']['after_bench']:.0f} MiB after "
        f"the benchmark; wrote {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
