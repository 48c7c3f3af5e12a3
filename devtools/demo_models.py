"""Throw-away demo models: a tiny real U-Net and a real ResNet50, trained in seconds on synthetic lesions.

They exist so `skintriage demo` and the tests can run the whole service without the real
weights. Their cards say demo=True; the worker refuses them unless ALLOW_DEMO_MODELS is set,
and every reply made with them says they are not for medical use.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ml.modelcard import CLASSIFIER_CARD, SEGMENTATION_CARD, ModelCard
from skintriage.vocabulary import LABELS, MEL_INDEX, Label

log = logging.getLogger(__name__)

PHOTO_SIZE = (96, 128)  # height, width of the synthetic photos (HAM10000's 3:4)
UNET_SIZE = (64, 80)
_CLASSIFIER_SIZE = {True: (48, 48), False: (64, 64)}  # quick, default

# Background skin tones (RGB) seen in dermoscopy: pink, tan, pale bluish light, darker skin.
_SKIN_TONES = np.array([(226, 172, 160), (205, 155, 125), (210, 198, 214), (190, 140, 120), (160, 110, 85)], float)
# (n_train, n_val, unet_epochs, head_iterations) per mode: quick=True, default=False.
# The quick U-Net gets 14 epochs: with 10, Keras 3.15 / TensorFlow 2.21 left the demo nevus photo's mask
# confidence at 0.33, below the gate's 0.35, and the tests that send it were refused as "not skin" (0.61 with 14).
_BUDGET = {True: (192, 96, 14, 100), False: (480, 192, 25, 200)}
# Photos used to fit the classifier (train, val) per mode; its forward passes dominate the demo's time.
_CLASSIFIER_IMAGES = {True: (120, 60), False: (384, 192)}


def _shape_mask(rng: np.random.Generator, size: tuple[int, int], irregularity: float) -> np.ndarray:
    """A blob with a wavy border: radius r(theta) = r0 * (1 + sum of random harmonics)."""
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    cy = h / 2 + rng.uniform(-0.12, 0.12) * h
    cx = w / 2 + rng.uniform(-0.12, 0.12) * w
    r0 = rng.uniform(0.14, 0.34) * min(h, w)
    aspect = rng.uniform(0.7, 1.3)
    theta = np.arctan2((yy - cy) * aspect, xx - cx)
    radius = np.full_like(theta, r0)
    for k in range(2, 8):
        radius += r0 * irregularity * rng.uniform(0, 1) / k * np.sin(k * theta + rng.uniform(0, 2 * np.pi))
    dist = np.hypot((yy - cy) * aspect, xx - cx)
    return dist <= radius


def synthetic_lesion_photo(seed: int, label: str, size: tuple[int, int] = PHOTO_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """One dermoscopy-like RGB uint8 photo of a lesion of class label (MEL, NV or OTHER) and its mask."""
    if label not in LABELS:
        raise ValueError(f"label {label!r} must be one of {list(LABELS)}")
    rng = np.random.default_rng(seed)
    h, w = size
    skin = _SKIN_TONES[rng.integers(len(_SKIN_TONES))] + rng.normal(0, 10, 3)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    light = 1 + rng.uniform(-0.12, 0.12) * (xx / w - 0.5) + rng.uniform(-0.12, 0.12) * (yy / h - 0.5)
    image = skin[None, None, :] * light[..., None] + rng.normal(0, 5, (h, w, 3))
    irregularity = {Label.MEL: 0.9, Label.NV: 0.15, Label.OTHER: 0.45}[label]
    mask = _shape_mask(rng, size, irregularity)
    jitter = rng.normal(0, 10, 3)
    if label == Label.MEL:
        # Variegated dark brown to blue-black, the multicolour pattern of melanoma.
        base = np.array([62.0, 42.0, 44.0]) + jitter
        blotch = cv2.GaussianBlur(rng.normal(0, 1, (h, w)).astype(np.float32), (0, 0), 3)
        colour = base[None, None, :] + blotch[..., None] * np.array([40, 35, 60]) + rng.normal(0, 8, (h, w, 3))
    elif label == Label.NV:
        # Uniform medium brown.
        colour = np.array([140.0, 96.0, 70.0]) + jitter + rng.normal(0, 5, (h, w, 3))
    else:
        # Pink-red (vascular, basal cell) or light tan with a scaly texture (keratosis).
        tint = np.array([205.0, 115.0, 125.0]) if rng.random() < 0.5 else np.array([185.0, 150.0, 112.0])
        colour = tint + jitter + rng.normal(0, 14, (h, w, 1))
    alpha = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), rng.uniform(0.8, 2.0))[..., None]
    image = image * (1 - alpha) + colour * alpha
    for _ in range(int(rng.integers(0, 4))):  # hairs
        p1 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        p2 = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        cv2.line(image, p1, p2, (45.0, 35.0, 30.0), 1, lineType=cv2.LINE_AA)
    if rng.random() < 0.3:  # the dark circular edge of a dermatoscope
        ring = np.hypot(yy - h / 2, xx - w / 2) > rng.uniform(0.45, 0.55) * w
        image[ring] *= 0.15
    return np.clip(image, 0, 255).astype(np.uint8), mask


def synthetic_set(
    n: int, *, seed: int, size: tuple[int, int] = PHOTO_SIZE
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """n photos (N,H,W,3 uint8), masks (N,H,W bool) and label indices, classes in turn."""
    images, masks, labels = [], [], []
    for i in range(n):
        label = i % len(LABELS)
        image, mask = synthetic_lesion_photo(seed * 100_003 + i, LABELS[label], size)
        images.append(image)
        masks.append(mask)
        labels.append(label)
    return np.stack(images), np.stack(masks), np.array(labels)


def _resize_all(images: np.ndarray, size: tuple[int, int], *, nearest: bool = False) -> np.ndarray:
    h, w = size
    interp = cv2.INTER_NEAREST if nearest else cv2.INTER_AREA
    return np.stack([cv2.resize(np.ascontiguousarray(x), (w, h), interpolation=interp) for x in images])


def train_demo_segmenter(out_dir: Path, *, quick: bool, seed: int = 0) -> ModelCard:
    """Train a tiny real U-Net on synthetic photos and save it with a demo card."""
    import keras

    from ml.segmentation.losses import BCEDiceLoss
    from ml.segmentation.metrics import batch_mean_iou
    from ml.segmentation.preprocess import SegmentationPreset
    from ml.segmentation.unet import UNetConfig, build_unet, save_segmentation_model

    n_train, n_val, epochs, _ = _BUDGET[quick]
    started = time.perf_counter()
    keras.utils.set_random_seed(seed)
    x, m, _ = synthetic_set(n_train + n_val, seed=seed + 1)
    x = _resize_all(x, UNET_SIZE).astype(np.float32)
    y = _resize_all(m.astype(np.uint8), UNET_SIZE, nearest=True)[..., None].astype(np.float32)
    config = UNetConfig(input_size=UNET_SIZE, base_filters=8, depth=3, dropout=0.1)
    model = build_unet(config)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss=BCEDiceLoss())
    model.fit(x[:n_train], y[:n_train], batch_size=16, epochs=epochs, shuffle=True, verbose=0)
    val_probs = np.asarray(model.predict(x[n_train:], batch_size=32, verbose=0))
    val_iou = batch_mean_iou(val_probs, y[n_train:], 0.5)
    card, _ = save_segmentation_model(
        model,
        out_dir,
        config=config,
        preset=SegmentationPreset(UNET_SIZE),
        threshold=0.5,
        training={
            "data": "synthetic lesions (devtools.demo_models)",
            "train_images": n_train,
            "val_images": n_val,
            "epochs_run": epochs,
            "quick": quick,
            "backend": keras.backend.backend(),
            "minutes": round((time.perf_counter() - started) / 60, 2),
        },
        metrics={"val_mean_iou@0.5_synthetic": float(val_iou)},
        demo=True,
    )
    log.info("demo U-Net %s: synthetic val IoU %.3f in %.1f s", card.version, val_iou, time.perf_counter() - started)
    return card


def train_demo_classifier(out_dir: Path, *, quick: bool, seed: int = 0) -> ModelCard:
    """Fit a real torchvision ResNet50 (3 classes) on synthetic photos and save it with a demo card.

    Backpropagating through ResNet50 on two shared CPU cores takes minutes, so the demo keeps the
    randomly initialised body, sets its BatchNorm statistics from the training photos and fits only
    the 3-class head (multinomial logistic regression on the pooled features). The weight file
    and card are the same format as a fully trained model's.
    """
    import torch

    from ml.classification.calibration import fit_temperature, softmax
    from ml.classification.classifier import ARCHITECTURE, batch_logits, export_weights, init_model
    from ml.classification.crop import DEFAULT_MARGIN, crop_to_lesion
    from ml.classification.metrics import sensitivity_specificity, threshold_for_sensitivity
    from ml.classification.preprocess import IMAGENET_MEAN, IMAGENET_STD, Normalize, fit_to_input

    _, _, _, steps = _BUDGET[quick]
    n_train, n_val = _CLASSIFIER_IMAGES[quick]
    size = _CLASSIFIER_SIZE[quick]
    started = time.perf_counter()
    torch.manual_seed(seed)
    images, masks, labels = synthetic_set(n_train + n_val, seed=seed + 2)
    # The lesion crop (the U-Net's mask at inference): lesion colour then dominates the random features.
    crops = [crop_to_lesion(i, m, margin=DEFAULT_MARGIN) for i, m in zip(images, masks, strict=True)]
    x = np.stack([fit_to_input(c, size) for c in crops])
    x_train, y_train, x_val, y_val = x[:n_train], labels[:n_train], x[n_train:], labels[n_train:]
    normalize = Normalize(IMAGENET_MEAN, IMAGENET_STD)
    model = init_model("none")
    with torch.no_grad():
        # BatchNorm statistics from one batch of training photos.
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.reset_running_stats()
                module.momentum = None
        model.train()
        model(normalize(x_train[:64]))
        model.eval()
        head = model.fc
        model.fc = torch.nn.Identity()
        features = torch.cat([model(normalize(x_train[s : s + 64])) for s in range(0, n_train, 64)])
        model.fc = head
    # Standardise inside the head: fold the feature mean/std into its weights afterwards.
    mean, std = features.mean(0), features.std(0).clamp_min(1e-6)
    z = (features - mean) / std
    y = torch.as_tensor(y_train, dtype=torch.long)
    linear = torch.nn.Linear(z.shape[1], len(LABELS))
    optimizer = torch.optim.LBFGS(linear.parameters(), lr=0.5, max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(linear(z), y) + 1e-2 * linear.weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        head.weight.copy_(linear.weight / std)
        head.bias.copy_(linear.bias - (linear.weight * (mean / std)).sum(1))
    val_logits = batch_logits(model, x_val, normalize=normalize, device=torch.device("cpu"))
    temperature = fit_temperature(val_logits, y_val)
    val_probs = softmax(val_logits, temperature)
    is_mel = y_val == MEL_INDEX
    threshold = threshold_for_sensitivity(is_mel, val_probs[:, MEL_INDEX], 0.9)
    sens, spec = sensitivity_specificity(is_mel, val_probs[:, MEL_INDEX], threshold)
    accuracy = float((val_probs.argmax(1) == y_val).mean())
    weights, sha = export_weights(model.state_dict(), out_dir)
    card = ModelCard(
        kind="classifier",
        name=f"{ARCHITECTURE}-demo",
        weights_file=weights.name,
        weights_sha256=sha,
        input_size=list(size),
        architecture={
            "name": ARCHITECTURE,
            "num_classes": len(LABELS),
            "init": "none",
            "trained": "BatchNorm statistics and the fc head only (demo)",
        },
        preprocessing={
            "mean": list(IMAGENET_MEAN),
            "std": list(IMAGENET_STD),
            "color": "RGB",
            "resize": "centre-crop to the input aspect ratio, then resize (INTER_AREA when shrinking)",
            "input_variant": "crop",
            "crop_margin": DEFAULT_MARGIN,
            "crop_masks": "ground-truth masks in training; the U-Net's mask at inference",
        },
        labels=list(LABELS),
        temperature=float(temperature),
        operating_point={
            "mel_threshold": float(threshold),
            "target_sensitivity": 0.9,
            "val_sensitivity": float(sens),
            "val_specificity": float(spec),
        },
        training={
            "data": "synthetic lesions (devtools.demo_models)",
            "train_images": n_train,
            "val_images": n_val,
            "head_lbfgs_iterations": steps,
            "quick": quick,
            "minutes": round((time.perf_counter() - started) / 60, 2),
        },
        metrics={"val_accuracy_synthetic": accuracy},
        demo=True,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    card.save(out_dir / CLASSIFIER_CARD)
    log.info(
        "demo ResNet50 %s: synthetic val accuracy %.3f, T=%.2f, threshold %.3f in %.1f s",
        card.version,
        accuracy,
        temperature,
        threshold,
        time.perf_counter() - started,
    )
    return card


def ensure_demo_models(model_dir: Path, *, quick: bool = False) -> None:
    """Train and save demo models into model_dir unless their cards are already there (then do nothing)."""
    from ml.frameworks import load_torch_first

    load_torch_first()

    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    made: dict[str, Any] = {}
    if not (model_dir / SEGMENTATION_CARD).is_file():
        made["segmentation"] = train_demo_segmenter(model_dir, quick=quick).version
    if not (model_dir / CLASSIFIER_CARD).is_file():
        made["classifier"] = train_demo_classifier(model_dir, quick=quick).version
    if made:
        log.info("demo models written to %s: %s", model_dir, made)
