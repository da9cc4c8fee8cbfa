"""Test-wide settings: a private cache folder, the workplace's offline data folder when present."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATASETS = ROOT.parent / "shared" / "datasets"


def pytest_configure(config: pytest.Config) -> None:
    """Point the runtime cache at a fresh folder and the data folder at ../shared/datasets (if there)."""
    base = Path(config.rootpath) / ".pytest_cache" / "explorer-runtime"
    os.environ.setdefault("EXPLORER_CACHE_DIR", str(base / f"cache-{os.getpid()}"))
    if SHARED_DATASETS.is_dir():
        os.environ.setdefault("EXPLORER_DATA_DIR", str(SHARED_DATASETS))
