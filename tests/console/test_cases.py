"""Case list, review queue, case detail, reviews, follow-up messages and CSV export."""

from __future__ import annotations

import csv
import io
import json
import re

import pytest
from sqlalchemy import select

from skintriage.db import session_factory
from skintriage.models import AuditEvent, OutboxMessage, Review
from tests.console.session_helpers import csrf_of


def case_ids(html: str) -> list[int]:
    """Case numbers in the list's table, in order."""
    return [int(n) for n in re.findall(r'<a href="/cases/(\d+)" class="case-link">', html)]


def test_list_is_newest_first_with_counts(reviewer, seeded):
    page = reviewer.get("/cases")
    assert page.status_code == 200
    ids = case_ids(page.text)
    assert sorted(ids) == sorted(seeded.cases.values())
    # The seed's three cases of today arrived retake, failed, queued (newest first); a_low is 10 days old.
    assert ids[:3] == [seeded.cases["b_retake"], seeded.cases["b_failed"], seeded.cases["b_queued"]]
    assert ids[-1] == seeded.cases["a_low"]
    assert '<strong id="total">8</strong>' in page.text


def test_filter_by_tier_shows_only_that_tier(reviewer, seeded):
    page = reviewer.get("/cases", params={"tier": "HIGH"})
    assert set(case_ids(page.text)) == {seeded.cases["a_high"], seeded.cases["b_high_old"]}
    both = reviewer.get("/cases", params=[("tier", "HIGH"), ("tier", "LOW")])
    assert set(case_ids(both.text)) == {seeded.cases["a_high"], seeded.cases["b_high_old"], seeded.cases["a_low"]}


def test_filter_by_status_reviewed_dates_and_model_version(reviewer, seeded):
    from datetime import timedelta

    from skintriage.models import utcnow

    assert case_ids(reviewer.get("/cases", params={"status": "rejected"}).text) == [seeded.cases["b_retake"]]
    old = reviewer.get("/cases", params={"model_version": "resnet50-000000000000"})
    assert case_ids(old.text) == [seeded.cases["a_low"]]
    # A prefix of a version is not that version.
    assert case_ids(reviewer.get("/cases", params={"model_version": "resnet50-0000"}).text) == []
    today = utcnow().date()
    recent = reviewer.get("/cases", params={"date_from": (today - timedelta(days=2)).isoformat()})
    assert seeded.cases["a_low"] not in case_ids(recent.text)
    assert seeded.cases["a_high"] in case_ids(recent.text)
    until = reviewer.get("/cases", params={"date_to": (today - timedelta(days=4)).isoformat()})
    assert set(case_ids(until.text)) == {seeded.cases["a_low"], seeded.cases["a_medium"]}
    assert len(case_ids(reviewer.get("/cases", params={"reviewed": "yes"}).text)) == 0
    assert len(case_ids(reviewer.get("/cases", params={"reviewed": "no"}).text)) == 8


def test_bad_filter_values_are_refused_with_a_message(reviewer):
    response = reviewer.get("/cases", params={"tier": "EXTREME"})
    assert response.status_code == 400
    assert "unknown tier" in response.text
    assert reviewer.get("/cases", params={"date_from": "yesterday"}).status_code == 400
    assert reviewer.get("/cases", params={"page": "0"}).status_code == 400


def test_review_queue_orders_high_uncertain_medium_low_and_drops_reviewed(reviewer, seeded):
    queue = case_ids(reviewer.get("/cases", params={"view": "review"}).text)
    c = seeded.cases
    # HIGH (oldest first), UNCERTAIN, MEDIUM, LOW; RETAKE, failed and queued cases are not in the queue.
    assert queue == [c["b_high_old"], c["a_high"], c["b_uncertain"], c["a_medium"], c["a_low"]]
    page = reviewer.get(f"/cases/{c['b_high_old']}")
    response = reviewer.post(
        f"/cases/{c['b_high_old']}/reviews",
        data={"csrf_token": csrf_of(page.text), "verdict": "agree", "urgency": "urgent"},
    )
    assert response.status_code == 303
    assert case_ids(reviewer.get("/cases", params={"view": "review"}).text)[0] == c["a_high"]


def test_paging_splits_the_list(reviewer, seeded):
    first = reviewer.get("/cases", params={"per_page": "3"})
    second = reviewer.get("/cases", params={"per_page": "3", "page": "2"})
    third = reviewer.get("/cases", params={"per_page": "3", "page": "3"})
    pages = [case_ids(p.text) for p in (first, second, third)]
    assert [len(p) for p in pages] == [3, 3, 2]
    assert sorted(sum(pages, [])) == sorted(seeded.cases.values())
    assert "page 1 of 3" in first.text


def test_case_page_shows_images_probabilities_timeline_history_and_reply(reviewer, seeded, console_db_url):
    case_id = seeded.cases["a_high"]
    page = reviewer.get(f"/cases/{case_id}")
    assert page.status_code == 200
    html = page.text
    for key in seeded.keys.values():
        assert f'src="/cases/{case_id}/images/{key}"' in html
    assert 'id="img-heatmap"' in html
    assert "Operating threshold for melanoma: <strong>0.320</strong>" in html
    assert "above" in html
    assert "slightly_blurry" in html
    assert "resnet50-bbbbbbbbbbbb" in html
    for step in ("Received:", "Queued:", "Processed:", "Answer delivered:"):
        assert step in html
    # Earlier cases of the same patient, not the other patient's.
    assert f'href="/cases/{seeded.cases["a_low"]}"' in html
    assert f'href="/cases/{seeded.cases["a_medium"]}"' in html
    assert f'href="/cases/{seeded.cases["b_uncertain"]}"' not in html
    assert "Result for case a_high: please see a dermatologist.\nThis is not a diagnosis." in html
    with session_factory(console_db_url).begin() as s:
        views = s.scalars(select(AuditEvent).where(AuditEvent.action == "case.viewed")).all()
        assert [(v.case_id, v.operator_id) for v in views] == [(case_id, seeded.operators["rita"])]


def test_case_page_shows_the_lesion_measurements_when_present(reviewer, seeded):
    html = reviewer.get(f"/cases/{seeded.cases['a_high']}").text
    table = html[html.index('id="measurements"') : html.index("</table>", html.index('id="measurements"'))]
    assert "Asymmetry, major / minor axis</th><td>0.31 / 0.05" in table
    assert "Border compactness</th><td>1.42" in table
    assert "Border convexity</th><td>1.04" in table
    assert "Colours</th><td>3: light brown, dark brown, blue grey</td>" in table
    assert "Diameter</th><td>110 px, 34% of the photo's longer side" in table
    assert "Area</th><td>11.7% of the photo" in table
    assert 'id="measurements-edge"' in html
    # Cases without measurements (triaged before them, or rejected) show no table.
    for name in ("a_low", "b_retake"):
        page = reviewer.get(f"/cases/{seeded.cases[name]}").text
        assert 'id="measurements"' not in page and "Lesion measurements" not in page


def test_case_page_shows_the_kind_of_photo_and_why_the_tier(reviewer, seeded, console_db_url):
    from skintriage.models import Case

    with session_factory(console_db_url).begin() as s:
        case = s.get(Case, seeded.cases["a_medium"])
        case.modality, case.tier_reason = "clinical", "clinical_photo"
    html = reviewer.get(f"/cases/{seeded.cases['a_medium']}").text
    line = html[html.index('id="modality"') : html.index("</p>", html.index('id="modality"'))]
    assert "ordinary (clinical) photo" in line and "never told LOW" in line and "clinical_photo" in line
    assert "not recorded" in reviewer.get(f"/cases/{seeded.cases['a_low']}").text  # triaged before the check


def test_case_page_shows_the_patients_answers_their_checklist_score_and_the_tier_they_gave(
    reviewer, seeded, console_db_url
):
    from skintriage.models import Case

    with session_factory(console_db_url).begin() as s:
        case = s.get(Case, seeded.cases["a_low"])
        case.patient_answers = {"site": "palm_sole", "change": "size", "symptoms": "bleeds", "age": "skip"}
        case.told_tier = "HIGH"
    html = reviewer.get(f"/cases/{seeded.cases['a_low']}").text
    table = html[html.index('id="patient-answers"') : html.index("</table>", html.index('id="patient-answers"'))]
    assert "<th>Where on the body</th><td>palm sole</td>" in table and "<th>Age</th><td>skip</td>" in table
    checklist = html[html.index('id="checklist"') : html.index("</p>", html.index('id="checklist"'))]
    assert "<strong>3 points</strong> (oozing 1, size 2)" in checklist and "diameter 7mm, inflammation" in checklist
    tier = html[html.index('id="answered-tier"') : html.index("</p>", html.index('id="answered-tier"'))]
    assert "<strong>HIGH</strong>, raised from LOW by change:size, symptoms:bleeds (<code>checklist</code>)" in tier
    assert "acral" in tier and "Told the patient: <strong>HIGH</strong>" in tier
    assert "The patient has not answered the questions." in reviewer.get(f"/cases/{seeded.cases['a_medium']}").text
    # The export carries them for research: the answers as JSON and the tier the patient was told.
    rows = {int(r["case_id"]): r for r in csv.DictReader(io.StringIO(reviewer.get("/cases/export.csv").text))}
    exported = rows[seeded.cases["a_low"]]
    assert json.loads(exported["patient_answers"])["site"] == "palm_sole" and exported["told_tier"] == "HIGH"
    assert rows[seeded.cases["a_medium"]]["patient_answers"] == ""


def test_case_page_escapes_what_the_patient_was_told(reviewer, seeded, console_db_url):
    from skintriage.models import Case

    with session_factory(console_db_url).begin() as s:
        s.get(Case, seeded.cases["a_low"]).reply_text = "<script>alert(1)</script>"
    html = reviewer.get(f"/cases/{seeded.cases['a_low']}").text
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_unknown_case_is_404(reviewer):
    assert reviewer.get("/cases/999999").status_code == 404


def test_review_is_stored_and_audited(reviewer, seeded, console_db_url):
    case_id = seeded.cases["b_uncertain"]
    token = csrf_of(reviewer.get(f"/cases/{case_id}").text)
    response = reviewer.post(
        f"/cases/{case_id}/reviews",
        data={
            "csrf_token": token,
            "verdict": "disagree",
            "corrected_label": "NV",
            "urgency": "routine",
            "note": "Symmetric, regular network.",
        },
    )
    assert response.status_code == 303
    assert response.headers["location"].startswith(f"/cases/{case_id}?notice=reviewed")
    with session_factory(console_db_url).begin() as s:
        review = s.scalars(select(Review).where(Review.case_id == case_id)).one()
        assert (review.agrees, review.corrected_label, review.urgency) == (False, "NV", "routine")
        assert review.operator_id == seeded.operators["rita"]
        event = s.scalars(select(AuditEvent).where(AuditEvent.action == "case.reviewed")).one()
        assert event.case_id == case_id and event.detail["review_id"] == review.id
    assert "Symmetric, regular network." in reviewer.get(f"/cases/{case_id}").text


def test_inconsistent_review_is_refused(reviewer, seeded, console_db_url):
    case_id = seeded.cases["b_uncertain"]
    token = csrf_of(reviewer.get(f"/cases/{case_id}").text)
    response = reviewer.post(f"/cases/{case_id}/reviews", data={"csrf_token": token, "verdict": "disagree"})
    assert response.status_code == 400
    assert "give the label you think is right" in response.text
    response = reviewer.post(
        f"/cases/{case_id}/reviews", data={"csrf_token": token, "verdict": "agree", "urgency": "tomorrow-ish"}
    )
    assert response.status_code == 400
    with session_factory(console_db_url).begin() as s:
        assert s.scalars(select(Review)).all() == []


def test_review_with_words_goes_to_the_outbox_and_the_reply_queue(reviewer, seeded, console_db_url, settings_env):
    case_id = seeded.cases["b_uncertain"]
    token = csrf_of(reviewer.get(f"/cases/{case_id}").text)
    response = reviewer.post(
        f"/cases/{case_id}/reviews",
        data={
            "csrf_token": token,
            "verdict": "agree",
            "urgency": "soon",
            "message": "Пожалуйста, запишитесь к дерматологу в течение месяца.",
        },
    )
    assert response.status_code == 303
    assert "notice=sent" in response.headers["location"]
    with session_factory(console_db_url).begin() as s:
        message = s.scalars(select(OutboxMessage)).one()
        review = s.scalars(select(Review)).one()
        assert message.chat_id == 1002 and message.case_id == case_id and message.kind == "review"
        assert message.review_id == review.id and message.operator_id == seeded.operators["rita"]
        assert message.text.startswith("Пожалуйста") and message.sent_text is None
        event = s.scalars(select(AuditEvent).where(AuditEvent.action == "message.queued")).one()
        assert event.detail == {
            "message_id": message.id,
            "kind": "review",
            "language": "ru",
            "chars": len(message.text),
        }
        assert "text" not in event.detail
    # The filesystem broker under DATA_DIR now holds the job for the reply sender.
    queued = list((settings_env / "data" / "broker" / "queue").iterdir())
    assert len(queued) == 1
    page = reviewer.get(f"/cases/{case_id}").text
    assert "waiting in the reply queue" in page and "Russian" in page


def test_message_without_review(reviewer, seeded, console_db_url):
    case_id = seeded.cases["a_high"]
    token = csrf_of(reviewer.get(f"/cases/{case_id}").text)
    assert reviewer.post(f"/cases/{case_id}/messages", data={"csrf_token": token, "message": "  "}).status_code == 400
    response = reviewer.post(f"/cases/{case_id}/messages", data={"csrf_token": token, "message": "Please call us."})
    assert response.status_code == 303
    with session_factory(console_db_url).begin() as s:
        assert [m.text for m in s.scalars(select(OutboxMessage)).all()] == ["Please call us."]


def test_csv_export_has_every_filtered_case_and_is_audited(reviewer, seeded, console_db_url):
    response = reviewer.get("/cases/export.csv", params={"tier": "HIGH", "per_page": "1"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    assert "attachment" in response.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(response.text)))
    # All pages, not just the first one.
    assert {int(r["case_id"]) for r in rows} == {seeded.cases["a_high"], seeded.cases["b_high_old"]}
    assert {r["tier"] for r in rows} == {"HIGH"}
    assert "telegram" not in response.text.lower() and "1001" not in response.text
    with session_factory(console_db_url).begin() as s:
        event = s.scalars(select(AuditEvent).where(AuditEvent.action == "cases.exported")).one()
        assert event.detail["rows"] == 2


def test_csv_cells_cannot_become_spreadsheet_formulas():
    from console.export import safe_cell

    assert safe_cell('=HYPERLINK("http://x")').startswith("'=")
    assert safe_cell("+1") == "'+1"
    assert safe_cell("@SUM(A1)") == "'@SUM(A1)"
    assert safe_cell(-0.5) == "-0.5000"
    assert safe_cell("NV") == "NV"


def test_images_browsers_cannot_show_are_converted_to_jpeg(reviewer, seeded, store, console_db_url):
    from skintriage.models import Case
    from tests.factories import lesion_photo

    odd = store.put(lesion_photo(80, 60, seed=5, fmt="PNG"), kind="photo", ext="bin")
    garbage = store.put(b"not an image at all", kind="photo", ext="heic")
    with session_factory(console_db_url).begin() as s:
        s.get(Case, seeded.cases["a_low"]).image_key = odd.key
        s.get(Case, seeded.cases["a_medium"]).image_key = garbage.key
    response = reviewer.get(f"/cases/{seeded.cases['a_low']}/images/{odd.key}")
    assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
    assert response.content[:2] == b"\xff\xd8"
    assert reviewer.get(f"/cases/{seeded.cases['a_medium']}/images/{garbage.key}").status_code == 415


BAR_PX = 300  # width of the probability bars' viewBox


def _mel_bar(html: str) -> tuple[float, float, float]:
    """(band start, band end, threshold line) of the rendered melanoma bar, in probability units."""
    svg = re.search(r'<svg class="bar" id="bar-mel".*?</svg>', html, re.S)
    assert svg, "case page has no melanoma bar"
    band = re.search(r'<rect x="([\d.]+)" y="0" width="([\d.]+)" height="18" class="band"/>', svg.group(0))
    line = re.search(r'<line x1="([\d.]+)" x2="([\d.]+)"[^>]*class="threshold"', svg.group(0))
    assert band and line
    start, width = float(band.group(1)), float(band.group(2))
    return start / BAR_PX, (start + width) / BAR_PX, float(line.group(1)) / BAR_PX


@pytest.mark.parametrize("margin", ["0.05", "0.12"])
def test_melanoma_bar_shades_where_the_policy_answers_uncertain(
    monkeypatch, settings_env, console_db_url, store, seeded, margin
):
    """The shaded band and the threshold line are checked against ml.triage.policy.decide_tier itself: just below
    the band is not UNCERTAIN, inside it is, and the threshold line (the band's end) starts HIGH."""
    from fastapi.testclient import TestClient

    from console.app import create_app
    from ml.triage.policy import PolicyConfig, decide_tier
    from skintriage.models import Case
    from skintriage.settings import get_settings
    from skintriage.vocabulary import Tier
    from tests.console.seed import REVIEWER
    from tests.console.session_helpers import login

    monkeypatch.setenv("UNCERTAIN_MARGIN", margin)
    get_settings.cache_clear()
    settings = get_settings()
    app = create_app(settings=settings, database_url=console_db_url, store=store)
    policy = PolicyConfig.from_settings(settings)
    with session_factory(console_db_url).begin() as s:
        threshold = s.get(Case, seeded.cases["a_high"]).mel_threshold
    with TestClient(app, follow_redirects=False) as c:
        assert login(c, *REVIEWER).status_code == 303
        html = c.get(f"/cases/{seeded.cases['a_high']}").text
    start, end, line = _mel_bar(html)
    pixel = 1 / BAR_PX  # the page rounds to 0.1 px; probe a pixel and a half away from each edge
    assert abs(end - line) < pixel / 2, "the band must end at the threshold line"

    def tier(p_mel: float) -> Tier:
        # NV takes the rest, so only the melanoma rules can make it UNCERTAIN.
        return decide_tier({"MEL": p_mel, "NV": 1 - p_mel, "OTHER": 0.0}, mel_threshold=threshold, config=policy).tier

    assert tier(start - 1.5 * pixel) is Tier.LOW
    assert tier(start + 1.5 * pixel) is Tier.UNCERTAIN
    assert tier((start + end) / 2) is Tier.UNCERTAIN
    assert tier(end - 1.5 * pixel) is Tier.UNCERTAIN
    assert tier(line) is Tier.HIGH
    assert tier(line + 1.5 * pixel) is Tier.HIGH
    text = re.sub(r"\s+", " ", re.search(r'<p id="threshold">(.*?)</p>', html, re.S).group(1))
    assert "At or above the threshold is HIGH" in text
    assert f"from {start:.3f} up to it is UNCERTAIN" in text


def _save_and_next(client, case_id: int, **fields: str):  # noqa: ANN001, ANN202
    token = csrf_of(client.get(f"/cases/{case_id}").text)
    data = {"csrf_token": token, "verdict": "agree", "urgency": "routine", "then": "next", **fields}
    return client.post(f"/cases/{case_id}/reviews", data=data)


@pytest.mark.slow
def test_save_and_next_walks_the_review_queue_in_its_order(reviewer, seeded, console_db_url):
    queue = case_ids(reviewer.get("/cases?view=review").text)
    assert len(queue) >= 3
    # From the head: the review is saved and the case after it in the queue opens.
    response = _save_and_next(reviewer, queue[0])
    assert response.status_code == 303
    assert response.headers["location"] == f"/cases/{queue[1]}?notice=reviewed&saved={queue[0]}"
    page = reviewer.get(response.headers["location"]).text
    assert (
        f"Review of case #{queue[0]} saved. Its patient will be told in their language. "
        "This is the next case in the review queue."
    ) in page
    # From the tail: round to the start of what is left (queue[0] is reviewed, so queue[1]).
    response = _save_and_next(reviewer, queue[-1])
    assert response.headers["location"].startswith(f"/cases/{queue[1]}?")
    # A case outside the queue (already reviewed) goes to the queue's head.
    response = _save_and_next(reviewer, queue[0])
    assert response.headers["location"].startswith(f"/cases/{queue[1]}?")
    with session_factory(console_db_url).begin() as s:
        assert len(s.scalars(select(Review)).all()) == 3
    # Once the queue is empty the operator stays on the last case and is told so.
    left = case_ids(reviewer.get("/cases?view=review").text)
    for case_id in left[:-1]:
        assert _save_and_next(reviewer, case_id).status_code == 303
    response = _save_and_next(reviewer, left[-1])
    assert response.headers["location"] == f"/cases/{left[-1]}?notice=reviewed&queue=empty#reviews"
    page = reviewer.get(response.headers["location"]).text
    assert "Review saved. The patient will be told in their language. The review queue is empty." in page
    assert case_ids(reviewer.get("/cases?view=review").text) == []


def test_save_and_next_with_a_message_says_whose_message_it_was(reviewer, seeded, settings_env):
    queue = case_ids(reviewer.get("/cases?view=review").text)
    response = _save_and_next(reviewer, queue[0], message="Please book an appointment.")
    assert response.headers["location"] == f"/cases/{queue[1]}?notice=sent&saved={queue[0]}"
    page = reviewer.get(response.headers["location"]).text
    assert f"Review of case #{queue[0]} saved. Message queued for that case&#39;s patient." in page


def test_save_and_next_with_errors_stays_on_the_case(reviewer, seeded, console_db_url):
    queue = case_ids(reviewer.get("/cases?view=review").text)
    response = _save_and_next(reviewer, queue[0], verdict="disagree")  # no corrected label
    assert response.status_code == 400 and "give the label you think is right" in response.text
    with session_factory(console_db_url).begin() as s:
        assert s.scalars(select(Review)).all() == []


def test_review_form_offers_save_and_next_with_shortcuts(reviewer, seeded):
    html = reviewer.get(f"/cases/{seeded.cases['a_high']}").text
    assert '<button type="submit" name="then" value="next" id="save-next"' in html
    assert 'aria-keyshortcuts="A"' in html and 'aria-keyshortcuts="D"' in html
    # The review panel comes right after the images, before the result (it sits beside the image).
    assert html.index('id="images"') < html.index('id="reviews"') < html.index('id="result"')


@pytest.mark.parametrize("ext", ["jpg", "heic"])
def test_photos_are_served_without_exif_or_gps_even_if_stored_with_them(reviewer, seeded, store, console_db_url, ext):
    """A photo stored before intake stripped metadata still leaves the console without it, upright."""
    from PIL import Image

    from skintriage.models import Case
    from tests.factories import assert_no_metadata, photo_with_gps

    old = store.put(photo_with_gps(400, 300, seed=7), kind="photo", ext=ext)
    with session_factory(console_db_url).begin() as s:
        s.get(Case, seeded.cases["a_low"]).image_key = old.key
    response = reviewer.get(f"/cases/{seeded.cases['a_low']}/images/{old.key}")
    assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
    assert_no_metadata(response.content)
    assert Image.open(io.BytesIO(response.content)).size == (300, 400)


def test_cannot_assess_is_a_verdict_stored_shown_and_exported(reviewer, seeded, console_db_url):
    case_id = seeded.cases["b_retake"]  # a photo the pipeline refused: nothing to agree or disagree with
    token = csrf_of(reviewer.get(f"/cases/{case_id}").text)
    refused = reviewer.post(
        f"/cases/{case_id}/reviews", data={"csrf_token": token, "verdict": "cannot_assess", "corrected_label": "NV"}
    )
    assert refused.status_code == 400 and "give no label" in refused.text
    response = reviewer.post(
        f"/cases/{case_id}/reviews", data={"csrf_token": token, "verdict": "cannot_assess", "note": "Out of focus."}
    )
    assert response.status_code == 303
    with session_factory(console_db_url).begin() as s:
        review = s.scalars(select(Review).where(Review.case_id == case_id)).one()
        assert (review.verdict, review.agrees, review.corrected_label) == ("cannot_assess", False, None)
        event = s.scalars(select(AuditEvent).where(AuditEvent.action == "case.reviewed")).one()
        assert event.detail["verdict"] == "cannot_assess"
    page = reviewer.get(f"/cases/{case_id}").text
    assert '<span class="verdict verdict-cannot_assess">cannot assess</span>' in page
    assert 'id="verdict-cannot-assess"' in page and 'aria-keyshortcuts="C"' in page
    rows = list(csv.DictReader(io.StringIO(reviewer.get("/cases/export.csv", params={"status": "rejected"}).text)))
    assert [(r["last_review_verdict"], r["last_review_agrees"]) for r in rows] == [("cannot_assess", "False")]


def test_dashboard_counts_cannot_assess_apart_from_agreement(reviewer, seeded):
    c = seeded.cases
    for case_id, fields in ((c["a_high"], {"verdict": "cannot_assess"}), (c["a_medium"], {"verdict": "agree"})):
        token = csrf_of(reviewer.get(f"/cases/{case_id}").text)
        assert reviewer.post(f"/cases/{case_id}/reviews", data={"csrf_token": token, **fields}).status_code == 303
    html = reviewer.get("/dashboard").text
    assert '<span id="stat-cannot-assess">1</span> could not be assessed' in html
    table = html[html.index('id="agreement"') : html.index("</table>", html.index('id="agreement"'))]
    # a_high (MEL) is left out of the agreement table; a_medium's agreement is in it.
    assert re.search(r"<tr><th>MEL</th><td>0</td><td>0</td>", table)


def test_failed_and_retake_cases_have_their_own_lane(reviewer, seeded):
    c = seeded.cases
    page = reviewer.get("/cases", params={"view": "retake"})
    assert page.status_code == 200 and "<h1>Failed and retake</h1>" in page.text
    # Longest-waiting first; neither is in the review queue of triaged cases, nor a finished triaged case here.
    assert case_ids(page.text) == [c["b_failed"], c["b_retake"]]
    assert not set(case_ids(page.text)) & set(case_ids(reviewer.get("/cases?view=review").text))
    assert 'id="nav-retake">Failed and retake <span class="badge">2</span>' in page.text
    # Filters keep the lane; Save and next walks the lane, not the review queue.
    assert case_ids(reviewer.get("/cases", params={"view": "retake", "status": "failed"}).text) == [c["b_failed"]]
    response = _save_and_next(reviewer, c["b_failed"], verdict="cannot_assess", urgency="")
    assert response.headers["location"] == f"/cases/{c['b_retake']}?notice=reviewed&saved={c['b_failed']}"
    assert case_ids(reviewer.get("/cases", params={"view": "retake"}).text) == [c["b_retake"]]
    assert reviewer.get("/cases", params={"view": "elsewhere"}).status_code == 400


def _claim_of(url: str, case_id: int):  # noqa: ANN202
    from skintriage.models import Case

    with session_factory(url).begin() as s:
        case = s.get(Case, case_id)
        return case.claimed_by_id, case.claimed_until


def test_opening_a_case_claims_it_and_colleagues_see_who_reviews_it(reviewer, admin_client, seeded, console_db_url):
    from datetime import timedelta

    from skintriage.models import utcnow

    c, ops = seeded.cases, seeded.operators
    before = utcnow()
    page = reviewer.get(f"/cases/{c['a_high']}").text
    holder, until = _claim_of(console_db_url, c["a_high"])
    assert holder == ops["rita"] and before + timedelta(seconds=599) < until <= utcnow() + timedelta(seconds=600)
    assert 'id="claimed-by-you"' in page
    # A colleague opening it sees who holds it, and does not take it over.
    other = admin_client.get(f"/cases/{c['a_high']}").text
    assert 'id="claimed"' in other and "Being reviewed by <strong>rita</strong>" in other
    assert _claim_of(console_db_url, c["a_high"])[0] == ops["rita"]
    queue_page = admin_client.get("/cases?view=review").text
    assert "being reviewed by rita" in queue_page
    # Save and next from the queue's head passes the claimed case (a_high, second in the queue) by.
    assert case_ids(queue_page)[:3] == [c["b_high_old"], c["a_high"], c["b_uncertain"]]
    response = _save_and_next(admin_client, c["b_high_old"])
    assert response.headers["location"].startswith(f"/cases/{c['b_uncertain']}?")
    # The claim's holder is not skipped past her own case (from the queue's tail, round to a_high at its head).
    response = _save_and_next(reviewer, c["a_low"])
    assert response.headers["location"].startswith(f"/cases/{c['a_high']}?")


def test_a_claim_lapses_and_saving_a_review_releases_it(reviewer, admin_client, seeded, console_db_url):
    from datetime import timedelta

    from skintriage.models import Case, utcnow

    c, ops = seeded.cases, seeded.operators
    reviewer.get(f"/cases/{c['a_high']}")
    with session_factory(console_db_url).begin() as s:
        s.get(Case, c["a_high"]).claimed_until = utcnow() - timedelta(seconds=1)
    page = admin_client.get(f"/cases/{c['a_high']}").text
    assert "Being reviewed by" not in page and 'id="claimed-by-you"' in page
    assert _claim_of(console_db_url, c["a_high"])[0] == ops["adam"]
    # Saving the review releases it; a reviewed case is not claimed again by opening it.
    token = csrf_of(page)
    response = admin_client.post(f"/cases/{c['a_high']}/reviews", data={"csrf_token": token, "verdict": "agree"})
    assert response.status_code == 303
    assert _claim_of(console_db_url, c["a_high"]) == (None, None)
    reviewer.get(f"/cases/{c['a_high']}")
    assert _claim_of(console_db_url, c["a_high"]) == (None, None)


def test_claim_length_is_a_setting(monkeypatch, settings_env, console_db_url, store, seeded):
    from datetime import timedelta

    from fastapi.testclient import TestClient

    from console.app import create_app
    from skintriage.models import utcnow
    from skintriage.settings import get_settings
    from tests.console.seed import REVIEWER
    from tests.console.session_helpers import login

    monkeypatch.setenv("CONSOLE_REVIEW_CLAIM_S", "60")
    get_settings.cache_clear()
    app = create_app(settings=get_settings(), database_url=console_db_url, store=store)
    with TestClient(app, follow_redirects=False) as client:
        assert login(client, *REVIEWER).status_code == 303
        client.get(f"/cases/{seeded.cases['a_low']}")
    assert _claim_of(console_db_url, seeded.cases["a_low"])[1] <= utcnow() + timedelta(seconds=60)


def test_the_case_page_shows_the_booking_answer_and_each_message_as_the_patient_read_it(
    reviewer, seeded, console_db_url
):
    from skintriage.models import Case, utcnow

    case_id = seeded.cases["a_high"]
    assert 'id="booking"' not in reviewer.get(f"/cases/{case_id}").text  # not asked yet
    with session_factory(console_db_url).begin() as s:
        case = s.get(Case, case_id)
        case.booking_asked_at = utcnow()
        s.add(OutboxMessage(user_id=case.user_id, case_id=case_id, chat_id=1001, kind="booking", text=""))
    page = reviewer.get(f"/cases/{case_id}").text
    assert "whether they booked a dermatologist:\n    no answer yet." in page
    assert "Booking question" in page and "Composed in English when sent" in page
    with session_factory(console_db_url).begin() as s:
        case = s.get(Case, case_id)
        case.booking_answer, case.booking_answered_at = "declined", utcnow()
        message = s.scalars(select(OutboxMessage)).one()
        message.sent_at, message.sent_text = utcnow(), "Case #3: Have you booked an appointment with a dermatologist?"
    page = reviewer.get(f"/cases/{case_id}").text
    assert "<strong>does not want to book</strong>" in page
    assert "Case #3: Have you booked an appointment with a dermatologist?</pre>" in page
    assert "Composed in English when sent" not in page


def test_a_korean_patients_answer_is_shown_as_sent_and_in_english_beside_it(reviewer, seeded, console_db_url):
    import html as html_lib

    from bot.answers import compose, retell, visible
    from bot.i18n import load_texts
    from skintriage.models import Case

    texts = load_texts()
    case_id = seeded.cases["b_high_old"]
    with session_factory(console_db_url).begin() as s:
        case = s.get(Case, case_id)
        case.language = case.user.language = "ko"
        sent = compose(case, texts=texts).full_text  # what the worker stores as reply_text
        case.reply_text = sent
        s.flush()
        assert retell(session=s, case=case, lang="ko", texts=texts, review_promise_hours=None) == sent
    page = reviewer.get(f"/cases/{case_id}").text

    def block(element_id: str) -> str:
        start = page.index(f'id="{element_id}"')
        return html_lib.unescape(page[page.index(">", start) + 1 : page.index("</pre>", start)])

    hangul = re.compile("[\uac00-\ud7a3]")
    korean, english = block("reply-text"), block("reply-text-en")
    assert korean == sent and hangul.search(korean)
    title = visible(texts.get("en", "result.title", case_id=case_id, tier=texts.get("en", "tier.HIGH")))
    assert english.startswith(title)
    assert visible(texts.get("en", "result.disclaimer")) in english
    assert not hangul.search(english)
    assert "As sent, in Korean" in page
    # An English patient's answer is shown once.
    assert 'id="reply-text-en"' not in reviewer.get(f"/cases/{seeded.cases['a_high']}").text
