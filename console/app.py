"""The operator console as a FastAPI app: server-rendered pages, signed session cookie, CSRF on every form."""

from __future__ import annotations

import logging
from pathlib import Path
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from sqlalchemy import text
from starlette.middleware.sessions import SessionMiddleware
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from console.auth import SESSION_COOKIE, CsrfError, Forbidden, NotAuthenticated, prepare_dummy_hash
from console.deps import make_templates, render
from console.routes import admin, cases, dashboard, images, login, patients, safety
from console.throttle import LoginLimiter, limiter_storage_url
from skintriage.db import session_factory
from skintriage.settings import Settings, get_settings
from skintriage.storage import ImageStore, make_store

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
PUBLIC_PATHS = ("/login", "/healthz", "/static/")  # everything else needs a logged-in operator

SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self' data:; script-src 'self'; style-src 'self'; object-src 'none'; "
        b"base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
]


class SecurityHeaders:
    """Adds CSP and friends to every response, and no-store to everything but static files."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = scope.get("path", "").startswith("/static/")

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers.extend(h for h in SECURITY_HEADERS if h[0] not in present)
                if not static and b"cache-control" not in present:
                    # Pages hold patient data: no copies in shared or browser caches.
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_wrapper)


def _is_page(request: Request) -> bool:
    """GET requests for pages (and the CSV) go to the login form; images and form posts get 401."""
    path = request.url.path
    return request.method == "GET" and "/images/" not in path and not path.endswith(".png")


def create_app(
    *, settings: Settings | None = None, database_url: str | None = None, store: ImageStore | None = None
) -> FastAPI:
    """Build the console for a database and image store (the configured ones by default)."""
    settings = settings or get_settings()
    settings.check_secrets()
    url = database_url or settings.resolved_database_url
    app = FastAPI(title="skin-triage console", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.settings = settings
    app.state.database_url = url
    app.state.sessionmaker = session_factory(url)
    app.state.store = store if store is not None else make_store(settings)
    app.state.templates = make_templates()
    app.state.login_limiter = LoginLimiter(
        max_failures=settings.console_login_max_failures,
        window_s=settings.console_login_window_s,
        storage_url=limiter_storage_url(settings.console_limits_storage_url, settings.resolved_broker_url),
        redis_options=settings.redis_client_options,
    )
    app.state.trusted_proxies = settings.trusted_proxy_networks
    prepare_dummy_hash()

    app.add_middleware(
        SessionMiddleware,
        secret_key=settings.console_secret_key.get_secret_value(),
        session_cookie=SESSION_COOKIE,
        max_age=settings.console_session_max_age_s,
        same_site="lax",
        https_only=settings.console_secure_cookies,
    )
    app.add_middleware(SecurityHeaders)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    for module in (login, cases, images, patients, dashboard, safety, admin):
        app.include_router(module.router)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> JSONResponse:
        """Liveness for orchestrators: answers without data and without login."""
        try:
            with app.state.sessionmaker() as session:
                session.execute(text("SELECT 1"))
        except Exception:  # noqa: BLE001 - any database failure means "not healthy"
            log.warning("console health check: database unreachable")
            return JSONResponse({"status": "database unreachable"}, status_code=503)
        return JSONResponse({"status": "ok"})

    @app.exception_handler(NotAuthenticated)
    async def not_authenticated(request: Request, exc: NotAuthenticated) -> Response:
        if _is_page(request):
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)
        return Response("log in first", status_code=401, media_type="text/plain")

    @app.exception_handler(Forbidden)
    async def forbidden(request: Request, exc: Forbidden) -> HTMLResponse:
        return render(
            request,
            "error.html",
            {"title": "Not allowed", "message": "This page is for admins only."},
            status_code=403,
        )

    @app.exception_handler(CsrfError)
    async def csrf_failed(request: Request, exc: CsrfError) -> HTMLResponse:
        log.warning("CSRF check failed on %s", request.url.path)
        return render(request, "error.html", {"title": "Form expired", "message": str(exc)}, status_code=403)

    @app.exception_handler(cases.CaseMissing)
    async def case_missing(request: Request, exc: cases.CaseMissing) -> HTMLResponse:
        return render(
            request,
            "error.html",
            {"title": "No such case", "message": "No case with that number (the patient may have deleted it)."},
            status_code=404,
        )

    @app.exception_handler(patients.PatientMissing)
    async def patient_missing(request: Request, exc: patients.PatientMissing) -> HTMLResponse:
        return render(
            request,
            "error.html",
            {"title": "No such patient", "message": "No patient with that number (they may have deleted their data)."},
            status_code=404,
        )

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> Response:
        # An id in the path that is not a row id (letters, 0, beyond the INTEGER range) names nothing: 404.
        if any(error.get("loc", ("",))[0] == "path" for error in exc.errors()):
            if not _is_page(request):
                return Response("not found", status_code=404, media_type="text/plain")
            return render(
                request, "error.html", {"title": "Not found", "message": "Nothing has that number."}, status_code=404
            )
        return await request_validation_exception_handler(request, exc)

    return app
