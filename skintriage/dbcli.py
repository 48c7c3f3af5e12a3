"""`skintriage db upgrade|downgrade|current`."""

from __future__ import annotations

import argparse

from skintriage import migrate
from skintriage.settings import get_settings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the db commands."""
    parser.add_argument("revision", nargs="?", default=None, help="target revision (head / base by default)")
    parser.add_argument("--url", default=None, help="database URL (default: DATABASE_URL or the SQLite file)")


def main(args: argparse.Namespace) -> int:
    """Run the chosen db command."""
    url = args.url or get_settings().resolved_database_url
    if args.subcommand == "upgrade":
        migrate.upgrade(url, args.revision or "head")
        print(f"database at revision {migrate.current(url)}")
    elif args.subcommand == "downgrade":
        migrate.downgrade(url, args.revision or "base")
        print(f"database at revision {migrate.current(url) or 'base'}")
    else:
        print(migrate.current(url) or "base (no revision)")
    return 0
