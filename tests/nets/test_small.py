"""The one MLP family and the one small-CNN family: they rebuild both of the former builders exactly (same
layers, same initialisation order, so one seed gives the same weights), and the K-copies forward agrees
with the nn.Module at every depth."""

from __future__ import annotations

import math
from collections import OrderedDict

import pytest
import torch
from torch import nn

from explorer.core.config import ConfigError
from explorer.nets.small import NetConfig, build_net, describe, flat_stack, init_state, stacked_forward

# --- copies of the two former builders, as they were before the families were merged --------------


class _OldAsChannels(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.unsqueeze(1) if x.dim() == 2 else x


def _old_race_mlp(width: int, dropout: float, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """nets/small.py's former MLP (race, data-map nets): two hidden layers, always with dropout layers."""
    return nn.Sequential(OrderedDict([
        ("flatten", nn.Flatten()),
        ("fc1", nn.Linear(math.prod(input_shape), width)), ("act1", nn.ReLU()), ("drop1", nn.Dropout(dropout)),
        ("fc2", nn.Linear(width, width)), ("act2", nn.ReLU()), ("drop2", nn.Dropout(dropout)),
        ("out", nn.Linear(width, num_classes)),
    ]))


def _old_race_cnn(width: int, channels: int, dropout: float, input_shape: tuple[int, ...],
                  num_classes: int) -> nn.Module:
    """nets/small.py's former CNN: two conv stages, a hidden linear layer, kernel 3 (images) or 5 (signals)."""
    c_in, sizes = (1, input_shape) if len(input_shape) == 1 else (input_shape[0], tuple(input_shape[1:]))
    conv, pool = (nn.Conv1d, nn.MaxPool1d) if len(sizes) == 1 else (nn.Conv2d, nn.MaxPool2d)
    k = {1: 5, 2: 3}[len(sizes)]
    c1, c2 = channels, 2 * channels
    flat = c2 * math.prod(s // 4 for s in sizes)
    return nn.Sequential(OrderedDict([
        ("shape", _OldAsChannels()),
        ("conv1", conv(c_in, c1, k, padding=k // 2)), ("act1", nn.ReLU()), ("pool1", pool(2)),
        ("conv2", conv(c1, c2, k, padding=k // 2)), ("act2", nn.ReLU()), ("pool2", pool(2)),
        ("flatten", nn.Flatten()), ("drop1", nn.Dropout(dropout)),
        ("fc", nn.Linear(flat, width)), ("act3", nn.ReLU()), ("drop2", nn.Dropout(dropout)),
        ("out", nn.Linear(width, num_classes)),
    ]))


def _old_batched_mlp(input_shape: tuple[int, ...], num_classes: int, width: int, depth: int) -> nn.Module:
    """train/stacked.py's former build_mlp (memorisation lab): unnamed Flatten, depth x (Linear, ReLU), Linear."""
    layers: list[nn.Module] = [nn.Flatten()]
    fan_in = math.prod(input_shape)
    for _ in range(depth):
        layers += [nn.Linear(fan_in, width), nn.ReLU()]
        fan_in = width
    layers.append(nn.Linear(fan_in, num_classes))
    return nn.Sequential(*layers)


def _old_batched_cnn(input_shape: tuple[int, ...], num_classes: int, width: int, depth: int) -> nn.Module:
    """train/stacked.py's former build_small_cnn: depth x (3x3 conv width*2^i, ReLU, 2x2 pool), Linear."""
    channels, h, w = input_shape
    layers: list[nn.Module] = []
    for i in range(depth):
        out = width * 2**i
        layers += [nn.Conv2d(channels, out, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
        channels, h, w = out, h // 2, w // 2
    layers += [nn.Flatten(), nn.Linear(channels * h * w, num_classes)]
    return nn.Sequential(*layers)


def _seeded(build, seed: int = 11) -> nn.Module:
    torch.manual_seed(seed)
    return build()


def _assert_same_weights(old: nn.Module, new: nn.Module, *, same_names: bool) -> None:
    a, b = old.state_dict(), new.state_dict()
    assert len(a) == len(b)
    if same_names:
        assert list(a) == list(b)
    for (na, ta), (nb, tb) in zip(a.items(), b.items()):
        assert ta.shape == tb.shape and torch.equal(ta, tb), (na, nb)


def _assert_same_outputs(old: nn.Module, new: nn.Module, input_shape: tuple[int, ...]) -> None:
    x = torch.randn(6, *input_shape)
    old.eval(), new.eval()
    with torch.no_grad():
        torch.testing.assert_close(new(x), old(x), rtol=0, atol=0)


# --- today's configurations rebuild the old networks exactly ---------------------------------------

SHAPES = [(40,), (1, 8, 8), (3, 32, 32)]


@pytest.mark.parametrize("input_shape", SHAPES)
@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_mlp_rebuilds_the_race_mlp(input_shape, dropout) -> None:
    cfg = NetConfig("mlp", width=24, dropout=dropout)
    old = _seeded(lambda: _old_race_mlp(24, dropout, input_shape, 10))
    new = _seeded(lambda: build_net(cfg, input_shape, 10))
    _assert_same_weights(old, new, same_names=True)  # saved representation nets keep loading
    _assert_same_outputs(old, new, input_shape)


@pytest.mark.parametrize("input_shape", SHAPES)
@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_small_cnn_rebuilds_the_race_cnn(input_shape, dropout) -> None:
    cfg = NetConfig("small_cnn", width=20, channels=4, dropout=dropout)
    old = _seeded(lambda: _old_race_cnn(20, 4, dropout, input_shape, 10))
    new = _seeded(lambda: build_net(cfg, input_shape, 10))
    _assert_same_weights(old, new, same_names=True)
    _assert_same_outputs(old, new, input_shape)


@pytest.mark.parametrize("input_shape", [(40,), (1, 8, 8)])
@pytest.mark.parametrize("depth", [0, 1, 2, 4])
@pytest.mark.parametrize("width", [1, 32])
def test_mlp_rebuilds_the_batched_trainers_mlp(input_shape, depth, width) -> None:
    old = _seeded(lambda: _old_batched_mlp(input_shape, 10, width, depth))
    new = _seeded(lambda: build_net(NetConfig("mlp", width=width, depth=depth), input_shape, 10))
    _assert_same_weights(old, new, same_names=False)
    assert list(new.state_dict()) == [*(f"fc{i}.{p}" for i in range(1, depth + 1) for p in ("weight", "bias")),
                                      "out.weight", "out.bias"]
    _assert_same_outputs(old, new, input_shape)


@pytest.mark.parametrize("input_shape", [(1, 8, 8), (3, 32, 32)])
@pytest.mark.parametrize("depth", [1, 2, 3])
@pytest.mark.parametrize("channels", [1, 8])
def test_small_cnn_rebuilds_the_batched_trainers_cnn(input_shape, depth, channels) -> None:
    cfg = NetConfig("small_cnn", channels=channels, depth=depth, hidden_fc=False)
    old = _seeded(lambda: _old_batched_cnn(input_shape, 10, channels, depth))
    new = _seeded(lambda: build_net(cfg, input_shape, 10))
    _assert_same_weights(old, new, same_names=False)
    assert [n for n in new.state_dict() if n.endswith(".weight")] == [
        *(f"conv{i}.weight" for i in range(1, depth + 1)), "out.weight"]
    _assert_same_outputs(old, new, input_shape)


def test_dropout_free_mlp_is_a_plain_linear_relu_stack() -> None:
    """What the batched trainer's matmul fast path recognises: no Dropout modules when p = 0."""
    net = build_net(NetConfig("mlp", width=8, depth=3), (5,), 2)
    assert all(isinstance(m, (nn.Flatten, nn.Linear, nn.ReLU)) for m in net)
    assert any(isinstance(m, nn.Dropout) for m in build_net(NetConfig("mlp", width=8, dropout=0.2), (5,), 2))


# --- the K-copies forward follows the family at every size ------------------------------------------

@pytest.mark.parametrize("cfg, input_shape", [
    (NetConfig("mlp", width=12, depth=0), (40,)),
    (NetConfig("mlp", width=12, depth=1), (40,)),
    (NetConfig("mlp", width=12, depth=3), (1, 8, 8)),
    (NetConfig("small_cnn", width=12, channels=3, depth=1), (40,)),
    (NetConfig("small_cnn", width=12, channels=3, depth=3), (1, 8, 8)),
    (NetConfig("small_cnn", channels=3, depth=2, hidden_fc=False), (3, 8, 8)),
    (NetConfig("small_cnn", channels=3, depth=2, hidden_fc=False), (40,)),
])
def test_stacked_forward_matches_each_copys_module(cfg, input_shape) -> None:
    k = 3
    states = [init_state(cfg, input_shape, 10, seed) for seed in range(k)]
    flat, params = flat_stack(states[0], k, torch.device("cpu"))
    for i, state in enumerate(states):
        for name, t in state.items():
            params[name][i].copy_(t)
    x = torch.randn(5, *input_shape)
    out = stacked_forward(cfg, params, x)  # (K, B, classes)
    for i, state in enumerate(states):
        net = build_net(cfg, input_shape, 10)
        net.load_state_dict(state)
        torch.testing.assert_close(out[i], net.eval()(x), rtol=1e-5, atol=1e-6)


def test_sizes_that_cannot_be_built_are_refused() -> None:
    with pytest.raises(ConfigError, match="pooling stages are too many"):
        build_net(NetConfig("small_cnn", depth=4), (1, 8, 8), 10)
    with pytest.raises(ConfigError, match="at most 4096"):
        NetConfig("small_cnn", channels=128, depth=7)
    with pytest.raises(ConfigError, match="depth"):
        NetConfig(depth=17)
    with pytest.raises(ConfigError, match="hidden_fc"):
        NetConfig(hidden_fc="yes")


def test_describe_says_the_size() -> None:
    assert describe(NetConfig("mlp", width=64)) == "MLP, 2 hidden layers of 64"
    assert describe(NetConfig("mlp", depth=0)) == "MLP without hidden layers (linear)"
    assert describe(NetConfig("small_cnn", width=32, channels=8, dropout=0.25)) == (
        "Small CNN, 2 conv stages (8, 16 channels), hidden layer of 32, dropout 0.25")
    assert describe(NetConfig("small_cnn", channels=4, depth=3, hidden_fc=False)) == (
        "Small CNN, 3 conv stages (4, 8, 16 channels)")
