"""HAM10000 reader, lesion-grouped splits and the split CSV."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest

from ml.data.ham10000 import (
    DatasetError,
    load_or_make_split,
    make_split,
    read_ham10000,
    read_split_csv,
    scan_ham10000,
    split_hash,
    write_split_csv,
)


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_reader_finds_every_image_and_mask_across_part_folders(synthetic_ham):
    samples = read_ham10000(synthetic_ham)
    with open(synthetic_ham / "HAM10000_metadata.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(samples) == len(rows)
    assert {s.image_path.parent.name for s in samples} == {"HAM10000_images_part_1", "HAM10000_images_part_2"}
    assert all(s.mask_path is not None and s.mask_path.is_file() for s in samples)
    by_dx = {s.dx: s.label for s in samples}
    assert by_dx["mel"] == "MEL" and by_dx["nv"] == "NV" and by_dx["bcc"] == "OTHER"


def test_reader_accepts_single_image_folder(synthetic_ham, tmp_path):
    root = _copy(synthetic_ham, tmp_path / "ham")
    single = root / "HAM10000_images"
    single.mkdir()
    for part in ("HAM10000_images_part_1", "HAM10000_images_part_2"):
        for f in (root / part).iterdir():
            f.rename(single / f.name)
        (root / part).rmdir()
    assert len(read_ham10000(root)) == len(read_ham10000(synthetic_ham))


def test_missing_metadata_raises_dataset_error_naming_the_file(tmp_path):
    with pytest.raises(DatasetError, match="HAM10000_metadata.csv"):
        read_ham10000(tmp_path)


def test_missing_image_raises_dataset_error_with_its_id(synthetic_ham, tmp_path):
    root = _copy(synthetic_ham, tmp_path / "ham")
    victim = next((root / "HAM10000_images_part_1").iterdir())
    victim.unlink()
    with pytest.raises(DatasetError, match=victim.stem):
        read_ham10000(root)


def test_unknown_dx_raises_dataset_error(synthetic_ham, tmp_path):
    root = _copy(synthetic_ham, tmp_path / "ham")
    meta = root / "HAM10000_metadata.csv"
    meta.write_text(meta.read_text().replace(",mel,", ",melanoma?,", 1))
    with pytest.raises(DatasetError, match="melanoma"):
        read_ham10000(root)


def test_missing_mask_is_reported_but_sample_kept_without_mask(synthetic_ham, tmp_path):
    root = _copy(synthetic_ham, tmp_path / "ham")
    victim = next((root / "HAM10000_segmentations_lesion_tschandl").iterdir())
    victim.unlink()
    samples, problems = scan_ham10000(root)
    assert [p.kind for p in problems] == ["missing_mask"]
    assert problems[0].path == victim
    assert sum(s.mask_path is None for s in samples) == 1


def test_split_has_no_lesion_in_two_parts_and_covers_all_images(synthetic_ham):
    samples = read_ham10000(synthetic_ham)
    split = make_split(samples, seed=3)
    lesions = {name: {s.lesion_id for s in part} for name, part in split.items()}
    assert not lesions["train"] & lesions["val"]
    assert not lesions["train"] & lesions["test"]
    assert not lesions["val"] & lesions["test"]
    assert sorted(s.image_id for part in split.values() for s in part) == sorted(s.image_id for s in samples)
    assert all(split[name] for name in ("train", "val", "test"))


def test_split_is_stratified_each_label_in_training(synthetic_ham):
    split = make_split(read_ham10000(synthetic_ham), seed=42)
    assert {s.label for s in split["train"]} == {"MEL", "NV", "OTHER"}
    assert {s.label for s in split["test"]} == {"MEL", "NV", "OTHER"}


def test_split_is_reproducible_from_seed_and_changes_with_it(synthetic_ham):
    samples = read_ham10000(synthetic_ham)
    ids = lambda split: {k: [s.image_id for s in v] for k, v in split.items()}  # noqa: E731
    assert ids(make_split(samples, seed=7)) == ids(make_split(samples, seed=7))
    assert ids(make_split(samples, seed=7)) != ids(make_split(samples, seed=8))


def test_split_csv_round_trips_and_hash_matches_file(synthetic_ham, tmp_path):
    split = make_split(read_ham10000(synthetic_ham))
    path = tmp_path / "split.csv"
    digest = write_split_csv(split, path)
    assert digest == split_hash(path) and len(digest) == 16
    back = read_split_csv(path, synthetic_ham)
    assert {k: [s.image_id for s in v] for k, v in back.items()} == {
        k: [s.image_id for s in v] for k, v in split.items()
    }


def test_split_csv_with_leaking_lesion_is_refused(synthetic_ham, tmp_path):
    split = make_split(read_ham10000(synthetic_ham))
    path = tmp_path / "split.csv"
    write_split_csv(split, path)
    lines = path.read_text().splitlines()
    # Move one image of a multi-image lesion to another split.
    lesion_counts: dict[str, int] = {}
    for line in lines[1:]:
        lesion_counts[line.split(",")[1]] = lesion_counts.get(line.split(",")[1], 0) + 1
    idx = next(i for i, line in enumerate(lines) if i and lesion_counts[line.split(",")[1]] > 1)
    parts = lines[idx].split(",")
    parts[-1] = "test" if parts[-1] != "test" else "train"
    lines[idx] = ",".join(parts)
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetError, match="leaks"):
        read_split_csv(path, synthetic_ham)


def test_load_or_make_split_writes_once_then_reads_same_file(synthetic_ham, tmp_path):
    path = tmp_path / "runs" / "split.csv"
    first, h1 = load_or_make_split(synthetic_ham, path, seed=5)
    again, h2 = load_or_make_split(synthetic_ham, path, seed=99)  # existing file wins over the seed
    assert path.is_file() and h1 == h2 == split_hash(path)
    assert [s.image_id for s in first["test"]] == [s.image_id for s in again["test"]]
    _, h_mem = load_or_make_split(synthetic_ham, None, seed=5)
    assert h_mem == h1
