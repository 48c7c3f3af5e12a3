"""Image retention: delete photos, masks and overlays older than RETENTION_DAYS, keep the case records.

The same daily job forgets handled Telegram messages (the repeated-update memory) older than a week.

Runs daily from beat (the `purge_images` task) and once from the command line (`skintriage purge-images`).
"""

from __future__ import annotations

import argparse
import logging

from skintriage import cases
from skintriage.db import session_factory
from skintriage.settings import Settings, get_settings
from skintriage.storage import ImageStore, make_store

log = logging.getLogger(__name__)


def purge_once(*, settings: Settings, store: ImageStore | None = None) -> int:
    """Delete expired images and return how many cases had theirs removed."""
    store = store or make_store(settings)
    with session_factory(settings.resolved_database_url)() as session:
        purged = cases.purge_expired_images(session=session, store=store, retention_days=settings.retention_days)
        forgotten = cases.prune_processed_updates(session=session)
        session.commit()
    if forgotten:
        log.info("retention: forgot %d handled Telegram messages older than a week", forgotten)
    if purged:
        log.info("retention: removed the images of %d cases older than %d days", purged, settings.retention_days)
    return purged


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `skintriage purge-images`."""
    parser.add_argument(
        "--days", type=int, default=None, help="retention period in days (default: RETENTION_DAYS, 30)"
    )


def main(args: argparse.Namespace) -> int:
    """Purge once and print how many cases lost their images."""
    from skintriage.logconfig import configure_logging

    settings = get_settings()
    configure_logging(settings.log_level, json_lines=settings.log_json)
    if args.days is not None:
        if args.days < 1:
            raise SystemExit("--days must be at least 1")
        settings = settings.model_copy(update={"retention_days": args.days})
    purged = purge_once(settings=settings)
    print(f"removed the images of {purged} cases older than {settings.retention_days} days")
    return 0
