"""Model safety against the reviewers: melanoma sensitivity and specificity with 95% intervals, missed melanomas,
breakdowns by classifier version, kind of photo and reviewer, and Cohen's kappa between blinded second reads.

The reference standard is the reviewers' label (console.stats.reviewer_label) on the review that stands for a
case (console.stats.reference_reviews: the latest unblinded one), for finished cases with a reviewable tier
(HIGH, UNCERTAIN, MEDIUM, LOW) received in the period. Reviews saying "cannot assess" give no label and are
counted apart. The model "says melanoma" by one of two rules, both shown: HIGH only, or HIGH or UNCERTAIN
(UNCERTAIN also sends the patient to a doctor, and the UNCERTAIN band lies just below the HIGH threshold).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from console.filters import MISSED_TIERS, QUEUE_TIERS
from console.stats import period_bounds, reference_reviews, reviewer_label
from skintriage.models import Case, CaseStatus, Operator, Review
from skintriage.vocabulary import LABELS, Label, Tier

CONFIDENCE = 0.95
# Which tiers count as the model saying "melanoma", by rule.
POSITIVE_RULES: dict[str, tuple[str, ...]] = {
    "high": (Tier.HIGH,),
    "high_or_uncertain": (Tier.HIGH, Tier.UNCERTAIN),
}
RULE_WORDS: dict[str, str] = {"high": "HIGH only", "high_or_uncertain": "HIGH or UNCERTAIN"}
NOT_RECORDED = "not recorded"


def wilson_interval(successes: int, trials: int, *, confidence: float = CONFIDENCE) -> tuple[float, float] | None:
    """Wilson score interval for a proportion (scipy's binomtest), None without trials."""
    if trials == 0:
        return None
    if not 0 <= successes <= trials:
        raise ValueError(f"successes must be between 0 and trials ({trials}); got {successes}")
    from scipy.stats import binomtest  # scipy is slow to import: only when a page needs it

    ci = binomtest(successes, trials).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


@dataclass(frozen=True)
class Proportion:
    """k of n, with its share and 95% Wilson interval."""

    k: int
    n: int

    @property
    def share(self) -> float | None:
        """k / n, None when n is 0."""
        return self.k / self.n if self.n else None

    @property
    def interval(self) -> tuple[float, float] | None:
        """95% Wilson score interval, None when n is 0."""
        return wilson_interval(self.k, self.n)


@dataclass
class Confusion:
    """Model "melanoma" (by one rule) against the reviewers' melanoma label."""

    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0

    def add(self, *, model_says_mel: bool, reviewer_says_mel: bool) -> None:
        """Count one judged case."""
        if reviewer_says_mel:
            if model_says_mel:
                self.tp += 1
            else:
                self.fn += 1
        elif model_says_mel:
            self.fp += 1
        else:
            self.tn += 1

    @property
    def sensitivity(self) -> Proportion:
        """Melanomas (per the reviewers) the model flagged."""
        return Proportion(self.tp, self.tp + self.fn)

    @property
    def specificity(self) -> Proportion:
        """Non-melanomas (per the reviewers) the model did not flag."""
        return Proportion(self.tn, self.tn + self.fp)


@dataclass(frozen=True)
class JudgedCase:
    """A case with the reviewers' verdict on it."""

    case_id: int
    received_at: datetime
    tier: str
    model_label: str | None
    prob_mel: float | None
    reviewer_label: str  # MEL, NV or OTHER
    classifier: str  # classifier version, or NOT_RECORDED
    modality: str  # dermoscopic, clinical, unknown, or NOT_RECORDED
    reviewer: str  # username of the reference review's operator

    @property
    def reviewer_says_mel(self) -> bool:
        """The reviewers' label is melanoma."""
        return self.reviewer_label == Label.MEL

    def model_says_mel(self, rule: str) -> bool:
        """The model's tier counts as melanoma under `rule` (a POSITIVE_RULES key)."""
        return self.tier in POSITIVE_RULES[rule]


def confusions(cases: list[JudgedCase]) -> dict[str, Confusion]:
    """One confusion table per positive rule."""
    tables = {rule: Confusion() for rule in POSITIVE_RULES}
    for c in cases:
        for rule, table in tables.items():
            table.add(model_says_mel=c.model_says_mel(rule), reviewer_says_mel=c.reviewer_says_mel)
    return tables


@dataclass
class Breakdown:
    """Sensitivity and specificity for the cases sharing one value (a version, a kind of photo, a reviewer)."""

    key: str
    cases: int
    melanomas: int
    by_rule: dict[str, Confusion]


def breakdown(cases: list[JudgedCase], key: Callable[[JudgedCase], str]) -> list[Breakdown]:
    """Group judged cases by `key` (sorted by key) and count each group."""
    groups: dict[str, list[JudgedCase]] = {}
    for c in cases:
        groups.setdefault(key(c), []).append(c)
    return [
        Breakdown(name, len(group), sum(c.reviewer_says_mel for c in group), confusions(group))
        for name, group in sorted(groups.items())
    ]


def cohen_kappa(first: list[str], second: list[str]) -> float | None:
    """Cohen's kappa between two raters' labels (sklearn); None without pairs or when it is undefined
    (both raters used one and the same category for every case, so chance agreement is already 1)."""
    if len(first) != len(second):
        raise ValueError(f"both reads need one label per case; got {len(first)} and {len(second)}")
    if not first or len(set(first) | set(second)) < 2:
        return None
    from sklearn.metrics import cohen_kappa_score

    return float(cohen_kappa_score(first, second))


@dataclass
class SecondReads:
    """A first read (the reference review) against a blinded second read by another reviewer."""

    pairs: list[tuple[int, str, str]] = field(default_factory=list)  # (case id, first label, second label)
    cannot_assess: int = 0  # pairs left out: one of the reads could not assess the case
    waiting: int = 0  # cases in the period with a first read and no blinded second read

    @property
    def agreed(self) -> Proportion:
        """Pairs whose two labels are the same."""
        return Proportion(sum(a == b for _, a, b in self.pairs), len(self.pairs))

    @property
    def kappa(self) -> float | None:
        """Cohen's kappa over the three labels (MEL, NV, OTHER)."""
        return cohen_kappa([a for _, a, _ in self.pairs], [b for _, _, b in self.pairs])

    @property
    def kappa_melanoma(self) -> float | None:
        """Cohen's kappa over melanoma or not."""
        return cohen_kappa(
            [str(a == Label.MEL) for _, a, _ in self.pairs], [str(b == Label.MEL) for _, _, b in self.pairs]
        )


@dataclass
class SafetyReport:
    """Everything the safety page shows for a period."""

    first_day: date
    last_day: date
    judged: list[JudgedCase]
    cannot_assess: int  # reviewed cases whose reference review gives no label
    unreviewed: int  # finished, triaged cases without a reference review
    overall: dict[str, Confusion]
    by_classifier: list[Breakdown]
    by_modality: list[Breakdown]
    by_reviewer: list[Breakdown]
    second_reads: SecondReads

    @property
    def melanomas(self) -> int:
        """Judged cases the reviewers call melanoma."""
        return sum(c.reviewer_says_mel for c in self.judged)

    @property
    def missed(self) -> list[JudgedCase]:
        """Melanomas (per the reviewers) the model called LOW or MEDIUM, newest first."""
        found = [c for c in self.judged if c.reviewer_says_mel and c.tier in MISSED_TIERS]
        return sorted(found, key=lambda c: (c.received_at, c.case_id), reverse=True)


def _second_reads(
    *,
    session: Session,
    references: dict[int, Review],
    labels: dict[int, str | None],
    since: datetime,
    until: datetime,
) -> SecondReads:
    """Pair each case's reference review with its earliest blinded read by another operator."""
    blinded = session.scalars(
        select(Review)
        .join(Case, Case.id == Review.case_id)
        .where(Case.received_at >= since, Case.received_at < until, Review.blinded.is_(True))
        .order_by(Review.created_at, Review.id)
    ).all()
    second: dict[int, Review] = {}
    for review in blinded:
        first = references.get(review.case_id)
        if first is not None and review.case_id not in second and review.operator_id != first.operator_id:
            second[review.case_id] = review
    result = SecondReads(waiting=sum(1 for case_id in references if case_id not in second))
    for case_id, review in sorted(second.items()):
        model_label = labels[case_id]
        first_label = reviewer_label(references[case_id], model_label)
        second_label = reviewer_label(review, model_label)
        if first_label is None or second_label is None:
            result.cannot_assess += 1
        else:
            result.pairs.append((case_id, first_label, second_label))
    return result


def compute_safety(*, session: Session, days: int = 90, today: date | None = None) -> SafetyReport:
    """The model's melanoma safety against the reviewers for cases received in the last `days` days (UTC)."""
    day_list, since, until = period_bounds(days=days, today=today)
    cases = session.scalars(
        select(Case).where(
            Case.received_at >= since,
            Case.received_at < until,
            Case.status == CaseStatus.DONE,
            Case.tier.in_(QUEUE_TIERS),
        )
    ).all()
    by_id = {c.id: c for c in cases}
    references = {
        case_id: review
        for case_id, review in reference_reviews(session=session, since=since, until=until).items()
        if case_id in by_id
    }
    operator_ids = {r.operator_id for r in references.values() if r.operator_id is not None}
    names: dict[int | None, str] = {}
    if operator_ids:
        rows = session.execute(select(Operator.id, Operator.username).where(Operator.id.in_(operator_ids)))
        names.update((op_id, username) for op_id, username in rows)

    judged: list[JudgedCase] = []
    cannot_assess = 0
    for case_id, review in references.items():
        c = by_id[case_id]
        label = reviewer_label(review, c.label)
        if label not in LABELS:
            cannot_assess += 1
            continue
        judged.append(
            JudgedCase(
                case_id=c.id,
                received_at=c.received_at,
                tier=str(c.tier),
                model_label=c.label,
                prob_mel=c.prob_mel,
                reviewer_label=label,
                classifier=(c.model_versions or {}).get("classifier") or NOT_RECORDED,
                modality=c.modality or NOT_RECORDED,
                reviewer=names.get(review.operator_id, "deleted operator"),
            )
        )
    judged.sort(key=lambda j: j.case_id)
    return SafetyReport(
        first_day=day_list[0],
        last_day=day_list[-1],
        judged=judged,
        cannot_assess=cannot_assess,
        unreviewed=len(by_id) - len(references),
        overall=confusions(judged),
        by_classifier=breakdown(judged, lambda j: j.classifier),
        by_modality=breakdown(judged, lambda j: j.modality),
        by_reviewer=breakdown(judged, lambda j: j.reviewer),
        second_reads=_second_reads(
            session=session,
            references=references,
            labels={i: c.label for i, c in by_id.items()},
            since=since,
            until=until,
        ),
    )
