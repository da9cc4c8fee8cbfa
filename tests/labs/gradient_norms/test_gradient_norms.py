"""Gradient norms lab: the vanishing gradient of a deep plain sigmoid net and its fixes, norms against autograd,
refused settings, divergence, the cache and the CLI."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from explorer.core.cache import Cache
from explorer.core.config import ConfigError
from explorer.labs.gradient_norms import cli, lab
from explorer.train.evaluate import Diverged

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny layers on a busy machine: one intra-op thread, as the app runs them (restored afterwards)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _first(cfg: lab.RunConfig) -> list[float]:
    return lab.train(cfg, device=CPU).layer_norms[0]


def test_a_60_layer_plain_sigmoid_net_underflows_and_residual_and_batch_norm_do_not():
    plain = _first(lab.RunConfig(depth=60, iterations=1))
    assert plain[0] == 0.0 or plain[0] < 1e-20  # float32: layer 1's gradient is gone
    assert plain[-1] > 1e-2  # while the last layer's is of order 1
    for variant in ("residual", "batchnorm"):
        assert _first(lab.RunConfig(depth=60, iterations=1, variant=variant))[0] > 1e-4


def test_float64_shows_how_small_the_vanished_gradient_is_and_depth_10_is_already_tiny():
    deep = _first(lab.RunConfig(depth=60, iterations=1, dtype="float64"))
    assert 0.0 < deep[0] < 1e-40
    ten = _first(lab.RunConfig(depth=10, iterations=1))
    assert ten[0] / ten[-1] < 1e-6  # many orders of magnitude between layer 1 and layer 10


def test_relu_with_he_init_keeps_a_plain_60_layer_net_alive():
    norms = _first(lab.RunConfig(depth=60, iterations=1, activation="relu", init="he"))
    assert min(norms) > 1e-4


@pytest.mark.parametrize("variant", list(lab.VARIANTS))
def test_per_layer_norms_equal_autograds_on_a_tiny_net(variant):
    cfg = lab.RunConfig(depth=4, width=5, variant=variant, dtype="float64")
    model = lab.make_model(cfg, 2, 3)
    x, y = torch.randn(7, 2, dtype=torch.float64), torch.tensor([0, 1, 2, 0, 1, 2, 0])
    loss = nn.functional.cross_entropy(model(x), y)
    grads = torch.autograd.grad(loss, [lin.weight for lin in model.linears], retain_graph=True)
    loss.backward()
    ours = lab.layer_grad_norms(model)
    assert len(ours) == 4
    torch.testing.assert_close(ours, torch.stack([g.pow(2).sum().sqrt() for g in grads]))
    every = torch.cat([p.grad.flatten() for p in model.parameters()])
    torch.testing.assert_close(lab.total_grad_norm(model), every.norm())


def test_norms_of_tiny_float32_gradients_do_not_underflow_in_the_norm_itself():
    g = torch.full((1, 3, 3), 1e-30)  # squaring these in float32 would give 0
    assert torch.linalg.vector_norm(g) == 0  # what a naive float32 norm says
    assert lab.scaled_norms(g).item() == pytest.approx(3e-30, rel=1e-6)
    assert lab.scaled_norms(torch.zeros(2, 4)).tolist() == [0.0, 0.0]


@pytest.mark.parametrize("kwargs, text", [
    ({"depth": 61}, "depth must be between 2 and 60"),
    ({"depth": 1}, "depth must be between 2 and 60"),
    ({"width": 1}, "width must be between 2 and 256"),
    ({"activation": "gelu"}, "activation must be one of sigmoid, tanh, relu"),
    ({"variant": "dense"}, "variant must be one of plain, batchnorm, residual"),
    ({"iterations": 0}, "iterations must be between 1 and 2000"),
    ({"lr": 0.0}, "learning rate must be between"),
    ({"dtype": "float16"}, "dtype must be one of float32, float64"),
    ({"data": "imagenet"}, "data set must be one of"),
    ({"depth": 60, "width": 256, "iterations": 2000, "batch_size": 1024}, "parameter-iterations"),
])
def test_the_config_refuses_out_of_range_settings(kwargs, text):
    with pytest.raises(ConfigError, match=text):
        lab.RunConfig(**kwargs)


def test_the_comparison_refuses_repeats_and_too_many_depths():
    with pytest.raises(ConfigError, match="once"):
        lab.CompareConfig(depths=(10, 10))
    with pytest.raises(ConfigError, match="1 to 4 depths"):
        lab.CompareConfig(depths=(2, 3, 4, 5, 6))
    with pytest.raises(ConfigError, match="depth must be between"):
        lab.CompareConfig(depths=(70,))
    assert [r.name for r in lab.CompareConfig(variants=("plain",), depths=(3, 5)).runs()] == \
        ["plain, depth 3", "plain, depth 5"]


def test_a_diverging_run_stops_at_once_and_says_why(tmp_path):
    cfg = lab.RunConfig(depth=60, activation="relu", init="he", variant="residual", lr=1.0, iterations=50)
    with pytest.raises(Diverged, match="diverged at step .*learning rate 1 is probably too high"):
        lab.train(cfg, device=CPU)
    out = lab.compare(lab.CompareConfig(variants=("residual", "plain"), depths=(60,), activation="relu", init="he",
                                        lr=1.0, iterations=50), Cache(tmp_path / "c"))
    assert out["final"] and "residual, depth 60 diverged at step" in out["diverged"][0]
    assert "residual, depth 60" not in [h["name"] for h in out["runs"]]  # the others went on
    assert len(out["runs"]) + len(out["diverged"]) == 2


def test_a_run_is_cached_with_its_exact_zeros(tmp_path):
    cache = Cache(tmp_path / "c")
    cfg = lab.RunConfig(depth=60, iterations=3)
    first = lab.run(cfg, cache)
    assert lab.cached(cfg, cache) is not None
    again = lab.from_entry(lab.cached(cfg, cache))
    assert again.layer_norms == first.layer_norms and again.loss == first.loss
    assert lab.zeros(again.to_dict())[0] > 0
    small = lab.CompareConfig(variants=("plain",), depths=(60,), iterations=3)
    assert lab.all_cached(small, cache)["runs"][0]["layer_norms"] == first.layer_norms


def test_the_image_sets_train_flattened():
    h = lab.train(lab.RunConfig(data="digits", depth=3, iterations=2, n_train=50), device=CPU)
    assert len(h.layer_norms) == 2 and len(h.layer_norms[0]) == 3


def test_cli_prints_first_middle_last_layer_table(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cli, "default_cache", lambda: Cache(tmp_path / "c"))
    assert cli.main(["--depth", "5,60", "--variant", "plain,residual", "--iterations", "3"]) == 0
    out = capsys.readouterr().out
    assert "plain, depth 60" in out and "residual, depth 5" in out and "iteration 1" in out
    rows = [line.split() for line in out.splitlines() if line.startswith("plain, depth 60")]
    assert [r[3] for r in rows] == ["1", "30", "60"]
    assert float(rows[0][4]) < 1e-20 and rows[0][-3] != "0"  # layer 1 of the plain 60-layer net; zeros counted
    assert cli.main(["--depth", "61"]) == 2
    assert "depth must be between 2 and 60" in capsys.readouterr().err
    assert cli.main(["--depth", "60", "--variant", "residual", "--activation", "relu", "--init", "he", "--lr", "1",
                     "--iterations", "50"]) == 1
    assert "diverged" in capsys.readouterr().err
