"""Interpolation lab: exact ends, batch-norm recomputation, filter normalisation, the barrier, refusals, the CLI."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from explorer.core.cache import Cache
from explorer.core.config import ConfigError
from explorer.labs.interpolation import cli, lines, plane
from explorer.train.evaluate import Diverged

CPU = torch.device("cpu")
TINY = dict(n_train=100, n_test=100, epochs=1, points=4, channels=2, width=4)  # alphas -1, 0, 1, 2


@pytest.mark.parametrize("net", ["cnn", "cnn_bn"])
def test_the_line_at_alpha_0_and_1_is_exactly_the_two_solutions(net):
    cfg = lines.InterpConfig(net=net, **TINY)
    assert cfg.alphas == [-1.0, 0.0, 1.0, 2.0]
    m, t = lines.compute(cfg, device=CPU)
    ab, al = m["lines"]["A to B"], m["alphas"]
    for alpha, who in ((0.0, "A"), (1.0, "B")):
        for k, v in m["ends"][who].items():
            assert ab[k][al.index(alpha)] == v  # exactly, not approximately
    for k, v in m["ends"]["init"].items():
        assert m["lines"]["init to A"][k][al.index(0.0)] == v
    assert m["bn"] is (net == "cnn_bn")
    assert m["ends"]["A"]["train_loss"] < m["ends"]["init"]["train_loss"]
    assert set(m["slices"]) == {"A", "B"} and len(m["slices"]["A"]["t"]) == cfg.points
    assert m["barrier"]["train_loss"] >= 0
    assert {k.split("/")[0] for k in t} == {"init", "A", "B"}


def test_mix_is_exact_at_the_ends_and_keeps_integer_buffers():
    torch.manual_seed(0)
    a = lines.state_of(lines.build("cnn_bn", 2, 4, (1, 8, 8), 10))
    b = {k: v + 1 if v.is_floating_point() else v + 3 for k, v in a.items()}
    for alpha, ref in ((0.0, a), (1.0, b)):
        mixed = lines.mix(a, b, alpha)
        for k, v in mixed.items():
            if v.is_floating_point():
                assert torch.equal(v, ref[k])
    assert torch.equal(lines.mix(a, b, 0.5)["bn1.num_batches_tracked"], a["bn1.num_batches_tracked"])


def test_recomputing_batch_norm_statistics_changes_them_to_the_datas():
    torch.manual_seed(0)
    model = lines.build("cnn_bn", 3, 4, (1, 8, 8), 10)
    state = lines.state_of(model)
    x = torch.randn(100, 1, 8, 8) * 2 + 1
    new = lines.recompute_bn(model, state, x)
    assert not torch.equal(new["bn1.running_mean"], state["bn1.running_mean"])
    assert not torch.equal(new["bn2.running_var"], state["bn2.running_var"])
    with torch.no_grad():  # one batch (100 <= BN_BATCH): the statistics are the batch's own
        h = nn.functional.conv2d(x, state["conv1.weight"], state["conv1.bias"], padding=1)
    assert torch.allclose(new["bn1.running_mean"], h.mean((0, 2, 3)), atol=1e-5)
    assert torch.allclose(new["bn1.running_var"], h.var((0, 2, 3), unbiased=True), rtol=1e-4)
    assert torch.equal(new["conv1.weight"], state["conv1.weight"])
    assert [m.momentum for m in model.modules() if isinstance(m, nn.BatchNorm2d)] == [0.1, 0.1]


def test_filter_normalisation_gives_each_filter_the_solutions_norm():
    torch.manual_seed(0)
    model = lines.build("cnn_bn", 3, 4, (1, 8, 8), 10)
    state = lines.state_of(model)
    names = {n for n, _ in model.named_parameters()}
    d = lines.filter_normalised(state, names, torch.Generator().manual_seed(1))
    for k, v in state.items():
        if k in names and v.dim() > 1:
            assert torch.allclose(d[k].flatten(1).norm(dim=1), v.flatten(1).norm(dim=1), rtol=1e-5)
            assert not torch.allclose(d[k], v)
        else:  # biases, batch-norm weights and statistics do not move
            assert not d[k].any()


def test_barrier_is_the_rise_above_the_straight_line():
    alphas = [-1.0, 0.0, 0.5, 1.0, 2.0]
    assert lines.barrier([9.0, 1.0, 3.0, 2.0, 9.0], alphas) == pytest.approx(1.5)
    assert lines.barrier([9.0, 1.0, 1.0, 2.0, 9.0], alphas) == 0.0


def test_a_diverging_recipe_stops_and_says_why():
    cfg = lines.InterpConfig(**TINY)
    data = lines.load_data(cfg, CPU)
    data.x[0] = float("nan")
    model = lines.build("cnn", 2, 4, (1, 8, 8), 10)
    with pytest.raises(Diverged, match="solution A diverged at step"):
        lines.train_solution(model, lines.state_of(model), 64, 1e-3, 1, data, 0, "solution A")


@pytest.mark.parametrize("kwargs, message", [
    ({"net": "resnet"}, "network"),
    ({"lr_b": 3.0}, "learning rate of B must be between"),
    ({"batch_a": 0}, "batch size of A must be between 1 and 8192"),
    ({"points": 2}, "points along a line must be between 3 and 201"),
    ({"alpha_max": 0.5}, "largest alpha must be between 1"),
])
def test_settings_out_of_range_are_refused(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        lines.InterpConfig(**kwargs)
    with pytest.raises(ConfigError, match="grid points per axis must be between 5 and 61"):
        plane.PlaneConfig(grid=100)


def test_cli_prints_the_table_and_the_plane(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("explorer.labs.interpolation.cli.default_cache", lambda: Cache(tmp_path))
    argv = ["--n-train", "100", "--n-test", "100", "--epochs", "1", "--points", "4", "--channels", "2", "--width",
            "4", "--line", "all", "--plane", "B"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "loss barrier A-B" in out and "init to B" in out and "2D slice around B" in out
    assert cli.main(["--lr-a", "7"]) == 2
    assert "learning rate of A must be between" in capsys.readouterr().err
