"""`skintriage train-segmentation`: train the U-Net on HAM10000 and write its weights and model card."""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ml.data.ham10000 import DatasetError, Sample, load_or_make_split, read_image_rgb, read_mask
from ml.errors import WeightsUnavailableError
from ml.segmentation.preprocess import SegmentationAugment, SegmentationPreset

log = logging.getLogger(__name__)

THRESHOLD_CANDIDATES = (0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7)


DEFAULT_INPUT_SIZE = (448, 592)  # the study's size; the CPU profile passes --input-size 128x160


def parse_size(text: str) -> tuple[int, int]:
    """Parse 'HxW' (e.g. 128x160) into (height, width)."""
    try:
        h, w = (int(part) for part in text.lower().split("x"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected HEIGHTxWIDTH such as 128x160, got {text!r}") from exc
    return h, w


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `skintriage train-segmentation`; defaults are the study's reference profile."""
    parser.add_argument("--data", type=Path, required=True, help="HAM10000 folder (official layout)")
    parser.add_argument("--out", type=Path, default=Path("models"), help="MODEL_DIR for weights + card")
    parser.add_argument("--run-dir", type=Path, default=Path("runs/seg"), help="checkpoints, cache, state")
    parser.add_argument("--split", type=Path, default=Path("runs/split.csv"), help="split CSV (made if absent)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--input-size",
        type=parse_size,
        default=None,
        help="HxW, divisible by 2**depth (default 448x592, or the --init-from card's size)",
    )
    parser.add_argument("--base-filters", type=int, default=16)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--dropout", type=float, default=0.3)
    parser.add_argument("--batch-norm", action="store_true", help="BatchNormalization after each Conv2D")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--lr", type=float, default=1e-3, help="peak Adam learning rate")
    parser.add_argument("--min-lr-frac", type=float, default=0.02, help="cosine schedule ends at lr*this")
    parser.add_argument("--patience", type=int, default=8, help="epochs without val IoU gain before stopping")
    parser.add_argument("--max-minutes", type=float, default=None, help="training time budget (stops cleanly)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for the backend")
    parser.add_argument("--hair-removal", action="store_true", help="DullRazor hair removal before resizing")
    parser.add_argument("--no-augment", action="store_true")
    parser.add_argument("--limit", type=int, default=None, help="use at most N train and N val images")
    parser.add_argument("--no-resume", action="store_true", help="start over even if run-dir has a run")
    parser.add_argument(
        "--init-from",
        type=Path,
        default=None,
        help="a segmentation card (e.g. the shipped models/segmentation.json): start from its verified "
        "weights and U-Net shape, so CPU time spent in an earlier run is not lost; --input-size may "
        "differ from the card's (the U-Net is fully convolutional)",
    )
    parser.add_argument("--threshold", type=float, default=None, help="fix the mask threshold (default: tune)")
    parser.add_argument(
        "--tta",
        choices=("auto", "on", "off"),
        default="auto",
        help="flip test-time augmentation at inference; auto keeps it if it helps on validation",
    )


def resolve_init(args: argparse.Namespace) -> Path | None:
    """--init-from CARD: verify the card's weights, take its U-Net shape into args; the weights file or None."""
    if args.init_from is None:
        return None
    from ml.modelcard import ModelCard, ModelCardError
    from ml.segmentation.unet import config_from_card

    try:
        card = ModelCard.load(args.init_from)
        weights = card.verify(args.init_from)
    except ModelCardError as exc:
        raise WeightsUnavailableError(f"--init-from {args.init_from}: {exc}") from exc
    if card.kind != "segmentation":
        raise WeightsUnavailableError(f"--init-from {args.init_from} is a {card.kind!r} card, not a segmentation card")
    if Path(weights).suffix != ".safetensors":
        raise WeightsUnavailableError(
            f"--init-from {args.init_from}: {Path(weights).name} is not compact weights; ship the model first"
        )
    config = config_from_card(card)
    args.base_filters, args.depth, args.batch_norm = config.base_filters, config.depth, config.batch_norm
    args.dropout = config.dropout
    if args.input_size is None:
        args.input_size = config.input_size
    log.info("starting from %s (%s)", card.version, weights)
    return Path(weights)


def configure_runtime(threads: int | None, *, mixed_precision: bool = True) -> None:
    """Limit CPU threads before the backend starts; use mixed precision only on a GPU (and if asked)."""
    import keras

    backend = keras.backend.backend()
    if threads:
        if backend == "tensorflow":
            import tensorflow as tf

            try:
                tf.config.threading.set_intra_op_parallelism_threads(threads)
                tf.config.threading.set_inter_op_parallelism_threads(1)
            except RuntimeError:
                # TensorFlow fixes its pools at the first op; a second call in one process keeps them.
                log.warning("TensorFlow already started; keeping its thread settings")
        elif backend == "torch":
            import torch

            torch.set_num_threads(threads)
    if mixed_precision and _has_gpu(backend):
        keras.mixed_precision.set_global_policy("mixed_float16")
        log.info("GPU found: mixed_float16 policy")


def _has_gpu(backend: str) -> bool:
    """Whether the active Keras backend sees a GPU."""
    if backend == "tensorflow":
        import tensorflow as tf

        return bool(tf.config.list_physical_devices("GPU"))
    if backend == "torch":
        import torch

        return torch.cuda.is_available()
    return False


def cache_arrays(
    samples: list[Sample], preset: SegmentationPreset, path_stem: Path, *, progress: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Resized uint8 images and 0/1 masks as .npy files under the run dir (built once, then memory-mapped)."""
    ids = "\n".join(s.image_id for s in samples)
    meta_path = path_stem.with_suffix(".json")
    images_path = path_stem.parent / f"{path_stem.name}-images.npy"
    masks_path = path_stem.parent / f"{path_stem.name}-masks.npy"
    key = {"ids": ids, "preset": preset.describe(), "size": list(preset.input_size)}
    fresh = meta_path.is_file() and images_path.is_file() and masks_path.is_file()
    if fresh and json.loads(meta_path.read_text()) == key:
        return np.load(images_path, mmap_mode="r"), np.load(masks_path, mmap_mode="r")
    missing = [s.image_id for s in samples if s.mask_path is None]
    if missing:
        raise DatasetError(
            f"{len(missing)} image(s) have no lesion mask (e.g. {missing[:3]}); segmentation training needs "
            "one per image - run `skintriage data check` and restore the masks"
        )
    from tqdm import tqdm

    h, w = preset.input_size
    images = np.zeros((len(samples), h, w, 3), np.uint8)
    masks = np.zeros((len(samples), h, w), np.uint8)
    for i, s in enumerate(tqdm(samples, desc=f"cache {path_stem.name}", disable=not progress, mininterval=10)):
        image = read_image_rgb(s.image_path)
        mask = read_mask(s.mask_path)  # type: ignore[arg-type]
        if image.shape[:2] != mask.shape:
            raise DatasetError(f"{s.image_path} is {image.shape[:2]} but its mask {s.mask_path} is {mask.shape}")
        images[i] = preset(image).round().astype(np.uint8) if preset.hair_removal else preset.resize(image)
        masks[i] = preset.resize_mask(mask)
    path_stem.parent.mkdir(parents=True, exist_ok=True)
    np.save(images_path, images)
    np.save(masks_path, masks)
    meta_path.write_text(json.dumps(key))
    return images, masks


def make_sequence(images, masks, *, batch_size: int, augment: SegmentationAugment | None, seed: int):
    """A keras PyDataset over cached arrays that shuffles each epoch and augments on the fly."""
    import keras

    class SegmentationSequence(keras.utils.PyDataset):
        """Batches of (float32 0-255 images, float32 0/1 masks with a channel axis)."""

        def __init__(self) -> None:
            super().__init__()
            self._rng = np.random.default_rng(seed)
            self._order = self._rng.permutation(len(images))

        def __len__(self) -> int:
            return math.ceil(len(images) / batch_size)

        def __getitem__(self, index: int):
            idx = np.sort(self._order[index * batch_size : (index + 1) * batch_size])
            xb, yb = np.asarray(images[idx]), np.asarray(masks[idx])
            if augment is not None:
                pairs = [augment(x, y) for x, y in zip(xb, yb, strict=True)]
                xb = np.stack([p[0] for p in pairs])
                yb = np.stack([p[1] for p in pairs])
            return xb.astype(np.float32), yb[..., None].astype(np.float32)

        def on_epoch_end(self) -> None:
            self._order = self._rng.permutation(len(images))

    return SegmentationSequence()


@dataclass
class RunState:
    """What survives between resumed runs: progress, best score and time already spent."""

    epoch: int = 0
    best_val_iou: float = -1.0
    best_epoch: int = -1
    wait: int = 0
    elapsed_s: float = 0.0
    history: list[dict[str, float]] | None = None

    @classmethod
    def load(cls, path: Path) -> RunState:
        """Read state.json, or a fresh state when there is none."""
        return cls(**json.loads(path.read_text())) if path.is_file() else cls(history=[])

    def save(self, path: Path) -> None:
        """Write state.json atomically."""
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.__dict__, indent=1))
        tmp.replace(path)


def make_callbacks(
    *, args: argparse.Namespace, state: RunState, run_dir: Path, val_images, val_masks, steps_per_epoch: int
):
    """Cosine LR by progress (epochs or time budget), val IoU checkpointing, early stopping, time stop."""
    import keras

    from ml.segmentation.metrics import batch_mean_iou

    budget_s = args.max_minutes * 60 if args.max_minutes else None

    class TrainingControl(keras.callbacks.Callback):
        """Sets the learning rate each batch and judges each epoch on validation IoU."""

        def __init__(self) -> None:
            super().__init__()
            self._session_start = time.monotonic()
            self._elapsed_before = state.elapsed_s
            self._epoch_start = time.monotonic()
            self._last_epoch_s = 0.0

        def _elapsed(self) -> float:
            return self._elapsed_before + time.monotonic() - self._session_start

        def on_epoch_begin(self, epoch, logs=None):
            self._epoch_start = time.monotonic()

        def on_train_batch_begin(self, batch, logs=None):
            progress = (state.epoch * steps_per_epoch + batch) / (args.epochs * steps_per_epoch)
            if budget_s:
                progress = max(progress, self._elapsed() / budget_s)
            progress = min(progress, 1.0)
            floor = args.lr * args.min_lr_frac
            lr = floor + 0.5 * (args.lr - floor) * (1 + math.cos(math.pi * progress))
            self.model.optimizer.learning_rate.assign(lr)
            if budget_s and self._elapsed() > budget_s:
                self.model.stop_training = True

        def on_epoch_end(self, epoch, logs=None):
            logs = logs if logs is not None else {}
            probs = self.model.predict(np.asarray(val_images, dtype=np.float32), batch_size=32, verbose=0)
            val_iou = batch_mean_iou(probs, val_masks, threshold=0.5)
            logs["val_iou"] = val_iou
            state.epoch = epoch + 1
            state.elapsed_s = self._elapsed()
            self._last_epoch_s = time.monotonic() - self._epoch_start
            lr = float(np.asarray(self.model.optimizer.learning_rate))
            row = {
                "epoch": epoch + 1,
                "loss": float(logs.get("loss", float("nan"))),
                "val_iou": val_iou,
                "lr": lr,
                "minutes": state.elapsed_s / 60,
            }
            state.history = [*(state.history or []), row]
            improved = val_iou > state.best_val_iou
            if improved:
                state.best_val_iou, state.best_epoch, state.wait = val_iou, epoch + 1, 0
                self.model.save(run_dir / "best.keras")
            else:
                state.wait += 1
            self.model.save(run_dir / "last.keras")
            state.save(run_dir / "state.json")
            log.info(
                "epoch %d loss %.4f val_iou@0.5 %.4f%s lr %.2e %.1f min",
                epoch + 1,
                row["loss"],
                val_iou,
                " (best)" if improved else "",
                lr,
                row["minutes"],
            )
            if state.wait >= args.patience:
                log.info("early stop: no val IoU gain for %d epochs", args.patience)
                self.model.stop_training = True
            if budget_s and state.elapsed_s + self._last_epoch_s > budget_s:
                log.info("time budget: another epoch would pass %.0f min; stopping", args.max_minutes)
                self.model.stop_training = True

    return [TrainingControl()]


def tune_threshold(
    probs_small: np.ndarray, samples: list[Sample], *, candidates=THRESHOLD_CANDIDATES, fixed: float | None = None
) -> tuple[float, dict[str, float]]:
    """Pick the threshold with the best thresholded Jaccard on full-resolution validation masks (or use fixed)."""
    import cv2

    from ml.segmentation.metrics import ISIC_JACCARD_FLOOR, iou

    scores = {t: [] for t in candidates}
    for prob, s in zip(probs_small, samples, strict=True):
        true = read_mask(s.mask_path)  # type: ignore[arg-type]
        full = cv2.resize(prob, (true.shape[1], true.shape[0]), interpolation=cv2.INTER_LINEAR)
        for t in candidates:
            scores[t].append(iou(full >= t, true))
    summary = {}
    for t, values in scores.items():
        arr = np.asarray(values)
        summary[f"{t:g}"] = float(np.where(arr >= ISIC_JACCARD_FLOOR, arr, 0).mean())
    best = fixed if fixed is not None else max(candidates, key=lambda t: (summary[f"{t:g}"], -abs(t - 0.5)))
    metrics = {f"val_mean_iou@{t:g}": float(np.mean(scores[t])) for t in sorted({*candidates} & {0.4, 0.5, best})}
    return float(best), {
        "val_thresholded_jaccard_by_threshold": summary,
        "val_best_thresholded_jaccard": summary[f"{best:g}"],
        **metrics,
    }


def train(args: argparse.Namespace) -> dict[str, Any]:
    """Run (or resume) a training and save the best model with its card; return the card as a dict."""
    configure_runtime(args.threads)
    import keras

    from ml.segmentation.losses import BCEDiceLoss
    from ml.segmentation.unet import (
        UNetConfig,
        build_unet,
        check_input_size,
        predict_small,
        save_segmentation_model,
        set_compact_weights,
    )

    keras.utils.set_random_seed(args.seed)
    init_weights = resolve_init(args)
    if args.input_size is None:
        args.input_size = DEFAULT_INPUT_SIZE
    config = UNetConfig(tuple(args.input_size), args.base_filters, args.depth, args.dropout, args.batch_norm)
    check_input_size(config.input_size, config.depth)
    split, digest = load_or_make_split(args.data, args.split, seed=args.seed)
    train_samples, val_samples = split["train"], split["val"]
    if args.limit:
        train_samples, val_samples = train_samples[: args.limit], val_samples[: args.limit]
    preset = SegmentationPreset(config.input_size, hair_removal=args.hair_removal)
    run_dir = Path(args.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    tag = f"{config.input_size[0]}x{config.input_size[1]}{'-hair' if args.hair_removal else ''}"
    progress = sys.stderr.isatty()
    x_train, y_train = cache_arrays(train_samples, preset, run_dir / "cache" / f"train-{tag}", progress=True)
    x_val, y_val = cache_arrays(val_samples, preset, run_dir / "cache" / f"val-{tag}", progress=True)
    log.info("train %d images, val %d images at %s (split %s)", len(x_train), len(x_val), tag, digest)

    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "func"}
    settings["input_size"] = list(config.input_size)
    state_path, last_path = run_dir / "state.json", run_dir / "last.keras"
    state = RunState(history=[])
    if not args.no_resume and last_path.is_file() and state_path.is_file():
        saved = json.loads((run_dir / "settings.json").read_text()) if (run_dir / "settings.json").is_file() else {}
        keys = ("input_size", "base_filters", "depth", "dropout", "batch_norm", "hair_removal", "split")
        changed = [k for k in keys if saved.get(k) != settings.get(k)]
        if changed:
            raise ValueError(
                f"run dir {run_dir} holds a run with different {changed}; pass --no-resume to start over "
                "or a new --run-dir"
            )
        state = RunState.load(state_path)
        model = keras.saving.load_model(last_path)
        log.info("resuming from %s at epoch %d (best val IoU %.4f)", last_path, state.epoch, state.best_val_iou)
    else:
        model = build_unet(config)
        if init_weights is not None:
            set_compact_weights(model, init_weights)
        model.compile(optimizer=keras.optimizers.Adam(args.lr), loss=BCEDiceLoss())
    (run_dir / "settings.json").write_text(json.dumps(settings, indent=1))

    steps = math.ceil(len(x_train) / args.batch_size)
    augment = None if args.no_augment else SegmentationAugment(seed=args.seed + state.epoch)
    sequence = make_sequence(
        x_train, y_train, batch_size=args.batch_size, augment=augment, seed=args.seed + state.epoch
    )
    callbacks = make_callbacks(
        args=args, state=state, run_dir=run_dir, val_images=x_val, val_masks=y_val, steps_per_epoch=steps
    )
    budget_left = args.max_minutes is None or state.elapsed_s < args.max_minutes * 60
    if state.epoch < args.epochs and state.wait < args.patience and budget_left:
        model.fit(
            sequence, epochs=args.epochs, initial_epoch=state.epoch, callbacks=callbacks, verbose=1 if progress else 2
        )
    best_path = run_dir / "best.keras"
    if not best_path.is_file():
        raise RuntimeError(f"no checkpoint in {run_dir}; training ran no full epoch - raise --max-minutes")
    best = keras.saving.load_model(best_path, compile=False)

    candidates = THRESHOLD_CANDIDATES if args.threshold is None else tuple(sorted({args.threshold, 0.4, 0.5}))
    options = {"off": [False], "on": [True], "auto": [False, True]}[args.tta]
    tuned = {}
    for tta in options:
        probs = np.concatenate([predict_small(best, x_val[i : i + 32], tta=tta) for i in range(0, len(x_val), 32)])
        tuned[tta] = tune_threshold(probs, val_samples, candidates=candidates, fixed=args.threshold)
    # Flips cost four passes; keep them only for a real gain on validation.
    use_tta = len(tuned) == 2 and (
        tuned[True][1]["val_best_thresholded_jaccard"] > tuned[False][1]["val_best_thresholded_jaccard"] + 0.002
    )
    if len(tuned) == 2:
        log.info(
            "val thresholded Jaccard without/with flip TTA: %.4f / %.4f",
            tuned[False][1]["val_best_thresholded_jaccard"],
            tuned[True][1]["val_best_thresholded_jaccard"],
        )
    use_tta = use_tta or args.tta == "on"
    threshold, val_metrics = tuned[use_tta]
    preset = SegmentationPreset(config.input_size, hair_removal=args.hair_removal, tta=use_tta)
    log.info("threshold %.2f; val %s", threshold, val_metrics)
    training = {
        "data": str(args.data),
        "split_csv": str(args.split),
        "split_hash": digest,
        "train_images": len(x_train),
        "val_images": len(x_val),
        "epochs_run": state.epoch,
        "best_epoch": state.best_epoch,
        "minutes": round(state.elapsed_s / 60, 1),
        "optimizer": f"Adam(lr={args.lr}) cosine to {args.lr * args.min_lr_frac:g}",
        "loss": "BCE + soft Dice",
        "augmentation": None if args.no_augment else {**asdict(SegmentationAugment()), "flips": "h+v"},
        "backend": keras.backend.backend(),
        "keras": keras.__version__,
        "settings": settings,
        "history": state.history,
    }
    metrics = {"val_best_iou@0.5_train_res": state.best_val_iou, **val_metrics}
    card, card_path = save_segmentation_model(
        best, args.out, config=config, preset=preset, threshold=threshold, training=training, metrics=metrics
    )
    print(f"wrote {card_path} ({card.version}); threshold {threshold:g}; val {json.dumps(val_metrics)}")
    return card.__dict__


def main(args: argparse.Namespace) -> int:
    """Entry point of `skintriage train-segmentation`."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        train(args)
    except (DatasetError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    _parser = argparse.ArgumentParser(prog="skintriage train-segmentation", description=__doc__)
    add_arguments(_parser)
    sys.exit(main(_parser.parse_args()))
