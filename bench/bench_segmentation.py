"""CPU inference benchmark of the carded U-Net: latency p50/p95, images/s and peak memory per input size and backend.

Usage: python bench/bench_segmentation.py [--card models/segmentation.json] [--sizes 128x160 256x320 448x592]
Each (backend, size) runs in its own process, so KERAS_BACKEND and peak memory are per configuration.
Timings include the whole Segmenter path: resize of a 600x450 photo, the network, upsampling to 600x450.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def worker(args: argparse.Namespace) -> None:
    """Measure one (backend, size) in this process and print one JSON line."""
    import dataclasses
    import resource
    import time

    import numpy as np

    from ml.segmentation.unet import Segmenter, UNetConfig, build_unet

    backend_name = os.environ.get("KERAS_BACKEND", "tensorflow")
    if backend_name == "torch":
        import torch

        torch.set_num_threads(args.threads)
    else:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    h, w = args.size
    segmenter = Segmenter.from_card(args.card, batch_size=args.batch)
    if [h, w] != list(segmenter.card.input_size):
        # The U-Net is fully convolutional: the same weights run at any size divisible by 2**depth.
        arch = segmenter.card.architecture
        config = UNetConfig((h, w), arch["base_filters"], arch["depth"], arch["dropout"], arch["batch_norm"])
        model = build_unet(config)
        model.set_weights(segmenter.model.get_weights())
        segmenter = Segmenter(model, dataclasses.replace(segmenter.card, input_size=[h, w]), batch_size=args.batch)
    rng = np.random.default_rng(0)
    photos = [rng.integers(0, 256, (450, 600, 3), dtype=np.uint8) for _ in range(args.batch)]
    for _ in range(3):
        segmenter.predict_proba(photos[:1])
    latencies = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        segmenter.predict_proba(photos[:1])
        latencies.append(time.perf_counter() - start)
    segmenter.predict_proba(photos)
    start = time.perf_counter()
    rounds = max(1, args.repeats // args.batch)
    for _ in range(rounds):
        segmenter.predict_proba(photos)
    throughput = rounds * len(photos) / (time.perf_counter() - start)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        json.dumps(
            {
                "backend": backend_name,
                "input_size": [h, w],
                "threads": args.threads,
                "latency_ms_p50": float(np.percentile(latencies, 50) * 1000),
                "latency_ms_p95": float(np.percentile(latencies, 95) * 1000),
                "images_per_s_batch": throughput,
                "batch": args.batch,
                "repeats": args.repeats,
                "peak_rss_mib": peak_kib / 1024,
            }
        )
    )


def parse_size(text: str) -> tuple[int, int]:
    """'HxW' -> (height, width)."""
    h, w = (int(x) for x in text.lower().split("x"))
    return h, w


def main() -> int:
    """Run every (backend, size) in a subprocess, print a table and write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--card", type=Path, default=REPO / "models" / "segmentation.json")
    parser.add_argument("--sizes", type=parse_size, nargs="+", default=[(128, 160), (256, 320), (448, 592)])
    parser.add_argument("--backends", nargs="+", default=["tensorflow", "torch"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "segmentation" / "bench.json")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=parse_size, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return 0
    rows = []
    for backend in args.backends:
        for h, w in args.sizes:
            env = {**os.environ, "KERAS_BACKEND": backend, "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "2"}
            cmd = [
                sys.executable,
                __file__,
                "--worker",
                "--card",
                str(args.card),
                "--size",
                f"{h}x{w}",
                "--threads",
                str(args.threads),
                "--repeats",
                str(args.repeats),
                "--batch",
                str(args.batch),
            ]
            proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
            if proc.returncode != 0:
                print(f"{backend} {h}x{w} failed:\n{proc.stderr[-2000:]}", file=sys.stderr)
                return 1
            rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            r = rows[-1]
            print(
                f"{backend:<10} {h}x{w:<5} p50 {r['latency_ms_p50']:7.1f} ms  p95 {r['latency_ms_p95']:7.1f} ms  "
                f"{r['images_per_s_batch']:6.1f} img/s  peak {r['peak_rss_mib']:6.0f} MiB",
                flush=True,
            )
    card = json.loads(args.card.read_text())
    result = {
        "card": str(args.card),
        "model_version": f"{card['name']}@{card['weights_sha256'][:12]}",
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "python": platform.python_version(),
        },
        "note": "photo 600x450 in, probability map 600x450 out; latency at batch 1, throughput at --batch",
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"\n| backend | input | p50 ms | p95 ms | images/s (batch {args.batch}) | peak RSS MiB |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(
            f"| {r['backend']} | {r['input_size'][0]}x{r['input_size'][1]} | {r['latency_ms_p50']:.1f} | "
            f"{r['latency_ms_p95']:.1f} | {r['images_per_s_batch']:.1f} | {r['peak_rss_mib']:.0f} |"
        )
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
