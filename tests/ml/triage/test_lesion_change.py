"""ml.triage.lesion_change: which way the measurements of one spot moved between two photos, and when it cannot say."""

from __future__ import annotations

import numpy as np
import pytest

from ml.triage.lesion_change import ASYMMETRY_TOLERANCE, Direction, compare, measurable
from ml.triage.measurements import measure_lesion


def stored(**values) -> dict:
    """Measurements as a case stores them (LesionMeasurements.to_dict), with the given values changed."""
    base = {
        "asymmetry_major_axis": 0.10, "asymmetry_minor_axis": 0.10, "compactness": 1.2, "convexity_ratio": 1.0,
        "colour_count": 2, "colours": ["light_brown", "dark_brown"], "colour_shares": {}, "diameter_px": 100.0,
        "diameter_share": 0.2, "area_px": 8000, "area_share": 0.05, "touches_border": False, "version": 1,
    }  # fmt: skip
    base.update(values)
    return base


def test_real_measurements_of_a_round_spot_and_a_ragged_bigger_one_read_more_asymmetric_and_more_uneven() -> None:
    yy, xx = np.mgrid[:200, :200]
    round_spot = (xx - 100) ** 2 + (yy - 100) ** 2 < 40**2
    # An L of two bars, photographed closer (bigger in the frame), in three colours.
    ragged = np.zeros((200, 200), dtype=bool)
    ragged[40:160, 40:80] = True
    ragged[120:160, 40:160] = True
    rgb = np.full((200, 200, 3), 220, dtype=np.uint8)
    rgb[:, :] = (170, 115, 75)
    rgb[40:100] = (90, 55, 35)
    rgb[:, 120:] = (25, 25, 25)
    before = measure_lesion(round_spot, np.full((200, 200, 3), (170, 115, 75), dtype=np.uint8)).to_dict()
    after = measure_lesion(ragged, rgb).to_dict()

    change = compare(before, after)

    assert change.asymmetry_major_axis is Direction.MORE or change.asymmetry_minor_axis is Direction.MORE
    assert change.border is Direction.MORE
    assert (change.colours, change.colours_before, change.colours_after) == (Direction.MORE, 1, 3)
    # Size is never judged: only the two shares of the photo are passed on.
    assert change.area_share_before == before["area_share"] and change.area_share_after == after["area_share"]
    # The same photo twice: nothing moved.
    same = compare(after, after)
    assert {same.asymmetry_major_axis, same.asymmetry_minor_axis, same.border, same.colours} == {Direction.SAME}


def test_small_differences_read_about_the_same_and_larger_ones_more_or_less() -> None:
    before = stored()
    within = stored(asymmetry_major_axis=0.10 + ASYMMETRY_TOLERANCE - 0.01, compactness=1.2 * 1.1)
    change = compare(before, within)
    assert (change.asymmetry_major_axis, change.border) == (Direction.SAME, Direction.SAME)

    moved = stored(asymmetry_major_axis=0.35, asymmetry_minor_axis=0.0, compactness=1.0, colour_count=1)
    change = compare(before, moved)
    assert change.asymmetry_major_axis is Direction.MORE
    assert change.asymmetry_minor_axis is Direction.SAME  # 0.10 -> 0.0 is within the tolerance
    assert change.border is Direction.LESS and change.colours is Direction.LESS
    assert compare(moved, before).asymmetry_major_axis is Direction.LESS


@pytest.mark.parametrize(
    ("before", "after"),
    [
        (None, stored()),  # the earlier photo was refused: never measured
        (stored(), None),
        ({}, stored()),
        (stored(compactness=None), stored()),
        (stored(version=1), stored(version=2)),  # different definitions are not compared
    ],
)
def test_nothing_is_compared_without_measurements_on_both_sides_under_one_definition(before, after) -> None:
    assert compare(before, after) is None


def test_measurable_needs_every_value_a_comparison_uses() -> None:
    assert measurable(stored())
    assert not measurable(None)
    assert not measurable({k: v for k, v in stored().items() if k != "area_share"})
