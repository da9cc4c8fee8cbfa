"""Run training in background threads that pages poll, pause, single-step and cancel: a fair, bounded scheduler.

Three limits, all from the settings (explorer/core/settings.py):
- admission (`max_running`): jobs started, not paused and not final. They compute, sleep between paced epochs
  (`JobContext.sleep`) or wait for their turn of a compute slot. Others wait QUEUED, in order, at most `max_queue`
  of them; one more gets `Busy` ("the server is busy, try again in a minute").
- compute slots (`max_jobs`): jobs computing at this instant. Slots go FIFO; a job that slept or was paused
  gets one before jobs that never started, and a job that computed `slice_s` while another waits gives its slot
  up at its next checkpoint and goes to the back (round robin), so a sweep cannot starve live runs nor they it.
  A job back from a sleep (a paced live run's next epoch) waits at most RETURNING_SLICE of a slice.
- compute time (`max_job_s`): time holding a slot; a job past it FAILS at its next checkpoint. Sleeping and paused
  jobs use none.

A job started paused runs up to its first checkpoint (its start state, for the page to draw) on a compute slot
but without admission, so opening a page never queues. Jobs submitted with a `key` are shared: a second submit
with the same key returns the unfinished job, and it is cancelled only when its last watcher `release()`s it or
when nobody touched it for `orphan_timeout`. `portable=True` jobs (a top-level function and picklable arguments)
run as Ray tasks when the runner's backend is Ray (explorer/core/ray_jobs.py).
"""

from __future__ import annotations

import atexit
import collections
import heapq
import logging
import os
import threading
import time
import uuid
from enum import Enum
from typing import TYPE_CHECKING, Any, Callable

from explorer.core.report import Reporter
from explorer.core.settings import Settings
from explorer.core.settings import current as current_settings
from explorer.core.status import free_memory, is_out_of_memory, out_of_memory_message, start_status_log

if TYPE_CHECKING:
    from explorer.core.ray_jobs import RayBackend

log = logging.getLogger(__name__)

RECENT_DURATIONS = 20  # finished jobs whose admitted time feeds the queue's estimate
RETURNING_SLICE = 0.1  # share of slice_s after which a slot holder yields to a job back from sleep or pause


class JobState(str, Enum):
    """Where a job is in its life; DONE, FAILED and CANCELLED are final."""

    QUEUED = "queued"  # waiting to be admitted (max_running jobs are)
    RUNNING = "running"  # admitted: computing, or waiting for its turn of a compute slot
    SLEEPING = "sleeping"  # admitted, in ctx.sleep between paced steps, holding no compute slot
    PAUSED = "paused"  # waiting at a checkpoint, holding neither admission nor a slot
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


FINAL_STATES = frozenset({JobState.DONE, JobState.FAILED, JobState.CANCELLED})


class Cancelled(Exception):
    """Raised by `JobContext.checkpoint()` inside a job that was cancelled."""


class Busy(RuntimeError):
    """The admission queue is full; str() is the sentence for the visitor (plain text)."""


class _Stopped(Exception):
    """Raised at a checkpoint of a job that used its compute limit; the message is for the visitor."""


class JobContext(Reporter):
    """The job function's handle, a Reporter: checkpoints to obey, a pacing sleep and a channel for progress.

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
            return job._pausing()

    def checkpoint(self) -> None:
        """Call before each unit of work: raises Cancelled, waits while paused or queued, honours step(),
        yields the compute slot when its slice is up, and stops a job past its compute limit."""
        self._job._checkpoint()

    def sleep(self, seconds: float) -> None:
        """Wait `seconds` without holding a compute slot (the job stays admitted); returns early when the job
        is cancelled or pausing, then takes a slot again, before jobs that have not started. Call checkpoint()
        next, which pauses or raises Cancelled."""
        self._job._sleep(seconds)

    def publish(
        self, snapshot: Any = None, *, progress: float | None = None, message: str | None = None
    ) -> None:
        """Replace the newest snapshot, progress in [0, 1] and message; None keeps a field."""
        self._job._publish(snapshot, progress, message)


JobFn = Callable[[JobContext], Any]


class Job:
    """One function running in its own daemon thread; every accessor is thread-safe.

    All jobs of a runner share its lock (each has its own condition on it), so the scheduler sees one state.
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        runner: JobRunner,
        *,
        name: str = "",
        owner: str | None = None,
        start_paused: bool = False,
        key: str | None = None,
        args: tuple = (),
        remote: bool = False,
    ) -> None:
        self.id = uuid.uuid4().hex[:12]
        self.name = name or getattr(fn, "__name__", "job")
        self.owner = owner
        self.key = key
        self.created = time.time()
        self._fn = fn
        self._args = args
        self._runner = runner
        self._remote = remote  # runs as a Ray task: admitted here, computes on the cluster, holds no local slot
        self._cond = threading.Condition(runner._lock)
        self._watchers: set[str] = {owner} if owner is not None else set()
        self._state = JobState.QUEUED
        self._pause_requested = start_paused
        self._prelude = start_paused  # started paused: runs to its first checkpoint on a slot, without admission
        self._steps = 0  # checkpoints allowed to pass while paused, granted by step()
        self._cancel_requested = False
        self._admitted = False
        self._holds_slot = False
        self._slot_lane: collections.deque[Job] | None = None  # the slot queue it waits in, if any
        self._slot_wait_since = 0.0  # monotonic: when it lined up for a slot
        self._slot_since = 0.0  # monotonic: when it got its slot (the round-robin slice counts from here)
        self._compute_s = 0.0  # slot time of finished slices
        self._remote_since: float | None = None  # monotonic: when its Ray task started computing
        self._admitted_since = 0.0
        self._admitted_s = 0.0  # admitted time of earlier stretches (between pauses)
        self._queued_since = 0.0
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

    # --- what pages read ---------------------------------------------------------------------------
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
        """Why it FAILED ('ExceptionType: message', or a sentence for the compute limit and out of memory)."""
        with self._cond:
            return self._error

    @property
    def started(self) -> float | None:
        """time.time() when the job first got a compute slot (or its Ray task was sent)."""
        with self._cond:
            return self._started

    @property
    def finished(self) -> float | None:
        """time.time() when the job reached a final state."""
        with self._cond:
            return self._finished

    @property
    def last_seen(self) -> float:
        """time.time() of the last touch() by any watcher; jobs nobody watches get reaped."""
        with self._cond:
            return self._last_seen

    @property
    def remote(self) -> bool:
        """True when the job runs as a Ray task (portable, on a Ray runner): it cannot be paused."""
        return self._remote

    @property
    def watchers(self) -> frozenset[str]:
        """The owners sharing this job (the submitter and every session that submitted the same key)."""
        with self._cond:
            return frozenset(self._watchers)

    @property
    def compute_s(self) -> float:
        """Compute seconds used so far: time holding a slot (for a Ray task, its running time)."""
        with self._cond:
            return self._compute_used(time.monotonic())

    @property
    def queue_position(self) -> int | None:
        """1-based place among the jobs waiting for admission; None when not QUEUED."""
        with self._cond:
            if self._state is not JobState.QUEUED:
                return None
            try:
                return self._runner._admission.index(self) + 1
            except ValueError:
                return None

    @property
    def queue_eta_s(self) -> float | None:
        """Estimated seconds until admission, from the admitted jobs' progress rates and the mean admitted time of
        recently finished jobs; None when not QUEUED or there is nothing to estimate from."""
        with self._cond:
            position = self.queue_position
            return None if position is None else self._runner._eta_locked(position)

    # --- what pages do -----------------------------------------------------------------------------
    def touch(self) -> None:
        """Mark the job as watched; pages call this on every poll."""
        with self._cond:
            self._last_seen = time.time()

    def pause(self) -> None:
        """Pause at the next checkpoint, giving admission and the compute slot back (ignored for a Ray task)."""
        with self._cond:
            if self._remote or self._state in FINAL_STATES:
                return
            self._pause_requested = True
            self._steps = 0
            if self._state is JobState.QUEUED and not self._prelude:
                self._to_paused()  # leave the queue now, so the places behind move up at once
            self._cond.notify_all()

    def resume(self) -> None:
        """Run freely again; raises Busy (and stays paused) when it would have to queue behind a full queue."""
        with self._cond:
            if self._state in FINAL_STATES or not self._pause_requested:
                return
            self._want_admission()
            self._pause_requested = False
            self._steps = 0
            self._cond.notify_all()

    def step(self) -> None:
        """Let a paused job pass one more checkpoint (one unit of work); on a running job, pause.

        Raises Busy when a paused job would have to queue behind a full queue."""
        with self._cond:
            if self._state in FINAL_STATES or self._remote:
                return
            if self._pause_requested:
                self._want_admission()
                self._steps += 1
            self._pause_requested = True
            self._cond.notify_all()

    def cancel(self, owner: str | None = None) -> None:
        """Stop the job at its next checkpoint, or at once if it is queued, sleeping or paused.

        With `owner`, it is that watcher leaving (release): a shared job goes on while others watch it."""
        if owner is not None:
            self.release(owner)
            return
        with self._cond:
            if self._state not in FINAL_STATES:
                self._cancel_requested = True  # a Ray task's thread sees it within a poll and cancels the task
                self._cond.notify_all()

    def release(self, owner: str) -> None:
        """`owner` stops watching; the job is cancelled when no watcher is left (a shared job lives on)."""
        with self._cond:
            self._watchers.discard(owner)
            last = not self._watchers
        if last:
            self.cancel()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the job's thread has ended; True when it reached a final state in time."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def __repr__(self) -> str:
        return f"Job(id={self.id!r}, name={self.name!r}, state={self.state.value})"

    # --- the job's thread --------------------------------------------------------------------------
    def _run(self) -> None:
        """The thread body: wait for admission and a slot, run the function, record how it ended."""
        oom = False
        try:
            ctx = JobContext(self)
            if self._prelude:
                self._prelude_slot()
            else:
                self._checkpoint()
            if self._remote:
                backend = self._runner._backend
                assert backend is not None
                result = backend.run(ctx, self._fn, self._args, self._remote_started)
            else:
                result = self._fn(ctx, *self._args)
        except Cancelled:
            self._finish(JobState.CANCELLED)
        except _Stopped as exc:
            log.info("job %s (%s) stopped: %s", self.id, self.name, exc)
            self._finish(JobState.FAILED, error=str(exc))
        except BaseException as exc:  # a job's failure is reported through its state, never lost
            oom = is_out_of_memory(exc)
            log.exception("job %s (%s) failed%s", self.id, self.name, " (out of memory)" if oom else "")
            error = out_of_memory_message(exc) if oom else f"{type(exc).__name__}: {exc}"
            self._finish(JobState.FAILED, error=error)
        else:
            # A function that noticed ctx.cancelled and returned early has only a partial result.
            self._finish(JobState.CANCELLED if self._cancel_requested else JobState.DONE, result)
        if oom:
            free_memory()  # out of the except block: its traceback no longer holds the run's tensors

    def _prelude_slot(self) -> None:
        """A job started paused: take a slot (before jobs that never started) to run to its first checkpoint."""
        with self._cond:  # submit made it RUNNING (a resume since then may have queued it: left as it is)
            self._runner._request_slot(self, first=False)
            while not self._holds_slot:
                if self._cancel_requested:
                    raise Cancelled
                self._cond.wait()

    def _checkpoint(self) -> None:
        """Pass, or raise (cancelled, compute limit), or wait (paused, queued, no slot, slice up) and pass."""
        runner = self._runner
        with self._cond:
            while True:
                if self._cancel_requested:
                    raise Cancelled
                now = time.monotonic()
                if self._compute_used(now) > runner.max_job_s:
                    raise _Stopped(f"stopped: it used its compute limit of {runner.max_job_s:g} s (max_job_s)")
                if self._pausing():
                    self._to_paused()
                    self._cond.wait()
                    continue
                if not self._admitted:  # queued (resume/step/submit put it in the queue): no slot meanwhile
                    if self._state is not JobState.QUEUED:  # invariant broken: never wait for nothing
                        runner._queue_or_admit(self, busy=False)
                    runner._drop_slot(self)
                    if not self._admitted:
                        self._cond.wait()
                        continue
                if self._remote:
                    break
                if not self._holds_slot:
                    runner._request_slot(self, first=self._started is None)
                    if not self._holds_slot:
                        self._cond.wait()
                        continue
                elif runner._slice_up(now - self._slot_since):
                    runner._drop_slot(self)  # round robin: to the back of the line
                    runner._request_slot(self, first=True)
                    continue
                break
            if self._pause_requested and self._steps > 0:
                self._steps -= 1

    def _sleep(self, seconds: float) -> None:
        """JobContext.sleep: give the slot up, keep admission, wake early if cancelled or pausing, take a slot."""
        if not seconds > 0:
            return
        runner = self._runner
        with self._cond:
            if self._cancel_requested or self._pausing():
                return
            runner._drop_slot(self)
            if self._state is JobState.RUNNING:
                self._state = JobState.SLEEPING
            deadline = time.monotonic() + seconds
            while not (self._cancel_requested or self._pausing()):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            if self._state is JobState.SLEEPING:
                self._state = JobState.RUNNING
            if self._cancel_requested or self._remote:
                return
            runner._request_slot(self, first=False)
            while not self._holds_slot and not self._cancel_requested:
                self._cond.wait()

    # --- scheduling helpers (the runner's lock held) -----------------------------------------------
    def _pausing(self) -> bool:
        """Paused or about to pause, with no step granted and no cancel."""
        return self._pause_requested and self._steps == 0 and not self._cancel_requested

    def _compute_used(self, now: float) -> float:
        """Compute seconds so far, the current slice (or Ray task) included."""
        used = self._compute_s
        if self._holds_slot:
            used += now - self._slot_since
        if self._remote_since is not None:
            used += now - self._remote_since
        return used

    def _admitted_time(self, now: float) -> float:
        """Seconds spent admitted (computing, sleeping or waiting for a slot), pauses left out."""
        return self._admitted_s + (now - self._admitted_since if self._admitted else 0.0)

    def _want_admission(self) -> None:
        """A paused (or prelude) job asked to run: admit it, queue it, or raise Busy."""
        if not self._admitted and self._state is not JobState.QUEUED:
            self._runner._queue_or_admit(self, busy=True)

    def _to_paused(self) -> None:
        """Give the slot and admission back and become PAUSED."""
        runner = self._runner
        runner._drop_slot(self)
        runner._leave(self)
        self._prelude = False
        if self._state is not JobState.PAUSED:
            self._state = JobState.PAUSED
            self._cond.notify_all()
        runner._dispatch()

    def _remote_started(self) -> None:
        """Its Ray task began computing: from now its running time counts as compute."""
        with self._cond:
            if self._remote_since is None:
                self._remote_since = time.monotonic()

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

    def _finish(self, state: JobState, result: Any = None, error: str | None = None) -> None:
        """Enter a final state, free the slot and admission, and let the next jobs in."""
        runner = self._runner
        with self._cond:
            now = time.monotonic()
            runner._drop_slot(self)
            if self._remote_since is not None:
                self._compute_s += now - self._remote_since
                self._remote_since = None
            was_admitted = self._admitted or self._admitted_s > 0
            runner._leave(self)
            if was_admitted:
                runner._durations.append(self._admitted_s)
            if self.key is not None and runner._keyed.get(self.key) is self:
                del runner._keyed[self.key]
            self._state = state
            self._result = result
            self._error = error
            if state is JobState.DONE:
                self._progress = 1.0
            self._finished = time.time()
            self._cond.notify_all()
            runner._dispatch()


class JobRunner:
    """Admits, queues and schedules jobs on a few compute slots, and cancels those nobody watches."""

    def __init__(
        self,
        max_running: int = 2,
        orphan_timeout: float = 120.0,
        reap_interval: float = 5.0,
        keep_final: float = 3600.0,
        *,
        max_jobs: int | None = None,
        max_queue: int | None = None,
        slice_s: float = 0.5,
        max_job_s: float = float("inf"),
        backend: str | RayBackend = "local",
    ) -> None:
        """max_running: jobs admitted at once; max_jobs: compute slots (default max_running); max_queue: jobs
        waiting for admission (None: no limit); slice_s: round-robin slice; max_job_s: compute limit per job;
        orphan_timeout: seconds without touch() before a job is cancelled; keep_final: seconds a finished job
        is remembered; backend: "local", or "ray" (or a RayBackend) for portable jobs."""
        max_jobs = max_running if max_jobs is None else max_jobs
        if max_running < 1 or max_jobs < 1:
            raise ValueError(f"max_running and max_jobs must be >= 1, got {max_running} and {max_jobs}")
        if max_queue is not None and max_queue < 0:
            raise ValueError(f"max_queue must be >= 0 or None, got {max_queue}")
        if not slice_s > 0 or not max_job_s > 0:
            raise ValueError(f"slice_s and max_job_s must be > 0, got {slice_s} and {max_job_s}")
        if not orphan_timeout > 0 or not reap_interval > 0 or not keep_final >= 0:
            raise ValueError("orphan_timeout and reap_interval must be > 0, keep_final >= 0")
        self.max_running = max_running
        self.max_jobs = max_jobs
        self.max_queue = max_queue
        self.slice_s = slice_s
        self.max_job_s = max_job_s
        self.orphan_timeout = orphan_timeout
        self.keep_final = keep_final
        self._backend = self._make_backend(backend)
        self._lock = threading.RLock()  # one lock for the scheduler and every job's state
        self._jobs: dict[str, Job] = {}
        self._absent_since: dict[str, float] = {}  # watcher -> when release_gone first missed it
        self._keyed: dict[str, Job] = {}  # key -> its unfinished job
        self._admission: collections.deque[Job] = collections.deque()  # QUEUED jobs, first come first
        self._admitted: set[Job] = set()
        self._returning: collections.deque[Job] = collections.deque()  # slot requests of jobs that have started
        self._fresh: collections.deque[Job] = collections.deque()  # never started, or yielded a slice
        self._computing = 0
        self._durations: collections.deque[float] = collections.deque(maxlen=RECENT_DURATIONS)
        self._stopped = threading.Event()
        self._reaper = threading.Thread(
            target=self._reap_loop, args=(reap_interval,), name="job-reaper", daemon=True
        )
        self._reaper.start()

    @staticmethod
    def _make_backend(backend: str | RayBackend) -> RayBackend | None:
        """None for local, a RayBackend for "ray" (imported only then: ray is optional)."""
        if backend == "local":
            return None
        if backend == "ray":
            from explorer.core.ray_jobs import RayBackend

            return RayBackend()
        if isinstance(backend, str):
            raise ValueError(f"backend must be 'local' or 'ray', got {backend!r}")
        return backend

    @property
    def backend(self) -> str:
        """"local" or "ray" (where portable jobs run)."""
        return "local" if self._backend is None else "ray"

    def submit(
        self,
        fn: Callable[..., Any],
        *,
        name: str = "",
        owner: str | None = None,
        start_paused: bool = False,
        key: str | None = None,
        portable: bool = False,
        args: tuple = (),
    ) -> Job:
        """Start fn(ctx, *args) in a new thread: admitted now (RUNNING), else QUEUED, else Busy.

        With `key`, the unfinished job of that key is returned instead (owner joins its watchers). A job
        started paused runs to its first checkpoint (its start state) without admission and never gets Busy.
        `portable`: fn is a top-level function and args picklable, so a Ray runner may run it on the cluster.
        """
        if start_paused and portable:
            raise ValueError("a portable job has no live controls: it cannot start paused")
        with self._lock:
            if self._stopped.is_set():
                raise RuntimeError("this JobRunner has been shut down")
            if key is not None and (shared := self._keyed.get(key)) is not None:
                if owner is not None:
                    shared._watchers.add(owner)
                shared._last_seen = time.time()
                return shared
            job = Job(fn, self, name=name, owner=owner, start_paused=start_paused, key=key, args=tuple(args),
                      remote=portable and self._backend is not None)
            if start_paused:
                job._state = JobState.RUNNING
            else:
                self._queue_or_admit(job, busy=True)
            self._jobs[job.id] = job
            if key is not None:
                self._keyed[key] = job
        job._thread.start()
        return job

    def get(self, job_id: str) -> Job | None:
        """The job with this id, or None if unknown or forgotten."""
        with self._lock:
            return self._jobs.get(job_id)

    def jobs(self, owner: str | None = None) -> list[Job]:
        """All known jobs in submission order, optionally only those an owner submitted or watches."""
        with self._lock:
            jobs = list(self._jobs.values())
            return [job for job in jobs if owner is None or job.owner == owner or owner in job._watchers]

    def release_gone(self, alive: set[str], grace_s: float = 10.0) -> int:
        """Release the watchers that are not in `alive` (the server's connected sessions) and have been gone for
        grace_s (a reconnecting tab keeps its jobs); a job whose last watcher left is cancelled. Returns how many
        watchers were released. The app calls this every few seconds, so a closed tab's training stops within
        about grace_s instead of orphan_timeout."""
        now = time.monotonic()
        released = 0
        absent = self._absent_since
        owners = {w for job in self.jobs() if not job.is_final for w in job.watchers}
        for owner in list(absent):
            if owner in alive or owner not in owners:
                absent.pop(owner, None)
        for owner in owners - alive:
            since = absent.setdefault(owner, now)
            if now - since < grace_s:
                continue
            for job in self.jobs(owner):
                if not job.is_final and owner in job.watchers:
                    log.info("releasing job %s (%s): its session %s is gone", job.id, job.name, owner)
                    job.release(owner)
                    released += 1
            absent.pop(owner, None)
        return released

    def running_count(self) -> int:
        """How many jobs hold a compute slot right now."""
        with self._lock:
            return self._computing

    def stats(self) -> dict[str, Any]:
        """Counts by state, the limits, and how long the oldest queued job has waited (None: nobody waits)."""
        with self._lock:
            now = time.monotonic()
            states = collections.Counter(job._state for job in self._jobs.values())
            oldest = max((now - job._queued_since for job in self._admission), default=None)
            return {
                "queued": len(self._admission),
                "running": len(self._admitted),  # admitted: computing, sleeping, or waiting for a slot
                "computing": self._computing,
                "sleeping": states[JobState.SLEEPING],
                "paused": states[JobState.PAUSED],
                "finished": sum(states[s] for s in FINAL_STATES),
                "remote": sum(job._remote and job._state not in FINAL_STATES for job in self._jobs.values()),
                "max_jobs": self.max_jobs,
                "max_running": self.max_running,
                "max_queue": self.max_queue,
                "slice_s": self.slice_s,
                "max_job_s": self.max_job_s,
                "oldest_wait_s": oldest,
            }

    def forget(self, job_id: str) -> None:
        """Drop a final job from the registry; unknown ids are ignored."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                return
            if job._state not in FINAL_STATES:
                raise ValueError(f"job {job_id} is {job._state.value}; only final jobs can be forgotten")
            self._jobs.pop(job_id, None)

    def reap(self) -> list[Job]:
        """Cancel and return unfinished jobs no watcher touched for orphan_timeout; drop old final ones."""
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

    def wait_stopped(self, timeout: float) -> bool:
        """Sleep up to timeout; True (at once) when the runner has been shut down."""
        return self._stopped.wait(timeout)

    def _reap_loop(self, interval: float) -> None:
        """The reaper thread: reap every interval seconds until shutdown."""
        while not self._stopped.wait(interval):
            try:
                self.reap()
            except Exception:  # a dead reaper would leak every orphan from then on
                log.exception("reaping jobs failed")

    # --- the scheduler (call with the lock held) ---------------------------------------------------
    def busy_message(self) -> str:
        """The visitor's sentence when the queue is full."""
        with self._lock:
            waiting = len(self._admission)
        if waiting == 0:
            return f"The server is busy: all {self.max_running} training places are taken. Try again in a minute."
        noun = "training is" if waiting == 1 else "trainings are"
        return f"The server is busy: {waiting} {noun} waiting. Try again in a minute."

    def _queue_or_admit(self, job: Job, *, busy: bool) -> None:
        """Admit the job if a place is free and nobody queues, else queue it; a full queue raises Busy."""
        if len(self._admitted) < self.max_running and not self._admission:
            self._admit(job)
        elif busy and self.max_queue is not None and len(self._admission) >= self.max_queue:
            raise Busy(self.busy_message())
        else:
            job._state = JobState.QUEUED
            job._queued_since = time.monotonic()
            self._admission.append(job)
        self._dispatch()

    def _admit(self, job: Job) -> None:
        """Make the job RUNNING and admitted, and line it up for a slot."""
        job._admitted = True
        job._admitted_since = time.monotonic()
        self._admitted.add(job)
        job._state = JobState.RUNNING
        if not job._remote:
            self._request_slot(job, first=job._started is None, dispatch=False)  # the caller dispatches
        elif job._started is None:
            job._started = time.time()
        job._cond.notify_all()

    def _leave(self, job: Job) -> None:
        """Give admission back (paused or final), or leave the queue."""
        if job._admitted:
            job._admitted = False
            job._admitted_s += time.monotonic() - job._admitted_since
            self._admitted.discard(job)
        if job._state is JobState.QUEUED:
            try:
                self._admission.remove(job)
            except ValueError:
                pass

    def _request_slot(self, job: Job, *, first: bool, dispatch: bool = True) -> None:
        """Line the job up for a compute slot: `first` (never started, or yielded a slice) behind everyone,
        else (back from sleep, pause or its start state) before those."""
        if job._holds_slot or job._slot_lane is not None:
            return
        job._slot_lane = self._fresh if first else self._returning
        job._slot_lane.append(job)
        job._slot_wait_since = time.monotonic()
        if dispatch:
            self._dispatch()

    def _drop_slot(self, job: Job) -> None:
        """Give the job's slot back, or take it out of the slot line."""
        if job._slot_lane is not None:
            job._slot_lane.remove(job)
            job._slot_lane = None
        if job._holds_slot:
            job._holds_slot = False
            job._compute_s += time.monotonic() - job._slot_since
            self._computing -= 1
            self._dispatch()

    def _slice_up(self, held_s: float) -> bool:
        """Should a job that has held its slot held_s seconds give it up? After slice_s when anyone waits, and
        after RETURNING_SLICE of it when a job back from a sleep or a pause waits (a paced live run's epoch)."""
        if self._returning:
            return held_s >= self.slice_s * RETURNING_SLICE
        return bool(self._fresh) and held_s >= self.slice_s

    def _dispatch(self) -> None:
        """Admit queued jobs into free places, then hand free slots out in order."""
        while self._admission and len(self._admitted) < self.max_running:
            self._admit(self._admission.popleft())
        while self._computing < self.max_jobs and (self._returning or self._fresh):
            # returning jobs first, unless the first fresh one has waited a whole slice (so it never starves)
            aged = self._fresh and time.monotonic() - self._fresh[0]._slot_wait_since >= self.slice_s
            job = (self._fresh if aged or not self._returning else self._returning).popleft()
            job._slot_lane = None
            job._holds_slot = True
            job._slot_since = time.monotonic()
            self._computing += 1
            if job._started is None:
                job._started = time.time()
            job._cond.notify_all()

    def _eta_locked(self, position: int) -> float | None:
        """Seconds until the job at this queue position is admitted, or None without anything to go on."""
        now = time.monotonic()
        mean = sum(self._durations) / len(self._durations) if self._durations else None
        if mean is None:  # nothing finished yet: a queued job is taken to last as long as the running ones will
            totals = [job._admitted_time(now) / job._progress for job in self._admitted
                      if 0 < job._progress < 1 and job._admitted_time(now) > 0]
            mean = sum(totals) / len(totals) if totals else None
        free: list[float] = []
        for job in self._admitted:
            spent = job._admitted_time(now)
            if 0 < job._progress < 1 and spent > 0:
                free.append(spent * (1 - job._progress) / job._progress)
            elif mean is not None:
                free.append(max(mean - spent, 0.0))
            else:
                free.append(float("inf"))
        free += [0.0] * max(self.max_running - len(free), 0)
        heapq.heapify(free)
        for ahead in range(position):
            t = heapq.heappop(free)
            if ahead == position - 1:
                return t if t != float("inf") else None
            if mean is None:
                return None
            heapq.heappush(free, t + mean)
        return None  # pragma: no cover


_default: JobRunner | None = None
_default_lock = threading.Lock()


def runner_settings(settings: Settings | None = None) -> dict[str, Any]:
    """The JobRunner keywords from the settings (explorer/core/settings.py; EXPLORER_MAX_JOBS, ... override)."""
    s = settings if settings is not None else current_settings()
    return {"max_running": s.max_running, "max_jobs": s.max_jobs, "max_queue": s.max_queue, "slice_s": s.slice_s,
            "max_job_s": s.max_job_s, "orphan_timeout": s.orphan_timeout_s}


def default_runner() -> JobRunner:
    """The process-wide runner, configured from the settings on first use; Ray when RAY_ADDRESS is set."""
    global _default
    with _default_lock:
        if _default is None:
            s = current_settings()
            backend = "ray" if os.environ.get("RAY_ADDRESS", "").strip() else "local"
            _default = JobRunner(**runner_settings(s), backend=backend)
            # Stop jobs before the interpreter tears down (a torch op in a daemon thread at exit aborts).
            atexit.register(_default.shutdown, cancel=True, timeout=2.0)
            start_status_log(_default, s.status_log_s)
        return _default
