"""Fixtures shared by every test package: settings, databases (SQLite and the real PostgreSQL), Redis.

Tests that need PostgreSQL or Redis use the real servers on 127.0.0.1. Without CI they are skipped
when a server is down; under CI=true a missing server fails the run.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

os.environ.setdefault("SKINTRIAGE_ENV", "test")
os.environ.setdefault("LOG_JSON", "false")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# Tests import torch and TensorFlow in one process in any order, so load torch first (ml/frameworks.py).
from ml.frameworks import load_torch_first

load_torch_first()

PG_ADMIN_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379")
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def port_open(host: str, port: int) -> bool:
    """Whether something listens on host:port."""
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((host, port)) == 0


def require_service(name: str, host: str, port: int) -> None:
    """Skip (or, under CI, fail) when a real service is not running."""
    if port_open(host, port):
        return
    message = f"{name} is not running on {host}:{port}; start it (see .ci/run)"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(autouse=True)
def _log_secrets_stay_with_their_test() -> Iterator[None]:
    """Forget the secrets a test registered for log redaction (in-process CLI mains register theirs)."""
    from skintriage import logconfig

    before = set(logconfig._extra_secrets)
    yield
    logconfig._extra_secrets.intersection_update(before)


@pytest.fixture
def settings_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point DATA_DIR and MODEL_DIR at temporary folders and reset the cached settings."""
    from skintriage.settings import get_settings

    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("MODEL_DIR", str(tmp_path / "models"))
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A migrated SQLite database in a temporary folder."""
    from skintriage import migrate

    url = f"sqlite:///{tmp_path / 'test.sqlite'}"
    migrate.upgrade(url)
    return url


def _create_pg_database() -> str:
    from sqlalchemy import create_engine, text

    name = f"st_{uuid.uuid4().hex[:12]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return name


def _drop_pg_database(name: str) -> None:
    from sqlalchemy import create_engine, text

    from skintriage.db import engine_for

    # Pooled connections would block DROP DATABASE; WITH (FORCE) ends them, the cache forgets them.
    engine_for.cache_clear()
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def pg_empty_url() -> Iterator[str]:
    """A fresh, empty database on the real PostgreSQL server, dropped afterwards."""
    require_service("PostgreSQL", "127.0.0.1", 5432)
    name = _create_pg_database()
    yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    _drop_pg_database(name)


@pytest.fixture
def pg_url(pg_empty_url: str) -> str:
    """A migrated database on the real PostgreSQL server."""
    from skintriage import migrate

    migrate.upgrade(pg_empty_url)
    return pg_empty_url


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest) -> str:
    """Run a test on SQLite and on the real PostgreSQL."""
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_url")
    return request.getfixturevalue("pg_url")


@pytest.fixture
def redis_url() -> str:
    """A Redis database number of its own on the real server, flushed before and after."""
    require_service("Redis", "127.0.0.1", 6379)
    import redis

    db = int(os.environ.get("TEST_REDIS_DB", "9"))  # parallel runs on one server each take their own
    url = f"{REDIS_URL}/{db}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield url
    client.flushdb()
    client.close()


if TYPE_CHECKING:
    from devtools.local_api import LocalBotAPI, LocalBotAPIClient

BOT_TOKEN = "123456:TEST-local-bot-api-token-abcdef"


@pytest.fixture
def local_api() -> Iterator[LocalBotAPI]:
    """A local Bot API server (devtools.local_api) on a free port, in a background thread."""
    from devtools.local_api import LocalBotAPI

    api = LocalBotAPI(BOT_TOKEN).start()
    yield api
    api.stop()


@pytest.fixture
def patient(local_api: LocalBotAPI) -> Iterator[LocalBotAPIClient]:
    """The simulated patient's side of the local server."""
    client = local_api.client()
    yield client
    client.close()
