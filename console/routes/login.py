"""Login and logout."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.orm import Session

from console.auth import LoginOutcome, authenticate, end_session, start_session
from console.deps import OperatorInfo, current_operator, get_db, render, require_csrf
from console.pending import SESSION_KEY as PENDING_SESSION_KEY
from console.pending import take_review
from console.routes.cases import save_review
from console.throttle import client_address
from skintriage.models import Case, Operator

router = APIRouter()


def safe_next(target: str | None) -> str:
    """A local path to go to after login; anything that could leave the site becomes /cases."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/cases"
    if any(ch in target for ch in "\r\n\t") or target.startswith("/login"):
        return "/cases"
    return target


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request, next: str | None = None, kept: str | None = None) -> HTMLResponse:
    """The login form (saying so when a review sent after the session ended waits for it)."""
    waiting = kept if kept and kept.isdigit() and len(kept) <= 10 and PENDING_SESSION_KEY in request.session else None
    return render(request, "login.html", {"next": safe_next(next), "error": None, "kept": waiting})


@router.post("/login", dependencies=[Depends(require_csrf)])
def login(
    request: Request,
    username: str = Form("", max_length=64),
    password: str = Form("", max_length=1024),
    next: str = Form("/cases"),
    db: Session = Depends(get_db),
) -> Response:
    """Check the credentials; on success start a fresh session and go where the operator was heading,
    saving first the review this browser sent after its previous session ended, if it was theirs."""
    pending = request.session.get(PENDING_SESSION_KEY)
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
    if pending is not None:
        return _resume_review(request, db, result.operator, pending) or RedirectResponse(
            safe_next(next), status_code=303
        )
    return RedirectResponse(safe_next(next), status_code=303)


def _resume_review(request: Request, db: Session, operator: Operator, token: object) -> Response | None:
    """Save the review kept for this operator under the browser's token (None when there is none)."""
    settings = request.app.state.settings
    kept = take_review(session=db, token=token, operator_id=operator.id, max_age_s=settings.console_session_max_age_s)
    db.commit()
    case = db.get(Case, kept[0]) if kept else None
    if kept is None or case is None:
        return None
    request.state.operator = OperatorInfo(operator.id, operator.username, operator.role)
    _, form, then = kept
    return save_review(request, db, case, operator, form, then=then, resumed=True)


@router.post("/logout", dependencies=[Depends(require_csrf)])
def logout(
    request: Request, operator: Operator = Depends(current_operator), db: Session = Depends(get_db)
) -> RedirectResponse:
    """End this operator's sessions and go back to the login form."""
    end_session(request=request, session=db, operator=operator)
    db.commit()
    return RedirectResponse("/login", status_code=303)
