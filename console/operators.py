"""`skintriage operator add NAME`: create (or reset) a console operator.

The password is prompted twice with getpass; scripts pass it in a file (--password-file) or in
SKINTRIAGE_OPERATOR_PASSWORD. It never appears on the command line, where `ps` would show it.
"""

from __future__ import annotations

import argparse
import getpass
import logging
import os
import sys
from pathlib import Path

from sqlalchemy.exc import OperationalError, ProgrammingError
from sqlalchemy.orm import Session

from console.auth import check_new_password, hash_password
from skintriage import operators
from skintriage.db import session_factory
from skintriage.models import Operator, OperatorRole
from skintriage.settings import get_settings

log = logging.getLogger(__name__)

PASSWORD_ENV = "SKINTRIAGE_OPERATOR_PASSWORD"


def create_operator(
    *, session: Session, username: str, password: str, role: str = OperatorRole.REVIEWER, created_by: int | None = None
) -> Operator:
    """Create an operator with a hashed password; ValueError for a bad name, role or weak password."""
    operators.check_username(username)
    operators.check_role(role)
    check_new_password(password, username=username)
    return operators.create_operator(
        session=session, username=username, password_hash=hash_password(password), role=role, created_by=created_by
    )


def reset_operator(*, session: Session, username: str, password: str, role: str | None = None) -> Operator:
    """Set a new password (and optionally role) for an existing operator and reactivate them (skintriage.operators)."""
    operator = operators.find_operator(session=session, username=username)
    check_new_password(password, username=username)
    return operators.reset_operator(
        session=session, operator=operator, password_hash=hash_password(password), role=role
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `skintriage operator add`."""
    parser.add_argument("name", help="login name (letters, digits, . _ @ -)")
    parser.add_argument("--role", choices=[r.value for r in OperatorRole], default=None, help="default: reviewer")
    parser.add_argument(
        "--password-file", type=Path, default=None, help=f"read the password from this file (or set {PASSWORD_ENV})"
    )
    parser.add_argument("--reset", action="store_true", help="new password for an existing operator; reactivates")
    parser.add_argument("--url", default=None, help="database URL (default: DATABASE_URL or the SQLite file)")


def _read_password(args: argparse.Namespace) -> str:
    if args.password_file is not None:
        return args.password_file.read_text(encoding="utf-8").rstrip("\r\n")
    if os.environ.get(PASSWORD_ENV):
        return os.environ[PASSWORD_ENV]
    if not sys.stdin.isatty():
        raise ValueError(f"no terminal to prompt for the password; use --password-file or {PASSWORD_ENV}")
    first = getpass.getpass(f"Password for {args.name}: ")
    second = getpass.getpass("Repeat the password: ")
    if first != second:
        raise ValueError("the two passwords differ; run the command again")
    return first


def main(args: argparse.Namespace) -> int:
    """Create or reset the operator and print what was done (never the password)."""
    url = args.url or get_settings().resolved_database_url
    try:
        password = _read_password(args)
        with session_factory(url).begin() as session:
            if args.reset:
                operator = reset_operator(session=session, username=args.name, password=password, role=args.role)
                verb = "updated"
            else:
                operator = create_operator(
                    session=session, username=args.name, password=password, role=args.role or OperatorRole.REVIEWER
                )
                verb = "created"
            role = operator.role
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (OperationalError, ProgrammingError) as exc:
        print(
            f"error: the database is not ready ({type(exc).__name__}); run `skintriage db upgrade` first",
            file=sys.stderr,
        )
        return 1
    print(f"operator {args.name!r} {verb} with role {role}")
    return 0
