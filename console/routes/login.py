"""Login and logout."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.orm import Session

from console.auth import LoginOutcome, authenticate, end_session, start_session
from console.deps import current_operator, get_db, render, require_csrf
from skintriage.models import Operator

router = APIRouter()


def safe_next(target: str | None) -> str:
    """A local path to go to after login; anything that could leave the site becomes /cases."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/cases"
    if any(ch in target for ch in "\r\n\t") or target.startswith("/login"):
        return "/cases"
    return target


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, next: str | None = None) -> HTMLResponse:
    """The login form."""
    return render(request, "login.html", {"next": safe_next(next), "error": None})


@router.post("/login", dependencies=[Depends(require_csrf)])
def login(
    request: Request,
    username: str = Form("", max_length=64),
    password: str = Form("", max_length=1024),
    next: str = Form("/cases"),
    db: Session = Depends(get_db),
) -> Response:
    """Check the credentials; on success start a fresh session and go where the operator was heading."""
    settings = request.app.state.settings
    throttle = request.app.state.login_throttle
    client = request.client.host if request.client else "unknown"
    if throttle.blocked(client):
        return render(
            request,
            "login.html",
            {"next": safe_next(next), "error": "Too many failed logins from this address. Try again later."},
            status_code=429,
        )
    result = authenticate(
        session=db,
        username=username.strip(),
        password=password,
        max_failures=settings.console_login_max_failures,
        lockout_s=settings.console_lockout_s,
    )
    db.commit()
    if result.outcome is not LoginOutcome.OK or result.operator is None:
        throttle.failed(client)
        error = (
            "Too many failed logins for this account; it is locked for a while. Ask an admin to unlock it."
            if result.outcome is LoginOutcome.LOCKED
            else "Wrong username or password."
        )
        return render(request, "login.html", {"next": safe_next(next), "error": error}, status_code=401)
    throttle.succeeded(client)
    start_session(request, result.operator)
    return RedirectResponse(safe_next(next), status_code=303)


@router.post("/logout", dependencies=[Depends(require_csrf)])
def logout(
    request: Request, operator: Operator = Depends(current_operator), db: Session = Depends(get_db)
) -> RedirectResponse:
    """End this operator's sessions and go back to the login form."""
    end_session(request=request, session=db, operator=operator)
    db.commit()
    return RedirectResponse("/login", status_code=303)
