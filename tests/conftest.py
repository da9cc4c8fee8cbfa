"""Test-wide settings: a temporary cache folder (removed at the end), the offline data folder, torch's thread count
restored after every test; a recording Reporter."""

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


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    """Every test ends with torch's intra-op thread count it started with: a CLI or page under test calls
    configure_threads (1 thread, the app's setting), and a later exact recompute of a 2-thread result would
    otherwise run with 1 thread and round differently (the model-size recompute did: 0.404010 vs 0.404165)."""
    import torch

    before = torch.get_num_threads()
    yield
    if torch.get_num_threads() != before:
        torch.set_num_threads(before)


@pytest.fixture
def plain_main(monkeypatch):
    """sys.modules["__main__"] a bare module for the test: AppTest leaves the last page it ran as __main__, and a
    spawned worker process (the sweep command's --workers) would run that page's file again on start-up (under the
    CLI, __main__ is explorer's own)."""
    import sys
    import types

    monkeypatch.setitem(sys.modules, "__main__", types.ModuleType("__main__"))


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
