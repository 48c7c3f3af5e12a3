"""Console fixtures: a migrated SQLite database seeded with patients, cases and real images, operators, the app."""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.console.seed import ADMIN, REVIEWER, Seeded, seed
from tests.console.session_helpers import login


@pytest.fixture
def console_settings(settings_env: Path):
    """Settings for the test (DATA_DIR under tmp_path, SKINTRIAGE_ENV=test)."""
    from skintriage.settings import get_settings

    return get_settings()


@pytest.fixture(scope="session")
def seeded_template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Seeded]:
    """Migrate and seed once per run (argon2 hashes and images are slow); tests get copies."""
    from skintriage import migrate
    from skintriage.db import engine_for
    from skintriage.storage import LocalImageStore

    root = tmp_path_factory.mktemp("console-template")
    url = f"sqlite:///{root / 'console.sqlite'}"
    migrate.upgrade(url)
    data = seed(url, LocalImageStore(root / "images"))
    engine_for(url).dispose()
    return root, data


@pytest.fixture
def console_db_url(seeded_template: tuple[Path, Seeded], tmp_path: Path) -> str:
    """A private copy of the seeded, migrated SQLite database."""
    source = seeded_template[0] / "console.sqlite"
    target = tmp_path / "console.sqlite"
    with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
        src.backup(dst)
    return f"sqlite:///{target}"


@pytest.fixture
def store(settings_env: Path, seeded_template: tuple[Path, Seeded]):
    """A real local image store under the test's DATA_DIR holding the seeded images."""
    from skintriage.storage import LocalImageStore

    root = settings_env / "data" / "images"
    shutil.copytree(seeded_template[0] / "images", root)
    return LocalImageStore(root)


@pytest.fixture
def seeded(seeded_template: tuple[Path, Seeded], console_db_url: str, store) -> Seeded:  # noqa: ANN001
    """Ids of the seeded rows (in this test's copy of the database)."""
    return seeded_template[1]


@pytest.fixture
def app(console_settings, console_db_url: str, store, seeded: Seeded):  # noqa: ANN001
    """The console app on the seeded database."""
    from console.app import create_app

    return create_app(settings=console_settings, database_url=console_db_url, store=store)


@pytest.fixture
def client(app) -> Iterator:  # noqa: ANN001
    """An anonymous browser-like client (does not follow redirects)."""
    from fastapi.testclient import TestClient

    with TestClient(app, follow_redirects=False) as c:
        yield c


@pytest.fixture
def reviewer(client):  # noqa: ANN001, ANN201
    """The client logged in as a reviewer."""
    response = login(client, *REVIEWER)
    assert response.status_code == 303, response.text
    return client


@pytest.fixture
def admin_client(app) -> Iterator:  # noqa: ANN001
    """A second client logged in as an admin."""
    from fastapi.testclient import TestClient

    with TestClient(app, follow_redirects=False) as c:
        response = login(c, *ADMIN)
        assert response.status_code == 303, response.text
        yield c
