"""The case page's image viewer and its comparison with an earlier photo of the same patient (?compare=)."""

from __future__ import annotations

import re

from sqlalchemy import select

from skintriage.db import session_factory
from skintriage.models import AuditEvent, Case
from tests.console.test_safety import add_reviews


def options(html: str) -> list[int]:
    """Case numbers offered by the comparison's select, in order."""
    select_html = html[html.index('id="compare-with"') : html.index("</select>", html.index('id="compare-with"'))]
    return [int(n) for n in re.findall(r'<option value="(\d+)"', select_html)]


def compare_box(html: str) -> str:
    """The comparison's two frames and their captions (not the strip of earlier cases below them)."""
    start = html.index('id="compare"')
    return html[start : html.index("shows the lesion larger.</p>", start)]


def case_views(url: str) -> list[dict]:
    with session_factory(url).begin() as s:
        return [e.detail for e in s.scalars(select(AuditEvent).where(AuditEvent.action == "case.viewed"))]


def image_key(url: str, case_id: int) -> str:
    with session_factory(url).begin() as s:
        return s.get(Case, case_id).image_key


def test_viewer_has_zoom_controls_and_every_image_in_its_frames(reviewer, seeded):
    html = reviewer.get(f"/cases/{seeded.cases['a_high']}").text
    for control in ("zoom-in", "zoom-out", "zoom-reset", "viewer-keys"):
        assert f'id="{control}"' in html
    viewer = html[html.index('id="viewer"') : html.index('id="viewer-keys"')]
    assert viewer.count('class="zoom-pane"') == 4  # photo, outline, mask, Grad-CAM keep one zoom
    assert 'data-aspect="1.3333333333333333"' in viewer  # 320×240: the frame has the photo's shape
    # The review shortcuts and the viewer's keys do not share a key.
    assert 'aria-keyshortcuts="A"' in html and 'aria-keyshortcuts="O"' in html and 'aria-keyshortcuts="0"' in html


def test_the_candidates_are_the_patients_earlier_cases_with_a_photo(reviewer, seeded, console_db_url):
    c = seeded.cases
    html = reviewer.get(f"/cases/{c['a_high']}").text
    assert options(html) == [c["a_medium"], c["a_low"]]
    assert "Only photos sent as a reply to an earlier answer are linked as the same spot" in html
    box = compare_box(html)
    assert "hidden" in box[: box.index(">")]  # nothing chosen: closed, and no photo loaded
    assert not re.search(r'\ssrc="', box)
    # Boris's cases before b_retake: b_failed has no photo and is not offered, nor are later or other patients'.
    boris = reviewer.get(f"/cases/{c['b_retake']}").text
    assert options(boris) == [c["b_queued"], c["b_uncertain"], c["b_high_old"]]
    assert 'id="compare-none"' in reviewer.get(f"/cases/{c['a_low']}").text  # the first case has nothing earlier


def test_compare_shows_both_raw_photos_and_is_audited(reviewer, seeded, console_db_url):
    c = seeded.cases
    html = reviewer.get(f"/cases/{c['a_high']}", params={"compare": str(c["a_low"])}).text
    box = compare_box(html)
    assert "hidden" not in box[: box.index(">")]
    assert f'src="/cases/{c["a_high"]}/images/{seeded.keys["image_key"]}"' in box
    assert f'src="/cases/{c["a_low"]}/images/{image_key(console_db_url, c["a_low"])}"' in box
    assert "overlay" not in box and "mask" not in box  # raw photos, no outline
    assert f'<option value="{c["a_low"]}"' in html and "selected>" in html
    assert 'id="compare-close"' in html
    assert case_views(console_db_url) == [{"compare": c["a_low"]}]
    # Both photos come through the audited image route.
    assert reviewer.get(f"/cases/{c['a_low']}/images/{image_key(console_db_url, c['a_low'])}").status_code == 200


def test_compare_refuses_other_patients_later_cases_and_junk(reviewer, seeded, console_db_url):
    c = seeded.cases
    for value, words in [
        (str(c["b_uncertain"]), "is not an earlier case of this patient"),  # another patient's
        (str(c["a_high"]), "is not an earlier case of this patient"),  # itself
        ("abc", "compare must be the number"),
        ("99999999999", "compare must be the number"),
    ]:
        page = reviewer.get(f"/cases/{c['a_medium']}", params={"compare": value})
        assert page.status_code == 200
        assert 'id="compare-problem"' in page.text and words in page.text
        assert not re.search(r'\ssrc="', compare_box(page.text))
    later = reviewer.get(f"/cases/{c['a_low']}", params={"compare": str(c["a_medium"])}).text  # a later case
    assert 'id="compare-problem"' in later
    assert all(d == {} for d in case_views(console_db_url))


def test_a_blinded_read_keeps_its_blind_while_comparing(admin_client, seeded, console_db_url):
    c = seeded.cases
    add_reviews(console_db_url, seeded)
    html = admin_client.get(f"/cases/{c['a_medium']}", params={"read": "second", "compare": str(c["a_low"])}).text
    assert 'id="second-read"' in html
    form = html[html.index('id="compare-form"') : html.index("</form>", html.index('id="compare-form"'))]
    assert '<input type="hidden" name="read" value="second">' in form
    assert f"?compare={c['a_low']}&amp;read=second#compare" in html
    assert case_views(console_db_url) == [{"read": "second", "compare": c["a_low"]}]


def test_a_case_sent_as_a_reply_to_an_earlier_one_says_same_spot_and_links_to_it(reviewer, seeded, console_db_url):
    c = seeded.cases
    assert 'id="same-spot"' not in reviewer.get(f"/cases/{c['a_high']}").text  # not linked: nothing said
    with session_factory(console_db_url).begin() as s:
        s.get(Case, c["a_high"]).previous_case_id = c["a_medium"]
    html = reviewer.get(f"/cases/{c['a_high']}").text
    line = html[html.index('id="same-spot"') : html.index("</p>", html.index('id="same-spot"'))]
    assert f'Same spot as <a href="/cases/{c["a_medium"]}">case #{c["a_medium"]}</a>' in line
