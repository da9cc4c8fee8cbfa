"""Portable jobs on a local Ray instance: progress reaches the local Job, cancel maps to ray.cancel, errors and
results come back, and live (non-portable) jobs stay local."""

from __future__ import annotations

import os
import sys
import time
from typing import Iterator

import pytest

from explorer.core.jobs import JobContext, JobRunner, JobState

ray = pytest.importorskip("ray")

TIMEOUT_S = 40.0  # the first task starts a worker process


def count_to(ctx: JobContext, n: int) -> dict:
    """A portable job: n published steps; returns where it ran."""
    for i in range(n):
        ctx.checkpoint()
        time.sleep(0.01)
        ctx.publish({"step": i + 1}, progress=(i + 1) / n, message=f"{i + 1}/{n} steps")
    return {"pid": os.getpid(), "n": n}


def forever(ctx: JobContext) -> None:
    """A portable job that runs until cancelled, saying it is alive."""
    i = 0
    while True:
        ctx.checkpoint()
        ctx.publish(progress=0.5, message=f"alive {i}")
        i += 1
        time.sleep(0.02)


def explode(ctx: JobContext, what: str) -> None:
    """A portable job that fails."""
    raise ValueError(f"no such width: {what}")


@pytest.fixture(scope="module")
def runner() -> Iterator[JobRunner]:
    """A Ray runner on a local one-CPU instance (shut down afterwards)."""
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the worker cannot import a test module
    r = JobRunner(max_running=4, backend="ray", reap_interval=60.0)
    try:
        yield r
    finally:
        r.shutdown(timeout=10.0)
        ray.shutdown()


def test_a_portable_job_runs_on_ray_and_its_progress_reaches_the_local_job(runner) -> None:
    job = runner.submit(count_to, portable=True, args=(20,), name="sweep")
    assert job.remote and runner.backend == "ray"
    assert job.wait(TIMEOUT_S) and job.state is JobState.DONE, job.error
    assert job.result["n"] == 20 and job.result["pid"] != os.getpid()
    assert job.snapshot == {"step": 20} and job.message == "20/20 steps" and job.progress == 1.0
    assert job.version >= 1 and job.compute_s > 0 and runner.running_count() == 0  # no local slot


def test_cancelling_a_ray_job_cancels_the_task(runner) -> None:
    job = runner.submit(forever, portable=True)
    deadline = time.monotonic() + TIMEOUT_S
    while not job.message.startswith("alive") and time.monotonic() < deadline:
        time.sleep(0.02)
    assert job.state is JobState.RUNNING and job.message.startswith("alive")
    assert runner.stats()["remote"] == 1 and ray.available_resources().get("CPU", 0) == 0  # the task holds it
    job.cancel()
    assert job.wait(10.0) and job.state is JobState.CANCELLED
    deadline = time.monotonic() + 10.0  # the task itself stopped: the cluster's one CPU is free again
    while ray.available_resources().get("CPU", 0) < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ray.available_resources().get("CPU", 0) == 1


def test_a_failing_task_fails_the_job_with_its_own_error(runner) -> None:
    job = runner.submit(explode, portable=True, args=("many",))
    assert job.wait(TIMEOUT_S) and job.state is JobState.FAILED
    assert job.error == "ValueError: no such width: many"


def test_live_jobs_stay_local_on_a_ray_runner(runner) -> None:
    job = runner.submit(lambda ctx: os.getpid(), start_paused=False)
    assert not job.remote and job.wait(TIMEOUT_S) and job.result == os.getpid()
    with pytest.raises(ValueError, match="cannot start paused"):
        runner.submit(count_to, portable=True, start_paused=True, args=(1,))
