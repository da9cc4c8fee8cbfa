"""The decision-boundary page in AppTest: controls, live controls, URL settings, lecture mode, divergence."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from explorer.core.jobs import JobState
from explorer.labs.boundaries.run import build_config

PAGE = str(Path(__file__).resolve().parents[2] / "views" / "boundaries.py")


def _app(**params: str) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=60)
    for k, v in params.items():
        at.query_params[k] = v
    return at.run()


def _run(at: AppTest):
    return at.session_state["pg_run"]


def _wait(cond, timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached")


def _stats(at: AppTest) -> str:
    return next(m.value for m in at.markdown if m.value.startswith("**Epoch"))


def test_opens_ready_at_epoch_zero() -> None:
    at = _app()
    assert not at.exception
    assert _stats(at).startswith("**Epoch 0**")
    assert at.button(key="pg_btn_play").label.endswith("Play")


def test_step_trains_exactly_one_epoch_then_reset_restores_initial_weights() -> None:
    at = _app(speed="0")
    run = _run(at)
    initial = run.trainer.state_dict()
    at.button(key="pg_btn_step").click().run()
    _wait(lambda: run.trainer.epoch == 1)
    time.sleep(0.3)
    assert run.trainer.epoch == 1
    at.button(key="pg_btn_reset").click().run()
    new = _run(at)
    assert new is not run and new.trainer.epoch == 0
    for k, v in new.trainer.state_dict().items():
        assert (v == initial[k]).all(), k


def test_play_trains_and_learning_rate_changes_mid_run() -> None:
    at = _app(speed="0", epochs="100000")
    run = _run(at)
    at.button(key="pg_btn_play").click().run()
    _wait(lambda: run.trainer.epoch > 3)
    at.select_slider(key="pg_lr").set_value(0.1).run()
    assert _run(at) is run  # same run: a learning-rate change does not restart it
    _wait(lambda: run.trainer.lr == 0.1)
    at.button(key="pg_btn_pause").click().run()
    _wait(lambda: at.session_state["pg_run"] is run and not run.trainer.epoch == 0)


def test_changing_architecture_starts_a_new_run_and_reinit_changes_seed() -> None:
    at = _app()
    first = _run(at)
    at.slider(key="pg_layers").set_value(2).run()
    assert _run(at) is not first and _run(at).cfg.model.hidden == (8, 8)
    seed = at.session_state["pg_seed"]
    at.button(key="pg_btn_reinit").click().run()
    assert at.session_state["pg_seed"] != seed
    assert _run(at).cfg.train.seed == at.session_state["pg_seed"]


def test_url_settings_are_applied() -> None:
    at = _app(dataset="xor", hidden="4,3", act="relu", lr="0.1", features="x1,x2,x1*x2", opt="adam")
    assert not at.exception
    cfg = _run(at).cfg
    assert cfg.data.name == "xor" and cfg.model.hidden == (4, 3) and cfg.model.activation == "relu"
    assert cfg.train.lr == 0.1 and cfg.train.optimizer == "adam" and cfg.data.input_features == ("x1", "x2", "x1*x2")


@pytest.mark.parametrize("params, fragment", [
    ({"lr": "100"}, "learning rate"),
    ({"hidden": "8,x"}, "hidden"),
    ({"noise": "90"}, "noise"),
    ({"bogus": "1"}, "unknown URL parameter"),
    ({"hidden": ",".join(["8"] * 9)}, "hidden layers"),
    ({"act": "swish"}, "activation"),
])
def test_bad_url_parameters_are_refused_with_a_message(params: dict, fragment: str) -> None:
    at = _app(**params)
    assert not at.exception
    errors = " ".join(e.value for e in at.error)
    assert "refused" in errors and fragment in errors
    assert _run(at).cfg == build_config()  # the defaults run instead


def test_lecture_mode_hides_chosen_controls() -> None:
    at = _app(lecture="1", hide="data,training")
    assert not at.exception
    keys = {w.key for w in at.selectbox}
    assert "pg_dataset" not in keys and "pg_opt" not in keys and "pg_act" in keys
    assert _run(at).cfg.data.name == "spiral"


def test_copy_link_contains_the_settings() -> None:
    at = _app(dataset="circle", noise="10")
    at.button(key="pg_btn_link").click().run()
    code = " ".join(c.value for c in at.code)
    assert "dataset=circle" in code and "noise=10" in code


def test_divergence_is_reported() -> None:
    at = _app(act="relu", lr="10", opt="sgd", dataset="circle", loss="mse", speed="0", features="x1,x2,x1^2,x2^2")
    run = _run(at)
    at.button(key="pg_btn_play").click().run()
    _wait(lambda: run.status == "diverged")
    at.run()
    errors = " ".join(e.value for e in at.error)
    assert "diverged" in errors and "learning rate" in errors


def test_play_and_pause_are_both_drawn_with_bundled_icons() -> None:
    """Both buttons stay in place (one disabled), so pressing one never swaps elements; Material icons, not
    emoji that show as boxes without an emoji font."""
    at = _app(speed="0", epochs="100000")
    play, pause = at.button(key="pg_btn_play"), at.button(key="pg_btn_pause")
    assert play.proto.icon == ":material/play_arrow:" and pause.proto.icon == ":material/pause:"
    assert not play.disabled and pause.disabled
    run = _run(at)
    at.button(key="pg_btn_play").click().run()
    _wait(lambda: run.trainer.epoch > 0)
    assert at.button(key="pg_btn_play").disabled and not at.button(key="pg_btn_pause").disabled
    at.button(key="pg_btn_pause").click().run()
    assert not at.button(key="pg_btn_play").disabled and at.button(key="pg_btn_pause").disabled


def test_settings_line_and_network_graph_are_shown() -> None:
    at = _app(dataset="xor", hidden="4,3", lecture="1", hide="data,features,network,training")
    assert not at.exception
    line = " ".join(t.value for t in at.text)
    assert "xor" in line and "hidden 4-3 tanh" in line  # plain text (st.text), not Markdown
    svg = [m for m in at.markdown if m.value.startswith("<svg")]
    # two classes drawn as one output tile: one line from each last hidden neuron to it
    assert len(svg) == 1 and svg[0].value.count("<title>weight") == 2 * 4 + 4 * 3 + 3 * 1


@pytest.fixture
def one_place(monkeypatch: pytest.MonkeyPatch):
    """A runner that admits one training at a time with one waiting place, used by the page; and a blocker: another
    student's training holding the place until `release()`."""
    import threading

    from explorer.core.jobs import JobRunner

    runner = JobRunner(max_running=1, max_jobs=2, max_queue=1, orphan_timeout=0.3, reap_interval=3600)
    monkeypatch.setattr("views.widgets.default_runner", lambda: runner)
    done = threading.Event()

    def other(ctx) -> None:
        ctx.publish(progress=0.1)
        while not done.wait(0.01):
            ctx.checkpoint()

    blocker = runner.submit(other, name="another student", owner="someone else")
    _wait(lambda: blocker.state is JobState.RUNNING)
    yield runner, done.set
    done.set()
    runner.shutdown()


def test_a_waiting_student_sees_the_start_state_and_the_queue_position(one_place) -> None:
    runner, release = one_place
    at = _app(speed="0", epochs="100000")
    assert not at.exception
    assert _stats(at).startswith("**Epoch 0**")  # drawn at once, whatever the queue
    assert len(at.get("image")) == 2  # the boundary and the loss curves
    at.button(key="pg_btn_play").click().run()
    assert not at.exception
    job = runner.get(at.session_state["_job_playground"])
    assert job.state is JobState.QUEUED and job.queue_position == 1
    stats = _stats(at)
    assert stats.startswith("**Epoch 0**") and "Waiting for a compute slot: position 1 of 1, " in stats
    assert "about " in stats or "no estimate yet" in stats
    release()  # the other training ends: this one is admitted and trains
    run = _run(at)
    _wait(lambda: run.trainer.epoch > 2)
    at.run()
    assert "Waiting" not in _stats(at)


def test_a_full_queue_says_busy_and_the_run_stays_paused(one_place) -> None:
    runner, _ = one_place
    runner.submit(lambda ctx: None, name="a third student")  # takes the one waiting place
    at = _app(speed="0", epochs="100000")
    at.button(key="pg_btn_play").click().run()
    assert not at.exception
    warnings = " ".join(w.value.replace("\\", "") for w in at.warning)
    assert "The server is busy" in warnings and "Try again in a minute" in warnings
    assert _stats(at).startswith("**Epoch 0**")
    assert not at.button(key="pg_btn_play").disabled  # still paused: Play again later
    job = runner.get(at.session_state["_job_playground"])
    assert job.pause_requested and job.state is not JobState.QUEUED


def test_a_paused_run_reaped_while_the_tab_was_idle_goes_on_where_it_stopped(monkeypatch) -> None:
    """An idle paused tab polls nothing, so the runner cancels its job after orphan_timeout; the session kept the run,
    and Play (or Step) continues it from the same weights and epoch."""
    from explorer.core.jobs import JobRunner

    runner = JobRunner(max_running=2, orphan_timeout=0.2, reap_interval=3600)
    monkeypatch.setattr("views.widgets.default_runner", lambda: runner)
    try:
        at = _app(speed="0", epochs="100000")
        run = _run(at)
        at.button(key="pg_btn_step").click().run()
        _wait(lambda: run.trainer.epoch == 1)
        old = runner.get(at.session_state["_job_playground"])
        _wait(lambda: old.state is JobState.PAUSED)
        weights = run.trainer.state_dict()
        time.sleep(0.3)
        assert old in runner.reap() and old.wait(10) and old.state is JobState.CANCELLED
        at.button(key="pg_btn_step").click().run()  # the student comes back: Step trains epoch 2 of the same run
        assert not at.exception
        assert _run(at) is run
        _wait(lambda: run.trainer.epoch == 2)
        new = runner.get(at.session_state["_job_playground"])
        assert new is not old and not new.is_final
        at.run()
        assert _stats(at).startswith("**Epoch 2**")
        assert any(not torch_equal(weights[k], v) for k, v in run.trainer.state_dict().items())
    finally:
        runner.shutdown()


def torch_equal(a, b) -> bool:
    """Whether two tensors are equal."""
    import torch

    return bool(torch.equal(a, b))
