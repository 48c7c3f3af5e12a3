"""The model-safety page: the model's melanoma calls against the reviewers' verdicts, and blinded second reads."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse
from sqlalchemy.orm import Session

from console.deps import current_operator, get_db, render
from console.safety import CONFIDENCE, POSITIVE_RULES, RULE_WORDS, compute_safety
from console.stats import DAYS_MAX
from skintriage.models import Operator

router = APIRouter()


@router.get("/safety", response_class=HTMLResponse)
def safety(
    request: Request,
    days: int = Query(90, ge=1, le=DAYS_MAX),
    operator: Operator = Depends(current_operator),
    db: Session = Depends(get_db),
) -> HTMLResponse:
    """Melanoma sensitivity and specificity with 95% intervals, missed melanomas, breakdowns, second-read kappa."""
    report = compute_safety(session=db, days=days)
    return render(
        request,
        "safety.html",
        {
            "report": report,
            "days": days,
            "rules": list(POSITIVE_RULES),
            "rule_words": RULE_WORDS,
            "confidence": CONFIDENCE,
        },
        db=db,
    )
