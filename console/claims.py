"""Review claims: opening a case to review it claims it for a while, so two reviewers do not review the same case.

A claim is two columns on the case (who, and until when in UTC). Taking one is a single conditional UPDATE,
so of two reviewers opening the same case at once exactly one gets it; it lapses by itself at `claimed_until`
and is released when its holder saves a review. Every time compared is a stored UTC timestamp written from
`skintriage.models.utcnow()`, never the database's own clock, so SQLite and PostgreSQL agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import or_, update
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from skintriage.models import Case, CaseStatus, Operator, utcnow

# Cases a reviewer can give a verdict on (the case page shows the review form for these).
REVIEWABLE_STATUSES: tuple[str, ...] = (CaseStatus.DONE, CaseStatus.REJECTED, CaseStatus.FAILED)


@dataclass(frozen=True)
class Claim:
    """Who holds a case for review, and until when (UTC)."""

    operator_id: int | None
    username: str
    until: datetime


def free_for(operator_id: int, now: datetime) -> ColumnElement[bool]:
    """True for cases nobody else holds a live claim on (unclaimed, claimed by this operator, or lapsed)."""
    return or_(Case.claimed_by_id.is_(None), Case.claimed_by_id == operator_id, Case.claimed_until <= now)


def live_claim(case: Case, *, now: datetime | None = None) -> Claim | None:
    """The claim on a case if it has not lapsed."""
    now = now or utcnow()
    if case.claimed_by_id is None or case.claimed_until is None or case.claimed_until <= now:
        return None
    name = case.claimed_by.username if case.claimed_by else "another operator"
    return Claim(case.claimed_by_id, name, case.claimed_until)


def claim_case(*, session: Session, case: Case, operator: Operator, seconds: int) -> Claim | None:
    """Claim (or extend this operator's claim on) an unreviewed case for `seconds`; the caller commits.

    Returns the claim that holds the case afterwards: this operator's, or another reviewer's live one.
    """
    now = utcnow()
    session.execute(
        update(Case)
        .where(Case.id == case.id, free_for(operator.id, now))
        .values(claimed_by_id=operator.id, claimed_until=now + timedelta(seconds=seconds))
        .execution_options(synchronize_session=False)
    )
    session.refresh(case)
    return live_claim(case, now=now)


def release_claim(*, session: Session, case: Case, operator: Operator) -> None:
    """Drop this operator's claim on a case (after saving a review); someone else's claim stays."""
    session.execute(
        update(Case)
        .where(Case.id == case.id, Case.claimed_by_id == operator.id)
        .values(claimed_by_id=None, claimed_until=None)
        .execution_options(synchronize_session=False)
    )
