"""Admin pages: the audit log and the operator accounts."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from console.deps import MAX_ROW_ID, DbId, get_db, render, require_admin, require_csrf
from console.operators import create_operator
from skintriage import operators as accounts
from skintriage.models import AuditEvent, Operator, OperatorRole

router = APIRouter()

AUDIT_PER_PAGE = 100
LOGIN_FAILURE_ACTIONS = ("operator.login_failed", "operator.login_blocked")
BLOCK_SCAN_LIMIT = 5000  # audit rows read to find throttled (name, address) pairs


class AuditFilterError(ValueError):
    """An audit-log filter value that cannot be used."""


def _parse_audit_filters(params) -> dict:  # params: starlette QueryParams
    out: dict = {}
    for name in ("case_id", "operator_id", "page"):
        raw = params.get(name) or ""
        if raw:
            if not raw.isdigit() or int(raw) > MAX_ROW_ID:
                raise AuditFilterError(f"{name} must be a whole number up to {MAX_ROW_ID}")
            out[name] = int(raw)
    for name in ("date_from", "date_to"):
        raw = params.get(name) or ""
        if raw:
            try:
                out[name] = date.fromisoformat(raw)
            except ValueError as exc:
                raise AuditFilterError(f"{name} must be a date like 2025-01-31") from exc
    action = params.get("action") or ""
    if len(action) > 64:
        raise AuditFilterError("action is longer than 64 characters")
    if action:
        out["action"] = action
    return out


@router.get("/audit", response_class=HTMLResponse)
def audit_log(
    request: Request, operator: Operator = Depends(require_admin), db: Session = Depends(get_db)
) -> HTMLResponse:
    """Browse the audit log, newest first, filtered by action, case, operator and date."""
    try:
        f = _parse_audit_filters(request.query_params)
    except AuditFilterError as exc:
        return render(request, "error.html", {"title": "Bad filter", "message": str(exc)}, status_code=400, db=db)
    clauses = []
    if "action" in f:
        clauses.append(AuditEvent.action == f["action"])
    if "case_id" in f:
        clauses.append(AuditEvent.case_id == f["case_id"])
    if "operator_id" in f:
        clauses.append(AuditEvent.operator_id == f["operator_id"])
    if "date_from" in f:
        clauses.append(AuditEvent.at >= datetime.combine(f["date_from"], time.min, UTC))
    if "date_to" in f:
        clauses.append(AuditEvent.at < datetime.combine(f["date_to"] + timedelta(days=1), time.min, UTC))
    total = db.scalar(select(func.count()).select_from(AuditEvent).where(*clauses)) or 0
    pages = max(1, -(-total // AUDIT_PER_PAGE))
    page = min(f.get("page", 1), pages)
    events = db.scalars(
        select(AuditEvent)
        .where(*clauses)
        .order_by(AuditEvent.at.desc(), AuditEvent.id.desc())
        .offset((page - 1) * AUDIT_PER_PAGE)
        .limit(AUDIT_PER_PAGE)
    ).all()
    operators = {o.id: o.username for o in db.scalars(select(Operator)).all()}
    actions = sorted(db.scalars(select(AuditEvent.action).distinct()).all())
    query = {k: (v.isoformat() if isinstance(v, date) else str(v)) for k, v in f.items() if k != "page"}
    return render(
        request,
        "audit.html",
        {
            "events": events,
            "operators": operators,
            "actions": actions,
            "f": f,
            "query": query,
            "total": total,
            "page": page,
            "pages": pages,
        },
        db=db,
    )


def _blocked_addresses(request: Request, db: Session, usernames: set[str]) -> dict[str, list[str]]:
    """Per operator username, the client addresses whose failed logins for it are being throttled now.

    The limiter keeps digests, not names or addresses, so the candidates come from the audit log of
    the last window (failed and blocked logins record the address and the name tried).
    """
    limiter = request.app.state.login_limiter
    since = datetime.now(UTC) - timedelta(seconds=limiter.window_s)
    details = db.scalars(
        select(AuditEvent.detail)
        .where(AuditEvent.action.in_(LOGIN_FAILURE_ACTIONS), AuditEvent.at >= since)
        .order_by(AuditEvent.id.desc())
        .limit(BLOCK_SCAN_LIMIT)
    ).all()
    pairs = {
        (d["username"], d["address"])
        for d in details
        if isinstance(d, dict) and d.get("username") in usernames and isinstance(d.get("address"), str)
    }
    blocked: dict[str, list[str]] = {}
    for username, address in sorted(pairs):
        if limiter.blocked(address, username):
            blocked.setdefault(username, []).append(address)
    return blocked


def _operators_page(request: Request, db: Session, *, error: str | None = None, status_code: int = 200) -> Response:
    operators = db.scalars(select(Operator).order_by(Operator.username)).all()
    return render(
        request,
        "operators.html",
        {
            "operators": operators,
            "roles": [r.value for r in OperatorRole],
            "error": error,
            "blocked": _blocked_addresses(request, db, {o.username for o in operators}),
        },
        status_code=status_code,
        db=db,
    )


@router.get("/admin/operators", response_class=HTMLResponse)
def operators_page(
    request: Request, operator: Operator = Depends(require_admin), db: Session = Depends(get_db)
) -> HTMLResponse:
    """The operator accounts with their state."""
    return _operators_page(request, db)


@router.post("/admin/operators", dependencies=[Depends(require_csrf)])
def add_operator(
    request: Request,
    username: str = Form("", max_length=64),
    password: str = Form("", max_length=1024),
    role: str = Form(OperatorRole.REVIEWER),
    operator: Operator = Depends(require_admin),
    db: Session = Depends(get_db),
) -> Response:
    """Create an operator account."""
    try:
        create_operator(session=db, username=username.strip(), password=password, role=role, created_by=operator.id)
    except ValueError as exc:
        db.rollback()
        return _operators_page(request, db, error=str(exc), status_code=400)
    db.commit()
    return RedirectResponse("/admin/operators", status_code=303)


@router.post("/admin/operators/{operator_id}/unlock", dependencies=[Depends(require_csrf)])
def unlock_operator(
    request: Request, operator_id: DbId, operator: Operator = Depends(require_admin), db: Session = Depends(get_db)
) -> RedirectResponse:
    """Lift the login throttling of an operator's name at every address where it is blocked now."""
    target = db.get(Operator, operator_id)
    if target is not None:
        addresses = _blocked_addresses(request, db, {target.username}).get(target.username, [])
        for address in addresses:
            request.app.state.login_limiter.clear(address, target.username)
        accounts.unlock_operator(session=db, target=target, by=operator, addresses=addresses)
        db.commit()
    return RedirectResponse("/admin/operators", status_code=303)


@router.post("/admin/operators/{operator_id}/active", dependencies=[Depends(require_csrf)])
def set_active(
    request: Request,
    operator_id: DbId,
    active: str = Form(...),
    operator: Operator = Depends(require_admin),
    db: Session = Depends(get_db),
) -> Response:
    """Deactivate (ends their sessions at once) or reactivate an operator."""
    target = db.get(Operator, operator_id)
    if target is None:
        return RedirectResponse("/admin/operators", status_code=303)
    if target.id == operator.id:
        return _operators_page(request, db, error="You cannot deactivate yourself.", status_code=400)
    accounts.set_active(session=db, target=target, by=operator, active=active == "1")
    db.commit()
    return RedirectResponse("/admin/operators", status_code=303)
