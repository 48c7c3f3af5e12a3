"""The patient page: every case of one patient (by internal id), audited, behind the login, 404 for unknown ids."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from sqlalchemy import select

from skintriage.db import session_factory
from skintriage.models import AuditEvent, Review, utcnow
from tests.console.session_helpers import csrf_of
from tests.console.test_safety import add_reviews


def listed(html: str) -> list[int]:
    """Case numbers in the patient page's table, in order."""
    table = html[html.index('id="patient-cases"') : html.index("</table>", html.index('id="patient-cases"'))]
    return [int(n) for n in re.findall(r'<a href="/cases/(\d+)" class="case-link">', table)]


def audit_rows(url: str, action: str) -> list[AuditEvent]:
    with session_factory(url).begin() as s:
        rows = s.scalars(select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.id)).all()
        s.expunge_all()
    return list(rows)


def test_the_page_lists_exactly_that_patients_cases_newest_first_and_is_audited(reviewer, seeded, console_db_url):
    c, anna = seeded.cases, seeded.users["anna"]
    page = reviewer.get(f"/patients/{anna}")
    assert page.status_code == 200
    assert listed(page.text) == [c["a_high"], c["a_medium"], c["a_low"]]
    boris = [c[n] for n in ("b_uncertain", "b_high_old", "b_retake", "b_failed", "b_queued")]
    assert not any(f'href="/cases/{i}"' in page.text for i in boris)
    assert "3 cases" in page.text and "Patient #" in page.text
    # Thumbnails are the raw photos through the audited image route; the Telegram id is not shown.
    assert f'src="/cases/{c["a_high"]}/images/{seeded.keys["image_key"]}"' in page.text
    assert "1001" not in page.text
    [row] = audit_rows(console_db_url, "patient.viewed")
    assert row.operator_id == seeded.operators["rita"] and row.case_id is None
    assert row.detail == {"user_id": anna, "cases": [c["a_high"], c["a_medium"], c["a_low"]]}

    other = reviewer.get(f"/patients/{seeded.users['boris']}")
    assert sorted(listed(other.text)) == sorted(boris)
    assert f'href="/cases/{c["a_high"]}"' not in other.text


def test_the_page_shows_tier_status_and_each_review(reviewer, seeded, console_db_url):
    c = seeded.cases
    add_reviews(console_db_url, seeded)
    with session_factory(console_db_url).begin() as s:
        s.add(
            Review(
                case_id=c["a_high"],
                operator_id=seeded.operators["adam"],
                agrees=False,
                verdict="cannot_assess",
                blinded=True,
                created_at=utcnow() - timedelta(minutes=1),
            )
        )
    html = reviewer.get(f"/patients/{seeded.users['anna']}").text
    rows = {int(m.group(1)): m.group(0) for m in re.finditer(r'<tr data-case="(\d+)".*?</tr>', html, re.S)}
    assert set(rows) == {c["a_high"], c["a_medium"], c["a_low"]}
    assert "tier-high" in rows[c["a_high"]] and "done" in rows[c["a_high"]]
    assert "rita" in rows[c["a_high"]] and "blinded second read" in rows[c["a_high"]]
    assert rows[c["a_low"]].count('class="review-line"') == 2 and "adam" in rows[c["a_low"]]
    assert "not reviewed" not in rows[c["a_low"]]
    assert "tier-medium" in rows[c["a_medium"]]


def test_a_patient_without_cases_left_shows_none(reviewer, seeded, console_db_url):
    from skintriage.models import User

    with session_factory(console_db_url).begin() as s:
        user = User(telegram_user_id=1003, chat_id=1003, language="de")
        s.add(user)
        s.flush()
        user_id = user.id
    page = reviewer.get(f"/patients/{user_id}")
    assert page.status_code == 200 and "No cases." in page.text and listed(page.text) == []


@pytest.mark.parametrize("path", ["/patients/999999", "/patients/0", "/patients/abc", "/patients/99999999999999"])
def test_unknown_patients_are_404_and_not_audited(reviewer, console_db_url, path):
    assert reviewer.get(path).status_code == 404
    assert audit_rows(console_db_url, "patient.viewed") == []


def test_a_telegram_id_is_not_a_patient_number(reviewer, seeded):
    assert reviewer.get("/patients/1001").status_code == 404  # anna's Telegram id


def test_the_page_needs_a_login(client, seeded, console_db_url):
    page = client.get(f"/patients/{seeded.users['anna']}")
    assert page.status_code == 303 and page.headers["location"].startswith("/login?next=%2Fpatients%2F")
    assert audit_rows(console_db_url, "patient.viewed") == []


def test_the_case_page_links_to_its_patient_except_in_a_blinded_read(reviewer, admin_client, seeded, console_db_url):
    c, anna = seeded.cases, seeded.users["anna"]
    html = reviewer.get(f"/cases/{c['a_high']}").text
    assert f'href="/patients/{anna}" id="patient-link"' in html
    assert f'href="/patients/{anna}" id="patient-cases-link"' in html
    add_reviews(console_db_url, seeded)  # rita reviewed a_medium: adam may read it blind
    blind = admin_client.get(f"/cases/{c['a_medium']}?read=second").text
    assert 'id="second-read"' in blind
    assert f'href="/patients/{anna}"' not in blind and 'id="patient-link-hidden"' in blind


def test_seeing_the_patient_page_ends_a_blinded_read_of_its_reviewed_cases(admin_client, seeded, console_db_url):
    c = seeded.cases
    add_reviews(console_db_url, seeded)
    assert admin_client.get(f"/patients/{seeded.users['boris']}").status_code == 200  # another patient's
    assert 'id="second-read"' in admin_client.get(f"/cases/{c['a_medium']}?read=second").text
    admin_client.get(f"/patients/{seeded.users['anna']}")
    page = admin_client.get(f"/cases/{c['a_medium']}?read=second")
    assert 'id="second-read"' not in page.text
    assert "on its patient&#39;s page" in page.text
    posted = admin_client.post(
        f"/cases/{c['a_medium']}/reviews", data={"csrf_token": csrf_of(page.text), "verdict": "agree", "read": "second"}
    )
    assert posted.status_code == 400
    with session_factory(console_db_url).begin() as s:
        assert not s.scalars(select(Review).where(Review.blinded.is_(True))).all()
