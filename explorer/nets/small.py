"""Small networks for real data: an MLP family and a small-CNN family, as nn.Modules and as K stacked copies.

One `NetConfig` describes both families: the MLP has `depth` hidden layers of `width` units; the
small CNN has `depth` conv stages (conv with channels * 2**i channels, ReLU, 2x max-pool), then an
optional hidden linear layer of `width` units; both take optional dropout. Every lab that trains
these networks builds them here (the optimizer race, the data maps' representation nets, the
memorisation lab through explorer.train.stacked), so one seed gives one set of initial weights.

`build_net` gives the ordinary nn.Module (for any page). `stacked_forward` runs K copies with
different weights in one pass: the weights of copy k are slice k of stacked tensors (K, ...);
linear layers become one batched matmul, convolutions one grouped convolution (groups=K). At
these sizes a step costs per-operation overhead, so K copies in one pass cost little more than
one. Both forms share parameter names and layout (fc1, fc2, ..., out / conv1, conv2, ..., fc, out),
so `init_state` loads into either; tests check that they agree. Works on images (N, C, H, W) and on
1-D signals (N, L) such as MNIST-1D.

For training, `flat_stack` keeps the K copies in one (K, P) tensor (row k: copy k's weights, so an
optimizer updates a copy as one flat tensor) with (K, ...) views per layer, and `train_step_fn` gives
the forward + backward of all K, bound to those views: for the MLP the hand-written step of
explorer.train.fused_mlp (no graph, reused activation buffers, tested against autograd); for other
architectures autograd through the stacked forward.
"""

from __future__ import annotations

import functools
import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from explorer.core.config import ConfigError, check_choice, check_range
from explorer.core.seeding import seeded
from explorer.train.fused_mlp import FusedMLP, Layer, Masks

CONV_KERNEL = {1: 5, 2: 3}  # kernel size by spatial rank: MNIST-1D's patterns are ~5 samples wide
MAX_CHANNELS = 4096  # channels of the CNN's last conv stage (channels * 2**(depth-1)); memory, not sense


@dataclass(frozen=True)
class NetConfig:
    """A small classifier: family, size, and dropout."""

    arch: str = "mlp"  # "mlp" or "small_cnn"
    width: int = 128  # units of each MLP hidden layer / of the CNN's hidden linear layer
    channels: int = 16  # CNN: channels of the first conv stage (stage i has channels * 2**i)
    dropout: float = 0.0  # probability of dropping a hidden unit while training (0: no dropout layers)
    depth: int = 2  # MLP: hidden layers; CNN: conv stages, each halving the spatial size
    hidden_fc: bool = True  # CNN: a hidden linear layer of `width` units between the convs and the output

    def __post_init__(self) -> None:
        check_choice("network", self.arch, ARCHS)
        check_range("hidden width", self.width, 1, 4096, integer=True)
        check_range("channels", self.channels, 1, 128, integer=True)
        check_range("dropout", self.dropout, 0.0, 0.9)
        check_range("depth", self.depth, 0, 16, integer=True)
        if not isinstance(self.hidden_fc, bool):
            raise ConfigError(f"hidden_fc must be true or false, got {self.hidden_fc!r}")
        if self.arch == "small_cnn" and self.depth and self.channels * 2 ** (self.depth - 1) > MAX_CHANNELS:
            raise ConfigError(f"{self.depth} conv stages from {self.channels} channels end with "
                              f"{self.channels * 2 ** (self.depth - 1)} channels; at most {MAX_CHANNELS}")


def describe(cfg: NetConfig) -> str:
    """The network in words, for menus and captions."""
    if cfg.arch == "mlp":
        text = (f"MLP, {cfg.depth} hidden layer{'s' if cfg.depth != 1 else ''} of {cfg.width}" if cfg.depth
                else "MLP without hidden layers (linear)")
    else:
        stages = ", ".join(str(cfg.channels * 2**i) for i in range(cfg.depth))
        text = f"Small CNN, {cfg.depth} conv stage{'s' if cfg.depth != 1 else ''} ({stages} channels)"
        text += f", hidden layer of {cfg.width}" if cfg.hidden_fc else ""
    return text + (f", dropout {cfg.dropout:g}" if cfg.dropout else "")


def _spatial(input_shape: tuple[int, ...]) -> tuple[int, tuple[int, ...]]:
    """(channels, spatial sizes) of one example: (C, H, W) images, or (L,) signals seen as 1 channel."""
    if len(input_shape) == 1:
        return 1, input_shape
    return input_shape[0], tuple(input_shape[1:])


def _build_mlp(cfg: NetConfig, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    layers: OrderedDict[str, nn.Module] = OrderedDict(flatten=nn.Flatten())
    fan_in = math.prod(input_shape)
    for i in range(1, cfg.depth + 1):
        layers[f"fc{i}"] = nn.Linear(fan_in, cfg.width)
        layers[f"act{i}"] = nn.ReLU()
        if cfg.dropout:  # p = 0 adds no layer: a dropout-free MLP stays the batched trainer's plain stack
            layers[f"drop{i}"] = nn.Dropout(cfg.dropout)
        fan_in = cfg.width
    layers["out"] = nn.Linear(fan_in, num_classes)
    return nn.Sequential(layers)


def _build_cnn(cfg: NetConfig, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    c_in, sizes = _spatial(input_shape)
    rank = len(sizes)
    if rank not in CONV_KERNEL:
        raise ConfigError(f"the small CNN takes images (C, H, W) or signals (L,), got shape {input_shape}")
    conv, pool = (nn.Conv1d, nn.MaxPool1d) if rank == 1 else (nn.Conv2d, nn.MaxPool2d)
    k = CONV_KERNEL[rank]
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    if rank == 1:
        layers["shape"] = nn.Unflatten(1, (1, sizes[0]))  # (N, L) signals -> (N, 1, L)
    channels = c_in
    for i in range(1, cfg.depth + 1):
        out = cfg.channels * 2 ** (i - 1)
        layers[f"conv{i}"] = conv(channels, out, k, padding=k // 2)
        layers[f"act{i}"] = nn.ReLU()
        layers[f"pool{i}"] = pool(2)
        channels, sizes = out, tuple(s // 2 for s in sizes)
        if min(sizes) < 1:
            raise ConfigError(f"{cfg.depth} pooling stages are too many for inputs of shape {input_shape}")
    layers["flatten"] = nn.Flatten()
    if cfg.dropout:
        layers["drop1"] = nn.Dropout(cfg.dropout)
    fan_in = channels * math.prod(sizes)
    if cfg.hidden_fc:
        layers["fc"] = nn.Linear(fan_in, cfg.width)
        layers[f"act{cfg.depth + 1}"] = nn.ReLU()
        if cfg.dropout:
            layers["drop2"] = nn.Dropout(cfg.dropout)
        fan_in = cfg.width
    layers["out"] = nn.Linear(fan_in, num_classes)
    return nn.Sequential(layers)


# (x, y, masks) -> per-copy mean cross-entropy (K,); the gradient of their sum goes into the grads it is bound to
TrainStep = Callable[[torch.Tensor, torch.Tensor, Masks], torch.Tensor]
EvalLogits = Callable[[torch.Tensor], torch.Tensor]  # x -> eval-mode logits (K, C, B) of the weights it is bound to
Params = dict[str, torch.Tensor]  # name -> (K, ...) stacked tensors, named as in the nn.Module


def _linear(h: torch.Tensor, params: dict[str, torch.Tensor], name: str) -> torch.Tensor:
    """(B, F) shared or (K, B, F) per-copy input through K linear layers -> (K, B, out)."""
    w, b = params[f"{name}.weight"], params[f"{name}.bias"]  # (K, out, F), (K, out)
    if h.dim() == 2:  # one input for all copies: a single (B, F) @ (F, K*out) matmul
        k, out = w.shape[0], w.shape[1]
        z = torch.addmm(b.flatten(), h, w.flatten(0, 1).t())  # (B, K*out)
        return z.view(h.shape[0], k, out).transpose(0, 1)
    return torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2))


def make_masks(p: float, generator: torch.Generator | None, device: torch.device, dtype: torch.dtype) -> Masks:
    """Dropout masks drawn from `generator`, already scaled by 1/(1-p); None when p is 0 (or in eval mode)."""

    def masks(shape: tuple[int, ...]) -> torch.Tensor | None:
        if p == 0.0:
            return None
        keep = torch.rand(shape, generator=generator, device=device) >= p
        return keep.to(dtype) / (1.0 - p)

    return masks


def _dropout(h: torch.Tensor, masks: Masks) -> torch.Tensor:
    """The same mask for every copy (fair races): (B, F) broadcast over K."""
    mask = masks(tuple(h.shape[1:]))
    return h if mask is None else h * mask


def _numbered(params: dict[str, torch.Tensor], prefix: str) -> list[str]:
    """The layers prefix1, prefix2, ... that params holds, in order (the depth is in the weights)."""
    names: list[str] = []
    while f"{prefix}{len(names) + 1}.weight" in params:
        names.append(f"{prefix}{len(names) + 1}")
    return names


def _mlp_stacked(params: dict[str, torch.Tensor], x: torch.Tensor, masks: Masks) -> torch.Tensor:
    h = x.flatten(1)  # (B, F)
    for name in _numbered(params, "fc"):
        h = _dropout(torch.relu(_linear(h, params, name)), masks)  # (K, B, width)
    return _linear(h, params, "out")  # (K, B, classes)


def _fused_layers(params: Params) -> list[Layer]:
    """The MLP's layers as explorer.train.fused_mlp takes them: nn.Linear's (K, out, in) weights as (K, in, out)."""
    return [(params[f"{name}.weight"].mT, params[f"{name}.bias"]) for name in [*_numbered(params, "fc"), "out"]]


def _fused_train_step(params: Params, grads: Params) -> TrainStep:
    """The MLP's hand-written step (FusedMLP) bound to the weights and to the gradient views it fills."""
    net = FusedMLP(_fused_layers(params), _fused_layers(grads))

    def step(x: torch.Tensor, y: torch.Tensor, masks: Masks) -> torch.Tensor:
        loss = torch.empty(net.k, device=x.device, dtype=x.dtype)
        net.step(x, y, masks, loss=loss)
        return loss

    return step


def _fused_eval_logits(params: Params) -> EvalLogits:
    """The MLP's eval-mode (K, C, B) logits through FusedMLP's forward (no graph, reused buffers)."""
    return FusedMLP(_fused_layers(params)).logits


def _grouped_conv(h: torch.Tensor, params: dict[str, torch.Tensor], name: str, k: int) -> torch.Tensor:
    """(B, K*C_in, *S) through K convolutions at once -> (B, K*C_out, *S)."""
    w, b = params[f"{name}.weight"], params[f"{name}.bias"]  # (K, C_out, C_in, *ks), (K, C_out)
    conv = F.conv1d if w.dim() == 4 else F.conv2d
    return conv(h, w.flatten(0, 1), b.flatten(), padding=w.shape[-1] // 2, groups=k)


def _max_pool2d(h: torch.Tensor, k: int) -> torch.Tensor:
    """2D max pooling in channels-last memory: the same numbers, and on the CPU ~12x faster than the NCHW kernel
    on the stacked (B, K*C, H, W) activations (0.2 vs 2.5 ms for (128, 64, 8, 8), 2 threads)."""
    return F.max_pool2d(h.contiguous(memory_format=torch.channels_last), k)


def _cnn_stacked(params: dict[str, torch.Tensor], x: torch.Tensor, masks: Masks) -> torch.Tensor:
    k = params["out.weight"].shape[0]
    h = x.unsqueeze(1) if x.dim() == 2 else x  # (B, C, *S)
    h = h.repeat(1, k, *([1] * (h.dim() - 2)))  # (B, K*C, *S): every copy sees the same input
    pool = F.max_pool1d
    if h.dim() == 4:  # images in channels-last memory: the same numbers, faster on the CPU (_max_pool2d)
        h, pool = h.contiguous(memory_format=torch.channels_last), _max_pool2d
    for name in _numbered(params, "conv"):
        h = pool(torch.relu(_grouped_conv(h, params, name, k)), 2)  # (B, K*C_i, *S/2^i)
    h = h.reshape(h.shape[0], k, -1).transpose(0, 1)  # (K, B, C*prod(S)), nn.Flatten's order per copy
    h = _dropout(h, masks)
    if "fc.weight" in params:
        h = _dropout(torch.relu(_linear(h, params, "fc")), masks)
    return _linear(h, params, "out")


@dataclass(frozen=True)
class Arch:
    """A registered family: its nn.Module builder and its K-copies forward."""

    label: str  # the family's name; `describe` says the size
    build: Callable[[NetConfig, tuple[int, ...], int], nn.Module]
    stacked: Callable[[dict[str, torch.Tensor], torch.Tensor, Masks], torch.Tensor]
    train_step: Callable[[Params, Params], TrainStep] | None = None  # (params, grads) -> hand-written; None: autograd
    eval_logits: Callable[[Params], EvalLogits] | None = None  # params -> graph-free eval logits; None: stacked_forward


ARCHS: dict[str, Arch] = {
    "mlp": Arch("MLP", _build_mlp, _mlp_stacked, _fused_train_step, _fused_eval_logits),
    "small_cnn": Arch("Small CNN", _build_cnn, _cnn_stacked),
}


def build_net(cfg: NetConfig, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """The network as an ordinary nn.Module (PyTorch's default initialisation)."""
    return ARCHS[cfg.arch].build(cfg, tuple(input_shape), num_classes)


def init_state(cfg: NetConfig, input_shape: tuple[int, ...], num_classes: int, seed: int) -> dict[str, torch.Tensor]:
    """Seeded initial weights (CPU, PyTorch's default init), named as in the nn.Module."""
    with seeded(seed):
        net = build_net(cfg, input_shape, num_classes)
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def flat_views(flat: torch.Tensor, shapes: dict[str, torch.Size]) -> dict[str, torch.Tensor]:
    """name -> (K, *shape) views of a (K, P) tensor whose row k holds copy k's tensors one after another."""
    views, start = {}, 0
    for name, shape in shapes.items():
        n = math.prod(shape)
        views[name] = flat[:, start:start + n].view(flat.shape[0], *shape)
        start += n
    return views


def flat_stack(state: dict[str, torch.Tensor], k: int, device: torch.device
               ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """K identical copies of the weights as one (K, P) tensor, copy k's weights in row k (so an optimizer
    can update copy k as one flat tensor), and name -> (K, ...) views of it for the stacked forward."""
    dtype = next(iter(state.values())).dtype
    flat = torch.empty(k, sum(t.numel() for t in state.values()), device=device, dtype=dtype)
    views = flat_views(flat, {name: t.shape for name, t in state.items()})
    for name, t in state.items():
        views[name].copy_(t.to(device).expand_as(views[name]))
    return flat, views


def _autograd_train_step(stacked: Callable[[Params, torch.Tensor, Masks], torch.Tensor], params: Params,
                         grads: Params, x: torch.Tensor, y: torch.Tensor, masks: Masks) -> torch.Tensor:
    """A train step through autograd, for architectures without a hand-written one (same contract)."""
    leaves = {name: t.detach().requires_grad_() for name, t in params.items()}  # share the weights' storage
    logits = stacked(leaves, x, masks)  # (K, B, C)
    k = logits.shape[0]
    per = F.cross_entropy(logits.flatten(0, 1), y.repeat(k), reduction="none").view(k, -1).mean(1)
    torch._foreach_copy_(list(grads.values()), torch.autograd.grad(per.sum(), list(leaves.values())))
    return per.detach()


def train_step_fn(cfg: NetConfig, params: Params, grads: Params) -> TrainStep:
    """(x, y, masks) -> per-copy mean cross-entropy (K,) of the weights `params`, with the gradient of their sum
    written into `grads` (views shaped like params): the architecture's hand-written step, or autograd through
    the stacked forward. Each call gives a step with its own workspace, reused across its steps."""
    arch = ARCHS[cfg.arch]
    if arch.train_step is not None:
        return arch.train_step(params, grads)
    return functools.partial(_autograd_train_step, arch.stacked, params, grads)


def eval_logits_fn(cfg: NetConfig, params: Params) -> EvalLogits:
    """x -> eval-mode logits (K, C, B) of the weights `params`, classes before examples, without a graph; each
    call gives a function with its own workspace (reused across the evaluations of one training run)."""
    arch = ARCHS[cfg.arch]
    if arch.eval_logits is not None:
        return arch.eval_logits(params)

    def logits(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return stacked_forward(cfg, params, x).transpose(1, 2)

    return logits


def stacked_forward(cfg: NetConfig, params: dict[str, torch.Tensor], x: torch.Tensor, *,
                    generator: torch.Generator | None = None, train: bool = False) -> torch.Tensor:
    """Logits (K, B, classes) of K copies on the same batch x; in training mode dropout masks are shared."""
    masks = make_masks(cfg.dropout if train else 0.0, generator, x.device, x.dtype)
    return ARCHS[cfg.arch].stacked(params, x, masks)
