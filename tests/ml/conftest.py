"""Synthetic HAM10000-layout data for the ML tests: lesion-like blobs, masks, several images per lesion."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest

# (dx, number of lesions): every 3-class label has enough lesions for a stratified train/val/test split.
SYNTHETIC_LESIONS = (("mel", 6), ("nv", 8), ("bkl", 3), ("bcc", 2), ("akiec", 1), ("vasc", 1), ("df", 1))
SYNTHETIC_SIZE = (64, 80)  # height, width


def draw_lesion(rng: np.random.Generator, size: tuple[int, int], dark: float) -> tuple[np.ndarray, np.ndarray]:
    """One RGB image of a dark ellipse on skin-coloured noise, and its 0/255 mask."""
    h, w = size
    skin = np.array([205, 160, 140], dtype=np.float32) + rng.normal(0, 12, 3)
    image = np.ones((h, w, 3), np.float32) * skin + rng.normal(0, 6, (h, w, 3))
    mask = np.zeros((h, w), np.uint8)
    center = (int(w / 2 + rng.integers(-w // 8, w // 8 + 1)), int(h / 2 + rng.integers(-h // 8, h // 8 + 1)))
    axes = (int(rng.integers(w // 6, w // 3)), int(rng.integers(h // 6, h // 3)))
    cv2.ellipse(mask, center, axes, float(rng.uniform(0, 180)), 0, 360, 255, thickness=-1)
    lesion = skin * dark + rng.normal(0, 8, (h, w, 3))
    alpha = cv2.GaussianBlur(mask.astype(np.float32) / 255, (5, 5), 0)[..., None]
    image = image * (1 - alpha) + lesion * alpha
    # A few dark "hairs" so hair removal and robustness have something to do.
    for _ in range(int(rng.integers(0, 3))):
        p1 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        p2 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        cv2.line(image, p1, p2, (40.0, 30.0, 25.0), 1)
    return np.clip(image, 0, 255).astype(np.uint8), mask


def write_synthetic_ham(root: Path, *, seed: int = 0, size: tuple[int, int] = SYNTHETIC_SIZE) -> Path:
    """Write a small dataset in the official HAM10000 layout under root and return root."""
    rng = np.random.default_rng(seed)
    parts = [root / "HAM10000_images_part_1", root / "HAM10000_images_part_2"]
    masks = root / "HAM10000_segmentations_lesion_tschandl"
    for folder in (*parts, masks):
        folder.mkdir(parents=True, exist_ok=True)
    rows = []
    number = 24306
    lesion_number = 0
    for dx, lesions in SYNTHETIC_LESIONS:
        for _ in range(lesions):
            lesion_id = f"HAM_{lesion_number:07d}"
            lesion_number += 1
            for _ in range(1 + lesion_number % 3):
                image_id = f"ISIC_{number:07d}"
                image, mask = draw_lesion(rng, size, dark=0.35 if dx == "mel" else 0.55)
                folder = parts[number % 2]
                cv2.imwrite(str(folder / f"{image_id}.jpg"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
                cv2.imwrite(str(masks / f"{image_id}_segmentation.png"), mask)
                rows.append((lesion_id, image_id, dx, "histo", "50.0", "female", "back"))
                number += 1
    with open(root / "HAM10000_metadata.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(("lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization"))
        writer.writerows(rows)
    return root


def phone_like(rng: np.random.Generator, size: int = 160) -> np.ndarray:
    """Skin under a lamp: a lighting gradient across the frame, glare spots and a small dark spot."""
    yy, xx = np.mgrid[0:size, 0:size]
    light = 0.55 + 0.45 * (xx / size) * rng.uniform(0.6, 1.0)
    skin = np.array([200, 160, 130], np.float32) + rng.normal(0, 10, 3)
    img = skin * light[..., None] + rng.normal(0, 8, (size, size, 3))
    for _ in range(6):
        cv2.circle(img, (int(rng.integers(0, size)), int(rng.integers(0, size))), 2, (255, 255, 255), -1)
    cv2.circle(img, (size // 2, size // 2), size // 12, (90, 60, 50), -1)
    return np.clip(img, 0, 255).astype(np.uint8)


def write_synthetic_pad(pad: Path, *, photos: int = 60) -> Path:
    """A PAD-UFES-20-layout folder of phone-like photos (one patient per photo, labels in turn)."""
    rng = np.random.default_rng(1)
    (pad / "images").mkdir(parents=True)
    rows = []
    for i in range(photos):
        name = f"pad_PAT_{i}_{i}_1.jpg"
        cv2.imwrite(str(pad / "images" / name), cv2.cvtColor(phone_like(rng), cv2.COLOR_RGB2BGR))
        rows.append(
            {
                "file": name,
                "label3": ("NV", "MEL", "OTHER")[i % 3],
                "patient_id": f"PAT_{i}",
                "lesion_id": str(i),
                "age": "50",
                "region": "BACK",
                "itch": "False",
                "bleed": "",
            }
        )
    with open(pad / "metadata.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return pad


@pytest.fixture(scope="session")
def synthetic_ham(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Root of a ~45-image synthetic HAM10000 dataset (64x80 images, masks, 22 lesions); do not modify it."""
    return write_synthetic_ham(tmp_path_factory.mktemp("ham10000"))
