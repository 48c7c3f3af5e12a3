"""Model cards: the JSON written beside each weight file, read back (and checked) by the worker."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from skintriage.vocabulary import LABELS

SEGMENTATION_CARD = "segmentation.json"
CLASSIFIER_CARD = "classifier.json"


class ModelCardError(RuntimeError):
    """A model card is missing, malformed or does not match its weights."""


def sha256_file(path: Path) -> str:
    """Return the hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def name_by_hash(tmp: Path, out_dir: Path, stem: str) -> tuple[Path, str]:
    """Move a freshly written weights file to out_dir/<stem>-<sha12><suffix>; return (path, full SHA-256)."""
    digest = sha256_file(tmp)
    final = Path(out_dir) / f"{stem}-{digest[:12]}{tmp.suffix}"
    tmp.replace(final)
    return final, digest


@dataclass
class ModelCard:
    """What the worker needs to know to load and trust a model.

    kind: "segmentation" (Keras U-Net) or "classifier" (torch ResNet50).
    weights_file: path relative to the card's folder.
    input_size: [height, width] the network expects.
    labels: class order of the outputs (classifier only; must equal skintriage.vocabulary.LABELS).
    threshold: mask threshold (segmentation).
    temperature: calibration temperature (classifier).
    calibration: another calibrator that replaces the temperature when present (classifier), e.g.
        {"method": "matrix_scaling", "weight": [[...]], "bias": [...], ...} (ml.classification.calibration).
    operating_point: e.g. {"mel_threshold": 0.21, "target_sensitivity": 0.9, ...} (classifier), and the
        out-of-distribution check's ood_energy_threshold, ood_percentile, ood_val_images, ...
        (ml.classification.calibration).
    demo: True for the throw-away models `skintriage demo` trains; every reply says so.
    """

    kind: str
    name: str
    weights_file: str
    weights_sha256: str
    input_size: list[int]
    architecture: dict[str, Any] = field(default_factory=dict)
    preprocessing: dict[str, Any] = field(default_factory=dict)
    labels: list[str] = field(default_factory=list)
    threshold: float | None = None
    temperature: float | None = None
    calibration: dict[str, Any] | None = None
    operating_point: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    demo: bool = False
    created_at: str = ""

    @property
    def version(self) -> str:
        """Short, content-derived version string recorded with every case."""
        return f"{self.name}@{self.weights_sha256[:12]}"

    def save(self, path: Path) -> None:
        """Write the card as pretty JSON, atomically: a worker starting meanwhile reads the old or the new card."""
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2, sort_keys=True) + "\n")
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> ModelCard:
        """Read a card; raise ModelCardError with the path when it is missing or malformed."""
        if not path.is_file():
            raise ModelCardError(
                f"no model card at {path}; train a model (see README, 'Models') or run `skintriage demo`"
            )
        try:
            data = json.loads(path.read_text())
            return cls(**data)
        except (json.JSONDecodeError, TypeError) as exc:
            raise ModelCardError(f"model card {path} is malformed: {exc}") from exc

    def weights_path(self, card_path: Path) -> Path:
        """Absolute path of the weights named by this card."""
        return (card_path.parent / self.weights_file).resolve()

    def verify(self, card_path: Path) -> Path:
        """Check the weight file exists, matches its SHA-256 and (classifier) the pinned label order."""
        weights = self.weights_path(card_path)
        if not weights.is_file():
            raise ModelCardError(f"model card {card_path} names weights {weights}, which do not exist")
        actual = sha256_file(weights)
        if actual != self.weights_sha256:
            raise ModelCardError(
                f"weights {weights} have SHA-256 {actual[:16]}..., but card {card_path} expects "
                f"{self.weights_sha256[:16]}...; the file was changed or swapped - retrain or restore it"
            )
        if self.kind == "classifier" and tuple(self.labels) != LABELS:
            raise ModelCardError(f"classifier card {card_path} has label order {self.labels}, expected {list(LABELS)}")
        return weights
