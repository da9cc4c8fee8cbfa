"""Test-wide settings: a temporary cache folder (removed at the end), the offline data folder; a recording Reporter."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATASETS = ROOT.parent / "shared" / "datasets"


_RUNTIME: Path | None = None  # the temporary runtime cache this session made (removed at its end)


def pytest_configure(config: pytest.Config) -> None:
    """Point the runtime cache at a fresh temporary folder and the data folder at ../shared/datasets (if there)."""
    global _RUNTIME
    if "EXPLORER_CACHE_DIR" not in os.environ:
        _RUNTIME = Path(tempfile.mkdtemp(prefix="explorer-test-cache-"))
        os.environ["EXPLORER_CACHE_DIR"] = str(_RUNTIME)
    if SHARED_DATASETS.is_dir():
        os.environ.setdefault("EXPLORER_DATA_DIR", str(SHARED_DATASETS))
    from explorer.core.cache import default_cache

    default_cache()  # built now, in the folder above: a test that sets EXPLORER_CACHE_DIR later passes its own Cache


def pytest_unconfigure(config: pytest.Config) -> None:
    """Remove the temporary runtime cache (each run used to leave tens of MB behind)."""
    if _RUNTIME is not None:
        shutil.rmtree(_RUNTIME, ignore_errors=True)


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
