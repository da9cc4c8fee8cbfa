"""The critical-points lab: the minimal ratio of known quadratics, the perturbation estimate, batched runs equal to
separate runs, the gradient-norm phase, refusals, divergence and the command line, on tiny cases."""

from __future__ import annotations

import pytest
import torch
from torch.func import grad, hessian, vmap

from explorer.core.cache import Cache, default_shipped_root
from explorer.core.config import ConfigError
from explorer.labs.critical_points import cli, lab
from explorer.train.evaluate import Diverged

TINY = dict(runs=4, n_points=20, hidden=2, steps_loss=60, steps_grad=60, lm_steps=3, n_perturb=50)


def _saddle(t: torch.Tensor) -> torch.Tensor:
    return t[0] ** 2 - t[1] ** 2


def test_minimal_ratio_of_a_saddle_is_one_half():
    eigs = torch.linalg.eigvalsh(hessian(_saddle)(torch.zeros(2, dtype=torch.float64)))
    ratio, neg, zero, pos = lab.minimal_ratio(eigs, 0.0)
    assert float(ratio) == 0.5 and (int(neg), int(zero), int(pos)) == (1, 0, 1)
    flat = torch.tensor([0.0, 3.0, 1e-9], dtype=torch.float64)  # a minimum with one flat direction
    ratio, neg, zero, pos = lab.minimal_ratio(flat, 1e-6)
    assert float(ratio) == pytest.approx(1 / 3) and (int(neg), int(zero), int(pos)) == (0, 2, 1)


def test_perturbation_estimate_of_the_saddle_and_of_a_minimum():
    at = torch.zeros(1, 2, dtype=torch.float64)
    share = lab.perturbation_ratio(_saddle, at, 4000, 1e-3, seed=0)
    assert float(share[0]) == pytest.approx(0.5, abs=0.04)  # u0^2 > u1^2 for half the directions
    bowl = lab.perturbation_ratio(lambda t: (t ** 2).sum(), at, 200, 1e-3, seed=0)
    assert float(bowl[0]) == 1.0


def test_forward_matches_an_explicit_mlp():
    cfg = lab.CriticalConfig(hidden=3, runs=1)
    theta = lab.init(cfg)[0]
    assert theta.numel() == cfg.params == 22
    x, _ = lab.data(cfg)
    w1, b1, w2, b2, w3, b3 = theta[:3], theta[3:6], theta[6:15].view(3, 3), theta[15:18], theta[18:21], theta[21:]
    want = torch.tanh(torch.tanh(x[:, None] * w1 + b1) @ w2.T + b2) @ w3 + b3
    assert torch.allclose(lab.forward(theta, x, 3), want)


def test_batched_runs_equal_separate_runs():
    cfg = lab.CriticalConfig(**{**TINY, "runs": 3})
    start = lab.init(cfg)
    together = lab.optimise(cfg, start)
    for i in range(3):
        alone = lab.optimise(cfg, start[i:i + 1])
        assert torch.allclose(together[i], alone[0], rtol=1e-9, atol=1e-12)


def test_the_gradient_norm_phase_lowers_the_gradient_norm():
    cfg = lab.CriticalConfig(**{**TINY, "steps_grad": 0, "lm_steps": 0})
    x, y = lab.data(cfg)
    g = vmap(grad(lab.loss_fn(cfg, x, y)))
    after_loss = lab.optimise(cfg, lab.init(cfg))
    after_both = lab.optimise(lab.CriticalConfig(**{**TINY, "steps_grad": 200, "lm_steps": 10}), lab.init(cfg))
    assert (g(after_both).norm(dim=1) < g(after_loss).norm(dim=1)).all()


def test_compute_gives_every_run_its_row_and_caches(tmp_path):
    cfg = lab.CriticalConfig(**TINY)
    cache = Cache(tmp_path)
    entry = lab.run(cfg, cache)
    rows = entry.metrics["rows"]
    assert rows["run"] == [0, 1, 2, 3] and entry.metrics["params"] == cfg.params == 13
    for i in range(4):
        assert rows["neg"][i] + rows["zero"][i] + rows["pos"][i] == 13
        assert rows["ratio"][i] == pytest.approx(rows["pos"][i] / 13)
        assert 0 <= rows["perturb_ratio"][i] <= 1 and rows["grad_norm"][i] >= 0
        assert 0 <= rows["grad_flat_share"][i] <= 1 + 1e-9
    assert lab.run(cfg, cache).path == entry.path


def test_config_refuses_out_of_range_values():
    with pytest.raises(ConfigError, match="hidden width must be between 1 and 16"):
        lab.CriticalConfig(hidden=64)
    with pytest.raises(ConfigError, match="runs must be between"):
        lab.CriticalConfig(runs=0)
    with pytest.raises(ConfigError, match="target"):
        lab.CriticalConfig(target="nope")


def test_a_diverging_run_stops_and_says_why(monkeypatch):
    real = lab.data

    def poisoned(cfg):
        x, y = real(cfg)
        return x, y * float("nan")

    monkeypatch.setattr(lab, "data", poisoned)
    with pytest.raises(Diverged, match=r"run 0 \(loss\) diverged at step 1"):
        lab.optimise(lab.CriticalConfig(**TINY), lab.init(lab.CriticalConfig(**TINY)))


def test_cli_prints_a_table_and_refuses_bad_settings(capsys):
    assert cli.main(["--runs", "3", "--hidden", "2", "--n-points", "20", "--steps-loss", "30", "--steps-grad", "30",
                     "--lm-steps", "2", "--n-perturb", "20"]) == 0
    out = capsys.readouterr().out
    assert "minimal ratio" in out and "|grad|" in out and "perturb" in out and "(13 params)" in out
    assert cli.main(["--hidden", "99"]) == 2
    assert "hidden width" in capsys.readouterr().err


def test_the_shipped_default_loads_with_its_provenance(tmp_path):
    """The page opens on the shipped default (about 20 s to recompute on 2 cores) with how it was computed."""
    entry = Cache(tmp_path / "runtime", shipped_root=default_shipped_root()).get(lab.KIND, lab.CriticalConfig())
    assert entry is not None and entry.shipped
    assert entry.meta["recompute"] == "python -m explorer critical" and entry.meta["cpu"]
    rows = entry.metrics["rows"]
    s = lab.summary(rows)
    assert len(rows["run"]) == 100 and 0 < s["ratio_min"] <= s["ratio_max"] < 1 and s["grad_max"] < 1e-2
