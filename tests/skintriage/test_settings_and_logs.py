"""Settings defaults, secret checks and log redaction."""

from __future__ import annotations

import logging

import pytest

from skintriage import logconfig
from skintriage.exceptions import ConfigurationError
from skintriage.logconfig import RedactingFilter, configure_logging, redact, register_secret
from skintriage.settings import Settings


def test_embedded_defaults_need_no_server(monkeypatch, tmp_path):
    for name in ("DATABASE_URL", "CELERY_BROKER_URL", "DATA_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    settings = Settings()
    assert settings.resolved_database_url.startswith("sqlite:///")
    assert settings.celery_broker_url == "filesystem://"
    assert settings.image_store == "local"


def test_placeholder_secret_refuses_to_start_outside_demo(monkeypatch):
    monkeypatch.setenv("SKINTRIAGE_ENV", "production")
    monkeypatch.delenv("TELEGRAM_BOT_TOKEN", raising=False)
    with pytest.raises(ConfigurationError, match="TELEGRAM_BOT_TOKEN"):
        Settings().check_secrets()
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", "987654321:" + "A" * 35)
    with pytest.raises(ConfigurationError, match="CONSOLE_SECRET_KEY"):
        Settings().check_secrets()
    monkeypatch.setenv("CONSOLE_SECRET_KEY", "x" * 48)
    Settings().check_secrets()


def test_demo_environment_accepts_placeholders(monkeypatch):
    monkeypatch.setenv("SKINTRIAGE_ENV", "demo")
    monkeypatch.delenv("TELEGRAM_BOT_TOKEN", raising=False)
    Settings().check_secrets()


def test_webhook_mode_needs_a_secret_telegram_accepts(monkeypatch):
    from pydantic import ValidationError

    monkeypatch.setenv("BOT_WEBHOOK_URL", "https://bot.example.org/telegram/updates")
    monkeypatch.delenv("BOT_WEBHOOK_SECRET", raising=False)
    with pytest.raises(ValidationError, match="BOT_WEBHOOK_SECRET"):
        Settings()
    monkeypatch.setenv("BOT_WEBHOOK_SECRET", "has spaces")
    with pytest.raises(ValidationError, match="BOT_WEBHOOK_SECRET"):
        Settings()
    monkeypatch.setenv("BOT_WEBHOOK_SECRET", "Abc_123-xyz")
    assert Settings().bot_webhook_path == "telegram/updates"
    monkeypatch.setenv("BOT_WEBHOOK_URL", "bot.example.org/telegram")
    with pytest.raises(ValidationError, match="https://"):
        Settings()


def test_bot_token_and_url_passwords_are_redacted(monkeypatch):
    token = "123456789:AAH" + "x" * 32
    text = f"POST https://api.telegram.org/bot{token}/sendMessage to postgresql://user:hunter2@db/x"
    out = redact(text)
    assert token not in out and "hunter2" not in out
    # The registry is process-wide: a secret registered here would be redacted from every later test's logs.
    monkeypatch.setattr(logconfig, "_extra_secrets", set())
    assert redact("key=s3cr3t-value") == "key=s3cr3t-value"
    register_secret("s3cr3t-value")
    assert "s3cr3t-value" not in redact("key=s3cr3t-value")


def test_filter_redacts_messages_and_tracebacks():
    token = "123456789:AAH" + "y" * 32
    try:
        raise RuntimeError(f"failed url .../bot{token}/getMe")
    except RuntimeError:
        record = logging.LogRecord("t", logging.ERROR, __file__, 1, "calling %s", (token,), exc_info=None)
        import sys

        record.exc_info = sys.exc_info()
    RedactingFilter().filter(record)
    assert token not in record.getMessage()
    assert token not in record.exc_text


def test_debug_logging_keeps_telegram_payloads_out(monkeypatch):
    """At LOG_LEVEL=DEBUG our own loggers talk, but python-telegram-bot's update/result dumps stay off."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level, logging.getLogger("telegram").level)
    try:
        configure_logging("DEBUG", json_lines=False)
        assert logging.getLogger("worker.tasks").isEnabledFor(logging.DEBUG)
        for name in ("telegram.Bot", "telegram.ext.Application", "telegram.ext.Updater", "telegram.ext.ExtBot"):
            assert not logging.getLogger(name).isEnabledFor(logging.DEBUG), name
        assert logging.getLogger("telegram.ext.Updater").isEnabledFor(logging.WARNING)
    finally:
        root.handlers[:], root.level = saved[0], saved[1]
        logging.getLogger("telegram").setLevel(saved[2])


def test_every_engine_the_project_creates_hides_sql_parameters(sqlite_url):
    """SQL parameters carry Telegram ids; no engine may put them in an error's text (see docs/reliability.md)."""
    import ast
    from pathlib import Path

    from skintriage.db import make_engine

    assert make_engine(sqlite_url).hide_parameters
    assert make_engine("postgresql+psycopg://postgres@127.0.0.1:1/none").hide_parameters
    root = Path(__file__).resolve().parents[2]
    missing = []
    for package in ("bot", "worker", "console", "skintriage", "ml", "migrations", "bench"):
        for path in (root / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if (
                    isinstance(node, ast.Call)
                    and getattr(node.func, "id", getattr(node.func, "attr", None)) == "create_engine"
                    and not any(k.arg == "hide_parameters" for k in node.keywords)
                ):
                    missing.append(f"{path.relative_to(root)}:{node.lineno}")
    assert missing == [], f"create_engine without hide_parameters=True: {missing}"
