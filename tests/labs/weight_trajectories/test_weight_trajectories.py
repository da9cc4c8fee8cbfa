"""Weight trajectories: the PCA, the snapshots of the batched run, the loss surface, refusals and the CLI."""

from __future__ import annotations

import pytest
import torch

from explorer.core.cache import Cache
from explorer.core.config import ConfigError
from explorer.core.seeding import seeded
from explorer.labs.weight_trajectories import cli, paths, surface
from explorer.train.evaluate import Diverged, evaluate
from explorer.train.stacked import BatchConfig
from explorer.nets.small import flat_views, stacked_forward

CPU = torch.device("cpu")
TINY = paths.ToyConfig(n_points=60, seeds=3, epochs=4, every=2, batch_size=10, width=6)


def test_pca_explained_variance_sums_to_at_most_one_and_the_projection_reconstructs():
    x = torch.randn(12, 50, generator=torch.Generator().manual_seed(0))
    fit = paths.pca(x, n=12)
    ev = fit["explained"]
    assert float(ev.sum()) <= 1 + 1e-9 and bool((ev[:-1] >= ev[1:]).all())
    assert float(ev[:2].sum()) <= 1
    assert float(ev[11:].sum()) < 1e-12  # 12 centred rows span at most 11 directions
    back = fit["coords"] @ fit["components"] + fit["mean"]
    assert torch.allclose(back, x.double(), atol=1e-10)
    low = paths.pca(x[:3], n=2)  # 3 snapshots: 2 components hold everything
    assert abs(float(low["explained"][:2].sum()) - 1) < 1e-9
    assert torch.allclose(low["coords"] @ low["components"] + low["mean"], x[:3].double(), atol=1e-10)


def test_snapshots_of_the_batched_run():
    w = paths.toy_workload(TINY, CPU)
    bcfg = BatchConfig(lr=TINY.lr, batch_size=TINY.batch_size, epochs=TINY.epochs, seed=5, init_seed=5,
                       same_init=False)
    m, t = paths.train_runs(w, bcfg, TINY.seeds, TINY.every, device=CPU)
    assert m["snapshot_epochs"] == [0, 2, 4] and m["seeds"] == [5, 6, 7]
    assert m["params"] == {"layer 1": 3 * 6, "whole model": 2 * 6 + 6 + 6 * 6 + 6 + 6 * 2 + 2}
    for part in paths.PARTS:
        coords = torch.tensor(m["pca"][part]["coords"])
        assert coords.shape == (3, 3, 2) and sum(m["pca"][part]["explained"]) <= 1 + 1e-9
    path = t["path0"]
    assert path.shape == (TINY.epochs + 1, m["params"]["whole model"])
    for k, seed in enumerate(m["seeds"][:2]):  # each run starts from its own seed's initial weights
        with seeded(seed):
            init = torch.cat([p.detach().flatten() for p in w.spec.build().parameters()])
        if k == 0:
            assert torch.equal(path[0], init)
        else:
            assert not torch.equal(path[0], init)  # run 0's path is seed 5's, not seed 6's
    assert not torch.equal(path[0], path[-1])


def test_the_batched_run_equals_separate_runs():
    w = paths.toy_workload(TINY, CPU)
    cfg = dict(lr=TINY.lr, batch_size=TINY.batch_size, epochs=TINY.epochs, seed=5, same_init=False)
    both, _ = paths.train_runs(w, BatchConfig(init_seed=5, **cfg), 2, 2, device=CPU)
    for k in range(2):
        alone, _ = paths.train_runs(w, BatchConfig(init_seed=5 + k, **cfg), 1, 2, device=CPU)
        for name in ("train_loss", "test_acc"):
            got = [row[k] for row in both["curves"][name]]
            assert got == pytest.approx([row[0] for row in alone["curves"][name]], abs=1e-5)


def test_a_diverging_run_stops_and_says_why():
    w = paths.toy_workload(TINY, CPU)
    w.x = w.x.clone()
    w.x[0, 0] = float("nan")
    bcfg = BatchConfig(epochs=2, batch_size=1000, same_init=False)
    with pytest.raises(Diverged, match="the run from seed 0 diverged at step 1"):
        paths.train_runs(w, bcfg, 2, 1, device=CPU)


def test_surface_directions_and_its_centre_is_the_final_loss(tmp_path):
    cache = Cache(tmp_path)
    cfg = surface.SurfaceConfig(run=TINY, grid=5)
    s = surface.run(cfg, cache).metrics
    path = paths.run(TINY, cache).tensors()["path0"].double()
    d, coords, ratio = surface.directions(path)
    assert torch.allclose(d @ d.T, torch.eye(2, dtype=torch.float64), atol=1e-9)
    assert coords[-1].abs().max() == 0 and float(ratio.sum()) <= 1 + 1e-9
    assert len(s["loss"]) == 5 and len(s["loss"][0]) == 5 and len(s["path"]) == TINY.epochs + 1
    w = paths.toy_workload(TINY, CPU)
    m = paths.run(TINY, cache).metrics
    zero = torch.zeros(1, dtype=torch.float32)
    at_end = surface.loss_grid(w.spec.net, m["shapes"], path[-1].float(), d.float(), zero, zero, w.x, w.y)
    final = flat_views(path[-1:].float(), {n: torch.Size(sh) for n, sh in m["shapes"]})
    [(loss, _)] = evaluate(lambda xb: stacked_forward(w.spec.net, final, xb), w.x, [w.y], 2048)
    assert abs(float(at_end[0, 0]) - float(loss[0])) < 1e-5


@pytest.mark.parametrize("kwargs, message", [
    ({"seeds": 1}, "seeds must be between 2 and 16"),
    ({"epochs": 3, "every": 4}, "epochs between snapshots must be between 1 and 3"),
    ({"dataset": "imagenet"}, "dataset"),
    ({"lr": 5.0}, "learning rate must be between"),
])
def test_settings_out_of_range_are_refused(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        paths.TrajConfig(**kwargs)


def test_surface_and_toy_refusals():
    with pytest.raises(ConfigError, match="grid points per axis must be between 5 and 61"):
        surface.SurfaceConfig(grid=2)
    with pytest.raises(ConfigError, match="2D data set"):
        paths.ToyConfig(data="nope")


def test_cli_prints_the_table(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("EXPLORER_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr("explorer.labs.weight_trajectories.cli.default_cache", lambda: Cache(tmp_path))
    assert cli.main(["toy", "--n-points", "60", "--seeds", "2", "--epochs", "2", "--every", "1", "--width", "4",
                     "--surface", "5"]) == 0
    out = capsys.readouterr().out
    assert "explained variance PC1" in out and "loss surface around run 0" in out
    assert cli.main(["images", "--seeds", "40"]) == 2
    assert "seeds must be between 2 and 16" in capsys.readouterr().err
