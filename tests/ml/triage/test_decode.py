"""Decoding untrusted photo bytes: every format quirk a phone or a desktop produces, and every way to fail."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from ml.errors import InvalidImageError
from ml.triage.decode import ImageInfo, decode_image, probe_image
from skintriage.vocabulary import RetakeReason

LIMIT = 40_000_000


def _encode(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def _asymmetric_rgb(width: int = 60, height: int = 40) -> Image.Image:
    """Red top-left corner, blue elsewhere: rotations move the red patch somewhere recognisable."""
    arr = np.zeros((height, width, 3), np.uint8)
    arr[...] = (0, 0, 255)
    arr[: height // 4, : width // 4] = (255, 0, 0)
    return Image.fromarray(arr)


def _reason(data: bytes, **kwargs) -> RetakeReason:
    with pytest.raises(InvalidImageError) as info:
        decode_image(data, max_pixels=kwargs.pop("max_pixels", LIMIT), **kwargs)
    return info.value.reason


def test_jpeg_decodes_to_rgb_uint8_of_its_own_size():
    rgb = decode_image(_encode(_asymmetric_rgb(), "JPEG", quality=95), max_pixels=LIMIT)
    assert rgb.shape == (40, 60, 3) and rgb.dtype == np.uint8
    assert rgb[2, 2, 0] > 200 and rgb[30, 50, 2] > 200


@pytest.mark.parametrize("orientation", [6, 8])
def test_exif_rotation_is_applied_and_probe_reports_the_displayed_size(orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = _encode(_asymmetric_rgb(), "JPEG", quality=95, exif=exif)
    info = probe_image(data, max_pixels=LIMIT)
    assert (info.width, info.height) == (40, 60)
    rgb = decode_image(data, max_pixels=LIMIT)
    assert rgb.shape == (60, 40, 3)
    # Orientation 6 means "rotate 90 degrees clockwise to display": the top-left red patch moves top-right.
    red_corner = (2, 37) if orientation == 6 else (57, 2)
    assert rgb[red_corner][0] > 200 and rgb[red_corner][2] < 60


def test_png_alpha_is_composited_on_white():
    arr = np.zeros((32, 32, 4), np.uint8)
    arr[..., :3] = (10, 200, 10)
    arr[:, :16, 3] = 0  # fully transparent left half over black pixels
    arr[:, 16:, 3] = 255
    rgb = decode_image(_encode(Image.fromarray(arr, "RGBA"), "PNG"), max_pixels=LIMIT)
    assert tuple(rgb[5, 5]) == (255, 255, 255)
    assert tuple(rgb[5, 25]) == (10, 200, 10)


def test_greyscale_becomes_three_equal_channels():
    grey = Image.fromarray(np.tile(np.arange(0, 256, 4, dtype=np.uint8), (20, 1)), "L")
    rgb = decode_image(_encode(grey, "PNG"), max_pixels=LIMIT)
    assert rgb.shape == (20, 64, 3)
    assert np.array_equal(rgb[..., 0], rgb[..., 2])
    assert rgb[0, 63, 0] == 252


def test_sixteen_bit_greyscale_png_is_scaled_to_eight_bits():
    arr = np.full((24, 24), 65535, np.uint16)
    arr[:, :12] = 257 * 100
    rgb = decode_image(_encode(Image.fromarray(arr), "PNG"), max_pixels=LIMIT)
    assert rgb.dtype == np.uint8
    assert tuple(rgb[0, 0]) == (100, 100, 100)
    assert tuple(rgb[0, 20]) == (255, 255, 255)


def test_cmyk_jpeg_is_converted_to_rgb():
    cmyk = Image.new("CMYK", (40, 30), (0, 255, 255, 0))  # pure red in print colours
    rgb = decode_image(_encode(cmyk, "JPEG", quality=95), max_pixels=LIMIT)
    assert rgb.shape == (30, 40, 3)
    assert rgb[10, 10, 0] > 200 and rgb[10, 10, 1] < 60


def test_palette_png_with_transparency_is_composited():
    pal = _asymmetric_rgb().convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    arr = np.asarray(pal).copy()
    transparent_index = int(arr[30, 50])
    data = _encode(pal, "PNG", transparency=transparent_index)
    rgb = decode_image(data, max_pixels=LIMIT)
    assert tuple(rgb[30, 50]) == (255, 255, 255)
    assert rgb[2, 2, 0] > 200


def test_webp_decodes():
    rgb = decode_image(_encode(_asymmetric_rgb(), "WEBP", quality=95), max_pixels=LIMIT)
    assert rgb.shape == (40, 60, 3) and rgb[2, 2, 0] > 180


def test_heic_decodes():
    pytest.importorskip("pillow_heif")
    data = _encode(_asymmetric_rgb(64, 48), "HEIF", quality=95)
    assert probe_image(data, max_pixels=LIMIT).format == "HEIF"
    rgb = decode_image(data, max_pixels=LIMIT)
    assert rgb.shape == (48, 64, 3) and rgb[2, 2, 0] > 180


def test_animated_gif_uses_the_first_frame():
    first = Image.new("RGB", (30, 30), (255, 0, 0))
    second = Image.new("RGB", (30, 30), (0, 0, 255))
    data = _encode(first, "GIF", save_all=True, append_images=[second], duration=100, loop=0)
    assert probe_image(data, max_pixels=LIMIT).frames == 2
    rgb = decode_image(data, max_pixels=LIMIT)
    assert rgb[15, 15, 0] > 200 and rgb[15, 15, 2] < 60


def test_probe_returns_header_information_without_decoding():
    info = probe_image(_encode(_asymmetric_rgb(), "PNG"), max_pixels=LIMIT)
    assert info == ImageInfo(width=60, height=40, format="PNG", mode="RGB", frames=1)


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims a huge canvas but carries only a few bytes of pixel data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    pixels = chunk(b"IDAT", zlib.compress(b"\x00" * 16))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + pixels + chunk(b"IEND", b"")


def test_decompression_bomb_is_refused_from_the_header():
    bomb = _png_header_only(100_000, 100_000)  # 10 gigapixels in a ~100-byte file
    assert len(bomb) < 200
    with pytest.raises(InvalidImageError) as info:
        probe_image(bomb, max_pixels=LIMIT)
    assert info.value.reason is RetakeReason.TOO_LARGE
    assert _reason(bomb) is RetakeReason.TOO_LARGE


def test_pixel_limit_is_the_callers():
    data = _encode(_asymmetric_rgb(60, 40), "PNG")
    assert _reason(data, max_pixels=60 * 40 - 1) is RetakeReason.TOO_LARGE
    assert decode_image(data, max_pixels=60 * 40).shape == (40, 60, 3)


def test_tiny_image_is_too_small():
    assert _reason(_encode(Image.new("RGB", (8, 200)), "PNG")) is RetakeReason.TOO_SMALL


def test_truncated_jpeg_is_unreadable():
    data = _encode(_asymmetric_rgb(400, 300), "JPEG", quality=95)
    assert probe_image(data[: len(data) // 2], max_pixels=LIMIT).width == 400  # the header is intact
    assert _reason(data[: len(data) // 2]) is RetakeReason.UNREADABLE


def test_corrupt_jpeg_tables_are_unreadable():
    rng = np.random.default_rng(0)
    data = bytearray(_encode(Image.fromarray(rng.integers(0, 255, (100, 200, 3), dtype=np.uint8)), "JPEG"))
    data[150:170] = b"\xff" * 20  # inside the quantisation/Huffman tables
    assert _reason(bytes(data)) is RetakeReason.UNREADABLE


@pytest.mark.parametrize("data", [b"", b"hello, this is a text file\n" * 10, b"%PDF-1.4\n%...", b"\x00" * 64])
def test_non_images_are_unreadable(data):
    assert _reason(data) is RetakeReason.UNREADABLE
    with pytest.raises(InvalidImageError):
        probe_image(data, max_pixels=LIMIT)


def test_disallowed_format_is_refused_before_its_decoder_runs():
    data = _encode(Image.new("RGB", (32, 32)), "ICO")
    assert _reason(data) is RetakeReason.UNREADABLE


def test_invalid_limit_is_a_programming_error():
    with pytest.raises(ValueError, match="max_pixels must be positive"):
        decode_image(_encode(_asymmetric_rgb(), "PNG"), max_pixels=0)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_strip_metadata_drops_exif_and_gps_and_keeps_the_orientation(fmt):
    from ml.triage.decode import strip_metadata
    from tests.factories import assert_no_metadata, photo_with_gps

    original = photo_with_gps(400, 300, fmt=fmt)
    assert Image.open(io.BytesIO(original)).getexif().get_ifd(0x8825)  # the fixture does carry GPS
    clean = strip_metadata(original, max_pixels=10**7)
    assert_no_metadata(clean)
    assert Image.open(io.BytesIO(clean)).format == fmt
    before, after = decode_image(original, max_pixels=10**7), decode_image(clean, max_pixels=10**7)
    assert after.shape == before.shape == (400, 300, 3)  # upright as displayed: the EXIF rotation is in the pixels
    assert np.abs(before.astype(int) - after.astype(int)).mean() < 3


def test_strip_metadata_keeps_bytes_without_metadata_unchanged():
    from ml.triage.decode import strip_metadata
    from tests.factories import lesion_photo

    for data in (lesion_photo(200, 150), lesion_photo(200, 150, fmt="PNG")):
        assert strip_metadata(data, max_pixels=10**7) is data


def test_strip_metadata_refuses_what_decode_refuses():
    from ml.triage.decode import strip_metadata
    from tests.factories import photo_with_gps

    truncated = photo_with_gps(400, 300)[:2000]
    with pytest.raises(InvalidImageError):
        strip_metadata(truncated, max_pixels=10**7)
