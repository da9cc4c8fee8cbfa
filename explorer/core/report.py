"""Progress and cancellation shared by every lab: the one Reporter interface a compute function takes.

A compute function says how far it is with `report.publish(snapshot, progress=, message=)` and calls
`report.checkpoint()` between units of work, where a job may pause or be cancelled. A background job's
JobContext (explorer.core.jobs) is a Reporter; the command line passes a TerminalReporter, tests and
plain Python the silent SILENT; `part()` hands a sub-task a slice of the progress range.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from typing import Any, Protocol, TextIO, runtime_checkable


def hms(s: float) -> str:
    """Seconds as 1h02m03s / 2m03s / 3s ("?" when unknown)."""
    if not math.isfinite(s):
        return "?"
    s = int(s)
    h, m = s // 3600, s % 3600 // 60
    return f"{h}h{m:02d}m{s % 60:02d}s" if h else (f"{m}m{s % 60:02d}s" if m else f"{s}s")


@runtime_checkable
class Reporter(Protocol):
    """Where a computation publishes how far it is, and the points where it may be paused or cancelled."""

    def publish(
        self, snapshot: Any = None, *, progress: float | None = None, message: str | None = None
    ) -> None:
        """Replace the newest snapshot, progress in [0, 1] and message; None keeps a field."""

    def checkpoint(self) -> None:
        """Call before each unit of work: may block while paused, or raise to cancel."""


class NullReporter:
    """A Reporter that shows nothing and never pauses: for plain Python calls and tests."""

    def publish(
        self, snapshot: Any = None, *, progress: float | None = None, message: str | None = None
    ) -> None:
        """Drop the report."""

    def checkpoint(self) -> None:
        """Never pause, never cancel."""


SILENT: Reporter = NullReporter()  # the default of every compute function's `report`


def progress_line(progress: float, elapsed_s: float, message: str = "", width: int = 30) -> str:
    """A text progress bar with the message, elapsed time and a linear ETA."""
    frac = min(max(progress, 0.0), 1.0)
    eta = elapsed_s * (1 - frac) / frac if frac > 0 else float("nan")
    detail = f"  {message}" if message else ""
    return (f"[{'#' * int(width * frac):<{width}}] {100 * frac:5.1f}%{detail}  "
            f"elapsed {hms(elapsed_s)}  ETA {hms(eta)}")


class TerminalReporter:
    """A one-line progress bar with an ETA, redrawn in place on a terminal stream: the command line's Reporter.

    Snapshots are for pages and are ignored; checkpoints pass (Ctrl-C stops a command). Use it as a context
    manager, or call close(), to end the line.
    """

    def __init__(self, stream: TextIO | None = None, width: int = 30) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.width = width
        self.start = time.perf_counter()
        self.progress, self.message = 0.0, ""
        self._drawn = 0  # the longest line drawn: a shorter one is padded to wipe it out

    def publish(
        self, snapshot: Any = None, *, progress: float | None = None, message: str | None = None
    ) -> None:
        """Record progress and message (None keeps them) and redraw the bar."""
        if progress is None and message is None:
            return
        if progress is not None:
            self.progress = min(max(float(progress), 0.0), 1.0)
        if message is not None:
            self.message = message
        line = self.line()
        self.stream.write("\r" + line.ljust(self._drawn))
        self.stream.flush()
        self._drawn = max(self._drawn, len(line))

    def checkpoint(self) -> None:
        """Nothing to obey on a terminal."""

    def line(self) -> str:
        """The bar as it stands now."""
        return progress_line(self.progress, time.perf_counter() - self.start, self.message, self.width)

    def close(self) -> None:
        """End the bar's line, if one was drawn, so what follows starts on its own."""
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = 0

    def __enter__(self) -> TerminalReporter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def terminal_run(run: Callable[[Reporter], Any], stream: TextIO | None = None) -> Any:
    """A command's computation, run(report), with a progress bar on the terminal; the cache entry it returns
    keeps its notice (why another data set was used, how to provide the one asked for), printed to the stream."""
    with TerminalReporter(stream) as report:
        entry = run(report)
    notice = entry.metrics.get("notice")
    if notice:
        print(notice, file=stream if stream is not None else sys.stderr)
    return entry


def where(entry: Any) -> str:
    """How and where a cache entry was computed, for a command's summary line: device, seconds, folder."""
    return f"{entry.meta.get('device')} · {entry.meta.get('wall_time_s', 0):.1f} s · {entry.path}"


class _Part:
    """A sub-task's view of its parent: progress 0..1 lands in [lo, hi] of the parent's range."""

    def __init__(self, parent: Reporter, lo: float, hi: float, prefix: str,
                 snapshot: Callable[[Any], Any] | None) -> None:
        self.parent, self.lo, self.span = parent, lo, hi - lo
        self.prefix, self.snapshot = prefix, snapshot

    def publish(
        self, snapshot: Any = None, *, progress: float | None = None, message: str | None = None
    ) -> None:
        """Pass the report up with progress rescaled, the message prefixed and the snapshot mapped."""
        if snapshot is not None and self.snapshot is not None:
            snapshot = self.snapshot(snapshot)
        self.parent.publish(
            snapshot,
            progress=None if progress is None else self.lo + self.span * progress,
            message=None if message is None else self.prefix + message,
        )

    def checkpoint(self) -> None:
        """The parent's checkpoint: pausing or cancelling the whole pauses or cancels the part."""
        self.parent.checkpoint()


def part(report: Reporter, lo: float, hi: float, *, prefix: str = "",
         snapshot: Callable[[Any], Any] | None = None) -> Reporter:
    """A Reporter for a sub-task that fills [lo, hi] of `report`'s progress; its messages get `prefix`, and
    `snapshot`, if given, maps each of its snapshots to what the parent shows instead."""
    return _Part(report, lo, hi, prefix, snapshot)
