"""The pages' shared job helpers (views.widgets) in AppTest: queue position, busy message, shared keyed jobs, timers."""

from __future__ import annotations

import threading
import time

import pytest
from streamlit.testing.v1 import AppTest

from explorer.core.jobs import JobRunner, JobState


def _wait(cond, timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(0.02)
    raise AssertionError("condition not reached")


@pytest.fixture
def crowded(monkeypatch: pytest.MonkeyPatch):
    """A runner with one training place and one waiting place, the place taken by another student's training until
    `release()`; the pages use it."""
    runner = JobRunner(max_running=1, max_jobs=2, max_queue=1)
    monkeypatch.setattr("views.widgets.default_runner", lambda: runner)
    done = threading.Event()

    def other(ctx) -> None:
        while not done.wait(0.01):
            ctx.checkpoint()

    runner.submit(other, name="another student", owner="someone else")
    yield runner, done.set
    done.set()
    runner.shutdown()


def _page() -> None:
    """A page that starts a job on a button and polls it, as every lab page does."""
    import streamlit as st

    from views.widgets import get_job, poll_job, start_job

    def train(ctx) -> str:
        ctx.checkpoint()
        return "trained"

    if st.button("Train", key="go"):
        start_job("demo", train, name="demo", key=st.session_state.get("job_key"))
    job = get_job("demo")
    if job is None:
        st.info("Press Train.")  # the page's start state, drawn whatever the queue says
    else:
        poll_job(job, lambda j: st.write(f"state: {j.state.value}; result: {j.result}"))


def test_a_queued_job_shows_its_position_and_then_runs(crowded) -> None:
    runner, release = crowded
    at = AppTest.from_function(_page, default_timeout=30).run()
    at.button(key="go").click().run()
    assert not at.exception
    notes = [i.value for i in at.info]
    assert any(n.startswith("Waiting for a compute slot: position 1 of 1, ") for n in notes), notes
    assert any("about " in n or "no estimate yet" in n for n in notes)
    release()
    job = runner.get(at.session_state["_job_demo"])
    assert job.wait(20) and job.state is JobState.DONE
    at.run()
    assert not any(i.value.startswith("Waiting") for i in at.info)
    assert any("result: trained" in m.value for m in at.markdown)


def test_a_full_queue_gives_the_busy_message_and_the_page_goes_on(crowded) -> None:
    runner, _ = crowded
    runner.submit(lambda ctx: None, name="a third student")  # the one waiting place
    at = AppTest.from_function(_page, default_timeout=30).run()
    at.button(key="go").click().run()
    assert not at.exception
    shown = " ".join(w.value.replace("\\", "") for w in at.warning)
    assert "The server is busy" in shown and "Try again in a minute" in shown
    assert any(i.value == "Press Train." for i in at.info)


def test_the_same_key_shares_one_job_among_sessions(crowded) -> None:
    runner, release = crowded
    ids = []
    for student in ("student-1", "student-2"):
        at = AppTest.from_function(_page, default_timeout=30)
        at.session_state["_session_id"] = student
        at.session_state["job_key"] = "demo/settings-a"
        at.run()
        at.button(key="go").click().run()
        ids.append(at.session_state["_job_demo"])
    assert ids[0] == ids[1]
    job = runner.get(ids[0])
    assert job.watchers == {"student-1", "student-2"}
    release()
    assert job.wait(20) and job.state is JobState.DONE


def test_stopping_a_shared_job_lets_it_go_on_for_the_others(monkeypatch: pytest.MonkeyPatch) -> None:
    runner = JobRunner(max_running=2)
    monkeypatch.setattr("views.widgets.default_runner", lambda: runner)

    def page() -> None:
        import time

        import streamlit as st

        from views.widgets import start_job, stop_job

        def slow(ctx) -> None:
            for _ in range(3000):  # at most ~30 s; cancelled long before
                ctx.checkpoint()
                time.sleep(0.01)

        if st.button("Train", key="go"):
            start_job("demo", slow, key="demo/shared")
        if st.button("Stop", key="stop"):
            st.session_state["stopped"] = stop_job("demo")

    try:
        sessions = []
        for student in ("student-1", "student-2"):
            at = AppTest.from_function(page, default_timeout=30)
            at.session_state["_session_id"] = student
            at.run()
            at.button(key="go").click().run()
            assert not at.exception
            sessions.append(at)
        job = runner.get(sessions[0].session_state["_job_demo"])
        sessions[0].button(key="stop").click().run()
        assert sessions[0].session_state["stopped"] is False and not job.is_final  # student 2 still watches
        sessions[1].button(key="stop").click().run()
        assert sessions[1].session_state["stopped"] is True
        assert job.wait(10) and job.state is JobState.CANCELLED
    finally:
        runner.shutdown()


def test_a_panel_polls_only_while_its_job_is_queued_or_running() -> None:
    """The timer of poll_job's fragment: slow while queued, fast while running, none paused or final (an idle page
    costs the server nothing)."""
    from views.widgets import QUEUE_POLL_S, _cadence

    runner = JobRunner(max_running=1, max_jobs=1)
    go, done = threading.Event(), threading.Event()
    try:
        def first(ctx) -> None:
            while not done.wait(0.01):
                ctx.checkpoint()

        a = runner.submit(first)
        b = runner.submit(lambda ctx: go.wait(10))
        _wait(lambda: a.state is JobState.RUNNING and b.state is JobState.QUEUED)
        assert _cadence(a, 0.5) == 0.5 and _cadence(b, 0.5) == QUEUE_POLL_S
        paused = runner.submit(lambda ctx: ctx.checkpoint(), start_paused=True)
        _wait(lambda: paused.state is JobState.PAUSED)
        assert _cadence(paused, 0.5) is None
        done.set()
        go.set()
        assert a.wait(10) and b.wait(10)
        assert _cadence(a, 0.5) is None and _cadence(b, 0.5) is None
    finally:
        done.set()
        go.set()
        runner.shutdown()
