"""`skintriage beat`: the scheduler of the periodic jobs (sweeper, image retention).

Exactly one per deployment, this or `skintriage worker --beat`: each holds the "beat" lease (skintriage.leases)
and a second one refuses to start.
"""

from __future__ import annotations

import argparse

from skintriage.settings import get_settings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `skintriage beat`."""
    parser.add_argument("--loglevel", default=None, help="log level (default: LOG_LEVEL)")


def main(args: argparse.Namespace) -> int:
    """Send the periodic jobs to the replies queue on schedule until stopped."""
    from skintriage import leases
    from skintriage.logconfig import configure_logging
    from skintriage.observability import serve_health
    from worker.celery_app import get_app

    settings = get_settings()
    configure_logging(args.loglevel or settings.log_level, json_lines=settings.log_json)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    app = get_app(settings)
    # Two beats send every periodic job twice: a second one refuses to start.
    lease = leases.hold_or_exit("beat", database_url=settings.resolved_database_url, ttl_s=settings.lease_ttl_s)
    try:
        serve_health(settings.health_port, lambda: {"ok": True, "role": "beat"})
        app.start(
            [
                "beat",
                "--loglevel",
                (args.loglevel or settings.log_level).upper(),
                "--schedule",
                app.conf.beat_schedule_filename,
            ]
        )
    finally:
        lease.stop()
    return 0
