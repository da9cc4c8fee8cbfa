"""The status line (queue, jobs, sessions, memory), its periodic log, and recognising out-of-memory errors."""

from __future__ import annotations

import logging
import threading
import time

import pytest
import torch

from explorer.core.jobs import JobContext, JobRunner, JobState
from explorer.core.status import (free_memory, is_out_of_memory, out_of_memory_message, process_rss_bytes,
                                  start_status_log, status_line)


@pytest.fixture
def runner():
    r = JobRunner(max_running=1, max_jobs=1, max_queue=3, reap_interval=60.0)
    yield r
    r.shutdown(timeout=2.0)


def _hold(event: threading.Event):
    def fn(ctx: JobContext) -> None:
        while not event.wait(0.002):
            ctx.checkpoint()

    return fn


def test_status_line_counts_jobs_sessions_and_memory(runner) -> None:
    release = threading.Event()
    running = runner.submit(_hold(release))
    queued = runner.submit(_hold(release))
    paused = runner.submit(_hold(release), start_paused=True)
    deadline = time.monotonic() + 5
    while paused.state is not JobState.PAUSED and time.monotonic() < deadline:
        time.sleep(0.005)
    line = status_line(runner, sessions=7)
    assert line.startswith("jobs: 1 queued (oldest waits ")
    assert "1 running (1 computing, 0 sleeping), 1 paused, 0 finished" in line
    assert "limits 1 slots / 1 admitted / 3 queued" in line
    assert "sessions: 7" in line and "resident" in line
    assert "sessions" not in status_line(runner)  # unknown: left out
    release.set()
    paused.cancel()
    assert running.wait(5) and queued.wait(5) and paused.wait(5)
    assert status_line(runner).startswith("jobs: 0 queued, 0 running")


def test_resident_memory_is_read() -> None:
    rss = process_rss_bytes()
    assert rss is not None and 10_000_000 < rss < 100_000_000_000
    block = torch.ones(64, 1024, 1024, dtype=torch.uint8)  # 64 MiB, touched
    assert process_rss_bytes() > rss + 32_000_000
    del block


def test_status_log_writes_the_line_periodically_and_stops_with_the_runner(runner, caplog) -> None:
    caplog.set_level(logging.INFO, logger="explorer.status")
    assert start_status_log(runner, 0) is None  # 0: off
    thread = start_status_log(runner, 0.02, sessions_fn=lambda: 3)
    assert thread is not None and thread.daemon
    assert start_status_log(runner, 0.02, sessions_fn=lambda: 5) is thread  # one log per runner
    deadline = time.monotonic() + 5
    while "sessions: 5" not in caplog.text and time.monotonic() < deadline:
        time.sleep(0.01)
    assert "jobs: 0 queued" in caplog.text and "sessions: 5" in caplog.text
    runner.shutdown()
    thread.join(2)
    assert not thread.is_alive()


def test_out_of_memory_errors_are_recognised_and_explained() -> None:
    cuda = torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 MiB (GPU 0; 7.8 GiB total)")
    assert is_out_of_memory(cuda)
    assert is_out_of_memory(RuntimeError("MPS backend out of memory (MPS allocated: 1 GB)"))
    assert not is_out_of_memory(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    assert not is_out_of_memory(ValueError("out of memory"))  # not an allocator's error
    msg = out_of_memory_message(cuda)
    assert msg.startswith("the GPU ran out of memory for this run (it needed another 20.00 MiB):")
    assert "smaller batch" in msg and "GPU 0" not in msg
    assert "needed" not in out_of_memory_message(RuntimeError("out of memory"))
    free_memory()  # safe without a GPU
