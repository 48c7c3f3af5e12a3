"""Sessions: login redirects, logout and revocation, tampered and expired cookies."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from console.auth import SESSION_COOKIE
from skintriage.db import session_factory
from skintriage.models import AuditEvent, Operator
from tests.console.seed import ADMIN, REVIEWER
from tests.console.session_helpers import csrf_of, login


def test_login_goes_to_the_page_the_operator_asked_for(client, seeded):
    first = client.get("/cases?tier=HIGH")
    assert first.headers["location"] == "/login?next=%2Fcases%3Ftier%3DHIGH"
    form = client.get(first.headers["location"])
    assert 'name="next" value="/cases?tier=HIGH"' in form.text
    response = client.post(
        "/login",
        data={
            "username": REVIEWER[0],
            "password": REVIEWER[1],
            "csrf_token": csrf_of(form.text),
            "next": "/cases?tier=HIGH",
        },
    )
    assert response.status_code == 303
    assert response.headers["location"] == "/cases?tier=HIGH"


@pytest.mark.parametrize("target", ["//evil.example/", "https://evil.example/", "/\\evil.example", "javascript:x", ""])
def test_login_never_redirects_off_site(client, seeded, target):
    form = client.get("/login")
    response = client.post(
        "/login",
        data={"username": REVIEWER[0], "password": REVIEWER[1], "csrf_token": csrf_of(form.text), "next": target},
    )
    assert response.status_code == 303
    assert response.headers["location"] == "/cases"


def test_login_replaces_the_anonymous_session_and_its_csrf_token(client, seeded, console_db_url):
    anonymous_token = csrf_of(client.get("/login").text)
    assert login(client, *REVIEWER).status_code == 303
    assert csrf_of(client.get("/cases").text) != anonymous_token
    with session_factory(console_db_url).begin() as s:
        rita = s.get(Operator, seeded.operators["rita"])
        assert rita.last_login_at is not None
        assert s.scalars(select(AuditEvent.action).where(AuditEvent.operator_id == rita.id)).all() == ["operator.login"]


def test_logout_ends_this_and_every_earlier_session(app, reviewer, seeded, console_db_url):
    stolen = reviewer.cookies.get(SESSION_COOKIE)
    token = csrf_of(reviewer.get("/cases").text)
    response = reviewer.post("/logout", data={"csrf_token": token})
    assert response.status_code == 303 and response.headers["location"] == "/login"
    assert reviewer.get("/cases").status_code == 303
    # A copy of the cookie taken before the logout no longer works either.
    with TestClient(app, follow_redirects=False) as other:
        other.cookies.set(SESSION_COOKIE, stolen)
        assert other.get("/cases").status_code == 303
    # Logging in again starts a new, valid session.
    time.sleep(0.01)
    assert login(reviewer, *REVIEWER).status_code == 303
    assert reviewer.get("/cases").status_code == 200


def test_deactivating_an_operator_ends_their_session(reviewer, admin_client, seeded):
    assert reviewer.get("/cases").status_code == 200
    token = csrf_of(admin_client.get("/admin/operators").text)
    response = admin_client.post(
        f"/admin/operators/{seeded.operators['rita']}/active", data={"csrf_token": token, "active": "0"}
    )
    assert response.status_code == 303
    assert reviewer.get("/cases").status_code == 303


def test_admin_cannot_deactivate_themselves(admin_client, seeded):
    token = csrf_of(admin_client.get("/admin/operators").text)
    response = admin_client.post(
        f"/admin/operators/{seeded.operators['adam']}/active", data={"csrf_token": token, "active": "0"}
    )
    assert response.status_code == 400
    assert admin_client.get("/cases").status_code == 200


def test_a_password_change_ends_existing_sessions(reviewer, console_db_url, seeded):
    from console.operators import reset_operator

    with session_factory(console_db_url).begin() as s:
        reset_operator(session=s, username=REVIEWER[0], password="a-brand-new-password")
    assert reviewer.get("/cases").status_code == 303


def test_a_tampered_cookie_is_ignored(app, reviewer, seeded):
    cookie = reviewer.cookies.get(SESSION_COOKIE)
    payload, _, signature = cookie.partition(".")
    with TestClient(app, follow_redirects=False) as other:
        other.cookies.set(SESSION_COOKIE, payload[:-2] + "AA." + signature)
        assert other.get("/cases").status_code == 303


class _MovedClock:
    """The time module, moved forward by `offset` seconds (for expiry without sleeping)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def time(self) -> float:
        return time.time() + self.offset

    def __getattr__(self, name: str):  # noqa: ANN204
        return getattr(time, name)


@pytest.mark.parametrize("expires", ["app check", "cookie signature"])
def test_sessions_expire(monkeypatch, console_db_url, store, seeded, expires):
    """Both the app's own session age check and the signed cookie's timestamp end a session at max age.

    The clock is moved rather than slept on: a 1 s max age with a real sleep failed under a loaded CI
    machine when the login form's GET and POST straddled two whole seconds of the cookie timestamp.
    """
    import itsdangerous.timed

    import console.auth
    from console.app import create_app
    from skintriage.settings import get_settings

    monkeypatch.setenv("CONSOLE_SESSION_MAX_AGE_S", "600")
    get_settings.cache_clear()
    app = create_app(settings=get_settings(), database_url=console_db_url, store=store)
    clock = _MovedClock()
    monkeypatch.setattr(console.auth if expires == "app check" else itsdangerous.timed, "time", clock)
    with TestClient(app, follow_redirects=False) as c:
        assert login(c, *REVIEWER).status_code == 303
        assert c.get("/cases").status_code == 200
        clock.offset = 700
        assert c.get("/cases").status_code == 303


def test_admin_adds_an_operator_who_can_log_in(admin_client, app, seeded):
    token = csrf_of(admin_client.get("/admin/operators").text)
    weak = admin_client.post(
        "/admin/operators", data={"csrf_token": token, "username": "nina", "password": "short", "role": "reviewer"}
    )
    assert weak.status_code == 400 and "at least 10" in weak.text
    taken = admin_client.post(
        "/admin/operators",
        data={"csrf_token": token, "username": ADMIN[0], "password": "long-enough-pass", "role": "reviewer"},
    )
    assert taken.status_code == 400 and "already exists" in taken.text
    response = admin_client.post(
        "/admin/operators",
        data={"csrf_token": token, "username": "nina", "password": "nina-password-1", "role": "reviewer"},
    )
    assert response.status_code == 303
    with TestClient(app, follow_redirects=False) as nina:
        assert login(nina, "nina", "nina-password-1").status_code == 303
        assert nina.get("/audit").status_code == 403
