"""The hyperparameter lab's configs, steps table, the three parts on tiny settings, the cache and the CLI."""

from __future__ import annotations

import math

import pytest
import torch

from explorer.core.cache import Cache
from explorer.core.config import ConfigError
from explorer.labs.hyperparameters import cli, lab
from explorer.labs.hyperparameters.config import (BatchSizeConfig, GridConfig, LRConfig, grid_shapes, make_data,
                                                  n_train, steps_table)

CPU = torch.device("cpu")
TINY = dict(n_points=120, seed=1)


def test_steps_table_in_epochs_mode_and_equal_steps_mode():
    cfg = BatchSizeConfig(n_points=1000, train_ratio=50, epochs=3)  # 500 training points
    rows = {r["batch size"]: r for r in steps_table(cfg)}
    assert [rows[b]["steps per epoch"] for b in (1, 16, 128, 1024)] == [500, 32, 4, 1]  # ceil(500 / b)
    assert [rows[b]["total steps"] for b in (1, 16, 128, 1024)] == [1500, 96, 12, 3]
    assert rows[1024]["examples per step"] == 500 and all(r["epochs"] == 3 for r in rows.values())
    eq = {r["batch size"]: r for r in steps_table(BatchSizeConfig(n_points=1000, mode="steps", steps=64))}
    assert all(r["total steps"] == 64 for r in eq.values())
    assert eq[1]["epochs"] == pytest.approx(64 / 500) and eq[16]["epochs"] == 2.0 and eq[1024]["epochs"] == 64


@pytest.mark.parametrize("build, message", [
    (lambda: LRConfig(lrs=(20.0,)), "learning rate must be between 1e-06 and 10"),
    (lambda: LRConfig(lrs=()), "choose 1 to 8 learning rates"),
    (lambda: LRConfig(epochs=0), "epochs must be between 1 and 1000"),
    (lambda: LRConfig(width=1000), "width must be between 1 and 256"),
    (lambda: LRConfig(dataset="nope"), "data set must be one of"),
    (lambda: LRConfig(optimizer="lbfgs"), "optimizer must be one of adam, sgd, momentum"),
    (lambda: BatchSizeConfig(bn=True), "batch norm needs at least 2 examples in every batch"),
    (lambda: BatchSizeConfig(mode="both"), "mode must be one of epochs, steps"),
    (lambda: BatchSizeConfig(batch_sizes=(0,)), "batch size must be between 1 and 20000"),
    (lambda: BatchSizeConfig(mode="steps", steps=200_000), "at most 500,000 are allowed"),
    (lambda: GridConfig(depths=(13,)), "hidden layers must be between 1 and 12"),
    (lambda: GridConfig(noise=80), "noise (%) must be between 0 and 50"),
])
def test_configs_refuse_out_of_range_settings_with_the_range(build, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        build()


def test_data_is_multiclass_and_deterministic():
    cfg = LRConfig(**TINY)
    a, b = make_data(cfg), make_data(cfg)
    assert a.classes == 3 and set(a.y_train.tolist()) == {0, 1, 2}
    assert torch.equal(a.x_train, b.x_train) and len(a.y_train) == n_train(cfg) == 60
    assert grid_shapes() == [(1, 16), (2, 16), (6, 16), (10, 16), (6, 8), (6, 32), (6, 64)]


def test_lr_part_runs_as_one_batch_marks_lr_1_diverged_and_the_others_go_on():
    cfg = LRConfig(**TINY, epochs=3)
    m = lab.run_lr(cfg, device=CPU)
    assert m["names"][0] == "lr 1, BN off" and len(m["names"]) == 8
    assert m["history"]["epoch"] == [1.0, 2.0, 3.0]
    assert m["diverged_step"][0] is not None and "lr 1, BN off diverged at step" in m["diverged"][0]
    assert math.isnan(m["finals"][0]["test_loss"])
    assert all(math.isfinite(m["finals"][i]["test_loss"]) for i in (1, 2, 3))
    rows = lab.lr_table(m)
    assert rows[1]["lr"] == 0.01 and rows[4]["batch norm"] == "on"


def test_batch_part_follows_the_steps_table():
    cfg = BatchSizeConfig(**TINY, batch_sizes=(4, 60), epochs=2, width=8, depth=2, evals=4)
    m = lab.run_batch(cfg, device=CPU)
    assert [r["history"]["step"][-1] for r in m["runs"]] == [30, 2]
    eq = lab.run_batch(BatchSizeConfig(**TINY, batch_sizes=(4, 60), mode="steps", steps=6, width=8, depth=2,
                                       evals=3), device=CPU)
    assert [r["history"]["step"] for r in eq["runs"]] == [[2, 4, 6]] * 2
    assert eq["runs"][1]["history"]["epoch"][-1] == 6.0


def test_grid_part_trains_all_shapes_in_one_stack_and_counts_regions(tmp_path):
    cfg = GridConfig(**TINY, depths=(1, 3), widths=(4, 8), epochs=2, region_grid=40, image_grid=12)
    entry = lab.run(cfg, Cache(tmp_path), device=CPU)
    m = entry.metrics
    assert m["names"] == ["depth 1 x width 16", "depth 3 x width 16", "depth 6 x width 4", "depth 6 x width 8"]
    assert m["groups"] == [{"models": ["depth 6 x width 4", "depth 6 x width 8"], "depth": 6, "width": 8},
                           {"models": ["depth 1 x width 16", "depth 3 x width 16"], "depth": 3, "width": 16}]
    assert m["region_bound"] == [137, None, None, None]
    assert 1 <= m["regions"][0] <= 137
    assert entry.tensors()["fields"].shape == (4, 12, 12, 3)
    best, worst = lab.best_worst(m)
    assert best != worst
    assert entry.meta["recompute"].startswith("python -m explorer hyper grid")
    assert lab.run(cfg, Cache(tmp_path)).key == entry.key  # the second call reads the cache


def test_cli_command_round_trips_non_defaults():
    cfg = LRConfig(epochs=5, bn=(True,), lrs=(0.1, 0.001))
    cmd = lab.cli_command(cfg)
    assert cmd == "python -m explorer hyper lr --lrs 0.1 0.001 --bn on --epochs 5"
    args = cmd.split()[5:]
    ns = cli.argparse.ArgumentParser()
    cli._add_fields(ns, LRConfig)
    assert cli._config("lr", ns.parse_args(args)) == cfg
    assert lab.cli_command(GridConfig(bn=True)) == "python -m explorer hyper grid --bn"


def test_cli_prints_tables_and_refuses_bad_settings(capsys):
    assert cli.main(["lr", "--n-points", "80", "--epochs", "2", "--width", "4", "--no-cache"]) == 0
    out = capsys.readouterr().out
    assert "lr 0.01, BN off" in out and "diverged at step" in out and "test acc" in out
    assert cli.main(["batch", "--n-points", "80", "--batch-sizes", "8", "40", "--epochs", "1", "--depth", "1",
                     "--no-cache"]) == 0
    out = capsys.readouterr().out
    assert "steps per epoch" in out and "total steps" in out
    assert cli.main(["lr", "--lrs", "20"]) == 2
    assert "learning rate must be between" in capsys.readouterr().err
