"""Log in and submit forms like a browser does (CSRF token from the page)."""

from __future__ import annotations

import re

CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(html: str) -> str:
    """The CSRF token in a rendered page."""
    match = CSRF_RE.search(html)
    assert match, "page has no CSRF field"
    return match.group(1)


def login(client, username: str, password: str):  # noqa: ANN001, ANN201
    """Log in through the form like a browser; returns the POST response."""
    page = client.get("/login")
    return client.post(
        "/login", data={"username": username, "password": password, "csrf_token": csrf_of(page.text), "next": "/cases"}
    )
