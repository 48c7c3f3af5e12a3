"""`skintriage train-classifier`: train the ResNet50, calibrate it on validation and write its model card."""

from __future__ import annotations

import argparse
import json
import logging
import math
import platform
import shutil
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ml.classification.calibration import (
    DEFAULT_OOD_PERCENTILE,
    energy_scores,
    fit_temperature,
    ood_operating_point,
    percentile_flag,
    softmax,
)
from ml.classification.classifier import (
    ARCHITECTURE,
    ARCHITECTURES,
    INPUT_VARIANTS,
    autocast_context,
    batch_logits,
    export_weights,
    init_model,
)
from ml.classification.crop import DEFAULT_MARGIN, crop_to_lesion
from ml.classification.metrics import (
    balanced_accuracy,
    binary_roc_auc,
    confusion_matrix,
    sensitivity_specificity,
    summarize,
    threshold_for_sensitivity,
    threshold_for_sensitivity_bound,
)
from ml.classification.preprocess import IMAGENET_MEAN, IMAGENET_STD, Normalize, TrainAugment, fit_to_input, parse_size
from ml.data.ham10000 import Sample, load_or_make_split, read_image_rgb, read_mask
from ml.errors import WeightsUnavailableError
from ml.modelcard import CLASSIFIER_CARD, ModelCard
from skintriage.vocabulary import LABELS, MEL_INDEX

log = logging.getLogger(__name__)

# Profile defaults; every key can be overridden by the flag of the same name.
PROFILES: dict[str, dict[str, Any]] = {
    # The reference study: SGD 0.001 momentum 0.9, plain cross-entropy, batch 64,
    # up to 999 epochs with early stopping (patience 50) on validation loss.
    "reference": {
        "optimizer": "sgd",
        "lr": 1e-3,
        "weight_decay": 0.0,
        "batch_size": 64,
        "epochs": 999,
        "patience": 50,
        "label_smoothing": 0.0,
        "balance": "none",
        "augment": "light",
        "schedule": "constant",
        "warmup": 0.0,
        "ema": 0.0,
    },
    # What worked better here: AdamW, warmup + cosine, label smoothing, class-weighted loss,
    # strong augmentation and an exponential moving average of the weights (less epoch-to-epoch swing).
    "strong": {
        "optimizer": "adamw",
        "lr": 1e-3,
        "weight_decay": 0.05,
        "batch_size": 32,
        "epochs": 60,
        "patience": 0,
        "label_smoothing": 0.1,
        "balance": "loss",
        "augment": "strong",
        "schedule": "cosine",
        "warmup": 0.05,
        "ema": 0.99,
    },
}
SELECT_CRITERIA = ("mel_auc+bacc", "mel_auc", "balanced_accuracy", "val_loss")
TRAIN_CACHE_SCALE = 1.25  # strong augmentation crops from a larger cached image instead of upsampling


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the train-classifier flags."""
    parser.add_argument("--data", type=Path, required=True, help="HAM10000 folder (metadata CSV, images, masks)")
    parser.add_argument("--out", type=Path, default=Path("models"), help="MODEL_DIR for classifier.json + weights")
    parser.add_argument(
        "--run-dir", type=Path, default=None, help="checkpoints, caches, log (default runs/cls-<input>)"
    )
    parser.add_argument(
        "--split-csv",
        type=Path,
        default=Path("runs/split.csv"),
        help="lesion-grouped split shared with segmentation; created from --seed if missing",
    )
    parser.add_argument(
        "--clinical-data",
        type=Path,
        default=None,
        help="PAD-UFES-20 folder: its train patients' phone photos join training (cropped by the U-Net's "
        "masks, as at inference) and its val patients are scored every epoch; its test patients are never used",
    )
    parser.add_argument(
        "--clinical-repeat",
        type=int,
        default=4,
        help="times each clinical training photo appears per epoch (they are few beside HAM10000)",
    )
    parser.add_argument(
        "--seg-card",
        type=Path,
        default=Path("models/segmentation.json"),
        help="segmentation card whose masks crop the clinical photos (default: the shipped U-Net)",
    )
    parser.add_argument("--profile", choices=sorted(PROFILES), default="strong")
    parser.add_argument(
        "--input",
        choices=INPUT_VARIANTS,
        default="crop",
        help="the lesion cropped by its (ground-truth) mask with margin (default; the U-Net's "
        "mask at inference), or the whole image; see docs/classification.md",
    )
    parser.add_argument("--crop-margin", type=float, default=DEFAULT_MARGIN)
    parser.add_argument("--size", default="224", help="input size: 128 or HxW like 96x128")
    parser.add_argument(
        "--arch",
        choices=sorted(ARCHITECTURES),
        default=ARCHITECTURE,
        help="torchvision network (default resnet50, the design's)",
    )
    parser.add_argument(
        "--weights",
        default="imagenet",
        help="imagenet | none | PATH to a state dict (.pt/.pth/.safetensors) of the same --arch",
    )
    parser.add_argument(
        "--init-from",
        type=Path,
        default=None,
        help="a classifier card (e.g. the shipped models/classifier.json): start from its verified "
        "weights and architecture, so CPU time spent in an earlier run is not lost",
    )
    parser.add_argument("--optimizer", choices=("sgd", "adamw"), default=None)
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--weight-decay", type=float, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--patience", type=int, default=None, help="early stopping on val loss; 0 = off")
    parser.add_argument("--label-smoothing", type=float, default=None)
    parser.add_argument(
        "--balance",
        choices=("none", "loss", "sampler"),
        default=None,
        help="class balancing: inverse-frequency loss weights or a balanced sampler",
    )
    parser.add_argument("--augment", choices=("light", "strong"), default=None)
    parser.add_argument("--schedule", choices=("constant", "cosine"), default=None)
    parser.add_argument("--warmup", type=float, default=None, help="warmup as a fraction of training")
    parser.add_argument("--ema", type=float, default=None, help="EMA decay of the weights per step; 0 = off")
    parser.add_argument(
        "--select",
        choices=SELECT_CRITERIA,
        default="mel_auc+bacc",
        help="validation criterion for the best checkpoint (default: mean of MEL AUC and balanced accuracy)",
    )
    parser.add_argument(
        "--target-sensitivity",
        type=float,
        default=0.9,
        help="melanoma sensitivity the operating threshold must reach on validation",
    )
    parser.add_argument(
        "--sensitivity-confidence",
        type=float,
        default=0.95,
        help="choose the melanoma threshold so that this lower confidence bound of validation "
        "sensitivity (bootstrap over lesions) reaches --target-sensitivity; 0 = the point estimate",
    )
    parser.add_argument(
        "--ood-percentile",
        type=percentile_flag,
        default=None,
        help="energy percentile of the validation photos above which the pipeline asks for a "
        "retake as 'not skin' (99.5 refuses at most 0.5 %% of them); 0 = no such check. Default: "
        f"{DEFAULT_OOD_PERCENTILE:g} from pretrained weights, 0 from scratch (--weights none)",
    )
    parser.add_argument(
        "--max-minutes",
        type=float,
        default=None,
        help="stop training after this many minutes, keeping the best checkpoint; the cosine "
        "schedule then follows the clock so it still anneals",
    )
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    parser.add_argument(
        "--cpu-bf16",
        action="store_true",
        help="bfloat16 autocast on CPU (about 2x faster on CPUs with AMX/AVX512-BF16)",
    )
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--resume", action="store_true", help="continue from RUN_DIR/last.pt")
    parser.add_argument("--name", default=None, help="model name in the card (default resnet50-ham3-<input>)")
    parser.add_argument("--no-download", action="store_true", help="never download ImageNet weights")


@dataclass
class Arrays:
    """One split's cached images (uint8 NHWC) and label indices."""

    images: np.ndarray
    labels: np.ndarray
    groups: np.ndarray  # lesion ids: one lesion's photos are resampled together


def label_indices(samples: list[Sample]) -> np.ndarray:
    """Class index of every sample in LABELS order."""
    return np.array([LABELS.index(s.label) for s in samples], dtype=np.int64)


def load_view(sample: Sample, *, variant: str, margin: float) -> np.ndarray:
    """The RGB image the classifier trains on: whole, or cropped by the sample's ground-truth mask."""
    image = read_image_rgb(sample.image_path)
    if variant == "whole":
        return image
    if sample.mask_path is None:
        raise ValueError(
            f"image {sample.image_id} has no mask; --input crop needs HAM10000_segmentations_lesion_tschandl/"
        )
    mask = read_mask(sample.mask_path)
    if mask.shape != image.shape[:2]:
        import cv2

        mask = cv2.resize(mask, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_NEAREST)
    return crop_to_lesion(image, mask, margin=margin)


def cached_arrays(samples: list[Sample], *, size: tuple[int, int], variant: str, margin: float, cache: Path) -> Arrays:
    """Decode, crop and resize once, then reuse the .npy so epochs never touch JPEGs."""
    from tqdm import tqdm

    labels = label_indices(samples)
    groups = np.array([s.lesion_id for s in samples])
    if cache.is_file():
        images = np.load(cache, mmap_mode=None)
        if len(images) == len(samples) and images.shape[1:3] == size:
            return Arrays(images, labels, groups)
        log.info("cache %s does not match the split; rebuilding", cache)
    cache.parent.mkdir(parents=True, exist_ok=True)
    images = np.zeros((len(samples), size[0], size[1], 3), dtype=np.uint8)
    for i, sample in enumerate(tqdm(samples, desc=f"caching {cache.stem}", mininterval=5, leave=False)):
        images[i] = fit_to_input(load_view(sample, variant=variant, margin=margin), size)
    tmp = cache.with_suffix(".tmp.npy")
    np.save(tmp, images)
    tmp.replace(cache)
    return Arrays(images, labels, groups)


def clinical_arrays(
    root: Path, *, split: str, size: tuple[int, int], margin: float, seg_card: Path, cache: Path
) -> Arrays:
    """One PAD-UFES-20 split cropped by the U-Net's masks (phone photos have no drawn masks), cached."""
    from ml.data.pad_ufes import read_pad

    samples = [s for s in read_pad(root) if s.split == split]
    if not samples:
        raise ValueError(f"{root} has no photos of {split} patients")
    labels = np.array([LABELS.index(s.label) for s in samples], dtype=np.int64)
    groups = np.array([f"PAD-{s.patient_id}" for s in samples])
    if cache.is_file():
        images = np.load(cache)
        if len(images) == len(samples) and images.shape[1:3] == size:
            return Arrays(images, labels, groups)
        log.info("cache %s does not match the clinical data; rebuilding", cache)
    from ml.segmentation.unet import Segmenter

    segmenter = Segmenter.from_card(seg_card)
    images = np.zeros((len(samples), size[0], size[1], 3), dtype=np.uint8)
    for start in range(0, len(samples), 8):
        photos = [read_image_rgb(s.image_path) for s in samples[start : start + 8]]
        for i, (photo, mask) in enumerate(zip(photos, segmenter.predict_masks(photos), strict=True)):
            crop = crop_to_lesion(photo, np.asarray(mask, dtype=np.uint8), margin=margin)
            images[start + i] = fit_to_input(crop, size)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp.npy")
    np.save(tmp, images)
    tmp.replace(cache)
    return Arrays(images, labels, groups)


def add_clinical(args: argparse.Namespace, data: dict[str, Arrays], *, size, train_size, cache_dir: Path) -> None:
    """--clinical-data: PAD train patients join train (repeated), PAD val patients become data['pad_val']."""
    if args.clinical_data is None:
        return
    if args.input != "crop":
        raise ValueError("--clinical-data needs --input crop (the phone photos are cropped by the U-Net's masks)")
    if args.clinical_repeat < 1:
        raise ValueError("--clinical-repeat must be at least 1")
    tag = f"m{args.crop_margin:g}-{ModelCard.load(args.seg_card).version}"
    pad_train = clinical_arrays(
        args.clinical_data,
        split="train",
        size=train_size,
        margin=args.crop_margin,
        seg_card=args.seg_card,
        cache=cache_dir / f"pad-train-{tag}-{train_size[0]}x{train_size[1]}.npy",
    )
    data["pad_val"] = clinical_arrays(
        args.clinical_data,
        split="val",
        size=size,
        margin=args.crop_margin,
        seg_card=args.seg_card,
        cache=cache_dir / f"pad-val-{tag}-{size[0]}x{size[1]}.npy",
    )
    ham, k = data["train"], args.clinical_repeat
    data["train"] = Arrays(
        np.concatenate([ham.images, *[pad_train.images] * k]),
        np.concatenate([ham.labels, *[pad_train.labels] * k]),
        np.concatenate([ham.groups, *[pad_train.groups] * k]),
    )
    log.info(
        "clinical photos: %d train (x%d), %d val, cropped by %s",
        len(pad_train.labels),
        k,
        len(data["pad_val"].labels),
        args.seg_card,
    )


def resolve_settings(args: argparse.Namespace) -> dict[str, Any]:
    """Profile defaults overridden by explicit flags."""
    settings = dict(PROFILES[args.profile])
    for key in settings:
        value = getattr(args, key, None)
        if value is not None:
            settings[key] = value
    return settings


def class_weights(labels: np.ndarray) -> np.ndarray:
    """Inverse-frequency weights, scaled so that the average sample weight is 1."""
    counts = np.bincount(labels, minlength=len(LABELS)).astype(np.float64)
    if (counts == 0).any():
        missing = [LABELS[i] for i in np.flatnonzero(counts == 0)]
        raise ValueError(f"training split has no {missing} images; every class needs examples")
    return len(labels) / (len(LABELS) * counts)


def lr_factor(progress: float, *, schedule: str, warmup: float) -> float:
    """Learning-rate multiplier at a training progress in [0, 1]: linear warmup, then cosine to 1 %."""
    if warmup > 0 and progress < warmup:
        return max(progress / warmup, 0.01)
    if schedule == "constant":
        return 1.0
    t = (progress - warmup) / max(1e-9, 1 - warmup)
    return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(1.0, max(0.0, t))))


def ema_with_warmup(decay: float) -> Any:
    """EMA update whose decay ramps up as min(decay, (1 + n) / (10 + n)) over the first updates.

    A fixed decay of 0.99 would keep a third of the random initial weights for the first
    hundred steps; a short CPU run has only a few hundred steps in total.
    """

    @torch.no_grad()
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], num_averaged: Any) -> None:
        n = float(num_averaged)
        d = min(decay, (1 + n) / (10 + n))
        # Integer buffers (BatchNorm's num_batches_tracked) cannot be interpolated: copy them.
        floats = [(a, c) for a, c in zip(averaged, current, strict=True) if a.is_floating_point()]
        if floats:
            torch._foreach_lerp_([a for a, _ in floats], [c for _, c in floats], 1 - d)
        for a, c in zip(averaged, current, strict=True):
            if not a.is_floating_point():
                a.copy_(c)

    return update


def make_optimizer(model: nn.Module, settings: dict[str, Any]) -> torch.optim.Optimizer:
    """SGD or AdamW, without weight decay on BatchNorm and bias parameters."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        (no_decay if param.ndim <= 1 or name.endswith(".bias") else decay).append(param)
    groups = [
        {"params": decay, "weight_decay": settings["weight_decay"]},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    if settings["optimizer"] == "sgd":
        return torch.optim.SGD(groups, lr=settings["lr"], momentum=0.9)
    return torch.optim.AdamW(groups, lr=settings["lr"])


def val_report(logits: np.ndarray, labels: np.ndarray, *, target_sensitivity: float) -> dict[str, float]:
    """The per-epoch validation numbers: loss, balanced accuracy, MEL AUC, specificity at target sensitivity."""
    probs = softmax(logits)
    cm = confusion_matrix(labels, probs.argmax(1))
    is_mel = labels == MEL_INDEX
    thr = threshold_for_sensitivity(is_mel, probs[:, MEL_INDEX], target_sensitivity)
    _, spec = sensitivity_specificity(is_mel, probs[:, MEL_INDEX], thr)
    return {
        "val_loss": float(-np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, None)).mean()),
        "balanced_accuracy": balanced_accuracy(cm),
        "accuracy": float(np.trace(cm) / cm.sum()),
        "mel_auc": binary_roc_auc(is_mel, probs[:, MEL_INDEX]),
        "mel_spec_at_target": spec,
    }


def selection_score(report: dict[str, float], criterion: str) -> float:
    """Higher is better: the number the best checkpoint is chosen by."""
    if criterion == "mel_auc+bacc":
        return 0.5 * (report["mel_auc"] + report["balanced_accuracy"])
    if criterion == "val_loss":
        return -report["val_loss"]
    return report[criterion]


def score_epoch(
    model: nn.Module, data: dict[str, Arrays], *, args: argparse.Namespace, normalize: Normalize, device: torch.device
) -> dict[str, float]:
    """Validation metrics of one epoch, and the clinical validation photos' melanoma AUC when there are any."""
    val_logits = batch_logits(model, data["val"].images, normalize=normalize, device=device, cpu_bf16=args.cpu_bf16)
    report = val_report(val_logits, data["val"].labels, target_sensitivity=args.target_sensitivity)
    if "pad_val" in data:
        pad_logits = batch_logits(
            model, data["pad_val"].images, normalize=normalize, device=device, cpu_bf16=args.cpu_bf16
        )
        report["pad_val_mel_auc"] = binary_roc_auc(
            data["pad_val"].labels == MEL_INDEX, softmax(pad_logits)[:, MEL_INDEX]
        )
    return report


def _save_atomic(obj: Any, path: Path) -> None:
    """torch.save to a temporary file, then rename, so a killed run never leaves half a checkpoint."""
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)


def _jsonable(args: argparse.Namespace) -> dict[str, Any]:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "func"}


def load_data(
    args: argparse.Namespace, *, settings: dict[str, Any], size: tuple[int, int], run_dir: Path
) -> tuple[dict[str, Arrays], str]:
    """The cached train/val/test arrays (train larger for strong augmentation), clinical photos added; split hash."""
    split, digest = load_or_make_split(args.data, args.split_csv, seed=args.seed)
    margin = args.crop_margin
    tag = f"{args.input}-m{margin:g}" if args.input == "crop" else args.input
    cache_dir = run_dir / "cache"
    train_size = size
    if settings["augment"] == "strong":
        train_size = (round(size[0] * TRAIN_CACHE_SCALE), round(size[1] * TRAIN_CACHE_SCALE))
    data = {
        "train": cached_arrays(
            split["train"],
            size=train_size,
            variant=args.input,
            margin=margin,
            cache=cache_dir / f"train-{tag}-{train_size[0]}x{train_size[1]}-{digest}.npy",
        ),
        "val": cached_arrays(
            split["val"],
            size=size,
            variant=args.input,
            margin=margin,
            cache=cache_dir / f"val-{tag}-{size[0]}x{size[1]}-{digest}.npy",
        ),
        "test": cached_arrays(
            split["test"],
            size=size,
            variant=args.input,
            margin=margin,
            cache=cache_dir / f"test-{tag}-{size[0]}x{size[1]}-{digest}.npy",
        ),
    }
    add_clinical(args, data, size=size, train_size=train_size, cache_dir=cache_dir)
    log.info(
        "split %s: train %d, val %d, test %d images; input %s %dx%d",
        digest,
        *(len(data[k].labels) for k in ("train", "val", "test")),
        args.input,
        *size,
    )

    return data, digest


def _resume(last_path: Path, *, digest: str, model: nn.Module, optimizer, ema, device: torch.device) -> dict[str, Any]:
    """Load RUN_DIR/last.pt into the model, optimizer and EMA; the saved training state."""
    ckpt = torch.load(last_path, map_location=device, weights_only=True)
    if ckpt["labels"] != list(LABELS) or ckpt["split_hash"] != digest:
        raise ValueError(f"{last_path} was trained with another label order or split; use a new --run-dir")
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    if ema is not None and ckpt.get("ema") is not None:
        ema.load_state_dict(ckpt["ema"])
    log.info("resumed from %s at epoch %d", last_path, ckpt["state"]["epoch"])
    return ckpt["state"]


def epoch_order(labels: np.ndarray, *, balance: str, seed: int) -> np.ndarray:
    """The training photos' order for one epoch: a permutation, or a class-balanced draw with replacement."""
    rng = np.random.default_rng(seed)
    n = len(labels)
    if balance == "sampler":
        p = 1.0 / np.bincount(labels)[labels]
        return rng.choice(n, size=n, replace=True, p=p / p.sum())
    return rng.permutation(n)


def _checkpoint(
    args: argparse.Namespace, *, model, ema, optimizer, state, settings, size, digest: str
) -> dict[str, Any]:
    """What RUN_DIR/last.pt holds: enough to resume, and to know what was trained on what."""
    return {
        "model": model.state_dict(),
        "ema": ema.state_dict() if ema is not None else None,
        "optimizer": optimizer.state_dict(),
        "state": state,
        "args": _jsonable(args),
        "settings": settings,
        "labels": list(LABELS),
        "input_size": list(size),
        "input_variant": args.input,
        "normalization": {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)},
        "split_hash": digest,
    }


def build_training(args: argparse.Namespace, settings: dict[str, Any], train_labels: np.ndarray, device):
    """The network (from --weights or --init-from), its weight average, optimizer, loss scaler and loss."""
    model = init_model(args.weights, allow_download=not args.no_download, arch=args.arch).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    ema = None
    if settings["ema"] > 0:
        from torch.optim.swa_utils import AveragedModel

        ema = AveragedModel(model, multi_avg_fn=ema_with_warmup(settings["ema"]), use_buffers=True)
    optimizer = make_optimizer(model, settings)
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda")
    weights = torch.tensor(class_weights(train_labels), dtype=torch.float32, device=device)
    criterion = nn.CrossEntropyLoss(
        weight=weights if settings["balance"] == "loss" else None, label_smoothing=settings["label_smoothing"]
    )
    return model, ema, optimizer, scaler, criterion


def train_step(model, ema, optimizer, scaler, criterion, x, y, *, device: torch.device, cpu_bf16: bool) -> float:
    """One optimisation step on a batch (the learning rate already set); the batch's loss."""
    optimizer.zero_grad(set_to_none=True)
    with autocast_context(device, cpu_bf16):
        logits = model(x)
    loss = criterion(logits.float(), y)
    if not torch.isfinite(loss):
        return float(loss.item())
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    if ema is not None:
        ema.update_parameters(model)
    return float(loss.item())


def _log_epoch(report: dict[str, float], *, target_sensitivity: float, improved: bool) -> None:
    log.info(
        "epoch %d  train_loss %.4f  val_loss %.4f  bacc %.3f  acc %.3f  mel_auc %.3f  spec@%.2f %.3f  "
        "lr %.2e  %.1f min%s%s",
        report["epoch"],
        report["train_loss"],
        report["val_loss"],
        report["balanced_accuracy"],
        report["accuracy"],
        report["mel_auc"],
        target_sensitivity,
        report["mel_spec_at_target"],
        report["lr"],
        report["minutes"],
        f"  pad_val_mel_auc {report['pad_val_mel_auc']:.3f}" if "pad_val_mel_auc" in report else "",
        "  *best" if improved else "",
    )


def train(args: argparse.Namespace) -> dict[str, Any]:
    """Train, select by validation, calibrate, pick the melanoma threshold, export weights and card."""
    from tqdm import tqdm

    settings = resolve_settings(args)
    size = parse_size(args.size)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    run_dir = Path(args.run_dir or f"runs/cls-{args.input}")
    run_dir.mkdir(parents=True, exist_ok=True)

    data, digest = load_data(args, settings=settings, size=size, run_dir=run_dir)

    resolve_init(args)
    model, ema, optimizer, scaler, criterion = build_training(args, settings, data["train"].labels, device)
    normalize = Normalize(IMAGENET_MEAN, IMAGENET_STD)
    augment = TrainAugment(size, strength=settings["augment"], seed=args.seed)

    n_train = len(data["train"].labels)
    batch_size = settings["batch_size"]
    steps_per_epoch = max(1, n_train // batch_size)  # drop the last partial batch: BatchNorm dislikes tiny ones
    total_steps = steps_per_epoch * settings["epochs"]
    budget_s = args.max_minutes * 60 if args.max_minutes else None

    state: dict[str, Any] = {
        "epoch": 0,
        "step": 0,
        "elapsed_s": 0.0,
        "best_score": -math.inf,
        "best_epoch": -1,
        "best_val_loss": math.inf,
        "since_improved": 0,
        "history": [],
    }
    last_path, best_path = run_dir / "last.pt", run_dir / "best.pt"
    if args.resume and last_path.is_file():
        state.update(_resume(last_path, digest=digest, model=model, optimizer=optimizer, ema=ema, device=device))

    started = time.monotonic() - state["elapsed_s"]

    def elapsed() -> float:
        return time.monotonic() - started

    def progress(step: int) -> float:
        p = step / total_steps
        if budget_s:
            p = max(p, elapsed() / budget_s)
        return min(1.0, p)

    is_tty = sys.stderr.isatty()
    stop_reason = "epochs"
    while state["epoch"] < settings["epochs"]:
        epoch = state["epoch"]
        model.train()
        order = epoch_order(data["train"].labels, balance=settings["balance"], seed=args.seed + epoch)
        running, seen = 0.0, 0
        out_of_time = False
        bar = tqdm(
            range(steps_per_epoch),
            desc=f"epoch {epoch + 1}",
            mininterval=1 if is_tty else 60,
            leave=False,
            disable=None if is_tty else False,
            file=sys.stderr,
        )
        for b in bar:
            idx = np.sort(order[b * batch_size : (b + 1) * batch_size])
            x = normalize(augment(data["train"].images[idx], device), device)
            y = torch.as_tensor(data["train"].labels[idx], device=device)
            if device.type == "cuda":
                x = x.contiguous(memory_format=torch.channels_last)
            factor = lr_factor(progress(state["step"]), schedule=settings["schedule"], warmup=settings["warmup"])
            for group in optimizer.param_groups:
                group["lr"] = settings["lr"] * factor
            loss = train_step(model, ema, optimizer, scaler, criterion, x, y, device=device, cpu_bf16=args.cpu_bf16)
            if not math.isfinite(loss):
                raise FloatingPointError(f"loss became {loss} at step {state['step']}; lower --lr")
            state["step"] += 1
            running += loss * len(idx)
            seen += len(idx)
            bar.set_postfix(loss=f"{running / seen:.4f}", lr=f"{settings['lr'] * factor:.2e}", refresh=False)
            if budget_s and elapsed() >= budget_s:
                out_of_time = True
                break
        bar.close()
        eval_model = ema.module if ema is not None else model
        report = score_epoch(eval_model, data, args=args, normalize=normalize, device=device)
        report.update(
            epoch=epoch + 1, train_loss=running / max(1, seen), minutes=elapsed() / 60, lr=settings["lr"] * factor
        )
        score = selection_score(report, args.select)
        improved = score > state["best_score"]
        if improved:
            state["best_score"], state["best_epoch"] = score, epoch + 1
            _save_atomic({"model": eval_model.state_dict(), "epoch": epoch + 1, "report": report}, best_path)
        if report["val_loss"] < state["best_val_loss"]:
            state["best_val_loss"], state["since_improved"] = report["val_loss"], 0
        else:
            state["since_improved"] += 1
        state["history"].append(report)
        state["epoch"] = epoch + 1
        state["elapsed_s"] = elapsed()
        _save_atomic(
            _checkpoint(args, model=model, ema=ema, optimizer=optimizer, state=state, settings=settings, size=size,
                        digest=digest),
            last_path,
        )  # fmt: skip
        _log_epoch(report, target_sensitivity=args.target_sensitivity, improved=improved)
        if out_of_time:
            stop_reason = f"time budget {args.max_minutes:g} min"
            break
        if settings["patience"] and state["since_improved"] >= settings["patience"]:
            stop_reason = f"early stopping: val loss flat for {settings['patience']} epochs"
            break
    log.info(
        "training stopped (%s) after %d epochs, %.1f min; best epoch %d",
        stop_reason,
        state["epoch"],
        elapsed() / 60,
        state["best_epoch"],
    )
    return finish(
        args,
        settings=settings,
        size=size,
        data=data,
        digest=digest,
        device=device,
        state=state,
        stop_reason=stop_reason,
        run_dir=run_dir,
    )


def finish(
    args: argparse.Namespace,
    *,
    settings: dict[str, Any],
    size: tuple[int, int],
    data: dict[str, Arrays],
    digest: str,
    device: torch.device,
    state: dict[str, Any],
    stop_reason: str,
    run_dir: Path,
) -> dict[str, Any]:
    """Load the best checkpoint, fit temperature and threshold on val, score test, write weights and card."""
    best = torch.load(run_dir / "best.pt", map_location="cpu", weights_only=True)
    model = init_model("none", arch=args.arch)
    model.load_state_dict(best["model"])
    model.to(device)
    normalize = Normalize(IMAGENET_MEAN, IMAGENET_STD)
    # Full precision here: these numbers must match what Classifier (fp32 on CPU) computes later.
    val_logits = batch_logits(model, data["val"].images, normalize=normalize, device=device)
    test_logits = batch_logits(model, data["test"].images, normalize=normalize, device=device)
    temperature = fit_temperature(val_logits, data["val"].labels)
    val_probs = softmax(val_logits, temperature)
    is_mel_val = data["val"].labels == MEL_INDEX
    rule = operating_threshold(
        is_mel_val,
        val_probs[:, MEL_INDEX],
        data["val"].groups,
        target=args.target_sensitivity,
        confidence=args.sensitivity_confidence,
    )
    threshold = rule["threshold"]
    val_sens, val_spec = sensitivity_specificity(is_mel_val, val_probs[:, MEL_INDEX], threshold)
    val_metrics = summarize(val_probs, data["val"].labels, mel_threshold=threshold)
    test_metrics = summarize(softmax(test_logits, temperature), data["test"].labels, mel_threshold=threshold)
    test_metrics["ece_uncalibrated"] = summarize(softmax(test_logits), data["test"].labels)["ece"]
    val_metrics["ece_uncalibrated"] = summarize(softmax(val_logits), data["val"].labels)["ece"]
    ood = ood_check(val_logits, test_logits, ood_percentile_for(args))
    clinical = None
    if "pad_val" in data:
        pad_logits = batch_logits(model, data["pad_val"].images, normalize=normalize, device=device)
        pad_metrics = summarize(softmax(pad_logits, temperature), data["pad_val"].labels, mel_threshold=threshold)
        clinical = {
            "data": str(args.clinical_data),
            "repeat": args.clinical_repeat,
            "crop_masks": ModelCard.load(args.seg_card).version,
            "val_patients_metrics": pad_metrics,
        }

    out_dir = Path(args.out)
    weights_path, sha = export_weights(best["model"], out_dir, arch=args.arch)
    card = ModelCard(
        kind="classifier",
        name=args.name or f"{args.arch}-ham3-{args.input}",
        weights_file=weights_path.name,
        weights_sha256=sha,
        input_size=list(size),
        architecture={
            "name": args.arch,
            "library": f"torchvision {_torchvision_version()}",
            "num_classes": len(LABELS),
            "init": str(args.weights),
            "init_from": str(args.init_from) if args.init_from else None,
        },
        preprocessing={
            "mean": list(IMAGENET_MEAN),
            "std": list(IMAGENET_STD),
            "color": "RGB",
            "resize": "centre-crop to the input aspect ratio, then resize (INTER_AREA when shrinking)",
            "input_variant": args.input,
            "crop_margin": args.crop_margin if args.input == "crop" else None,
            "crop_masks": (
                "ground-truth masks in training"
                + ("; the U-Net's masks for the clinical photos" if clinical else "")
                + "; the U-Net's mask at inference"
            )
            if args.input == "crop"
            else None,
        },
        labels=list(LABELS),
        temperature=temperature,
        operating_point={
            "mel_threshold": threshold,
            "target_sensitivity": args.target_sensitivity,
            "val_sensitivity": val_sens,
            "val_specificity": val_spec,
            **{k: v for k, v in rule.items() if k != "threshold"},
            "test_sensitivity": test_metrics["operating_point"]["sensitivity"],
            "test_specificity": test_metrics["operating_point"]["specificity"],
            **ood,
        },
        training={
            "profile": args.profile,
            "settings": settings,
            "args": _jsonable(args),
            "split_csv": str(args.split_csv),
            "split_hash": digest,
            "clinical": clinical,
            "n_images": {k: len(v.labels) for k, v in data.items()},
            "epochs_run": state["epoch"],
            "best_epoch": best["epoch"],
            "selection": args.select,
            "stop_reason": stop_reason,
            "minutes": round(state["elapsed_s"] / 60, 2),
            "device": str(device) if device.type != "cpu" else f"cpu ({platform.processor() or platform.machine()})",
            "torch": torch.__version__,
            "history": state["history"],
        },
        metrics={"val": val_metrics, "test": test_metrics},
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    card_path = out_dir / CLASSIFIER_CARD
    card.save(card_path)
    (run_dir / "metrics.json").write_text(json.dumps({"val": val_metrics, "test": test_metrics}, indent=2) + "\n")
    shutil.copyfile(card_path, run_dir / CLASSIFIER_CARD)
    log.info(
        "test: acc %.4f  bacc %.4f  MEL AUC %.4f  MEL sens %.3f spec %.3f at threshold %.3f  ECE %.4f -> %.4f  "
        "(T=%.3f); card %s",
        test_metrics["accuracy"],
        test_metrics["balanced_accuracy"],
        test_metrics["mel_auc"],
        test_metrics["operating_point"]["sensitivity"],
        test_metrics["operating_point"]["specificity"],
        threshold,
        test_metrics["ece_uncalibrated"],
        test_metrics["ece"],
        temperature,
        card_path,
    )
    return {"card": str(card_path), "weights": str(weights_path), "val": val_metrics, "test": test_metrics}


def resolve_init(args: argparse.Namespace) -> None:
    """--init-from CARD: verify the card's weights and train from them, in the card's architecture."""
    if args.init_from is None:
        return
    from ml.modelcard import ModelCardError

    try:
        card = ModelCard.load(args.init_from)
        weights = card.verify(args.init_from)
    except ModelCardError as exc:
        raise WeightsUnavailableError(f"--init-from {args.init_from}: {exc}") from exc
    if card.kind != "classifier":
        raise WeightsUnavailableError(f"--init-from {args.init_from} is a {card.kind!r} card, not a classifier card")
    args.arch = str(card.architecture.get("name", ARCHITECTURE))
    args.weights = str(weights)
    log.info("starting from %s (%s)", card.version, weights)


def operating_threshold(
    is_mel: np.ndarray, p_mel: np.ndarray, groups: np.ndarray, *, target: float, confidence: float
) -> dict[str, Any]:
    """The melanoma threshold and how it was chosen: a lower confidence bound of sensitivity, or the point."""
    if not confidence:
        return {"threshold": threshold_for_sensitivity(is_mel, p_mel, target), "threshold_rule": "point estimate"}
    bound = threshold_for_sensitivity_bound(is_mel, p_mel, groups, target=target, confidence=confidence)
    log.info(
        "melanoma threshold %.4f: validation sensitivity %.3f, lower %.0f%% bound %.3f (%d lesions)",
        bound["threshold"],
        bound["sensitivity"],
        100 * confidence,
        bound["sensitivity_lower_bound"],
        bound["n_positive_groups"],
    )
    rule = f"lower {100 * confidence:g}% bound of lesion-bootstrap validation sensitivity >= {target:g}"
    return {
        "threshold": bound["threshold"],
        "threshold_rule": rule,
        "val_sensitivity_lower_bound": bound["sensitivity_lower_bound"],
        "bound_confidence": confidence,
        "bound_resamples": bound["n_boot"],
        "val_melanoma_lesions": bound["n_positive_groups"],
    }


def ood_percentile_for(args: argparse.Namespace) -> float:
    """The --ood-percentile given, else the default for a pretrained start and 0 (no check) from scratch.

    Models trained from scratch on the CPU sample gave non-skin photos no higher energy than lesions (none
    of 14 refused, docs/classification.md) while the check refused about 0.5 % of real photos.
    """
    if args.ood_percentile is not None:
        return float(args.ood_percentile)
    if args.weights == "none":  # as init_model reads it
        log.info("no OOD energy check for a model trained from scratch (pass --ood-percentile to write one)")
        return 0.0
    return DEFAULT_OOD_PERCENTILE


def ood_check(val_logits: np.ndarray, test_logits: np.ndarray, percentile: float) -> dict[str, Any]:
    """Operating-point entries of the energy OOD check fitted on val, with the share of test photos it refuses."""
    if not percentile:
        return {}
    ood = ood_operating_point(val_logits, percentile)
    if len(test_logits):
        ood["ood_test_refused"] = float((energy_scores(test_logits) > ood["ood_energy_threshold"]).mean())
    log.info(
        "OOD energy threshold %.4f (percentile %g of %d validation photos); refuses %.2f %% of val, %.2f %% of test",
        ood["ood_energy_threshold"],
        percentile,
        ood["ood_val_images"],
        100 * ood["ood_val_refused"],
        100 * ood.get("ood_test_refused", float("nan")),
    )
    return ood


def _torchvision_version() -> str:
    import torchvision

    return torchvision.__version__


def main(args: argparse.Namespace) -> int:
    """Run train-classifier from parsed arguments; return the exit code."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        result = train(args)
    except WeightsUnavailableError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    test = result["test"]
    print(f"wrote {result['card']} and {result['weights']}")
    print(
        f"test accuracy {test['accuracy']:.4f}, balanced accuracy {test['balanced_accuracy']:.4f}, "
        f"MEL AUC {test['mel_auc']:.4f}, MEL sensitivity {test['operating_point']['sensitivity']:.3f} / "
        f"specificity {test['operating_point']['specificity']:.3f}, ECE {test['ece']:.4f}"
    )
    return 0


if __name__ == "__main__":
    _parser = argparse.ArgumentParser(prog="skintriage train-classifier", description=__doc__)
    add_arguments(_parser)
    sys.exit(main(_parser.parse_args()))
