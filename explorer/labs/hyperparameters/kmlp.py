"""The hyperparameter lab's K models, trained as one on the house's K-model step (explorer.train.fused_mlp).

Every model k is an nn.Sequential of `depth_k` hidden blocks Linear -> [BatchNorm1d] -> ReLU of width `width_k`
and a Linear to the classes (`build_sequential`, the reference the tests and the benchmark train with autograd
and torch.optim). `KModels` holds them as a few FusedMLPs: models grouped by width (`width_groups`: up to 2x the
narrowest of a group, so no model pays for much padding), each group one flat tensor of zero-padded layers
(a narrower model's extra units are zero and stay zero) with its models ordered deepest first, so that a
shallower one skips the layers past its depth (FusedMLP's `depths`), and batch norm per model (its `BatchNorm`).
The optimizer is fused_mlp.FlatOptimizer on each group's flat tensor: one learning rate for all, or one per model
as a tensor (`model_index`). Initial weights are each nn.Sequential's, built from torch.manual_seed(seed).

A model whose loss stops being finite (or exceeds DIVERGE_LOSS) is marked diverged at its step; its weights,
optimizer state and running statistics are zeroed and its learning rate set to 0, so it stays a zero network
(finite logits, no updates) while the others go on.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from explorer.core.seeding import seeded
from explorer.train.evaluate import diverged_message, first_nonfinite
from explorer.train.fused_mlp import (BatchNorm, FlatOptimizer, FusedMLP, flat_layers, flat_size, model_index,
                                      norm_size, norm_views)
from explorer.train.optimizers import OptimizerConfig, config_for

DIVERGE_LOSS = 1e3  # a 2-D classifier whose mean cross-entropy passes this is confidently wrong by ~1000 logits
MOMENTUM = 0.9  # "momentum": torch.optim.SGD(momentum=0.9)
OPTIMIZERS: dict[str, str] = {"adam": "Adam", "sgd": "SGD", "momentum": f"SGD with momentum {MOMENTUM:g}"}


def optimizer_config(name: str, lr: float) -> OptimizerConfig:
    """The registry config of one of OPTIMIZERS at lr: torch.optim's defaults otherwise (no weight decay)."""
    return config_for(name, lr, momentum=MOMENTUM)


@dataclass(frozen=True)
class Shape:
    """One model: hidden layers, their width, batch norm before each ReLU or not."""

    depth: int
    width: int
    bn: bool = False


def build_sequential(shape: Shape, in_dim: int, classes: int) -> nn.Sequential:
    """The plain PyTorch model the lab trains: (Linear [BatchNorm1d] ReLU) x depth, Linear."""
    layers: list[nn.Module] = []
    d = in_dim
    for _ in range(shape.depth):
        layers.append(nn.Linear(d, shape.width))
        if shape.bn:
            layers.append(nn.BatchNorm1d(shape.width))
        layers.append(nn.ReLU())
        d = shape.width
    layers.append(nn.Linear(d, classes))
    return nn.Sequential(*layers)


def init_models(shapes: Sequence[Shape], in_dim: int, classes: int, seed: int) -> list[nn.Sequential]:
    """Each model built from torch.manual_seed(seed) (PyTorch's default initialisation), without touching the
    global RNG state of the caller."""
    out = []
    for s in shapes:
        with seeded(seed):
            out.append(build_sequential(s, in_dim, classes))
    return out


TORCH_OPTIMIZERS = {  # the same optimizers as textbook torch.optim calls (baselines, tests)
    "adam": lambda p, lr: torch.optim.Adam(p, lr=lr),
    "sgd": lambda p, lr: torch.optim.SGD(p, lr=lr),
    "momentum": lambda p, lr: torch.optim.SGD(p, lr=lr, momentum=MOMENTUM),
}


def width_groups(shapes: Sequence[Shape], ratio: float = 2.0) -> list[list[int]]:
    """Model indices grouped by width, narrowest first: a group takes widths up to `ratio` x its narrowest, so no
    model is padded to more than `ratio` times its width (padding costs compute and optimiser work)."""
    order = sorted(range(len(shapes)), key=lambda i: shapes[i].width)
    groups: list[list[int]] = []
    for i in order:
        if groups and shapes[i].width <= ratio * shapes[groups[-1][0]].width:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


def _stack_order(shapes: Sequence[Shape], group: list[int]) -> list[list[int]]:
    """A width group as FusedMLPs' model orders: deepest first, and the models with batch norm contiguous at every
    layer (always so when all have it, none has it, or all are equally deep; else split by batch norm)."""
    def order(ix: list[int]) -> list[int]:
        return sorted(ix, key=lambda i: (-shapes[i].depth, shapes[i].bn))  # stable: callers' order within a tie
    bns = {shapes[i].bn for i in group}
    if len(bns) == 1 or len({shapes[i].depth for i in group}) == 1:
        return [order(group)]
    return [order([i for i in group if not shapes[i].bn]), order([i for i in group if shapes[i].bn])]


class _Stack:
    """Models of one width group as one FusedMLP on one flat tensor (layers, then batch-norm scales), with the
    FlatOptimizer that updates it and the learning rate of every element."""

    def __init__(self, shapes: Sequence[Shape], in_dim: int, classes: int, lrs: Sequence[float], optimizer: str,
                 seed: int, device: torch.device) -> None:
        k = self.k = len(shapes)
        depth, width = shapes[0].depth, max(s.width for s in shapes)
        self.dims = dims = [in_dim, *[width] * depth, classes]
        self.bn = any(s.bn for s in shapes)
        n_lin = flat_size(k, dims)
        total = n_lin + (norm_size(k, dims) if self.bn else 0)
        flat = torch.zeros(total)
        layers = flat_layers(flat[:n_lin], k, dims)
        scales = norm_views(flat[n_lin:], k, dims) if self.bn else []
        with torch.no_grad():  # each model's nn.Sequential weights into its top-left corners (zero padding)
            for j, m in enumerate(init_models(shapes, in_dim, classes, seed)):
                lin = [x for x in m if isinstance(x, nn.Linear)]
                for l, layer in enumerate(lin[:-1]):
                    layers[l][0][j, :layer.in_features, :layer.out_features] = layer.weight.T
                    layers[l][1][j, :layer.out_features] = layer.bias
                for l, bn in enumerate(x for x in m if isinstance(x, nn.BatchNorm1d)):
                    scales[l][0][j, :bn.num_features] = bn.weight
                    scales[l][1][j, :bn.num_features] = bn.bias
                layers[-1][0][j, :lin[-1].in_features] = lin[-1].weight.T
                layers[-1][1][j] = lin[-1].bias
        self.flat = flat.to(device)
        self.grad = torch.zeros_like(self.flat)
        norm = None
        if self.bn:
            running = [(torch.zeros(k, h, device=device), torch.ones(k, h, device=device)) for h in dims[1:-1]]
            norm = BatchNorm(norm_views(self.flat[n_lin:], k, dims), norm_views(self.grad[n_lin:], k, dims), running,
                             [s.bn for s in shapes])
        self.norm = norm
        self.layers = flat_layers(self.flat[:n_lin], k, dims)  # (weight (k, in, out), bias (k, out)) per layer
        self.net = FusedMLP(self.layers, flat_layers(self.grad[:n_lin], k, dims),
                            depths=[s.depth for s in shapes], norm=norm)
        self.opt = FlatOptimizer(optimizer_config(optimizer, max(lrs)), self.flat)
        self.index = model_index(k, dims, self.bn).to(device)
        self.lrs = torch.tensor(list(lrs), dtype=torch.float32, device=device)
        # one number while the models share it (torch.optim's arithmetic exactly), else one per element
        self.lr: float | torch.Tensor = float(lrs[0]) if len(set(lrs)) == 1 else self.lrs[self.index]

    def step(self, x: torch.Tensor, y: torch.Tensor, loss: torch.Tensor) -> None:
        """One optimizer step on prepared inputs x and labels y; each model's loss into loss (k,)."""
        self.net.step(x, y, loss=loss)
        self.opt.step(self.grad, self.lr)

    def freeze(self, j: int) -> None:
        """Model j zeroed (weights, optimizer state, running statistics) and its learning rate set to 0."""
        with torch.no_grad():
            mine = self.index == j
            for t in (self.flat, *self.opt.state.values()):
                t.masked_fill_(mine, 0.0)
            if self.norm is not None:
                for rm, rv in self.norm.running:
                    rm[j] = 0.0
                    rv[j] = 1.0
            self.lrs[j] = 0.0
            self.lr = self.lrs[self.index]


class KModels:
    """K MLPs (`shapes`) of in_dim inputs and `classes` outputs, each at its own learning rate, trained as a few
    FusedMLPs (one per width group) that step together on one shared batch; every output in the callers' order."""

    def __init__(self, shapes: Sequence[Shape], in_dim: int, classes: int, lrs: Sequence[float], optimizer: str,
                 seed: int, device: torch.device, ratio: float = 2.0) -> None:
        self.shapes, self.k, self.device, self.lrs = list(shapes), len(shapes), device, [float(v) for v in lrs]
        self.groups = width_groups(shapes, ratio)
        parts = [o for g in self.groups for o in _stack_order(shapes, g)]
        self.stacks = [_Stack([shapes[i] for i in o], in_dim, classes, [lrs[i] for i in o], optimizer, seed, device)
                       for o in parts]
        self.order = [i for o in parts for i in o]  # internal position -> caller's model
        self.place = {i: (s, j) for s, o in enumerate(parts) for j, i in enumerate(o)}  # caller's i -> (stack, row)
        self.bounds = np.cumsum([0] + [len(o) for o in parts]).tolist()
        inv = [self.order.index(i) for i in range(self.k)]
        self.inv = None if inv == list(range(self.k)) else torch.tensor(inv, device=device)
        self.alive = [True] * self.k
        self.diverged: list[str | None] = [None] * self.k
        self.diverged_step: list[int | None] = [None] * self.k

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """Inputs (N, in_dim) as the rows every step and evaluation takes (with the 1-column of the bias rows)."""
        return self.stacks[0].net.prepare(x)

    def _callers(self, t: torch.Tensor) -> torch.Tensor:
        return t if self.inv is None else t[self.inv]

    def step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One optimizer step of all K on the batch (prepared rows, shared labels); the K losses before the step
        (a device tensor, callers' order)."""
        loss = torch.empty(self.k, device=self.device)
        for s, lo, hi in zip(self.stacks, self.bounds, self.bounds[1:]):
            s.step(x, y, loss[lo:hi])
        return self._callers(loss)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Eval-mode logits (K, N, classes) of prepared rows x (batch norm: running statistics)."""
        return self._callers(torch.cat([s.net.logits(x, classes_last=True) for s in self.stacks]))

    def mark_diverged(self, i: int, step: int, epoch: int, what: str, cause: str) -> None:
        """Stop model i: zeroed and frozen, reported as diverged from now on."""
        self.alive[i] = False
        self.diverged_step[i] = step
        self.diverged[i] = diverged_message(what, step, epoch, self.lrs[i], cause=cause)
        s, j = self.place[i]
        self.stacks[s].freeze(j)

    def check(self, step_losses: torch.Tensor, first_step: int, steps_per_epoch: int, names: Sequence[str]) -> None:
        """Mark every live model whose loss in these (steps, K) values went non-finite or past DIVERGE_LOSS."""
        limit = torch.full((self.k,), DIVERGE_LOSS, device=step_losses.device)
        for i, s in enumerate(first_nonfinite(step_losses, limit)):
            if s is not None and self.alive[i]:
                step = first_step + s
                v = float(step_losses[s, i])
                cause = ("its training loss became non-finite" if not math.isfinite(v)
                         else f"its training loss reached {v:.3g} (above {DIVERGE_LOSS:g})")
                self.mark_diverged(i, step, (step - 1) // steps_per_epoch + 1, names[i], cause)

    def evaluate(self, x: torch.Tensor, y: torch.Tensor) -> tuple[list[float], list[float]]:
        """Mean cross-entropy and accuracy per model on prepared rows x with labels y; NaN for diverged models."""
        z = self.logits(x)
        loss = F.cross_entropy(z.flatten(0, 1), y.repeat(self.k), reduction="none").view(self.k, -1).mean(1)
        acc = (z.argmax(-1) == y).float().mean(1)
        out = torch.stack([loss, acc]).cpu()
        out[:, [not a for a in self.alive]] = math.nan
        return out[0].tolist(), out[1].tolist()

    def probabilities(self, x: torch.Tensor, chunk: int = 16384) -> torch.Tensor:
        """Softmax outputs (K, N, classes) on the CPU for inputs (N, in_dim), in chunks."""
        return torch.cat([self.logits(self.prepare(x[i:i + chunk])).softmax(-1).cpu()
                          for i in range(0, len(x), chunk)], 1)

    def region_counts(self, x: torch.Tensor, chunk: int = 8192) -> list[int]:
        """Distinct ReLU activation patterns per model over the points x (N, in_dim): linear regions they hit."""
        packed: list[list[np.ndarray]] = [[] for _ in range(self.k)]
        for start in range(0, len(x), chunk):
            pats = [[p.cpu().numpy() for p in s.net.patterns(self.prepare(x[start:start + chunk]))]
                    for s in self.stacks]
            for i in range(self.k):
                s, j = self.place[i]
                depth = self.stacks[s].net.depths[j]
                rows = np.concatenate([p[j] for p in pats[s][:depth]], 1)  # (b, depth * W)
                packed[i].append(np.packbits(rows, axis=1))
        return [count_patterns(np.concatenate(p)) for p in packed]

    def model_layers(self, i: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Caller's model i's un-padded (weight (in, out), bias (out,)) views, layer by layer."""
        s, j = self.place[i]
        st, shape = self.stacks[s], self.shapes[i]
        views = [(w[j], b[j]) for w, b in st.layers]
        dims = [st.dims[0], *[shape.width] * shape.depth, st.dims[-1]]
        used = views[:shape.depth] + views[-1:]
        return [(w[:a, :o], b[:o]) for (w, b), a, o in zip(used, dims[:-1], dims[1:])]


def count_patterns(packed: np.ndarray) -> int:
    """Distinct rows of a (N, bytes) uint8 array."""
    if packed.shape[1] == 0:
        return 1
    rows = np.ascontiguousarray(packed).view(np.dtype((np.void, packed.shape[1])))
    return int(len(np.unique(rows)))


def region_bound(n: int, d: int = 2) -> int:
    """Most linear regions n ReLU units of one hidden layer can cut R^d into: sum_{i=0}^{d} C(n, i)."""
    return sum(math.comb(n, i) for i in range(d + 1))


def count_regions_1layer(weight: torch.Tensor, bias: torch.Tensor, points: torch.Tensor) -> int:
    """Distinct on/off patterns of the units relu(points @ weight.T + bias) over the points."""
    on = (points @ weight.T + bias > 0).numpy()
    return count_patterns(np.packbits(on, axis=1))
