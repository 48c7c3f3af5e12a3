"""Numbers for the dashboard: cases per day by tier, share reviewed, operator-model agreement, time to reply."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from console.filters import QUEUE_TIERS
from skintriage.models import Case, CaseStatus, Review, utcnow
from skintriage.vocabulary import LABELS, ReviewVerdict, Tier

DAYS_MAX = 366


@dataclass
class Agreement:
    """How often operators agreed with the model for cases the model gave one label."""

    reviewed: int = 0
    agreed: int = 0

    @property
    def share(self) -> float | None:
        """Agreed / reviewed, None before any review."""
        return self.agreed / self.reviewed if self.reviewed else None


@dataclass
class DashboardStats:
    """Everything the dashboard shows for a period."""

    days: list[date]
    per_day: dict[str, list[int]]  # tier -> count per day, aligned with `days`
    total: int
    reviewable: int
    reviewed: int
    cannot_assess: int  # of `reviewed`, cases whose latest review says the photo cannot be judged
    agreement: dict[str, Agreement]
    confusion: dict[tuple[str, str], int]  # (model label, operator label) -> reviews
    reply_seconds: list[float] = field(repr=False)
    reply_median_per_day: list[float | None]

    @property
    def share_reviewed(self) -> float | None:
        """Reviewed / finished cases that have a tier worth reviewing."""
        return self.reviewed / self.reviewable if self.reviewable else None

    @property
    def day_rows(self) -> list[tuple[date, list[int]]]:
        """(day, counts in per_day's tier order) for days with cases, newest first."""
        rows = [(d, [counts[i] for counts in self.per_day.values()]) for i, d in enumerate(self.days)]
        return [row for row in reversed(rows) if any(row[1])]

    @property
    def median_reply_s(self) -> float | None:
        """Median seconds from photo received to answer delivered."""
        return statistics.median(self.reply_seconds) if self.reply_seconds else None

    @property
    def p90_reply_s(self) -> float | None:
        """90th percentile of the time to reply."""
        if len(self.reply_seconds) < 2:
            return self.median_reply_s
        return statistics.quantiles(self.reply_seconds, n=10, method="inclusive")[-1]


def period_bounds(*, days: int, today: date | None = None) -> tuple[list[date], datetime, datetime]:
    """The last `days` UTC days (today included) and the [since, until) instants that hold them."""
    if not 1 <= days <= DAYS_MAX:
        raise ValueError(f"days must be between 1 and {DAYS_MAX}")
    today = today or utcnow().date()
    first = today - timedelta(days=days - 1)
    day_list = [first + timedelta(days=i) for i in range(days)]
    return day_list, datetime.combine(first, time.min, UTC), datetime.combine(today + timedelta(days=1), time.min, UTC)


def reference_reviews(*, session: Session, since: datetime, until: datetime) -> dict[int, Review]:
    """Case id -> the review that stands for the reviewers' verdict on that case (cases received in [since, until)).

    The latest review counts (an operator may revise their verdict). Blinded second reads do not: they
    measure how well reviewers agree with each other (console/safety.py), not the model.
    """
    reviews = session.scalars(
        select(Review)
        .join(Case, Case.id == Review.case_id)
        .where(Case.received_at >= since, Case.received_at < until, Review.blinded.is_(False))
        .order_by(Review.created_at, Review.id)
    ).all()
    return {review.case_id: review for review in reviews}


def reviewer_label(review: Review, model_label: str | None) -> str | None:
    """The label a review gives the lesion: the model's when it agrees, its correction otherwise; None for
    "cannot assess" (and for a disagreement that named no label)."""
    if review.verdict == ReviewVerdict.CANNOT_ASSESS:
        return None
    return model_label if review.verdict == ReviewVerdict.AGREE else review.corrected_label


def compute_stats(*, session: Session, days: int = 30, today: date | None = None) -> DashboardStats:
    """Collect the dashboard's numbers for the last `days` days (UTC), today included."""
    day_list, since, until = period_bounds(days=days, today=today)
    index = {d: i for i, d in enumerate(day_list)}

    rows = session.execute(
        select(Case.id, Case.received_at, Case.tier, Case.status, Case.label, Case.delivered_at).where(
            Case.received_at >= since, Case.received_at < until
        )
    ).all()
    tiers = [t.value for t in Tier] + ["none"]
    per_day = {tier: [0] * days for tier in tiers}
    replies_by_day: dict[int, list[float]] = {}
    reply_seconds: list[float] = []
    reviewable_ids: dict[int, str | None] = {}
    for case_id, received_at, tier, status, label, delivered_at in rows:
        day = index[received_at.astimezone(UTC).date()]
        per_day[tier or "none"][day] += 1
        if delivered_at is not None:
            seconds = (delivered_at - received_at).total_seconds()
            reply_seconds.append(seconds)
            replies_by_day.setdefault(day, []).append(seconds)
        if status == CaseStatus.DONE and tier in QUEUE_TIERS:
            reviewable_ids[case_id] = label

    references = reference_reviews(session=session, since=since, until=until) if reviewable_ids else {}
    latest = {case_id: review for case_id, review in references.items() if case_id in reviewable_ids}
    agreement = {label: Agreement() for label in LABELS}
    confusion: dict[tuple[str, str], int] = {}
    cannot_assess = 0
    for case_id, review in latest.items():
        if review.verdict == ReviewVerdict.CANNOT_ASSESS:
            # Neither agreement nor disagreement: counted on its own, outside the agreement table.
            cannot_assess += 1
            continue
        model_label = reviewable_ids[case_id]
        if model_label not in agreement:
            continue
        agreement[model_label].reviewed += 1
        agreement[model_label].agreed += int(review.agrees)
        operator_label = reviewer_label(review, model_label) or "?"
        confusion[(model_label, operator_label)] = confusion.get((model_label, operator_label), 0) + 1

    return DashboardStats(
        days=day_list,
        per_day={tier: counts for tier, counts in per_day.items() if any(counts)},
        total=len(rows),
        reviewable=len(reviewable_ids),
        reviewed=len(latest),
        cannot_assess=cannot_assess,
        agreement=agreement,
        confusion=confusion,
        reply_seconds=reply_seconds,
        reply_median_per_day=[
            statistics.median(replies_by_day[i]) if i in replies_by_day else None for i in range(days)
        ],
    )
