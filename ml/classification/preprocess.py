"""Classifier input presets: fit a photo to the network input, normalise it, augment training batches."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

# Torchvision's ImageNet statistics; kept even when training from scratch so that a model trained
# here and an ImageNet fine-tune share one preprocessing (the card records them either way).
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


def parse_size(text: str | int | tuple[int, int] | list[int]) -> tuple[int, int]:
    """Read an input size given as 128, "128", "96x128" (height x width) or [h, w]."""
    if isinstance(text, int):
        height = width = text
    elif isinstance(text, tuple | list):
        if len(text) != 2:
            raise ValueError(f"input size {text!r} must be [height, width]")
        height, width = int(text[0]), int(text[1])
    else:
        parts = str(text).lower().split("x")
        try:
            values = [int(p) for p in parts]
        except ValueError as exc:
            raise ValueError(f"input size {text!r} is not like 128 or 96x128 (height x width)") from exc
        if len(values) == 1:
            height = width = values[0]
        elif len(values) == 2:
            height, width = values
        else:
            raise ValueError(f"input size {text!r} is not like 128 or 96x128 (height x width)")
    if height < 32 or width < 32:
        raise ValueError(f"input size {height}x{width} is too small for ResNet50; use at least 32x32")
    return height, width


def check_rgb_uint8(image: np.ndarray) -> None:
    """Raise ValueError unless image is an HxWx3 uint8 RGB array."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        shape = getattr(image, "shape", None)
        dtype = getattr(image, "dtype", type(image).__name__)
        raise ValueError(
            f"expected an HxWx3 uint8 RGB image, got shape {shape} dtype {dtype}; "
            "decode with ml.data.ham10000.read_image_rgb or convert with np.asarray(pil.convert('RGB'))"
        )


def fit_to_input(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Centre-crop an RGB uint8 image to the input's aspect ratio and resize it to (height, width).

    Cropping instead of squashing keeps lesion shape (a border feature) independent of whether a
    phone photo is portrait or landscape.
    """
    import cv2

    check_rgb_uint8(image)
    target_h, target_w = size
    h, w = image.shape[:2]
    ratio = target_w / target_h
    if w / h > ratio + 1e-6:
        new_w = max(1, round(h * ratio))
        x0 = (w - new_w) // 2
        image = image[:, x0 : x0 + new_w]
    elif w / h < ratio - 1e-6:
        new_h = max(1, round(w / ratio))
        y0 = (h - new_h) // 2
        image = image[y0 : y0 + new_h]
    shrinking = image.shape[0] > target_h
    interp = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return np.ascontiguousarray(cv2.resize(image, (target_w, target_h), interpolation=interp))


class Normalize:
    """Turn a uint8 NHWC batch (numpy or tensor) into a normalised float NCHW tensor."""

    def __init__(self, mean: tuple[float, ...] = IMAGENET_MEAN, std: tuple[float, ...] = IMAGENET_STD):
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)

    def __call__(self, batch: np.ndarray | torch.Tensor, device: str | torch.device = "cpu") -> torch.Tensor:
        """Normalise a uint8 NHWC batch (or an already float NCHW batch in [0, 1])."""
        x = torch.as_tensor(batch).to(device)
        if x.dtype == torch.uint8:
            x = x.permute(0, 3, 1, 2).float().div_(255.0)
        return (x - self.mean.to(x.device)) / self.std.to(x.device)


class TrainAugment:
    """Random augmentation of a uint8 NHWC batch, returning float NCHW in [0, 1] at the input size.

    "light": flips only (the reference study's setting). "strong": random resized crop, flips,
    90-degree turns and colour jitter; dermoscopy has no canonical orientation, so every turn and
    flip is a valid view of the same lesion.
    """

    def __init__(self, size: tuple[int, int], *, strength: str = "strong", seed: int = 0):
        if strength not in ("light", "strong"):
            raise ValueError(f"augmentation strength {strength!r} must be 'light' or 'strong'")
        self.size = size
        self.strength = strength
        self.generator = torch.Generator().manual_seed(seed)

    def _rand(self, *shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=self.generator)

    def _resized_crop(self, x: torch.Tensor) -> torch.Tensor:
        """Per-sample random crop (area 50-100 %, aspect 3/4-4/3) resized to the input size."""
        n, _, h, w = x.shape
        out = []
        for i in range(n):
            area = h * w * (0.5 + 0.5 * float(self._rand(1)))
            log_ratio = math.log(3 / 4) + (math.log(4 / 3) - math.log(3 / 4)) * float(self._rand(1))
            ratio = math.exp(log_ratio)
            cw = min(w, max(8, round(math.sqrt(area * ratio))))
            ch = min(h, max(8, round(math.sqrt(area / ratio))))
            y0 = int(self._rand(1) * (h - ch + 1))
            x0 = int(self._rand(1) * (w - cw + 1))
            crop = x[i : i + 1, :, y0 : y0 + ch, x0 : x0 + cw]
            out.append(F.interpolate(crop, size=self.size, mode="bilinear", align_corners=False, antialias=True))
        return torch.cat(out)

    def _flip_turn(self, x: torch.Tensor, turns: bool) -> torch.Tensor:
        """Flip each sample horizontally and vertically at random, and turn square ones by 90 degrees."""
        n = x.shape[0]
        hflip = self._rand(n) < 0.5
        vflip = self._rand(n) < 0.5
        x = torch.where(hflip.view(n, 1, 1, 1).to(x.device), x.flip(3), x)
        x = torch.where(vflip.view(n, 1, 1, 1).to(x.device), x.flip(2), x)
        if turns and x.shape[2] == x.shape[3]:
            turn = (self._rand(n) < 0.5).view(n, 1, 1, 1).to(x.device)
            x = torch.where(turn, x.transpose(2, 3), x)
        return x

    def _jitter(self, x: torch.Tensor) -> torch.Tensor:
        """Brightness, contrast and saturation jitter of +-20 %: cameras and dermatoscopes differ."""
        n = x.shape[0]
        dev = x.device
        brightness = (0.8 + 0.4 * self._rand(n)).view(n, 1, 1, 1).to(dev)
        contrast = (0.8 + 0.4 * self._rand(n)).view(n, 1, 1, 1).to(dev)
        saturation = (0.8 + 0.4 * self._rand(n)).view(n, 1, 1, 1).to(dev)
        x = x * brightness
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) * contrast + mean
        gray = 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]
        x = (x - gray) * saturation + gray
        return x.clamp_(0.0, 1.0)

    def __call__(self, batch: np.ndarray | torch.Tensor, device: str | torch.device = "cpu") -> torch.Tensor:
        """Augment one uint8 NHWC batch; output is float NCHW in [0, 1] at self.size."""
        x = torch.as_tensor(batch).to(device).permute(0, 3, 1, 2).float().div_(255.0)
        if self.strength == "strong":
            x = self._resized_crop(x)
        elif tuple(x.shape[2:]) != tuple(self.size):
            x = F.interpolate(x, size=self.size, mode="bilinear", align_corners=False, antialias=True)
        x = self._flip_turn(x, turns=self.strength == "strong")
        if self.strength == "strong":
            x = self._jitter(x)
        return x.contiguous()


def tta_views(x: torch.Tensor) -> list[torch.Tensor]:
    """The four flip views used for test-time augmentation of a float NCHW batch."""
    return [x, x.flip(3), x.flip(2), x.flip(2).flip(3)]
