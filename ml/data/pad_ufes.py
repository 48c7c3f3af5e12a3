"""PAD-UFES-20 smartphone photos (clinical, not dermoscopic): the reader and a patient-grouped split.

The split is a pure function of the patient id (a hash), so it never needs a file, every patient's
photos land together, and a photo added later keeps its patient's side.
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass
from pathlib import Path

from ml.data.ham10000 import DatasetError
from skintriage.vocabulary import LABELS

PAD_METADATA = "metadata.csv"
PAD_IMAGES = "images"
# Patient-reported answers of PAD-UFES-20, as the conversation may ask them.
PAD_SYMPTOMS = ("itch", "grew", "hurt", "changed", "bleed", "elevation")


@dataclass(frozen=True)
class PadSample:
    """One PAD-UFES-20 photo with its 3-class label, patient, lesion and what the patient reported."""

    file: str
    label: str
    patient_id: str
    lesion_id: str
    diagnostic: str
    region: str
    age: int | None
    symptoms: dict[str, bool | None]
    image_path: Path

    @property
    def split(self) -> str:
        """train, val or test by a hash of the patient id (60/20/20)."""
        return pad_split(self.patient_id)


def pad_split(patient_id: str) -> str:
    """The split of a patient: stable, patient-grouped, 60 % train, 20 % val, 20 % test."""
    bucket = int(hashlib.sha256(patient_id.encode()).hexdigest()[:8], 16) % 10
    return "train" if bucket < 6 else "val" if bucket < 8 else "test"


def _flag(text: str) -> bool | None:
    value = (text or "").strip().lower()
    return {"true": True, "false": False}.get(value)


def read_pad(root: Path) -> list[PadSample]:
    """Read a PAD-UFES-20 folder (metadata.csv + images/); DatasetError says what is missing."""
    root = Path(root)
    meta = root / PAD_METADATA
    if not meta.is_file():
        raise DatasetError(f"{meta} not found; a PAD-UFES-20 folder holds {PAD_METADATA} and {PAD_IMAGES}/")
    samples = []
    with open(meta, newline="", encoding="utf-8") as fh:
        for line, row in enumerate(csv.DictReader(fh), start=2):
            label = (row.get("label3") or "").strip()
            if label not in LABELS:
                raise DatasetError(f"{meta} line {line}: label3 {label!r} is not one of {list(LABELS)}")
            path = root / PAD_IMAGES / row["file"]
            if not path.is_file():
                raise DatasetError(f"{meta} line {line}: image {path} is missing")
            age = (row.get("age") or "").strip()
            samples.append(
                PadSample(
                    file=row["file"],
                    label=label,
                    patient_id=row["patient_id"],
                    lesion_id=row["lesion_id"],
                    diagnostic=row.get("diagnostic", ""),
                    region=row.get("region", ""),
                    age=int(float(age)) if age else None,
                    symptoms={k: _flag(row.get(k, "")) for k in PAD_SYMPTOMS},
                    image_path=path,
                )
            )
    if not samples:
        raise DatasetError(f"{meta} lists no photos")
    return samples
