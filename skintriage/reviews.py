"""Clinicians' reviews of cases: storing a verdict with its audit event (the console validates the form)."""

from __future__ import annotations

from sqlalchemy.orm import Session

from skintriage.cases import audit
from skintriage.models import Case, Operator, Review
from skintriage.vocabulary import ReviewVerdict


def record_review(
    *,
    session: Session,
    case: Case,
    operator: Operator,
    verdict: str,
    corrected_label: str = "",
    urgency: str = "",
    note: str = "",
    blinded: bool = False,
) -> Review:
    """Store a validated review and audit it (the caller commits).

    An agreement without a label records the model's label as the corrected one; a blinded review is a second
    read made without seeing the earlier reviews.
    """
    review = Review(
        case_id=case.id,
        operator_id=operator.id,
        agrees=verdict == ReviewVerdict.AGREE,
        verdict=verdict,
        corrected_label=corrected_label or (case.label if verdict == ReviewVerdict.AGREE else None),
        urgency=urgency or None,
        note=note.strip() or None,
        blinded=blinded,
    )
    session.add(review)
    session.flush()
    audit(
        session=session,
        actor="operator",
        action="case.reviewed",
        case_id=case.id,
        operator_id=operator.id,
        detail={
            "review_id": review.id,
            "verdict": review.verdict,
            "agrees": review.agrees,
            "model_label": case.label,
            "corrected_label": review.corrected_label,
            "urgency": review.urgency,
            "blinded": review.blinded,
        },
    )
    return review
