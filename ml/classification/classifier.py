"""The lesion classifier (ResNet50 by default): build it, load ImageNet weights, export weights, carded inference."""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ml.classification.calibration import MatrixScaling, softmax
from ml.classification.crop import DEFAULT_MARGIN, crop_to_lesion
from ml.classification.preprocess import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Normalize,
    check_rgb_uint8,
    fit_to_input,
    tta_views,
)
from ml.errors import ModelUnavailableError, WeightsUnavailableError
from ml.modelcard import ModelCard, ModelCardError, name_by_hash
from skintriage.vocabulary import LABELS, MEL_INDEX

log = logging.getLogger(__name__)

ARCHITECTURE = "resnet50"  # the design's network; always trainable and reported beside any other
# Torchvision networks the classifier can be built on, with the prefix of their classification head.
ARCHITECTURES: dict[str, str] = {"resnet50": "fc.", "resnet18": "fc.", "efficientnet_b0": "classifier."}
INPUT_VARIANTS = ("whole", "crop")


def check_architecture(arch: str) -> str:
    """Return arch when the classifier can be built on it, else raise ValueError naming the choices."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown classifier architecture {arch!r}; choose one of {sorted(ARCHITECTURES)}")
    return arch


def build_model(
    arch: str = ARCHITECTURE, num_classes: int = len(LABELS), *, zero_init_residual: bool = False
) -> nn.Module:
    """A torchvision network with a freshly initialised num_classes head and no pretrained weights."""
    from torchvision import models

    check_architecture(arch)
    if arch.startswith("resnet"):
        return models.get_model(arch, weights=None, num_classes=num_classes, zero_init_residual=zero_init_residual)
    return models.get_model(arch, weights=None, num_classes=num_classes)


def build_resnet50(num_classes: int = len(LABELS), *, zero_init_residual: bool = False) -> nn.Module:
    """Torchvision ResNet50 with a freshly initialised num_classes head and no pretrained weights."""
    return build_model("resnet50", num_classes, zero_init_residual=zero_init_residual)


def _imagenet_url(arch: str) -> str:
    from torchvision.models import get_model_weights

    return get_model_weights(arch).DEFAULT.url


def imagenet_weights_file(arch: str = ARCHITECTURE) -> Path:
    """Where torchvision's default ImageNet weights of arch (IMAGENET1K_V2 for ResNet50) live in the hub cache."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(_imagenet_url(arch))


def _imagenet_state(*, allow_download: bool, arch: str = ARCHITECTURE) -> dict[str, torch.Tensor]:
    """ImageNet state dict from the hub cache, downloading it first when allowed."""
    url = _imagenet_url(arch)
    path = imagenet_weights_file(arch)
    how_to = (
        f"download {url} on a machine with internet and place it at {path} "
        f"(or set TORCH_HOME), or pass --weights /path/to/{arch}.pth, or train from scratch with --weights none"
    )
    if not path.is_file():
        if not allow_download:
            raise WeightsUnavailableError(f"ImageNet weights not found at {path}; {how_to}")
        try:
            return torch.hub.load_state_dict_from_url(url, progress=True, map_location="cpu", weights_only=True)
        except Exception as exc:  # network errors come in many types (URLError, socket, SSL, HTTP)
            raise WeightsUnavailableError(f"could not download ImageNet weights ({exc}); {how_to}") from exc
    return torch.load(path, map_location="cpu", weights_only=True)


def load_state_file(path: Path) -> dict[str, torch.Tensor]:
    """A float32 state dict from .safetensors (shipped, fp16) or .pt/.pth (torch.load, weights only)."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return {k: (v.float() if v.is_floating_point() else v) for k, v in load_file(path).items()}
    return torch.load(path, map_location="cpu", weights_only=True)


def _state_from_file(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from a local .safetensors/.pth/.pt file (plain state dict or a training checkpoint)."""
    if not path.is_file():
        raise WeightsUnavailableError(
            f"weights file {path} does not exist; pass an existing .safetensors/.pth/.pt file, 'imagenet' or 'none'"
        )
    try:
        state = load_state_file(path)
    except Exception as exc:  # pickle/zip/safetensors header errors differ between versions
        raise WeightsUnavailableError(f"cannot read weights {path} as a torch state dict: {exc}") from exc
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    if not isinstance(state, dict):
        raise WeightsUnavailableError(f"{path} holds a {type(state).__name__}, not a state dict")
    return state


def init_model(weights: str = "none", *, allow_download: bool = True, arch: str = ARCHITECTURE) -> nn.Module:
    """A 3-class network initialised from 'imagenet', 'none' (random) or a weights file path.

    A file may be a shipped model's weights (training then continues from them) or any state dict of the
    same architecture; an ImageNet (or any other class count) head is dropped: its classes are not ours.
    """
    # From scratch, zero-initialising each block's last BatchNorm makes the blocks start as
    # identities, which trains faster and steadier (Goyal et al. 2017).
    model = build_model(arch, zero_init_residual=weights == "none")
    if weights == "none":
        return model
    state = (
        _imagenet_state(allow_download=allow_download, arch=arch)
        if weights == "imagenet"
        else _state_from_file(Path(weights))
    )
    prefix = ARCHITECTURES[arch]
    own = model.state_dict()
    head = {k for k in state if k.startswith(prefix) and (k not in own or state[k].shape != own[k].shape)}
    if head:
        log.info("dropping %d head tensor(s) of another class count: %s", len(head), sorted(head))
    state = {k: v for k, v in state.items() if k not in head}
    missing, unexpected = model.load_state_dict(state, strict=False)
    body_missing = [k for k in missing if not k.startswith(prefix)]
    if body_missing or unexpected:
        raise WeightsUnavailableError(
            f"weights {weights} do not fit a torchvision {arch}: missing {body_missing[:5]}, "
            f"unexpected {list(unexpected)[:5]}; pass ImageNet {arch} weights or a file this project wrote"
        )
    return model


def export_weights(
    state_dict: dict[str, torch.Tensor], out_dir: Path, *, arch: str = ARCHITECTURE, fp16: bool = False
) -> tuple[Path, str]:
    """Save a plain CPU state dict as <arch>-<sha12>.pt, or fp16 .safetensors (shipped); return (path, sha256)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    suffix = ".safetensors" if fp16 else ".pt"
    fd, tmp_name = tempfile.mkstemp(prefix=f".{arch}-", suffix=suffix, dir=out_dir)
    os.close(fd)
    tmp = Path(tmp_name)
    if fp16:
        from safetensors.torch import save_file

        save_file({k: (v.half() if v.is_floating_point() else v) for k, v in state.items()}, tmp)
    else:
        torch.save(state, tmp)
    return name_by_hash(tmp, out_dir, arch)


def autocast_context(device: torch.device, cpu_bf16: bool = False) -> Any:
    """Mixed precision for a forward pass: fp16 on CUDA, bf16 on CPU only when asked, else nothing."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    if cpu_bf16:
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


@torch.no_grad()
def batch_logits(
    model: nn.Module,
    images: np.ndarray,
    *,
    normalize: Normalize,
    device: torch.device,
    batch_size: int = 64,
    tta: bool = False,
    cpu_bf16: bool = False,
) -> np.ndarray:
    """Logits (N, classes) for a uint8 NHWC array already at the input size; TTA averages flip views."""
    was_training = model.training
    model.eval()
    out = []
    try:
        for start in range(0, len(images), batch_size):
            x = normalize(images[start : start + batch_size], device)
            if device.type == "cuda":
                x = x.contiguous(memory_format=torch.channels_last)
            views = tta_views(x) if tta else [x]
            with autocast_context(device, cpu_bf16):
                logits = torch.stack([model(v).float() for v in views]).mean(0)
            out.append(logits.cpu().numpy())
    finally:
        model.train(was_training)
    if not out:
        return np.zeros((0, len(LABELS)), dtype=np.float32)
    return np.concatenate(out).astype(np.float32)


class Classifier:
    """A verified, calibrated classifier (ResNet50 by default) from a model card; returns probabilities in LABELS order.

    Callers crop the photo first when `input_variant == "crop"` (see `prepare`), then call
    `predict_proba`, which fits, normalises and batches by itself, in eval mode without gradients.
    """

    def __init__(self, model: nn.Module, card: ModelCard, *, device: str | None = None, batch_size: int = 16):
        if card.kind != "classifier":
            raise ModelUnavailableError(f"model card is of kind {card.kind!r}; Classifier needs a classifier card")
        if tuple(card.labels) != LABELS:
            raise ModelUnavailableError(
                f"classifier card has label order {card.labels}, expected {list(LABELS)}; retrain the model"
            )
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = model.to(self.device).eval()
        if self.device.type == "cuda":
            self.model = self.model.to(memory_format=torch.channels_last)
        self.card = card
        self.batch_size = batch_size
        self.input_size = (int(card.input_size[0]), int(card.input_size[1]))
        pre = card.preprocessing
        self.normalize = Normalize(tuple(pre.get("mean", IMAGENET_MEAN)), tuple(pre.get("std", IMAGENET_STD)))
        self.input_variant = str(pre.get("input_variant", "whole"))
        self.crop_margin = float(pre.get("crop_margin") or DEFAULT_MARGIN)
        self.temperature = float(card.temperature or 1.0)
        try:
            self.calibration = MatrixScaling.from_card(card.calibration) if card.calibration else None
        except ValueError as exc:
            raise ModelUnavailableError(f"classifier card {card.name}: {exc}") from exc
        self.mel_threshold = float(card.operating_point.get("mel_threshold", 0.5))

    @property
    def version(self) -> str:
        """Content-derived version string recorded with every case."""
        return self.card.version

    @classmethod
    def from_card(cls, card_path: Path, device: str | None = None) -> Classifier:
        """Load a classifier card, verify weights hash and label order, and load weights with weights_only."""
        card_path = Path(card_path)
        try:
            card = ModelCard.load(card_path)
            if card.kind != "classifier":
                raise ModelCardError(f"{card_path} is a {card.kind!r} card, not a classifier card")
            weights = card.verify(card_path)
        except ModelCardError as exc:
            raise ModelUnavailableError(str(exc)) from exc
        target = device or ("cuda" if torch.cuda.is_available() else "cpu")
        try:
            model = build_model(str(card.architecture.get("name", ARCHITECTURE)))
            model.load_state_dict(load_state_file(weights))
        except (RuntimeError, ValueError, OSError) as exc:
            raise ModelUnavailableError(f"cannot load classifier weights {weights}: {exc}") from exc
        return cls(model, card, device=target)

    def prepare(self, image_rgb_uint8: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        """The view of a photo this model was trained on: the lesion crop for 'crop' models when a mask is given."""
        check_rgb_uint8(image_rgb_uint8)
        if self.input_variant == "crop" and mask is not None:
            return crop_to_lesion(image_rgb_uint8, np.asarray(mask) > 0, margin=self.crop_margin)
        return image_rgb_uint8

    def _fitted(self, images: list[np.ndarray]) -> np.ndarray:
        if isinstance(images, np.ndarray):
            raise ValueError("pass a list of HxWx3 uint8 RGB arrays, not one stacked array")
        if not images:
            raise ValueError("no images given; pass at least one HxWx3 uint8 RGB array")
        return np.stack([fit_to_input(image, self.input_size) for image in images])

    def logits(self, images: list[np.ndarray], *, tta: bool = False) -> np.ndarray:
        """Raw (uncalibrated) logits (N, 3) in LABELS order."""
        return batch_logits(
            self.model,
            self._fitted(images),
            normalize=self.normalize,
            device=self.device,
            batch_size=self.batch_size,
            tta=tta,
        )

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        """Calibrated probabilities of raw logits: the card's matrix scaling, else softmax(logits / temperature)."""
        if self.calibration is not None:
            return self.calibration.probabilities(logits)
        return softmax(logits, self.temperature)

    def predict_proba(self, images_rgb_uint8: list[np.ndarray], *, tta: bool = False) -> np.ndarray:
        """Calibrated probabilities (N, 3) in LABELS order (see `probabilities`)."""
        return self.probabilities(self.logits(images_rgb_uint8, tta=tta)).astype(np.float32)

    def is_melanoma_alert(self, probs: np.ndarray) -> np.ndarray:
        """True where the calibrated melanoma probability reaches the card's operating threshold."""
        return np.asarray(probs)[:, MEL_INDEX] >= self.mel_threshold
