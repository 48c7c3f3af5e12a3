"""`skintriage ship-models`: copy trained models into the repository's `models/` in their compact form.

Classifier weights become float16 safetensors, the U-Net's weights float16 safetensors without its
optimizer or graph (rebuilt from the card), the modality arrays are copied. Each card keeps its metrics,
training record and split hash, gets the new weights' SHA-256 and notes what it was compacted from.
Scores of the compact copy must be measured again (`evaluate-classifier`, `evaluate-segmentation`):
float16 rounding moves probabilities slightly.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

from ml.modelcard import (
    CLASSIFIER_CARD,
    SEGMENTATION_CARD,
    ModelCard,
    ModelCardError,
    name_by_hash,
)
from ml.triage.modality import MODALITY_CARD

log = logging.getLogger(__name__)

CARDS = {"classifier": CLASSIFIER_CARD, "segmentation": SEGMENTATION_CARD, "modality": MODALITY_CARD}
SHIPPED_DIR = Path(__file__).resolve().parents[1] / "models"
MAX_SHIPPED_MB = 60.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register the ship-models flags."""
    parser.add_argument("cards", nargs="+", type=Path, help="model cards to ship (classifier, segmentation, modality)")
    parser.add_argument("--out", type=Path, default=SHIPPED_DIR, help="the shipped model folder (default: models/)")


def _compact_weights(card: ModelCard, card_path: Path, weights: Path, out: Path) -> tuple[Path, str]:
    """Write the compact weights of one model into out; return the file (named by its SHA-256) and the hash."""
    if card.kind == "classifier":
        from ml.classification.classifier import ARCHITECTURE, export_weights, load_state_file

        arch = str(card.architecture.get("name", ARCHITECTURE))
        return export_weights(load_state_file(weights), out, arch=arch, fp16=True)
    with tempfile.TemporaryDirectory(dir=out) as tmp_dir:
        if card.kind == "segmentation":
            from ml.segmentation.unet import Segmenter, save_compact_weights

            tmp = Path(tmp_dir) / "unet.safetensors"
            save_compact_weights(Segmenter.from_card(card_path).model, tmp)
        else:
            tmp = Path(tmp_dir) / "modality.npz"
            shutil.copyfile(weights, tmp)
        return name_by_hash(tmp, out, tmp.stem)


def ship(card_path: Path, out: Path) -> Path:
    """Ship one carded model into out: compact weights, updated card; remove the weights it replaces."""
    card = ModelCard.load(card_path)
    if card.kind not in CARDS:
        raise ModelCardError(f"{card_path} is a {card.kind!r} card; ship-models takes {sorted(CARDS)} cards")
    if card.demo:
        raise ModelCardError(f"{card_path} is a demo model (synthetic images); demo models are never shipped")
    weights = card.verify(card_path)
    out.mkdir(parents=True, exist_ok=True)
    previous = out / CARDS[card.kind]
    old_weights = ModelCard.load(previous).weights_path(previous) if previous.is_file() else None
    path, digest = _compact_weights(card, card_path, weights, out)
    path.chmod(0o644)  # temporary files are private; a container's unprivileged user must read the shipped ones
    training = {
        **card.training,
        "compacted_from": {"weights_file": card.weights_file, "weights_sha256": card.weights_sha256},
    }
    shipped = replace(card, weights_file=path.name, weights_sha256=digest, training=training)
    shipped.save(out / CARDS[card.kind])
    if old_weights is not None and old_weights.resolve() != path.resolve() and old_weights.is_file():
        old_weights.unlink()
    log.info("shipped %s as %s (%.1f MB)", card.version, shipped.version, path.stat().st_size / 1e6)
    return out / CARDS[card.kind]


def shipped_megabytes(folder: Path) -> float:
    """Size of every weights file named by a card in folder."""
    total = 0
    for name in CARDS.values():
        if (folder / name).is_file():
            card = ModelCard.load(folder / name)
            total += card.weights_path(folder / name).stat().st_size
    return total / 1e6


def main(args: argparse.Namespace) -> int:
    """Ship each card; refuse to leave the folder above the size budget."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        for card in args.cards:
            print(f"shipped {ship(card, args.out)}")
    except ModelCardError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    size = shipped_megabytes(args.out)
    print(f"weights in {args.out}: {size:.1f} MB (budget {MAX_SHIPPED_MB:g} MB)")
    return 0 if size <= MAX_SHIPPED_MB else 3


if __name__ == "__main__":
    _parser = argparse.ArgumentParser(prog="skintriage ship-models", description=__doc__)
    add_arguments(_parser)
    sys.exit(main(_parser.parse_args()))
