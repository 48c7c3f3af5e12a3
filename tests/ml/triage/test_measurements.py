"""Lesion measurements on synthetic masks with known answers: disc, ellipse, half-disc, L, star, rectangle, colours."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from ml.triage.measurements import (
    COLOUR_NAMES,
    MEASUREMENTS_VERSION,
    MIN_COLOUR_SHARE,
    REFERENCE_COLOURS,
    LesionMeasurements,
    measure_lesion,
)

H, W = 300, 400
LIGHT_BROWN = REFERENCE_COLOURS["light_brown"]


def _canvas() -> np.ndarray:
    return np.zeros((H, W), np.uint8)


def _photo(colour: tuple[int, int, int] = LIGHT_BROWN) -> np.ndarray:
    return np.full((H, W, 3), colour, np.uint8)


def _disc(radius: int = 80, centre: tuple[int, int] = (200, 150)) -> np.ndarray:
    mask = _canvas()
    cv2.circle(mask, centre, radius, 1, thickness=-1)
    return mask


def _ellipse(angle: float) -> np.ndarray:
    mask = _canvas()
    cv2.ellipse(mask, (200, 150), (120, 50), angle, 0, 360, 1, thickness=-1)
    return mask


def _star(points: int = 10, outer: float = 110, inner: float = 50) -> np.ndarray:
    angles = np.pi * np.arange(2 * points) / points
    radii = np.where(np.arange(2 * points) % 2 == 0, outer, inner)
    polygon = np.stack([200 + radii * np.cos(angles), 150 + radii * np.sin(angles)], axis=1)
    mask = _canvas()
    cv2.fillPoly(mask, [np.rint(polygon).astype(np.int32)], 1)
    return mask


@pytest.mark.parametrize("radius", [10, 40, 120])
def test_disc_is_symmetric_and_round(radius: int) -> None:
    m = measure_lesion(_disc(radius), _photo())
    assert m.asymmetry_major_axis < 0.02 and m.asymmetry_minor_axis < 0.02
    assert m.compactness == pytest.approx(1.0, abs=0.03)
    assert m.convexity_ratio == pytest.approx(1.0, abs=0.01)
    assert m.diameter_px == pytest.approx(2 * radius + 1, abs=1.0)
    assert m.touches_border is False


@pytest.mark.parametrize("angle", [0, 30, 77])
def test_ellipse_is_symmetric_on_both_axes_whatever_its_orientation(angle: float) -> None:
    m = measure_lesion(_ellipse(angle), _photo())
    assert m.asymmetry_major_axis < 0.02 and m.asymmetry_minor_axis < 0.02
    # 2.4:1 ellipse: compactness (Ramanujan's perimeter) about 1.32, but convex.
    assert m.compactness == pytest.approx(1.32, abs=0.04)
    assert m.convexity_ratio == pytest.approx(1.0, abs=0.01)
    assert m.diameter_px == pytest.approx(241, abs=1.5)


def test_half_disc_is_asymmetric_about_its_major_axis_only() -> None:
    mask = _canvas()
    cv2.ellipse(mask, (200, 200), (100, 100), 0, 180, 360, 1, thickness=-1)  # the upper half
    m = measure_lesion(mask, _photo())
    # Mirrored across the line through its centroid parallel to the flat side (the major axis).
    assert m.asymmetry_major_axis > 0.15
    assert m.asymmetry_minor_axis < 0.02


def test_l_shape_is_symmetric_only_about_its_diagonal() -> None:
    mask = _canvas()
    mask[50:250, 100:150] = 1  # vertical bar, 200 x 50
    mask[200:250, 100:300] = 1  # horizontal bar, 50 x 200
    m = measure_lesion(mask, _photo())
    # The diagonal through the corner is the minor principal axis: the L is its own mirror image there.
    assert m.asymmetry_minor_axis < 0.02
    assert m.asymmetry_major_axis > 0.5
    assert m.convexity_ratio > 1.05  # the inner corner is a notch


def test_star_has_an_irregular_border() -> None:
    star = measure_lesion(_star(), _photo())
    disc = measure_lesion(_disc(80), _photo())
    assert star.compactness > 3.0 > disc.compactness
    assert star.convexity_ratio > 1.5
    # Ten-fold rotational symmetry: mirror-symmetric about any principal axis.
    assert star.asymmetry_major_axis < 0.05 and star.asymmetry_minor_axis < 0.05


def test_diameter_of_a_known_rectangle_and_its_shares() -> None:
    mask = _canvas()
    mask[100:160, 150:230] = 1  # 60 x 80 pixels: the diagonal between outer corners is 100
    m = measure_lesion(mask, _photo())
    assert m.diameter_px == pytest.approx(100.0, abs=0.05)
    assert m.diameter_share == pytest.approx(100.0 / W, abs=1e-4)
    assert m.area_px == 4800
    assert m.area_share == pytest.approx(4800 / (H * W), abs=1e-6)
    assert m.asymmetry_major_axis < 0.01 and m.asymmetry_minor_axis < 0.01
    assert m.convexity_ratio == pytest.approx(1.0, abs=0.01)


def test_two_colour_lesion_counts_two_colours() -> None:
    mask = _disc(80)
    rgb = _photo((214, 170, 150))  # skin around the lesion is not counted
    rgb[:, :200] = REFERENCE_COLOURS["dark_brown"]
    rgb[:, 200:] = REFERENCE_COLOURS["blue_grey"]
    m = measure_lesion(mask, rgb)
    assert m.colour_count == 2
    assert m.colours == ("dark_brown", "blue_grey")
    assert m.colour_shares["dark_brown"] == pytest.approx(0.5, abs=0.02)
    assert sum(m.colour_shares.values()) == pytest.approx(1.0, abs=1e-3)


def test_one_colour_and_a_speck_below_the_share_threshold_count_one() -> None:
    mask = _disc(80)
    rgb = _photo()
    rgb[150:158, 200:208] = REFERENCE_COLOURS["black"]  # 64 px, about 0.3% of the lesion
    m = measure_lesion(mask, rgb)
    assert m.colours == ("light_brown",)
    assert 0 < m.colour_shares["black"] < MIN_COLOUR_SHARE


def test_each_reference_colour_is_recognised() -> None:
    for name in COLOUR_NAMES:
        m = measure_lesion(_disc(40), _photo(REFERENCE_COLOURS[name]))
        assert m.colours == (name,), name


def test_lesion_touching_the_border_is_measured_as_seen() -> None:
    m = measure_lesion(_disc(80, centre=(0, 150)), _photo())  # half of it lies outside the photo
    assert m.touches_border is True
    assert m.asymmetry_minor_axis < 0.02  # the visible half-disc is symmetric about its own minor axis
    assert m.asymmetry_major_axis > 0.15
    everything = measure_lesion(np.ones((H, W), np.uint8), _photo())
    assert everything.touches_border and everything.area_share == 1.0
    assert everything.diameter_px == pytest.approx(500.0)


def test_single_pixel_is_measured_without_dividing_by_zero() -> None:
    mask = _canvas()
    mask[10, 10] = 1
    m = measure_lesion(mask, _photo())
    assert (m.area_px, m.asymmetry_major_axis, m.asymmetry_minor_axis) == (1, 0.0, 0.0)
    assert np.isfinite(m.compactness) and np.isfinite(m.convexity_ratio)


def test_to_dict_is_json_ready_and_round_trips() -> None:
    m = measure_lesion(_star(), _photo())
    data = json.loads(json.dumps(m.to_dict()))
    assert data["version"] == MEASUREMENTS_VERSION
    assert data["colours"] == list(m.colours)
    restored = LesionMeasurements(**{**data, "colours": tuple(data["colours"])})
    assert restored == m


def test_result_is_frozen() -> None:
    m = measure_lesion(_disc(), _photo())
    with pytest.raises(AttributeError):
        m.compactness = 2.0  # type: ignore[misc]


def test_bool_and_0_255_masks_give_the_same_answer() -> None:
    mask = _star()
    assert measure_lesion(mask.astype(bool), _photo()) == measure_lesion(mask * 255, _photo())


@pytest.mark.parametrize(
    ("mask", "rgb", "message"),
    [
        (np.zeros((H, W), np.uint8), _photo(), "mask is empty"),
        (np.ones((H, W // 2), np.uint8), _photo(), "differ in size; resize the mask"),
        (np.ones((H, W, 3), np.uint8), _photo(), "expected an HxW lesion mask"),
        (np.ones((H, W), np.uint8), np.zeros((H, W), np.uint8), "expected an HxWx3 RGB photo"),
        (np.ones((H, W), np.uint8), np.zeros((H, W, 3), np.float32), "expected a uint8 RGB photo"),
    ],
    ids=["empty", "shape-mismatch", "3d-mask", "grey-photo", "float-photo"],
)
def test_bad_input_is_refused_with_a_clear_message(mask: np.ndarray, rgb: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        measure_lesion(mask, rgb)
