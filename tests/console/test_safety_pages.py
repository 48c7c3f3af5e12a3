"""The safety page, the case list's disagreement filter and second-read lane, and the blinded second read on the
case page (the earlier review hidden, the read stored as blinded, refused to a reader who has seen the reviews)."""

from __future__ import annotations

import csv
import io
import re

import pytest
from sqlalchemy import select

from skintriage.db import session_factory
from skintriage.models import AuditEvent, OutboxMessage, Review
from tests.console.session_helpers import csrf_of
from tests.console.test_safety import add_reviews, textbook_wilson


def case_ids(html: str) -> list[int]:
    """Case numbers in a page's case table, in order (links with or without ?read=second)."""
    return [int(n) for n in re.findall(r'<a href="/cases/(\d+)(?:\?read=second)?" class="case-link">', html)]


def percent(x: float) -> str:
    return f"{x * 100:.1f} %"


def review(client, case_id: int, **fields: str):  # noqa: ANN001, ANN201
    """Open a case page (with ?read=second when fields say so) and post a review from it."""
    query = "?read=second" if fields.get("read") == "second" else ""
    page = client.get(f"/cases/{case_id}{query}")
    return client.post(f"/cases/{case_id}/reviews", data={"csrf_token": csrf_of(page.text), **fields})


def test_safety_page_shows_the_figures_and_links_the_missed_melanomas(reviewer, seeded, console_db_url, client):
    c = seeded.cases
    add_reviews(console_db_url, seeded)
    page = reviewer.get("/safety", params={"days": 30})
    assert page.status_code == 200
    html = page.text
    assert 'id="nav-safety"' in html
    assert '<span class="big" id="safety-judged">5</span>' in html
    assert '<span class="big" id="safety-melanomas">4</span>' in html
    assert '<span class="big" id="safety-missed-count">2</span>' in html
    overall = html.split('id="safety-overall"')[1].split("</table>")[0]
    high_row, both_row = overall.split('data-rule="high"')[1], overall.split('data-rule="high_or_uncertain"')[1]
    low, high = textbook_wilson(1, 4)
    assert f'25.0 %</span> <span class="hint">(1/4; {percent(low)}–{percent(high)})' in high_row
    assert '50.0 %</span> <span class="hint">(2/4;' in both_row
    missed = html.split('id="safety-missed"')[1].split("</table>")[0]
    assert case_ids(missed) == [c["a_medium"], c["a_low"]]
    assert 'id="missed-as-list"' in html and "disagreement=missed_mel" in html
    for table in ("by-classifier", "by-modality", "by-reviewer"):
        assert f'id="{table}"' in html
    assert 'data-key="clinical"' in html and 'data-key="rita"' in html
    assert '<td id="second-pairs">0</td>' in html and '<span id="second-waiting">5</span>' in html
    # The dashboard links here; the page needs a login.
    assert 'href="/safety?days=30"' in reviewer.get("/dashboard", params={"days": 30}).text
    assert reviewer.get("/safety", params={"days": 0}).status_code == 422
    client.cookies.clear()
    anonymous = client.get("/safety")
    assert anonymous.status_code == 303 and anonymous.headers["location"].startswith("/login")


def test_case_list_filters_disagreements(reviewer, seeded, console_db_url):
    c = seeded.cases
    add_reviews(console_db_url, seeded)
    missed = reviewer.get("/cases", params={"disagreement": "missed_mel"})
    assert missed.status_code == 200
    assert case_ids(missed.text) == [c["a_medium"], c["a_low"]]
    assert '<option value="missed_mel" selected>' in missed.text
    disagree = reviewer.get("/cases", params={"disagreement": "any"})
    assert set(case_ids(disagree.text)) == {c["b_high_old"], c["a_medium"], c["a_low"]}
    bad = reviewer.get("/cases", params={"disagreement": "sometimes"})
    assert bad.status_code == 400 and "disagreement must be one of" in bad.text


@pytest.mark.slow
def test_blinded_second_read_hides_the_first_review_and_is_stored_as_blinded(reviewer, admin_client, seeded):
    case_id = seeded.cases["a_high"]
    first = review(
        reviewer,
        case_id,
        verdict="agree",
        note="Rita thinks this is a melanoma",
        message="Please see a dermatologist this week.",
    )
    assert first.status_code == 303

    lane = admin_client.get("/cases", params={"view": "second"})
    assert f'<a href="/cases/{case_id}?read=second" class="case-link">' in lane.text
    assert case_ids(lane.text) == [case_id]
    # The first reader's own lane leaves out the case they reviewed.
    assert case_ids(reviewer.get("/cases", params={"view": "second"}).text) == []

    blind = admin_client.get(f"/cases/{case_id}", params={"read": "second"})
    assert blind.status_code == 200
    assert 'id="second-read"' in blind.text and 'id="reviews-hidden"' in blind.text
    assert "Rita thinks" not in blind.text and "rita" not in blind.text.split('id="reviews"')[1].split("</section>")[0]
    assert "Please see a dermatologist" not in blind.text  # the first reader's message tells the verdict
    assert 'name="read" value="second"' in blind.text and 'id="save-next"' not in blind.text

    saved = admin_client.post(
        f"/cases/{case_id}/reviews",
        data={
            "csrf_token": csrf_of(blind.text),
            "verdict": "disagree",
            "corrected_label": "NV",
            "read": "second",
            "then": "next",
        },
    )
    assert saved.status_code == 303
    assert saved.headers["location"] == f"/cases/{case_id}?notice=reviewed#reviews"
    with session_factory(admin_client.app.state.database_url).begin() as s:
        rows = s.scalars(select(Review).where(Review.case_id == case_id).order_by(Review.id)).all()
        assert [(r.blinded, r.verdict, r.corrected_label) for r in rows] == [
            (False, "agree", "MEL"),
            (True, "disagree", "NV"),
        ]
        details = s.scalars(
            select(AuditEvent.detail)
            .where(AuditEvent.case_id == case_id, AuditEvent.operator_id == seeded.operators["adam"])
            .order_by(AuditEvent.id)
        ).all()
    assert details[0] == {"read": "second"}
    assert details[1]["blinded"] is True and details[1]["verdict"] == "disagree"
    with session_factory(admin_client.app.state.database_url).begin() as s:
        # The first review told the patient; the blinded read stays in the console.
        queued = s.scalars(select(OutboxMessage.review_id).where(OutboxMessage.case_id == case_id)).all()
    assert queued == [rows[0].id]
    assert 'id="review-message"' not in blind.text and 'id="second-read-private"' in blind.text

    # Afterwards both reads show, the second marked; a blinded read twice, or by the first reader, is refused.
    after = admin_client.get(f"/cases/{case_id}")
    assert "Rita thinks" in after.text and "Blinded second read (given" in after.text
    again = admin_client.get(f"/cases/{case_id}", params={"read": "second"})
    assert 'id="blind-problem"' in again.text and "already reviewed" in again.text
    assert 'id="second-read"' not in again.text and "Rita thinks" in again.text
    assert "already reviewed" in reviewer.get(f"/cases/{case_id}", params={"read": "second"}).text
    assert case_ids(admin_client.get("/cases", params={"view": "second"}).text) == []
    # The CSV's last review is the reviewers' verdict, not the blinded read (which still counts as a review).
    export = admin_client.get("/cases/export.csv", params={"tier": "HIGH"})
    row = next(r for r in csv.DictReader(io.StringIO(export.text)) if int(r["case_id"]) == case_id)
    assert (row["reviews"], row["last_review_verdict"], row["last_review_label"]) == ("2", "agree", "MEL")
    # The safety page pairs the two reads.
    safety = admin_client.get("/safety", params={"days": 30}).text
    assert '<td id="second-pairs">1</td>' in safety
    # One pair, MEL against NV: observed and chance agreement are both 0, so kappa is 0 (and defined).
    assert '<td id="second-kappa">0.000</td>' in safety and '<td id="second-kappa-mel">0.000</td>' in safety
    assert '<td id="second-agreed"><span class="num">0.0 %</span>' in safety


def test_second_read_is_refused_to_a_reader_who_has_seen_the_reviews(reviewer, admin_client, seeded):
    c = seeded.cases
    nothing_yet = admin_client.get(f"/cases/{c['b_uncertain']}", params={"read": "second"})
    assert "no review yet" in nothing_yet.text and 'name="read"' not in nothing_yet.text

    assert review(reviewer, c["b_high_old"], verdict="disagree", corrected_label="NV").status_code == 303
    seen = admin_client.get(f"/cases/{c['b_high_old']}")  # the ordinary page shows rita's review
    refused_page = admin_client.get(f"/cases/{c['b_high_old']}", params={"read": "second"})
    assert "You have seen this case&#39;s reviews" in refused_page.text
    posted = admin_client.post(
        f"/cases/{c['b_high_old']}/reviews",
        data={"csrf_token": csrf_of(seen.text), "verdict": "agree", "read": "second"},
    )
    assert posted.status_code == 400
    assert "You have seen this case&#39;s reviews" in posted.text
    assert 'name="read" value="second"' not in posted.text  # the form offers an ordinary review now
    with session_factory(admin_client.app.state.database_url).begin() as s:
        assert s.scalars(select(Review.blinded).where(Review.case_id == c["b_high_old"])).all() == [False]
    bad = admin_client.post(
        f"/cases/{c['b_high_old']}/reviews",
        data={"csrf_token": csrf_of(seen.text), "verdict": "agree", "read": "third"},
    )
    assert bad.status_code == 400 and "read must be empty or second" in bad.text


def test_a_kept_review_keeps_its_second_read(console_db_url, seeded):
    from console.pending import keep_review, take_review
    from console.reviews import ReviewInput

    form = ReviewInput(verdict="disagree", corrected_label="NV", read="second")
    with session_factory(console_db_url).begin() as s:
        token = keep_review(
            session=s, operator_id=seeded.operators["adam"], case_id=seeded.cases["a_high"], form=form, then=""
        )
    with session_factory(console_db_url).begin() as s:
        kept = take_review(session=s, token=token, operator_id=seeded.operators["adam"], max_age_s=600)
    assert kept == (seeded.cases["a_high"], form, "")
