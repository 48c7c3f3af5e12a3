"""The case list's filters, ordering, paging and counts, built as bound SQLAlchemy expressions.

Every filter value is either checked against a closed set (tier, status, reviewed, disagreement) or parsed
(dates, numbers) or bound as a parameter (model version), so no user text is ever spliced into SQL.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from urllib.parse import urlencode

from sqlalchemy import Select, Text, and_, case, cast, exists, func, select
from sqlalchemy.orm import Session, aliased
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.selectable import ScalarSelect
from starlette.datastructures import QueryParams

from console.claims import free_for
from skintriage.models import Case, CaseStatus, Review, utcnow
from skintriage.vocabulary import Label, ReviewVerdict, Tier

# Order of the "needs review" queue: the riskiest first, then the ones a doctor may have to act on.
QUEUE_TIERS: tuple[str, ...] = (Tier.HIGH, Tier.UNCERTAIN, Tier.MEDIUM, Tier.LOW)
# Cases with no triage to review (the photo was refused, or processing gave up) wait in a lane of their own.
RETAKE_LANE_STATUSES: tuple[str, ...] = (CaseStatus.REJECTED, CaseStatus.FAILED)
# Tiers that tell the patient nothing urgent: a melanoma the reviewer sees in one of these was missed by the model.
MISSED_TIERS: tuple[str, ...] = (Tier.LOW, Tier.MEDIUM)
# view=second: reviewed cases waiting for a blinded second read (console/safety.py compares the two reads).
VIEWS: tuple[str, ...] = ("all", "review", "retake", "second")
# disagreement=any: the reviewers' verdict (the latest unblinded review) disagrees with the model;
# disagreement=missed_mel: the model said LOW or MEDIUM and the reviewers' label is melanoma.
DISAGREEMENTS: tuple[str, ...] = ("any", "missed_mel")
ALL_TIERS: tuple[str, ...] = tuple(t.value for t in Tier)
ALL_STATUSES: tuple[str, ...] = tuple(s.value for s in CaseStatus)
PER_PAGE_DEFAULT = 50
PER_PAGE_MAX = 200
MODEL_VERSION_MAX = 128


class FilterError(ValueError):
    """A filter value the case list cannot use; the message says what is accepted."""


def _one_of(values: list[str], allowed: tuple[str, ...], name: str) -> tuple[str, ...]:
    picked = tuple(v for v in values if v)
    bad = [v for v in picked if v not in allowed]
    if bad:
        raise FilterError(f"unknown {name} {bad[0]!r}; use one of {', '.join(allowed)}")
    return tuple(dict.fromkeys(picked))


def _date(value: str | None, name: str) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise FilterError(f"{name} must be a date like 2025-01-31") from exc


def _positive_int(value: str | None, name: str, default: int, maximum: int | None = None) -> int:
    if value in (None, ""):
        return default
    if not value.isdigit() or int(value) < 1:
        raise FilterError(f"{name} must be a whole number of at least 1")
    number = int(value)
    return min(number, maximum) if maximum else number


def reviewed_clause() -> ColumnElement[bool]:
    """True for cases with at least one review."""
    return exists(select(Review.id).where(Review.case_id == Case.id))


def reference_review_id() -> ScalarSelect[int]:
    """Per case, the id of the review that stands for the reviewers' verdict: the latest unblinded one
    (the SQL twin of console.stats.reference_reviews)."""
    return (
        select(Review.id)
        .where(Review.case_id == Case.id, Review.blinded.is_(False))
        .order_by(Review.created_at.desc(), Review.id.desc())
        .limit(1)
        .correlate(Case)
        .scalar_subquery()
    )


def disagreement_clause(kind: str) -> ColumnElement[bool]:
    """True for cases whose reviewers' verdict disagrees with the model (`kind` from DISAGREEMENTS)."""
    if kind not in DISAGREEMENTS:
        raise FilterError(f"unknown disagreement {kind!r}; use one of {', '.join(DISAGREEMENTS)}")
    ref = aliased(Review)
    conditions: list[ColumnElement[bool]] = [ref.id == reference_review_id()]
    if kind == "any":
        conditions.append(ref.verdict == ReviewVerdict.DISAGREE)
    else:
        # As console.stats.reviewer_label: the model's label when the reviewer agrees, the correction otherwise.
        label = case((ref.verdict == ReviewVerdict.AGREE, Case.label), else_=ref.corrected_label)
        conditions.extend(
            [
                ref.verdict != ReviewVerdict.CANNOT_ASSESS,
                label == Label.MEL,
                Case.status == CaseStatus.DONE,
                Case.tier.in_(MISSED_TIERS),
            ]
        )
    return exists(select(ref.id).where(*conditions))


def second_read_wanted_clause() -> ColumnElement[bool]:
    """True for triaged cases with an unblinded review and no blinded second read yet."""
    first = exists(select(Review.id).where(Review.case_id == Case.id, Review.blinded.is_(False)))
    second = exists(select(Review.id).where(Review.case_id == Case.id, Review.blinded.is_(True)))
    return and_(Case.status == CaseStatus.DONE, Case.tier.in_(QUEUE_TIERS), first, ~second)


def model_version_clause(version: str) -> ColumnElement[bool]:
    """Cases whose model_versions JSON holds exactly this version string as a value."""
    # The JSON text holds each value as a JSON string literal, so match the quoted form.
    return cast(Case.model_versions, Text).contains(json.dumps(version), autoescape=True)


@dataclass(frozen=True)
class CaseFilter:
    """What the operator asked to see."""

    tiers: tuple[str, ...] = ()
    statuses: tuple[str, ...] = ()
    reviewed: bool | None = None
    date_from: date | None = None
    date_to: date | None = None
    model_version: str | None = None
    queue: bool = False
    retake_lane: bool = False  # view=retake: unreviewed failed and retake cases, longest-waiting first
    second_read: bool = False  # view=second: reviewed cases waiting for a blinded second read
    # Set by the route, never from the query: with view=second, leave out the cases this operator reviewed.
    second_reader: int | None = None
    disagreement: str | None = None  # one of DISAGREEMENTS
    page: int = 1
    per_page: int = PER_PAGE_DEFAULT

    @classmethod
    def from_query(cls, params: QueryParams) -> CaseFilter:
        """Parse the case list's query string; FilterError for values it cannot use."""
        reviewed_raw = params.get("reviewed", "")
        if reviewed_raw not in ("", "yes", "no"):
            raise FilterError("reviewed must be yes, no or empty")
        view = params.get("view", "")
        if view not in ("", *VIEWS):
            raise FilterError(f"view must be one of {', '.join(VIEWS)}")
        disagreement = params.get("disagreement") or None
        if disagreement is not None and disagreement not in DISAGREEMENTS:
            raise FilterError(f"disagreement must be one of {', '.join(DISAGREEMENTS)} or empty")
        version = params.get("model_version") or None
        if version is not None and len(version) > MODEL_VERSION_MAX:
            raise FilterError(f"model_version is longer than {MODEL_VERSION_MAX} characters")
        date_from = _date(params.get("date_from"), "date_from")
        date_to = _date(params.get("date_to"), "date_to")
        if date_from and date_to and date_from > date_to:
            raise FilterError("date_from is after date_to; swap them")
        return cls(
            tiers=_one_of(params.getlist("tier"), ALL_TIERS, "tier"),
            statuses=_one_of(params.getlist("status"), ALL_STATUSES, "status"),
            reviewed={"yes": True, "no": False}.get(reviewed_raw),
            date_from=date_from,
            date_to=date_to,
            model_version=version,
            queue=view == "review",
            retake_lane=view == "retake",
            second_read=view == "second",
            disagreement=disagreement,
            page=_positive_int(params.get("page"), "page", 1),
            per_page=_positive_int(params.get("per_page"), "per_page", PER_PAGE_DEFAULT, PER_PAGE_MAX),
        )

    def conditions(self, *, with_tiers: bool = True) -> list[ColumnElement[bool]]:
        """WHERE clauses for these filters (with_tiers=False for per-tier counts)."""
        clauses: list[ColumnElement[bool]] = []
        if with_tiers and self.tiers:
            clauses.append(Case.tier.in_(self.tiers))
        if self.statuses:
            clauses.append(Case.status.in_(self.statuses))
        if self.reviewed is True:
            clauses.append(reviewed_clause())
        elif self.reviewed is False:
            clauses.append(~reviewed_clause())
        if self.date_from:
            clauses.append(Case.received_at >= datetime.combine(self.date_from, time.min, UTC))
        if self.date_to:
            clauses.append(Case.received_at < datetime.combine(self.date_to + timedelta(days=1), time.min, UTC))
        if self.model_version:
            clauses.append(model_version_clause(self.model_version))
        if self.queue:
            clauses.extend([Case.status == CaseStatus.DONE, Case.tier.in_(QUEUE_TIERS), ~reviewed_clause()])
        if self.retake_lane:
            clauses.extend([Case.status.in_(RETAKE_LANE_STATUSES), ~reviewed_clause()])
        if self.second_read:
            clauses.append(second_read_wanted_clause())
            if self.second_reader is not None:
                own = select(Review.id).where(Review.case_id == Case.id, Review.operator_id == self.second_reader)
                clauses.append(~exists(own))
        if self.disagreement:
            clauses.append(disagreement_clause(self.disagreement))
        return clauses

    def statement(self) -> Select[tuple[Case]]:
        """The ordered SELECT for these filters (without paging)."""
        stmt = select(Case).where(*self.conditions())
        if self.queue:
            priority = case({tier: i for i, tier in enumerate(QUEUE_TIERS)}, value=Case.tier, else_=len(QUEUE_TIERS))
            # Within a tier, whoever has waited longest comes first.
            return stmt.order_by(priority, Case.received_at.asc(), Case.id.asc())
        if self.retake_lane:
            return stmt.order_by(Case.received_at.asc(), Case.id.asc())
        return stmt.order_by(Case.received_at.desc(), Case.id.desc())

    def params(self, **overrides: Any) -> list[tuple[str, str]]:
        """These filters as query-string pairs (for paging links and the CSV export)."""
        f = replace(self, **overrides) if overrides else self
        pairs: list[tuple[str, str]] = [("tier", t) for t in f.tiers] + [("status", s) for s in f.statuses]
        if f.reviewed is not None:
            pairs.append(("reviewed", "yes" if f.reviewed else "no"))
        if f.date_from:
            pairs.append(("date_from", f.date_from.isoformat()))
        if f.date_to:
            pairs.append(("date_to", f.date_to.isoformat()))
        if f.model_version:
            pairs.append(("model_version", f.model_version))
        if f.queue:
            pairs.append(("view", "review"))
        if f.retake_lane:
            pairs.append(("view", "retake"))
        if f.second_read:
            pairs.append(("view", "second"))
        if f.disagreement:
            pairs.append(("disagreement", f.disagreement))
        if f.page != 1:
            pairs.append(("page", str(f.page)))
        if f.per_page != PER_PAGE_DEFAULT:
            pairs.append(("per_page", str(f.per_page)))
        return pairs

    def query_string(self, **overrides: Any) -> str:
        """These filters URL-encoded."""
        return urlencode(self.params(**overrides))


@dataclass
class CasePage:
    """One page of the case list and its counts."""

    cases: list[Case]
    total: int
    tier_counts: dict[str, int]
    page: int
    pages: int
    reviewed_case_ids: set[int]


def list_cases(*, session: Session, filters: CaseFilter) -> CasePage:
    """Run the filtered, ordered, paged case query and the counts shown above it."""
    total = session.scalar(select(func.count()).select_from(Case).where(*filters.conditions())) or 0
    pages = max(1, -(-total // filters.per_page))
    page = min(filters.page, pages)
    cases = list(
        session.scalars(filters.statement().offset((page - 1) * filters.per_page).limit(filters.per_page)).all()
    )
    rows = session.execute(
        select(Case.tier, func.count()).where(*filters.conditions(with_tiers=False)).group_by(Case.tier)
    ).all()
    tier_counts = {tier or "none": count for tier, count in rows}
    ids = [c.id for c in cases]
    reviewed = set(session.scalars(select(Review.case_id).where(Review.case_id.in_(ids)))) if ids else set()
    return CasePage(cases, total, tier_counts, page, pages, reviewed)


def lane_of(case: Case) -> CaseFilter:
    """The queue a case waits in: the failed and retake lane, or the review queue of triaged cases."""
    return CaseFilter(retake_lane=True) if case.status in RETAKE_LANE_STATUSES else CaseFilter(queue=True)


def next_in_queue(
    *, session: Session, after: int, lane: CaseFilter | None = None, operator_id: int | None = None
) -> int | None:
    """The case the queue (`lane`, by default the review queue) lists after `after` (wrapping round to its
    start), or None when nothing else waits. With `operator_id`, cases another reviewer holds a live claim
    on are skipped. Call it before saving the review of `after`, which takes that case out of the queue."""
    lane = lane or CaseFilter(queue=True)
    stmt = lane.statement().with_only_columns(Case.id)
    if operator_id is not None:
        stmt = stmt.where(free_for(operator_id, utcnow()) | (Case.id == after))
    ids = list(session.scalars(stmt).all())
    if after in ids:
        position = ids.index(after)
        ids = ids[position + 1 :] + ids[:position]
    return ids[0] if ids else None


def queue_size(*, session: Session) -> int:
    """How many finished cases still wait for a review."""
    return session.scalar(select(func.count()).select_from(Case).where(*CaseFilter(queue=True).conditions())) or 0


def retake_lane_size(*, session: Session) -> int:
    """How many failed and retake cases still wait for a review."""
    conditions = CaseFilter(retake_lane=True).conditions()
    return session.scalar(select(func.count()).select_from(Case).where(*conditions)) or 0


def model_versions_in_use(*, session: Session, limit: int = 200) -> list[str]:
    """Distinct model version strings recorded on cases (for the filter's choices)."""
    texts = session.scalars(select(cast(Case.model_versions, Text)).distinct().limit(limit)).all()
    versions: set[str] = set()
    for text in texts:
        try:
            data = json.loads(text) if text else {}
        except ValueError:
            continue
        if isinstance(data, dict):
            versions.update(str(v) for v in data.values() if v)
    return sorted(versions)
