"""Reviews that arrive after the session ended: kept server-side and saved once the same operator logs in again.

The browser keeps only a random token in its (signed) session cookie; the form itself waits in
`pending_reviews` under the token's SHA-256. A form is kept only when its CSRF token matched the expired
session's and that session named an operator, so a page on another site cannot plant one; it is saved only
for that same operator, at most `max_age_s` after it arrived, and used once.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import asdict, fields
from datetime import timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from console.reviews import ReviewInput
from skintriage.models import PendingReview, utcnow

SESSION_KEY = "pending_review"


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def keep_review(*, session: Session, operator_id: int, case_id: int, form: ReviewInput, then: str) -> str:
    """Store a review form for later; returns the token for the browser's session (the caller commits)."""
    token = secrets.token_urlsafe(32)
    values = {key: str(value) for key, value in asdict(form).items()}
    session.add(
        PendingReview(
            token_sha256=_digest(token), operator_id=operator_id, case_id=case_id, form={**values, "then": then}
        )
    )
    return token


def take_review(
    *, session: Session, token: object, operator_id: int, max_age_s: int
) -> tuple[int, ReviewInput, str] | None:
    """The kept (case id, form, then) for this token if it belongs to this operator and is recent enough.

    The row is deleted either way (used once), and so are rows older than `max_age_s`; the caller commits.
    """
    session.execute(delete(PendingReview).where(PendingReview.created_at < utcnow() - timedelta(seconds=max_age_s)))
    if not isinstance(token, str) or not token:
        return None
    row = session.scalars(select(PendingReview).where(PendingReview.token_sha256 == _digest(token))).one_or_none()
    if row is None:
        return None
    session.delete(row)
    if row.operator_id != operator_id:
        return None
    kept = {f.name: str(row.form.get(f.name, "")) for f in fields(ReviewInput)}
    return row.case_id, ReviewInput(**kept), str(row.form.get("then", ""))
