"""Turn untrusted photo bytes into an RGB array, or say in one typed error why they cannot be used.

Light on purpose (PIL, numpy, pillow-heif): the bot imports it to reject unusable uploads early.
The pixel limit is checked on the header's size before any pixel is decoded, so a tiny file that
claims to be 100k x 100k pixels never allocates its canvas.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

from ml.errors import InvalidImageError
from skintriage.vocabulary import RetakeReason

try:  # HEIC/HEIF (iPhone photos); without the plugin those uploads are reported as unreadable.
    import pillow_heif

    pillow_heif.register_heif_opener()
except ImportError:  # pragma: no cover - pillow-heif is a declared dependency
    pillow_heif = None

# Formats a phone or a desktop user plausibly sends. Anything else (EPS, which runs Ghostscript,
# PSD, ICO, ...) is refused before its decoder runs.
# (Multi-picture JPEGs from phones open through the JPEG plugin.)
ALLOWED_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "WEBP", "HEIF", "AVIF", "GIF", "BMP", "TIFF")
# Below this a photo is not even worth sending to the quality gate.
MIN_SIDE = 16
# EXIF orientations 5-8 rotate by 90 degrees, so the displayed width and height swap.
_SWAPPING_ORIENTATIONS = {5, 6, 7, 8}
_EXIF_ORIENTATION = 0x0112


@dataclass(frozen=True)
class ImageInfo:
    """What the header says: displayed size (after EXIF rotation), container format and frame count."""

    width: int
    height: int
    format: str
    mode: str = ""
    frames: int = 1

    @property
    def pixels(self) -> int:
        """Number of pixels of the first frame."""
        return self.width * self.height


def _registered_formats() -> tuple[str, ...]:
    """The allowed formats this Pillow build can open (AVIF/HEIF depend on optional plugins)."""
    Image.init()
    return tuple(f for f in ALLOWED_FORMATS if f in Image.OPEN)


def _open(data: bytes) -> Image.Image:
    """Open lazily (header only) and translate PIL's errors into InvalidImageError."""
    if not data:
        raise InvalidImageError(RetakeReason.UNREADABLE, "the file is empty; send the photo again")
    try:
        with warnings.catch_warnings():
            # Our own max_pixels check below decides; PIL's global warning would only add noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data), formats=_registered_formats())
    except Image.DecompressionBombError as exc:
        raise InvalidImageError(RetakeReason.TOO_LARGE, f"the image has too many pixels: {exc}") from exc
    except UnidentifiedImageError as exc:
        raise InvalidImageError(
            RetakeReason.UNREADABLE,
            f"not a supported image, or its header is damaged; send a photo as {', '.join(ALLOWED_FORMATS)}",
        ) from exc
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise InvalidImageError(RetakeReason.UNREADABLE, f"the image header cannot be read: {exc}") from exc


def _orientation(img: Image.Image) -> int:
    try:
        return int(img.getexif().get(_EXIF_ORIENTATION, 1))
    except Exception:  # noqa: BLE001 - a broken EXIF block must not reject an otherwise fine photo
        return 1


def _info(img: Image.Image) -> ImageInfo:
    width, height = img.size
    if _orientation(img) in _SWAPPING_ORIENTATIONS:
        width, height = height, width
    return ImageInfo(
        width=width,
        height=height,
        format=str(img.format or "unknown"),
        mode=img.mode,
        frames=int(getattr(img, "n_frames", 1) or 1),
    )


def _check_size(info: ImageInfo, *, max_pixels: int, min_side: int) -> None:
    if max_pixels <= 0:
        raise ValueError(f"max_pixels must be positive, got {max_pixels}")
    if info.pixels > max_pixels:
        raise InvalidImageError(
            RetakeReason.TOO_LARGE,
            f"the image is {info.width}x{info.height} = {info.pixels:,} pixels, more than the limit of "
            f"{max_pixels:,}; send a smaller photo (a normal phone photo is fine)",
        )
    if min(info.width, info.height) < min_side:
        raise InvalidImageError(
            RetakeReason.TOO_SMALL,
            f"the image is only {info.width}x{info.height} pixels; send a photo at least {min_side} pixels a side",
        )


def probe_image(data: bytes, *, max_pixels: int, min_side: int = MIN_SIDE) -> ImageInfo:
    """Read only the header: size after EXIF rotation and format; raise InvalidImageError when unusable."""
    img = _open(data)
    try:
        info = _info(img)
    finally:
        img.close()
    _check_size(info, max_pixels=max_pixels, min_side=min_side)
    return info


def _to_srgb_from_cmyk(img: Image.Image) -> Image.Image:
    """CMYK JPEGs (print exports) look wrong when converted naively; use the embedded profile when present."""
    icc = img.info.get("icc_profile")
    if icc:
        try:
            src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            dst = ImageCms.createProfile("sRGB")
            return ImageCms.profileToProfile(img, src, dst, outputMode="RGB")
        except (ImageCms.PyCMSError, OSError, ValueError):
            pass  # fall back to PIL's plain conversion below
    return img.convert("RGB")


def _high_bit_depth_to_rgb(img: Image.Image) -> np.ndarray:
    """Scale 16-bit or 32-bit single-channel images to 8 bits by their actual range."""
    arr = np.asarray(img)
    if img.mode == "F":
        arr = np.nan_to_num(arr.astype(np.float64))
        lo, hi = float(arr.min()), float(arr.max())
        scaled = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
    else:
        # 16-bit PNG/TIFF greyscale comes in as I;16* or I; values span 0..65535.
        scaled = arr.astype(np.float64) / 257.0
    grey = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2)


def _exif_transposed(img: Image.Image) -> Image.Image:
    """Apply the EXIF rotation; a malformed EXIF block leaves the photo as stored rather than rejecting it."""
    try:
        return ImageOps.exif_transpose(img)
    except (TypeError, ValueError, KeyError, SyntaxError):
        return img


def _to_rgb_array(img: Image.Image) -> np.ndarray:
    mode = img.mode
    if mode in ("I", "I;16", "I;16L", "I;16B", "I;16N", "F"):
        return _high_bit_depth_to_rgb(img)
    if mode == "CMYK":
        return np.asarray(_to_srgb_from_cmyk(img), dtype=np.uint8)
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode in ("P", "L", "RGB") and "transparency" in img.info)
    if has_alpha:
        # Transparent pixels have arbitrary colour underneath; a white background is what a viewer shows.
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(background, rgba).convert("RGB"), dtype=np.uint8)
    if mode != "RGB":
        img = img.convert("RGB")
    return np.asarray(img, dtype=np.uint8)


def decode_image(data: bytes, *, max_pixels: int, min_side: int = MIN_SIDE) -> np.ndarray:
    """Decode to an RGB uint8 HxWx3 array, EXIF-rotated, alpha on white; raise InvalidImageError when unusable."""
    img = _open(data)
    try:
        info = _info(img)
        _check_size(info, max_pixels=max_pixels, min_side=min_side)
        try:
            img.seek(0)  # animated GIF/WebP/HEIF sequences: the first frame is the photo
            img.load()
            img = _exif_transposed(img)
            rgb = _to_rgb_array(img)
        except Image.DecompressionBombError as exc:
            raise InvalidImageError(RetakeReason.TOO_LARGE, f"the image has too many pixels: {exc}") from exc
        except (OSError, ValueError, SyntaxError, EOFError, IndexError, MemoryError) as exc:
            # Truncated downloads and corrupt payloads land here ("image file is truncated", ...).
            raise InvalidImageError(
                RetakeReason.UNREADABLE, f"the image is damaged or incomplete ({exc}); send the photo again"
            ) from exc
    finally:
        img.close()
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise InvalidImageError(RetakeReason.UNREADABLE, f"decoded to an unexpected shape {rgb.shape}")
    return np.ascontiguousarray(rgb)


# Header fields that say nothing about the patient. Anything else with a value (EXIF with its GPS block
# and camera serials, XMP, IPTC, comments, PNG text chunks, MPO side pictures) makes strip_metadata rewrite.
_HARMLESS_INFO = frozenset(
    {
        "jfif", "jfif_version", "jfif_unit", "jfif_density", "dpi", "progressive", "progression", "adobe",
        "adobe_transform", "icc_profile", "gamma", "srgb", "chromaticity", "transparency", "interlace", "aspect",
        "compression", "loop", "duration", "background", "version", "primary", "bit_depth", "chroma",
        "nclx_profile", "original_orientation", "aux", "depth_images", "thumbnails", "metadata",
    }
)  # fmt: skip
# Re-encoding keeps the container where browsers and Telegram read it; lossy sources stay lossy at high quality.
_REWRITE_AS = {"JPEG": ("JPEG", {"quality": 95}), "WEBP": ("WEBP", {"quality": 95}), "PNG": ("PNG", {})}
_LOSSLESS = {"PNG", "GIF", "BMP", "TIFF"}


def _carries_metadata(img: Image.Image) -> bool:
    try:
        if len(img.getexif()) > 0:
            return True
    except Exception:  # noqa: BLE001 - a block PIL cannot parse may still hold GPS: treat it as present
        return True
    return any(value and key not in _HARMLESS_INFO for key, value in img.info.items())


def strip_metadata(data: bytes, *, max_pixels: int, min_side: int = MIN_SIDE) -> bytes:
    """The image without EXIF (GPS included), XMP, IPTC or comments, its orientation applied to the pixels.

    Bytes without such metadata come back unchanged (no re-encoding loss). Otherwise the pixels are decoded by
    decode_image (the pipeline's own path: EXIF rotation, alpha on white) and written again: JPEG, WebP and PNG
    in their own format, other lossless formats as PNG, HEIC/AVIF as JPEG. Raises InvalidImageError when unusable.
    """
    img = _open(data)
    try:
        source_format = str(img.format or "")
        icc = img.info.get("icc_profile")
        private = _carries_metadata(img)
    finally:
        img.close()
    if not private:
        return data
    rgb = decode_image(data, max_pixels=max_pixels, min_side=min_side)
    fallback = ("PNG", {}) if source_format in _LOSSLESS else ("JPEG", {"quality": 95})
    target, options = _REWRITE_AS.get(source_format, fallback)
    buf = io.BytesIO()
    # The colour profile is kept (it describes the pixels, not the patient); nothing else is passed on.
    Image.fromarray(rgb).save(buf, format=target, **options, **({"icc_profile": icc} if icc else {}))
    return buf.getvalue()
