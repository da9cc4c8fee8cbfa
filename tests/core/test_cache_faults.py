"""Faults, short version of benchmarks/fault_cache.py: SIGKILLed writers leave no visible corrupt entry and
nothing that survives the next start's sweep."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from benchmarks.fault_cache import run_faults


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL and forkserver are POSIX")
def test_killed_writers_leave_no_corrupt_entry_and_nothing_after_the_next_start(tmp_path: Path) -> None:
    report = run_faults(tmp_path / "cache", kills=20, seed=1)
    assert report.written > 0 and report.visible_reads > 0, report
    assert report.corrupt_visible == 0, report
    assert report.folders_after == 0 and report.locks_after == 0, report
    assert report.ok
