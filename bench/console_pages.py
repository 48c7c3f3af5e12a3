"""The operator console in a real browser on seeded data: screenshots for the docs, and the review loop counted.

    .venv/bin/python bench/console_pages.py screenshots --out docs/console
    .venv/bin/python bench/console_pages.py review-loop --flow keys --cases 3
    .venv/bin/python bench/console_pages.py review-loop --flow mouse --cases 3 [--code /tmp/older-checkout]

Both serve the console with uvicorn in a thread on a fresh migrated SQLite database seeded by
tests/console/seed.py (real images), and drive Debian's Chromium (`CHROMIUM_PATH`, default /usr/bin/chromium)
with Playwright at 1280x900, logged in as the seeded reviewer.

`review-loop` reviews `--cases` cases from the Needs review queue, the way an operator does, and counts what the
operator did: key presses (a chord such as Ctrl+Enter counts once), mouse clicks, mouse-wheel notches
(100 px each, only when the next thing to click is out of view) and page loads (documents the browser
loaded; a form post answered with a redirect loads one page). The counting starts with the queue open.
`--flow keys`: open the first case, then A and Ctrl+Enter (Save and next) per case. `--flow mouse`: the
flow before Save and next: open the case from the queue, scroll to the form, click Agree, scroll to and
click Save review, go back to the queue, open the next one. `--code DIR` runs an older checkout's console and
seed (e.g. `git archive <commit> | tar -x -C DIR`) to measure the mouse flow on its page layout.
Prints the counts as JSON (with `--json` also to a file).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
VIEWPORT = {"width": 1280, "height": 900}
WHEEL_NOTCH_PX = 100


@contextmanager
def served_console(workdir: Path, *, korean_case: bool = False) -> Iterator[tuple[str, object, str]]:
    """(base URL, seeded ids, database URL) of a console on a freshly seeded database under `workdir`."""
    os.environ["DATA_DIR"] = str(workdir / "data")
    os.environ["MODEL_DIR"] = str(workdir / "models")
    import uvicorn

    from console.app import create_app
    from skintriage import migrate
    from skintriage.settings import get_settings
    from skintriage.storage import LocalImageStore
    from tests.console.seed import seed

    get_settings.cache_clear()
    url = f"sqlite:///{workdir / 'console.sqlite'}"
    migrate.upgrade(url)
    store = LocalImageStore(workdir / "data" / "images")
    seeded = seed(url, store)
    if korean_case:
        _make_korean(url, seeded.cases["b_high_old"])
    app = create_app(settings=get_settings(), database_url=url, store=store)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off", proxy_headers=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="console-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start the console within 30 s; see its log above")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}", seeded, url
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def _make_korean(url: str, case_id: int) -> None:
    """Make one seeded case a Korean patient's, its answer composed by the bot as the worker stores it."""
    from bot.answers import compose
    from bot.i18n import load_texts
    from skintriage.db import session_factory
    from skintriage.models import Case

    with session_factory(url).begin() as session:
        case = session.get(Case, case_id)
        case.language = case.user.language = "ko"
        case.reply_text = compose(case, texts=load_texts()).full_text


@contextmanager
def browser_page() -> Iterator[object]:
    """A fresh Chromium page at 1280x900."""
    from playwright.sync_api import sync_playwright

    if not os.access(CHROMIUM, os.X_OK):
        raise SystemExit(f"Chromium not found at {CHROMIUM}; apt-get install -y chromium, or set CHROMIUM_PATH")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"], headless=True)
        try:
            yield browser.new_context(viewport=VIEWPORT).new_page()
        finally:
            browser.close()


def log_in(page, base: str, username: str, password: str) -> None:
    """Log in through the form (not counted)."""
    page.goto(f"{base}/login")
    page.fill("#username", username)
    page.fill("#password", password)
    page.click("#login")
    page.wait_for_url(f"{base}/cases*")


# --- the review loop, counted ---------------------------------------------------------------


@dataclass
class Counts:
    """What the operator did to review `cases` cases, from the open queue to the next case's page."""

    flow: str
    cases: int
    keystrokes: int = 0
    clicks: int = 0
    wheel_notches: int = 0
    page_loads: int = 0
    reviewed: list[int] = field(default_factory=list)

    def per_case(self) -> dict[str, float]:
        """The counts divided by the number of cases reviewed."""
        return {
            k: round(getattr(self, k) / self.cases, 2) for k in ("keystrokes", "clicks", "wheel_notches", "page_loads")
        }


class Operator:
    """Acts on a page like a person and counts every action (see the module doc)."""

    def __init__(self, page, counts: Counts):
        self.page = page
        self.counts = counts
        page.on("load", lambda _: self._loaded())

    def _loaded(self) -> None:
        self.counts.page_loads += 1

    def press(self, key: str) -> None:
        """One key or chord."""
        self.counts.keystrokes += 1
        self.page.keyboard.press(key)

    def click(self, selector: str) -> None:
        """Scroll with the wheel until the element is in view (each notch counted), then click it."""
        target = self.page.locator(selector).first
        for _ in range(100):
            box = target.bounding_box()
            viewport = self.page.viewport_size
            if box is None:
                raise RuntimeError(f"{selector} is not on the page {self.page.url}")
            if box["y"] >= 0 and box["y"] + box["height"] <= viewport["height"]:
                break
            self.counts.wheel_notches += 1
            # At the page's left margin: over the image viewer the wheel zooms the photo instead.
            self.page.mouse.move(4, viewport["height"] / 2)
            self.page.mouse.wheel(0, WHEEL_NOTCH_PX if box["y"] > 0 else -WHEEL_NOTCH_PX)
            self.page.wait_for_timeout(50)
        self.counts.clicks += 1
        target.click()


def first_in_queue(page) -> str:
    """The link to the first case the Needs review queue lists."""
    href = page.locator("#case-table a.case-link").first.get_attribute("href")
    return f'#case-table a[href="{href}"]'


def _case_id(url: str) -> int:
    return int(url.split("?")[0].rsplit("/", 1)[1])


def review_loop(page, base: str, *, flow: str, cases: int) -> Counts:
    """Review `cases` cases from the open queue with the keyboard (`keys`) or the mouse (`mouse`); count it all."""
    page.goto(f"{base}/cases?view=review")
    counts = Counts(flow=flow, cases=cases)
    operator = Operator(page, counts)
    if flow == "keys":
        with page.expect_navigation():
            operator.click(first_in_queue(page))
        for _ in range(cases):
            counts.reviewed.append(_case_id(page.url))
            operator.press("a")
            with page.expect_navigation():
                operator.press("Control+Enter")
    elif flow == "mouse":
        for _ in range(cases):
            with page.expect_navigation():
                operator.click(first_in_queue(page))
            counts.reviewed.append(_case_id(page.url))
            operator.click("#verdict-agree")
            with page.expect_navigation():
                operator.click("#submit-review")
            with page.expect_navigation():
                operator.click("#nav-queue")
    else:
        raise ValueError(f"unknown flow {flow!r}; use keys or mouse")
    page.wait_for_load_state("load")
    return counts


# --- screenshots ----------------------------------------------------------------------------


SHOTS = ("login", "review-queue", "case-page", "case-told-in-english", "safety", "patient")


def screenshots(page, base: str, seeded, url: str, out: Path) -> list[Path]:
    """The login form, the review queue, the case page with its viewer, a Korean answer in English, the safety
    page and a patient page, as PNGs in `out`."""
    from tests.console.seed import REVIEWER
    from tests.console.test_safety import add_reviews

    out.mkdir(parents=True, exist_ok=True)
    shots: list[Path] = []

    def shot(name: str, *, full_page: bool = True, element: str | None = None) -> None:
        page.wait_for_load_state("networkidle")
        path = out / f"{name}.png"
        if element:
            page.locator(element).screenshot(path=str(path))
        else:
            page.screenshot(path=str(path), full_page=full_page)
        shots.append(path)

    page.goto(f"{base}/login")
    shot("login", full_page=False)
    log_in(page, base, *REVIEWER)
    page.goto(f"{base}/cases?view=review")
    shot("review-queue")
    page.goto(f"{base}/cases/{seeded.cases['a_high']}")
    page.wait_for_function("() => document.querySelector('#img-overlay')?.complete")
    shot("case-page")
    page.goto(f"{base}/cases/{seeded.cases['b_high_old']}")
    if not _has_korean_font():
        print(
            "warning: no Korean font (fc-list :lang=ko); Hangul shows as boxes: apt-get install fonts-nanum",
            file=sys.stderr,
        )
    shot("case-told-in-english", element="#told")
    add_reviews(url, seeded)
    page.goto(f"{base}/safety?days=30")
    shot("safety")
    page.goto(f"{base}/patients/{seeded.users['anna']}")
    shot("patient")
    return shots


def _has_korean_font() -> bool:
    import subprocess

    try:
        found = subprocess.run(["fc-list", ":lang=ko"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return False
    return bool(found.strip())


def main(args: argparse.Namespace) -> int:
    """Run the chosen command; print what it made or counted."""
    sys.path.insert(0, str(Path(args.code).resolve() if getattr(args, "code", None) else ROOT))
    os.environ.setdefault("SKINTRIAGE_ENV", "test")
    with tempfile.TemporaryDirectory(prefix="console-pages-") as tmp:
        if args.command == "screenshots":
            with served_console(Path(tmp), korean_case=True) as (base, seeded, url), browser_page() as page:
                for path in screenshots(page, base, seeded, url, Path(args.out)):
                    print(path)
            return 0
        from tests.console.seed import REVIEWER

        with served_console(Path(tmp)) as (base, _, _), browser_page() as page:
            log_in(page, base, *REVIEWER)
            counts = review_loop(page, base, flow=args.flow, cases=args.cases)
    import console

    report = {**asdict(counts), "per_case": counts.per_case(), "console": str(Path(console.__file__).parent)}
    print(json.dumps(report, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    shots = sub.add_parser("screenshots", help="PNGs of the console's pages for the docs")
    shots.add_argument("--out", default=str(ROOT / "docs" / "console"))
    loop = sub.add_parser("review-loop", help="count keystrokes, clicks and page loads to review cases")
    loop.add_argument("--flow", choices=("keys", "mouse"), default="keys")
    loop.add_argument("--cases", type=int, default=3)
    loop.add_argument("--code", help="an older checkout whose console and seed to run (default: this one)")
    loop.add_argument("--json", help="also write the counts here")
    return parser.parse_args(argv)


if __name__ == "__main__":
    raise SystemExit(main(parse_args()))
