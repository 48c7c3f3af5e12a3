"""Calibrate the quality gate: its metrics on real HAM10000 photos vs. obvious non-skin images.

    python bench/calibrate_quality.py --data ../shared/data/ham10000_sample --n 600 --out runs/quality_calibration.json

Prints percentiles of each metric on the real photos, the metric values of each non-skin image, the
share of real photos each stage-1 threshold rejects, and (with --model-dir) the U-Net mask metrics.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ml.triage.quality import QualityConfig, check_image, check_mask, image_metrics

PERCENTILES = (0, 0.5, 1, 5, 25, 50, 75, 95, 99, 99.5, 100)


def text_screenshot(width: int = 720, height: int = 1280, *, dark: bool = False, seed: int = 0) -> np.ndarray:
    """A phone screenshot of a chat: lines of text on a plain background."""
    rng = np.random.default_rng(seed)
    bg, fg = ((24, 24, 28), (230, 230, 230)) if dark else ((255, 255, 255), (20, 20, 20))
    img = Image.new("RGB", (width, height), bg)
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=28)
    words = ["hello", "is", "this", "mole", "ok", "doctor", "appointment", "tomorrow", "photo", "skin"]
    for y in range(40, height - 40, 44):
        line = " ".join(rng.choice(words, size=int(rng.integers(2, 7))))
        draw.text((30, y), line, fill=fg, font=font)
    return np.asarray(img)


def gradient_landscape(width: int = 800, height: int = 600, *, seed: int = 0) -> np.ndarray:
    """Sky-blue to white above a green, noisy field: a landscape-like photo."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 1, height // 2)[:, None, None]
    sky = (1 - t) * np.array([70, 130, 220]) + t * np.array([210, 230, 250])
    sky = np.broadcast_to(sky, (height // 2, width, 3))
    field = np.array([60, 140, 50]) + rng.normal(0, 18, (height - height // 2, width, 3))
    img = np.concatenate([sky, field]).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def non_skin_images() -> dict[str, np.ndarray]:
    """Obvious non-lesion inputs: screenshots, solid colours, noise, landscapes and bundled library photos."""
    rng = np.random.default_rng(0)
    images = {
        "text_screenshot": text_screenshot(),
        "text_screenshot_dark": text_screenshot(dark=True),
        "noise_uniform": rng.integers(0, 256, (600, 800, 3), dtype=np.uint8),
        "landscape_gradient": gradient_landscape(),
    }
    for name, colour in {
        "solid_blue": (30, 60, 200),
        "solid_green": (40, 160, 60),
        "solid_grey": (128, 128, 128),
        "solid_white": (255, 255, 255),
        "solid_beige": (214, 170, 150),
    }.items():
        images[name] = np.full((480, 640, 3), colour, np.uint8)
    try:
        from sklearn.datasets import load_sample_images

        for name, image in zip(("china", "flower"), load_sample_images().images, strict=True):
            images[f"photo_{name}"] = np.asarray(image, np.uint8)
    except ImportError:
        pass
    try:
        import matplotlib

        sample = Path(matplotlib.get_data_path()) / "sample_data"
        for name in ("grace_hopper.jpg", "Minduka_Present_Blue_Pack.png", "logo2.png"):
            if (sample / name).is_file():
                arr = np.asarray(Image.open(sample / name).convert("RGB"))
                images[f"photo_{Path(name).stem}"] = arr
    except ImportError:
        pass
    return images


def ham_images(data: Path, n: int, seed: int) -> list[tuple[str, Path, Path | None]]:
    """n random (image_id, image path, mask path) triples from a HAM10000 folder."""
    with open(data / "HAM10000_metadata.csv") as fh:
        ids = [row["image_id"] for row in csv.DictReader(fh)]
    rng = np.random.default_rng(seed)
    chosen = rng.choice(ids, size=min(n, len(ids)), replace=False)
    out = []
    for image_id in chosen:
        for part in ("HAM10000_images_part_1", "HAM10000_images_part_2"):
            path = data / part / f"{image_id}.jpg"
            if path.is_file():
                mask = data / "HAM10000_segmentations_lesion_tschandl" / f"{image_id}_segmentation.png"
                out.append((str(image_id), path, mask if mask.is_file() else None))
                break
    return out


def main() -> int:
    """Measure and print the calibration tables; write them as JSON."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("../shared/data/ham10000_sample"))
    parser.add_argument("--n", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model-dir", type=Path, default=None, help="also measure U-Net mask metrics")
    parser.add_argument("--out", type=Path, default=Path("runs/quality_calibration.json"))
    args = parser.parse_args()
    config = QualityConfig()

    samples = ham_images(args.data, args.n, args.seed)
    rgbs = {image_id: cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB) for image_id, path, _ in samples}
    real = {image_id: image_metrics(rgb) for image_id, rgb in rgbs.items()}
    gt_fraction = [float((cv2.imread(str(m), cv2.IMREAD_GRAYSCALE) > 127).mean()) for _, _, m in samples if m]
    keys = (
        "sharpness",
        "bright_p95",
        "dark_p5",
        "clipped_fraction",
        "informative_fraction",
        "skin_fraction",
        "neutral_fraction",
        "flat_fraction",
    )
    table = {
        k: dict(
            zip(
                map(str, PERCENTILES),
                np.percentile([r[k] for r in real.values()], PERCENTILES).round(4).tolist(),
                strict=True,
            )
        )
        for k in keys
    }
    table["gt_lesion_fraction"] = dict(
        zip(map(str, PERCENTILES), np.percentile(gt_fraction, PERCENTILES).round(4).tolist(), strict=True)
    )
    print(f"real HAM10000 photos: n={len(real)}")
    print(f"{'metric':22s} " + " ".join(f"p{p:<6g}" for p in PERCENTILES))
    for k, row in table.items():
        print(f"{k:22s} " + " ".join(f"{v:<7.4g}" for v in row.values()))

    reasons: dict[str, int] = {}
    flagged: dict[str, int] = {}
    for rgb in rgbs.values():
        report = check_image(rgb, config)
        reasons[str(report.reason)] = reasons.get(str(report.reason), 0) + 1
        for flag in report.flags:
            flagged[flag] = flagged.get(flag, 0) + 1
    print(f"stage-1 outcome on real photos: {reasons}; flags: {flagged}")

    fakes = {}
    print(f"\n{'non-skin image':32s} {'reason':12s} " + " ".join(f"{k[:10]:>10s}" for k in keys))
    for name, image in non_skin_images().items():
        m = image_metrics(image)
        report = check_image(image, config)
        fakes[name] = {"reason": str(report.reason), **{k: m[k] for k in keys}}
        print(f"{name:32s} {report.reason!s:12s} " + " ".join(f"{m[k]:10.4g}" for k in keys))

    result: dict = {
        "n_real": len(real),
        "real_percentiles": table,
        "stage1_real": reasons,
        "stage1_real_flags": flagged,
        "non_skin": fakes,
        "config": config.as_dict(),
    }
    if args.model_dir:
        from ml.segmentation.unet import Segmenter

        seg = Segmenter.from_card(args.model_dir / "segmentation.json")
        mask_metrics = []
        mask_reasons: dict[str, int] = {}
        ids = list(rgbs)
        for start in range(0, len(ids), 16):
            chunk = [rgbs[i] for i in ids[start : start + 16]]
            for prob in seg.predict_proba(chunk):
                report, _ = check_mask(prob, threshold=seg.threshold, config=config)
                mask_metrics.append(report.metrics)
                mask_reasons[str(report.reason)] = mask_reasons.get(str(report.reason), 0) + 1
        mkeys = ("lesion_fraction", "mask_fraction_all_components", "mask_confidence", "max_probability")
        mtable = {
            k: dict(
                zip(
                    map(str, PERCENTILES),
                    np.percentile([r[k] for r in mask_metrics], PERCENTILES).round(4).tolist(),
                    strict=True,
                )
            )
            for k in mkeys
        }
        print(f"\nU-Net {seg.version} mask metrics on the real photos")
        for k, row in mtable.items():
            print(f"{k:30s} " + " ".join(f"{v:<7.4g}" for v in row.values()))
        print(f"stage-2 outcome on real photos: {mask_reasons}")
        print(f"\n{'non-skin image':32s} {'stage-2':12s} lesion_fraction mask_confidence")
        fake_masks = {}
        for name, image in non_skin_images().items():
            report, _ = check_mask(seg.predict_proba([image])[0], threshold=seg.threshold, config=config)
            fake_masks[name] = {"reason": str(report.reason), **report.metrics}
            print(
                f"{name:32s} {report.reason!s:12s} {report.metrics['lesion_fraction']:15.4f} "
                f"{report.metrics['mask_confidence']:15.4f}"
            )
        result.update(
            {"unet": seg.version, "mask_percentiles": mtable, "stage2_real": mask_reasons, "non_skin_masks": fake_masks}
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
