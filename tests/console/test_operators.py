"""`skintriage operator add`: password from a file, the environment or a prompt; never on the command line."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from console.auth import verify_password
from skintriage.cli import main as cli
from skintriage.db import session_factory
from skintriage.models import AuditEvent, Operator


def operator(url: str, name: str) -> Operator | None:
    with session_factory(url).begin() as s:
        return s.scalars(select(Operator).where(Operator.username == name)).one_or_none()


def test_add_with_a_password_file(sqlite_url, tmp_path, capsys):
    secret = tmp_path / "pw"
    secret.write_text("file-password-123\n")
    code = cli(["operator", "add", "dora", "--role", "admin", "--password-file", str(secret), "--url", sqlite_url])
    assert code == 0
    out = capsys.readouterr().out
    assert "operator 'dora' created with role admin" in out and "file-password-123" not in out
    dora = operator(sqlite_url, "dora")
    assert dora.role == "admin" and verify_password(dora.password_hash, "file-password-123")
    with session_factory(sqlite_url).begin() as s:
        assert s.scalars(select(AuditEvent.action)).all() == ["operator.created"]


def test_add_with_the_environment_variable_defaults_to_reviewer(sqlite_url, monkeypatch):
    monkeypatch.setenv("SKINTRIAGE_OPERATOR_PASSWORD", "env-password-1234")
    assert cli(["operator", "add", "eve", "--url", sqlite_url]) == 0
    eve = operator(sqlite_url, "eve")
    assert eve.role == "reviewer" and verify_password(eve.password_hash, "env-password-1234")


def test_add_prompts_twice_and_refuses_a_mismatch(sqlite_url, monkeypatch, capsys):
    monkeypatch.delenv("SKINTRIAGE_OPERATOR_PASSWORD", raising=False)
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    answers = iter(["prompt-password-1", "prompt-password-2"])
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(answers))
    assert cli(["operator", "add", "fred", "--url", sqlite_url]) == 1
    assert "differ" in capsys.readouterr().err
    assert operator(sqlite_url, "fred") is None
    answers = iter(["prompt-password-1", "prompt-password-1"])
    assert cli(["operator", "add", "fred", "--url", sqlite_url]) == 0
    assert verify_password(operator(sqlite_url, "fred").password_hash, "prompt-password-1")


@pytest.mark.parametrize(
    ("name", "password", "message"),
    [
        ("gus", "short", "at least 10"),
        ("bad name!", "long-enough-pw", "username must be"),
        ("g", "long-enough-pw", "2-64"),
    ],
)
def test_add_refuses_bad_input(sqlite_url, monkeypatch, capsys, name, password, message):
    monkeypatch.setenv("SKINTRIAGE_OPERATOR_PASSWORD", password)
    assert cli(["operator", "add", name, "--url", sqlite_url]) == 1
    assert message in capsys.readouterr().err


def test_add_twice_fails_and_reset_sets_a_new_password_and_unlocks(sqlite_url, monkeypatch, capsys):
    from datetime import timedelta

    from skintriage.models import utcnow

    monkeypatch.setenv("SKINTRIAGE_OPERATOR_PASSWORD", "first-password-1")
    assert cli(["operator", "add", "hana", "--url", sqlite_url]) == 0
    assert cli(["operator", "add", "hana", "--url", sqlite_url]) == 1
    assert "already exists" in capsys.readouterr().err
    with session_factory(sqlite_url).begin() as s:
        hana = s.scalars(select(Operator).where(Operator.username == "hana")).one()
        hana.failed_logins, hana.locked_until = 9, utcnow() + timedelta(hours=2)
    monkeypatch.setenv("SKINTRIAGE_OPERATOR_PASSWORD", "second-password-2")
    assert cli(["operator", "add", "hana", "--reset", "--role", "admin", "--url", sqlite_url]) == 0
    hana = operator(sqlite_url, "hana")
    assert verify_password(hana.password_hash, "second-password-2")
    assert (hana.failed_logins, hana.locked_until, hana.role) == (0, None, "admin")


def test_add_on_an_unmigrated_database_says_what_to_run(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SKINTRIAGE_OPERATOR_PASSWORD", "some-password-1")
    assert cli(["operator", "add", "ivy", "--url", f"sqlite:///{tmp_path / 'empty.sqlite'}"]) == 1
    assert "skintriage db upgrade" in capsys.readouterr().err
