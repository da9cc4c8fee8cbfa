"""Small networks for real data: an MLP and a small CNN, as nn.Modules and as K stacked copies.

`build_net` gives the ordinary nn.Module (for any page). `stacked_forward` runs K copies with
different weights in one pass: the weights of copy k are slice k of stacked tensors (K, ...);
linear layers become one batched matmul, convolutions one grouped convolution (groups=K). At
these sizes a step costs per-operation overhead, so K copies in one pass cost little more than
one. Both forms share parameter names and layout, so `init_state` loads into either; tests check
that they agree. Works on images (N, C, H, W) and on 1-D signals (N, L) such as MNIST-1D.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .config import check_choice, check_range

CONV_KERNEL = {1: 5, 2: 3}  # kernel size by spatial rank: MNIST-1D's features are ~5 samples wide


@dataclass(frozen=True)
class NetConfig:
    """A small classifier: architecture, width and dropout."""

    arch: str = "mlp"  # "mlp" or "small_cnn"
    width: int = 128  # hidden units of the MLP layers / of the CNN's classifier layer
    channels: int = 16  # CNN: channels of the first conv layer (the second has twice as many)
    dropout: float = 0.0  # probability of dropping a hidden unit while training

    def __post_init__(self) -> None:
        check_choice("network", self.arch, ARCHS)
        check_range("hidden width", self.width, 4, 1024, integer=True)
        check_range("channels", self.channels, 2, 128, integer=True)
        check_range("dropout", self.dropout, 0.0, 0.9)


def _spatial(input_shape: tuple[int, ...]) -> tuple[int, tuple[int, ...]]:
    """(channels, spatial sizes) of one example: (C, H, W) images, or (L,) signals seen as 1 channel."""
    if len(input_shape) == 1:
        return 1, input_shape
    return input_shape[0], tuple(input_shape[1:])


def _build_mlp(cfg: NetConfig, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    d_in = math.prod(input_shape)
    return nn.Sequential(OrderedDict([
        ("flatten", nn.Flatten()),
        ("fc1", nn.Linear(d_in, cfg.width)), ("act1", nn.ReLU()), ("drop1", nn.Dropout(cfg.dropout)),
        ("fc2", nn.Linear(cfg.width, cfg.width)), ("act2", nn.ReLU()), ("drop2", nn.Dropout(cfg.dropout)),
        ("out", nn.Linear(cfg.width, num_classes)),
    ]))


class _AsChannels(nn.Module):
    """(N, L) signals -> (N, 1, L); images pass through."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.unsqueeze(1) if x.dim() == 2 else x


def _build_cnn(cfg: NetConfig, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    c_in, sizes = _spatial(input_shape)
    rank = len(sizes)
    conv, pool = (nn.Conv1d, nn.MaxPool1d) if rank == 1 else (nn.Conv2d, nn.MaxPool2d)
    k = CONV_KERNEL[rank]
    c1, c2 = cfg.channels, 2 * cfg.channels
    flat = c2 * math.prod(s // 4 for s in sizes)
    return nn.Sequential(OrderedDict([
        ("shape", _AsChannels()),
        ("conv1", conv(c_in, c1, k, padding=k // 2)), ("act1", nn.ReLU()), ("pool1", pool(2)),
        ("conv2", conv(c1, c2, k, padding=k // 2)), ("act2", nn.ReLU()), ("pool2", pool(2)),
        ("flatten", nn.Flatten()), ("drop1", nn.Dropout(cfg.dropout)),
        ("fc", nn.Linear(flat, cfg.width)), ("act3", nn.ReLU()), ("drop2", nn.Dropout(cfg.dropout)),
        ("out", nn.Linear(cfg.width, num_classes)),
    ]))


Masks = Callable[[tuple[int, ...]], torch.Tensor | None]  # shape -> scaled dropout mask, or None in eval mode


def _linear(h: torch.Tensor, params: dict[str, torch.Tensor], name: str) -> torch.Tensor:
    """(B, F) shared or (K, B, F) per-copy input through K linear layers -> (K, B, out)."""
    w, b = params[f"{name}.weight"], params[f"{name}.bias"]  # (K, out, F), (K, out)
    if h.dim() == 2:  # one input for all copies: a single (B, F) @ (F, K*out) matmul
        k, out = w.shape[0], w.shape[1]
        z = torch.addmm(b.flatten(), h, w.flatten(0, 1).t())  # (B, K*out)
        return z.view(h.shape[0], k, out).transpose(0, 1)
    return torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2))


def _dropout(h: torch.Tensor, masks: Masks) -> torch.Tensor:
    """The same mask for every copy (fair races): (B, F) broadcast over K."""
    mask = masks(tuple(h.shape[1:]))
    return h if mask is None else h * mask


def _mlp_stacked(params: dict[str, torch.Tensor], x: torch.Tensor, masks: Masks) -> torch.Tensor:
    h = x.flatten(1)  # (B, F)
    h = _dropout(torch.relu(_linear(h, params, "fc1")), masks)  # (K, B, width)
    h = _dropout(torch.relu(_linear(h, params, "fc2")), masks)
    return _linear(h, params, "out")  # (K, B, classes)


def _grouped_conv(h: torch.Tensor, params: dict[str, torch.Tensor], name: str, k: int) -> torch.Tensor:
    """(B, K*C_in, *S) through K convolutions at once -> (B, K*C_out, *S)."""
    w, b = params[f"{name}.weight"], params[f"{name}.bias"]  # (K, C_out, C_in, *ks), (K, C_out)
    conv = F.conv1d if w.dim() == 4 else F.conv2d
    return conv(h, w.flatten(0, 1), b.flatten(), padding=w.shape[-1] // 2, groups=k)


def _cnn_stacked(params: dict[str, torch.Tensor], x: torch.Tensor, masks: Masks) -> torch.Tensor:
    k = params["conv1.weight"].shape[0]
    h = x.unsqueeze(1) if x.dim() == 2 else x  # (B, C, *S)
    pool = F.max_pool1d if h.dim() == 3 else F.max_pool2d
    h = h.repeat(1, k, *([1] * (h.dim() - 2)))  # (B, K*C, *S): every copy sees the same input
    h = pool(torch.relu(_grouped_conv(h, params, "conv1", k)), 2)
    h = pool(torch.relu(_grouped_conv(h, params, "conv2", k)), 2)  # (B, K*C2, *S/4)
    h = h.reshape(h.shape[0], k, -1).transpose(0, 1)  # (K, B, C2*prod(S/4)), nn.Flatten's order per copy
    h = _dropout(h, masks)
    h = _dropout(torch.relu(_linear(h, params, "fc")), masks)
    return _linear(h, params, "out")


@dataclass(frozen=True)
class Arch:
    """A registered architecture: its nn.Module builder and its K-copies forward."""

    label: str
    build: Callable[[NetConfig, tuple[int, ...], int], nn.Module]
    stacked: Callable[[dict[str, torch.Tensor], torch.Tensor, Masks], torch.Tensor]


ARCHS: dict[str, Arch] = {
    "mlp": Arch("MLP (2 hidden layers)", _build_mlp, _mlp_stacked),
    "small_cnn": Arch("Small CNN (2 conv + 2 linear)", _build_cnn, _cnn_stacked),
}


def build_net(cfg: NetConfig, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """The network as an ordinary nn.Module (PyTorch's default initialisation)."""
    return ARCHS[cfg.arch].build(cfg, tuple(input_shape), num_classes)


def init_state(cfg: NetConfig, input_shape: tuple[int, ...], num_classes: int, seed: int) -> dict[str, torch.Tensor]:
    """Seeded initial weights (CPU, PyTorch's default init), named as in the nn.Module."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = build_net(cfg, input_shape, num_classes)
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def stack_state(state: dict[str, torch.Tensor], k: int, device: torch.device) -> dict[str, torch.Tensor]:
    """K identical copies of the weights: each tensor (K, ...) on `device`."""
    return {name: t.to(device).unsqueeze(0).repeat(k, *([1] * t.dim())).contiguous() for name, t in state.items()}


def stacked_forward(cfg: NetConfig, params: dict[str, torch.Tensor], x: torch.Tensor, *,
                    generator: torch.Generator | None = None, train: bool = False) -> torch.Tensor:
    """Logits (K, B, classes) of K copies on the same batch x; in training mode dropout masks are shared."""
    p = cfg.dropout if train else 0.0

    def masks(shape: tuple[int, ...]) -> torch.Tensor | None:
        if p == 0.0:
            return None
        keep = torch.rand(shape, generator=generator, device=x.device) >= p
        return keep.to(x.dtype) / (1.0 - p)

    return ARCHS[cfg.arch].stacked(params, x, masks)
