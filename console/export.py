"""CSV export of the filtered case list (no patient identifiers beyond the internal patient number)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from skintriage.models import Case, Review

COLUMNS = (
    "case_id",
    "patient",
    "received_at",
    "status",
    "tier",
    "label",
    "prob_mel",
    "prob_nv",
    "prob_other",
    "mel_threshold",
    "quality_flags",
    "retake_reason",
    "model_versions",
    "demo_model",
    "delivered_at",
    "seconds_to_reply",
    "reviews",
    "last_review_verdict",
    "last_review_agrees",
    "last_review_label",
    "last_review_urgency",
    "patient_answers",
    "told_tier",
)
# A cell starting with one of these is run as a formula by spreadsheet programs.
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: object) -> str:
    """Text for one CSV cell that a spreadsheet will not execute."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4f}"
    text = value.isoformat() if hasattr(value, "isoformat") else str(value)
    if isinstance(value, str) and text.startswith(FORMULA_PREFIXES):
        return "'" + text
    return text


def case_rows(*, session: Session, cases: Iterable[Case]) -> Iterable[list[str]]:
    """One row per case, with its review summary."""
    cases = list(cases)
    reviews: dict[int, list[Review]] = {}
    ids = [c.id for c in cases]
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        for review in session.scalars(
            select(Review).where(Review.case_id.in_(chunk)).order_by(Review.created_at, Review.id)
        ):
            reviews.setdefault(review.case_id, []).append(review)
    for c in cases:
        # The reviewers' verdict, as the dashboard and the safety page take it: blinded second reads are not it.
        last = next((r for r in reversed(reviews.get(c.id, [])) if not r.blinded), None)
        seconds = (c.delivered_at - c.received_at).total_seconds() if c.delivered_at else None
        yield [
            safe_cell(v)
            for v in (
                c.id,
                c.user_id,
                c.received_at,
                c.status,
                c.tier,
                c.label,
                c.prob_mel,
                c.prob_nv,
                c.prob_other,
                c.mel_threshold,
                " ".join(c.quality_flags or []),
                c.retake_reason,
                json.dumps(c.model_versions or {}, sort_keys=True),
                c.demo_model,
                c.delivered_at,
                None if seconds is None else round(seconds, 1),
                len(reviews.get(c.id, [])),
                None if last is None else last.verdict,
                None if last is None else last.agrees,
                None if last is None else last.corrected_label,
                None if last is None else last.urgency,
                None if c.patient_answers is None else json.dumps(c.patient_answers, sort_keys=True),
                c.told_tier,
            )
        ]


def cases_csv(*, session: Session, cases: Iterable[Case]) -> str:
    """The whole CSV document for these cases."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(COLUMNS)
    writer.writerows(case_rows(session=session, cases=cases))
    return buf.getvalue()
