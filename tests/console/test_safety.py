"""The model-safety numbers (sensitivity, specificity, Wilson intervals, missed melanomas, breakdowns, second-read
kappa) on seeded reviews with known counts, on SQLite and PostgreSQL; the disagreement filter and the second-read
lane, whose SQL must pick the same cases."""

from __future__ import annotations

import math
from datetime import timedelta
from pathlib import Path
from statistics import NormalDist

import pytest
from sqlalchemy import select, update
from starlette.datastructures import QueryParams

from console.filters import CaseFilter, FilterError, list_cases
from console.safety import Proportion, cohen_kappa, compute_safety, wilson_interval
from console.stats import compute_stats
from skintriage.db import session_factory
from skintriage.models import Case, Operator, Review, utcnow
from tests.console.seed import CURRENT, OLD, Seeded, seed

HIGH, BOTH = "high", "high_or_uncertain"


def textbook_wilson(k: int, n: int) -> tuple[float, float]:
    """The Wilson score interval from its formula (independent of scipy)."""
    z = NormalDist().inv_cdf(0.975)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


@pytest.fixture
def seeded_db(db_url: str, tmp_path: Path) -> tuple[str, Seeded]:
    from skintriage.storage import LocalImageStore

    return db_url, seed(db_url, LocalImageStore(tmp_path / "images"))


def add_reviews(url: str, seeded: Seeded) -> dict[str, int]:
    """Reviews with known outcomes; returns operator ids (rita, adam and a third reviewer, bea).

    Reviewers' labels: a_high MEL (agree), b_high_old NV (disagree), b_uncertain MEL (agree), a_medium MEL
    (disagree: a missed melanoma), a_low NV then revised to MEL (the latest counts: a missed melanoma).
    """
    c, ops = seeded.cases, dict(seeded.operators)
    t0 = utcnow() - timedelta(hours=5)
    with session_factory(url).begin() as s:
        bea = Operator(username="bea", password_hash="not-a-hash")
        s.add(bea)
        s.flush()
        ops["bea"] = bea.id
        for minutes, (name, op, verdict, label) in enumerate(
            [
                ("a_high", "rita", "agree", "MEL"),
                ("b_high_old", "adam", "disagree", "NV"),
                ("b_uncertain", "rita", "agree", "MEL"),
                ("a_medium", "rita", "disagree", "MEL"),
                ("a_low", "rita", "agree", "NV"),
                ("a_low", "adam", "disagree", "MEL"),
            ]
        ):
            s.add(
                Review(
                    case_id=c[name],
                    operator_id=ops[op],
                    agrees=verdict == "agree",
                    verdict=verdict,
                    corrected_label=label,
                    created_at=t0 + timedelta(minutes=minutes),
                )
            )
        kinds = {
            "a_high": "dermoscopic",
            "b_high_old": "dermoscopic",
            "b_uncertain": "clinical",
            "a_medium": "clinical",
        }
        for name, kind in kinds.items():
            s.execute(update(Case).where(Case.id == c[name]).values(modality=kind))
    return ops


def add_second_reads(url: str, seeded: Seeded, ops: dict[str, int]) -> None:
    """Blinded reads: pairs (MEL, MEL), (NV, NV), (MEL, NV), (MEL, OTHER); one cannot-assess pair; one blinded
    read by the first reader (not a second read), and one that would flip the reference if it counted."""
    c = seeded.cases
    t0 = utcnow() - timedelta(hours=1)
    reads = [
        ("a_high", "adam", "agree", "MEL"),
        ("a_high", "bea", "disagree", "NV"),  # a later blinded read: only the earliest one pairs
        ("b_high_old", "rita", "disagree", "NV"),
        ("b_uncertain", "bea", "disagree", "NV"),
        ("a_medium", "rita", "disagree", "NV"),  # rita gave the reference review: not a second read
        ("a_medium", "adam", "agree", "OTHER"),
        ("a_low", "bea", "cannot_assess", None),
    ]
    with session_factory(url).begin() as s:
        for minutes, (name, op, verdict, label) in enumerate(reads):
            s.add(
                Review(
                    case_id=c[name],
                    operator_id=ops[op],
                    agrees=verdict == "agree",
                    verdict=verdict,
                    corrected_label=label,
                    blinded=True,
                    created_at=t0 + timedelta(minutes=minutes),
                )
            )


def filtered(url: str, query: str) -> set[int]:
    with session_factory(url).begin() as s:
        return {c.id for c in list_cases(session=s, filters=CaseFilter.from_query(QueryParams(query))).cases}


def test_wilson_interval_is_the_textbook_one():
    for k, n in [(1, 4), (0, 1), (8, 10), (10, 10), (37, 52)]:
        assert wilson_interval(k, n) == pytest.approx(textbook_wilson(k, n), abs=1e-9)
    assert wilson_interval(8, 10) == pytest.approx((0.4902, 0.9433), abs=1e-4)
    assert wilson_interval(0, 0) is None
    assert Proportion(0, 0).share is None and Proportion(0, 0).interval is None
    with pytest.raises(ValueError, match="between 0 and trials"):
        wilson_interval(5, 4)


def test_cohen_kappa_known_values_and_undefined_cases():
    # 2x2 with po = 0.7, pe = 0.5 -> kappa 0.4.
    first = ["y"] * 5 + ["n"] * 5
    second = ["y"] * 4 + ["n"] + ["y"] * 2 + ["n"] * 3
    assert cohen_kappa(first, second) == pytest.approx(0.4)
    assert cohen_kappa(["a", "b"], ["a", "b"]) == pytest.approx(1.0)
    assert cohen_kappa([], []) is None
    assert cohen_kappa(["MEL", "MEL"], ["MEL", "MEL"]) is None  # one category only: undefined
    with pytest.raises(ValueError, match="one label per case"):
        cohen_kappa(["a"], [])


@pytest.mark.slow
def test_sensitivity_specificity_missed_and_breakdowns(seeded_db):
    url, seeded = seeded_db
    c = seeded.cases
    with session_factory(url).begin() as s:
        empty = compute_safety(session=s, days=30)
    assert empty.judged == [] and empty.unreviewed == 5 and empty.overall[HIGH].sensitivity.interval is None

    add_reviews(url, seeded)
    with session_factory(url).begin() as s:
        report = compute_safety(session=s, days=30)
    assert len(report.judged) == 5 and report.melanomas == 4
    assert (report.cannot_assess, report.unreviewed) == (0, 0)
    high, both = report.overall[HIGH], report.overall[BOTH]
    # HIGH only: a_high TP; b_uncertain, a_medium, a_low FN; b_high_old FP.
    assert (high.tp, high.fn, high.fp, high.tn) == (1, 3, 1, 0)
    # HIGH or UNCERTAIN: b_uncertain becomes a TP.
    assert (both.tp, both.fn, both.fp, both.tn) == (2, 2, 1, 0)
    assert (high.sensitivity.k, high.sensitivity.n, high.sensitivity.share) == (1, 4, 0.25)
    assert both.sensitivity.share == 0.5 and both.specificity.share == 0.0
    assert high.sensitivity.interval == pytest.approx(textbook_wilson(1, 4))
    assert both.specificity.interval == pytest.approx(textbook_wilson(0, 1))
    # Missed: LOW or MEDIUM with a melanoma label, newest first (a_medium 5 days old, a_low 10).
    assert [m.case_id for m in report.missed] == [c["a_medium"], c["a_low"]]
    assert {m.reviewer for m in report.missed} == {"rita", "adam"}

    by_classifier = {b.key: b for b in report.by_classifier}
    assert set(by_classifier) == {CURRENT["classifier"], OLD["classifier"]}
    old = by_classifier[OLD["classifier"]]
    assert (old.cases, old.melanomas, old.by_rule[HIGH].sensitivity.k, old.by_rule[HIGH].sensitivity.n) == (1, 1, 0, 1)
    current = by_classifier[CURRENT["classifier"]].by_rule[BOTH]
    assert (current.tp, current.fn, current.fp, current.tn) == (2, 1, 1, 0)
    by_modality = {b.key: b for b in report.by_modality}
    assert {k: (b.cases, b.melanomas) for k, b in by_modality.items()} == {
        "dermoscopic": (2, 1),
        "clinical": (2, 2),
        "not recorded": (1, 1),
    }
    clinical = by_modality["clinical"].by_rule
    assert clinical[HIGH].sensitivity.share == 0.0 and clinical[BOTH].sensitivity.share == 0.5
    assert by_modality["dermoscopic"].by_rule[HIGH].specificity == Proportion(0, 1)
    by_reviewer = {b.key: (b.cases, b.melanomas) for b in report.by_reviewer}
    assert by_reviewer == {"rita": (3, 3), "adam": (2, 1)}

    # The SQL filter picks exactly the cases the report lists as missed.
    assert filtered(url, "disagreement=missed_mel") == {m.case_id for m in report.missed}
    assert filtered(url, "disagreement=any") == {c["b_high_old"], c["a_medium"], c["a_low"]}
    assert filtered(url, "disagreement=any&tier=HIGH") == {c["b_high_old"]}
    # A case whose reviewer cannot assess it gives no label and leaves the figures.
    with session_factory(url).begin() as s:
        s.add(
            Review(
                case_id=c["a_high"],
                operator_id=seeded.operators["rita"],
                agrees=False,
                verdict="cannot_assess",
                created_at=utcnow(),
            )
        )
    with session_factory(url).begin() as s:
        later = compute_safety(session=s, days=30)
    assert later.cannot_assess == 1 and len(later.judged) == 4 and later.overall[HIGH].tp == 0
    # Outside the period: a_low (10 days old) drops out of a 7-day report.
    with session_factory(url).begin() as s:
        week = compute_safety(session=s, days=7)
    assert c["a_low"] not in {j.case_id for j in week.judged}


def test_second_reads_give_kappa_and_never_change_the_reference(seeded_db):
    url, seeded = seeded_db
    c = seeded.cases
    ops = add_reviews(url, seeded)
    with session_factory(url).begin() as s:
        before = compute_safety(session=s, days=30)
        dashboard_before = compute_stats(session=s, days=30)
    assert before.second_reads.waiting == 5 and before.second_reads.kappa is None
    assert filtered(url, "view=second") == {c[n] for n in ("a_high", "b_high_old", "b_uncertain", "a_medium", "a_low")}

    add_second_reads(url, seeded, ops)
    with session_factory(url).begin() as s:
        report = compute_safety(session=s, days=30)
        dashboard = compute_stats(session=s, days=30)
    reads = report.second_reads
    assert reads.pairs == sorted(
        [
            (c["a_high"], "MEL", "MEL"),
            (c["b_high_old"], "NV", "NV"),
            (c["b_uncertain"], "MEL", "NV"),
            (c["a_medium"], "MEL", "OTHER"),
        ]
    )
    assert (reads.cannot_assess, reads.waiting) == (1, 0)
    assert reads.agreed == Proportion(2, 4)
    # Three labels: po = 2/4, pe = (3*1 + 1*2 + 0*1)/16 = 5/16, kappa = (8/16 - 5/16)/(11/16) = 3/11.
    assert reads.kappa == pytest.approx(3 / 11)
    # Melanoma or not: po = 2/4, pe = (3*1 + 1*3)/16 = 6/16, kappa = (8 - 6)/(16 - 6) = 0.2.
    assert reads.kappa_melanoma == pytest.approx(0.2)
    # Blinded reads (e.g. bea's NV on a_high) change neither the safety figures nor the dashboard.
    for rule in (HIGH, BOTH):
        assert report.overall[rule] == before.overall[rule]
    assert [m.case_id for m in report.missed] == [m.case_id for m in before.missed]
    assert dashboard.agreement == dashboard_before.agreement and dashboard.confusion == dashboard_before.confusion
    assert filtered(url, "disagreement=any") == {c["b_high_old"], c["a_medium"], c["a_low"]}
    assert filtered(url, "view=second") == set()


def test_disagreement_filter_refuses_unknown_values_and_round_trips():
    with pytest.raises(FilterError, match="disagreement must be one of"):
        CaseFilter.from_query(QueryParams("disagreement=maybe"))
    f = CaseFilter.from_query(QueryParams("disagreement=missed_mel&view=second"))
    assert f.disagreement == "missed_mel" and f.second_read
    assert CaseFilter.from_query(QueryParams(f.query_string())) == f


def test_missed_melanomas_are_not_confused_by_a_missing_label(seeded_db):
    """Rows written with `agrees` alone (no corrected label) take the model's label, in Python and in SQL."""
    url, seeded = seeded_db
    c = seeded.cases
    with session_factory(url).begin() as s:
        s.add(Review(case_id=c["a_medium"], agrees=True))  # agrees with OTHER: not a melanoma
        s.add(Review(case_id=c["a_low"], agrees=False, corrected_label="MEL"))
        assert s.scalar(select(Review.verdict).where(Review.case_id == c["a_medium"])) == "agree"
    with session_factory(url).begin() as s:
        report = compute_safety(session=s, days=30)
    assert [m.case_id for m in report.missed] == [c["a_low"]]
    assert filtered(url, "disagreement=missed_mel") == {c["a_low"]}
    assert report.by_reviewer[0].key == "deleted operator"
