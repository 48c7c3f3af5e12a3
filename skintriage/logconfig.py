"""Structured logging for every process, with secrets redacted before anything is written."""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime

# Telegram bot tokens look like 123456789:AA...; they also appear inside Bot API URLs.
TOKEN_RE = re.compile(r"(?<!\d)\d{5,}:[A-Za-z0-9_-]{20,}")
SECRET_URL_RE = re.compile(r"(://[^:/\s]+:)[^@\s]+@")
_extra_secrets: set[str] = set()


def register_secret(value: str | None) -> None:
    """Make sure a secret value is never written to a log."""
    if value and len(value) >= 6:
        _extra_secrets.add(value)


def redact(text: str) -> str:
    """Remove bot tokens, passwords in URLs and registered secrets from a string."""
    for secret in _extra_secrets:
        text = text.replace(secret, "[REDACTED]")
    text = TOKEN_RE.sub("[REDACTED-TOKEN]", text)
    return SECRET_URL_RE.sub(r"\1[REDACTED]@", text)


class RedactingFilter(logging.Filter):
    """Rewrites each record's message (and traceback) with secrets removed."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        record.msg = redact(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and any `extra` fields."""

    RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in self.RESERVED and not key.startswith("_"):
                payload[key] = value if isinstance(value, int | float | str | bool | None) else str(value)
        if record.exc_text:
            payload["exc"] = record.exc_text
        return json.dumps(payload, ensure_ascii=False)


def configure_logging(level: str = "INFO", *, json_lines: bool = True) -> None:
    """Route every logger through one redacting handler on stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RedactingFilter())
    handler.setFormatter(
        JsonFormatter() if json_lines else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # httpx logs every request URL, which contains the bot token; keep it quiet.
    for noisy in ("httpx", "httpcore", "telegram.ext.ExtBot", "urllib3", "botocore", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # python-telegram-bot's DEBUG logs carry whole updates and API results (names, texts): never below INFO.
    logging.getLogger("telegram").setLevel(max(root.level, logging.INFO))
