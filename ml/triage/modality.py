"""What kind of photo is this: dermoscopic, an ordinary (clinical) photo of skin, or not a skin photo at all.

Both networks learnt on dermoscopy (HAM10000), while patients mostly send phone photos, so the pipeline
must know which kind it judged. A photo is described by a small vector of colour, vignette and texture
statistics of its centre square (`photo_features`, independent of the photo's size and aspect ratio);
a logistic regression on that vector tells dermoscopic from clinical, and the Mahalanobis distance from
the real lesion photos it was fitted on (both kinds, Ledoit-Wolf covariance) refuses photos unlike any
of them (screenshots, landscapes, objects). Everything is plain arrays in an `.npz` named by a model card
(kind "modality"), checked by SHA-256 like the other models, and loaded without pickle.

`skintriage train-modality` fits it (`ml/triage/train_modality.py`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ml.modelcard import ModelCard, ModelCardError
from skintriage.vocabulary import Modality

log = logging.getLogger(__name__)

MODALITY_CARD = "modality.json"
FEATURE_SIDE = 96
FEATURE_VERSION = 4
# Each version appends to the one before, so an older card reads the first features of the current vector.
FEATURE_COUNTS = {3: 76, 4: 109}
TEXTURE_SIDE = 192  # skin lines, pores and hair look different under a dermatoscope's magnification
_AB_RANGE = (96.0, 192.0)  # OpenCV 8-bit Lab: a and b are 128 when neutral; skin lies within this range
_RING_EDGES = (0.0, 0.25, 0.5, 0.75, 1.0, 1.2, 1.5)  # radius over half the side: the last two are the corners


def _centre_square(rgb: np.ndarray) -> np.ndarray:
    h, w = rgb.shape[:2]
    side = min(h, w)
    y0, x0 = (h - side) // 2, (w - side) // 2
    return rgb[y0 : y0 + side, x0 : x0 + side]


def _radius(side: int) -> np.ndarray:
    centre = (side - 1) / 2
    yy, xx = np.mgrid[0:side, 0:side]
    return np.hypot(yy - centre, xx - centre) / (side / 2)


_R = _radius(FEATURE_SIDE)
_GRID = 6  # lighting is measured on a 6x6 grid of blocks
_gy, _gx = np.mgrid[0:_GRID, 0:_GRID]
_PLANE = np.column_stack([np.ones(_GRID * _GRID), _gx.ravel() / (_GRID - 1), _gy.ravel() / (_GRID - 1)])
_RINGS = [(lo <= _R) & (hi > _R) for lo, hi in zip(_RING_EDGES[:-1], _RING_EDGES[1:], strict=True)]


def _uniform_lbp_codes() -> np.ndarray:
    """Map each 8-neighbour binary pattern to its uniform class: the count of ones, or 9 if not uniform."""
    codes = np.zeros(256, np.int64)
    for code in range(256):
        bits = [(code >> i) & 1 for i in range(8)]
        transitions = sum(bits[i] != bits[(i + 1) % 8] for i in range(8))
        codes[code] = sum(bits) if transitions <= 2 else 9
    return codes


_LBP_CLASS = _uniform_lbp_codes()


def _lbp_histogram(grey: np.ndarray, radius: int) -> list[float]:
    """Shares of the 10 uniform local-binary-pattern classes (8 neighbours at `radius`) of a 0-255 grey image."""
    h, w = grey.shape
    centre = grey[radius : h - radius, radius : w - radius]
    code = np.zeros(centre.shape, np.int64)
    offsets = [(-1, -1), (-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1), (0, -1)]
    for bit, (dy, dx) in enumerate(offsets):
        y0, x0 = radius + dy * radius, radius + dx * radius
        neighbour = grey[y0 : y0 + centre.shape[0], x0 : x0 + centre.shape[1]]
        # One grey level of slack: flat, JPEG-smoothed areas should not read as all "brighter" neighbours.
        code |= (neighbour >= centre + 1.0).astype(np.int64) << bit
    hist = np.bincount(_LBP_CLASS[code].ravel(), minlength=10).astype(np.float64)
    return (hist / hist.sum()).tolist()


def _glare_spots(square: np.ndarray) -> list[float]:
    """Specular highlights: small bright, unsaturated spots brighter than their surroundings."""
    hsv = cv2.cvtColor(square, cv2.COLOR_RGB2HSV).astype(np.float32)
    val, sat = hsv[..., 2], hsv[..., 1]
    above = val - cv2.GaussianBlur(val, (0, 0), 6)
    spot = (above > 25) & (sat < 80) & (val > 150)
    n, _, stats, _ = cv2.connectedComponentsWithStats(spot.astype(np.uint8), connectivity=8)
    areas = stats[1:, cv2.CC_STAT_AREA]
    small = int(((areas >= 2) & (areas <= 200)).sum()) if n > 1 else 0
    return [float(spot.mean()) * 100, float(np.log1p(small)), float(np.percentile(above, 99.5))]


def photo_features(rgb: np.ndarray) -> np.ndarray:
    """Colour, vignette and texture statistics of the centre square of an RGB uint8 photo (float32 vector).

    The photo is cut to its centre square and shrunk to 96x96 first, so neither its size nor its aspect
    ratio (HAM10000 is 600x450, many phone photos are square) can become a shortcut; fine texture (local
    binary patterns) and glare spots are read from the same square at 192x192.
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected an HxWx3 uint8 RGB array, got shape {rgb.shape} dtype {rgb.dtype}")
    square = _centre_square(rgb)
    small = cv2.resize(square, (FEATURE_SIDE, FEATURE_SIDE), interpolation=cv2.INTER_AREA)
    lab = cv2.cvtColor(small, cv2.COLOR_RGB2LAB).astype(np.float32)
    hsv = cv2.cvtColor(small, cv2.COLOR_RGB2HSV).astype(np.float32)
    lum, a, b = lab[..., 0], lab[..., 1], lab[..., 2]
    sat = hsv[..., 1]
    feats: list[float] = []
    for channel in (lum, a, b, sat):
        feats += [float(channel.mean()), float(channel.std()), *np.percentile(channel, (5, 50, 95)).tolist()]
    centre = float(lum[_RINGS[0]].mean())
    # Dermatoscopes light the skin evenly and often leave a dark round vignette in the corners.
    feats += [float(lum[ring].mean()) - centre for ring in _RINGS[1:]]
    feats += [float(sat[ring].mean()) for ring in _RINGS]
    feats += [float((lum < 40).mean()), float((lum[_RINGS[-1]] < 40).mean())]
    for channel in (a, b):
        hist, _ = np.histogram(channel, bins=8, range=_AB_RANGE)
        feats += (hist / channel.size).tolist()
    # Light: a dermatoscope lights the skin evenly and polarisation or gel removes surface glare, while
    # a phone photo has a lighting gradient across the frame and specular highlights.
    blocks = cv2.resize(lum, (_GRID, _GRID), interpolation=cv2.INTER_AREA).ravel()
    coef, *_ = np.linalg.lstsq(_PLANE, blocks, rcond=None)
    residual = blocks - _PLANE @ coef
    feats += [float(np.hypot(coef[1], coef[2])), float(residual.std())]
    val = hsv[..., 2]
    feats += [float(((val > 235) & (sat < 40)).mean()), float(((val > 200) & (sat < 60)).mean())]
    hue_hist, _ = np.histogram(hsv[..., 0], bins=12, range=(0, 180), weights=sat)
    feats += (hue_hist / max(float(sat.sum()), 1.0)).tolist()
    grey = lum / 255.0
    for scale in (1, 2):
        side = FEATURE_SIDE // scale
        g = grey if scale == 1 else cv2.resize(grey, (side, side), interpolation=cv2.INTER_AREA)
        gx, gy = cv2.Sobel(g, cv2.CV_32F, 1, 0), cv2.Sobel(g, cv2.CV_32F, 0, 1)
        mag = np.hypot(gx, gy)
        feats += [float(np.log1p(mag.mean() * 100)), float(np.log1p(np.percentile(mag, 95) * 100))]
    feats.append(float(np.log1p(cv2.Laplacian(grey, cv2.CV_32F).var() * 1e4)))
    texture = cv2.resize(square, (TEXTURE_SIDE, TEXTURE_SIDE), interpolation=cv2.INTER_AREA)
    grey_fine = cv2.cvtColor(texture, cv2.COLOR_RGB2GRAY).astype(np.float32)
    fine = grey_fine / 255.0
    blurred = [fine] + [cv2.GaussianBlur(fine, (0, 0), sigma) for sigma in (1, 2, 4, 8)]
    bands = [float(np.log1p(np.abs(a - b).mean() * 1000)) for a, b in zip(blurred[:-1], blurred[1:], strict=True)]
    feats += bands + [bands[0] - bands[2], bands[1] - bands[3]]
    # Version 4: glare spots (gel and polarised light remove them under a dermatoscope) and the fine texture's
    # local binary patterns (skin lines and pores at a dermatoscope's magnification against a phone's).
    feats += _glare_spots(texture)
    grey_small = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY).astype(np.float32)
    feats += _lbp_histogram(grey_fine, 1) + _lbp_histogram(grey_fine, 2) + _lbp_histogram(grey_small, 1)
    return np.asarray(feats, dtype=np.float32)


N_FEATURES = FEATURE_COUNTS[FEATURE_VERSION]
if len(photo_features(np.zeros((8, 8, 3), np.uint8))) != N_FEATURES:
    raise RuntimeError(f"photo_features no longer gives {N_FEATURES} features; update FEATURE_COUNTS")


@dataclass(frozen=True)
class ModalityVerdict:
    """The modality check's answer for one photo."""

    modality: Modality
    p_clinical: float | None  # probability that the photo is an ordinary photo, not dermoscopy
    distance: float | None  # squared Mahalanobis distance from the real lesion photos
    skin_photo: bool  # False: unlike any lesion photo it was fitted on (refuse as not skin)


@dataclass(frozen=True)
class ModalityParams:
    """The fitted arrays: standardisation, logistic regression and the lesion-photo density."""

    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float
    centre: np.ndarray
    precision: np.ndarray
    feature_version: int = FEATURE_VERSION  # an older version reads the first FEATURE_COUNTS[v] features

    def save(self, path: Path) -> None:
        """Write the arrays to an .npz (no pickle)."""
        with open(path, "wb") as fh:
            np.savez(
                fh,
                mean=self.mean,
                scale=self.scale,
                coef=self.coef,
                intercept=np.float64(self.intercept),
                centre=self.centre,
                precision=self.precision,
                feature_version=np.int64(self.feature_version),
            )

    @classmethod
    def load(cls, path: Path) -> ModalityParams:
        """Read arrays written by `save`; raise ValueError when this code cannot compute their feature version."""
        with np.load(path, allow_pickle=False) as data:
            version = int(data["feature_version"])
            if version not in FEATURE_COUNTS:
                raise ValueError(
                    f"{path} holds feature version {version}, this code computes versions "
                    f"{sorted(FEATURE_COUNTS)}; retrain it with `skintriage train-modality`"
                )
            params = cls(
                mean=data["mean"],
                scale=data["scale"],
                coef=data["coef"],
                intercept=float(data["intercept"]),
                centre=data["centre"],
                precision=data["precision"],
                feature_version=version,
            )
        n = FEATURE_COUNTS[version]
        if params.mean.shape != (n,) or params.precision.shape != (n, n):
            raise ValueError(f"{path} was fitted on {params.mean.shape[0]} features, feature version {version} has {n}")
        return params

    def standardise(self, features: np.ndarray) -> np.ndarray:
        """Features scaled as in training (N, F); rows of the current version are cut to this version's."""
        features = np.atleast_2d(features)
        if features.shape[1] != N_FEATURES:
            raise ValueError(f"expected {N_FEATURES} features per row (photo_features), got {features.shape[1]}")
        n = FEATURE_COUNTS[self.feature_version]
        return (features[:, :n] - self.mean) / self.scale

    def p_clinical(self, features: np.ndarray) -> np.ndarray:
        """Logistic-regression probability of an ordinary photo (N,)."""
        z = self.standardise(features) @ self.coef + self.intercept
        return 1.0 / (1.0 + np.exp(-z))

    def distance(self, features: np.ndarray) -> np.ndarray:
        """Squared Mahalanobis distance from the lesion photos (N,)."""
        d = self.standardise(features) - self.centre
        return np.einsum("nf,fg,ng->n", d, self.precision, d)


class ModalityModel:
    """A verified modality check from its card; `judge` never raises for a valid RGB array."""

    def __init__(self, params: ModalityParams, card: ModelCard):
        op = card.operating_point
        self.params = params
        self.card = card
        self.clinical_threshold = float(op.get("clinical_threshold", 0.5))
        self.max_distance = float(op["max_distance"]) if op.get("max_distance") is not None else None

    @property
    def version(self) -> str:
        """Content-derived version string recorded with every case."""
        return self.card.version

    @classmethod
    def from_card(cls, card_path: Path) -> ModalityModel:
        """Load a modality card and its arrays after checking the SHA-256; raise ModelCardError otherwise."""
        card = ModelCard.load(card_path)
        if card.kind != "modality":
            raise ModelCardError(f"{card_path} is a {card.kind!r} card, expected a 'modality' card")
        weights = card.verify(card_path)
        try:
            params = ModalityParams.load(weights)
        except (ValueError, KeyError, OSError) as exc:
            raise ModelCardError(f"cannot read modality arrays {weights}: {exc}") from exc
        return cls(params, card)

    def judge_features(self, features: np.ndarray) -> list[ModalityVerdict]:
        """Verdicts for precomputed feature rows (N, F)."""
        features = np.atleast_2d(features)
        p = self.params.p_clinical(features)
        dist = self.params.distance(features)
        verdicts = []
        for pc, d in zip(p.tolist(), dist.tolist(), strict=True):
            modality = Modality.CLINICAL if pc >= self.clinical_threshold else Modality.DERMOSCOPIC
            skin = self.max_distance is None or d <= self.max_distance
            verdicts.append(ModalityVerdict(modality, round(pc, 4), round(d, 2), skin))
        return verdicts

    def judge(self, rgb: np.ndarray) -> ModalityVerdict:
        """The verdict for one RGB uint8 photo."""
        return self.judge_features(photo_features(rgb))[0]
