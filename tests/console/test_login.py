"""Login throttling that cannot be turned against clinicians (issue 14): failures counted per (address,
username) with `limits`, one answer and one argon2 check for every name, X-Forwarded-For only from trusted
proxies, failed and blocked logins audited with the address and the name tried, and the idle timeout."""

from __future__ import annotations

import re
import time

import pytest
from argon2 import PasswordHasher
from fastapi.testclient import TestClient
from sqlalchemy import select
from starlette.requests import Request

from console.throttle import LoginLimiter, client_address, limiter_storage_url
from skintriage.db import session_factory
from skintriage.models import AuditEvent
from skintriage.settings import parse_networks
from tests.console.seed import ADMIN, REVIEWER
from tests.console.session_helpers import csrf_of, login

STRANGER = ("203.0.113.66", 40000)
CLINIC = ("198.51.100.10", 40001)
MAX_FAILURES = 5  # CONSOLE_LOGIN_MAX_FAILURES default


def client_from(app, address: tuple[str, int]) -> TestClient:  # noqa: ANN001
    """A browser-like client whose TCP peer is `address`."""
    return TestClient(app, follow_redirects=False, client=address)


def login_events(url: str) -> list[AuditEvent]:
    """Failed and blocked login events, oldest first."""
    with session_factory(url).begin() as s:
        rows = s.scalars(
            select(AuditEvent)
            .where(AuditEvent.action.in_(["operator.login_failed", "operator.login_blocked"]))
            .order_by(AuditEvent.id)
        ).all()
        s.expunge_all()
        return list(rows)


def without_tokens(html: str) -> str:
    """A page with its per-session CSRF token blanked, so two sessions' pages can be compared."""
    return re.sub(r'value="[A-Za-z0-9_-]{32,}"', 'value=""', html)


@pytest.mark.slow
def test_a_stranger_cannot_lock_a_clinician_out(app, seeded, console_db_url):
    with client_from(app, STRANGER) as stranger:
        for attempt in range(MAX_FAILURES + 10):
            login(stranger, REVIEWER[0], f"guess-{attempt}-guess")
        # Blocked for this name from the stranger's address, even with the right password ...
        assert login(stranger, *REVIEWER).status_code == 429
    # ... while the clinician, from their own address, logs in at once.
    with client_from(app, CLINIC) as clinician:
        assert login(clinician, *REVIEWER).status_code == 303
        assert clinician.get("/cases").status_code == 200


@pytest.mark.slow
def test_unknown_and_known_names_get_the_same_answers(app, seeded):
    pages: dict[tuple[str, str], str] = {}
    for name in ("nobody-here", REVIEWER[0]):
        with client_from(app, STRANGER) as c:
            first = login(c, name, "wrong-password-0")
            assert first.status_code == 401
            for attempt in range(1, MAX_FAILURES):
                assert login(c, name, f"wrong-password-{attempt}").status_code == 401
            blocked = login(c, name, "wrong-password-x")
            assert blocked.status_code == 429
            pages[(name, "failed")] = without_tokens(first.text)
            pages[(name, "blocked")] = without_tokens(blocked.text)
    assert pages[("nobody-here", "failed")] == pages[(REVIEWER[0], "failed")]
    assert pages[("nobody-here", "blocked")] == pages[(REVIEWER[0], "blocked")]
    assert "Wrong username or password." in pages[("nobody-here", "failed")]
    assert "Too many failed logins for this username from your address" in pages[("nobody-here", "blocked")]


@pytest.mark.slow
def test_every_attempt_costs_exactly_one_argon2_check(app, seeded, monkeypatch):
    """Timing: unknown names, wrong passwords, blocked pairs and successes all run one verify, no more."""
    import console.auth

    calls: list[str] = []

    class CountingHasher(PasswordHasher):
        def verify(self, hash, password):  # noqa: ANN001, ANN202, A002 - argon2's signature
            calls.append(password)
            return super().verify(hash, password)

    monkeypatch.setattr(console.auth, "_hasher", CountingHasher())
    with client_from(app, STRANGER) as c:
        for name in ("nobody-here", REVIEWER[0]):
            for attempt in range(MAX_FAILURES + 2):  # the last two are blocked
                calls.clear()
                login(c, name, f"wrong-password-{attempt}")
                assert len(calls) == 1, (name, attempt, calls)
        calls.clear()
        assert login(c, *ADMIN).status_code == 303
        assert len(calls) == 1


@pytest.mark.slow
def test_failed_and_blocked_logins_are_audited_with_address_and_name(app, seeded, console_db_url):
    with client_from(app, STRANGER) as c:
        login(c, "nobody-here", "whatever-password")
        login(c, REVIEWER[0], "wrong-password-1")
        for attempt in range(MAX_FAILURES):
            login(c, REVIEWER[0], f"wrong-password-x{attempt}")
    events = login_events(console_db_url)
    assert [e.action for e in events] == ["operator.login_failed"] * (MAX_FAILURES + 1) + ["operator.login_blocked"]
    assert events[0].detail == {"address": STRANGER[0], "username": "nobody-here", "reason": "unknown"}
    assert events[0].operator_id is None
    assert events[1].detail == {"address": STRANGER[0], "username": REVIEWER[0], "reason": "password"}
    assert events[1].operator_id == seeded.operators["rita"]
    assert events[-1].detail == {"address": STRANGER[0], "username": REVIEWER[0]}


@pytest.mark.slow
def test_x_forwarded_for_counts_only_from_a_trusted_proxy(app, seeded, console_db_url):
    # Behind the proxy (127.0.0.1 is trusted by default) each user is their own address ...
    with client_from(app, ("127.0.0.1", 50000)) as proxy:
        for attempt in range(MAX_FAILURES + 1):
            proxy.headers["x-forwarded-for"] = STRANGER[0]
            login(proxy, REVIEWER[0], f"guess-{attempt}-guess")
        assert login(proxy, *REVIEWER).status_code == 429
        proxy.headers["x-forwarded-for"] = CLINIC[0]
        assert login(proxy, *REVIEWER).status_code == 303
    # ... and a client that is not a trusted proxy cannot pick its address by sending the header.
    with client_from(app, STRANGER) as liar:
        liar.headers["x-forwarded-for"] = CLINIC[0]
        assert login(liar, REVIEWER[0], "wrong-password-1").status_code == 429
    addresses = [e.detail["address"] for e in login_events(console_db_url)]
    assert set(addresses) == {STRANGER[0]}


def _request(peer: str, *forwarded: str) -> Request:
    headers = [(b"x-forwarded-for", value.encode()) for value in forwarded]
    return Request({"type": "http", "method": "GET", "path": "/", "headers": headers, "client": (peer, 1)})


@pytest.mark.parametrize(
    ("peer", "forwarded", "trusted", "expected"),
    [
        ("203.0.113.5", ["1.2.3.4"], "127.0.0.1", "203.0.113.5"),  # untrusted peer: header ignored
        ("127.0.0.1", [], "127.0.0.1", "127.0.0.1"),  # trusted peer without header
        ("127.0.0.1", ["198.51.100.7"], "127.0.0.1", "198.51.100.7"),
        ("127.0.0.1", ["6.6.6.6, 198.51.100.7"], "127.0.0.1", "198.51.100.7"),  # the client's own entry is ignored
        ("172.18.0.1", ["6.6.6.6, 198.51.100.7, 10.0.0.3"], "172.16.0.0/12,10.0.0.0/8", "198.51.100.7"),
        ("172.18.0.1", ["6.6.6.6", "198.51.100.7"], "172.16.0.0/12", "198.51.100.7"),  # repeated headers
        ("127.0.0.1", ["not-an-ip"], "127.0.0.1", "127.0.0.1"),
        ("::ffff:127.0.0.1", ["2001:db8::1"], "127.0.0.1", "2001:db8::1"),
        ("testclient", ["1.2.3.4"], "127.0.0.1", "testclient"),
    ],
)
def test_client_address(peer, forwarded, trusted, expected):
    assert client_address(_request(peer, *forwarded), parse_networks(trusted)) == expected


def test_trusted_proxies_setting_is_checked(monkeypatch):
    from pydantic import ValidationError

    from skintriage.settings import Settings

    monkeypatch.setenv("CONSOLE_TRUSTED_PROXIES", "127.0.0.1, 172.16.0.0/12")
    assert [str(n) for n in Settings().trusted_proxy_networks] == ["127.0.0.1/32", "172.16.0.0/12"]
    monkeypatch.setenv("CONSOLE_TRUSTED_PROXIES", "127.0.0.1,proxy.example")
    with pytest.raises(ValidationError, match="not an IP address or network"):
        Settings()


def test_limiter_storage_is_the_project_redis_or_memory():
    assert limiter_storage_url("", "redis://redis:6379/0") == "redis://redis:6379/0"
    assert limiter_storage_url("", "filesystem://") == "memory://"
    assert limiter_storage_url("redis://other:6379/3", "filesystem://") == "redis://other:6379/3"


def test_failures_are_shared_through_redis(redis_url):
    """Two console processes (two limiters on one Redis) count the same failures."""
    first = LoginLimiter(max_failures=3, window_s=60, storage_url=redis_url)
    second = LoginLimiter(max_failures=3, window_s=60, storage_url=redis_url)
    for _ in range(3):
        first.failed("198.51.100.7", "rita")
    assert second.blocked("198.51.100.7", "rita")
    assert not second.blocked("198.51.100.8", "rita") and not second.blocked("198.51.100.7", "adam")
    second.clear("198.51.100.7", "rita")
    assert not first.blocked("198.51.100.7", "rita")


def test_an_unreachable_redis_falls_back_to_memory(caplog):
    limiter = LoginLimiter(max_failures=2, window_s=60, storage_url="redis://127.0.0.1:1/0")
    limiter.failed("198.51.100.7", "rita")
    limiter.failed("198.51.100.7", "rita")
    assert limiter.blocked("198.51.100.7", "rita")
    assert "counting in memory" in caplog.text and "127.0.0.1:1" not in caplog.text


@pytest.mark.redis
def test_a_hung_redis_costs_a_login_seconds_and_counting_goes_on_in_memory(redis_url, caplog):
    from skintriage.settings import Settings
    from tests.proxy import TcpProxy

    proxy = TcpProxy(6379)
    try:
        options = Settings(REDIS_CONNECT_TIMEOUT_S=1, REDIS_SOCKET_TIMEOUT_S=1).redis_client_options
        url = redis_url.replace("127.0.0.1:6379", f"127.0.0.1:{proxy.port}")
        limiter = LoginLimiter(max_failures=2, window_s=60, storage_url=url, redis_options=options)
        assert not limiter.blocked("198.51.100.7", "rita")  # through the proxy to the real Redis

        proxy.stall()  # Redis accepts and never answers: without a socket timeout every login would hang
        started = time.monotonic()
        limiter.failed("198.51.100.7", "rita")
        limiter.failed("198.51.100.7", "rita")
        assert limiter.blocked("198.51.100.7", "rita")
        took = time.monotonic() - started
        assert took < 6, f"three checks took {took:.1f} s"
        assert caplog.text.count("counting in memory") == 3 and "TimeoutError" in caplog.text
        assert str(proxy.port) not in caplog.text
    finally:
        proxy.close()


def test_the_console_uses_redis_when_the_broker_is_redis(monkeypatch, redis_url, console_db_url, store, seeded):
    from console.app import create_app
    from skintriage.settings import get_settings

    monkeypatch.setenv("CELERY_BROKER_URL", redis_url)
    get_settings.cache_clear()
    app = create_app(settings=get_settings(), database_url=console_db_url, store=store)
    assert app.state.login_limiter.storage_url == redis_url
    with client_from(app, STRANGER) as c:
        for attempt in range(MAX_FAILURES):
            login(c, REVIEWER[0], f"wrong-password-{attempt}")
    other = LoginLimiter(max_failures=MAX_FAILURES, window_s=900, storage_url=redis_url)
    assert other.blocked(STRANGER[0], REVIEWER[0])


@pytest.mark.slow
def test_admin_sees_and_lifts_a_block(app, admin_client, seeded, console_db_url):
    with client_from(app, STRANGER) as c:
        for attempt in range(MAX_FAILURES):
            login(c, REVIEWER[0], f"wrong-password-{attempt}")
        assert login(c, *REVIEWER).status_code == 429
        page = admin_client.get("/admin/operators")
        assert STRANGER[0] in page.text and "Unblock" in page.text
        response = admin_client.post(
            f"/admin/operators/{seeded.operators['rita']}/unlock", data={"csrf_token": csrf_of(page.text)}
        )
        assert response.status_code == 303
        assert STRANGER[0] not in admin_client.get("/admin/operators").text
        assert login(c, *REVIEWER).status_code == 303
    with session_factory(console_db_url).begin() as s:
        event = s.scalars(select(AuditEvent).where(AuditEvent.action == "operator.unlocked")).one()
        assert event.detail == {"operator": seeded.operators["rita"], "addresses": [STRANGER[0]]}


class _MovedClock:
    """The time module, moved forward by `offset` seconds."""

    def __init__(self) -> None:
        self.offset = 0.0

    def time(self) -> float:
        return time.time() + self.offset

    def __getattr__(self, name: str):  # noqa: ANN204
        return getattr(time, name)


def test_an_idle_session_ends_and_activity_keeps_it_alive(monkeypatch, app, seeded):
    import console.auth

    clock = _MovedClock()
    monkeypatch.setattr(console.auth, "time", clock)
    idle_s = app.state.settings.console_session_idle_s
    assert idle_s == 30 * 60
    with TestClient(app, follow_redirects=False) as c:
        assert login(c, *REVIEWER).status_code == 303
        for _ in range(3):  # active for three idle periods in all: still logged in
            clock.offset += idle_s - 60
            assert c.get("/cases").status_code == 200
        clock.offset += idle_s + 1
        assert c.get("/cases").status_code == 303
        clock.offset += 1  # and the session is gone, not just refused once
        assert c.get("/cases").status_code == 303


def _review_after_the_session_ended(monkeypatch, client, case_id: int):  # noqa: ANN001, ANN202
    """Open a case, wait past the idle timeout, then submit a review (Save and next) as a browser would."""
    import console.auth

    clock = _MovedClock()
    monkeypatch.setattr(console.auth, "time", clock)
    assert login(client, *REVIEWER).status_code == 303
    token = csrf_of(client.get(f"/cases/{case_id}").text)
    clock.offset += client.app.state.settings.console_session_idle_s + 1
    return client.post(
        f"/cases/{case_id}/reviews",
        data={
            "csrf_token": token,
            "verdict": "disagree",
            "corrected_label": "NV",
            "urgency": "soon",
            "note": "Typed for ten minutes.",
            "then": "next",
        },
    )


def test_a_review_sent_after_the_session_ended_is_saved_after_logging_in_again(
    monkeypatch, app, seeded, console_db_url
):
    from skintriage.models import PendingReview, Review

    case_id = seeded.cases["b_uncertain"]
    with TestClient(app, follow_redirects=False) as c:
        response = _review_after_the_session_ended(monkeypatch, c, case_id)
        assert response.status_code == 303
        assert response.headers["location"] == f"/login?next=%2Fcases%2F{case_id}&kept={case_id}"
        with session_factory(console_db_url).begin() as s:
            assert s.scalars(select(Review)).all() == []
            kept = s.scalars(select(PendingReview)).one()
            assert (kept.operator_id, kept.case_id, kept.form["note"]) == (
                seeded.operators["rita"],
                case_id,
                "Typed for ten minutes.",
            )
        page = c.get(response.headers["location"]).text
        assert f"your review of case #{case_id} was saved. It is kept" in page
        # Logging in again saves it and goes on as Save and next would have.
        response = login(c, *REVIEWER)
        assert response.status_code == 303
        assert f"saved={case_id}" in response.headers["location"]
        with session_factory(console_db_url).begin() as s:
            review = s.scalars(select(Review)).one()
            assert (review.case_id, review.operator_id, review.verdict, review.corrected_label, review.note) == (
                case_id,
                seeded.operators["rita"],
                "disagree",
                "NV",
                "Typed for ten minutes.",
            )
            assert s.scalars(select(PendingReview)).all() == []
        # Used once: logging in again saves nothing more.
        assert login(c, *REVIEWER).headers["location"] == "/cases"
        with session_factory(console_db_url).begin() as s:
            assert len(s.scalars(select(Review)).all()) == 1


def test_a_kept_review_is_saved_only_for_the_operator_who_wrote_it(monkeypatch, app, seeded, console_db_url):
    from skintriage.models import PendingReview, Review

    with TestClient(app, follow_redirects=False) as c:
        assert _review_after_the_session_ended(monkeypatch, c, seeded.cases["a_high"]).status_code == 303
        assert login(c, *ADMIN).headers["location"] == "/cases"
    with session_factory(console_db_url).begin() as s:
        assert s.scalars(select(Review)).all() == []
        assert s.scalars(select(PendingReview)).all() == []  # discarded, not left for anyone
    # Without a session naming an operator nothing is kept: the post is refused as before.
    with TestClient(app, follow_redirects=False) as anonymous:
        token = csrf_of(anonymous.get("/login").text)
        response = anonymous.post(
            f"/cases/{seeded.cases['a_high']}/reviews", data={"csrf_token": token, "verdict": "agree"}
        )
        assert response.status_code == 401
