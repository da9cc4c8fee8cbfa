"""Small networks for real data: an MLP and a small CNN, as nn.Modules and as K stacked copies.

`build_net` gives the ordinary nn.Module (for any page). `stacked_forward` runs K copies with
different weights in one pass: the weights of copy k are slice k of stacked tensors (K, ...);
linear layers become one batched matmul, convolutions one grouped convolution (groups=K). At
these sizes a step costs per-operation overhead, so K copies in one pass cost little more than
one. Both forms share parameter names and layout, so `init_state` loads into either; tests check
that they agree. Works on images (N, C, H, W) and on 1-D signals (N, L) such as MNIST-1D.

For training, `flat_stack` keeps the K copies in one (K, P) tensor (row k: copy k's weights, so an
optimizer updates a copy as one flat tensor) with (K, ...) views per layer, and `train_step_fn` gives
the forward + backward of all K: for the MLP written by hand with autograd's own backward ops, no
graph and reused activation buffers (tested against autograd); for other architectures autograd.
"""

from __future__ import annotations

import functools
import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from explorer.core.config import check_choice, check_range

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
# (params, x, workspace) -> eval-mode logits (K, C, B), classes before examples
EvalLogits = Callable[[dict[str, torch.Tensor], torch.Tensor, dict[Any, torch.Tensor]], torch.Tensor]
# (params, grads, x, y, masks, workspace) -> per-copy loss (K,), with the gradients written into grads
TrainStep = Callable[[dict[str, torch.Tensor], dict[str, torch.Tensor], torch.Tensor, torch.Tensor, Masks,
                      dict[Any, torch.Tensor]], torch.Tensor]


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


def _mlp_stacked(params: dict[str, torch.Tensor], x: torch.Tensor, masks: Masks) -> torch.Tensor:
    h = x.flatten(1)  # (B, F)
    h = _dropout(torch.relu(_linear(h, params, "fc1")), masks)  # (K, B, width)
    h = _dropout(torch.relu(_linear(h, params, "fc2")), masks)
    return _linear(h, params, "out")  # (K, B, classes)


_threshold_backward = torch.ops.aten.threshold_backward.grad_input  # ReLU's backward, the op autograd runs


def _buffers(work: dict[Any, torch.Tensor], key: Any, n: int, k: int, bsz: int, width: int,
             like: torch.Tensor) -> list[torch.Tensor]:
    """n (K, B, width) buffers from the workspace, allocated on first use and reused afterwards."""
    buf = work.get(key)
    if buf is None or buf.shape != (n, k, bsz, width):
        buf = work[key] = torch.empty(n, k, bsz, width, device=like.device, dtype=like.dtype)
    return list(buf)


def _mlp_hidden(params: dict[str, torch.Tensor], xe: torch.Tensor, masks: Masks, a1: torch.Tensor,
                a2: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The two hidden layers of K stacked MLPs into a1, a2 (K, B, H) in place (no graph); their masks."""
    bsz, h1, h2 = xe.shape[1], a1.shape[2], a2.shape[2]
    m1 = masks((bsz, h1))  # drawn in the order stacked_forward draws them
    torch.baddbmm(params["fc1.bias"].unsqueeze(1), xe, params["fc1.weight"].mT, out=a1).relu_()
    if m1 is not None:
        a1.mul_(m1)
    m2 = masks((bsz, h2))
    torch.baddbmm(params["fc2.bias"].unsqueeze(1), a1, params["fc2.weight"].mT, out=a2).relu_()
    if m2 is not None:
        a2.mul_(m2)
    return m1, m2


def _class_major_logits(params: dict[str, torch.Tensor], a2: torch.Tensor) -> torch.Tensor:
    """(K, C, B) logits: classes before examples, so that (log-)softmax over classes runs on contiguous
    rows of B (several times faster on the CPU than over a last dimension of 10 classes)."""
    return torch.baddbmm(params["out.bias"].unsqueeze(2), params["out.weight"], a2.mT)


def _mlp_train_step(params: dict[str, torch.Tensor], grads: dict[str, torch.Tensor], x: torch.Tensor,
                    y: torch.Tensor, masks: Masks, work: dict[Any, torch.Tensor]) -> torch.Tensor:
    """Forward and backward of K stacked MLPs by hand (no autograd graph): returns every copy's mean
    cross-entropy (K,) and writes the gradient of their sum into `grads` (tensors shaped like `params`).

    The backward is the ATen ops autograd runs for this network (the matmuls of baddbmm's backward,
    ReLU's threshold_backward, the dropout product, nll_loss's gradient and _log_softmax_backward_data),
    only without the graph: a few large ops instead of per-op bookkeeping; tests compare it with autograd.
    Gradients are written in place (out=), so `grads` may be views into one flat buffer. The (K, B, H)
    activations live in `work`, reused from step to step: allocating them anew every step cost more
    than the arithmetic (fresh pages from the system allocator at these sizes)."""
    with torch.no_grad():
        w1, w2, w3 = params["fc1.weight"], params["fc2.weight"], params["out.weight"]  # (K, out, in)
        k, bsz, h1, h2 = w1.shape[0], x.shape[0], w1.shape[1], w2.shape[1]
        a1, a2, g1, g2 = _buffers(work, ("train", bsz), 4, k, bsz, max(h1, h2), x)
        a1, a2, g1, g2 = a1[..., :h1], a2[..., :h2], g1[..., :h1], g2[..., :h2]
        xe = x.flatten(1).expand(k, -1, -1)  # (K, B, F): one input for every copy, no copy made
        m1, m2 = _mlp_hidden(params, xe, masks, a1, a2)
        logp = torch.log_softmax(_class_major_logits(params, a2), 1)  # (K, C, B)
        target = y.view(1, 1, bsz).expand(k, 1, bsz)
        per = logp.gather(1, target).mean((1, 2)).neg_()  # (K,): mean cross-entropy of each copy
        # d(sum of per)/d(logits): nll_loss's gradient -1/B at each target, through log_softmax's backward.
        g = torch._log_softmax_backward_data(torch.zeros_like(logp).scatter_(1, target, -1.0 / bsz), logp, 1,
                                             logp.dtype)  # (K, C, B)
        torch.bmm(g, a2, out=grads["out.weight"])
        torch.sum(g, 2, out=grads["out.bias"])
        torch.bmm(g.mT, w3, out=g2)  # (K, B, H)
        if m2 is not None:
            g2.mul_(m2)
        _threshold_backward(g2, a2, 0, grad_input=g2)
        torch.bmm(g2.mT, a1, out=grads["fc2.weight"])
        torch.sum(g2, 1, out=grads["fc2.bias"])
        torch.bmm(g2, w2, out=g1)
        if m1 is not None:
            g1.mul_(m1)
        _threshold_backward(g1, a1, 0, grad_input=g1)
        torch.bmm(g1.mT, xe, out=grads["fc1.weight"])
        torch.sum(g1, 1, out=grads["fc1.bias"])
    return per


def _mlp_eval_logits(params: dict[str, torch.Tensor], x: torch.Tensor, work: dict[Any, torch.Tensor]
                     ) -> torch.Tensor:
    """Eval-mode (K, C, B) logits of K stacked MLPs, no graph, activations in reused workspace buffers."""
    with torch.no_grad():
        w1, w2 = params["fc1.weight"], params["fc2.weight"]
        k, bsz, h1, h2 = w1.shape[0], x.shape[0], w1.shape[1], w2.shape[1]
        a1, a2 = _buffers(work, ("eval", bsz), 2, k, bsz, max(h1, h2), x)
        a1, a2 = a1[..., :h1], a2[..., :h2]
        _mlp_hidden(params, x.flatten(1).expand(k, -1, -1), lambda shape: None, a1, a2)
        return _class_major_logits(params, a2)


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
    train_step: TrainStep | None = None  # a hand-written forward + backward; None: autograd
    eval_logits: EvalLogits | None = None  # eval-mode (K, C, B) logits without a graph; None: stacked_forward


ARCHS: dict[str, Arch] = {
    "mlp": Arch("MLP (2 hidden layers)", _build_mlp, _mlp_stacked, _mlp_train_step, _mlp_eval_logits),
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


def _autograd_train_step(stacked: Callable[[dict[str, torch.Tensor], torch.Tensor, Masks], torch.Tensor],
                         params: dict[str, torch.Tensor], grads: dict[str, torch.Tensor], x: torch.Tensor,
                         y: torch.Tensor, masks: Masks, work: dict[Any, torch.Tensor]) -> torch.Tensor:
    """A train step through autograd, for architectures without a hand-written one (same contract)."""
    leaves = {name: t.detach().requires_grad_() for name, t in params.items()}  # share the weights' storage
    logits = stacked(leaves, x, masks)  # (K, B, C)
    k = logits.shape[0]
    per = F.cross_entropy(logits.flatten(0, 1), y.repeat(k), reduction="none").view(k, -1).mean(1)
    torch._foreach_copy_(list(grads.values()), torch.autograd.grad(per.sum(), list(leaves.values())))
    return per.detach()


def train_step_fn(cfg: NetConfig) -> Callable[[dict[str, torch.Tensor], dict[str, torch.Tensor], torch.Tensor,
                                                torch.Tensor, Masks], torch.Tensor]:
    """(params, grads, x, y, masks) -> per-copy mean cross-entropy (K,), with the gradient of their sum
    written into grads: the architecture's hand-written step, or autograd through the stacked forward.
    Each call gives a step with its own workspace (buffers reused across the steps of one training run)."""
    arch = ARCHS[cfg.arch]
    step = arch.train_step or functools.partial(_autograd_train_step, arch.stacked)
    return functools.partial(step, work={})


def eval_logits_fn(cfg: NetConfig) -> Callable[[dict[str, torch.Tensor], torch.Tensor], torch.Tensor]:
    """(params, x) -> eval-mode logits (K, C, B), classes before examples, without a graph; each call
    gives a function with its own workspace (reused across the evaluations of one training run)."""
    arch = ARCHS[cfg.arch]
    if arch.eval_logits is not None:
        return functools.partial(arch.eval_logits, work={})

    def logits(params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return stacked_forward(cfg, params, x).transpose(1, 2)

    return logits


def stacked_forward(cfg: NetConfig, params: dict[str, torch.Tensor], x: torch.Tensor, *,
                    generator: torch.Generator | None = None, train: bool = False) -> torch.Tensor:
    """Logits (K, B, classes) of K copies on the same batch x; in training mode dropout masks are shared."""
    masks = make_masks(cfg.dropout if train else 0.0, generator, x.device, x.dtype)
    return ARCHS[cfg.arch].stacked(params, x, masks)
