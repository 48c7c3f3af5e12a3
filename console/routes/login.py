"""Login and logout."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.orm import Session

from console.auth import LoginOutcome, authenticate, end_session, start_session
from console.deps import current_operator, get_db, render, require_csrf
from console.throttle import client_address
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
    result = authenticate(
        session=db,
        username=username.strip(),
        password=password,
        address=client_address(request, request.app.state.trusted_proxies),
        limiter=request.app.state.login_limiter,
    )
    db.commit()
    if result.outcome is LoginOutcome.BLOCKED:
        # The same answer for every name, existing or not: it only reflects this address's own failures.
        minutes = -(-request.app.state.login_limiter.window_s // 60)
        error = (
            f"Too many failed logins for this username from your address. Wait up to {minutes} minutes, "
            "or ask an admin to lift the block."
        )
        return render(request, "login.html", {"next": safe_next(next), "error": error}, status_code=429)
    if result.outcome is not LoginOutcome.OK or result.operator is None:
        error = "Wrong username or password."
        return render(request, "login.html", {"next": safe_next(next), "error": error}, status_code=401)
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
