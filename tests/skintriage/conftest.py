"""Fixtures of the domain package's tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from skintriage.storage import LocalImageStore


@pytest.fixture
def store(tmp_path: Path) -> LocalImageStore:
    """An image store in a fresh folder."""
    return LocalImageStore(tmp_path / "images")
