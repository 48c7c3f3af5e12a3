"""`skintriage triage IMAGE... [--json]`: run the triage pipeline on image files, print each result.

Each photo gets its tier, label, calibrated probabilities, quality flags, lesion size, model
versions and per-stage timings; the outline overlay (JPEG) and the lesion mask (PNG), both at the
photo's own size, go to --out, named after the input file. With --json every file gives one JSON
object per line (JSON Lines), in input order, as described by `ml/triage/result.schema.json`.

Exit status: 0 when every file was triaged (a RETAKE is a result, not a failure), 1 when a file
could not be read, 2 when no trusted model could be loaded.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ml.errors import ModelUnavailableError
from skintriage.vocabulary import Modality, Tier

log = logging.getLogger(__name__)

SCHEMA_FILE = Path(__file__).with_name("result.schema.json")
DEFAULT_OUT = Path("triage-output")
MASK_SUFFIX = ".mask.png"
OVERLAY_SUFFIX = ".overlay.jpg"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `skintriage triage`."""
    parser.add_argument("images", type=Path, nargs="+", metavar="IMAGE", help="photo files (JPEG, PNG, HEIC, ...)")
    parser.add_argument("--json", action="store_true", help=f"one JSON object per file and line ({SCHEMA_FILE.name})")
    parser.add_argument("--model-dir", type=Path, default=None, help="folder with the model cards (default: MODEL_DIR)")
    parser.add_argument(
        "--allow-demo",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="run demo models trained on synthetic images (default: ALLOW_DEMO_MODELS)",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"folder for overlays and masks ({DEFAULT_OUT})")
    parser.add_argument("--batch-size", type=int, default=8, help="photos per model call")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when torch sees a GPU)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for the models and the decoders")
    parser.add_argument("-v", "--verbose", action="store_true", help="log model loading to stderr")


@dataclass(frozen=True)
class RunOptions:
    """What `load_pipeline` needs, resolved from the command line and the settings."""

    model_dir: Path
    allow_demo: bool
    device: str | None = None
    threads: int | None = None
    batch_size: int = 8


def resolve_options(args: argparse.Namespace, settings: Any = None) -> RunOptions:
    """Fill the options the command line left out from the settings (MODEL_DIR, ALLOW_DEMO_MODELS).

    `settings` is duck-typed (`model_dir`, `allow_demo_models`) so that ml/ never imports the domain
    package; `skintriage triage` passes the domain settings (skintriage.triage_command). Without
    settings --model-dir is required and demo models are refused unless --allow-demo.
    """
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads must be at least 1, got {args.threads}")
    if args.model_dir is not None:
        model_dir = Path(args.model_dir)
    elif settings is not None:
        model_dir = Path(settings.model_dir)
    else:
        raise ValueError("no model folder: pass --model-dir (or run it as `skintriage triage`, which reads MODEL_DIR)")
    default_demo = bool(getattr(settings, "allow_demo_models", False))
    return RunOptions(
        model_dir=model_dir,
        allow_demo=default_demo if args.allow_demo is None else bool(args.allow_demo),
        device=args.device,
        threads=args.threads,
        batch_size=args.batch_size,
    )


def load_pipeline(options: RunOptions, settings: Any = None) -> Any:
    """Verify and load the models; raise ModelUnavailableError when none can be trusted."""
    from ml.triage.pipeline import Pipeline
    from ml.triage.policy import PolicyConfig

    kwargs: dict[str, Any] = {}
    if settings is not None:
        kwargs = {"policy": PolicyConfig.from_settings(settings), "max_pixels": int(settings.max_image_pixels)}
    pipeline = Pipeline.from_model_dir(
        options.model_dir,
        allow_demo=options.allow_demo,
        device=options.device,
        threads=options.threads,
        decode_workers=options.threads,
        **kwargs,
    )
    set_model_batch_size(pipeline, options.batch_size)
    return pipeline


def set_model_batch_size(pipeline: Any, batch_size: int) -> None:
    """Make the U-Net and the classifier batch exactly as many photos as one run_batch call gets."""
    pipeline.segmenter.batch_size = batch_size
    pipeline.classifier.batch_size = batch_size


def read_files(paths: Sequence[Path]) -> list[bytes | str]:
    """Each file's bytes, or the message saying why it could not be read."""
    out: list[bytes | str] = []
    for path in paths:
        try:
            out.append(Path(path).read_bytes())
        except IsADirectoryError:
            out.append(f"{path} is a folder; pass image files (e.g. {path}/*.jpg)")
        except FileNotFoundError:
            out.append(f"{path} does not exist; check the path")
        except OSError as exc:
            out.append(f"cannot read {path}: {exc.strerror or exc}; check its permissions")
    return out


class OutputNames:
    """File names in --out derived from the input's name, made unique when two inputs share a stem."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.used: set[str] = set()

    def stem_for(self, path: Path) -> str:
        """`photo`, then `photo-2`, `photo-3`, ... for further inputs called photo.*."""
        base = Path(path).stem or "image"
        stem, n = base, 1
        while stem in self.used:
            n += 1
            stem = f"{base}-{n}"
        self.used.add(stem)
        return stem


def record_for(path: Path, details: Any, names: OutputNames) -> dict[str, Any]:
    """The JSON record of one triaged file; writes its mask PNG and overlay JPEG when the pipeline made them."""
    r = details.result
    stem = names.stem_for(path)
    written: dict[str, str | None] = {"mask_png": None, "overlay_jpeg": None}
    for key, data, suffix in (("mask_png", r.mask_png, MASK_SUFFIX), ("overlay_jpeg", r.overlay_jpeg, OVERLAY_SUFFIX)):
        if data is not None:
            target = names.folder / f"{stem}{suffix}"
            target.write_bytes(data)
            written[key] = str(target)
    return {
        "file": str(path),
        "status": "triaged",
        "tier": str(r.tier),
        "label": r.label,
        "probabilities": {k: float(v) for k, v in r.probabilities.items()},
        "mel_threshold": r.mel_threshold,
        "decision": details.decision,
        "retake_reason": None if r.retake_reason is None else str(r.retake_reason),
        "quality_flags": list(r.quality_flags),
        "quality_metrics": {k: float(v) for k, v in details.quality_metrics.items()},
        "ood": {k: float(v) for k, v in details.ood.items()},
        "lesion_area_px": r.lesion_area_px,
        "lesion_diameter_px": r.lesion_diameter_px,
        "image_width": r.image_width,
        "image_height": r.image_height,
        "model_versions": dict(r.model_versions),
        "timings_ms": dict(r.timings_ms),
        "demo_model": bool(r.demo_model),
        "measurements": r.measurements.to_dict() if r.measurements is not None else None,
        "modality": r.modality,
        "p_clinical": r.p_clinical,
        **written,
    }


def error_record(path: Path, message: str) -> dict[str, Any]:
    """The JSON record of a file that could not be read."""
    return {"file": str(path), "status": "error", "error": message}


def triage_files(pipeline: Any, paths: Sequence[Path], *, out_dir: Path, batch_size: int) -> Iterator[dict[str, Any]]:
    """Records in input order, batch by batch; overlays and masks are written to out_dir on the way."""
    names = OutputNames(out_dir)
    for start in range(0, len(paths), batch_size):
        chunk = list(paths[start : start + batch_size])
        contents = read_files(chunk)
        readable = [data for data in contents if isinstance(data, bytes)]
        details = iter(pipeline.run_batch_detailed(readable) if readable else [])
        for path, data in zip(chunk, contents, strict=True):
            if isinstance(data, str):
                yield error_record(path, data)
            else:
                yield record_for(path, next(details), names)


def format_summary(record: dict[str, Any]) -> str:
    """A few human-readable lines for one record."""
    name = record["file"]
    if record["status"] == "error":
        return f"{name}: error: {record['error']}"
    probs = record["probabilities"]
    lines = []
    if record["tier"] == Tier.RETAKE:
        reason = record["retake_reason"]
        # The pipeline's reason reads "retake: <reason> (<detail>)"; show only what adds to the reason.
        detail = record["decision"].removeprefix(f"retake: {reason}").strip()
        lines.append(f"{name}: RETAKE ({reason})" + (f" {detail}" if detail else ""))
    else:
        lines.append(f"{name}: {record['tier']} ({record['label']}) - {record['decision']}")
    if record.get("modality"):
        kind = {Modality.DERMOSCOPIC: "a dermoscopy image", Modality.CLINICAL: "an ordinary (clinical) photo"}.get(
            record["modality"], "unknown (no modality model installed)"
        )
        score = f", P(ordinary photo) {record['p_clinical']:.2f}" if record.get("p_clinical") is not None else ""
        lines.append(f"  kind of photo judged: {kind}{score}")
    if probs:
        shown = ", ".join(f"{k} {v:.3f}" for k, v in probs.items())
        lines.append(f"  probabilities: {shown}; melanoma threshold {record['mel_threshold']:.3f}")
    if record["lesion_area_px"] is not None:
        lines.append(
            f"  lesion: {record['lesion_area_px']:,} px, diameter {record['lesion_diameter_px']:.1f} px "
            f"in a {record['image_width']}x{record['image_height']} photo"
        )
    m = record.get("measurements")
    if m:
        lines.append(
            f"  measurements: asymmetry {m['asymmetry_major_axis']:.2f}/{m['asymmetry_minor_axis']:.2f}, "
            f"compactness {m['compactness']:.2f}, convexity {m['convexity_ratio']:.2f}, "
            f"colours {m['colour_count']} ({', '.join(m['colours'])}), "
            f"diameter {m['diameter_share']:.0%} of the longer side"
        )
    if record["quality_flags"]:
        lines.append(f"  quality flags: {', '.join(record['quality_flags'])}")
    if record["overlay_jpeg"]:
        lines.append(f"  overlay: {record['overlay_jpeg']}  mask: {record['mask_png']}")
    t = record["timings_ms"]
    stages = ", ".join(f"{k} {v:.0f}" for k, v in t.items() if k != "total" and v)
    lines.append(f"  {t['total']:.0f} ms ({stages})")
    return "\n".join(lines)


def main(args: argparse.Namespace, settings: Any = None) -> int:
    """Run the pipeline on the files of `args`; `settings` (duck-typed) fills the defaults and the policy."""
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        options = resolve_options(args, settings)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        pipeline = load_pipeline(options, settings)
    except ModelUnavailableError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        print(
            f"error: cannot create the output folder {args.out}: {exc.strerror or exc}; pick another --out",
            file=sys.stderr,
        )
        return 2
    if not args.json:
        demo = " - DEMO models trained on synthetic images, not for medical use" if pipeline.demo else ""
        versions = ", ".join(f"{k} {v}" for k, v in pipeline.versions.items())
        print(f"models: {versions}{demo}", flush=True)
    failed = 0
    for record in triage_files(pipeline, args.images, out_dir=args.out, batch_size=options.batch_size):
        failed += record["status"] == "error"
        text = json.dumps(record, ensure_ascii=False) if args.json else format_summary(record)
        print(text, flush=True)
    if failed:
        print(f"{failed} of {len(args.images)} file(s) could not be read", file=sys.stderr)
        return 1
    return 0
