"""Portable jobs on a Ray cluster: a department puts several GPU machines behind one app.

A runner built with backend="ray" (default_runner() does so when RAY_ADDRESS is set) sends each job submitted
with `portable=True` (a top-level function and picklable arguments, no live controls: sweeps) to the cluster as
a Ray task, `fn(ctx, *args)`. The job stays admitted on the server (it counts against max_running) but holds no
local compute slot. In the task, `ctx` is a RemoteContext: what it publishes goes, at most every
PUBLISH_EVERY_S, to a small channel actor that the job's local thread polls and republishes, so pages see the
task's progress as for any job. Cancelling the job (or its compute limit) maps to `ray.cancel`; an exception in
the task fails the job with the task's own exception. Live jobs (the playground) always run locally.

Conventions as in explorer/labs/double_descent/run.py (`--backend ray`): with RAY_ADDRESS set, `ray.init()` joins
that cluster; without, a local instance is started without a dashboard. The task's return value travels back,
so it must be picklable; results written to the worker's own disk stay there.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any, Callable

from explorer.core.report import Reporter

POLL_S = 0.1  # how often the local thread looks for the task's news, its end, and a cancel
CANCEL_GRACE_S = 2.0  # how long a cancelled task has to end on its interrupt before its worker is killed


def _stop(ray: Any, ref: Any, grace_s: float = CANCEL_GRACE_S) -> None:
    """Cancel a task: an interrupt first, so it can clean up; if it has not ended after grace_s, its worker process
    is killed (ray.cancel force=True). An interrupt can be lost, for instance when it lands while the task sends its
    news, and the task would then hold its CPU for good (seen in CI: a cancelled task still running 50 s later)."""
    ray.cancel(ref)
    ready, _ = ray.wait([ref], timeout=grace_s)
    if not ready:
        ray.cancel(ref, force=True)
PUBLISH_EVERY_S = 0.2  # the task sends its newest progress at most this often (and once at the end)


class RemoteContext:
    """The Reporter a portable job gets inside a Ray task: publish reaches the server's Job; no live controls.

    Cancellation arrives as Ray's cancel (an interrupt in the task), so checkpoint() only sends news."""

    cancelled = False
    pausing = False

    def __init__(self, channel: Any) -> None:
        self._channel = channel
        self._pending: dict[str, Any] = {}
        self._sent = 0.0

    def publish(
        self, snapshot: Any = None, *, progress: float | None = None, message: str | None = None
    ) -> None:
        """Keep the newest snapshot, progress and message; send them if PUBLISH_EVERY_S has passed."""
        for field, value in (("snapshot", snapshot), ("progress", progress), ("message", message)):
            if value is not None:
                self._pending[field] = value
        self._send()

    def checkpoint(self) -> None:
        """Send news that is due; pausing is not supported and cancelling interrupts the task."""
        self._send()

    def sleep(self, seconds: float) -> None:
        """Wait (the task holds its cluster resources meanwhile)."""
        if seconds > 0:
            time.sleep(seconds)

    def _send(self, final: bool = False) -> None:
        """Hand pending news to the channel: at most every PUBLISH_EVERY_S, and the last one synchronously."""
        now = time.monotonic()
        if not self._pending or (not final and now - self._sent < PUBLISH_EVERY_S):
            return
        update, self._pending, self._sent = self._pending, {}, now
        ref = self._channel.put.remote(update)
        if final:
            import ray

            ray.get(ref)  # delivered before the task's result is: the last progress is never lost


def _run_remote(channel: Any, fn: Callable[..., Any], args: tuple) -> Any:
    """The Ray task: say it started, run fn(ctx, *args), send the last news."""
    channel.put.remote({"started": True})
    ctx = RemoteContext(channel)
    try:
        return fn(ctx, *args)
    finally:
        ctx._send(final=True)


class _Channel:
    """A tiny actor between a task and its local job: the newest fields, taken (and cleared) by the job."""

    def __init__(self) -> None:
        self._update: dict[str, Any] = {}

    def put(self, update: dict[str, Any]) -> None:
        """Merge newer fields over older ones."""
        self._update.update(update)

    def take(self) -> dict[str, Any]:
        """The fields sent since the last take."""
        update, self._update = self._update, {}
        return update


class RayBackend:
    """Runs portable jobs as Ray tasks; `address` (else RAY_ADDRESS) names the cluster, else a local instance."""

    def __init__(self, address: str | None = None, num_cpus: float = 1, num_gpus: float = 0.0) -> None:
        """num_cpus / num_gpus: what each task asks the cluster for (fractions of a GPU share it)."""
        self.address = address
        self.num_cpus = num_cpus
        self.num_gpus = num_gpus
        self._lock = threading.Lock()
        self._task: Any = None
        self._channel: Any = None

    def _ray(self) -> Any:
        """The ray module, initialised once (joining the cluster, or a local instance)."""
        import ray

        with self._lock:
            if not ray.is_initialized():
                address = self.address or os.environ.get("RAY_ADDRESS", "").strip() or None
                if address:
                    ray.init(address=address, log_to_driver=False, ignore_reinit_error=True)
                else:
                    ray.init(include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
            if self._task is None:
                self._task = ray.remote(num_cpus=self.num_cpus, num_gpus=self.num_gpus)(_run_remote)
                self._channel = ray.remote(num_cpus=0)(_Channel)
        return ray

    def run(self, ctx: Reporter, fn: Callable[..., Any], args: tuple, on_start: Callable[[], None]) -> Any:
        """Run fn(ctx, *args) as a Ray task from the job's thread; its news goes to ctx, its result is returned.

        ctx (the job's JobContext) raises at checkpoint() when the job was cancelled or used its compute limit;
        the task is then cancelled. on_start() is called when the task starts computing. The task's own
        exception is raised here."""
        ray = self._ray()
        from ray.exceptions import RayTaskError, TaskCancelledError

        channel = self._channel.remote()
        ref = self._task.remote(channel, fn, tuple(args))
        try:
            while True:
                ready, _ = ray.wait([ref], timeout=POLL_S)
                self._deliver(ctx, ray.get(channel.take.remote()), on_start)
                if ready:
                    break
                try:
                    ctx.checkpoint()
                except BaseException:
                    _stop(ray, ref)
                    raise
            try:
                return ray.get(ref)
            except (TaskCancelledError, RayTaskError) as err:
                cause = getattr(err, "cause", None)
                if isinstance(err, TaskCancelledError) or isinstance(cause, KeyboardInterrupt):
                    ctx.checkpoint()  # only a cancelled job's task is cancelled: this raises its Cancelled
                if isinstance(cause, BaseException):
                    raise cause from None
                raise
        finally:
            try:
                ray.kill(channel)
            except Exception:  # the cluster went away: nothing left to free
                pass

    @staticmethod
    def _deliver(ctx: Reporter, update: dict[str, Any], on_start: Callable[[], None]) -> None:
        """Republish the task's news on the local job; its start starts the compute clock."""
        if update.pop("started", False):
            on_start()
        if update:
            ctx.publish(update.get("snapshot"), progress=update.get("progress"), message=update.get("message"))
