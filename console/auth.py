"""Operator authentication: argon2 password hashes, login, the session cookie (with an idle timeout) and CSRF.

The session lives in a signed cookie (Starlette's SessionMiddleware: HttpOnly, SameSite=Lax, Secure
when CONSOLE_SECURE_COOKIES is on). It holds the operator id, when the session began, when it was
last used (for the idle timeout) and a fingerprint of the password hash, so a password change, a
deactivation or a logout (which ends every earlier session of that operator) takes effect on the next
request.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from starlette.requests import Request

from console.throttle import LoginLimiter
from skintriage.cases import audit
from skintriage.models import AuditEvent, Operator, OperatorRole, utcnow

log = logging.getLogger(__name__)

PASSWORD_MIN_LENGTH = 10
SESSION_COOKIE = "skintriage_console"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
LOGOUT_ACTION = "operator.logout"

_hasher = PasswordHasher()
_dummy_hash: str | None = None


class NotAuthenticated(Exception):
    """No valid operator session; pages redirect to the login form, other requests get 401."""


class Forbidden(Exception):
    """The operator is logged in but their role may not do this."""


class CsrfError(Exception):
    """A form came without the session's CSRF token."""


# --- passwords ------------------------------------------------------------------------------


def hash_password(password: str) -> str:
    """Hash a password with argon2id (argon2-cffi's RFC 9106 defaults)."""
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    """Whether the password matches the hash (False for a malformed hash, never raises)."""
    try:
        return _hasher.verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def check_new_password(password: str, *, username: str) -> None:
    """Raise ValueError when a new password is too weak to use."""
    if len(password) < PASSWORD_MIN_LENGTH:
        raise ValueError(f"password too short: use at least {PASSWORD_MIN_LENGTH} characters")
    if password.strip().lower() == username.strip().lower():
        raise ValueError("password equals the username; choose another one")


def password_fingerprint(password_hash: str) -> str:
    """A short digest of the stored hash; sessions carry it so a password change ends them."""
    return hashlib.sha256(password_hash.encode()).hexdigest()[:16]


def prepare_dummy_hash() -> str:
    """The hash unknown names and blocked attempts are checked against (made once, before the first login)."""
    global _dummy_hash
    if _dummy_hash is None:
        _dummy_hash = hash_password(secrets.token_urlsafe(16))
    return _dummy_hash


def _verify_dummy(password: str) -> None:
    """Spend the same time as a real check, so unknown usernames cannot be told apart by timing."""
    verify_password(prepare_dummy_hash(), password)


# --- login ---------------------------------------------------------------------------------


class LoginOutcome(StrEnum):
    """Result of a login attempt."""

    OK = "ok"
    BAD_CREDENTIALS = "bad_credentials"  # unknown name, wrong password or deactivated: one answer for all
    BLOCKED = "blocked"  # too many failures for this name from this address: the password was not checked


@dataclass
class LoginResult:
    """The outcome and, on success, the operator."""

    outcome: LoginOutcome
    operator: Operator | None = None


def authenticate(
    *,
    session: Session,
    username: str,
    password: str,
    address: str,
    limiter: LoginLimiter,
    now: datetime | None = None,
) -> LoginResult:
    """Check a username and password from a client address, throttled per (address, username).

    Every attempt costs exactly one argon2 verification (against a dummy hash for unknown names and
    blocked pairs), so neither the answer nor its timing tells whether an account exists.
    """
    now = now or utcnow()
    tried = {"address": address, "username": username}
    operator = session.scalar(select(Operator).where(Operator.username == username)) if username else None
    operator_id = operator.id if operator is not None else None
    if limiter.blocked(address, username):
        # No real password check while blocked: a correct guess must not be distinguishable.
        _verify_dummy(password)
        audit(session=session, actor="operator", action="operator.login_blocked", operator_id=operator_id, detail=tried)
        return LoginResult(LoginOutcome.BLOCKED)
    if operator is None:
        _verify_dummy(password)
        reason = "unknown"
    elif not verify_password(operator.password_hash, password):
        reason = "password"
    elif not operator.active:
        reason = "inactive"
    else:
        reason = ""
    if operator is None or reason:
        # The same work for a known and an unknown name (one query, one audit row): no per-account
        # counter is written, so nothing in the timing tells them apart and nothing locks an account.
        limiter.failed(address, username)
        audit(
            session=session,
            actor="operator",
            action="operator.login_failed",
            operator_id=operator_id,
            detail={**tried, "reason": reason},
        )
        return LoginResult(LoginOutcome.BAD_CREDENTIALS)
    limiter.clear(address, username)
    operator.failed_logins = 0
    operator.locked_until = None
    operator.last_login_at = now
    if _hasher.check_needs_rehash(operator.password_hash):
        operator.password_hash = hash_password(password)
    audit(
        session=session, actor="operator", action="operator.login", operator_id=operator.id, detail={"address": address}
    )
    return LoginResult(LoginOutcome.OK, operator)


# --- sessions and CSRF ----------------------------------------------------------------------


def csrf_token(request: Request) -> str:
    """The session's CSRF token, created on first use (anonymous sessions get one for the login form)."""
    token = request.session.get("csrf")
    if not isinstance(token, str) or len(token) < 32:
        token = secrets.token_urlsafe(32)
        request.session["csrf"] = token
    return token


def check_csrf(request: Request, submitted: str | None) -> None:
    """Raise CsrfError unless the submitted token equals the session's."""
    expected = request.session.get("csrf")
    if not isinstance(expected, str) or not submitted or not hmac.compare_digest(expected, submitted):
        raise CsrfError("missing or wrong CSRF token; reload the page and submit the form again")


def start_session(request: Request, operator: Operator) -> None:
    """Replace whatever the browser had with a fresh session for this operator."""
    now = time.time()
    request.session.clear()
    request.session.update(
        {
            "op": operator.id,
            "iat": now,
            "seen": now,
            "pwf": password_fingerprint(operator.password_hash),
            "csrf": secrets.token_urlsafe(32),
        }
    )


def end_session(*, request: Request, session: Session, operator: Operator) -> None:
    """Log out: clear the cookie and record the time, which ends every earlier session of this operator."""
    request.session.clear()
    audit(session=session, actor="operator", action=LOGOUT_ACTION, operator_id=operator.id)


def session_operator(*, request: Request, session: Session, max_age_s: int, idle_s: int) -> Operator:
    """The operator of a valid session, or NotAuthenticated; each valid request restarts the idle clock."""
    data = request.session
    op_id, iat, fingerprint = data.get("op"), data.get("iat"), data.get("pwf")
    if not isinstance(op_id, int) or not isinstance(iat, int | float) or not isinstance(fingerprint, str):
        raise NotAuthenticated("no session")
    now = time.time()
    if now - iat > max_age_s:
        raise NotAuthenticated("session expired")
    seen = data.get("seen", iat)
    if not isinstance(seen, int | float) or now - seen > idle_s:
        request.session.clear()
        raise NotAuthenticated("session idle too long")
    operator = session.get(Operator, op_id)
    if operator is None or not operator.active:
        raise NotAuthenticated("operator gone or deactivated")
    if not hmac.compare_digest(fingerprint, password_fingerprint(operator.password_hash)):
        raise NotAuthenticated("password changed since login")
    last_logout = session.scalar(
        select(func.max(AuditEvent.at)).where(AuditEvent.action == LOGOUT_ACTION, AuditEvent.operator_id == op_id)
    )
    if last_logout is not None:
        if last_logout.tzinfo is None:
            last_logout = last_logout.replace(tzinfo=UTC)
        if datetime.fromtimestamp(iat, UTC) <= last_logout:
            raise NotAuthenticated("logged out")
    data["seen"] = now
    return operator


def is_admin(operator: Operator | Any) -> bool:
    """Whether the operator (or a snapshot with a role) may use the admin pages."""
    return operator.role == OperatorRole.ADMIN
