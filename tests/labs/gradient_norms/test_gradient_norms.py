"""Gradient norms lab: the vanishing gradient of a deep plain sigmoid net and its fixes, norms against autograd,
refused settings, divergence, the cache and the CLI; the course's CNNs on image data."""

from __future__ import annotations

from dataclasses import replace

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


# --- CNNs ----------------------------------------------------------------------------------------------------

TINY_CNN = {"data": "digits", "iterations": 3, "n_train": 40, "batch_size": 16, "cnn_width": 0.125}


@pytest.mark.parametrize("family", lab.cnn.FAMILIES)
def test_every_cnn_family_trains_on_8x8_digits_with_one_norm_per_conv_and_linear_layer(family):
    cfg = lab.RunConfig(network=family, **TINY_CNN)
    h = lab.train(cfg, device=CPU)
    model = lab.make_network(cfg, (1, 8, 8), 10)
    n = sum(isinstance(m, (nn.Conv2d, nn.Linear)) for m in model.modules())
    assert h.depth == len(h.layers) == n and h.layers[0] == "conv 1" and h.layers[-1] == "fc"
    assert h.iteration == [1, 2, 3] and len(h.loss) == len(h.total_norm) == 3
    assert all(len(row) == n and all(0 < v < float("inf") for v in row) for row in h.layer_norms)
    assert all(0 < v < float("inf") for v in h.loss + h.total_norm)


def test_cnn_layer_norms_equal_autograds_in_forward_order():
    model = lab.make_network(lab.RunConfig(network="resnet20", dtype="float64", **TINY_CNN), (1, 8, 8), 3)
    x, y = torch.rand(4, 1, 8, 8, dtype=torch.float64), torch.tensor([0, 1, 2, 0])
    loss = nn.functional.cross_entropy(model(x), y)
    layers = lab.weight_layers(model)
    grads = torch.autograd.grad(loss, [m.weight for m in layers], retain_graph=True)
    loss.backward()
    torch.testing.assert_close(lab.layer_grad_norms(model), torch.stack([g.pow(2).sum().sqrt() for g in grads]))
    assert layers[0] is model[0][0] and layers[-1] is model[-1]  # the stem conv first, the classifier last
    assert lab.layer_names(model) == [*(f"conv {i}" for i in range(1, 20)), "fc"]


def test_a_cnn_on_a_toy_set_or_over_the_flops_limit_is_refused():
    with pytest.raises(ConfigError, match="a CNN needs image data.*CIFAR-10"):
        lab.RunConfig(network="simple", data="spiral")
    with pytest.raises(ConfigError, match=r"FLOPs .*at most 2e\+12.*fewer iterations, a smaller width multiplier"):
        lab.RunConfig(network="resnet9", data="cifar10", cnn_width=4.0, iterations=2000, batch_size=1024)
    with pytest.raises(ConfigError, match="CNN width multiplier must be between 0.125 and 4"):
        lab.RunConfig(network="simple", data="digits", cnn_width=8.0)
    with pytest.raises(ConfigError, match="network must be one of mlp, simple, resnet9, resnet20"):
        lab.RunConfig(network="vgg", data="digits")
    with pytest.raises(ConfigError, match="at least 2 examples per batch"):
        lab.RunConfig(network="simple", data="digits", batch_size=1)
    big = lab.RunConfig(network="resnet9", data="cifar10", cnn_width=1.0, iterations=10, batch_size=64)
    assert lab.flops(big) == lab.flops_per_image(big) * 3 * 64 * 10 <= lab.MAX_FLOPS


def test_mlp_only_fields_do_not_tell_two_cnn_runs_apart_nor_the_cnn_width_two_mlps(tmp_path):
    a = lab.RunConfig(network="simple", data="digits", depth=3)
    b = lab.RunConfig(network="simple", data="digits", depth=40, width=8, activation="relu", variant="residual",
                      init="he")
    assert a == b and a.depth == 10 and hash(a) == hash(b)
    assert lab.RunConfig(cnn_width=2.0) == lab.RunConfig() and lab.RunConfig().cnn_width == 0.25
    assert lab.RunConfig(network="simple", data="digits", cnn_width=1) == \
        lab.RunConfig(network="simple", data="digits", cnn_width=1.0)
    cache = Cache(tmp_path / "c")
    cfg = lab.RunConfig(network="simple", **TINY_CNN)
    first = lab.run(cfg, cache)
    again = lab.from_entry(lab.cached(replace(cfg, depth=5), cache))
    assert again.layers == first.layers and again.layer_norms == first.layer_norms
    assert lab.ratio_text(again.to_dict()).startswith("conv 1 / fc = ")


def test_the_mlp_keeps_its_defaults_and_reads_cifar10_flattened():
    assert lab.RunConfig().network == "mlp" and lab.RunConfig().name == "plain, depth 10"
    assert lab.work(lab.RunConfig(data="cifar10", depth=3)) == lab.num_params(lab.RunConfig(depth=3), 3072, 10) * 100


def test_cli_trains_a_cnn(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cli, "default_cache", lambda: Cache(tmp_path / "c"))
    assert cli.main(["--network", "simple", "--cnn-width", "0.125", "--iterations", "2", "--batch-size", "8"]) == 0
    out = capsys.readouterr().out
    assert "simple CNN, width x0.125" in out and "Digits 8x8" in out
    rows = [line.split() for line in out.splitlines() if line.strip().startswith(("conv", "fc"))]
    assert [r[0] for r in rows] == ["conv"] * 6 + ["fc"] and all(float(r[-1]) > 0 for r in rows)
    assert cli.main(["--network", "simple", "--data", "xor"]) == 2
    assert "a CNN needs image data" in capsys.readouterr().err
