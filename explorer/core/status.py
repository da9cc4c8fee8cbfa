"""The server's health in one line: the job queue, sessions, memory and device memory; and out-of-memory help.

`status_line(runner, sessions)` is what an operator reads (the log every `status_log_s`, `python -m explorer
info`); `start_status_log` writes it from a daemon thread. `is_out_of_memory` / `free_memory` /
`out_of_memory_message` let the job runner and the evaluation turn a device's out-of-memory error into a plain
message or a retry, and leave the memory to the next job.
"""

from __future__ import annotations

import gc
import logging
import os
import re
import sys
import threading
import weakref
from typing import Any, Callable, Protocol

log = logging.getLogger("explorer.status")

SessionsFn = Callable[[], "int | None"]


class JobRunner(Protocol):
    """What the status needs of explorer.core.jobs.JobRunner (not imported: the runner imports this module)."""

    def stats(self) -> dict[str, Any]:
        """Counts by state, limits, the oldest wait."""

    def wait_stopped(self, timeout: float) -> bool:
        """Sleep up to timeout; True once shut down."""

_OOM_WORDS = ("out of memory",)  # CUDA, MPS and most allocators say this; CUDA's error also has its own type
_ALLOC = re.compile(r"[Tt]ried to allocate ([\d.]+ ?[KMGT]i?B)")


def is_out_of_memory(exc: BaseException) -> bool:
    """True for torch.cuda.OutOfMemoryError and a RuntimeError whose message says "out of memory" (MPS, CPU)."""
    torch = sys.modules.get("torch")  # no torch imported: no torch allocation failed
    oom_type = getattr(torch, "OutOfMemoryError", None) if torch is not None else None
    if oom_type is not None and isinstance(exc, oom_type):
        return True
    return isinstance(exc, RuntimeError) and any(w in str(exc).lower() for w in _OOM_WORDS)


def out_of_memory_message(exc: BaseException) -> str:
    """The visitor's sentence for an out-of-memory failure (the allocator's text, with its sizes, goes to the log)."""
    size = _ALLOC.search(str(exc))
    detail = f" (it needed another {size.group(1)})" if size else ""
    return (f"the GPU ran out of memory for this run{detail}: try a smaller batch or width, or fewer points; "
            "the memory was released for the next run.")


def free_memory() -> None:
    """Collect garbage and give cached device memory back (CUDA, MPS), so the next job can allocate it."""
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is None:
        return
    for backend in ("cuda", "mps"):
        module = getattr(torch, backend, None)
        try:
            if module is not None and (backend != "cuda" or module.is_available()):
                module.empty_cache()
        except Exception:  # no such device, or a build without it: nothing cached there
            pass


def process_rss_bytes() -> int | None:
    """This process's resident memory (Linux /proc/self/statm; elsewhere the peak from resource), or None."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError, AttributeError):
        pass
    try:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return int(peak) * (1 if sys.platform == "darwin" else 1024)  # bytes on macOS, kB on Linux
    except (ImportError, OSError, ValueError):
        return None


def device_memory() -> list[tuple[str, int, int, int]]:
    """(device, allocated by torch, used on the device, total) bytes per CUDA device; [] without CUDA."""
    torch = sys.modules.get("torch")
    out: list[tuple[str, int, int, int]] = []
    try:
        if torch is None or not torch.cuda.is_available():
            return out
        for i in range(torch.cuda.device_count()):
            free, total = torch.cuda.mem_get_info(i)
            out.append((f"cuda:{i}", int(torch.cuda.memory_allocated(i)), int(total - free), int(total)))
    except Exception:  # a driver error must not break the status line
        log.debug("reading device memory failed", exc_info=True)
    return out


def _gb(n: int) -> str:
    """Bytes as GB with one decimal."""
    return f"{n / 1e9:.1f} GB"


def status_line(runner: JobRunner, sessions: int | None = None) -> str:
    """'jobs: 3 queued (oldest waits 12 s), 6 running (2 computing, 4 sleeping), 1 paused, ... · memory ...'."""
    s = runner.stats()
    queued = f"{s['queued']} queued" + (f" (oldest waits {s['oldest_wait_s']:.0f} s)" if s["queued"] else "")
    queue_cap = "unbounded" if s["max_queue"] is None else str(s["max_queue"])
    parts = [f"jobs: {queued}, {s['running']} running ({s['computing']} computing, {s['sleeping']} sleeping"
             + (f", {s['remote']} on Ray" if s["remote"] else "") + f"), {s['paused']} paused, "
             f"{s['finished']} finished; limits {s['max_jobs']} slots / {s['max_running']} admitted / "
             f"{queue_cap} queued"]
    if sessions is not None:
        parts.append(f"sessions: {sessions}")
    rss = process_rss_bytes()
    parts.append(f"memory: {_gb(rss) if rss is not None else '?'} resident")
    for name, allocated, used, total in device_memory():
        parts.append(f"{name}: {_gb(allocated)} by torch, {_gb(used)} of {_gb(total)} used")
    return " · ".join(parts)


class _StatusLog:
    """The thread that logs a runner's status line; sessions_fn may be set later (the app knows sessions)."""

    def __init__(self, runner: JobRunner, interval_s: float, sessions_fn: SessionsFn | None) -> None:
        self.runner = weakref.ref(runner)
        self.interval_s = interval_s
        self.sessions_fn = sessions_fn
        self.thread = threading.Thread(target=self._loop, name="status-log", daemon=True)

    def line(self) -> str | None:
        """The status line now, or None once the runner is gone."""
        runner = self.runner()
        if runner is None:
            return None
        sessions = None
        if self.sessions_fn is not None:
            try:
                sessions = self.sessions_fn()
            except Exception:  # counting sessions is best effort
                log.debug("counting sessions failed", exc_info=True)
        return status_line(runner, sessions)

    def _loop(self) -> None:
        """Log the line every interval until the runner is shut down or gone."""
        while True:
            runner = self.runner()
            if runner is None or runner.wait_stopped(self.interval_s):
                return
            del runner
            try:
                line = self.line()
            except Exception:  # a broken status line must not end the log
                log.exception("status line failed")
                continue
            if line is None:
                return
            log.info("%s", line)


_logs: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_logs_lock = threading.Lock()


def start_status_log(runner: JobRunner, interval_s: float,
                     sessions_fn: SessionsFn | None = None) -> threading.Thread | None:
    """Log status_line(runner, sessions_fn()) every interval_s seconds from a daemon thread; 0: off (None).

    One thread per runner: a second call returns the running thread, taking its sessions_fn if given."""
    if not interval_s > 0:
        return None
    with _logs_lock:
        current = _logs.get(runner)
        if current is not None and current.thread.is_alive():
            if sessions_fn is not None:
                current.sessions_fn = sessions_fn
            return current.thread
        status = _StatusLog(runner, interval_s, sessions_fn)
        _logs[runner] = status
        status.thread.start()
        return status.thread


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def configure_logging(level: int = logging.INFO) -> bool:
    """Give the `explorer` loggers a handler on stderr (the server's log), once per process; True when added.

    Streamlit configures only its own loggers, so without this the status line, reaped jobs and every job's
    traceback (which must reach the operator's log, never the browser) would be dropped."""
    logger = logging.getLogger("explorer")
    if any(getattr(h, "_explorer", False) for h in logger.handlers):
        return False
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handler._explorer = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    return True
