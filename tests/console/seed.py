"""Seed data for console tests: patients, cases with real images in the store, and two operators."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from datetime import timedelta

from PIL import Image, ImageDraw

from tests.factories import lesion_photo

REVIEWER = ("rita", "reviewer-password-1")
ADMIN = ("adam", "admin-password-12")
CURRENT = {"segmentation": "unet-aaaaaaaaaaaa", "classifier": "resnet50-bbbbbbbbbbbb"}
OLD = {"segmentation": "unet-aaaaaaaaaaaa", "classifier": "resnet50-000000000000"}
# What ml.triage.measurements stores for a case (LesionMeasurements.to_dict), for the a_high case.
MEASUREMENTS = {
    "asymmetry_major_axis": 0.3141,
    "asymmetry_minor_axis": 0.0523,
    "compactness": 1.4212,
    "convexity_ratio": 1.0371,
    "colour_count": 3,
    "colours": ["light_brown", "dark_brown", "blue_grey"],
    "colour_shares": {
        "white": 0.0,
        "red": 0.01,
        "light_brown": 0.52,
        "dark_brown": 0.38,
        "blue_grey": 0.09,
        "black": 0.0,
    },
    "diameter_px": 110.4,
    "diameter_share": 0.345,
    "area_px": 9000,
    "area_share": 0.117188,
    "touches_border": True,
    "version": 1,
}


def overlay_png(photo: bytes) -> bytes:
    """The photo with a green outline around the centre, as the worker draws it."""
    img = Image.open(io.BytesIO(photo)).convert("RGB")
    w, h = img.size
    ImageDraw.Draw(img).ellipse((w * 0.3, h * 0.28, w * 0.7, h * 0.72), outline=(0, 255, 0), width=4)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def mask_png(width: int, height: int) -> bytes:
    """A binary lesion mask."""
    img = Image.new("L", (width, height), 0)
    ImageDraw.Draw(img).ellipse((width * 0.3, height * 0.28, width * 0.7, height * 0.72), fill=255)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def heatmap_png(width: int, height: int) -> bytes:
    """A red-to-blue gradient standing in for a Grad-CAM map."""
    img = Image.linear_gradient("L").resize((width, height)).convert("RGB")
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


@dataclass
class Seeded:
    """Ids of what the seed created."""

    cases: dict[str, int] = field(default_factory=dict)
    users: dict[str, int] = field(default_factory=dict)
    operators: dict[str, int] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)


def seed(url: str, store, *, now=None) -> Seeded:  # noqa: ANN001
    """Two patients with finished, rejected, failed and open cases, real images, and two operators."""
    from console.operators import create_operator
    from skintriage.db import session_factory
    from skintriage.models import Case, CaseStatus, User, utcnow

    now = now or utcnow()
    out = Seeded()

    def put_images(seed_no: int, *, heatmap: bool = False) -> dict[str, str]:
        photo = lesion_photo(320, 240, seed=seed_no)
        keys = {
            "image_key": store.put(photo, kind="photo", ext="jpg").key,
            "overlay_key": store.put(overlay_png(photo), kind="overlay", ext="png").key,
            "mask_key": store.put(mask_png(320, 240), kind="mask", ext="png").key,
        }
        if heatmap:
            keys["heatmap_key"] = store.put(heatmap_png(320, 240), kind="heatmap", ext="png").key
        return keys

    specs = [
        # name, user, days ago, status, tier, label, p(mel, nv, other), versions, heatmap
        ("a_low", "anna", 10, CaseStatus.DONE, "LOW", "NV", (0.05, 0.9, 0.05), OLD, False),
        ("a_medium", "anna", 5, CaseStatus.DONE, "MEDIUM", "OTHER", (0.2, 0.2, 0.6), CURRENT, False),
        ("a_high", "anna", 1, CaseStatus.DONE, "HIGH", "MEL", (0.81, 0.12, 0.07), CURRENT, True),
        ("b_uncertain", "boris", 2, CaseStatus.DONE, "UNCERTAIN", "MEL", (0.33, 0.6, 0.07), CURRENT, False),
        ("b_high_old", "boris", 3, CaseStatus.DONE, "HIGH", "MEL", (0.7, 0.2, 0.1), CURRENT, False),
        ("b_retake", "boris", 0, CaseStatus.REJECTED, "RETAKE", None, None, CURRENT, False),
        ("b_failed", "boris", 0, CaseStatus.FAILED, None, None, None, {}, False),
        ("b_queued", "boris", 0, CaseStatus.QUEUED, None, None, None, {}, False),
    ]
    with session_factory(url).begin() as session:
        users = {
            "anna": User(telegram_user_id=1001, chat_id=1001, language="en", consent_at=now),
            "boris": User(telegram_user_id=1002, chat_id=1002, language="ru", consent_at=now),
        }
        session.add_all(users.values())
        session.flush()
        out.users = {name: u.id for name, u in users.items()}
        for i, (name, user, days, status, tier, label, probs, versions, heatmap) in enumerate(specs):
            received = now - timedelta(days=days, minutes=10 + i)
            keys = put_images(i, heatmap=heatmap) if status != CaseStatus.FAILED else {"image_key": None}
            finished = status in (CaseStatus.DONE, CaseStatus.REJECTED, CaseStatus.FAILED)
            case = Case(
                user_id=users[user].id,
                status=status,
                attempts=1 if finished else 0,
                language=users[user].language,
                image_sha256="0" * 64,
                image_width=320,
                image_height=240,
                received_at=received,
                acknowledged_at=received + timedelta(seconds=1),
                queued_at=received + timedelta(seconds=1),
                started_at=received + timedelta(seconds=2) if finished else None,
                finished_at=received + timedelta(seconds=8) if finished else None,
                delivered_at=received + timedelta(seconds=9 + i) if finished else None,
                tier=tier,
                label=label,
                prob_mel=probs[0] if probs else None,
                prob_nv=probs[1] if probs else None,
                prob_other=probs[2] if probs else None,
                mel_threshold=0.32 if probs else None,
                lesion_area_px=9000 if probs else None,
                lesion_diameter_px=110.0 if probs else None,
                quality_flags=["slightly_blurry"] if name == "a_high" else [],
                retake_reason="blurry" if status == CaseStatus.REJECTED else None,
                error_code="attempts_exhausted" if status == CaseStatus.FAILED else None,
                model_versions=versions,
                timings_ms={},
                measurements=MEASUREMENTS if name == "a_high" else None,
                reply_text=(
                    f"Result for case {name}: please see a dermatologist.\nThis is not a diagnosis."
                    if finished
                    else None
                ),
                **keys,
            )
            session.add(case)
            session.flush()
            out.cases[name] = case.id
            if name == "a_high":
                out.keys = {k: v for k, v in keys.items() if v}
        out.operators["rita"] = create_operator(session=session, username=REVIEWER[0], password=REVIEWER[1]).id
        out.operators["adam"] = create_operator(session=session, username=ADMIN[0], password=ADMIN[1], role="admin").id
    return out
