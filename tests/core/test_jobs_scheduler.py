"""The job runner as a fair, bounded scheduler: admission and its queue, Busy, sleeping without a slot, round robin,
the compute limit, shared jobs, start states that never queue, and out-of-memory failures that leave the next job
working."""

from __future__ import annotations

import threading
import time
from typing import Callable

import pytest
import torch

import explorer.core.jobs as jobs_module
from explorer.core.jobs import Busy, JobContext, JobRunner, JobState

TIMEOUT_S = 5.0


def wait_until(predicate: Callable[[], bool], timeout: float = TIMEOUT_S) -> None:
    """Poll predicate until it holds; fail the test if it never does."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail("condition not reached in time")
        time.sleep(0.002)


def gate(event: threading.Event, progress: float | None = None) -> Callable[[JobContext], str]:
    """A job that holds its place (checkpointing) until the event is set."""

    def fn(ctx: JobContext) -> str:
        ctx.publish("holding", progress=progress)
        while not event.wait(0.002):
            ctx.checkpoint()
        return "released"

    return fn


def spin(counter: list[int], index: int) -> Callable[[JobContext], None]:
    """A CPU-bound job: units of ~1 ms of Python work, a checkpoint before each, counted in counter[index]."""

    def fn(ctx: JobContext) -> None:
        while True:
            ctx.checkpoint()
            end = time.perf_counter() + 0.001
            while time.perf_counter() < end:
                pass
            counter[index] += 1

    return fn


def test_admission_and_slots_are_never_exceeded_under_50_concurrent_submits(make_runner):
    runner = make_runner(max_running=3, max_jobs=2, max_queue=100)
    lock = threading.Lock()
    inside = computing = peak_inside = peak_computing = 0
    samples: list[dict] = []

    def paced(ctx: JobContext) -> None:
        nonlocal inside, computing, peak_inside, peak_computing
        ctx.checkpoint()
        with lock:
            inside += 1
            peak_inside = max(peak_inside, inside)
        for _ in range(3):
            ctx.checkpoint()
            with lock:
                computing += 1
                peak_computing = max(peak_computing, computing)
            time.sleep(0.001)
            with lock:
                computing -= 1
            ctx.sleep(0.005)
        with lock:
            inside -= 1

    barrier = threading.Barrier(50)
    submitted = []

    def submit() -> None:
        barrier.wait()
        submitted.append(runner.submit(paced))

    stop = threading.Event()

    def monitor() -> None:
        while not stop.is_set():
            samples.append(runner.stats())
            time.sleep(0.001)

    watcher = threading.Thread(target=monitor)
    watcher.start()
    threads = [threading.Thread(target=submit) for _ in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(job.wait(20) for job in submitted)
    stop.set()
    watcher.join()
    assert len(submitted) == 50 and all(job.state is JobState.DONE for job in submitted)
    assert peak_inside <= 3 and peak_computing <= 2
    assert max(s["running"] for s in samples) <= 3 and max(s["computing"] for s in samples) <= 2
    assert max(s["queued"] for s in samples) > 0  # the limit was actually in play
    assert runner.stats()["finished"] == 50 and runner.running_count() == 0


def test_queue_positions_are_in_order_and_move_up_as_jobs_finish(make_runner):
    runner = make_runner(max_running=1, max_queue=10)
    events = [threading.Event() for _ in range(5)]
    jobs = [runner.submit(gate(e)) for e in events]
    assert jobs[0].state is JobState.RUNNING and jobs[0].queue_position is None
    assert [j.state for j in jobs[1:]] == [JobState.QUEUED] * 4
    assert [j.queue_position for j in jobs[1:]] == [1, 2, 3, 4]
    assert runner.stats()["queued"] == 4 and runner.stats()["oldest_wait_s"] >= 0
    events[0].set()
    wait_until(lambda: jobs[1].state is JobState.RUNNING)
    assert [j.queue_position for j in jobs[2:]] == [1, 2, 3]
    jobs[3].cancel()  # leaving the queue moves those behind up
    wait_until(lambda: jobs[4].queue_position == 2)
    jobs[2].pause()  # so does pausing while queued
    assert jobs[2].state is JobState.PAUSED and jobs[4].queue_position == 1
    for e in events:
        e.set()
    jobs[2].resume()
    assert all(j.wait(TIMEOUT_S) for j in jobs)
    assert [j.state for j in jobs] == [JobState.DONE] * 3 + [JobState.CANCELLED, JobState.DONE]


def test_a_full_queue_says_busy_and_keeps_paused_jobs_paused(make_runner):
    runner = make_runner(max_running=1, max_jobs=2, max_queue=2)
    release = threading.Event()
    running = runner.submit(gate(release))
    waiting = [runner.submit(gate(release)) for _ in range(2)]
    with pytest.raises(Busy) as exc:
        runner.submit(gate(release))
    assert str(exc.value) == "The server is busy: 2 trainings are waiting. Try again in a minute."
    assert len(runner.jobs()) == 3  # the refused job was never registered
    paused = runner.submit(gate(release), start_paused=True)  # opening a page never queues
    wait_until(lambda: paused.state is JobState.PAUSED and paused.snapshot == "holding")
    for press in (paused.resume, paused.step):
        with pytest.raises(Busy):
            press()
        assert paused.state is JobState.PAUSED and paused.pause_requested
    release.set()
    assert all(j.wait(TIMEOUT_S) for j in [running, *waiting])
    paused.resume()
    assert paused.wait(TIMEOUT_S) and paused.state is JobState.DONE


def test_busy_without_a_queue_names_the_places(make_runner):
    runner = make_runner(max_running=1, max_queue=0)
    release = threading.Event()
    runner.submit(gate(release))
    with pytest.raises(Busy, match="all 1 training places are taken"):
        runner.submit(gate(release))
    release.set()


def test_sleeping_jobs_hold_no_slot_so_paced_jobs_all_progress(make_runner):
    runner = make_runner(max_running=5, max_jobs=1, slice_s=10.0)
    steps = [0] * 4

    def paced(i: int) -> Callable[[JobContext], None]:
        def fn(ctx: JobContext) -> None:
            while True:
                ctx.checkpoint()
                steps[i] += 1
                ctx.sleep(0.05)  # 20 steps/s, paced for a lecture hall

        return fn

    jobs = [runner.submit(paced(i)) for i in range(4)]
    wait_until(lambda: runner.stats()["sleeping"] >= 3)
    time.sleep(0.4)
    assert min(steps) >= 3, steps  # every paced job moved although there is one slot
    assert runner.running_count() <= 1
    assert sum(j.compute_s for j in jobs) < 0.4  # sleeping is not compute
    held = runner.submit(spin([0], 0))  # and a CPU-bound job gets the slot between their steps
    wait_until(lambda: held.compute_s > 0.05)


def test_time_sleep_would_hold_the_slot(make_runner):
    """The contrast: pacing with time.sleep keeps the slot, so with one slot only one paced job moves."""
    runner = make_runner(max_running=2, max_jobs=1, slice_s=10.0)
    steps = [0, 0]

    def paced(i: int) -> Callable[[JobContext], None]:
        def fn(ctx: JobContext) -> None:
            while True:
                ctx.checkpoint()
                steps[i] += 1
                time.sleep(0.02)

        return fn

    runner.submit(paced(0))
    wait_until(lambda: steps[0] > 0)
    runner.submit(paced(1))
    time.sleep(0.2)
    assert steps[1] == 0 and steps[0] >= 3


def test_round_robin_shares_one_slot_between_cpu_bound_jobs(make_runner):
    counts = [0, 0]
    runner = make_runner(max_running=2, max_jobs=1, slice_s=0.05)
    runner.submit(spin(counts, 0))
    wait_until(lambda: counts[0] > 0)
    runner.submit(spin(counts, 1))
    time.sleep(0.5)
    a, b = counts
    assert a > 20 and b > 20 and min(a, b) / (a + b) > 0.25, counts
    unfair = [0, 0]
    runner = make_runner(max_running=2, max_jobs=1, slice_s=10.0)  # without slices the first keeps the slot
    runner.submit(spin(unfair, 0))
    wait_until(lambda: unfair[0] > 0)
    runner.submit(spin(unfair, 1))
    time.sleep(0.2)
    assert unfair[1] == 0


def test_a_job_back_from_sleep_gets_the_slot_before_one_that_never_started(make_runner):
    runner = make_runner(max_running=3, max_jobs=1, slice_s=10.0)
    order: list[str] = []
    release = threading.Event()

    def sleeper(ctx: JobContext) -> None:
        ctx.checkpoint()
        order.append("sleeper computes")
        ctx.sleep(0.1)
        order.append("sleeper is back")

    def fresh(ctx: JobContext) -> None:
        order.append("fresh starts")

    a = runner.submit(sleeper)
    wait_until(lambda: a.state is JobState.SLEEPING)
    blocker = runner.submit(gate(release))  # takes the slot while the sleeper sleeps
    wait_until(lambda: blocker.snapshot == "holding")
    b = runner.submit(fresh)  # lines up first...
    time.sleep(0.15)  # ...the sleeper wakes and lines up after it
    assert a.state is JobState.RUNNING and b.state is JobState.RUNNING and order == ["sleeper computes"]
    release.set()
    assert a.wait(TIMEOUT_S) and b.wait(TIMEOUT_S)
    assert order == ["sleeper computes", "sleeper is back", "fresh starts"]


def test_sleep_ends_early_for_cancel_and_pause(make_runner):
    runner = make_runner()

    def nap(ctx: JobContext) -> None:
        while True:
            ctx.checkpoint()
            ctx.publish("awake")
            ctx.sleep(30.0)

    job = runner.submit(nap)
    wait_until(lambda: job.state is JobState.SLEEPING)
    job.pause()
    wait_until(lambda: job.state is JobState.PAUSED, timeout=1.0)
    assert runner.stats()["running"] == 0  # paused: no longer admitted
    job.resume()
    wait_until(lambda: job.state is JobState.SLEEPING, timeout=1.0)
    job.cancel()
    assert job.wait(1.0) and job.state is JobState.CANCELLED


def test_compute_limit_stops_a_job_and_sleeping_or_paused_time_is_free(make_runner):
    runner = make_runner(max_job_s=0.1)
    hog = runner.submit(spin([0], 0))
    assert hog.wait(TIMEOUT_S) and hog.state is JobState.FAILED
    assert hog.error == "stopped: it used its compute limit of 0.1 s (max_job_s)"
    assert 0.1 <= hog.compute_s < 1.0

    def paced(ctx: JobContext) -> str:
        for _ in range(6):
            ctx.checkpoint()
            ctx.sleep(0.05)  # 0.3 s of wall time, almost no compute
        return "done"

    sleeper = runner.submit(paced)
    paused = runner.submit(paced, start_paused=True)
    wait_until(lambda: paused.state is JobState.PAUSED)
    time.sleep(0.15)
    paused.resume()
    assert sleeper.wait(TIMEOUT_S) and sleeper.state is JobState.DONE, sleeper.error
    assert paused.wait(TIMEOUT_S) and paused.state is JobState.DONE, paused.error


def test_jobs_with_one_key_are_one_computation_shared_by_their_watchers(make_runner):
    runner = make_runner(max_running=1, max_queue=0)
    release = threading.Event()
    calls = []

    def sweep(ctx: JobContext) -> str:
        calls.append(1)
        return gate(release)(ctx)

    first = runner.submit(sweep, key="sweep:w=8..64", owner="alice", name="sweep")
    second = runner.submit(sweep, key="sweep:w=8..64", owner="bob")  # no Busy: nothing new to admit
    assert second is first and first.watchers == {"alice", "bob"}
    assert runner.jobs(owner="bob") == [first]
    wait_until(lambda: first.snapshot == "holding")
    first.cancel(owner="alice")  # alice leaves; bob still watches
    first.release("nobody")
    time.sleep(0.05)
    assert first.state is JobState.RUNNING and first.watchers == {"bob"}
    first.release("bob")  # the last watcher leaves: cancelled
    assert first.wait(1.0) and first.state is JobState.CANCELLED and calls == [1]
    again = runner.submit(sweep, key="sweep:w=8..64", owner="carol")  # a finished key starts afresh
    assert again is not first
    release.set()
    assert again.wait(TIMEOUT_S) and again.state is JobState.DONE and calls == [1, 1]


def test_a_shared_job_lives_while_any_watcher_touches_it(make_runner):
    runner = make_runner(orphan_timeout=0.1, max_running=2)
    release = threading.Event()
    job = runner.submit(gate(release), key="k", owner="a")
    assert runner.submit(gate(release), key="k", owner="b") is job
    for _ in range(3):
        time.sleep(0.06)
        job.touch()  # only b's tab still polls
        assert runner.reap() == []
    time.sleep(0.15)
    assert runner.reap() == [job] and job.wait(1.0) and job.state is JobState.CANCELLED


def test_a_page_draws_its_start_state_while_every_place_is_taken(make_runner):
    runner = make_runner(max_running=1, max_jobs=1, slice_s=0.05, max_queue=5)
    release = threading.Event()
    runner.submit(spin([0], 0))  # admitted and computing
    job = runner.submit(gate(release), start_paused=True)
    wait_until(lambda: job.state is JobState.PAUSED and job.snapshot == "holding", timeout=1.0)
    assert runner.stats()["running"] == 1  # the start state took a slice, not a place
    job.resume()
    assert job.state is JobState.QUEUED and job.queue_position == 1


def test_queue_eta_comes_from_progress_rates_and_recent_durations(make_runner):
    runner = make_runner(max_running=1, max_queue=5)
    release = threading.Event()
    blind = runner.submit(gate(release))
    behind = runner.submit(gate(release))
    assert behind.queue_position == 1 and behind.queue_eta_s is None  # nothing to estimate from yet
    release.set()
    assert blind.wait(TIMEOUT_S) and behind.wait(TIMEOUT_S)

    def quick(ctx: JobContext) -> None:
        ctx.checkpoint()
        time.sleep(0.1)

    done = runner.submit(quick)
    assert done.wait(TIMEOUT_S)  # admitted times so far: ~0, ~0, ~0.1 s
    mean = sum(runner._durations) / len(runner._durations)
    hold = threading.Event()
    quarter = runner.submit(gate(hold, progress=0.25))
    wait_until(lambda: quarter.progress == 0.25)
    time.sleep(0.2)
    first, second = runner.submit(gate(hold)), runner.submit(gate(hold))
    eta1, eta2 = first.queue_eta_s, second.queue_eta_s
    assert eta1 is not None and eta2 is not None
    assert 0.5 <= eta1 <= 1.5  # ~0.2 s for a quarter: ~0.6 s for the rest
    assert eta2 == pytest.approx(eta1 + mean, abs=0.05)  # then one mean duration for the first in line
    hold.set()


def test_out_of_memory_fails_plainly_frees_memory_and_the_next_job_works(make_runner, monkeypatch):
    freed = []
    monkeypatch.setattr(jobs_module, "free_memory", lambda: freed.append(True))
    runner = make_runner(max_running=1)

    def too_big(ctx: JobContext) -> None:
        ctx.checkpoint()
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 15.7 GiB total)")

    def mps_too_big(ctx: JobContext) -> None:
        raise RuntimeError("MPS backend out of memory (MPS allocated: 9.1 GB)")

    def fits(ctx: JobContext) -> float:
        ctx.checkpoint()
        return float(torch.ones(64, 64).sum())

    for fn in (too_big, mps_too_big):
        job = runner.submit(fn)
        assert job.wait(TIMEOUT_S) and job.state is JobState.FAILED
        assert job.error.startswith("the GPU ran out of memory for this run") and "smaller batch" in job.error
    assert "2.00 GiB" in runner.jobs()[0].error
    assert len(freed) == 2
    nxt = runner.submit(fits)
    assert nxt.wait(TIMEOUT_S) and nxt.state is JobState.DONE and nxt.result == 4096.0
    other = runner.submit(lambda ctx: (_ for _ in ()).throw(RuntimeError("shape mismatch")))
    assert other.wait(TIMEOUT_S) and other.error == "RuntimeError: shape mismatch" and len(freed) == 2


def test_step_of_a_paused_job_runs_one_unit_and_gives_its_place_back(make_runner):
    runner = make_runner(max_running=1)
    units = [0]

    def unit(ctx: JobContext) -> None:
        while True:
            ctx.checkpoint()
            units[0] += 1

    job = runner.submit(unit, start_paused=True)
    wait_until(lambda: job.state is JobState.PAUSED)
    job.step()
    wait_until(lambda: units[0] == 1 and job.state is JobState.PAUSED)
    assert runner.stats()["running"] == 0
    other = runner.submit(lambda ctx: "free place")
    assert other.wait(TIMEOUT_S) and other.result == "free place"


def test_a_live_run_back_from_its_sleep_waits_only_a_tenth_of_a_slice(make_runner):
    runner = make_runner(max_running=2, max_jobs=1, slice_s=0.5)
    sweep, epochs = [0], [0]
    runner.submit(spin(sweep, 0))
    wait_until(lambda: sweep[0] > 0)

    def live(ctx: JobContext) -> None:
        while True:
            ctx.checkpoint()
            epochs[0] += 1
            ctx.sleep(0.1)  # 10 epochs/s asked

    runner.submit(live)
    wait_until(lambda: epochs[0] > 0)  # its first slot: a whole slice at most (it had not started)
    start = epochs[0]
    time.sleep(1.0)
    assert epochs[0] - start >= 6, epochs  # waiting a whole 0.5 s slice each time would give ~2
    assert sweep[0] > 300  # and the sweep keeps most of the slot


def test_jobs_of_sessions_that_are_gone_are_released_after_a_grace_period() -> None:
    """A closed tab's training stops within the grace period; a shared job lives on for the sessions still there."""

    runner = JobRunner(max_running=2, orphan_timeout=60)
    try:
        def forever(ctx):
            while True:
                ctx.checkpoint()
                ctx.sleep(0.01)

        mine = runner.submit(forever, owner="gone")
        shared = runner.submit(forever, owner="gone", key="k")
        assert runner.submit(forever, owner="here", key="k") is shared
        assert runner.release_gone({"here"}, grace_s=0.2) == 0  # just noticed: within the grace period
        time.sleep(0.25)
        assert runner.release_gone({"here"}, grace_s=0.2) == 2
        assert mine.wait(5) and mine.state.value == "cancelled"
        assert not shared.is_final and shared.watchers == frozenset({"here"})
    finally:
        runner.shutdown()
