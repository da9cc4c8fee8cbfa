"""The sharpness lab: power iteration, Hessian-vector products, epsilon-sharpness, input sensitivity, the sweep and
its command line, on tiny cases."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import hessian

from explorer.core.cache import Cache
from explorer.core.config import ConfigError
from explorer.labs.sharpness import cli, lab
from explorer.train import curvature as hs
from explorer.train.evaluate import Diverged

TINY = dict(batch_sizes=(16, 128), steps=15, n_train=200, n_test=60, n_hessian=64, power_iters=5, ascent_steps=3,
            width=8)


def _quadratic(h: torch.Tensor):
    return lambda t: 0.5 * (h * t * t).sum()


def test_power_iteration_finds_the_top_eigenvalue_of_a_diagonal_quadratic():
    h = torch.tensor([0.5, 5.0, 1.0, 2.0, 0.1], dtype=torch.float64)
    res = hs.top_eigenvalue(_quadratic(h), torch.randn(5, dtype=torch.float64), iters=300, tol=1e-12)
    assert res.eigenvalue == pytest.approx(5.0, rel=1e-6)
    assert abs(float(res.vector[1])) == pytest.approx(1.0, abs=1e-3)


def _tiny_net() -> tuple[hs.LossFn, torch.Tensor]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 3)).double()
    x, y = torch.randn(20, 3, dtype=torch.float64), torch.randint(0, 3, (20,))
    return hs.flat_loss(model, x, y)


def test_power_iteration_matches_the_exact_hessian_of_a_tiny_net():
    loss_fn, theta = _tiny_net()
    eigs = torch.linalg.eigvalsh(hessian(loss_fn)(theta))
    top = float(eigs[eigs.abs().argmax()])
    res = hs.top_eigenvalue(loss_fn, theta, iters=500, tol=1e-12)
    assert res.eigenvalue == pytest.approx(top, rel=1e-4)


def test_hvp_equals_the_hessian_times_v():
    loss_fn, theta = _tiny_net()
    v = torch.randn_like(theta)
    assert torch.allclose(hs.hvp(loss_fn, theta, v), hessian(loss_fn)(theta) @ v, atol=1e-10)


def test_epsilon_sharpness_of_a_quadratic_is_its_closed_form_and_stays_in_the_box():
    h = torch.tensor([1.0, 4.0, 0.5], dtype=torch.float64)
    theta = torch.tensor([0.3, -0.2, 1.5], dtype=torch.float64)
    eps = 1e-2
    box = eps * (theta.abs() + 1)
    base = float(0.5 * (h * theta ** 2).sum())
    best = float(0.5 * (h * (theta.abs() + box) ** 2).sum())  # each coordinate pushed outward to the box's edge
    res = hs.epsilon_sharpness(_quadratic(h), theta, eps=eps, steps=10)
    assert res.box_ok
    assert res.max_loss == pytest.approx(best, rel=1e-9)
    assert res.sharpness == pytest.approx(100 * (best - base) / (1 + base), rel=1e-9)
    assert res.max_loss < float(0.5 * (h * (theta.abs() + 1.01 * box) ** 2).sum())  # not beyond the box


def test_input_sensitivity_equals_per_example_autograd():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Flatten(), nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
    x, y = torch.randn(7, 1, 2, 3), torch.randint(0, 3, (7,))
    norms = []
    for i in range(7):
        xi = x[i:i + 1].clone().requires_grad_(True)
        (g,) = torch.autograd.grad(nn.functional.cross_entropy(model(xi), y[i:i + 1]), xi)
        norms.append(float(g.norm()))
    assert hs.input_sensitivity(model, x, y, chunk=3) == pytest.approx(sum(norms) / 7, rel=1e-5)


def test_config_refuses_out_of_range_values():
    with pytest.raises(ConfigError, match="between"):
        lab.SharpConfig(lr=50.0)
    with pytest.raises(ConfigError, match="batch size must be between 1 and 4096"):
        lab.SharpConfig(batch_sizes=(16, 10_000))
    with pytest.raises(ConfigError, match="dataset"):
        lab.SharpConfig(dataset="imagenet")


def test_sweep_measures_every_batch_size_and_caches(tmp_path):
    cfg = lab.SharpConfig(**TINY)
    cache = Cache(tmp_path)
    entry = lab.run(cfg, cache)
    rows = entry.metrics["rows"]
    assert [r["batch_size"] for r in rows] == [16, 128] and all(r["steps"] == 15 for r in rows)
    for r in rows:
        assert r["top_eigenvalue"] > 0 and r["epsilon_sharpness"] >= 0 and r["sensitivity"] > 0 and r["box_ok"]
    assert lab.run(cfg, cache).path == entry.path  # the second call reads the cache
    epochs = lab.SharpConfig(**{**TINY, "budget": "epochs", "epochs": 1})
    assert [r["steps"] for r in lab.sweep(epochs, device=torch.device("cpu"))["rows"]] == [12, 1]


def test_a_diverging_run_stops_and_says_why(monkeypatch):
    real = lab.load_data

    def poisoned(cfg):  # one infinite pixel: the first minibatch that holds it has a non-finite loss
        d = real(cfg)
        d["x"][:, 0, 0, 0] = float("inf")
        return d

    monkeypatch.setattr(lab, "load_data", poisoned)
    with pytest.raises(Diverged, match="batch size 16 diverged at step 1:.*learning rate 2"):
        lab.sweep(lab.SharpConfig(**{**TINY, "lr": 2.0, "batch_sizes": (16,)}), device=torch.device("cpu"))


def test_cli_prints_a_table_and_refuses_bad_settings(capsys):
    assert cli.main(["--batch-sizes", "16", "64", "--steps", "10", "--n-train", "200", "--n-test", "60",
                     "--n-hessian", "32", "--width", "8", "--power-iters", "3", "--ascent-steps", "2"]) == 0
    out = capsys.readouterr().out
    assert "top eig" in out and "eps-sharp" in out and "10 SGD steps each" in out
    assert cli.main(["--lr", "50"]) == 2
    assert "learning rate" in capsys.readouterr().err


def test_the_small_cnn_gets_its_curvature_too():
    cfg = lab.SharpConfig(**{**TINY, "arch": "cnn", "batch_sizes": (16,), "steps": 3, "n_hessian": 16})
    m = lab.sweep(cfg, device=torch.device("cpu"))
    assert m["network"].startswith("Small CNN") and m["rows"][0]["top_eigenvalue"] > 0


def test_the_shipped_default_loads_and_shows_the_trend(tmp_path):
    from explorer.core.cache import default_shipped_root

    entry = Cache(tmp_path / "runtime", shipped_root=default_shipped_root()).get(lab.KIND, lab.SharpConfig())
    assert entry is not None and entry.shipped and "sharpness" in entry.meta["recompute"]
    eig = {r["batch_size"]: r["top_eigenvalue"] for r in entry.metrics["rows"]}
    assert eig[512] > 3 * eig[16]  # large batches end sharper: the phenomenon the page's default shows
