"""Non-skin photos against real lesion photos of both kinds: what the pipeline refuses, and at which stage.

    python bench/nonskin.py --ham ../shared/data/ham10000_sample --pad ../shared/data/pad_ufes_sample \
        --model-dir models --out docs/models/nonskin.json

Non-skin: the 14 images of bench/calibrate_quality.py plus the ones below (crops of the everyday photos,
patterns, a wood texture in skin-like colours). Real: the HAM10000 test split (dermoscopic, never used to
fit anything) and every PAD-UFES-20 photo (clinical). Each photo goes through the whole pipeline; the
table names the stage that refused it: the pixel gate, the modality check's distance from lesion photos
(`unlike_lesion_photos`), or the U-Net's mask.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from calibrate_quality import non_skin_images

from ml.data.ham10000 import read_split_csv
from ml.data.pad_ufes import read_pad
from ml.triage.pipeline import UNFAMILIAR_TO_CLASSIFIER_FLAG, UNLIKE_LESION_PHOTOS_FLAG, Pipeline


def extra_non_skin_images() -> dict[str, np.ndarray]:
    """More non-skin inputs, added after the modality check was fitted (never used to choose a threshold)."""
    rng = np.random.default_rng(1)
    images = {}
    base = non_skin_images()
    for name in ("photo_china", "photo_flower"):
        if name in base:
            img = base[name]
            h, w = img.shape[:2]
            images[f"{name}_centre_crop"] = img[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4].copy()
    checker = (np.indices((480, 640)).sum(0) // 40 % 2 * 200 + 30).astype(np.uint8)
    images["checkerboard"] = np.repeat(checker[..., None], 3, axis=2)
    stripes = np.zeros((480, 640, 3), np.uint8)
    for i, colour in enumerate([(200, 40, 40), (40, 200, 40), (40, 40, 200), (220, 220, 40)]):
        stripes[:, i * 160 : (i + 1) * 160] = colour
    images["colour_stripes"] = stripes
    grain = cv2.GaussianBlur(rng.normal(0, 1, (480, 640)).astype(np.float32), (0, 0), sigmaX=25, sigmaY=2)
    grain = (grain - grain.min()) / (grain.max() - grain.min())
    wood = np.stack([150 + 70 * grain, 100 + 50 * grain, 60 + 30 * grain], axis=-1)
    images["wood_texture_skin_coloured"] = np.clip(wood, 0, 255).astype(np.uint8)
    bricks = np.full((480, 640, 3), (170, 70, 50), np.uint8)
    for y in range(0, 480, 40):
        cv2.line(bricks, (0, y), (640, y), (200, 200, 200), 4)
        for x in range(0 if y // 40 % 2 else 40, 640, 80):
            cv2.line(bricks, (x, y), (x, y + 40), (200, 200, 200), 4)
    images["brick_wall"] = bricks
    return images


def jpeg(image: np.ndarray) -> bytes:
    """The image as a JPEG file's bytes, as a patient would send it."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


# The stages whose refusal tells the patient the photo does not look like skin.
NOT_SKIN_STAGES = ("modality: unlike lesion photos", "classifier: unfamiliar logits", "gate/mask: not_skin")


def stage(result) -> str:
    """Which check refused the photo ('kept' when none did)."""
    if result.tier != "RETAKE":
        return "kept"
    if UNLIKE_LESION_PHOTOS_FLAG in result.quality_flags:
        return "modality: unlike lesion photos"
    if UNFAMILIAR_TO_CLASSIFIER_FLAG in result.quality_flags:
        return "classifier: unfamiliar logits"
    return f"gate/mask: {result.retake_reason}"


def run(pipeline: Pipeline, photos: list[bytes]) -> list:
    """Pipeline results in batches of 8."""
    out = []
    for start in range(0, len(photos), 8):
        out += pipeline.run_batch(photos[start : start + 8])
    return out


def main() -> int:
    """Print and write the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ham", type=Path, default=Path("../shared/data/ham10000_sample"))
    parser.add_argument("--split-csv", type=Path, default=Path("runs/split.csv"))
    parser.add_argument("--pad", type=Path, default=Path("../shared/data/pad_ufes_sample"))
    parser.add_argument("--model-dir", type=Path, default=Path("models"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("runs/nonskin.json"))
    args = parser.parse_args()

    pipeline = Pipeline.from_model_dir(
        args.model_dir, allow_demo=False, device="cpu", threads=args.threads, decode_workers=1
    )
    fakes = {
        **{f"calibrate_quality/{k}": v for k, v in non_skin_images().items()},
        **{f"added/{k}": v for k, v in extra_non_skin_images().items()},
    }
    fake_results = dict(zip(fakes, run(pipeline, [jpeg(v) for v in fakes.values()]), strict=True))
    ham = read_split_csv(args.split_csv, args.ham)["test"]
    pad = read_pad(args.pad)
    real = {
        "dermoscopic (HAM10000 test split)": [s.image_path.read_bytes() for s in ham],
        "clinical (PAD-UFES-20, all)": [s.image_path.read_bytes() for s in pad],
    }
    real_stages = {kind: Counter(stage(r) for r in run(pipeline, photos)) for kind, photos in real.items()}

    print(f"models: {pipeline.versions}\n")
    print(f"{'non-skin image':48s} {'refused by':34s} modality  P(ordinary)")
    table = {}
    for name, result in fake_results.items():
        table[name] = {"stage": stage(result), "modality": result.modality, "p_clinical": result.p_clinical}
        p = f"{result.p_clinical:.2f}" if result.p_clinical is not None else "-"
        print(f"{name:48s} {stage(result):34s} {result.modality or '-':9s} {p}")
    refused = sum(1 for r in table.values() if r["stage"] != "kept")
    print(f"\nrefused {refused} of {len(table)} non-skin images")
    summary = {}
    for kind, counts in real_stages.items():
        n = sum(counts.values())
        non_skin = sum(counts.get(s, 0) for s in NOT_SKIN_STAGES)
        summary[kind] = {
            "photos": n,
            "stages": dict(counts),
            "refused_as_not_skin": non_skin / n,
            "refused_any_reason": 1 - counts.get("kept", 0) / n,
        }
        print(
            f"{kind}: {n} photos; refused as not skin {non_skin} ({non_skin / n:.2%}), for any reason "
            f"{n - counts.get('kept', 0)} ({1 - counts.get('kept', 0) / n:.2%}); {dict(counts)}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "models": pipeline.versions,
                "non_skin": table,
                "non_skin_refused": refused,
                "non_skin_images": len(table),
                "real": summary,
            },
            indent=1,
        )
        + "\n"
    )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
