"""Console security: access rules for every route, CSRF, image-key path traversal, SQL metacharacters in
every filter, session cookie flags, password hashing and login throttling (issue 8, console part;
the throttling in depth is in test_login.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from skintriage.db import session_factory
from skintriage.models import AuditEvent, Case, Operator, OutboxMessage, Review
from tests.console.seed import ADMIN, REVIEWER
from tests.console.session_helpers import csrf_of, login

PUBLIC = {("GET", "/login"), ("POST", "/login"), ("GET", "/healthz")}
ADMIN_PREFIXES = ("/audit", "/admin/")


def routes(app) -> list[tuple[str, str]]:  # noqa: ANN001
    """(method, path format) of every route the app serves, found by walking its routers."""
    found: list[tuple[str, str]] = []

    def walk(items) -> None:  # noqa: ANN001
        for route in items:
            if hasattr(route, "original_router"):
                walk(route.original_router.routes)
            elif isinstance(route, APIRoute):
                found.extend((m, route.path_format) for m in sorted(route.methods - {"HEAD"}))

    walk(app.routes)
    return found


def concrete(path: str, seeded) -> str:  # noqa: ANN001
    """Fill a route's path parameters with seeded ids."""
    return path.format(
        case_id=seeded.cases["a_high"],
        key=seeded.keys["overlay_key"],
        name="cases_per_day",
        operator_id=seeded.operators["rita"],
        user_id=seeded.users["anna"],
    )


def form_for(path: str) -> dict[str, str]:
    """A form that would change something if the route accepted it."""
    if path.endswith("/reviews"):
        return {"verdict": "agree", "urgency": "urgent", "message": "hello"}
    if path.endswith("/messages"):
        return {"message": "hello"}
    if path == "/admin/operators":
        return {"username": "mallory", "password": "mallory-password-1", "role": "admin"}
    if path.endswith("/active"):
        return {"active": "0"}
    return {}


def state(url: str) -> tuple[int, int, int, int]:
    """Counts that a forbidden request must leave unchanged (reviews, messages, operators, active operators)."""
    with session_factory(url).begin() as s:
        return (
            s.scalar(select(func.count()).select_from(Review)),
            s.scalar(select(func.count()).select_from(OutboxMessage)),
            s.scalar(select(func.count()).select_from(Operator)),
            s.scalar(select(func.count()).select_from(Operator).where(Operator.active.is_(True))),
        )


def test_the_route_table_is_what_these_tests_cover(app):
    assert set(routes(app)) == {
        ("GET", "/login"),
        ("POST", "/login"),
        ("POST", "/logout"),
        ("GET", "/healthz"),
        ("GET", "/"),
        ("GET", "/cases"),
        ("GET", "/cases/export.csv"),
        ("GET", "/cases/{case_id}"),
        ("POST", "/cases/{case_id}/reviews"),
        ("POST", "/cases/{case_id}/messages"),
        ("GET", "/cases/{case_id}/images/{key}"),
        ("GET", "/patients/{user_id}"),
        ("GET", "/dashboard"),
        ("GET", "/dashboard/charts/{name}.png"),
        ("GET", "/safety"),
        ("GET", "/audit"),
        ("GET", "/admin/operators"),
        ("POST", "/admin/operators"),
        ("POST", "/admin/operators/{operator_id}/unlock"),
        ("POST", "/admin/operators/{operator_id}/active"),
    }


def test_no_api_docs_are_exposed(client):
    for path in ("/docs", "/redoc", "/openapi.json"):
        assert client.get(path).status_code == 404


def test_every_route_denies_anonymous_users(app, client, seeded, console_db_url):
    before = state(console_db_url)
    anonymous_token = csrf_of(client.get("/login").text)  # a real anonymous session, so only the login check is left
    for method, path in routes(app):
        if (method, path) in PUBLIC:
            continue
        url = concrete(path, seeded)
        if method == "GET":
            response = client.get(url)
            if "/images/" in url or url.endswith(".png"):
                assert response.status_code == 401, url
            else:
                assert response.status_code == 303, url
                assert response.headers["location"].startswith("/login?next="), url
            assert b"\x89PNG" not in response.content and b"\xff\xd8" not in response.content
        else:
            response = client.post(url, data={**form_for(path), "csrf_token": anonymous_token})
            assert response.status_code == 401, url
    assert state(console_db_url) == before


def test_anonymous_csv_export_redirects_without_data(client, seeded):
    response = client.get("/cases/export.csv")
    assert response.status_code == 303
    assert "case_id" not in response.text


def test_reviewer_cannot_reach_admin_pages(app, reviewer, seeded, console_db_url):
    before = state(console_db_url)
    token = csrf_of(reviewer.get("/cases").text)
    admin_routes = [(m, p) for m, p in routes(app) if p.startswith(ADMIN_PREFIXES)]
    assert len(admin_routes) == 5
    for method, path in admin_routes:
        url = concrete(path, seeded)
        if method == "GET":
            response = reviewer.get(url)
        else:
            response = reviewer.post(url, data={**form_for(path), "csrf_token": token})
        assert response.status_code == 403, url
        assert "admins only" in response.text
    assert state(console_db_url) == before
    assert 'href="/audit"' not in reviewer.get("/cases").text


def test_reviewer_and_admin_reach_the_pages_their_role_allows(app, reviewer, admin_client, seeded):
    for method, path in routes(app):
        if method != "GET" or path == "/healthz":
            continue
        url = concrete(path, seeded)
        expected_reviewer = 403 if path.startswith(ADMIN_PREFIXES) else 200
        ok = {200, 303} if path == "/" else {200}
        assert reviewer.get(url).status_code in ({expected_reviewer} if expected_reviewer == 403 else ok), url
        assert admin_client.get(url).status_code in ok, url


@pytest.mark.parametrize("token", [None, "", "forged-token-forged-token-forged-token", "other-session"])
def test_every_form_rejects_a_missing_or_wrong_csrf_token(app, admin_client, seeded, console_db_url, token):
    if token == "other-session":
        with TestClient(app) as other:
            token = csrf_of(other.get("/login").text)
    before = state(console_db_url)
    posts = [(m, p) for m, p in routes(app) if m == "POST"]
    assert len(posts) == 7
    for _, path in posts:
        data = form_for(path) | ({"username": ADMIN[0], "password": ADMIN[1]} if path == "/login" else {})
        if token is not None:
            data["csrf_token"] = token
        response = admin_client.post(concrete(path, seeded), data=data)
        assert response.status_code == 403, path
        assert "CSRF" in response.text
    assert state(console_db_url) == before
    # Still logged in: the rejected logout did nothing.
    assert admin_client.get("/cases").status_code == 200


def test_csrf_token_in_a_header_is_accepted_for_scripts(reviewer, seeded, console_db_url):
    token = csrf_of(reviewer.get("/cases").text)
    response = reviewer.post(
        f"/cases/{seeded.cases['a_high']}/messages",
        data={"message": "Please call us."},
        headers={"X-CSRF-Token": token},
    )
    assert response.status_code == 303


EVIL_KEYS = [
    "../../../../etc/passwd",
    "..%2F..%2F..%2Fetc%2Fpasswd",
    "%2e%2e/%2e%2e/etc/passwd",
    "photo/../../secret.txt",
    "photo/ab/..%2F..%2F..%2Fsecret.txt",
    "/etc/passwd",
    "%2Fetc%2Fpasswd",
    "photo/ab/" + "a" * 64 + ".jpg%00.txt",
    "photo\\..\\..\\secret.txt",
    "photo/AB/" + "A" * 64 + ".jpg",
    "photo/ab/" + "a" * 64 + ".exe",
    "secret.txt",
    "",
]


@pytest.mark.parametrize("key", EVIL_KEYS)
def test_image_keys_cannot_traverse_paths(reviewer, store, seeded, settings_env, key):
    (settings_env / "data" / "secret.txt").write_text("TOP SECRET")
    response = reviewer.get(f"/cases/{seeded.cases['a_high']}/images/{key}")
    assert response.status_code == 404
    assert b"TOP SECRET" not in response.content and b"root:" not in response.content


def test_a_key_is_served_only_with_the_case_it_belongs_to(reviewer, store, seeded):
    from tests.factories import lesion_photo

    stray = store.put(lesion_photo(64, 48, seed=99), kind="photo", ext="jpg")
    assert store.exists(stray.key)
    assert reviewer.get(f"/cases/{seeded.cases['a_high']}/images/{stray.key}").status_code == 404
    # A's heatmap exists, but case b_uncertain has none: not reachable through that case.
    assert reviewer.get(f"/cases/{seeded.cases['b_uncertain']}/images/{seeded.keys['heatmap_key']}").status_code == 404
    assert reviewer.get(f"/cases/999999/images/{seeded.keys['image_key']}").status_code == 404


def test_case_images_are_served_to_operators_and_audited(reviewer, seeded, console_db_url):
    for kind, key in seeded.keys.items():
        response = reviewer.get(f"/cases/{seeded.cases['a_high']}/images/{key}")
        assert response.status_code == 200, kind
        assert response.headers["content-type"] == ("image/jpeg" if key.endswith(".jpg") else "image/png")
        assert "no-store" in response.headers["cache-control"]
    with session_factory(console_db_url).begin() as s:
        events = s.scalars(select(AuditEvent).where(AuditEvent.action == "case.image_viewed")).all()
        assert {e.detail["kind"] for e in events} == {"photo", "overlay", "mask", "heatmap"}
        assert {e.case_id for e in events} == {seeded.cases["a_high"]}


def test_static_folder_holds_no_images_and_cannot_be_escaped(client):
    import console.app

    files = [p for p in Path(console.app.STATIC_DIR).rglob("*") if p.is_file()]
    assert files and {p.suffix for p in files} <= {".css", ".js"}
    assert client.get("/static/console.css").status_code == 200
    for path in ("/static/../app.py", "/static/%2e%2e/app.py", "/static/..%2Fapp.py"):
        response = client.get(path)
        assert response.status_code in (303, 404), path
        assert b"create_app" not in response.content


SQL_PAYLOADS = [
    "' OR '1'='1",
    "HIGH' OR 1=1 --",
    '"; DROP TABLE cases; --',
    "1; DELETE FROM operators",
    "%",
    "_",
    "\\",
    "') UNION SELECT username, password_hash FROM operators --",
]
CASE_FILTERS = [
    "tier",
    "status",
    "reviewed",
    "date_from",
    "date_to",
    "model_version",
    "view",
    "disagreement",
    "page",
    "per_page",
]
AUDIT_FILTERS = ["action", "case_id", "operator_id", "date_from", "date_to", "page"]


def _intact(url: str) -> None:
    with session_factory(url).begin() as s:
        assert s.scalar(select(func.count()).select_from(Case)) == 8
        assert s.scalar(select(func.count()).select_from(Operator)) == 2


@pytest.mark.parametrize("payload", SQL_PAYLOADS)
def test_sql_metacharacters_in_every_case_filter_are_inert(reviewer, console_db_url, payload):
    for name in CASE_FILTERS:
        for path in ("/cases", "/cases/export.csv"):
            response = reviewer.get(path, params={name: payload})
            # Closed-set, date and number filters refuse the value; the free-text version filter matches nothing.
            if name == "model_version":
                assert response.status_code == 200, (path, name)
                assert 'class="case-link"' not in response.text
                assert response.text.count("\n") <= 1 or path == "/cases"
            else:
                assert response.status_code == 400, (path, name)
            assert "argon2" not in response.text
    _intact(console_db_url)


@pytest.mark.parametrize("payload", SQL_PAYLOADS)
def test_sql_metacharacters_in_audit_and_dashboard_filters_are_inert(admin_client, console_db_url, payload):
    for name in AUDIT_FILTERS:
        response = admin_client.get("/audit", params={name: payload})
        if name == "action":
            assert response.status_code == 200
            assert "No events." in response.text
        else:
            assert response.status_code == 400, name
        assert "argon2" not in response.text
    assert admin_client.get("/dashboard", params={"days": payload}).status_code == 422
    assert admin_client.get("/dashboard/charts/cases_per_day.png", params={"days": payload}).status_code == 422
    assert admin_client.get("/safety", params={"days": payload}).status_code == 422
    _intact(console_db_url)


def test_percent_and_underscore_in_model_version_are_not_wildcards(reviewer):
    for pattern in ("%", "resnet50-%", "unet-____________", "%bbbb%"):
        response = reviewer.get("/cases", params={"model_version": pattern})
        assert 'class="case-link"' not in response.text, pattern


def set_cookie_header(response) -> str:  # noqa: ANN001
    cookies = [v for k, v in response.headers.multi_items() if k == "set-cookie"]
    assert len(cookies) == 1, cookies
    return cookies[0].lower()


def test_session_cookie_is_httponly_samesite_lax_and_not_secure_by_default(client):
    client.get("/login")
    response = login(client, *REVIEWER)
    cookie = set_cookie_header(response)
    assert cookie.startswith("skintriage_console=")
    assert "httponly" in cookie and "samesite=lax" in cookie and "path=/" in cookie
    assert "secure" not in cookie
    assert "max-age=43200" in cookie


def test_session_cookie_is_secure_when_configured(monkeypatch, console_db_url, store, seeded):
    from console.app import create_app
    from skintriage.settings import get_settings

    monkeypatch.setenv("CONSOLE_SECURE_COOKIES", "true")
    get_settings.cache_clear()
    app = create_app(settings=get_settings(), database_url=console_db_url, store=store)
    with TestClient(app, base_url="https://testserver", follow_redirects=False) as c:
        response = login(c, *REVIEWER)
        assert response.status_code == 303
        cookie = set_cookie_header(response)
        assert "; secure" in cookie and "httponly" in cookie and "samesite=lax" in cookie


def test_pages_carry_security_headers(reviewer, client):
    for response in (reviewer.get("/cases"), client.get("/login")):
        headers = response.headers
        assert "default-src 'self'" in headers["content-security-policy"]
        assert "frame-ancestors 'none'" in headers["content-security-policy"]
        assert headers["x-frame-options"] == "DENY"
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["cache-control"] == "no-store"


def test_passwords_are_stored_as_salted_argon2id_hashes(console_db_url):
    from console.auth import hash_password, verify_password

    with session_factory(console_db_url).begin() as s:
        rita = s.scalars(select(Operator).where(Operator.username == REVIEWER[0])).one()
        assert rita.password_hash.startswith("$argon2id$")
        assert REVIEWER[1] not in rita.password_hash
        assert verify_password(rita.password_hash, REVIEWER[1])
        assert not verify_password(rita.password_hash, REVIEWER[1] + "x")
    assert hash_password("same password") != hash_password("same password")
    assert verify_password("not-a-hash", "whatever") is False


def test_weak_passwords_are_refused():
    from console.auth import check_new_password

    with pytest.raises(ValueError, match="at least 10"):
        check_new_password("short", username="rita")
    with pytest.raises(ValueError, match="equals the username"):
        check_new_password("rita-the-operator", username="RITA-the-operator")


@pytest.mark.slow
def test_repeated_failed_logins_block_that_name_from_that_address_only(client, console_db_url, seeded):
    for attempt in range(1, 6):
        response = login(client, REVIEWER[0], f"wrong-password-{attempt}")
        assert response.status_code == 401 and "Wrong username or password." in response.text
    # The right password does not get in from this address while it is blocked for this name.
    response = login(client, *REVIEWER)
    assert response.status_code == 429 and "Too many failed logins" in response.text
    with session_factory(console_db_url).begin() as s:
        rita = s.get(Operator, seeded.operators["rita"])
        assert rita.locked_until is None  # the account itself is never locked
        actions = s.scalars(select(AuditEvent.action).where(AuditEvent.operator_id == rita.id)).all()
        assert actions.count("operator.login_failed") == 5 and actions.count("operator.login_blocked") == 1
    # Another name from the same address is not affected.
    assert login(client, *ADMIN).status_code == 303


def test_deactivated_operator_cannot_log_in(client, console_db_url, seeded):
    with session_factory(console_db_url).begin() as s:
        s.get(Operator, seeded.operators["rita"]).active = False
    response = login(client, *REVIEWER)
    assert response.status_code == 401 and "Wrong username or password." in response.text


@pytest.mark.parametrize("number", ["99999999999999999999", "2147483648", "0", "-1", "abc"])
def test_ids_outside_the_row_range_are_not_found(reviewer, admin_client, seeded, number):
    """Ids in URLs that no INTEGER row can have answer 404, on every route with an id, never 500."""
    assert reviewer.get(f"/cases/{number}").status_code == 404
    assert "Not found" in reviewer.get(f"/cases/{number}").text
    assert reviewer.get(f"/cases/{number}/images/{seeded.keys['overlay_key']}").status_code == 404
    assert reviewer.get(f"/patients/{number}").status_code == 404
    token = csrf_of(reviewer.get("/cases").text)
    assert reviewer.post(f"/cases/{number}/reviews", data={"csrf_token": token, "verdict": "agree"}).status_code == 404
    assert reviewer.post(f"/cases/{number}/messages", data={"csrf_token": token, "message": "hi"}).status_code == 404
    token = csrf_of(admin_client.get("/admin/operators").text)
    for action in ("unlock", "active"):
        response = admin_client.post(f"/admin/operators/{number}/{action}", data={"csrf_token": token, "active": "0"})
        assert response.status_code == 404


def test_ids_at_the_edge_of_the_row_range_on_sqlite_and_postgres(db_url, console_settings, store):
    """The largest INTEGER id is looked up (and missing); one more never reaches PostgreSQL's int4."""
    from console.app import create_app
    from console.operators import create_operator

    with session_factory(db_url).begin() as s:
        create_operator(session=s, username=REVIEWER[0], password=REVIEWER[1])
    app = create_app(settings=console_settings, database_url=db_url, store=store)
    with TestClient(app, follow_redirects=False) as c:
        assert login(c, *REVIEWER).status_code == 303
        largest = c.get("/cases/2147483647")
        assert largest.status_code == 404 and "No such case" in largest.text
        assert c.get("/cases/2147483648").status_code == 404
        assert c.get("/cases/2147483648/images/photos/x.jpg").status_code == 404
        largest = c.get("/patients/2147483647")
        assert largest.status_code == 404 and "No such patient" in largest.text
        assert c.get("/patients/2147483648").status_code == 404


def test_out_of_range_ids_in_audit_filters_are_refused(admin_client):
    response = admin_client.get("/audit?case_id=99999999999999999999")
    assert response.status_code == 400 and "whole number up to" in response.text
