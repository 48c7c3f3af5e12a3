"""Factories for test data: images, users and cases."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def lesion_photo(width: int = 600, height: int = 450, *, seed: int = 0, fmt: str = "JPEG") -> bytes:
    """A skin-coloured photo with a dark, irregular lesion in the middle, encoded as JPEG or PNG."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    skin = np.stack([np.full((height, width), c, np.float32) for c in (214, 170, 150)], axis=-1)
    skin += rng.normal(0, 6, skin.shape)
    cy, cx = height / 2 + rng.uniform(-20, 20), width / 2 + rng.uniform(-20, 20)
    ry, rx = height * rng.uniform(0.15, 0.25), width * rng.uniform(0.12, 0.2)
    angle = np.arctan2(yy - cy, xx - cx)
    wobble = 1 + 0.12 * np.sin(5 * angle + rng.uniform(0, 6))
    inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= wobble**2
    lesion = np.array([95, 60, 45], np.float32) + rng.normal(0, 8, (height, width, 3))
    img = np.where(inside[..., None], lesion, skin)
    img = np.clip(img, 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format=fmt, quality=90)
    return buf.getvalue()


GPS_LATITUDE = (52.0, 31.0, 12.5)  # where a phone says the patient was


def photo_with_gps(width: int = 600, height: int = 450, *, seed: int = 0, fmt: str = "JPEG") -> bytes:
    """A lesion photo as a phone stores it: rotated by EXIF (orientation 6), with camera make and a GPS block."""
    img = Image.open(io.BytesIO(lesion_photo(width, height, seed=seed)))
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed rotated by 90 degrees: height x width
    exif[0x010F] = "PhoneMaker"
    exif.get_ifd(0x8825).update({1: "N", 2: GPS_LATITUDE, 3: "E", 4: (13.0, 24.0, 17.9)})
    buf = io.BytesIO()
    img.save(buf, format=fmt, exif=exif, **({"quality": 95} if fmt == "JPEG" else {}))
    return buf.getvalue()


def assert_no_metadata(data: bytes) -> None:
    """No EXIF (hence no GPS), XMP or comment survives in stored or served image bytes."""
    img = Image.open(io.BytesIO(data))
    assert len(img.getexif()) == 0 and not img.getexif().get_ifd(0x8825)
    assert not {"exif", "xmp", "comment", "XML:com.adobe.xmp"} & set(img.info)
    assert b"PhoneMaker" not in data and b"Exif\x00\x00" not in data


def claimed_case(session, store, *, owner: str = "host:1") -> int:
    """A committed case of patient 2001, claimed for processing by `owner` (first attempt); its id."""
    from skintriage import cases

    user = cases.get_or_create_user(session=session, telegram_user_id=2001, chat_id=2001, language="en")
    case = cases.create_case(session=session, user=user, image=store.put(lesion_photo(64, 48)))
    session.commit()
    claim = cases.claim_for_processing(session=session, case_id=case.id, max_attempts=3, stale_after_s=300, owner=owner)
    assert claim.outcome == cases.Claim.CLAIMED
    return case.id
