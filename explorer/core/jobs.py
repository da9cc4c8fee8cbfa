"""Run training in background threads that pages poll, pause, single-step and cancel."""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import uuid
from enum import Enum
from typing import Any, Callable

from explorer.core.report import Reporter

log = logging.getLogger(__name__)

_SLOT_POLL_S = 0.05  # how often a job waiting for a compute slot checks whether it was cancelled


class JobState(str, Enum):
    """Where a job is in its life; DONE, FAILED and CANCELLED are final."""

    QUEUED = "queued"  # waiting for a compute slot
    RUNNING = "running"  # holds a slot and computes
    PAUSED = "paused"  # waiting at a checkpoint, holding no slot
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


FINAL_STATES = frozenset({JobState.DONE, JobState.FAILED, JobState.CANCELLED})


class Cancelled(Exception):
    """Raised by `JobContext.checkpoint()` inside a job that was cancelled."""


class JobContext(Reporter):
    """The job function's handle, a Reporter: checkpoints to obey and a channel to publish progress.

    Compute functions take any Reporter, so a job function passes its context straight in.
    """

    def __init__(self, job: Job) -> None:
        self._job = job

    @property
    def job_id(self) -> str:
        """The id of the job this context belongs to."""
        return self._job.id

    @property
    def cancelled(self) -> bool:
        """True once someone asked the job to stop."""
        return self._job._cancel_requested

    @property
    def pausing(self) -> bool:
        """True when the next checkpoint will wait (paused, no step left): publish before it."""
        job = self._job
        with job._cond:
            return job._pause_requested and job._steps == 0 and not job._cancel_requested

    def checkpoint(self) -> None:
        """Call before each unit of work: raises Cancelled, waits while paused, honours step()."""
        self._job._checkpoint()

    def publish(
        self, snapshot: Any = None, *, progress: float | None = None, message: str | None = None
    ) -> None:
        """Replace the newest snapshot, progress in [0, 1] and message; None keeps a field."""
        self._job._publish(snapshot, progress, message)


JobFn = Callable[[JobContext], Any]


class Job:
    """One function running in its own daemon thread; every accessor is thread-safe."""

    def __init__(
        self,
        fn: JobFn,
        slots: threading.BoundedSemaphore,
        *,
        name: str = "",
        owner: str | None = None,
        start_paused: bool = False,
    ) -> None:
        self.id = uuid.uuid4().hex[:12]
        self.name = name or getattr(fn, "__name__", "job")
        self.owner = owner
        self.created = time.time()
        self._fn = fn
        self._slots = slots  # shared by all jobs of a runner; held only while RUNNING
        self._cond = threading.Condition()
        self._state = JobState.QUEUED
        self._pause_requested = start_paused
        self._steps = 0  # checkpoints allowed to pass while paused, granted by step()
        self._cancel_requested = False
        self._holds_slot = False
        self._snapshot: Any = None
        self._progress = 0.0
        self._message = ""
        self._version = 0
        self._result: Any = None
        self._error: str | None = None
        self._started: float | None = None
        self._finished: float | None = None
        self._last_seen = self.created
        self._thread = threading.Thread(target=self._run, name=f"job-{self.id}", daemon=True)

    @property
    def state(self) -> JobState:
        """The current state."""
        with self._cond:
            return self._state

    @property
    def pause_requested(self) -> bool:
        """True when the job is paused or will pause at its next checkpoint."""
        with self._cond:
            return self._pause_requested

    @property
    def is_final(self) -> bool:
        """True once the job is DONE, FAILED or CANCELLED."""
        with self._cond:
            return self._state in FINAL_STATES

    @property
    def progress(self) -> float:
        """The last published progress in [0, 1]; 1.0 once DONE."""
        with self._cond:
            return self._progress

    @property
    def message(self) -> str:
        """The last published status message."""
        with self._cond:
            return self._message

    @property
    def snapshot(self) -> Any:
        """The newest published snapshot (None before the first)."""
        with self._cond:
            return self._snapshot

    @property
    def version(self) -> int:
        """How many times the job has published; pollers compare it to spot news."""
        with self._cond:
            return self._version

    @property
    def result(self) -> Any:
        """The job function's return value (None until it returns)."""
        with self._cond:
            return self._result

    @property
    def error(self) -> str | None:
        """'ExceptionType: message' when FAILED, else None."""
        with self._cond:
            return self._error

    @property
    def started(self) -> float | None:
        """time.time() when the job first got a compute slot."""
        with self._cond:
            return self._started

    @property
    def finished(self) -> float | None:
        """time.time() when the job reached a final state."""
        with self._cond:
            return self._finished

    @property
    def last_seen(self) -> float:
        """time.time() of the last touch(); jobs nobody watches get reaped."""
        with self._cond:
            return self._last_seen

    def touch(self) -> None:
        """Mark the job as watched; pages call this on every poll."""
        with self._cond:
            self._last_seen = time.time()

    def pause(self) -> None:
        """Pause at the next checkpoint, giving the compute slot back."""
        with self._cond:
            self._pause_requested = True
            self._steps = 0
            self._cond.notify_all()

    def resume(self) -> None:
        """Run freely again."""
        with self._cond:
            self._pause_requested = False
            self._steps = 0
            self._cond.notify_all()

    def step(self) -> None:
        """Let a paused job pass one more checkpoint (one unit of work); on a running job, pause."""
        with self._cond:
            if self._pause_requested:
                self._steps += 1
            self._pause_requested = True
            self._cond.notify_all()

    def cancel(self) -> None:
        """Stop the job at its next checkpoint, or at once if it is queued or paused."""
        with self._cond:
            if self._state not in FINAL_STATES:
                self._cancel_requested = True
                self._cond.notify_all()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the job's thread has ended; True when it reached a final state in time."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def __repr__(self) -> str:
        return f"Job(id={self.id!r}, name={self.name!r}, state={self.state.value})"

    def _run(self) -> None:
        """The thread body: wait for a slot, run the function, record how it ended."""
        try:
            self._acquire_slot()
            result = self._fn(JobContext(self))
        except Cancelled:
            self._finish(JobState.CANCELLED)
        except BaseException as exc:  # a job's failure is reported through its state, never lost
            log.exception("job %s (%s) failed", self.id, self.name)
            self._finish(JobState.FAILED, error=f"{type(exc).__name__}: {exc}")
        else:
            # A function that noticed ctx.cancelled and returned early has only a partial result.
            self._finish(JobState.CANCELLED if self._cancel_requested else JobState.DONE, result)

    def _acquire_slot(self) -> None:
        """Wait (as QUEUED) for a compute slot, then become RUNNING; raises Cancelled meanwhile."""
        while True:
            if self._cancel_requested:
                raise Cancelled
            if self._slots.acquire(timeout=_SLOT_POLL_S):
                break
        with self._cond:
            self._holds_slot = True
            if self._cancel_requested:
                raise Cancelled
            self._state = JobState.RUNNING
            if self._started is None:
                self._started = time.time()
            self._cond.notify_all()

    def _checkpoint(self) -> None:
        """Pass, raise Cancelled, or pause without a slot until resumed, stepped or cancelled."""
        with self._cond:
            if self._cancel_requested:
                raise Cancelled
            if not self._pause_requested:
                return
            if self._steps > 0:
                self._steps -= 1
                return
            self._release_slot()
            self._state = JobState.PAUSED
            self._cond.notify_all()
            self._cond.wait_for(
                lambda: self._cancel_requested or not self._pause_requested or self._steps > 0
            )
            if self._cancel_requested:
                raise Cancelled
            if self._steps > 0:
                self._steps -= 1
            self._state = JobState.QUEUED
        self._acquire_slot()

    def _publish(self, snapshot: Any, progress: float | None, message: str | None) -> None:
        """Store the newest snapshot, progress and message and bump the version."""
        with self._cond:
            if snapshot is not None:
                self._snapshot = snapshot
            if progress is not None:
                self._progress = min(max(float(progress), 0.0), 1.0)
            if message is not None:
                self._message = message
            self._version += 1

    def _release_slot(self) -> None:
        """Give the compute slot back if this job holds one; call with the lock held."""
        if self._holds_slot:
            self._holds_slot = False
            self._slots.release()

    def _finish(self, state: JobState, result: Any = None, error: str | None = None) -> None:
        """Enter a final state and free the slot."""
        with self._cond:
            self._release_slot()
            self._state = state
            self._result = result
            self._error = error
            if state is JobState.DONE:
                self._progress = 1.0
            self._finished = time.time()
            self._cond.notify_all()


class JobRunner:
    """Starts jobs, limits how many compute at once, and cancels those nobody watches."""

    def __init__(
        self,
        max_running: int = 2,
        orphan_timeout: float = 120.0,
        reap_interval: float = 5.0,
        keep_final: float = 3600.0,
    ) -> None:
        if max_running < 1:
            raise ValueError(f"max_running must be >= 1, got {max_running}")
        if not orphan_timeout > 0 or not reap_interval > 0 or not keep_final >= 0:
            raise ValueError("orphan_timeout and reap_interval must be > 0, keep_final >= 0")
        self.max_running = max_running
        self.orphan_timeout = orphan_timeout  # seconds without touch() before a job is cancelled
        self.keep_final = keep_final  # seconds a finished job stays in the registry
        self._slots = threading.BoundedSemaphore(max_running)
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._reaper = threading.Thread(
            target=self._reap_loop, args=(reap_interval,), name="job-reaper", daemon=True
        )
        self._reaper.start()

    def submit(
        self, fn: JobFn, *, name: str = "", owner: str | None = None, start_paused: bool = False
    ) -> Job:
        """Start fn(ctx) in a new thread; it stays QUEUED until a compute slot is free."""
        if self._stopped.is_set():
            raise RuntimeError("this JobRunner has been shut down")
        job = Job(fn, self._slots, name=name, owner=owner, start_paused=start_paused)
        with self._lock:
            self._jobs[job.id] = job
        job._thread.start()
        return job

    def get(self, job_id: str) -> Job | None:
        """The job with this id, or None if unknown or forgotten."""
        with self._lock:
            return self._jobs.get(job_id)

    def jobs(self, owner: str | None = None) -> list[Job]:
        """All known jobs in submission order, optionally only one owner's."""
        with self._lock:
            jobs = list(self._jobs.values())
        return [job for job in jobs if owner is None or job.owner == owner]

    def running_count(self) -> int:
        """How many jobs hold a compute slot right now."""
        return sum(job.state is JobState.RUNNING for job in self.jobs())

    def forget(self, job_id: str) -> None:
        """Drop a final job from the registry; unknown ids are ignored."""
        job = self.get(job_id)
        if job is None:
            return
        if not job.is_final:
            raise ValueError(f"job {job_id} is {job.state.value}; only final jobs can be forgotten")
        with self._lock:
            self._jobs.pop(job_id, None)

    def reap(self) -> list[Job]:
        """Cancel and return unfinished jobs untouched for orphan_timeout; drop old final ones."""
        now = time.time()
        orphans = []
        for job in self.jobs():
            if job.is_final:
                if now - (job.finished or now) > self.keep_final:
                    self.forget(job.id)
            elif now - job.last_seen > self.orphan_timeout:
                log.info("cancelling orphaned job %s (%s)", job.id, job.name)
                job.cancel()
                orphans.append(job)
        return orphans

    def shutdown(self, cancel: bool = True, timeout: float = 5.0) -> None:
        """Stop the reaper, optionally cancel every job, and wait up to timeout for them."""
        self._stopped.set()
        jobs = self.jobs()
        if cancel:
            for job in jobs:
                job.cancel()
        deadline = time.monotonic() + timeout
        for job in jobs:
            job.wait(max(0.0, deadline - time.monotonic()))

    def _reap_loop(self, interval: float) -> None:
        """The reaper thread: reap every interval seconds until shutdown."""
        while not self._stopped.wait(interval):
            try:
                self.reap()
            except Exception:  # a dead reaper would leak every orphan from then on
                log.exception("reaping jobs failed")


_default: JobRunner | None = None
_default_lock = threading.Lock()


def default_runner() -> JobRunner:
    """The process-wide runner, configured on first use from the environment."""
    global _default
    with _default_lock:
        if _default is None:
            max_running, orphan_timeout = _limits_from_env()
            _default = JobRunner(max_running=max_running, orphan_timeout=orphan_timeout)
            # Stop jobs before the interpreter tears down (a torch op in a daemon thread at exit aborts).
            atexit.register(_default.shutdown, cancel=True, timeout=2.0)
        return _default


def _limits_from_env() -> tuple[int, float]:
    """EXPLORER_MAX_JOBS (default 2) and EXPLORER_ORPHAN_TIMEOUT_S (default 120), validated."""
    raw_jobs = os.environ.get("EXPLORER_MAX_JOBS", "").strip() or "2"
    try:
        max_jobs = int(raw_jobs)
    except ValueError:
        raise ValueError(f"EXPLORER_MAX_JOBS must be an integer >= 1, got {raw_jobs!r}") from None
    if max_jobs < 1:
        raise ValueError(f"EXPLORER_MAX_JOBS must be an integer >= 1, got {raw_jobs!r}")
    raw_timeout = os.environ.get("EXPLORER_ORPHAN_TIMEOUT_S", "").strip() or "120"
    try:
        timeout = float(raw_timeout)
    except ValueError:
        timeout = float("nan")
    if not timeout > 0:
        raise ValueError(
            f"EXPLORER_ORPHAN_TIMEOUT_S must be a number of seconds > 0, got {raw_timeout!r}"
        )
    return max_jobs, timeout
