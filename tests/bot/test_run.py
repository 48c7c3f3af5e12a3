"""`skintriage bot` as a process: refuses an empty database, then serves a patient through the local server."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from tests.stack import free_port


def _env(local_api, tmp_path, url: str) -> dict[str, str]:
    return {
        **os.environ,
        "SKINTRIAGE_ENV": "test",
        "DATA_DIR": str(tmp_path / "data"),
        "DATABASE_URL": url,
        "TELEGRAM_BOT_TOKEN": local_api.token,
        "TELEGRAM_API_BASE_URL": local_api.api_base_url,
        "TELEGRAM_FILE_BASE_URL": local_api.file_base_url,
        "HEALTH_PORT": str(free_port()),
        "LOG_JSON": "true",
    }


@pytest.mark.slow
def test_bot_command_refuses_a_database_without_schema(local_api, tmp_path) -> None:
    env = _env(local_api, tmp_path, f"sqlite:///{tmp_path / 'empty.sqlite'}")
    out = subprocess.run(
        [sys.executable, "-m", "skintriage.cli", "bot"], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode != 0
    assert "skintriage db upgrade" in out.stderr


@pytest.mark.slow
def test_bot_command_polls_answers_and_serves_healthz(local_api, patient, sqlite_url, tmp_path) -> None:
    import httpx

    env = _env(local_api, tmp_path, sqlite_url)
    proc = subprocess.Popen(
        [sys.executable, "-m", "skintriage.cli", "bot"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 60
        while not patient.status()["last_poll_at"]:
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline
            time.sleep(0.1)
        patient.send_command(601, "/help")
        reply = patient.wait_for(601, lambda e: e["method"] == "sendMessage", timeout=30)
        assert reply["text"].startswith("How to use me")
        health = httpx.get(f"http://127.0.0.1:{env['HEALTH_PORT']}/healthz").json()
        assert health == {"ok": True, "database": "up"}
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=30)
    assert local_api.token not in stderr.decode()  # the token never reaches the logs
