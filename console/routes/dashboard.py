"""The dashboard: numbers and server-rendered charts for a period."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy.orm import Session

from console.charts import CHARTS, render_chart
from console.deps import current_operator, get_db, render
from console.stats import DAYS_MAX, compute_stats
from skintriage.models import Operator
from skintriage.vocabulary import LABELS

router = APIRouter()


@router.get("/dashboard", response_class=HTMLResponse)
def dashboard(
    request: Request,
    days: int = Query(30, ge=1, le=DAYS_MAX),
    operator: Operator = Depends(current_operator),
    db: Session = Depends(get_db),
) -> HTMLResponse:
    """Cases per day by tier, share reviewed, operator-model agreement per class and time to reply."""
    stats = compute_stats(session=db, days=days)
    return render(
        request,
        "dashboard.html",
        {"stats": stats, "days": days, "charts": CHARTS, "labels": LABELS},
        db=db,
    )


@router.get("/dashboard/charts/{name}.png")
def chart(
    name: str,
    days: int = Query(30, ge=1, le=DAYS_MAX),
    operator: Operator = Depends(current_operator),
    db: Session = Depends(get_db),
) -> Response:
    """One dashboard chart as PNG."""
    if name not in CHARTS:
        return Response("no such chart", status_code=404, media_type="text/plain")
    png = render_chart(name, compute_stats(session=db, days=days))
    return Response(png, media_type="image/png", headers={"Cache-Control": "private, no-store"})
