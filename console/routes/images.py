"""Case images, only to logged-in operators, only for keys that belong to a case (never a static folder)."""

from __future__ import annotations

import io
import logging

from fastapi import APIRouter, Depends
from fastapi.responses import Response
from sqlalchemy.orm import Session

from console.deps import DbId, current_operator, get_db, get_store
from skintriage.cases import audit
from skintriage.exceptions import ImageNotFound, InvalidKey, StorageError
from skintriage.models import Case, Operator
from skintriage.storage import ImageStore, check_key

log = logging.getLogger(__name__)
router = APIRouter()

MEDIA_TYPES = {"jpg": "image/jpeg", "png": "image/png", "webp": "image/webp"}
# Browsers cannot show HEIC (or unknown bytes); those are converted to JPEG, within this pixel budget (which also
# bounds decoding a photo to strip its metadata).
CONVERT_MAX_PIXELS = 40_000_000


def _not_found() -> Response:
    return Response("no such image", status_code=404, media_type="text/plain")


def _browser_safe(data: bytes, ext: str) -> tuple[bytes, str] | None:
    """Bytes a browser can show, with no EXIF (GPS included) or other metadata; None when they cannot be decoded.

    Photos stored before intake stripped metadata may still carry it, so every image is checked on its way out.
    """
    from PIL import Image

    from ml.errors import InvalidImageError
    from ml.triage.decode import decode_image, strip_metadata

    try:
        if ext in MEDIA_TYPES:
            return strip_metadata(data, max_pixels=CONVERT_MAX_PIXELS), MEDIA_TYPES[ext]
        rgb = decode_image(data, max_pixels=CONVERT_MAX_PIXELS)
    except InvalidImageError:
        return None
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=90)
    return buf.getvalue(), "image/jpeg"


@router.get("/cases/{case_id}/images/{key:path}")
def image(
    case_id: DbId,
    key: str,
    operator: Operator = Depends(current_operator),
    db: Session = Depends(get_db),
    store: ImageStore = Depends(get_store),
) -> Response:
    """The bytes of one of a case's images (photo, mask, overlay or heatmap); the view is audited."""
    try:
        check_key(key)
    except InvalidKey:
        return _not_found()
    case = db.get(Case, case_id)
    # Content-addressed keys can be shared between cases; the case in the URL names whose view to audit.
    if case is None or key not in {case.image_key, case.mask_key, case.overlay_key, case.heatmap_key}:
        return _not_found()
    try:
        data = store.get(key)
    except ImageNotFound:
        return _not_found()
    except StorageError:
        log.exception("image store failed for case %s", case.id)
        return Response("image store unavailable", status_code=503, media_type="text/plain")
    audit(
        session=db,
        actor="operator",
        action="case.image_viewed",
        case_id=case.id,
        operator_id=operator.id,
        detail={"kind": key.split("/", 1)[0]},
    )
    db.commit()
    served = _browser_safe(data, key.rsplit(".", 1)[-1])
    if served is None:
        return Response("this image cannot be shown in a browser", status_code=415, media_type="text/plain")
    return Response(served[0], media_type=served[1], headers={"Cache-Control": "private, no-store"})
