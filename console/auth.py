"""Operator authentication: argon2 password hashes, the session cookie, CSRF tokens and login throttling.

The session lives in a signed cookie (Starlette's SessionMiddleware: HttpOnly, SameSite=Lax, Secure
when CONSOLE_SECURE_COOKIES is on). It holds the operator id, when the session began and a
fingerprint of the password hash, so a password change, a deactivation or a logout (which ends
every earlier session of that operator) takes effect on the next request.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session
from starlette.requests import Request

from skintriage.cases import audit
from skintriage.models import AuditEvent, Operator, OperatorRole, utcnow

log = logging.getLogger(__name__)

PASSWORD_MIN_LENGTH = 10
USERNAME_RE = re.compile(r"^[A-Za-z0-9_.@-]{2,64}$")
SESSION_COOKIE = "skintriage_console"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
LOGOUT_ACTION = "operator.logout"
MAX_LOCK_DOUBLINGS = 6  # lock-outs double with each further failure, up to 64x CONSOLE_LOCKOUT_S

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


def check_username(username: str) -> str:
    """Return the username or raise ValueError when it has characters the console does not accept."""
    if not USERNAME_RE.fullmatch(username):
        raise ValueError("username must be 2-64 characters of letters, digits and . _ @ -")
    return username


def password_fingerprint(password_hash: str) -> str:
    """A short digest of the stored hash; sessions carry it so a password change ends them."""
    return hashlib.sha256(password_hash.encode()).hexdigest()[:16]


def _verify_dummy(password: str) -> None:
    """Spend the same time as a real check, so unknown usernames cannot be told apart by timing."""
    global _dummy_hash
    if _dummy_hash is None:
        _dummy_hash = hash_password(secrets.token_urlsafe(16))
    verify_password(_dummy_hash, password)


# --- throttling -----------------------------------------------------------------------------


class LoginThrottle:
    """Failed logins per client address in a sliding window (in-process), on top of per-account lock-out."""

    def __init__(self, *, max_failures: int = 20, window_s: int = 900) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, client: str, now: float) -> deque[float]:
        entries = self._failures.setdefault(client, deque())
        while entries and entries[0] < now - self.window_s:
            entries.popleft()
        return entries

    def blocked(self, client: str) -> bool:
        """Whether this address has failed too often recently."""
        with self._lock:
            return len(self._recent(client, time.monotonic())) >= self.max_failures

    def failed(self, client: str) -> None:
        """Count a failed login from this address."""
        with self._lock:
            self._recent(client, time.monotonic()).append(time.monotonic())

    def succeeded(self, client: str) -> None:
        """Forget an address's failures after a successful login."""
        with self._lock:
            self._failures.pop(client, None)


class LoginOutcome(StrEnum):
    """Result of a login attempt."""

    OK = "ok"
    BAD_CREDENTIALS = "bad_credentials"
    LOCKED = "locked"


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
    max_failures: int,
    lockout_s: int,
    now: datetime | None = None,
) -> LoginResult:
    """Check a username and password, counting failures and locking the account after too many."""
    now = now or utcnow()
    operator = session.scalar(select(Operator).where(Operator.username == username)) if username else None
    if operator is None:
        _verify_dummy(password)
        audit(session=session, actor="operator", action="operator.login_failed", detail={"reason": "unknown"})
        return LoginResult(LoginOutcome.BAD_CREDENTIALS)
    if operator.locked_until is not None and operator.locked_until > now:
        # No password check while locked: a correct guess must not be distinguishable.
        audit(session=session, actor="operator", action="operator.login_locked", operator_id=operator.id)
        return LoginResult(LoginOutcome.LOCKED)
    if not verify_password(operator.password_hash, password) or not operator.active:
        session.execute(
            update(Operator)
            .where(Operator.id == operator.id)
            .values(failed_logins=Operator.failed_logins + 1)
            .execution_options(synchronize_session=False)
        )
        session.refresh(operator)
        locked = operator.failed_logins >= max_failures
        if locked:
            doublings = min(operator.failed_logins - max_failures, MAX_LOCK_DOUBLINGS)
            operator.locked_until = now + timedelta(seconds=lockout_s * 2**doublings)
        audit(
            session=session,
            actor="operator",
            action="operator.login_failed",
            operator_id=operator.id,
            detail={"failed_logins": operator.failed_logins, "locked": locked},
        )
        return LoginResult(LoginOutcome.LOCKED if locked else LoginOutcome.BAD_CREDENTIALS)
    operator.failed_logins = 0
    operator.locked_until = None
    operator.last_login_at = now
    if _hasher.check_needs_rehash(operator.password_hash):
        operator.password_hash = hash_password(password)
    audit(session=session, actor="operator", action="operator.login", operator_id=operator.id)
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
    request.session.clear()
    request.session.update(
        {
            "op": operator.id,
            "iat": time.time(),
            "pwf": password_fingerprint(operator.password_hash),
            "csrf": secrets.token_urlsafe(32),
        }
    )


def end_session(*, request: Request, session: Session, operator: Operator) -> None:
    """Log out: clear the cookie and record the time, which ends every earlier session of this operator."""
    request.session.clear()
    audit(session=session, actor="operator", action=LOGOUT_ACTION, operator_id=operator.id)


def session_operator(*, request: Request, session: Session, max_age_s: int) -> Operator:
    """The operator of a valid session, or NotAuthenticated."""
    data = request.session
    op_id, iat, fingerprint = data.get("op"), data.get("iat"), data.get("pwf")
    if not isinstance(op_id, int) or not isinstance(iat, int | float) or not isinstance(fingerprint, str):
        raise NotAuthenticated("no session")
    if time.time() - iat > max_age_s:
        raise NotAuthenticated("session expired")
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
    return operator


def is_admin(operator: Operator | Any) -> bool:
    """Whether the operator (or a snapshot with a role) may use the admin pages."""
    return operator.role == OperatorRole.ADMIN
