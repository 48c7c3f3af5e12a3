"""`skintriage console`: serve the operator console with uvicorn."""

from __future__ import annotations

import argparse
import ipaddress
import logging

from skintriage import migrate
from skintriage.exceptions import ConfigurationError
from skintriage.logconfig import configure_logging, register_secret
from skintriage.settings import get_settings

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `skintriage console`."""
    parser.add_argument("--host", default=None, help="address to listen on (default: CONSOLE_HOST, 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None, help="port (default: CONSOLE_PORT, 8000)")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def main(args: argparse.Namespace) -> int:
    """Check the configuration and the database, then serve until interrupted."""
    import uvicorn

    from console.app import create_app

    settings = get_settings()
    configure_logging(settings.log_level, json_lines=settings.log_json)
    register_secret(settings.console_secret_key.get_secret_value())
    host = args.host or settings.console_host
    port = args.port or settings.console_port
    url = settings.resolved_database_url
    if migrate.current(url) is None:
        print("error: the database has no schema yet; run `skintriage db upgrade` first")
        return 1
    try:
        app = create_app(settings=settings, database_url=url)
    except ConfigurationError as exc:
        print(f"error: {exc}")
        return 1
    if not _is_loopback(host) and not settings.console_secure_cookies:
        log.warning("console listens on %s without CONSOLE_SECURE_COOKIES; put it behind HTTPS and set it", host)
    print(f"operator console on http://{host}:{port}/ (create an operator with `skintriage operator add NAME`)")
    # The app reads X-Forwarded-For itself, and only from CONSOLE_TRUSTED_PROXIES (console.throttle): uvicorn
    # must pass the direct peer through unchanged.
    uvicorn.run(app, host=host, port=port, log_config=None, proxy_headers=False)
    return 0
