"""HAM10000 in its official layout: the reader, lesion-grouped splits and the shared split CSV."""

from __future__ import annotations

import csv
import hashlib
import io
import logging
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ml.labels import DX_TO_LABEL, label_for_dx
from skintriage.vocabulary import LABELS

log = logging.getLogger(__name__)

METADATA_CSV = "HAM10000_metadata.csv"
IMAGE_DIRS = ("HAM10000_images_part_1", "HAM10000_images_part_2", "HAM10000_images")
MASK_DIR = "HAM10000_segmentations_lesion_tschandl"
MASK_SUFFIX = "_segmentation.png"
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
REQUIRED_COLUMNS = ("lesion_id", "image_id", "dx")
SPLITS = ("train", "val", "test")
SPLIT_COLUMNS = ("image_id", "lesion_id", "dx", "label", "split")


class DatasetError(ValueError):
    """The dataset folder or split file is broken; the message says what to fix."""


@dataclass(frozen=True)
class Sample:
    """One HAM10000 image with its lesion, diagnosis, 3-class label and files."""

    image_id: str
    lesion_id: str
    dx: str
    label: str
    image_path: Path
    mask_path: Path | None


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a dataset, with the file it concerns."""

    kind: str  # missing_image, missing_mask, unknown_dx, duplicate_image_id, size_mismatch, unreadable
    path: Path
    detail: str


def _index_images(root: Path) -> dict[str, Path]:
    """Map image_id to its file over the part folders, a single folder, or the root itself."""
    folders = [root / name for name in IMAGE_DIRS if (root / name).is_dir()] + [root]
    found: dict[str, Path] = {}
    for folder in folders:
        for path in folder.iterdir():
            if path.suffix.lower() in IMAGE_EXTENSIONS and path.is_file():
                found.setdefault(path.stem, path)
    return found


def _read_metadata(root: Path) -> list[dict[str, str]]:
    """Read HAM10000_metadata.csv, checking the columns the project needs."""
    if not root.is_dir():
        raise DatasetError(f"dataset folder {root} does not exist; pass the folder holding {METADATA_CSV}")
    meta = root / METADATA_CSV
    if not meta.is_file():
        raise DatasetError(
            f"{meta} not found; a HAM10000 folder holds {METADATA_CSV}, {IMAGE_DIRS[0]}/ "
            f"(and/or {IMAGE_DIRS[1]}/) and {MASK_DIR}/"
        )
    try:
        with open(meta, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            columns = reader.fieldnames or []
            missing = [c for c in REQUIRED_COLUMNS if c not in columns]
            if missing:
                raise DatasetError(
                    f"{meta} lacks column(s) {missing}; expected the official header "
                    "lesion_id,image_id,dx,dx_type,age,sex,localization"
                )
            return [{k: (v or "").strip() for k, v in row.items() if k} for row in reader]
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{meta} is not UTF-8 text: {exc}") from exc


def scan_ham10000(root: Path) -> tuple[list[Sample], list[Problem]]:
    """Read the dataset and collect every problem found without opening the images."""
    root = Path(root)
    rows = _read_metadata(root)
    images = _index_images(root)
    mask_dir = root / MASK_DIR
    masks = {p.name for p in mask_dir.iterdir()} if mask_dir.is_dir() else set()
    samples: list[Sample] = []
    problems: list[Problem] = []
    seen: set[str] = set()
    for line, row in enumerate(rows, start=2):
        image_id, lesion_id, dx = row["image_id"], row["lesion_id"], row["dx"].lower()
        meta = root / METADATA_CSV
        if not image_id or not lesion_id:
            problems.append(Problem("bad_row", meta, f"line {line}: empty image_id or lesion_id"))
            continue
        if image_id in seen:
            problems.append(Problem("duplicate_image_id", meta, f"line {line}: {image_id} listed twice"))
            continue
        seen.add(image_id)
        if dx not in DX_TO_LABEL:
            problems.append(Problem("unknown_dx", meta, f"line {line}: dx {dx!r} not one of {sorted(DX_TO_LABEL)}"))
            continue
        image_path = images.get(image_id)
        if image_path is None:
            problems.append(
                Problem("missing_image", root / IMAGE_DIRS[0] / f"{image_id}.jpg", f"no image for {image_id}")
            )
            continue
        mask_name = f"{image_id}{MASK_SUFFIX}"
        mask_path = mask_dir / mask_name if mask_name in masks else None
        if mask_path is None:
            problems.append(Problem("missing_mask", mask_dir / mask_name, f"no mask for {image_id}"))
        samples.append(Sample(image_id, lesion_id, dx, label_for_dx(dx), image_path, mask_path))
    return samples, problems


def read_ham10000(root: Path) -> list[Sample]:
    """Read a HAM10000 folder; raise DatasetError listing the problems when rows cannot be used.

    A missing mask is not an error here (the classifier needs none); such samples get
    mask_path=None and segmentation code refuses them with its own message.
    """
    samples, problems = scan_ham10000(root)
    fatal = [p for p in problems if p.kind != "missing_mask"]
    if fatal:
        shown = "\n".join(f"  {p.kind}: {p.path} ({p.detail})" for p in fatal[:10])
        more = f"\n  ... and {len(fatal) - 10} more" if len(fatal) > 10 else ""
        raise DatasetError(
            f"{len(fatal)} problem(s) in dataset {root}; run `skintriage data check {root}` "
            f"for the full list:\n{shown}{more}"
        )
    if not samples:
        raise DatasetError(f"dataset {root} lists no images in {METADATA_CSV}")
    return samples


def read_image_rgb(path: Path) -> np.ndarray:
    """Decode an image file as HxWx3 uint8 RGB; DatasetError when unreadable."""
    import cv2

    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise DatasetError(f"cannot decode image {path}; replace the file or drop its row from the metadata")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_mask(path: Path) -> np.ndarray:
    """Decode a lesion mask as HxW uint8 with values 0/1; DatasetError when unreadable."""
    import cv2

    mask = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if mask is None:
        raise DatasetError(f"cannot decode mask {path}; replace the file")
    return (mask > 127).astype(np.uint8)


def make_split(
    samples: list[Sample], *, seed: int = 42, val_frac: float = 0.15, test_frac: float = 0.15
) -> dict[str, list[Sample]]:
    """Split into train/val/test by lesion (no lesion in two splits), stratified by label, from a seed."""
    if not 0 < val_frac < 1 or not 0 < test_frac < 1 or val_frac + test_frac >= 1:
        raise ValueError(f"val_frac={val_frac} and test_frac={test_frac} must be in (0, 1) and sum below 1")
    by_lesion: dict[str, list[Sample]] = defaultdict(list)
    for s in samples:
        by_lesion[s.lesion_id].append(s)
    if len(by_lesion) < 3:
        raise DatasetError(f"need at least 3 lesions for a train/val/test split, got {len(by_lesion)}")
    # A lesion's stratum is its first image's label (HAM10000 gives one dx per lesion).
    strata: dict[str, list[str]] = defaultdict(list)
    for lesion_id in sorted(by_lesion):
        strata[by_lesion[lesion_id][0].label].append(lesion_id)
    rng = np.random.default_rng(seed)
    out: dict[str, list[Sample]] = {name: [] for name in SPLITS}
    for label in sorted(strata, key=lambda x: LABELS.index(x) if x in LABELS else len(LABELS)):
        lesions = strata[label]
        order = rng.permutation(len(lesions))
        total = sum(len(by_lesion[lesion]) for lesion in lesions)
        target = {"test": test_frac * total, "val": val_frac * total}
        count = {"test": 0, "val": 0}
        for idx in order:
            group = by_lesion[lesions[idx]]
            # Fill test, then val, up to their image quota; the rest trains.
            name = next((n for n in ("test", "val") if count[n] + len(group) / 2 <= target[n]), "train")
            if name != "train":
                count[name] += len(group)
            out[name].extend(group)
    for name in SPLITS:
        out[name].sort(key=lambda s: s.image_id)
    empty = [name for name in SPLITS if not out[name]]
    if empty:
        raise DatasetError(f"split(s) {empty} came out empty; the dataset ({len(samples)} images) is too small")
    return out


def _render_split_csv(split: dict[str, list[Sample]]) -> str:
    """The exact CSV text for a split (fixed order and line endings, so its hash is stable)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(SPLIT_COLUMNS)
    for name in SPLITS:
        for s in sorted(split.get(name, []), key=lambda s: s.image_id):
            writer.writerow((s.image_id, s.lesion_id, s.dx, s.label, name))
    return buf.getvalue()


def _hash_text(text: str) -> str:
    """First 16 hex digits of the SHA-256 of a text."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def write_split_csv(split: dict[str, list[Sample]], path: Path) -> str:
    """Write the split CSV (image_id, lesion_id, dx, label, split) and return its hash."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = _render_split_csv(split)
    path.write_bytes(text.encode("utf-8"))
    return _hash_text(text)


def split_hash(path: Path) -> str:
    """SHA-256 of the split CSV's content, first 16 hex digits."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def read_split_csv(path: Path, root: Path) -> dict[str, list[Sample]]:
    """Read a split CSV back into Samples of the dataset at root; refuse splits that do not fit it."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"split file {path} not found; pass an existing split CSV, or a new path to create one")
    by_id = {s.image_id: s for s in read_ham10000(root)}
    out: dict[str, list[Sample]] = {name: [] for name in SPLITS}
    lesion_split: dict[str, str] = {}
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames or not {"image_id", "split"} <= set(reader.fieldnames):
            raise DatasetError(f"{path} is not a split CSV; expected columns {list(SPLIT_COLUMNS)}")
        for line, row in enumerate(reader, start=2):
            name = row["split"]
            if name not in out:
                raise DatasetError(f"{path} line {line}: split {name!r} is not one of {list(SPLITS)}")
            sample = by_id.get(row["image_id"])
            if sample is None:
                raise DatasetError(
                    f"{path} line {line}: image {row['image_id']} is not in dataset {root}; "
                    "the split belongs to another dataset - pass the matching --data or a new split file"
                )
            previous = lesion_split.setdefault(sample.lesion_id, name)
            if previous != name:
                raise DatasetError(
                    f"{path}: lesion {sample.lesion_id} is in both {previous} and {name}; "
                    "that leaks test images into training - regenerate the split"
                )
            out[name].append(sample)
    return out


def load_or_make_split(root: Path, split_csv: Path | None, *, seed: int = 42) -> tuple[dict[str, list[Sample]], str]:
    """Read the split CSV if it exists, else make one from the seed (and write it if a path is given)."""
    if split_csv is not None and Path(split_csv).is_file():
        split = read_split_csv(Path(split_csv), Path(root))
        digest = split_hash(Path(split_csv))
        log.info("using split %s (hash %s)", split_csv, digest)
        return split, digest
    split = make_split(read_ham10000(Path(root)), seed=seed)
    if split_csv is not None:
        digest = write_split_csv(split, Path(split_csv))
        log.info("wrote new split %s (seed %d, hash %s)", split_csv, seed, digest)
    else:
        digest = _hash_text(_render_split_csv(split))
    return split, digest
