"""Request plumbing shared by the routes: the database session, the logged-in operator, CSRF and templates."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import jinja2
from fastapi import Depends, Request
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from sqlalchemy.orm import Session

from console.auth import CSRF_FIELD, CSRF_HEADER, Forbidden, check_csrf, csrf_token, is_admin, session_operator
from console.filters import queue_size, retake_lane_size
from skintriage.models import Operator
from skintriage.settings import Settings
from skintriage.storage import ImageStore

TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"

# Row ids are 32-bit INTEGER columns (PostgreSQL int4): a larger number in a URL names no row, and must
# answer 404 rather than overflow in the database driver. app.py turns a path that fails this into 404.
MAX_ROW_ID = 2**31 - 1
DbId = Annotated[int, PathParam(ge=1, le=MAX_ROW_ID)]


def _when(value: datetime | None) -> str:
    """UTC timestamp for display."""
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value else "—"


def _duration(seconds: float | None) -> str:
    """Human duration like 1 h 03 min or 42 s."""
    if seconds is None:
        return "—"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, s = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {s:02d} s"
    hours, m = divmod(minutes, 60)
    return f"{hours} h {m:02d} min"


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.1f} %"


def make_templates() -> Jinja2Templates:
    """Jinja2 templates with autoescaping on for every file and the console's filters."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATE_DIR),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters.update(when=_when, duration=_duration, percent=_percent, tojson_compact=lambda v: json.dumps(v))
    return Jinja2Templates(env=env)


def get_db(request: Request) -> Iterator[Session]:
    """A database session for one request; routes commit what they change."""
    session = request.app.state.sessionmaker()
    try:
        yield session
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def get_settings_dep(request: Request) -> Settings:
    """The app's settings."""
    return request.app.state.settings


def get_store(request: Request) -> ImageStore:
    """The app's image store."""
    return request.app.state.store


@dataclass(frozen=True)
class OperatorInfo:
    """What pages show about the logged-in operator; safe to use after the database session closed."""

    id: int
    username: str
    role: str


def current_operator(request: Request, db: Session = Depends(get_db)) -> Operator:
    """The logged-in operator, or NotAuthenticated (redirect to login or 401)."""
    settings = request.app.state.settings
    operator = session_operator(
        request=request,
        session=db,
        max_age_s=settings.console_session_max_age_s,
        idle_s=settings.console_session_idle_s,
    )
    request.state.operator = OperatorInfo(operator.id, operator.username, operator.role)
    return operator


def require_admin(operator: Operator = Depends(current_operator)) -> Operator:
    """The logged-in operator if they are an admin, else Forbidden (403)."""
    if not is_admin(operator):
        raise Forbidden("admins only")
    return operator


async def require_csrf(request: Request) -> None:
    """Reject a state-changing request that lacks the session's CSRF token (403)."""
    submitted = request.headers.get(CSRF_HEADER)
    if submitted is None:
        form = await request.form()
        value = form.get(CSRF_FIELD)
        submitted = value if isinstance(value, str) else None
    check_csrf(request, submitted)


def render(
    request: Request,
    template: str,
    context: dict[str, Any] | None = None,
    *,
    status_code: int = 200,
    db: Session | None = None,
) -> HTMLResponse:
    """Render a page with the operator, the CSRF token and the review-queue count in its context."""
    operator: OperatorInfo | None = getattr(request.state, "operator", None)
    base = {
        "request": request,
        "operator": operator,
        "is_admin": operator is not None and is_admin(operator),
        "csrf_token": csrf_token(request),
        "csrf_field": CSRF_FIELD,
        "queue_count": queue_size(session=db) if (db is not None and operator is not None) else None,
        "retake_count": retake_lane_size(session=db) if (db is not None and operator is not None) else None,
    }
    base.update(context or {})
    response = request.app.state.templates.TemplateResponse(request, template, base, status_code=status_code)
    return response
