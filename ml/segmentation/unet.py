"""The Keras 3 U-Net (the study's architecture as the reference profile) and its inference wrapper."""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cv2
import keras
import numpy as np

from ml.modelcard import SEGMENTATION_CARD, ModelCard, name_by_hash
from ml.segmentation.preprocess import SegmentationPreset

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class UNetConfig:
    """Shape of the U-Net: input (height, width), width of the first level, number of poolings."""

    input_size: tuple[int, int] = (448, 592)
    base_filters: int = 16
    depth: int = 4
    dropout: float = 0.3
    batch_norm: bool = False

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form for the model card."""
        return {**asdict(self), "input_size": list(self.input_size), "name": "unet"}


# The reference study: 448x592x3 input, dropout 0.3, Conv2D/Dropout/MaxPooling2D down,
# Conv2DTranspose/Concatenate/Conv2D/Dropout up.
REFERENCE_PROFILE = UNetConfig()


def nearest_valid_size(input_size: tuple[int, int], depth: int) -> tuple[int, int]:
    """Closest (height, width) whose sides are multiples of 2**depth (at least one multiple)."""
    step = 2**depth
    return tuple(max(step, int(round(side / step)) * step) for side in input_size)  # type: ignore[return-value]


def check_input_size(input_size: tuple[int, int], depth: int) -> None:
    """Raise ValueError unless both sides divide by 2**depth, naming the nearest size that does."""
    if len(input_size) != 2 or any(int(s) <= 0 for s in input_size):
        raise ValueError(f"input size must be (height, width) with positive sides, got {input_size}")
    step = 2**depth
    if any(int(s) % step for s in input_size):
        h, w = nearest_valid_size(input_size, depth)
        raise ValueError(
            f"input size {tuple(input_size)} is not divisible by 2**depth={step} (depth {depth}); "
            f"use ({h}, {w}) instead"
        )


def _conv_block(x, filters: int, config: UNetConfig, name: str):
    """Conv2D, Dropout, Conv2D (with optional batch norm) as in the study's blocks."""
    for i in range(2):
        x = keras.layers.Conv2D(
            filters,
            3,
            padding="same",
            kernel_initializer="he_normal",
            use_bias=not config.batch_norm,
            name=f"{name}_conv{i + 1}",
        )(x)
        if config.batch_norm:
            x = keras.layers.BatchNormalization(name=f"{name}_bn{i + 1}")(x)
        x = keras.layers.Activation("relu", name=f"{name}_relu{i + 1}")(x)
        if i == 0 and config.dropout > 0:
            x = keras.layers.Dropout(config.dropout, name=f"{name}_drop")(x)
    return x


def build_unet(config: UNetConfig = REFERENCE_PROFILE) -> keras.Model:
    """Build the U-Net: RGB float 0-255 in, lesion probability (H, W, 1) float32 out."""
    check_input_size(config.input_size, config.depth)
    if config.base_filters < 1 or config.depth < 1:
        raise ValueError(f"base_filters and depth must be positive, got {config.base_filters}, {config.depth}")
    h, w = config.input_size
    inputs = keras.Input((h, w, 3), name="image")
    # Scaling inside the graph keeps the preprocessing the same on every backend and runtime.
    x = keras.layers.Rescaling(1.0 / 255, name="scale")(inputs)
    skips = []
    for level in range(config.depth):
        x = _conv_block(x, config.base_filters * 2**level, config, f"down{level}")
        skips.append(x)
        x = keras.layers.MaxPooling2D(2, name=f"pool{level}")(x)
    x = _conv_block(x, config.base_filters * 2**config.depth, config, "bottom")
    for level in reversed(range(config.depth)):
        filters = config.base_filters * 2**level
        x = keras.layers.Conv2DTranspose(filters, 2, strides=2, padding="same", name=f"up{level}_tconv")(x)
        x = keras.layers.Concatenate(name=f"up{level}_concat")([x, skips[level]])
        x = _conv_block(x, filters, config, f"up{level}")
    # float32 output so mixed precision never rounds probabilities near the threshold.
    outputs = keras.layers.Conv2D(1, 1, activation="sigmoid", dtype="float32", name="mask")(x)
    return keras.Model(inputs, outputs, name="unet")


def save_segmentation_model(
    model: keras.Model,
    out_dir: Path,
    *,
    config: UNetConfig,
    preset: SegmentationPreset,
    threshold: float,
    training: dict[str, Any],
    metrics: dict[str, Any],
    demo: bool = False,
) -> tuple[ModelCard, Path]:
    """Save weights as unet-<sha12>.keras plus the segmentation.json card in out_dir; return both."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(suffix=".keras", dir=out_dir)
    os.close(fd)
    tmp = Path(tmp_name)
    model.save(tmp)
    weights, digest = name_by_hash(tmp, out_dir, "unet")
    card = ModelCard(
        kind="segmentation",
        name="unet",
        weights_file=weights.name,
        weights_sha256=digest,
        input_size=list(config.input_size),
        architecture=config.as_dict(),
        preprocessing=preset.describe(),
        threshold=float(threshold),
        training=training,
        metrics=metrics,
        demo=demo,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    card_path = out_dir / SEGMENTATION_CARD
    card.save(card_path)
    log.info("saved %s and %s", weights, card_path)
    return card, card_path


def config_from_card(card: ModelCard) -> UNetConfig:
    """The UNetConfig a segmentation card records (its `architecture`)."""
    arch = card.architecture
    try:
        return UNetConfig(
            input_size=tuple(arch["input_size"]),
            base_filters=int(arch["base_filters"]),
            depth=int(arch["depth"]),
            dropout=float(arch["dropout"]),
            batch_norm=bool(arch["batch_norm"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"segmentation card {card.name} does not describe its U-Net ({exc}); retrain it") from exc


def save_compact_weights(model: keras.Model, path: Path) -> None:
    """The model's weights alone (no optimizer, no graph) as float16 safetensors, in get_weights() order."""
    from safetensors.numpy import save_file

    arrays = {f"w{i:03d}": np.asarray(w, dtype=np.float16) for i, w in enumerate(model.get_weights())}
    save_file(arrays, str(path), metadata={"format": "keras get_weights() order, float16"})


def set_compact_weights(model: keras.Model, path: Path) -> None:
    """Load weights written by save_compact_weights into a model of the carded shape (as float32)."""
    from safetensors.numpy import load_file

    arrays = load_file(str(path))
    own = model.get_weights()
    if len(arrays) != len(own):
        raise ValueError(f"{path} holds {len(arrays)} weight arrays, the carded U-Net has {len(own)}; retrain it")
    loaded = [arrays[f"w{i:03d}"].astype(own[i].dtype) for i in range(len(own))]
    for i, (a, b) in enumerate(zip(loaded, own, strict=True)):
        if a.shape != b.shape:
            raise ValueError(f"{path}: weight {i} has shape {a.shape}, the carded U-Net expects {b.shape}")
    model.set_weights(loaded)


def predict_small(model: keras.Model, batch: np.ndarray, *, tta: bool = False) -> np.ndarray:
    """Probabilities (N, H, W) at the network size; tta averages the four horizontal/vertical flips."""
    batch = np.asarray(batch, dtype=np.float32)
    if not tta:
        return np.asarray(model.predict_on_batch(batch), dtype=np.float32)[..., 0]
    flips = [(), (2,), (1,), (1, 2)]
    stacked = np.concatenate([np.flip(batch, axis=f) if f else batch for f in flips])
    probs = np.asarray(model.predict_on_batch(stacked), dtype=np.float32)[..., 0]
    parts = np.split(probs, len(flips))
    # A flip is its own inverse; the probability axes are (N, H, W), the batch axes (N, H, W, C).
    return np.mean([np.flip(p, axis=f) if f else p for p, f in zip(parts, flips, strict=True)], axis=0)


class Segmenter:
    """Runs a carded U-Net on RGB photos of any size and returns probability maps at that size."""

    def __init__(self, model: keras.Model, card: ModelCard, *, batch_size: int = 8) -> None:
        if card.kind != "segmentation":
            raise ValueError(f"model card is of kind {card.kind!r}; Segmenter needs a segmentation card")
        self.model = model
        self.card = card
        self.batch_size = batch_size
        self.threshold = 0.5 if card.threshold is None else float(card.threshold)
        self.preset = SegmentationPreset(
            input_size=(int(card.input_size[0]), int(card.input_size[1])),
            hair_removal=bool(card.preprocessing.get("hair_removal")),
        )
        # Flip test-time augmentation: four passes averaged, chosen on validation at training time.
        self.tta = card.preprocessing.get("tta") == "flips"

    @property
    def version(self) -> str:
        """Content-derived version string recorded with every case."""
        return self.card.version

    @classmethod
    def from_card(cls, card_path: Path, *, batch_size: int = 8) -> Segmenter:
        """Verify the card's SHA-256 and load its weights: compact .safetensors into the carded shape, or .keras."""
        card_path = Path(card_path)
        card = ModelCard.load(card_path)
        weights = card.verify(card_path)
        if weights.suffix == ".safetensors":
            model = build_unet(config_from_card(card))
            set_compact_weights(model, weights)
        else:
            model = keras.saving.load_model(weights, compile=False)
        return cls(model, card, batch_size=batch_size)

    def predict_proba(self, images_rgb_uint8: list[np.ndarray]) -> list[np.ndarray]:
        """Lesion probability (H, W) float32 in [0, 1] for each image, at the image's original size."""
        if isinstance(images_rgb_uint8, np.ndarray):
            raise ValueError("pass a list of HxWx3 uint8 RGB arrays, not one array")
        for i, image in enumerate(images_rgb_uint8):
            if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
                shape = getattr(image, "shape", None)
                dtype = getattr(image, "dtype", type(image).__name__)
                raise ValueError(f"image {i}: expected an HxWx3 uint8 RGB array, got shape {shape} {dtype}")
        out: list[np.ndarray] = []
        for start in range(0, len(images_rgb_uint8), self.batch_size):
            chunk = images_rgb_uint8[start : start + self.batch_size]
            batch = np.stack([self.preset(image) for image in chunk])
            probs = predict_small(self.model, batch, tta=self.tta)
            for image, prob in zip(chunk, probs, strict=True):
                h, w = image.shape[:2]
                full = cv2.resize(prob, (w, h), interpolation=cv2.INTER_LINEAR)
                out.append(np.clip(full, 0.0, 1.0).astype(np.float32))
        return out

    def predict_masks(self, images_rgb_uint8: list[np.ndarray]) -> list[np.ndarray]:
        """Boolean lesion masks at the card's threshold, at each image's original size."""
        return [p >= self.threshold for p in self.predict_proba(images_rgb_uint8)]
