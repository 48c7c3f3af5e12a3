"""`skintriage bot`: run the Telegram bot (real Telegram, or a local Bot API server).

Updates arrive by long polling, or with BOT_WEBHOOK_URL set by Telegram POSTing them to python-telegram-bot's
webhook server (docs/load.md says which to run when).

Exactly one per deployment: it holds the "bot" lease (skintriage.leases) and a second one refuses to start.
"""

from __future__ import annotations

import argparse
import logging

from sqlalchemy import text

from skintriage.exceptions import ConfigurationError

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `skintriage bot`."""
    parser.add_argument(
        "--drop-pending-updates",
        action="store_true",
        help="forget updates that arrived while the bot was down (default: answer them)",
    )


def _database_check(url: str) -> dict:
    from skintriage.db import engine_for

    with engine_for(url).connect() as conn:
        conn.execute(text("SELECT 1"))
    return {"ok": True, "database": "up"}


def main(args: argparse.Namespace) -> int:
    """Check the settings and the schema, serve /healthz, then poll until interrupted."""
    from telegram import Update

    from bot.app import WebhookDataFilter, build_application
    from skintriage import leases, migrate
    from skintriage.logconfig import configure_logging, register_secret
    from skintriage.observability import serve_health
    from skintriage.settings import get_settings

    settings = get_settings()
    configure_logging(settings.log_level, json_lines=settings.log_json)
    settings.check_secrets()
    register_secret(settings.telegram_bot_token.get_secret_value())
    if settings.bot_webhook_url:
        register_secret(settings.bot_webhook_secret.get_secret_value())
    url = settings.resolved_database_url
    if migrate.current(url) is None:
        raise ConfigurationError("the database has no schema yet; run `skintriage db upgrade` first")
    # Two bots on one token take each other's updates: a second one refuses to start.
    lease = leases.hold_or_exit("bot", database_url=url, ttl_s=settings.lease_ttl_s)
    try:
        serve_health(settings.health_port, lambda: _database_check(url))
        application = build_application(settings)
        if settings.bot_webhook_url:
            logging.getLogger(WebhookDataFilter.LOGGER).addFilter(WebhookDataFilter())
            log.info(
                "bot taking updates by webhook on %s:%d (Telegram posts to BOT_WEBHOOK_URL)",
                settings.bot_webhook_listen,
                settings.bot_webhook_port,
            )
            application.run_webhook(
                listen=settings.bot_webhook_listen,
                port=settings.bot_webhook_port,
                url_path=settings.bot_webhook_path,
                webhook_url=settings.bot_webhook_url,
                secret_token=settings.bot_webhook_secret.get_secret_value(),
                max_connections=settings.bot_webhook_max_connections,
                allowed_updates=Update.ALL_TYPES,
                drop_pending_updates=args.drop_pending_updates,
            )
        else:
            log.info("bot polling %s", settings.telegram_api_base_url)
            application.run_polling(allowed_updates=Update.ALL_TYPES, drop_pending_updates=args.drop_pending_updates)
    finally:
        lease.stop()
    return 0
