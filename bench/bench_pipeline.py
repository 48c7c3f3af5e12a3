"""End-to-end benchmark of the triage pipeline on real photos: per-stage latency, images/s per batch size, peak memory.

Usage: .venv/bin/python bench/bench_pipeline.py [--model-dir models] [--data DIR] [--n 50] [--batch-sizes 1 4 8 16]
           [--backends tensorflow torch] [--device cpu|cuda] [--threads N] [--json-out docs/bench/pipeline-cpu.json]
Runs Pipeline.run_batch_detailed (decode, quality gate, U-Net, classifier, overlay) on the photos' bytes
held in memory, so disk reads are not timed. The Keras backend of the U-Net is fixed per process, so
each backend runs in a child process of its own (`--backend NAME`, which also works by hand and then
prints only that backend); the parent merges their JSON and prints one table.
Photos default to the HAM10000 sample in ../shared/data/ham10000_sample when it exists, else the
photos bundled in devtools/demo_photos. Per-stage times are the pipeline's own timings_ms; in a batch
the segment and classify stages are the batch's time divided by its photos.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# Importing ml.triage.pipeline loads neither Keras nor torch: each child still picks its KERAS_BACKEND.
from ml.triage.pipeline import STAGES  # noqa: E402

SHARED_SAMPLE = ROOT.parent / "shared" / "data" / "ham10000_sample"
DEMO_PHOTOS = ROOT / "devtools" / "demo_photos"
PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".heic", ".heif"}
BACKENDS = ("tensorflow", "torch")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command line of the parent and of the per-backend child."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, default=ROOT / "models", help="folder with the two model cards")
    parser.add_argument(
        "--allow-demo",
        action="store_true",
        help="time demo models too (their numbers say nothing about the trained models)",
    )
    parser.add_argument(
        "--data",
        type=Path,
        default=None,
        help=f"folder of photos (default: {SHARED_SAMPLE} if present, else {DEMO_PHOTOS})",
    )
    parser.add_argument("--n", type=int, default=50, help="photos to run (the first N by name)")
    parser.add_argument(
        "--explain",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="Grad-CAM heatmap per photo, as the worker makes with GRADCAM=true (default: on)",
    )
    parser.add_argument(
        "--batch-sizes",
        type=int,
        nargs="+",
        default=[1, 4, 8, 16],
        help="photos per run_batch call; 1 is always measured",
    )
    parser.add_argument("--repeats", type=int, default=1, help="passes over the photos per batch size")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when torch sees a GPU)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for models and decoders (default: all)")
    parser.add_argument(
        "--backends",
        nargs="+",
        choices=BACKENDS,
        default=list(BACKENDS),
        help="Keras backends of the U-Net to compare, one child process each",
    )
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default=None,
        help="measure this backend in this process only (what the parent runs per backend)",
    )
    parser.add_argument(
        "--json-out", type=Path, default=None, help="JSON report (default: docs/bench/pipeline-<device>.json)"
    )
    args = parser.parse_args(argv)
    if args.n < 1 or args.repeats < 1 or min(args.batch_sizes) < 1:
        parser.error("--n, --repeats and every --batch-sizes value must be at least 1")
    args.batch_sizes = sorted({1, *args.batch_sizes})
    return args


# ---- helpers ------------------------------------------------------------------------------------


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def latency_summary(values_ms: list[float]) -> dict[str, float | int | None]:
    """p50 and p95 of a list of milliseconds, and how many there were."""
    import numpy as np

    if not values_ms:
        return {"p50_ms": None, "p95_ms": None, "n": 0}
    return {
        "p50_ms": float(np.percentile(values_ms, 50)),
        "p95_ms": float(np.percentile(values_ms, 95)),
        "n": len(values_ms),
    }


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def photo_folder(data: Path | None) -> Path:
    """The photos to run: --data, else the shared HAM10000 sample, else the bundled demo photos."""
    if data is not None:
        if not data.is_dir():
            raise SystemExit(f"error: --data {data} is not a folder of photos")
        return data
    return SHARED_SAMPLE if SHARED_SAMPLE.is_dir() else DEMO_PHOTOS


def find_photos(folder: Path, n: int) -> list[Path]:
    """The first n photos by name under folder (HAM10000 masks and triage outputs left out)."""
    found = sorted(
        p
        for p in folder.rglob("*")
        if p.suffix.lower() in PHOTO_SUFFIXES
        and p.is_file()
        and not p.stem.endswith(("_segmentation", ".mask", ".overlay"))
    )
    if not found:
        raise SystemExit(f"error: no photos ({', '.join(sorted(PHOTO_SUFFIXES))}) under {folder}")
    return found[:n]


def check_cards(model_dir: Path, *, allow_demo: bool) -> str | None:
    """Why model_dir cannot be benchmarked (no cards, or demo models without --allow-demo), or None."""
    from ml.modelcard import CLASSIFIER_CARD, SEGMENTATION_CARD, ModelCard, ModelCardError

    names = (SEGMENTATION_CARD, CLASSIFIER_CARD)
    missing = [name for name in names if not (model_dir / name).is_file()]
    if missing:
        return (
            f"{model_dir} has no {' or '.join(missing)}: no models to benchmark. Train them "
            "(`skintriage train-segmentation`, `skintriage train-classifier`) or pass --model-dir; "
            "demo models (`skintriage demo` writes them) need --allow-demo"
        )
    try:
        demo = [name for name in names if ModelCard.load(model_dir / name).demo]
    except ModelCardError as exc:
        return str(exc)
    if demo and not allow_demo:
        return (
            f"{', '.join(demo)} in {model_dir} describe demo models trained on synthetic images; "
            "pass --allow-demo to time them anyway (not as results), or point --model-dir at trained models"
        )
    return None


# ---- one backend, in this process -----------------------------------------------------------------


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Load the pipeline under args.backend and time every batch size; the per-backend JSON."""
    if "keras" in sys.modules and os.environ.get("KERAS_BACKEND") != args.backend:
        raise SystemExit(f"error: keras is already loaded with another backend; run with KERAS_BACKEND={args.backend}")
    os.environ["KERAS_BACKEND"] = args.backend
    from ml.errors import ModelUnavailableError
    from ml.triage.cli import RunOptions, load_pipeline, set_model_batch_size

    photos = find_photos(photo_folder(args.data), args.n)
    payloads = [p.read_bytes() for p in photos]
    rss_before = peak_rss_mib()
    started = time.perf_counter()
    options = RunOptions(model_dir=args.model_dir, allow_demo=args.allow_demo, device=args.device, threads=args.threads)
    try:
        pipeline = load_pipeline(options)
    except ModelUnavailableError as exc:
        raise SystemExit(f"error: {exc}") from exc
    pipeline.explain = args.explain
    load_s = time.perf_counter() - started
    import keras
    import torch

    device = pipeline.classifier.device.type
    cuda = device == "cuda"
    rows, tiers = [], {}
    for batch in args.batch_sizes:
        set_model_batch_size(pipeline, batch)
        pipeline.run_batch_detailed(payloads[:batch])  # warm-up: graphs are traced per batch shape
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        per_stage: dict[str, list[float]] = {stage: [] for stage in STAGES}
        wall = 0.0
        for repeat in range(args.repeats):
            for start in range(0, len(payloads), batch):
                t = time.perf_counter()
                details = pipeline.run_batch_detailed(payloads[start : start + batch])
                if cuda:
                    torch.cuda.synchronize()
                wall += time.perf_counter() - t
                for d in details:
                    for stage in STAGES:
                        value = d.result.timings_ms.get(stage, 0.0)
                        if value > 0:  # 0: the photo was rejected before this stage
                            per_stage[stage].append(value)
                    if batch == 1 and repeat == 0:
                        key = str(d.result.tier) + (f" ({d.result.retake_reason})" if d.result.retake_reason else "")
                        tiers[key] = tiers.get(key, 0) + 1
        rows.append(
            {
                "batch": batch,
                "images": len(payloads) * args.repeats,
                "seconds": wall,
                "images_per_s": len(payloads) * args.repeats / wall,
                "stages": {stage: latency_summary(values) for stage, values in per_stage.items()},
                "peak_gpu_mib": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
                "peak_rss_mib_so_far": peak_rss_mib(),
            }
        )
        print(
            f"[{args.backend}] batch {batch:>3}: {rows[-1]['images_per_s']:6.2f} images/s", file=sys.stderr, flush=True
        )
    memory: dict[str, Any] = {"peak_rss_mib": peak_rss_mib(), "rss_before_models_mib": rss_before}
    if cuda:
        memory["torch_cuda_max_allocated_mib"] = max(r["peak_gpu_mib"] for r in rows)
        if args.backend == "tensorflow":
            import tensorflow as tf

            # TensorFlow's allocator is separate from torch's and invisible to max_memory_allocated.
            if tf.config.list_physical_devices("GPU"):
                memory["tensorflow_gpu_peak_mib"] = tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20
    best = max(rows, key=lambda r: r["images_per_s"])
    return {
        "backend": args.backend,
        "keras_backend": keras.backend.backend(),
        "device": device,
        "gpu": torch.cuda.get_device_name() if cuda else None,
        "threads": args.threads,
        "torch": torch.__version__,
        "keras": keras.__version__,
        "models": dict(pipeline.versions),
        "demo_model": pipeline.demo,
        "photos": len(payloads),
        "outcomes_at_batch_1": dict(sorted(tiers.items())),
        "load_s": load_s,
        "memory": memory,
        "best": {"batch": best["batch"], "images_per_s": best["images_per_s"]},
        "rows": rows,
    }


# ---- the parent: one child per backend, merged ------------------------------------------------------


def child_command(args: argparse.Namespace, backend: str, out: Path) -> list[str]:
    """This script with the parent's options, for one backend, writing its JSON to out."""
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--backend",
        backend,
        "--json-out",
        str(out),
        "--model-dir",
        str(args.model_dir),
        "--n",
        str(args.n),
        "--repeats",
        str(args.repeats),
        "--batch-sizes",
        *map(str, args.batch_sizes),
        "--explain" if args.explain else "--no-explain",
    ]
    if args.data is not None:
        cmd += ["--data", str(args.data)]
    if args.device:
        cmd += ["--device", args.device]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    if args.allow_demo:
        cmd.append("--allow-demo")
    return cmd


def run_backends(args: argparse.Namespace) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Each backend in a fresh process; their reports and, for those that failed, the end of their stderr."""
    results, errors = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        for backend in args.backends:
            out = Path(tmp) / f"{backend}.json"
            env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(ROOT)}
            print(f"running {backend} ...", file=sys.stderr, flush=True)
            proc = subprocess.run(
                child_command(args, backend, out),
                cwd=ROOT,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            if proc.returncode != 0 or not out.is_file():
                errors[backend] = "\n".join(proc.stderr.strip().splitlines()[-15:])
                print(f"{backend} failed (exit {proc.returncode}):\n{errors[backend]}", file=sys.stderr)
                continue
            results.append(json.loads(out.read_text())["backends"][0])
    return results, errors


def format_report(report: dict[str, Any]) -> str:
    """The table of every backend and batch size, then the best batch and the memory of each backend."""
    rows = []
    for b in report["backends"]:
        for r in b["rows"]:
            cells = [b["backend"], str(r["batch"]), f"{r['images_per_s']:.2f}"]
            for stage in STAGES:
                s = r["stages"][stage]
                cells.append("—" if s["p50_ms"] is None else f"{s['p50_ms']:.1f} / {s['p95_ms']:.1f}")
            cells.append("—" if r["peak_gpu_mib"] is None else f"{r['peak_gpu_mib']:.0f}")
            rows.append(cells)
    header = ["backend", "batch", "images/s", *(f"{s} p50/p95 ms" for s in STAGES), "peak GPU MiB (torch)"]
    first = report["backends"][0]
    demo = " - DEMO models: these numbers say nothing about the trained models" if first["demo_model"] else ""
    lines = [
        f"pipeline benchmark on {first['device']}{' (' + first['gpu'] + ')' if first['gpu'] else ''}, "
        f"threads {report['threads'] or 'all'}, {first['photos']} photos from {report['data']}, "
        f"load average {report['machine']['load_average_1min']:.1f}",
        f"models: {', '.join(f'{k} {v}' for k, v in first['models'].items())}{demo}",
        f"outcomes at batch 1: {', '.join(f'{k} {v}' for k, v in first['outcomes_at_batch_1'].items())}",
        "",
        markdown_table(header, rows),
        "",
    ]
    for b in report["backends"]:
        mem = b["memory"]
        extra = "".join(f", {k} {v:.0f}" for k, v in mem.items() if k not in ("peak_rss_mib", "rss_before_models_mib"))
        lines.append(
            f"{b['backend']}: best {b['best']['images_per_s']:.2f} images/s at batch {b['best']['batch']}; "
            f"peak RSS {mem['peak_rss_mib']:.0f} MiB{extra}; models loaded in {b['load_s']:.1f} s"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Measure one backend (--backend) or every backend in child processes; print the table, write the JSON."""
    args = parse_args(argv)
    why = check_cards(args.model_dir, allow_demo=args.allow_demo)
    if why:
        print(f"error: {why}", file=sys.stderr)
        return 2
    if args.backend:
        backends, errors = [measure(args)], {}
    else:
        backends, errors = run_backends(args)
        if not backends:
            return 1
    report = {
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "model_dir": str(args.model_dir),
        "data": str(photo_folder(args.data)),
        "n": args.n,
        "batch_sizes": args.batch_sizes,
        "repeats": args.repeats,
        "threads": args.threads,
        "explain": args.explain,
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "load_average_1min": os.getloadavg()[0],
        },
        "note": "photo bytes in memory -> TriageResult; per-stage p50/p95 over photos that reached the stage; "
        "in a batch, segment and classify are the batch time divided by its photos",
        "backends": backends,
        "failed": errors,
    }
    # A single backend run by hand gets a name of its own, so it never overwrites the merged report.
    suffix = f"-{args.backend}" if args.backend else ""
    out = args.json_out or ROOT / "docs" / "bench" / f"pipeline-{backends[0]['device']}{suffix}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(format_report(report))
    print(f"\nwrote {out}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
