"""Fixtures shared by the core tests."""

from __future__ import annotations

from typing import Any, Callable, Iterator

import pytest

from explorer.core.jobs import JobRunner


@pytest.fixture
def make_runner() -> Iterator[Callable[..., JobRunner]]:
    """Build runners (reaper effectively off unless asked) and shut them all down afterwards."""
    runners: list[JobRunner] = []

    def make(**kwargs: Any) -> JobRunner:
        kwargs.setdefault("reap_interval", 60.0)
        runner = JobRunner(**kwargs)
        runners.append(runner)
        return runner

    yield make
    for runner in runners:
        runner.shutdown(timeout=2.0)
