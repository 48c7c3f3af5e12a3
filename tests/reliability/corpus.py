"""The bad-input corpus, made on the fly (nothing big is committed): files and raw Bot API updates.

Each `BadFile` says how a patient sends it (as a Telegram photo or as a file) and what must happen:
either no case and one exact reply (`reply_key`, with `reason` for the "unusable picture" text), or
a case that ends in one of `statuses` with exactly one answer. `BadUpdate`s are raw updates with
missing or unexpected fields, injected as Telegram would deliver them.
"""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from tests.factories import lesion_photo

TELEGRAM_BOT_DOWNLOAD_LIMIT = 20 * 1024 * 1024


@dataclass(frozen=True)
class BadFile:
    """One input: how it is sent and what the patient and the database must see."""

    name: str
    make: Callable[[], bytes]
    send_as: str  # "document" or "photo"
    file_name: str = "photo.jpg"
    mime_type: str = "image/jpeg"
    reply_key: str | None = None  # no case: the bot answers with this catalogue text
    reason: str | None = None  # for reply_key "intake.unusable": the retake.* reason
    statuses: tuple[str, ...] = ()  # a case is made and must end in one of these
    retake_reason: str | None = None  # for a rejected case: the reason the worker found
    check: Callable[[Any], None] | None = None  # extra assertions on the finished case

    @property
    def makes_case(self) -> bool:
        """Whether the bot accepts it as a case (it then gets the worker's answer)."""
        return bool(self.statuses)


# --- builders -------------------------------------------------------------------------------


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def constant_png(width: int, height: int, *, value: int = 180) -> bytes:
    """A complete, valid greyscale PNG of one colour, compressed row by row (20,000 x 20,000 is ~400 KB)."""
    compressor = zlib.compressobj(9)
    row = b"\x00" + bytes([value]) * width  # filter byte 0, then the pixels
    parts = [compressor.compress(row) for _ in range(height)]
    parts.append(compressor.flush())
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", b"".join(parts))
        + _png_chunk(b"IEND", b"")
    )


def header_bomb_png() -> bytes:
    """A decompression bomb: a 1 KB PNG whose header claims 65,535 x 65,535 RGBA pixels (17 GB decoded)."""
    ihdr = struct.pack(">IIBBBBB", 65535, 65535, 8, 6, 0, 0, 0)
    body = zlib.compress(b"\x00" * 4096, 9)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", body) + _png_chunk(b"IEND", b"")


def _save(img: Image.Image, fmt: str, **options: Any) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **options)
    return buf.getvalue()


def photo_image(width: int = 600, height: int = 450, seed: int = 0) -> Image.Image:
    """The synthetic lesion photo as a PIL image."""
    return Image.open(io.BytesIO(lesion_photo(width, height, seed=seed, fmt="PNG"))).convert("RGB")


def truncated_jpeg() -> bytes:
    """A JPEG cut off after 40 % of its bytes (an interrupted upload): the header is fine, the pixels are not."""
    data = lesion_photo(seed=21)
    return data[: int(len(data) * 0.4)]


def png_named_jpeg() -> bytes:
    """A real PNG (it is sent as mole.jpg with image/jpeg)."""
    return lesion_photo(seed=22, fmt="PNG")


def text_named_jpeg() -> bytes:
    """A text file (it is sent as mole.jpg)."""
    return b"These are my notes about the mole on my back.\n" * 20


def one_pixel() -> bytes:
    """A 1 x 1 PNG."""
    return _save(Image.new("RGB", (1, 1), (200, 150, 130)), "PNG")


def huge_constant_png() -> bytes:
    """20,000 x 20,000 pixels of one colour: a valid image that would take 400 MB to decode."""
    return constant_png(20_000, 20_000)


def animated_gif() -> bytes:
    """Three frames of a lesion photo, as an animated GIF."""
    frames = [photo_image(200, 150, seed=s).convert("P") for s in (23, 24, 25)]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=200, loop=0)
    return buf.getvalue()


def cmyk_jpeg() -> bytes:
    """A print-style CMYK JPEG of a lesion."""
    return _save(photo_image(seed=26).convert("CMYK"), "JPEG", quality=90)


def grey16_png() -> bytes:
    """A 16-bit greyscale PNG (scientific or medical export)."""
    grey = np.asarray(photo_image(seed=27).convert("L"), dtype=np.uint16) * 257
    return _save(Image.fromarray(grey), "PNG")


def rgb16_png() -> bytes:
    """A 16-bit-per-channel RGB PNG (written with OpenCV; PIL cannot write 48-bit PNGs)."""
    import cv2

    rgb = np.asarray(photo_image(seed=28), dtype=np.uint16) * 257
    ok, encoded = cv2.imencode(".png", rgb[..., ::-1].copy())
    if not ok:
        raise RuntimeError("OpenCV could not encode a 16-bit PNG")
    return encoded.tobytes()


def heic_photo() -> bytes:
    """An iPhone-style HEIC photo."""
    import pillow_heif

    pillow_heif.register_heif_opener()
    return _save(photo_image(seed=29), "HEIF", quality=80)


def exif_rotated_jpeg() -> bytes:
    """A 600 x 450 JPEG whose EXIF says "rotate 90 degrees clockwise" (a phone held upright): shown 450 x 600."""
    img = photo_image(600, 450, seed=30)
    exif = Image.Exif()
    exif[0x0112] = 6
    return _save(img, "JPEG", quality=90, exif=exif.tobytes())


def image_over_telegram_limit() -> bytes:
    """A real PNG of about 25 MB (incompressible noise), just over the 20 MB a bot may download."""
    side = 2900
    noise = np.random.default_rng(31).integers(0, 256, (side, side, 3), dtype=np.uint8)
    data = _save(Image.fromarray(noise), "PNG", compress_level=0)
    if not 20 * 1024 * 1024 < len(data) < 30 * 1024 * 1024:
        raise RuntimeError(f"expected about 25 MB, made {len(data)} bytes")
    return data


def pdf_document() -> bytes:
    """A small, valid one-page PDF."""
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 200 200] >>",
    ]
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n" % number + body + b"\nendobj\n")
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1))
    for offset in offsets:
        out.write(b"%010d 00000 n \n" % offset)
    out.write(b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref))
    return out.getvalue()


def zip_of_photos() -> bytes:
    """A ZIP archive holding two JPEG photos."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        archive.writestr("mole1.jpg", lesion_photo(seed=32))
        archive.writestr("mole2.jpg", lesion_photo(seed=33))
    return buf.getvalue()


def random_bytes() -> bytes:
    """50 KB of random bytes."""
    return np.random.default_rng(34).integers(0, 256, 50_000, dtype=np.uint8).tobytes()


def ico_named_png() -> bytes:
    """A Windows icon renamed .png: a format Pillow reads but the service refuses before decoding."""
    return _save(photo_image(64, 64, seed=35), "ICO")


# --- the corpus -----------------------------------------------------------------------------


def _rotated_check(case: Any) -> None:
    # The stored size is the displayed one: EXIF orientation 6 turns 600 x 450 upright.
    if (case.image_width, case.image_height) != (450, 600):
        raise AssertionError(f"EXIF rotation ignored: case is {case.image_width}x{case.image_height}, expected 450x600")


FINAL = ("done", "rejected")

BAD_FILES: tuple[BadFile, ...] = (
    BadFile("empty file", lambda: b"", "document", "empty.jpg", reply_key="intake.unusable", reason="unreadable"),
    BadFile("truncated JPEG", truncated_jpeg, "document", "cut.jpg", statuses=("rejected",),
            retake_reason="unreadable"),
    BadFile("PNG named .jpg", png_named_jpeg, "document", "mole.jpg", statuses=FINAL),
    BadFile("text file named .jpg", text_named_jpeg, "document", "mole.jpg", reply_key="intake.unusable",
            reason="unreadable"),
    BadFile("1x1 image", one_pixel, "document", "dot.png", "image/png", reply_key="intake.unusable",
            reason="too_small"),
    BadFile("20,000 x 20,000 image", huge_constant_png, "document", "scan.png", "image/png",
            reply_key="intake.unusable", reason="too_large"),
    BadFile("decompression bomb (header claims 65,535 x 65,535)", header_bomb_png, "document", "bomb.png",
            "image/png", reply_key="intake.unusable", reason="too_large"),
    BadFile("animated GIF as a file", animated_gif, "document", "moles.gif", "image/gif",
            reply_key="intake.unsupported_file"),
    BadFile("animated GIF as a photo", animated_gif, "photo", statuses=FINAL),
    BadFile("CMYK JPEG", cmyk_jpeg, "document", "print.jpg", statuses=FINAL),
    BadFile("16-bit greyscale PNG", grey16_png, "document", "grey16.png", "image/png", statuses=FINAL),
    BadFile("16-bit RGB PNG", rgb16_png, "document", "rgb16.png", "image/png", statuses=FINAL),
    BadFile("HEIC", heic_photo, "document", "IMG_0001.HEIC", "image/heic", statuses=FINAL),
    BadFile("EXIF-rotated JPEG", exif_rotated_jpeg, "document", "upright.jpg", statuses=FINAL,
            check=_rotated_check),
    BadFile("25 MB image", image_over_telegram_limit, "document", "huge.png", "image/png",
            reply_key="intake.too_big"),
    BadFile("PDF", pdf_document, "document", "report.pdf", "application/pdf", reply_key="intake.unsupported_file"),
    BadFile("ZIP", zip_of_photos, "document", "photos.zip", "application/zip", reply_key="intake.unsupported_file"),
    BadFile("random bytes as a file", random_bytes, "document", "photo.jpg", "application/octet-stream",
            reply_key="intake.unusable", reason="unreadable"),
    BadFile("random bytes as a photo", random_bytes, "photo", reply_key="intake.unusable", reason="unreadable"),
    BadFile("ICO named .png", ico_named_png, "document", "mole.png", "image/png", reply_key="intake.unusable",
            reason="unreadable"),
)  # fmt: skip


@dataclass(frozen=True)
class BadUpdate:
    """A raw update with missing or unexpected fields, and what the patient must get back."""

    name: str
    build: Callable[[int, int], dict[str, Any]]  # (user_id, message_id) -> update without update_id
    reply_key: str | None  # None: nobody to answer (no chat), the bot must just carry on
    extra: dict[str, Any] = field(default_factory=dict)


def _user(user_id: int) -> dict[str, Any]:
    return {"id": user_id, "is_bot": False, "first_name": "Patient", "language_code": "en"}


def _chat(user_id: int) -> dict[str, Any]:
    return {"id": user_id, "type": "private", "first_name": "Patient"}


def _message(user_id: int, message_id: int, **content: Any) -> dict[str, Any]:
    return {"message_id": message_id, "from": _user(user_id), "chat": _chat(user_id), "date": 1_700_000_000, **content}


BAD_UPDATES: tuple[BadUpdate, ...] = (
    BadUpdate(
        "text with unknown fields from a newer Bot API",
        lambda u, m: {
            "message": _message(u, m, text="hello", future_field={"nested": [1, 2]}, paid_star_count=3),
            "future_update_field": True,
        },
        "other.text",
    ),
    BadUpdate(
        "message without a sender",
        lambda u, m: {"message": {k: v for k, v in _message(u, m, text="hi").items() if k != "from"}},
        "other.text",
    ),
    BadUpdate("an update type this bot does not know", lambda u, m: {"future_kind_of_update": {"id": 1}}, None),
    BadUpdate("photo with an empty size list", lambda u, m: {"message": _message(u, m, photo=[])}, "other.text"),
    BadUpdate(
        "photo whose file no longer exists on Telegram",
        lambda u, m: {
            "message": _message(
                u, m, photo=[{"file_id": "AgACgone", "file_unique_id": "AQADgone", "width": 800, "height": 600}]
            )
        },
        "intake.download_failed",
    ),
    BadUpdate(
        "document without a name or a MIME type",
        lambda u, m: {"message": _message(u, m, document={"file_id": "BQACnone", "file_unique_id": "AgADnone"})},
        "intake.unsupported_file",
    ),
    BadUpdate("a 100,000-character text", lambda u, m: {"message": _message(u, m, text="x" * 100_000)}, "other.text"),
    BadUpdate(
        "message missing the fields every message has (chat, date)",
        lambda u, m: {"message": {"message_id": m, "from": _user(u), "text": "hi"}},
        None,
    ),
    BadUpdate(
        "button press without data or message",
        lambda u, m: {"callback_query": {"id": f"9{u}{m}", "from": _user(u), "chat_instance": "1"}},
        None,
    ),
)
