"""Fixtures for the development tools' tests: the local Bot API server and its simulated patient."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from devtools.local_api import LocalBotAPI, LocalBotAPIClient

TOKEN = "123456:TEST-local-bot-api-token-abcdef"


@pytest.fixture
def local_api() -> Iterator[LocalBotAPI]:
    """A local Bot API server on a free port, in a background thread."""
    api = LocalBotAPI(TOKEN).start()
    yield api
    api.stop()


@pytest.fixture
def patient(local_api: LocalBotAPI) -> Iterator[LocalBotAPIClient]:
    """The simulated patient's side of the local server."""
    client = local_api.client()
    yield client
    client.close()
