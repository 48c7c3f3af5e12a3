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


def test_bot_command_in_webhook_mode_takes_updates_only_with_the_secret_and_logs_no_update_data(
    local_api, patient, sqlite_url, tmp_path
) -> None:
    import httpx

    port = free_port()
    url = f"http://127.0.0.1:{port}/telegram"
    env = {
        **_env(local_api, tmp_path, sqlite_url),
        "BOT_WEBHOOK_URL": url,
        "BOT_WEBHOOK_PORT": str(port),
        "BOT_WEBHOOK_SECRET": "s3cret-webhook_token",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "skintriage.cli", "bot"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 60
        while patient.status()["webhook_url"] != url:  # the bot called setWebhook with its URL
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline
            time.sleep(0.1)
        patient.send_command(602, "/help")
        reply = patient.wait_for(602, lambda e: e["method"] == "sendMessage", timeout=30)
        assert reply["text"].startswith("How to use me")
        assert patient.status()["last_poll_at"] == 0  # nothing came by polling

        # Without the secret (anyone who found the URL) the update is refused and nothing is said.
        forged = {"update_id": 99, "message": {"message_id": 1, "date": 0, "chat": {"id": 603, "type": "private"},
                                               "from": {"id": 603, "is_bot": False, "first_name": "X"},
                                               "text": "/help"}}  # fmt: skip
        assert httpx.post(url, json=forged).status_code == 403
        wrong = httpx.post(url, json=forged, headers={"X-Telegram-Bot-Api-Secret-Token": "guess"})
        assert wrong.status_code == 403

        # An update python-telegram-bot cannot parse (a date that is not a number): refused, logged without it.
        errors = patient.status()["webhook_errors"]
        chat = {"id": 605, "type": "private", "first_name": "Zelda"}
        patient.inject_update({"message": {"message_id": 5, "date": "Zelda", "chat": chat, "text": "Private-Name"}})
        deadline = time.monotonic() + 30
        while patient.status()["webhook_errors"] == errors:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        patient.send_command(604, "/help")  # and other patients are still served
        patient.wait_for(604, lambda e: e["method"] == "sendMessage", timeout=30)
        assert patient.messages(603) == [] and patient.messages(605) == []
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=30)
    log = stderr.decode()
    assert "could not be parsed" in log
    assert "Zelda" not in log and "Private-Name" not in log
    assert local_api.token not in log and "s3cret-webhook_token" not in log
