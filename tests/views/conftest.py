"""Page tests: a private cache that the page under test, and the jobs it starts, use instead of the server's one."""

from __future__ import annotations

from pathlib import Path

import pytest

from explorer.core.cache import Cache


@pytest.fixture
def page_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Cache:
    """A fresh cache in tmp_path, handed to the pages by views.widgets.app_cache() (each page run imports it)."""
    cache = Cache(tmp_path / "cache")
    monkeypatch.setattr("views.widgets.app_cache", lambda: cache)
    return cache
