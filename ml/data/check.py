"""`skintriage data check DIR`: counts per class and every problem of a HAM10000 folder, with its path."""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

from ml.data.ham10000 import DatasetError, Problem, Sample, scan_ham10000
from skintriage.vocabulary import LABELS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Sub-commands of `skintriage data` (only `check` for now)."""
    sub = parser.add_subparsers(dest="data_command", required=True)
    check = sub.add_parser("check", help="report counts per class and every problem with its path")
    check.add_argument("dir", type=Path, help="HAM10000 folder (official layout)")
    check.add_argument("--no-decode", action="store_true", help="skip opening every image and mask")


def decode_problems(samples: list[Sample], *, progress: bool = False) -> list[Problem]:
    """Open every image and mask; report unreadable files and image/mask size mismatches."""
    import cv2
    from tqdm import tqdm

    problems: list[Problem] = []
    for s in tqdm(samples, desc="decode", disable=not progress, mininterval=5):
        image = cv2.imread(str(s.image_path), cv2.IMREAD_COLOR)
        if image is None:
            problems.append(Problem("unreadable", s.image_path, f"cannot decode image {s.image_id}"))
            continue
        if s.mask_path is None:
            continue
        mask = cv2.imread(str(s.mask_path), cv2.IMREAD_GRAYSCALE)
        if mask is None:
            problems.append(Problem("unreadable", s.mask_path, f"cannot decode mask of {s.image_id}"))
        elif mask.shape != image.shape[:2]:
            problems.append(
                Problem("size_mismatch", s.mask_path, f"mask {mask.shape[::-1]} vs image {image.shape[1::-1]} (WxH)")
            )
    return problems


def format_report(root: Path, samples: list[Sample], problems: list[Problem]) -> str:
    """Human-readable report: counts per diagnosis and label, then each problem with its path."""
    by_dx = Counter(s.dx for s in samples)
    by_label = Counter(s.label for s in samples)
    lesions = len({s.lesion_id for s in samples})
    lines = [f"{root}: {len(samples)} usable images of {lesions} lesions", "", "dx       images"]
    lines += [f"{dx:<8} {n:>6}" for dx, n in sorted(by_dx.items(), key=lambda kv: -kv[1])]
    lines += ["", "label    images"]
    lines += [f"{label:<8} {by_label.get(label, 0):>6}" for label in LABELS]
    kinds = Counter(p.kind for p in problems)
    lines += ["", f"{len(problems)} problem(s)" + (f": {dict(kinds)}" if problems else "")]
    lines += [f"  {p.kind}: {p.path} - {p.detail}" for p in problems]
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    """Entry point of `skintriage data check`; exit status 1 when any problem is found."""
    try:
        samples, problems = scan_ham10000(args.dir)
    except DatasetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not args.no_decode:
        problems += decode_problems(samples, progress=sys.stderr.isatty())
    print(format_report(args.dir, samples, problems))
    return 1 if problems else 0


if __name__ == "__main__":
    _parser = argparse.ArgumentParser(prog="skintriage data", description=__doc__)
    add_arguments(_parser)
    sys.exit(main(_parser.parse_args()))
