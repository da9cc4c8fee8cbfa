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
    cfg = build_config(dataset="circle", activation="relu", lr=10.0, optimizer="sgd", loss="mse", hidden=(8,),
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


def test_boundary_axes_and_colour_bar_frame_the_same_plot(tmp_path) -> None:
    import io

    from PIL import Image

    run = PlaygroundRun(build_config(hidden=(4,)), device=CPU, cache=Cache(tmp_path))
    snap, split = run.snapshot(), run.split
    pts = (split.raw_train, split.y_train.numpy())
    plain = Image.open(io.BytesIO(boundary_png(snap.field, task="classification", extent=6.0, size=200, train=pts)))
    framed = Image.open(io.BytesIO(boundary_png(snap.field, task="classification", extent=6.0, size=200, train=pts,
                                                axes=True, font_px=17)))
    assert plain.size == (200, 200) and framed.width > 260 and framed.height > 240
    # the plot is pasted unchanged inside the frame: find it by its top-left pixels
    p, f = np.asarray(plain), np.asarray(framed)
    hits = [(y, x) for y in range(f.shape[0] - 199) for x in range(f.shape[1] - 199)
            if (f[y:y + 200, x:x + 200] == p).all()]
    assert len(hits) == 1
    # a colour bar to the plot's right uses the whole diverging scale
    y, x = hits[0]
    assert {0, 63} <= set(np.unique(f[y:y + 200, x + 200:]).tolist())


def test_points_are_drawn_once_and_pasted_identically(tmp_path) -> None:
    from PIL import Image, ImageDraw

    from explorer.render import png as render

    run = PlaygroundRun(build_config(hidden=(4,), n_points=200), device=CPU, cache=Cache(tmp_path))
    snap, split = run.snapshot(), run.split
    xy, y = split.raw_train, split.y_train.numpy()
    render._dots.cache_clear()
    a = boundary_png(snap.field, task="classification", extent=6.0, train=(xy, y))
    b = boundary_png(snap.field, task="classification", extent=6.0, train=(xy, y))
    assert a == b and render._dots.cache_info().hits == 1
    # the reference: each point drawn with PIL straight onto the heatmap
    img = Image.fromarray(render.field_index(snap.field, 320), "P")
    draw = ImageDraw.Draw(img)
    for (x0, y0), c in zip(xy.tolist(), y.tolist()):
        px, py = (x0 + 6) / 12 * 320, (6 - y0) / 12 * 320
        draw.ellipse((px - 3, py - 3, px + 3, py + 3), fill=render.CLASS_SOLID + int(c), outline=render.WHITE)
    assert a == render._png(img)


def test_network_svg_has_a_line_per_shown_weight_with_its_value(tmp_path) -> None:
    from explorer.render.png import network_svg

    run = PlaygroundRun(build_config(hidden=(3, 2), input_features=("x1", "x2", "x1*x2")), device=CPU,
                        cache=Cache(tmp_path))
    snap = run.snapshot()
    assert [name for name, _ in snap.inputs] == ["x1", "x2", "x1*x2"]
    svg = network_svg(snap.inputs, snap.neurons, snap.weights, snap.field)
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert svg.count("<line") == svg.count("<title>weight") == 3 * 3 + 3 * 2 + 2 * 1  # 2 classes: 1 output
    assert svg.count("<image") == 3 + 3 + 2 + 1  # inputs, hidden neurons, output
    w = snap.weights[0][0, 0]
    assert f"weight {w:+.4f} (layer 1, from 1 to 1)" in svg
    assert ("#0877bd" if w >= 0 else "#f59322") in svg
    assert "x1&#42;x2" in svg and "x1*x2" not in svg  # never read as Markdown emphasis


def test_describe_is_one_line_of_the_settings() -> None:
    from explorer.labs.boundaries.run import describe

    line = describe(build_config(dataset="xor", hidden=(4, 3), lr=0.1, regularization="L2", reg_rate=0.01))
    assert "\n" not in line
    assert "xor" in line and "hidden 4-3 tanh" in line and "lr 0.1" in line and "L2 0.01" in line


def test_network_svg_draws_a_tile_per_class_when_there_are_more_than_two() -> None:
    from explorer.render.png import network_svg

    tile = np.zeros((24, 24), dtype=np.float32)
    probs = np.full((GRID, GRID, 3), 1 / 3, dtype=np.float32)
    svg = network_svg([("x1", tile), ("x2", tile)], [[tile] * 4], [np.ones((4, 2)), -np.ones((3, 4))], probs)
    assert svg.count("<image") == 2 + 4 + 3 and svg.count("<line") == 2 * 4 + 4 * 3
    assert "weight -1.0000 (layer 2, from 4 to 3)" in svg


def test_the_default_shows_the_spiral_forming_within_seconds() -> None:
    """The page's default (spiral, 3x8 tanh, Adam 0.01) classifies >= 95% of the test points within 150 epochs:
    5 s at the default 30 epochs per second, so the spiral visibly forms within ~10 s of pressing Play."""
    import torch

    from explorer.data.toy2d import make_split
    from explorer.train.single_mlp import Trainer

    cfg = build_config()
    assert cfg.data.name == "spiral"
    sp = make_split(cfg.data, torch.device("cpu"))
    tr = Trainer(cfg.model, cfg.train, sp.x_train, sp.y_train, sp.x_test, sp.y_test)
    for _ in range(150):
        tr.run_epoch()
    assert tr.evaluate()["test_acc"] >= 0.95


@pytest.fixture
def app_threads():
    """One intra-op thread, as the app runs its jobs (app.py's configure_threads): two paced runs with two threads
    each on a 2-core machine spend their epochs fighting over the cores, and the slot looks busy."""
    from explorer.core.device import torch_threads

    with torch_threads(1):
        yield


def test_paced_runs_sleep_without_holding_a_compute_slot(tmp_path, app_threads) -> None:
    """Two runs paced at 5 epochs/s share one compute slot and both advance; between epochs they sleep (state
    SLEEPING) and hold no slot, so a third job computes meanwhile."""
    runner = JobRunner(max_running=3, max_jobs=1)
    try:
        runs = [PlaygroundRun(build_config(epochs=100_000, hidden=(4,), seed=s), device=CPU, cache=Cache(tmp_path))
                for s in range(2)]
        for run in runs:
            run.set_speed(5)
        jobs = [runner.submit(run.job) for run in runs]
        states, computing = [], []
        end = time.monotonic() + 2.0
        while time.monotonic() < end:
            states.append([job.state for job in jobs])
            computing.append(runner.running_count())
            time.sleep(0.01)
        assert all(run.trainer.epoch >= 4 for run in runs)
        assert sum(JobState.SLEEPING in s for s in states) > 0.8 * len(states)
        assert sum(c == 0 for c in computing) > 0.5 * len(computing)  # the slot is mostly free
        other = runner.submit(lambda ctx: sum(range(100_000)))
        assert other.wait(2) and other.state is JobState.DONE
        run = runs[0]
        jobs[0].pause()
        _wait(lambda: jobs[0].state is JobState.PAUSED)  # a pause cuts the pacing sleep short
        assert run.trainer.epoch == jobs[0].snapshot.epoch
    finally:
        runner.shutdown()


def test_the_start_state_is_ready_before_any_job_runs(tmp_path) -> None:
    """What the page draws at once, whatever the queue: the run's epoch-0 state, computed when the run is made."""
    run = PlaygroundRun(build_config(hidden=(4,)), device=CPU, cache=Cache(tmp_path))
    snap = run.start_state
    assert snap.epoch == 0 and snap.status == "ready" and snap.history["epoch"] == [0]
    assert snap.field.shape == (GRID, GRID)
