"""Console operators: accounts created, reset, unlocked, deactivated and reactivated, each audited.

Rows only: the console owns passwords (console.auth checks a new one and hashes it with argon2, a dependency of
the console alone) and hands these functions the hash. They take the caller's session and leave the commit to it.
"""

from __future__ import annotations

import re

from sqlalchemy import select
from sqlalchemy.orm import Session

from skintriage.cases import audit
from skintriage.models import Operator, OperatorRole

USERNAME_RE = re.compile(r"^[A-Za-z0-9_.@-]{2,64}$")


class OperatorExists(ValueError):
    """An operator with that username already exists."""


def check_username(username: str) -> str:
    """Return the username or raise ValueError when it has characters the console does not accept."""
    if not USERNAME_RE.fullmatch(username):
        raise ValueError("username must be 2-64 characters of letters, digits and . _ @ -")
    return username


def check_role(role: str) -> str:
    """Return the role or raise ValueError when it is not one of OperatorRole."""
    if role not in set(OperatorRole):
        raise ValueError(f"role must be one of {[r.value for r in OperatorRole]}, got {role!r}")
    return role


def create_operator(
    *, session: Session, username: str, password_hash: str, role: str, created_by: int | None = None
) -> Operator:
    """Store a new active operator and audit it; ValueError for a bad name or role, OperatorExists for a taken name."""
    check_username(username)
    check_role(role)
    if session.scalar(select(Operator.id).where(Operator.username == username)) is not None:
        raise OperatorExists(f"operator {username!r} already exists; use --reset to set a new password")
    operator = Operator(username=username, password_hash=password_hash, role=role, active=True)
    session.add(operator)
    session.flush()
    audit(
        session=session,
        actor="operator" if created_by else "system",
        action="operator.created",
        operator_id=created_by,
        detail={"operator": operator.id, "role": role},
    )
    return operator


def find_operator(*, session: Session, username: str) -> Operator:
    """The operator with that username; ValueError when there is none."""
    operator = session.scalar(select(Operator).where(Operator.username == username))
    if operator is None:
        raise ValueError(f"no operator {username!r}; drop --reset to create one")
    return operator


def reset_operator(*, session: Session, operator: Operator, password_hash: str, role: str | None = None) -> Operator:
    """Set a new password hash (and optionally role) for an operator, reactivate them and audit it (actor: system).

    The failed-login counter and lock-out columns are cleared too; login no longer sets them (failed logins
    are throttled per address and username, console.throttle), but rows from before may still hold them.
    """
    if role is not None:
        operator.role = check_role(role)
    operator.password_hash = password_hash
    operator.failed_logins = 0
    operator.locked_until = None
    operator.active = True
    audit(session=session, actor="system", action="operator.reset", detail={"operator": operator.id})
    return operator


def unlock_operator(*, session: Session, target: Operator, by: Operator, addresses: list[str]) -> None:
    """Clear an operator's stored lock-out and audit the unlock with the addresses whose throttling was lifted.

    The throttling itself lives in the console's limiter (console.throttle), which the caller clears.
    """
    target.failed_logins = 0
    target.locked_until = None
    audit(
        session=session,
        actor="operator",
        action="operator.unlocked",
        operator_id=by.id,
        detail={"operator": target.id, "addresses": addresses},
    )


def set_active(*, session: Session, target: Operator, by: Operator, active: bool) -> None:
    """Deactivate or reactivate an operator, audited; refusing self-deactivation is the caller's check."""
    target.active = active
    audit(
        session=session,
        actor="operator",
        action="operator.activated" if active else "operator.deactivated",
        operator_id=by.id,
        detail={"operator": target.id},
    )
