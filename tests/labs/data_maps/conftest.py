"""Data-maps tests: no downloads, a fresh data-set memo, and each test's own cache."""

from __future__ import annotations

from pathlib import Path

import pytest

from explorer.core.cache import Cache
from explorer.data import datasets as D


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch) -> None:
    """No downloads."""
    monkeypatch.setenv("EXPLORER_OFFLINE", "1")
    D.forget_loaded()


@pytest.fixture
def cache(tmp_path: Path) -> Cache:
    """This test's own cache."""
    return Cache(tmp_path / "cache")
