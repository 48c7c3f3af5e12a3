"""Segmentation presets: resizing for the U-Net, DullRazor hair removal and training augmentation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np


def remove_hair(
    image_rgb: np.ndarray, *, kernel_size: int = 17, threshold: int = 10, inpaint_radius: int = 3
) -> np.ndarray:
    """DullRazor-style hair removal: black-hat finds thin dark lines, inpainting fills them.

    kernel_size is for a 600x450 dermoscopy image; it is scaled to the image's size so the
    same preset works on small inputs.
    """
    if image_rgb.ndim != 3 or image_rgb.shape[2] != 3 or image_rgb.dtype != np.uint8:
        raise ValueError(f"expected an HxWx3 uint8 RGB image, got shape {image_rgb.shape} {image_rgb.dtype}")
    scale = max(image_rgb.shape[:2]) / 600
    k = max(3, int(round(kernel_size * scale)) | 1)
    gray = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2GRAY)
    # A cross-shaped element keeps round lesion blobs out of the black-hat while hairs (thin lines) stay.
    kernel = cv2.getStructuringElement(cv2.MORPH_CROSS, (k, k))
    blackhat = cv2.morphologyEx(gray, cv2.MORPH_BLACKHAT, kernel)
    _, hair = cv2.threshold(blackhat, threshold, 255, cv2.THRESH_BINARY)
    if not hair.any():
        return image_rgb.copy()
    radius = max(1, int(round(inpaint_radius * scale)))
    return cv2.inpaint(image_rgb, hair, radius, cv2.INPAINT_TELEA)


@dataclass(frozen=True)
class SegmentationPreset:
    """Eval/inference preset: optional hair removal, then area-resize to the network's (height, width).

    The network rescales 0-255 to 0-1 itself, so the preset returns float32 in 0-255; that
    keeps the preprocessing identical on every Keras backend.
    """

    input_size: tuple[int, int]
    hair_removal: bool = False
    tta: bool = False

    def __call__(self, image_rgb: np.ndarray) -> np.ndarray:
        """Return the network input (H, W, 3) float32 for one RGB uint8 image of any size."""
        if image_rgb.ndim != 3 or image_rgb.shape[2] != 3 or image_rgb.dtype != np.uint8:
            raise ValueError(f"expected an HxWx3 uint8 RGB image, got shape {image_rgb.shape} {image_rgb.dtype}")
        if self.hair_removal:
            image_rgb = remove_hair(image_rgb)
        return self.resize(image_rgb).astype(np.float32)

    def resize(self, image_rgb: np.ndarray) -> np.ndarray:
        """Area-resize an image to the network size (no hair removal, dtype kept)."""
        h, w = self.input_size
        if image_rgb.shape[:2] == (h, w):
            return image_rgb
        return cv2.resize(image_rgb, (w, h), interpolation=cv2.INTER_AREA)

    def resize_mask(self, mask: np.ndarray) -> np.ndarray:
        """Resize a 0/1 mask to the network size (area average, then threshold at one half)."""
        h, w = self.input_size
        small = cv2.resize(mask.astype(np.float32), (w, h), interpolation=cv2.INTER_AREA)
        return (small >= 0.5).astype(np.uint8)

    def describe(self) -> dict[str, Any]:
        """What a model card records about this preset."""
        return {
            "color": "RGB",
            "resize": "cv2.INTER_AREA to input_size",
            "scale": "uint8 0-255 as float32; the model divides by 255 itself",
            "hair_removal": "dullrazor" if self.hair_removal else None,
            "upsample": "cv2.INTER_LINEAR of the probability map to the original size",
            "tta": "flips" if self.tta else None,
        }


@dataclass
class SegmentationAugment:
    """Training augmentation for an (image, mask) pair: flips, rotation, scale and colour jitter."""

    rotation_deg: float = 180.0
    scale_range: tuple[float, float] = (0.85, 1.2)
    brightness: float = 0.15
    contrast: float = 0.15
    saturation: float = 0.15
    hue_deg: float = 8.0
    seed: int | None = None

    def __post_init__(self) -> None:
        self._rng = np.random.default_rng(self.seed)

    def __call__(self, image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Augment one uint8 RGB image and its 0/1 mask the same way (shape is kept)."""
        rng = self._rng
        if rng.random() < 0.5:
            image, mask = image[:, ::-1], mask[:, ::-1]
        if rng.random() < 0.5:
            image, mask = image[::-1], mask[::-1]
        h, w = mask.shape
        angle = rng.uniform(-self.rotation_deg, self.rotation_deg)
        scale = rng.uniform(*self.scale_range)
        matrix = cv2.getRotationMatrix2D((w / 2, h / 2), angle, scale)
        # Reflection avoids black wedges the network could learn to treat as "not lesion".
        image = cv2.warpAffine(
            np.ascontiguousarray(image), matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101
        )
        mask = cv2.warpAffine(
            np.ascontiguousarray(mask), matrix, (w, h), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_REFLECT_101
        )
        return self._colour(image), mask

    def _colour(self, image: np.ndarray) -> np.ndarray:
        """Brightness, contrast, saturation and hue jitter on a uint8 RGB image."""
        rng = self._rng
        hsv = cv2.cvtColor(image, cv2.COLOR_RGB2HSV).astype(np.float32)
        hsv[..., 0] = (hsv[..., 0] + rng.uniform(-self.hue_deg, self.hue_deg) / 2) % 180
        hsv[..., 1] *= 1 + rng.uniform(-self.saturation, self.saturation)
        out = cv2.cvtColor(np.clip(hsv, 0, 255).astype(np.uint8), cv2.COLOR_HSV2RGB).astype(np.float32)
        mean = out.mean()
        out = (out - mean) * (1 + rng.uniform(-self.contrast, self.contrast)) + mean
        out *= 1 + rng.uniform(-self.brightness, self.brightness)
        return np.clip(out, 0, 255).astype(np.uint8)
