"""One patient's page: every case they sent, with its photo, tier, status and reviews."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse
from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from console.deps import DbId, current_operator, get_db, render
from console.reviews import URGENCIES, VERDICT_WORDS
from skintriage.cases import audit
from skintriage.models import Case, Operator, Review, User

router = APIRouter()


class PatientMissing(Exception):
    """No patient with that number (deleted with their data, or never existed)."""


@router.get("/patients/{user_id}", response_class=HTMLResponse)
def patient_detail(
    request: Request,
    user_id: DbId,
    operator: Operator = Depends(current_operator),
    db: Session = Depends(get_db),
) -> HTMLResponse:
    """Every case of one patient (by the internal user id, never the Telegram id), newest first; audited with
    the cases shown, since the page shows their reviews (a blinded second read of them is then refused)."""
    patient = db.get(User, user_id)
    if patient is None:
        raise PatientMissing(user_id)
    cases = list(
        db.scalars(
            select(Case)
            .where(Case.user_id == patient.id)
            .options(selectinload(Case.reviews).selectinload(Review.operator))
            .order_by(Case.received_at.desc(), Case.id.desc())
        ).all()
    )
    audit(
        session=db,
        actor="operator",
        action="patient.viewed",
        operator_id=operator.id,
        detail={"user_id": patient.id, "cases": [c.id for c in cases]},
    )
    db.commit()
    return render(
        request,
        "patient.html",
        {"patient": patient, "cases": cases, "verdict_words": VERDICT_WORDS, "urgencies": URGENCIES},
        db=db,
    )
