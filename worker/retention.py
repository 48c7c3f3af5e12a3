"""Image retention: delete photos, masks and overlays older than RETENTION_DAYS, keep the case records.

The same daily job removes orphaned images (no case names them, older than ORPHAN_GRACE_HOURS: a photo
whose case was never committed, a mask written after /delete, a half-written `.tmp-*` file) and forgets
handled Telegram messages (the repeated-update memory) older than a week.

Runs daily from beat (the `purge_images` task) and once from the command line (`skintriage purge-images`).
"""

from __future__ import annotations

import argparse
import logging
from datetime import UTC, datetime, timedelta

from skintriage import cases
from skintriage.db import session_factory
from skintriage.settings import Settings, get_settings
from skintriage.storage import ImageStore, make_store

log = logging.getLogger(__name__)


def purge_once(*, settings: Settings, store: ImageStore | None = None) -> int:
    """Delete expired images and return how many cases had theirs removed."""
    store = store or make_store(settings)
    with session_factory(settings.resolved_database_url).begin() as session:
        purged = cases.purge_expired_images(session=session, store=store, retention_days=settings.retention_days)
        forgotten = cases.prune_processed_updates(session=session)
    orphans = remove_orphans(settings=settings, store=store)
    if orphans:
        log.info("retention: removed %d orphaned images or temporary files", orphans)
    if forgotten:
        log.info("retention: forgot %d handled Telegram messages older than a week", forgotten)
    if purged:
        log.info("retention: removed the images of %d cases older than %d days", purged, settings.retention_days)
    return purged


def remove_orphans(*, settings: Settings, store: ImageStore, now: datetime | None = None) -> int:
    """Delete images older than the grace period that no case names, and stale temporaries; return how many."""
    cutoff = (now or datetime.now(UTC)) - timedelta(hours=settings.orphan_grace_hours)
    removed = store.remove_stale_temporaries(cutoff)
    keys = list(store.stored_before(cutoff))
    with session_factory(settings.resolved_database_url).begin() as session:
        orphans = cases.unreferenced_image_keys(session=session, keys=keys)
    deleted = 0
    for key in sorted(orphans):
        # The same bytes sent again since the listing are put again (which refreshes the time) before their
        # case is committed: check the time once more just before deleting.
        if store.written_before(key, cutoff):
            store.delete(key)
            deleted += 1
    return removed + deleted


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `skintriage purge-images`."""
    parser.add_argument("--days", type=int, default=None, help="retention period in days (default: RETENTION_DAYS, 30)")


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
