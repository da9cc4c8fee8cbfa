"""Tests for the background job runner: lifecycle, slots, pause/step/cancel, reaping."""

from __future__ import annotations

import threading
import time
from typing import Callable

import pytest

from explorer.core.jobs import JobContext, JobRunner, JobState, default_runner, runner_settings

TIMEOUT_S = 5.0  # generous upper bound for anything that should take milliseconds


def wait_until(predicate: Callable[[], bool], timeout: float = TIMEOUT_S) -> None:
    """Poll predicate until it holds; fail the test if it never does."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail("condition not reached in time")
        time.sleep(0.002)


def counting(units: int = 1_000_000, delay: float = 0.002) -> Callable[[JobContext], int]:
    """A job that does `units` units, publishing how many are done as its snapshot."""

    def fn(ctx: JobContext) -> int:
        ctx.publish(0, progress=0.0, message="ready")
        for i in range(units):
            ctx.checkpoint()
            time.sleep(delay)
            ctx.publish(i + 1, progress=(i + 1) / units)
        return units

    return fn


def test_job_completes_with_result_and_full_progress(make_runner):
    runner = make_runner()
    job = runner.submit(counting(5, delay=0.0), name="five", owner="alice")
    assert job.wait(TIMEOUT_S)
    assert job.state is JobState.DONE and job.is_final
    assert job.result == 5 and job.snapshot == 5 and job.progress == 1.0
    assert job.error is None
    assert job.created <= job.started <= job.finished
    assert runner.get(job.id) is job
    assert runner.jobs(owner="alice") == [job] and runner.jobs(owner="bob") == []


def test_exception_marks_job_failed_with_message(make_runner, caplog):
    def explode(ctx: JobContext) -> None:
        ctx.checkpoint()
        raise ValueError("learning rate too high")

    job = make_runner().submit(explode)
    assert job.wait(TIMEOUT_S)
    assert job.state is JobState.FAILED
    assert job.error == "ValueError: learning rate too high"
    assert job.result is None
    assert "Traceback" in caplog.text


def test_concurrency_limit_is_respected(make_runner):
    runner = make_runner(max_running=2)
    lock = threading.Lock()
    active = 0
    peak = 0

    def unit_worker(ctx: JobContext) -> None:
        nonlocal active, peak
        for _ in range(5):
            ctx.checkpoint()
            with lock:
                active += 1
                peak = max(peak, active)
            time.sleep(0.01)
            with lock:
                active -= 1

    jobs = [runner.submit(unit_worker) for _ in range(6)]
    assert all(job.wait(TIMEOUT_S) for job in jobs)
    assert all(job.state is JobState.DONE for job in jobs)
    assert peak == 2
    assert runner.running_count() == 0


def test_paused_job_releases_its_slot(make_runner):
    runner = make_runner(max_running=1)
    a = runner.submit(counting())
    wait_until(lambda: a.state is JobState.RUNNING)
    a.pause()
    wait_until(lambda: a.state is JobState.PAUSED)
    b = runner.submit(counting(3, delay=0.0))
    assert b.wait(TIMEOUT_S) and b.state is JobState.DONE
    a.resume()
    wait_until(lambda: a.state is JobState.RUNNING)


def test_pause_and_resume(make_runner):
    runner = make_runner()
    job = runner.submit(counting())
    wait_until(lambda: (job.snapshot or 0) > 0)
    job.pause()
    wait_until(lambda: job.state is JobState.PAUSED)
    done = job.snapshot
    time.sleep(0.05)
    assert job.snapshot == done
    assert runner.running_count() == 0
    job.resume()
    wait_until(lambda: job.snapshot > done)
    assert job.state is JobState.RUNNING


def test_step_advances_exactly_one_unit(make_runner):
    job = make_runner().submit(counting(), start_paused=True)
    wait_until(lambda: job.state is JobState.PAUSED)
    assert job.snapshot == 0
    for expected in (1, 2):
        job.step()
        wait_until(lambda: job.snapshot == expected and job.state is JobState.PAUSED)
        time.sleep(0.05)
        assert job.snapshot == expected


def test_step_on_running_job_pauses_it(make_runner):
    job = make_runner().submit(counting())
    wait_until(lambda: job.state is JobState.RUNNING)
    job.step()
    wait_until(lambda: job.state is JobState.PAUSED)


def test_start_paused_shows_initial_state(make_runner):
    job = make_runner().submit(counting(3, delay=0.0), start_paused=True)
    wait_until(lambda: job.state is JobState.PAUSED)
    assert (job.snapshot, job.progress, job.message) == (0, 0.0, "ready")
    time.sleep(0.05)
    assert job.state is JobState.PAUSED
    job.resume()
    assert job.wait(TIMEOUT_S) and job.result == 3


def test_cancel_running_job(make_runner):
    job = make_runner().submit(counting())
    wait_until(lambda: (job.snapshot or 0) > 0)
    job.cancel()
    assert job.wait(1.0)
    assert job.state is JobState.CANCELLED and job.finished is not None


def test_cancel_paused_job(make_runner):
    runner = make_runner()
    job = runner.submit(counting(), start_paused=True)
    wait_until(lambda: job.state is JobState.PAUSED)
    job.cancel()
    assert job.wait(1.0)
    assert job.state is JobState.CANCELLED
    assert runner.running_count() == 0


def test_cancel_queued_job(make_runner):
    runner = make_runner(max_running=1)
    blocker = runner.submit(counting())
    wait_until(lambda: blocker.state is JobState.RUNNING)
    queued = runner.submit(counting())
    time.sleep(0.05)
    assert queued.state is JobState.QUEUED
    queued.cancel()
    assert queued.wait(1.0)
    assert queued.state is JobState.CANCELLED and queued.started is None
    assert blocker.state is JobState.RUNNING


def test_function_returning_after_cancel_is_cancelled(make_runner):
    def polite(ctx: JobContext) -> str:
        while not ctx.cancelled:
            time.sleep(0.002)
        return "partial"

    job = make_runner().submit(polite)
    wait_until(lambda: job.state is JobState.RUNNING)
    job.cancel()
    assert job.wait(1.0)
    assert job.state is JobState.CANCELLED and job.result == "partial"


def test_publish_replaces_snapshot_and_bumps_version(make_runner):
    def fn(ctx: JobContext) -> None:
        ctx.publish("first", progress=0.25, message="warming up")
        ctx.publish(progress=0.5)
        ctx.publish(progress=7.0)
        ctx.checkpoint()

    job = make_runner().submit(fn, start_paused=True)
    wait_until(lambda: job.state is JobState.PAUSED)
    assert (job.snapshot, job.progress, job.message, job.version) == (
        "first",
        1.0,
        "warming up",
        3,
    )
    job.resume()
    assert job.wait(TIMEOUT_S) and job.state is JobState.DONE


def test_reap_cancels_untouched_job_and_spares_touched_one(make_runner):
    runner = make_runner(orphan_timeout=0.1)
    orphan = runner.submit(counting(), start_paused=True)
    watched = runner.submit(counting(), start_paused=True)
    wait_until(lambda: orphan.state is JobState.PAUSED and watched.state is JobState.PAUSED)
    time.sleep(0.15)
    watched.touch()
    assert runner.reap() == [orphan]
    assert orphan.wait(1.0) and orphan.state is JobState.CANCELLED
    assert watched.state is JobState.PAUSED


def test_reaper_thread_cancels_orphans(make_runner):
    runner = make_runner(orphan_timeout=0.05, reap_interval=0.02)
    job = runner.submit(counting(), start_paused=True)
    assert job.wait(TIMEOUT_S) and job.state is JobState.CANCELLED


def test_final_jobs_are_forgotten(make_runner):
    runner = make_runner(keep_final=0.0)
    running = runner.submit(counting())
    with pytest.raises(ValueError, match="only final jobs"):
        runner.forget(running.id)
    done = runner.submit(counting(1, delay=0.0))
    assert done.wait(TIMEOUT_S)
    time.sleep(0.01)
    running.touch()
    runner.reap()
    assert runner.get(done.id) is None
    assert runner.get(running.id) is running
    runner.forget("no-such-job")


def test_shutdown_cancels_everything(make_runner):
    runner = make_runner()
    jobs = [runner.submit(counting()), runner.submit(counting(), start_paused=True)]
    runner.shutdown(timeout=2.0)
    assert all(job.state is JobState.CANCELLED for job in jobs)
    with pytest.raises(RuntimeError):
        runner.submit(counting())


def test_default_runner_is_a_singleton():
    found: list[JobRunner] = []
    threads = [threading.Thread(target=lambda: found.append(default_runner())) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(runner is default_runner() for runner in found)


RUNNER_VARS = ("EXPLORER_MAX_JOBS", "EXPLORER_MAX_RUNNING", "EXPLORER_MAX_QUEUE", "EXPLORER_SLICE_S",
               "EXPLORER_MAX_JOB_S", "EXPLORER_ORPHAN_TIMEOUT_S")


@pytest.fixture
def no_settings_file(monkeypatch, tmp_path):
    """Only the defaults and the environment: an empty settings file, no runner variables."""
    empty = tmp_path / "explorer.toml"
    empty.write_text("")
    monkeypatch.setenv("EXPLORER_SETTINGS", str(empty))
    for var in RUNNER_VARS:
        monkeypatch.delenv(var, raising=False)


def test_limits_come_from_the_settings_and_the_environment(no_settings_file, monkeypatch):
    from explorer.core.settings import Settings

    d = Settings()  # the defaults, as explorer.example.toml documents them
    assert runner_settings() == {"max_running": d.max_running, "max_jobs": d.max_jobs, "max_queue": d.max_queue,
                                 "slice_s": d.slice_s, "max_job_s": d.max_job_s, "orphan_timeout": d.orphan_timeout_s}
    monkeypatch.setenv("EXPLORER_MAX_JOBS", "4")
    monkeypatch.setenv("EXPLORER_ORPHAN_TIMEOUT_S", "30")
    limits = runner_settings()
    assert (limits["max_jobs"], limits["orphan_timeout"]) == (4, 30.0)
    runner = JobRunner(**limits, reap_interval=60.0)
    try:
        assert (runner.max_jobs, runner.max_running, runner.max_queue, runner.orphan_timeout) == (4, d.max_running, d.max_queue, 30.0)
    finally:
        runner.shutdown()


@pytest.mark.parametrize(
    ("var", "value", "key"),
    [
        ("EXPLORER_MAX_JOBS", "0", "max_jobs"),
        ("EXPLORER_MAX_JOBS", "two", "max_jobs"),
        ("EXPLORER_ORPHAN_TIMEOUT_S", "-1", "orphan_timeout_s"),
        ("EXPLORER_ORPHAN_TIMEOUT_S", "soon", "orphan_timeout_s"),
    ],
)
def test_bad_env_limits_are_rejected(no_settings_file, monkeypatch, var, value, key):
    monkeypatch.setenv(var, value)
    with pytest.raises(ValueError, match=key):  # SettingsError names the setting
        runner_settings()
