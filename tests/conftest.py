"""Test-wide settings: a private cache folder, the workplace's offline data folder when present; a recording Reporter."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATASETS = ROOT.parent / "shared" / "datasets"


def pytest_configure(config: pytest.Config) -> None:
    """Point the runtime cache at a fresh folder and the data folder at ../shared/datasets (if there)."""
    base = Path(config.rootpath) / ".pytest_cache" / "explorer-runtime"
    os.environ.setdefault("EXPLORER_CACHE_DIR", str(base / f"cache-{os.getpid()}"))
    if SHARED_DATASETS.is_dir():
        os.environ.setdefault("EXPLORER_DATA_DIR", str(SHARED_DATASETS))
    from explorer.core.cache import default_cache

    default_cache()  # built now, in the folder above: a test that sets EXPLORER_CACHE_DIR later passes its own Cache


class Recorder:
    """A Reporter (explorer.core.report) that keeps every publish and counts checkpoints."""

    def __init__(self) -> None:
        self.published: list[tuple[Any, float | None, str | None]] = []
        self.checkpoints = 0

    def publish(self, snapshot: Any = None, *, progress: float | None = None, message: str | None = None) -> None:
        self.published.append((snapshot, progress, message))

    def checkpoint(self) -> None:
        self.checkpoints += 1

    @property
    def snapshots(self) -> list[Any]:
        """The snapshots published, in order (publishes without one left out)."""
        return [s for s, _, _ in self.published if s is not None]

    @property
    def progress(self) -> list[float]:
        """The progress values published, in order."""
        return [p for _, p, _ in self.published if p is not None]

    @property
    def messages(self) -> list[str]:
        """The messages published, in order."""
        return [m for _, _, m in self.published if m is not None]


@pytest.fixture
def recorder() -> Recorder:
    """A fresh Recorder to pass as a compute function's `report`."""
    return Recorder()
