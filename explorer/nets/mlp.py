"""Model configs and registries: activations (with their hand-written derivatives), MLP shapes."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from explorer.core.config import ConfigError, check_choice, check_range

aten = torch.ops.aten

MAX_LAYERS = 8
MAX_WIDTH = 256


@dataclass(frozen=True)
class Activation:
    """An activation, its into-buffer form, and its derivative backward(grad_post, pre, post) -> grad_pre."""

    forward: Callable[[torch.Tensor], torch.Tensor]
    forward_out: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None  # None: identity (alias the input)
    backward: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
    module: Callable[[], torch.nn.Module]
    gain: float  # 1: Glorot-uniform initialisation, 2: He-uniform


ACTIVATIONS: dict[str, Activation] = {
    "relu": Activation(torch.relu, lambda h, out: torch.clamp_min(h, 0, out=out),
                       lambda g, pre, post: aten.threshold_backward(g, post, 0), torch.nn.ReLU, 2.0),
    "tanh": Activation(torch.tanh, lambda h, out: torch.tanh(h, out=out),
                       lambda g, pre, post: aten.tanh_backward(g, post), torch.nn.Tanh, 1.0),
    "sigmoid": Activation(torch.sigmoid, lambda h, out: torch.sigmoid(h, out=out),
                          lambda g, pre, post: aten.sigmoid_backward(g, post), torch.nn.Sigmoid, 1.0),
    "linear": Activation(lambda h: h, None, lambda g, pre, post: g, torch.nn.Identity, 1.0),
    "gelu": Activation(F.gelu, lambda h, out: torch._C._nn.gelu(h, out=out),
                       lambda g, pre, post: aten.gelu_backward(g, pre), torch.nn.GELU, 2.0),
}


@dataclass(frozen=True)
class MLPConfig:
    """A fully connected network: in_dim -> hidden... -> out_dim."""

    in_dim: int = 2
    out_dim: int = 2
    hidden: tuple[int, ...] = (8, 8)  # neurons per hidden layer, 0..8 layers of 1..256
    activation: str = "tanh"
    batch_norm: bool = False  # after each hidden linear layer, before the activation
    dropout: float = 0.0  # probability of dropping a hidden unit while training

    def __post_init__(self) -> None:
        check_range("input dimension", self.in_dim, 1, 10_000, integer=True)
        check_range("output dimension", self.out_dim, 1, 1_000, integer=True)
        if len(self.hidden) > MAX_LAYERS:
            raise ConfigError(f"at most {MAX_LAYERS} hidden layers are allowed, got {len(self.hidden)}")
        for i, h in enumerate(self.hidden):
            check_range(f"neurons in hidden layer {i + 1}", h, 1, MAX_WIDTH, integer=True)
        check_choice("activation", self.activation, ACTIVATIONS)
        check_range("dropout", self.dropout, 0.0, 0.9)

    @property
    def sizes(self) -> list[int]:
        return [self.in_dim, *self.hidden, self.out_dim]

    @property
    def num_params(self) -> int:
        s = self.sizes
        n = sum(a * b + b for a, b in zip(s[:-1], s[1:]))
        return n + (2 * sum(self.hidden) if self.batch_norm else 0)


def init_mlp_params(cfg: MLPConfig, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Seeded initial weights (CPU): Glorot-uniform for tanh/sigmoid/linear, He-uniform for ReLU/GELU."""
    gain = ACTIVATIONS[cfg.activation].gain
    params: dict[str, torch.Tensor] = {}
    sizes = cfg.sizes
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        last = i == len(sizes) - 2
        bound = math.sqrt(6.0 / (fan_in + fan_out)) if gain == 1.0 or last else math.sqrt(3.0 * gain / fan_in)
        w = (torch.rand(fan_out, fan_in, generator=generator, dtype=torch.float32) * 2 - 1) * bound
        params[f"layers.{i}.weight"] = w
        params[f"layers.{i}.bias"] = torch.zeros(fan_out)
        if cfg.batch_norm and not last:
            params[f"bn.{i}.weight"] = torch.ones(fan_out)
            params[f"bn.{i}.bias"] = torch.zeros(fan_out)
    return params


def mlp_module(cfg: MLPConfig) -> torch.nn.Sequential:
    """The same network as an nn.Module (for autograd checks, export and other pages)."""
    layers: list[torch.nn.Module] = []
    sizes = cfg.sizes
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(torch.nn.Linear(a, b))
        if i < len(sizes) - 2:
            if cfg.batch_norm:
                layers.append(torch.nn.BatchNorm1d(b))
            layers.append(ACTIVATIONS[cfg.activation].module())
            if cfg.dropout > 0:
                layers.append(torch.nn.Dropout(cfg.dropout))
    return torch.nn.Sequential(*layers)
