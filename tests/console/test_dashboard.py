"""Dashboard numbers (cases per day by tier, share reviewed, agreement per class, time to reply) and charts."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from console.stats import compute_stats
from skintriage.db import session_factory
from skintriage.models import Case, Review, utcnow


def add_review(url: str, case_id: int, *, agrees: bool, label: str | None = None) -> None:
    with session_factory(url).begin() as s:
        s.add(Review(case_id=case_id, operator_id=None, agrees=agrees, corrected_label=label))


def test_stats_count_cases_per_day_by_tier(console_db_url, seeded):
    with session_factory(console_db_url).begin() as s:
        stats = compute_stats(session=s, days=30)
    assert stats.total == 8
    today = utcnow().date()
    assert stats.days[-1] == today and len(stats.days) == 30
    per_day = {tier: sum(counts) for tier, counts in stats.per_day.items()}
    assert per_day == {"HIGH": 2, "MEDIUM": 1, "LOW": 1, "UNCERTAIN": 1, "RETAKE": 1, "none": 2}
    expected = [0] * 30
    with session_factory(console_db_url).begin() as s:
        for name in ("a_high", "b_high_old"):
            expected[stats.days.index(s.get(Case, seeded.cases[name]).received_at.date())] += 1
    assert stats.per_day["HIGH"] == expected


def test_stats_share_reviewed_and_agreement_use_the_latest_review(console_db_url, seeded):
    c = seeded.cases
    add_review(console_db_url, c["a_high"], agrees=True, label="MEL")
    add_review(console_db_url, c["b_uncertain"], agrees=True, label="MEL")
    add_review(console_db_url, c["b_uncertain"], agrees=False, label="NV")  # revised: the latest counts
    add_review(console_db_url, c["a_low"], agrees=False, label="OTHER")
    with session_factory(console_db_url).begin() as s:
        stats = compute_stats(session=s, days=30)
    assert stats.reviewable == 5  # done cases with HIGH/UNCERTAIN/MEDIUM/LOW
    assert stats.reviewed == 3
    assert stats.share_reviewed == 3 / 5
    assert (stats.agreement["MEL"].reviewed, stats.agreement["MEL"].agreed) == (2, 1)
    assert stats.agreement["MEL"].share == 0.5
    assert (stats.agreement["NV"].reviewed, stats.agreement["NV"].agreed) == (1, 0)
    assert stats.agreement["OTHER"].share is None
    assert stats.confusion == {("MEL", "MEL"): 1, ("MEL", "NV"): 1, ("NV", "OTHER"): 1}


def test_stats_median_time_to_reply(console_db_url, seeded):
    with session_factory(console_db_url).begin() as s:
        stats = compute_stats(session=s, days=30)
    # The seed delivers finished case i after 9 + i seconds: cases 0..6 are finished.
    assert sorted(stats.reply_seconds) == [9.0 + i for i in range(7)]
    assert stats.median_reply_s == 12.0


def test_stats_refuse_a_silly_period(console_db_url):
    import pytest

    with session_factory(console_db_url).begin() as s, pytest.raises(ValueError, match="between 1 and"):
        compute_stats(session=s, days=0)


@pytest.mark.slow
def test_dashboard_page_and_charts(reviewer, seeded):
    page = reviewer.get("/dashboard", params={"days": 30})
    assert page.status_code == 200
    assert '<span class="big" id="stat-total">8</span>' in page.text
    assert "12 s" in page.text  # median time to reply
    for name in ("cases_per_day", "reply_time", "agreement"):
        assert f'src="/dashboard/charts/{name}.png?days=30"' in page.text
        response = reviewer.get(f"/dashboard/charts/{name}.png", params={"days": 30})
        assert response.status_code == 200 and response.headers["content-type"] == "image/png"
        with Image.open(io.BytesIO(response.content)) as img:
            assert img.size == (800, 300)
    assert reviewer.get("/dashboard/charts/secrets.png").status_code == 404
