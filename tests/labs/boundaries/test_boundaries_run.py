"""Playground runs: the job trains, pauses and steps; finished runs are cached and reopen instantly."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from explorer.core.cache import Cache
from explorer.core.config import ConfigError
from explorer.core.jobs import JobRunner, JobState
from explorer.core.urlstate import Param, encode_params, parse_params
from explorer.labs.boundaries.run import CACHE_KIND, GRID, PlaygroundRun, build_config
from explorer.render.png import boundary_png, curves_png, matrix_png, tiles_png

CPU = torch.device("cpu")


@pytest.fixture()
def runner():
    r = JobRunner(max_running=2)
    yield r
    r.shutdown()


def _wait(cond, timeout=20.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(0.02)
    raise AssertionError("condition not reached")


def test_run_to_end_is_cached_and_reopens_instantly(tmp_path, runner) -> None:
    cache = Cache(tmp_path)
    cfg = build_config(epochs=20, hidden=(4,))
    run = PlaygroundRun(cfg, device=CPU, cache=cache)
    run.set_speed(0)
    job = runner.submit(run.job)
    assert job.wait(30) and job.state is JobState.DONE
    assert job.snapshot.status == "finished" and job.snapshot.epoch == 20
    entry = cache.get(CACHE_KIND, cfg)
    assert entry is not None and entry.metrics["epochs"] == 20 and "code_version" in entry.meta
    again = PlaygroundRun(cfg, device=CPU, cache=cache)
    assert again.from_cache and again.finished and again.trainer.epoch == 20
    for k, v in run.trainer.state_dict().items():
        assert torch.equal(v, again.trainer.state_dict()[k])
    assert again.snapshot().history["train_loss"] == run.snapshot().history["train_loss"]


def test_pause_step_and_live_learning_rate(tmp_path, runner) -> None:
    run = PlaygroundRun(build_config(epochs=100_000), device=CPU, cache=Cache(tmp_path))
    run.set_speed(0)
    job = runner.submit(run.job, start_paused=True)
    _wait(lambda: job.state is JobState.PAUSED and job.snapshot is not None)
    assert run.trainer.epoch == 0 and job.snapshot.status == "paused"
    job.step()
    _wait(lambda: job.snapshot.epoch == 1 and job.state is JobState.PAUSED)
    time.sleep(0.1)
    assert run.trainer.epoch == 1
    run.set_lr(0.3)
    job.resume()
    _wait(lambda: run.trainer.lr == 0.3 and run.trainer.epoch > 5)
    job.cancel()
    assert job.wait(10) and job.state is JobState.CANCELLED
    assert run.lr_changed  # a run with live changes is not cached under its config
    with pytest.raises(ConfigError):
        run.set_lr(50.0)


def test_divergence_ends_the_job_with_the_message(tmp_path, runner) -> None:
    cfg = build_config(dataset="circle", activation="relu", lr=10.0, loss="mse", hidden=(8,),
                       input_features=("x1", "x2", "x1^2", "x2^2"), epochs=500)
    run = PlaygroundRun(cfg, device=CPU, cache=Cache(tmp_path))
    run.set_speed(0)
    job = runner.submit(run.job)
    assert job.wait(30)
    assert job.snapshot.status == "diverged" and "step" in job.snapshot.message
    assert Cache(tmp_path).get(CACHE_KIND, cfg) is None


def test_snapshot_shapes_and_regression(tmp_path) -> None:
    run = PlaygroundRun(build_config(dataset="gaussian bump", hidden=(6, 5, 4)), device=CPU, cache=Cache(tmp_path))
    snap = run.snapshot()
    assert snap.field.shape == (GRID, GRID) and np.abs(snap.field).max() <= 1
    assert [len(layer) for layer in snap.neurons] == [6, 5, 4]
    assert [w.shape for w in snap.weights] == [(6, 2), (5, 6), (4, 5), (1, 4)]
    assert run.cfg.train.loss == "mse"


def test_renderings_are_small_pngs(tmp_path) -> None:
    run = PlaygroundRun(build_config(), device=CPU, cache=Cache(tmp_path))
    snap, split = run.snapshot(), run.split
    png = boundary_png(snap.field, task="classification", extent=6.0, train=(split.raw_train, split.y_train.numpy()),
                       test=(split.raw_test, split.y_test.numpy()))
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) < 50_000
    multi = np.random.default_rng(0).dirichlet(np.ones(3), size=(GRID, GRID))
    assert len(boundary_png(multi, task="classification", extent=6.0, discretize=True)) < 50_000
    for data in (tiles_png(snap.neurons), matrix_png(snap.weights),
                 curves_png({"train": ([0, 1, 2], [1.0, 0.5, float("nan")])})):
        assert data[:4] == b"\x89PNG"


def test_url_state_round_trip_and_refusals() -> None:
    schema = {"lr": Param(float, 0.03), "hidden": Param(tuple, (8, 8), int), "bn": Param(bool, False)}
    values = {"lr": 0.1, "hidden": (4, 2), "bn": True}
    encoded = encode_params(schema, values)
    assert encoded == {"lr": "0.1", "hidden": "4,2", "bn": "1"}
    assert parse_params(schema, encoded) == values
    assert encode_params(schema, {"lr": 0.03, "hidden": (8, 8), "bn": False}) == {}
    for bad, msg in (({"lr": "fast"}, "lr"), ({"hidden": "4,a"}, "hidden"), ({"x": "1"}, "unknown"),
                     ({"bn": "maybe"}, "bn")):
        with pytest.raises(ConfigError, match=msg):
            parse_params(schema, bad)
