"""The one Reporter interface: JobContext is one, the terminal bar, the silent one, and slices of the range."""

from __future__ import annotations

import inspect
import io
import threading

import pytest

from explorer.core.jobs import JobContext, JobRunner, JobState
from explorer.core.report import SILENT, NullReporter, Reporter, TerminalReporter, hms, part, progress_line


def _signature(cls: type, name: str) -> list[tuple[str, object, object]]:
    """A method's parameters (name, kind, default), without self."""
    params = list(inspect.signature(getattr(cls, name)).parameters.values())[1:]
    return [(p.name, p.kind, p.default) for p in params]


@pytest.mark.parametrize("cls", [JobContext, NullReporter, TerminalReporter, type(part(SILENT, 0, 1))])
def test_every_reporter_has_the_protocol_s_methods(cls: type) -> None:
    for name in ("publish", "checkpoint"):
        assert _signature(cls, name) == _signature(Reporter, name), (cls, name)


def test_job_context_is_a_reporter_and_a_job_passes_it_straight_in() -> None:
    assert issubclass(JobContext, Reporter)

    def compute(report: Reporter) -> int:
        """A lab-like compute function: two halves, each a slice of the range."""
        for half in range(2):
            sub = part(report, half / 2, (half + 1) / 2, prefix=f"half {half}: ")
            for i in range(4):
                sub.checkpoint()
                sub.publish({"half": half, "i": i}, progress=(i + 1) / 4, message=f"{i + 1}/4")
        return 7

    runner = JobRunner(max_running=1)
    try:
        job = runner.submit(lambda ctx: (isinstance(ctx, Reporter), compute(ctx)))
        assert job.wait(10) and job.state is JobState.DONE
        assert job.result == (True, 7)
        assert job.snapshot == {"half": 1, "i": 3} and job.message == "half 1: 4/4" and job.progress == 1.0
    finally:
        runner.shutdown()


def test_cancelling_a_job_stops_a_sub_task_at_its_checkpoint() -> None:
    started = threading.Event()

    def compute(report: Reporter) -> None:
        sub = part(report, 0.5, 1.0)
        started.set()
        while True:
            sub.checkpoint()

    runner = JobRunner(max_running=1)
    try:
        job = runner.submit(compute)
        assert started.wait(10)
        job.cancel()
        assert job.wait(10) and job.state is JobState.CANCELLED  # Cancelled came through the part (else FAILED)
    finally:
        runner.shutdown()


def test_parts_map_progress_prefix_messages_map_snapshots_and_nest(recorder) -> None:
    outer = part(recorder, 0.2, 0.6, prefix="a: ")
    inner = part(outer, 0.5, 1.0, prefix="b: ", snapshot=lambda s: {"whole": s})
    inner.publish("x", progress=0.0, message="start")
    inner.publish(progress=1.0)
    inner.publish("y")
    inner.checkpoint()
    assert recorder.published == [({"whole": "x"}, pytest.approx(0.4), "a: b: start"),
                                  (None, pytest.approx(0.6), None), ({"whole": "y"}, None, None)]
    assert recorder.checkpoints == 1


def test_null_reporter_is_silent() -> None:
    assert isinstance(SILENT, NullReporter) and isinstance(SILENT, Reporter)
    SILENT.publish({"a": 1}, progress=0.5, message="m")
    SILENT.checkpoint()


def test_terminal_bar_shows_progress_message_and_eta() -> None:
    out = io.StringIO()
    with TerminalReporter(out) as bar:
        bar.publish({"ignored": True})  # snapshots are for pages: nothing drawn
        assert out.getvalue() == ""
        bar.publish(progress=0.2, message="2/10 points")
        line = out.getvalue()
        assert line.startswith("\r[######") and "20.0%" in line and "2/10 points" in line and "ETA" in line
        bar.publish(progress=0.5)  # the message stays
        assert "2/10 points" in out.getvalue().split("\r")[-1] and "50.0%" in out.getvalue().split("\r")[-1]
        bar.publish(message="x")  # a shorter line wipes out the longer one before it
        last = out.getvalue().split("\r")[-1]
        assert len(last) >= len(line) - 1 and last.rstrip().endswith(("s", "?"))
    assert out.getvalue().endswith("\n")
    quiet = io.StringIO()
    TerminalReporter(quiet).close()
    assert quiet.getvalue() == ""  # nothing drawn: no empty line


def test_progress_line_and_hms() -> None:
    assert progress_line(0.5, 10.0, "k", width=10) == "[#####     ]  50.0%  k  elapsed 10s  ETA 10s"
    assert progress_line(0.0, 3.0) == f"[{' ' * 30}]   0.0%  elapsed 3s  ETA ?"
    assert progress_line(2.0, 1.0).startswith("[" + "#" * 30 + "] 100.0%")
    assert (hms(3723), hms(123), hms(3), hms(float("nan"))) == ("1h02m03s", "2m03s", "3s", "?")


def test_terminal_run_draws_the_bar_prints_the_notice_and_where_says_how() -> None:
    import io
    from pathlib import Path
    from types import SimpleNamespace

    from explorer.core.report import terminal_run, where

    out = io.StringIO()
    entry = SimpleNamespace(metrics={"notice": "Fashion-MNIST is not here: using digits"}, path=Path("/c/k"),
                            meta={"device": "cpu (2 cores, 2 torch threads)", "wall_time_s": 1.25})

    def run(report):
        report.publish(progress=0.5, message="half")
        return entry

    assert terminal_run(run, out) is entry
    assert "half" in out.getvalue() and out.getvalue().rstrip().endswith("using digits")
    assert where(entry) == "cpu (2 cores, 2 torch threads) · 1.2 s · /c/k"
