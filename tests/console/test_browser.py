"""End to end in a real headless Chromium (Debian's package, driven by Playwright): log in, filter to HIGH,
open a case, see the overlay load, submit a review, find it in the audit log, export CSV.

The console runs under uvicorn in a background thread against a migrated SQLite database and a local
image store with real images. Without Chromium the tests skip, except under CI=true, where they fail.
"""

from __future__ import annotations

import csv
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.console.seed import ADMIN, REVIEWER, Seeded, seed

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
BENCH = Path(__file__).resolve().parents[2] / "bench" / "console_pages.py"


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def browser() -> Iterator:
    """Debian's Chromium under Playwright; skipped when missing (failed under CI)."""
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        message = f"Chromium not found at {CHROMIUM}; install it with `apt-get install -y chromium` (make test does)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def live_console(settings_env: Path, sqlite_url: str) -> Iterator[tuple[str, Seeded, str]]:
    """(base URL, seeded ids, database URL) of the console served by uvicorn in a thread."""
    import uvicorn

    from console.app import create_app
    from skintriage.settings import get_settings
    from skintriage.storage import LocalImageStore

    store = LocalImageStore(settings_env / "data" / "images")
    seeded = seed(sqlite_url, store)
    app = create_app(settings=get_settings(), database_url=sqlite_url, store=store)
    port = _free_port()
    # proxy_headers off, as `skintriage console` runs it: the app reads X-Forwarded-For itself (trusted proxies).
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off", proxy_headers=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="console-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("uvicorn did not start the console within 20 s")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", seeded, sqlite_url
    server.should_exit = True
    thread.join(timeout=10)


def log_in(page, base: str, username: str, password: str) -> None:  # noqa: ANN001
    """Fill the login form the way an operator does."""
    page.goto(f"{base}/cases")
    assert "/login" in page.url
    page.fill("#username", username)
    page.fill("#password", password)
    page.click("#login")
    page.wait_for_url(f"{base}/cases*")


def wait_image(page, selector: str) -> int:  # noqa: ANN001
    """Wait until an <img> has loaded and return its natural width (0 means it failed to load)."""
    page.wait_for_function(
        "sel => { const i = document.querySelector(sel); return i && i.complete; }", arg=selector, timeout=10_000
    )
    return page.eval_on_selector(selector, "img => img.naturalWidth")


def test_operator_reviews_a_high_case_end_to_end(browser, live_console, tmp_path):
    base, seeded, _ = live_console
    reviewer = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    page = reviewer.new_page()
    console_errors: list[str] = []
    page.on("console", lambda msg: console_errors.append(msg.text) if msg.type == "error" else None)
    failed: list[str] = []
    page.on("response", lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else None)

    log_in(page, base, *REVIEWER)
    assert page.locator("#nav-audit").count() == 0  # reviewers do not see admin pages

    # Filter to HIGH.
    page.check("#tier-high")
    page.click("#apply-filters")
    page.wait_for_url("**tier=HIGH**")
    rows = page.locator("#case-table tbody tr")
    assert rows.count() == 2
    assert {rows.nth(i).get_attribute("data-tier") for i in range(2)} == {"HIGH"}
    assert page.inner_text("#total") == "2"

    # Open the newest HIGH case and see its outline overlay load, then the mask.
    page.locator("#case-table a.case-link").first.click()
    page.wait_for_url(f"{base}/cases/{seeded.cases['a_high']}")
    assert page.is_visible("#img-overlay")
    assert wait_image(page, "#img-overlay") > 0
    assert not page.is_visible("#img-mask")
    page.click("#show-mask")
    assert page.is_visible("#img-mask") and not page.is_visible("#img-overlay")
    assert wait_image(page, "#img-mask") > 0
    page.click("#show-overlay")
    assert "Operating threshold for melanoma" in page.inner_text("#threshold")
    assert "This is not a diagnosis." in page.inner_text("#reply-text")

    # Submit a review with a follow-up message.
    page.check("#verdict-agree")
    page.select_option("#urgency", "urgent")
    page.fill("#note", "Asymmetric, irregular border, several colours: refer within a week.")
    page.fill("#review-message", "Please book a dermatologist appointment within a week.")
    page.click("#submit-review")
    page.wait_for_url("**notice=**")
    assert "Message queued for the patient." in page.inner_text("#notice")
    assert "refer within a week" in page.inner_text("#reviews")
    assert wait_image(page, "#img-overlay") > 0
    shot = tmp_path / "case-page.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000

    # Export the HIGH list as CSV.
    page.goto(f"{base}/cases?tier=HIGH")
    with page.expect_download() as download_info:
        page.click("#export-csv")
    download = download_info.value
    with open(download.path(), newline="", encoding="utf-8") as fh:
        rows_csv = list(csv.DictReader(fh))
    assert {int(r["case_id"]) for r in rows_csv} == {seeded.cases["a_high"], seeded.cases["b_high_old"]}
    reviewed = next(r for r in rows_csv if int(r["case_id"]) == seeded.cases["a_high"])
    assert (reviewed["last_review_agrees"], reviewed["last_review_urgency"]) == ("True", "urgent")

    # An admin finds the review in the audit log.
    admin = browser.new_context(viewport={"width": 1280, "height": 900})
    admin_page = admin.new_page()
    log_in(admin_page, base, *ADMIN)
    admin_page.click("#nav-audit")
    admin_page.select_option("#audit-action", "case.reviewed")
    admin_page.click("#audit-apply")
    admin_page.wait_for_url("**action=case.reviewed**")
    table = admin_page.inner_text("#audit-table tbody")
    assert "case.reviewed" in table and REVIEWER[0] in table and str(seeded.cases["a_high"]) in table
    assert admin_page.locator("#audit-table tbody tr").count() == 1
    admin_page.select_option("#audit-action", "message.queued")
    admin_page.click("#audit-apply")
    assert admin_page.locator("#audit-table tbody tr").count() == 1

    assert failed == []
    assert console_errors == []
    reviewer.close()
    admin.close()


def test_anonymous_browser_gets_the_login_form_and_no_images(browser, live_console):
    base, seeded, _ = live_console
    context = browser.new_context()
    page = context.new_page()
    response = page.goto(f"{base}/cases/{seeded.cases['a_high']}")
    assert "/login" in page.url and response.status == 200
    image = page.goto(f"{base}/cases/{seeded.cases['a_high']}/images/{seeded.keys['overlay_key']}")
    assert image.status == 401
    # Wrong password: the form says so and the browser stays anonymous.
    page.goto(f"{base}/login")
    page.fill("#username", REVIEWER[0])
    page.fill("#password", "not-the-password")
    page.click("#login")
    assert "Wrong username or password." in page.inner_text("main")
    cookies = {c["name"]: c for c in context.cookies()}
    assert cookies["skintriage_console"]["httpOnly"] is True
    assert cookies["skintriage_console"]["sameSite"] == "Lax"
    context.close()


def _submit_login(page, username: str, password: str) -> str:  # noqa: ANN001
    """Fill and submit the login form; the text of the page that answers."""
    page.fill("#username", username)
    page.fill("#password", password)
    page.click("#login")
    page.wait_for_load_state()
    return page.inner_text("main")


def test_a_stranger_behind_the_proxy_cannot_lock_a_clinician_out(browser, live_console):
    """Both come through the (trusted, loopback) proxy with their own X-Forwarded-For: the stranger's
    failures block only the stranger, the answers do not tell which names exist."""
    base, _, url = live_console
    stranger = browser.new_context(extra_http_headers={"X-Forwarded-For": "203.0.113.66"})
    page = stranger.new_page()
    page.goto(f"{base}/login")
    unknown = _submit_login(page, "nobody-here", "not-the-password")
    known = _submit_login(page, REVIEWER[0], "not-the-password-0")
    assert "Wrong username or password." in unknown and unknown == known
    for attempt in range(1, 5):
        _submit_login(page, REVIEWER[0], f"not-the-password-{attempt}")
    blocked = _submit_login(page, *REVIEWER)
    assert "Too many failed logins for this username from your address" in blocked
    assert "/login" in page.url
    stranger.close()

    clinician = browser.new_context(extra_http_headers={"X-Forwarded-For": "198.51.100.10"})
    log_in(clinician.new_page(), base, *REVIEWER)
    clinician.close()

    from sqlalchemy import select

    from skintriage.db import session_factory
    from skintriage.models import AuditEvent

    with session_factory(url).begin() as s:
        details = s.scalars(select(AuditEvent.detail).where(AuditEvent.action.like("operator.login%"))).all()
    assert {d["address"] for d in details} == {"203.0.113.66", "198.51.100.10"}


def test_review_beside_the_image_and_save_and_next_from_the_keyboard(browser, live_console):
    base, seeded, _ = live_console
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    log_in(page, base, *REVIEWER)
    page.goto(f"{base}/cases?view=review")
    queue = [int(a.get_attribute("href").rsplit("/", 1)[1]) for a in page.locator("#case-table a.case-link").all()]
    assert len(queue) >= 2
    page.goto(f"{base}/cases/{queue[0]}")

    # The review form sits beside the image: to its right, overlapping it vertically, on one screen.
    image = page.locator("#images").bounding_box()
    form = page.locator("#review-form").bounding_box()
    assert form["x"] >= image["x"] + image["width"]
    assert form["y"] < image["y"] + image["height"] and form["y"] + form["height"] <= 900

    # Letters typed into the note are text, not shortcuts.
    page.fill("#note", "")
    page.focus("#note")
    page.keyboard.type("adc")
    assert page.input_value("#note") == "adc"
    assert not any(page.is_checked(f"#verdict-{v}") for v in ("agree", "disagree", "cannot-assess"))
    # Outside a text field: D, C, then A, choose the verdict; Ctrl+Enter saves and opens the next case.
    page.evaluate("document.activeElement.blur()")
    page.keyboard.press("d")
    assert page.is_checked("#verdict-disagree")
    page.keyboard.press("c")
    assert page.is_checked("#verdict-cannot-assess")
    page.keyboard.press("a")
    assert page.is_checked("#verdict-agree")
    page.keyboard.press("Control+Enter")
    page.wait_for_url(f"{base}/cases/{queue[1]}?*")
    assert f"Review of case #{queue[0]} saved." in page.inner_text("#notice")

    # Without a verdict Ctrl+Enter submits nothing: the browser asks for one.
    page.keyboard.press("Control+Enter")
    page.wait_for_timeout(300)
    assert page.url.startswith(f"{base}/cases/{queue[1]}?")
    # The button does the same as the shortcut.
    page.check("#verdict-agree")
    page.click("#save-next")
    page.wait_for_url("**saved=**")
    assert f"Review of case #{queue[1]} saved." in page.inner_text("#notice")
    page.goto(f"{base}/cases?view=review")
    remaining = [int(a.get_attribute("href").rsplit("/", 1)[1]) for a in page.locator("#case-table a.case-link").all()]
    assert remaining == queue[2:]
    assert errors == []
    context.close()


def test_safety_page_and_a_blinded_second_read(browser, live_console):
    """An admin opens the safety page from the nav, follows a missed melanoma, then gives a reviewed case a
    blinded second read from the Second read lane: the earlier review is hidden until the read is saved."""
    from tests.console.test_safety import add_reviews

    base, seeded, url = live_console
    c = seeded.cases
    add_reviews(url, seeded)  # rita and adam's reviews: a_medium and a_low are missed melanomas
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    failed: list[str] = []
    page.on("response", lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    log_in(page, base, *ADMIN)

    page.click("#nav-safety")
    page.wait_for_url(f"{base}/safety")
    assert page.inner_text("#safety-missed-count") == "2"
    assert page.locator("#safety-missed tbody tr").count() == 2
    page.locator("#safety-missed a.case-link").first.click()
    page.wait_for_url(f"{base}/cases/{c['a_medium']}")

    page.goto(f"{base}/cases?view=second")
    page.click(f'#case-table a[href="/cases/{c["a_high"]}?read=second"]')
    page.wait_for_url("**read=second")
    assert page.is_visible("#second-read")
    assert page.locator("#reviews article").count() == 0
    page.check("#verdict-disagree")
    page.select_option("#corrected-label", "NV")
    page.click("#submit-review")
    page.wait_for_url("**notice=reviewed**")
    assert page.locator("#reviews article").count() == 2
    assert "Blinded second read" in page.inner_text("#reviews")

    page.goto(f"{base}/safety?days=30")
    assert page.inner_text("#second-pairs") == "1"
    assert failed == [] and errors == []
    context.close()


def layer_transform(page, pane: str) -> tuple[float, float, float]:  # noqa: ANN001
    """(scale, x, y) of the layer inside a zoom frame, as the browser computed its CSS transform."""
    matrix = page.eval_on_selector(f"{pane} .zoom-layer", "el => getComputedStyle(el).transform")
    if matrix == "none":
        return 1.0, 0.0, 0.0
    a, _, _, _, e, f = (float(v) for v in matrix[matrix.index("(") + 1 : -1].split(","))
    return a, e, f


def test_zoom_outline_comparison_and_patient_page(browser, live_console):
    """Zoom the photo with the buttons, the keys, the wheel and a drag; switch the outline off and on; the review
    keys still choose the verdict; compare with an earlier photo zoomed together; open the patient's page."""
    from sqlalchemy import select

    from skintriage.db import session_factory
    from skintriage.models import AuditEvent

    base, seeded, url = live_console
    c = seeded.cases
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    failed: list[str] = []
    page.on("response", lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    log_in(page, base, *REVIEWER)
    page.goto(f"{base}/cases/{c['a_high']}")
    overlay = '#viewer figure[data-kind="overlay"] .zoom-pane'
    assert wait_image(page, "#img-overlay") > 0
    assert page.is_visible("#zoom-in") and page.is_visible("#viewer-keys")
    assert layer_transform(page, overlay) == (1.0, 0.0, 0.0)
    box = page.locator(overlay).bounding_box()
    assert abs(box["width"] / box["height"] - 320 / 240) < 0.02  # the frame has the photo's shape

    # Buttons and keys zoom about the centre; 0 fits the photo again.
    page.click("#zoom-in")
    scale, x, y = layer_transform(page, overlay)
    assert scale == pytest.approx(1.25) and x < 0 and y < 0
    assert page.get_attribute(overlay, "data-scale") == "1.250" and page.inner_text("#zoom-level") == "125%"
    page.evaluate("document.activeElement.blur()")
    page.keyboard.press("+")
    assert layer_transform(page, overlay)[0] == pytest.approx(1.5625)
    page.keyboard.press("-")
    assert layer_transform(page, overlay)[0] == pytest.approx(1.25)
    page.keyboard.press("0")
    assert layer_transform(page, overlay) == (1.0, 0.0, 0.0)
    page.click("#zoom-out")  # never below the fitted photo
    assert layer_transform(page, overlay)[0] == 1.0

    # The wheel zooms about the pointer; a drag moves the zoomed photo.
    page.mouse.move(box["x"] + box["width"] * 0.25, box["y"] + box["height"] * 0.25)
    page.mouse.wheel(0, -400)
    page.wait_for_function("sel => document.querySelector(sel).dataset.scale !== '1.000'", arg=overlay)
    scale, x, y = layer_transform(page, overlay)
    assert scale > 1.5
    # The point under the pointer stays put: x' = p - (p - 0) * s.
    assert x == pytest.approx(box["width"] * 0.25 * (1 - scale), abs=1.5)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.25 + 30, box["y"] + box["height"] * 0.25 + 20, steps=5)
    page.mouse.up()
    _, x2, y2 = layer_transform(page, overlay)
    assert (x2 - x, y2 - y) == (pytest.approx(30, abs=1), pytest.approx(20, abs=1))

    # The outline switches off (the photo) and on with O and with the buttons; mask and photo keep the zoom.
    page.keyboard.press("o")
    assert page.is_visible("#img-photo") and not page.is_visible("#img-overlay")
    photo = layer_transform(page, '#viewer figure[data-kind="photo"] .zoom-pane')
    assert photo == (pytest.approx(scale), pytest.approx(x2), pytest.approx(y2))  # (hidden frames compute none)
    page.keyboard.press("o")
    assert page.is_visible("#img-overlay") and not page.is_visible("#img-photo")
    page.click("#show-mask")
    assert page.is_visible("#img-mask")
    assert layer_transform(page, '#viewer figure[data-kind="mask"] .zoom-pane')[0] == pytest.approx(scale)
    page.click("#show-photo")
    assert page.get_attribute("#show-photo", "aria-pressed") == "true" and not page.is_visible("#img-overlay")
    page.click("#show-overlay")
    assert page.is_visible("#img-overlay")

    # The review keys are untouched: A, D, C choose; + 0 and O typed into the note are text.
    page.evaluate("document.activeElement.blur()")
    page.keyboard.press("d")
    assert page.is_checked("#verdict-disagree")
    page.keyboard.press("a")
    assert page.is_checked("#verdict-agree")
    before = page.get_attribute(overlay, "data-scale")
    page.focus("#note")
    page.keyboard.type("+0o-")
    assert page.input_value("#note") == "+0o-" and page.get_attribute(overlay, "data-scale") == before
    assert page.is_visible("#img-overlay")

    # Compare with the patient's oldest case: both raw photos at the same size, zoomed and moved together.
    assert page.is_hidden("#compare") and "same spot" in page.inner_text("#compare-candidates-note")
    page.select_option("#compare-with", str(c["a_low"]))
    page.wait_for_url(f"**compare={c['a_low']}**")
    assert page.is_visible("#compare")
    assert wait_image(page, "#compare-current") > 0 and wait_image(page, "#compare-earlier") > 0
    assert f"/cases/{c['a_low']}/images/" in page.get_attribute("#compare-earlier", "src")
    assert f"#{c['a_low']}" in page.inner_text("#compare-caption")
    left, right = page.locator("#compare .zoom-pane").all()
    lbox, rbox = left.bounding_box(), right.bounding_box()
    assert (lbox["width"], lbox["height"]) == (pytest.approx(rbox["width"]), pytest.approx(rbox["height"]))
    assert rbox["x"] >= lbox["x"] + lbox["width"]  # side by side
    page.click("#compare-zoom-in")
    left_t, right_t = (layer_transform(page, f"#compare figure:nth-child({i}) .zoom-pane") for i in (1, 2))
    assert left_t[0] == pytest.approx(1.25) and left_t == right_t
    left.scroll_into_view_if_needed()
    lbox, rbox = left.bounding_box(), right.bounding_box()  # where they are now the page has scrolled
    page.mouse.move(lbox["x"] + lbox["width"] * 0.6, lbox["y"] + lbox["height"] * 0.6)
    page.mouse.wheel(0, -300)
    page.wait_for_function("() => document.querySelectorAll('#compare .zoom-pane')[1].dataset.scale !== '1.250'")
    left_t, right_t = (layer_transform(page, f"#compare figure:nth-child({i}) .zoom-pane") for i in (1, 2))
    assert left_t[0] > 1.25 and left_t == right_t
    page.keyboard.press("0")  # the keys now zoom the comparison, the last one used
    assert layer_transform(page, "#compare figure:nth-child(2) .zoom-pane") == (1.0, 0.0, 0.0)
    assert page.get_attribute(overlay, "data-scale") == before  # the main viewer keeps its zoom
    page.uncheck("#compare-sync")
    page.mouse.move(rbox["x"] + rbox["width"] / 2, rbox["y"] + rbox["height"] / 2)
    page.mouse.wheel(0, -300)
    page.wait_for_function("() => document.querySelectorAll('#compare .zoom-pane')[1].dataset.scale !== '1.000'")
    assert layer_transform(page, "#compare figure:nth-child(1) .zoom-pane") == (1.0, 0.0, 0.0)
    # A reload keeps the comparison (the URL says which case), served by the page itself.
    page.reload()
    assert page.is_visible("#compare") and wait_image(page, "#compare-earlier") > 0

    # The patient's page lists their three cases with thumbnails and leads back to a case.
    page.click("#patient-link")
    page.wait_for_url(f"{base}/patients/{seeded.users['anna']}")
    assert page.locator("#patient-cases tbody tr").count() == 3
    assert wait_image(page, f'#patient-cases tr[data-case="{c["a_low"]}"] img') > 0
    page.click(f'#patient-cases a.case-link[href="/cases/{c["a_medium"]}"]')
    page.wait_for_url(f"{base}/cases/{c['a_medium']}")

    with session_factory(url).begin() as s:
        events = s.scalars(select(AuditEvent).where(AuditEvent.action.in_(("patient.viewed", "case.image_viewed"))))
        seen = {(e.action, e.case_id, (e.detail or {}).get("kind")) for e in events}
    assert ("patient.viewed", None, None) in seen
    assert ("case.image_viewed", c["a_low"], "photo") in seen
    assert failed == [] and errors == []
    context.close()


def queue_ids(page, base: str, view: str = "review") -> list[int]:  # noqa: ANN001
    """The case ids a lane lists, in its order."""
    page.goto(f"{base}/cases?view={view}")
    return [int(a.get_attribute("href").rsplit("/", 1)[1]) for a in page.locator("#case-table a.case-link").all()]


def test_two_reviewers_claims_keep_them_off_each_others_case(browser, live_console):
    """Rita opens a case and holds it; Adam sees who holds it, and his Save and next passes it by. Rita's own
    Save and next then passes by the case Adam opened meanwhile."""
    base, _, _ = live_console
    rita = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    adam = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    log_in(rita, base, *REVIEWER)
    log_in(adam, base, *ADMIN)
    queue = queue_ids(rita, base)
    assert len(queue) >= 4

    rita.goto(f"{base}/cases/{queue[1]}")
    assert rita.is_visible("#claimed-by-you") and not rita.is_visible("#claimed")
    adam.goto(f"{base}/cases/{queue[1]}")
    assert "Being reviewed by rita" in adam.inner_text("#claimed")

    adam.goto(f"{base}/cases/{queue[0]}")
    adam.keyboard.press("a")
    adam.keyboard.press("Control+Enter")
    adam.wait_for_url(f"{base}/cases/{queue[2]}?*")  # queue[1] is Rita's: passed by
    assert f"Review of case #{queue[0]} saved." in adam.inner_text("#notice")
    assert adam.is_visible("#claimed-by-you")

    rita.keyboard.press("a")
    rita.keyboard.press("Control+Enter")
    rita.wait_for_url(f"{base}/cases/{queue[3]}?*")  # queue[2] is now Adam's
    assert f"Review of case #{queue[1]} saved." in rita.inner_text("#notice")
    assert queue_ids(rita, base) == queue[2:]  # claims hold cases, they do not take them out of the queue
    rita.context.close()
    adam.context.close()


def test_failed_and_retake_lane_and_a_cannot_assess_verdict(browser, live_console):
    """A refused photo waits in Failed and retake, not in Needs review; C saves "cannot assess" and clears it."""
    base, seeded, url = live_console
    c = seeded.cases
    page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    log_in(page, base, *REVIEWER)
    review = queue_ids(page, base)
    assert c["b_retake"] not in review and c["b_failed"] not in review
    page.click("#nav-retake")
    page.wait_for_url(f"{base}/cases?view=retake")
    lane = [int(a.get_attribute("href").rsplit("/", 1)[1]) for a in page.locator("#case-table a.case-link").all()]
    assert sorted(lane) == sorted([c["b_retake"], c["b_failed"]])

    page.click(f'#case-table a[href="/cases/{c["b_retake"]}"]')
    page.wait_for_url(f"{base}/cases/{c['b_retake']}")
    page.keyboard.press("c")
    assert page.is_checked("#verdict-cannot-assess")
    page.click("#submit-review")
    page.wait_for_url("**notice=reviewed**")
    assert "cannot assess" in page.inner_text("#reviews")

    from sqlalchemy import select

    from skintriage.db import session_factory
    from skintriage.models import Review

    with session_factory(url).begin() as s:
        saved = s.scalars(select(Review)).one()
        assert (saved.case_id, saved.verdict, saved.agrees, saved.corrected_label) == (
            c["b_retake"],
            "cannot_assess",
            False,
            None,
        )
    assert queue_ids(page, base, "retake") == [c["b_failed"]]
    assert queue_ids(page, base) == review
    page.context.close()


def test_a_review_sent_after_the_session_expired_is_saved_after_logging_in_again(browser, live_console, monkeypatch):
    """The reviewer types a review, the session idles out, Ctrl+Enter lands on the login form, which says the
    review is kept; logging in saves it and goes on to the next case."""
    import console.auth
    from tests.console.test_auth import _MovedClock

    base, seeded, url = live_console
    clock = _MovedClock()
    monkeypatch.setattr(console.auth, "time", clock)  # the server runs in this process, in a thread
    page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    log_in(page, base, *REVIEWER)
    queue = queue_ids(page, base)
    page.goto(f"{base}/cases/{queue[0]}")
    page.keyboard.press("d")
    page.select_option("#corrected-label", "NV")
    page.fill("#note", "Typed while the session ran out.")
    page.evaluate("document.activeElement.blur()")
    from skintriage.settings import get_settings

    clock.offset += get_settings().console_session_idle_s + 1  # the settings the running app was made with
    page.keyboard.press("Control+Enter")
    page.wait_for_url(f"{base}/login?*kept={queue[0]}*")
    assert f"review of case #{queue[0]}" in page.inner_text("#kept")

    from sqlalchemy import select

    from skintriage.db import session_factory
    from skintriage.models import Review

    with session_factory(url).begin() as s:
        assert s.scalars(select(Review)).all() == []
    page.fill("#username", REVIEWER[0])
    page.fill("#password", REVIEWER[1])
    page.click("#login")
    page.wait_for_url(f"{base}/cases/{queue[1]}?*")
    assert f"Review of case #{queue[0]} saved." in page.inner_text("#notice")
    with session_factory(url).begin() as s:
        review = s.scalars(select(Review)).one()
        assert (review.case_id, review.verdict, review.corrected_label, review.note) == (
            queue[0],
            "disagree",
            "NV",
            "Typed while the session ran out.",
        )
    page.context.close()


def _console_pages():  # noqa: ANN202
    """bench/console_pages.py as a module (bench/ is scripts, not a package)."""
    import importlib.util
    import sys

    if "console_pages" not in sys.modules:
        spec = importlib.util.spec_from_file_location("console_pages", BENCH)
        module = importlib.util.module_from_spec(spec)
        sys.modules["console_pages"] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
    return sys.modules["console_pages"]


def test_review_loop_counts_two_keys_and_one_page_load_per_case(browser, live_console):
    """The numbers in docs/console.md ("Review loop"): with the keys, each case costs A and Ctrl+Enter and one page
    load; the mouse flow without Save and next costs four clicks and three page loads."""
    pages = _console_pages()
    base, _, _ = live_console
    for flow, cases in (("keys", 3), ("mouse", 2)):
        page = browser.new_context(viewport=pages.VIEWPORT).new_page()
        log_in(page, base, *REVIEWER)
        counts = pages.review_loop(page, base, flow=flow, cases=cases)
        assert len(set(counts.reviewed)) == cases
        if flow == "keys":
            assert (counts.keystrokes, counts.clicks, counts.wheel_notches, counts.page_loads) == (6, 1, 0, 4)
        else:
            assert (counts.keystrokes, counts.clicks, counts.page_loads) == (0, 8, 6)
        if flow == "mouse":
            assert queue_ids(page, base) == []  # the five seeded cases of the queue, each reviewed once
        page.context.close()


def test_docs_screenshots_script_takes_every_page(browser, live_console, tmp_path):
    """bench/console_pages.py screenshots: every page renders and is captured (into tmp_path here)."""
    pages = _console_pages()
    base, seeded, url = live_console
    pages._make_korean(url, seeded.cases["b_high_old"])
    page = browser.new_context(viewport=pages.VIEWPORT).new_page()
    errors: list[str] = []
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    shots = pages.screenshots(page, base, seeded, url, tmp_path)
    assert [p.stem for p in shots] == list(pages.SHOTS)
    assert all(p.stat().st_size > 10_000 for p in shots)
    assert errors == []
    page.context.close()
