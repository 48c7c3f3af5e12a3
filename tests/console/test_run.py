"""`skintriage console`: refuses an unmigrated database and placeholder secrets, and serves in a real process."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from skintriage.cli import main as cli


def test_console_refuses_a_database_without_schema(settings_env: Path, monkeypatch, capsys):
    from skintriage.settings import get_settings

    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{settings_env / 'empty.sqlite'}")
    get_settings.cache_clear()
    assert cli(["console", "--port", "1"]) == 1
    assert "skintriage db upgrade" in capsys.readouterr().out


def test_console_refuses_the_placeholder_secret_outside_development(settings_env, sqlite_url, monkeypatch, capsys):
    from skintriage.settings import get_settings

    monkeypatch.setenv("DATABASE_URL", sqlite_url)
    monkeypatch.setenv("SKINTRIAGE_ENV", "production")
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", "987654321:AAbbccddeeffgghhiijjkkllmmnnoopp")
    get_settings.cache_clear()
    assert cli(["console", "--port", "1"]) == 1
    assert "CONSOLE_SECRET_KEY is a placeholder" in capsys.readouterr().out


@pytest.mark.slow
def test_console_command_serves_the_login_page(settings_env: Path, sqlite_url):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "DATABASE_URL": sqlite_url, "DATA_DIR": str(settings_env / "data"), "LOG_JSON": "true"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "skintriage.cli", "console", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                health = httpx.get(f"{base}/healthz", timeout=1)
                break
            except httpx.TransportError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"console did not start: {proc.communicate()[0][-2000:]}")
                time.sleep(0.2)
        assert health.status_code == 200 and health.json() == {"status": "ok"}
        assert httpx.get(f"{base}/login").status_code == 200
        cases = httpx.get(f"{base}/cases")
        assert cases.status_code == 303 and cases.headers["location"].startswith("/login")
    finally:
        proc.terminate()
        output = proc.communicate(timeout=10)[0]
    assert f"operator console on http://127.0.0.1:{port}/" in output
