"""The console's queries on SQLite and on the real PostgreSQL: filters, queue order, counts, stats, sessions."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select
from starlette.datastructures import QueryParams

from console.filters import CaseFilter, FilterError, list_cases, model_versions_in_use, queue_size
from console.stats import compute_stats
from skintriage.db import session_factory
from skintriage.models import Case, Review
from tests.console.seed import CURRENT, OLD, seed


@pytest.fixture
def seeded_db(db_url: str, tmp_path: Path):
    from skintriage.storage import LocalImageStore

    return db_url, seed(db_url, LocalImageStore(tmp_path / "images"))


def ids(url: str, query: str) -> list[int]:
    with session_factory(url).begin() as s:
        return [c.id for c in list_cases(session=s, filters=CaseFilter.from_query(QueryParams(query))).cases]


@pytest.mark.slow
def test_filters_and_queue_order_on_both_databases(seeded_db):
    url, seeded = seeded_db
    c = seeded.cases
    assert set(ids(url, "tier=HIGH")) == {c["a_high"], c["b_high_old"]}
    assert ids(url, f"model_version={OLD['classifier']}") == [c["a_low"]]
    assert len(ids(url, f"model_version={CURRENT['classifier']}")) == 5
    assert ids(url, "model_version=%25") == []  # a literal %, not a wildcard
    assert ids(url, "view=review") == [c["b_high_old"], c["a_high"], c["b_uncertain"], c["a_medium"], c["a_low"]]
    assert ids(url, "view=retake") == [c["b_failed"], c["b_retake"]]
    with session_factory(url).begin() as s:
        s.add(Review(case_id=c["a_high"], agrees=True, corrected_label="MEL"))
    assert ids(url, "reviewed=yes") == [c["a_high"]]
    assert c["a_high"] not in ids(url, "view=review")
    with session_factory(url).begin() as s:
        assert queue_size(session=s) == 4
        page = list_cases(session=s, filters=CaseFilter.from_query(QueryParams("status=done")))
        assert page.total == 5
        assert page.tier_counts == {"HIGH": 2, "MEDIUM": 1, "LOW": 1, "UNCERTAIN": 1}
        assert set(model_versions_in_use(session=s)) == set(CURRENT.values()) | set(OLD.values())


@pytest.mark.slow
def test_sql_metacharacters_reach_the_database_only_as_values(seeded_db):
    url, _ = seeded_db
    for payload in ("' OR '1'='1", '"; DROP TABLE cases; --', "x' UNION SELECT 1 --", "\\"):
        assert ids(url, f"model_version={payload}") == []
        with pytest.raises(FilterError):
            CaseFilter.from_query(QueryParams({"tier": payload}))
    with session_factory(url).begin() as s:
        assert len(s.scalars(select(Case.id)).all()) == 8


@pytest.mark.slow
def test_dashboard_stats_on_both_databases(seeded_db):
    url, seeded = seeded_db
    with session_factory(url).begin() as s:
        s.add(Review(case_id=seeded.cases["a_high"], agrees=False, corrected_label="NV"))
    with session_factory(url).begin() as s:
        stats = compute_stats(session=s, days=30)
    assert stats.total == 8 and stats.reviewed == 1 and stats.reviewable == 5
    assert stats.confusion == {("MEL", "NV"): 1}
    assert stats.median_reply_s == 12.0 and stats.cannot_assess == 0
    with session_factory(url).begin() as s:
        s.add(Review(case_id=seeded.cases["b_uncertain"], agrees=False, verdict="cannot_assess"))
    with session_factory(url).begin() as s:
        stats = compute_stats(session=s, days=30)
        # Rows written with `agrees` alone get the matching verdict.
        assert [r.verdict for r in s.scalars(select(Review).order_by(Review.id))] == ["disagree", "cannot_assess"]
    assert stats.reviewed == 2 and stats.cannot_assess == 1
    assert stats.confusion == {("MEL", "NV"): 1}
    assert sum(a.reviewed for a in stats.agreement.values()) == 1


@pytest.mark.slow
def test_review_claims_on_both_databases(seeded_db):
    from datetime import timedelta

    from console.claims import claim_case, release_claim
    from console.filters import next_in_queue
    from skintriage.models import Operator, utcnow

    url, seeded = seeded_db
    c, ops = seeded.cases, seeded.operators
    with session_factory(url).begin() as s:
        rita, adam = s.get(Operator, ops["rita"]), s.get(Operator, ops["adam"])
        claim = claim_case(session=s, case=s.get(Case, c["a_high"]), operator=rita, seconds=600)
        assert claim is not None and claim.operator_id == rita.id
    with session_factory(url).begin() as s:
        rita, adam = s.get(Operator, ops["rita"]), s.get(Operator, ops["adam"])
        # Held by rita: adam does not get it, and his queue walk passes it by; rita's does not.
        claim = claim_case(session=s, case=s.get(Case, c["a_high"]), operator=adam, seconds=600)
        assert claim is not None and claim.username == "rita"
        assert next_in_queue(session=s, after=c["b_high_old"], operator_id=adam.id) == c["b_uncertain"]
        assert next_in_queue(session=s, after=c["b_high_old"], operator_id=rita.id) == c["a_high"]
        # A lapsed claim is free again (times compared are stored UTC timestamps on both databases).
        s.get(Case, c["a_high"]).claimed_until = utcnow() - timedelta(seconds=1)
        s.flush()
        assert next_in_queue(session=s, after=c["b_high_old"], operator_id=adam.id) == c["a_high"]
        claim = claim_case(session=s, case=s.get(Case, c["a_high"]), operator=adam, seconds=600)
        assert claim is not None and claim.operator_id == adam.id
        release_claim(session=s, case=s.get(Case, c["a_high"]), operator=rita)  # not hers: stays
        s.refresh(s.get(Case, c["a_high"]))
        assert s.get(Case, c["a_high"]).claimed_by_id == adam.id
        release_claim(session=s, case=s.get(Case, c["a_high"]), operator=adam)
        s.refresh(s.get(Case, c["a_high"]))
        assert s.get(Case, c["a_high"]).claimed_by_id is None
