"""The load test, short: 8 students press Play on a server admitting 2 with a queue of 4 (benchmarks/load_test.py).

Checks what must hold on any machine, not speed (CI machines are noisy; the full run's figures are in the README):
no errors or tracebacks, never more admitted than the limit, every student sees updates, a queue position or the
busy message, and the closed tabs' jobs are let go of without waiting for the orphan timeout."""

from __future__ import annotations

import shutil

import pytest

from benchmarks.load_test import run


@pytest.mark.skipif(shutil.which("streamlit") is None, reason="streamlit is not installed as a command")
def test_a_small_lecture_hall() -> None:
    r = run(sessions=8, seconds=20, ramp_s=2, quiet=True, idle_s=2,
            limits={"EXPLORER_MAX_JOBS": "1", "EXPLORER_MAX_RUNNING": "2", "EXPLORER_MAX_QUEUE": "4",
                    "EXPLORER_ORPHAN_TIMEOUT_S": "600"})
    assert r["errors"] == 0, r["error_samples"]
    assert r["server_tracebacks"] == 0, r["log"]
    assert r["status_lines"] > 0 and r["max_running"] <= 2 and r["max_computing"] <= 1
    assert not r["sessions_shown_nothing"], r
    assert r["sessions_with_updates"] >= 2
    assert r["sessions_busy"] >= 1  # 8 students, 2 admitted + 4 waiting: the others are told the server is busy
    assert r["closed_tabs_released_s"] is not None and r["closed_tabs_released_s"] < 60  # orphan timeout: 600 s
