"""The same spot photographed twice: how its measurements (ml.triage.measurements) differ between the two photos.

Plain values in, plain words out, for the patient's answer and the console; no image, no database. A change
is only a difference between two photos: light, angle, focus and the outline the model drew move these
numbers too, so small differences read as "about the same" and nothing here is a medical conclusion.
Size is not compared: photos taken at different distances show the same spot at different sizes, so only
the share of each photo the spot takes is given, to be read with that caveat.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

# Differences within these read as "about the same" (our choice, to be tuned on repeated photos of one spot).
ASYMMETRY_TOLERANCE = 0.10  # share of the lesion's area (0..1)
COMPACTNESS_TOLERANCE = 0.15  # relative change of the compactness index P^2 / (4 pi A)
_NEEDED = ("asymmetry_major_axis", "asymmetry_minor_axis", "compactness", "colour_count", "area_share", "version")


class Direction(StrEnum):
    """Which way a measurement moved from the earlier photo to the new one."""

    MORE = "more"
    LESS = "less"
    SAME = "same"


@dataclass(frozen=True)
class LesionChange:
    """How the new photo's measurements compare with the earlier photo's (see the module doc)."""

    asymmetry_major_axis: Direction
    asymmetry_minor_axis: Direction
    border: Direction  # more: a more irregular outline (higher compactness index)
    colours: Direction
    colours_before: int
    colours_after: int
    area_share_before: float  # the spot's share of the photo: NOT comparable as a size
    area_share_after: float


def _direction(before: float, after: float, tolerance: float) -> Direction:
    if after - before > tolerance:
        return Direction.MORE
    if before - after > tolerance:
        return Direction.LESS
    return Direction.SAME


def measurable(measurements: Mapping[str, Any] | None) -> bool:
    """Whether stored measurements (LesionMeasurements.to_dict) hold what a comparison needs."""
    return bool(measurements) and all(measurements.get(k) is not None for k in _NEEDED)


def compare(before: Mapping[str, Any] | None, after: Mapping[str, Any] | None) -> LesionChange | None:
    """The change from the earlier photo's measurements to the new one's; None when either has none to compare.

    Measurements made under different definitions (their `version`) are not compared either.
    """
    if not (measurable(before) and measurable(after)) or before["version"] != after["version"]:
        return None
    compactness_before = float(before["compactness"])
    return LesionChange(
        asymmetry_major_axis=_direction(
            float(before["asymmetry_major_axis"]), float(after["asymmetry_major_axis"]), ASYMMETRY_TOLERANCE
        ),
        asymmetry_minor_axis=_direction(
            float(before["asymmetry_minor_axis"]), float(after["asymmetry_minor_axis"]), ASYMMETRY_TOLERANCE
        ),
        border=_direction(compactness_before, float(after["compactness"]), COMPACTNESS_TOLERANCE * compactness_before),
        colours=_direction(int(before["colour_count"]), int(after["colour_count"]), 0),
        colours_before=int(before["colour_count"]),
        colours_after=int(after["colour_count"]),
        area_share_before=float(before["area_share"]),
        area_share_after=float(after["area_share"]),
    )
