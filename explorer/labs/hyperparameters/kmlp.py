"""K ReLU MLPs of 2-D inputs trained as ONE model: stacked weights, one forward and one backward for all K.

Every model k is an nn.Sequential of `depth_k` hidden blocks Linear -> [BatchNorm1d] -> ReLU of width `width_k`
and a Linear to the classes. The stack holds all K at the largest depth L and width W: layer l is a (K, in, W)
weight and (K, W) bias run with one torch.baddbmm. A model narrower than W has its extra units' weights, biases
and BN scales zero: such a unit's pre-activation is exactly 0, ReLU's backward gives it and its weights zero
gradient, and the element-wise optimiser leaves zeros at zero, so the padding stays exact (tested). A model
shallower than L skips the layers past its depth (KStack: those layers hold no weights for it). Batch norm is
per model: the (K, B, W) pre-activations are laid out as (B, K * W) for F.batch_norm, so each (model, unit) has
its own batch statistics and running averages, and a per-model flag picks the normalised or the plain
pre-activation (models with and without BN in one run).

The optimiser (`OPTIMIZERS`: Adam, SGD, SGD with momentum) is element-wise with a learning rate per model, in
torch.optim's arithmetic, on one flat vector that holds every parameter: K models with K learning rates are a
handful of element-wise ops per step. A model whose loss stops being finite (or exceeds DIVERGE_LOSS) is marked
diverged at its step, its weights and optimiser state are zeroed and its loss is dropped from the sum, and the
others go on.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from explorer.core.seeding import seeded
from explorer.train.evaluate import diverged_message, first_nonfinite

BN_EPS = 1e-5  # nn.BatchNorm1d's defaults
BN_MOMENTUM = 0.1
DIVERGE_LOSS = 1e3  # a 2-D classifier whose mean cross-entropy passes this is confidently wrong by ~1000 logits


@dataclass(frozen=True)
class Shape:
    """One model of the stack: hidden layers, their width, batch norm before each ReLU or not."""

    depth: int
    width: int
    bn: bool = False


def build_sequential(shape: Shape, in_dim: int, classes: int) -> nn.Sequential:
    """The plain PyTorch model the stack reproduces: (Linear [BatchNorm1d] ReLU) x depth, Linear."""
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


# --- optimisers: element-wise on one flat tensor, one learning rate per element (per model) ---------------

class _Opt:
    """Element-wise update of the flat parameter vector p (N,) with learning rates lr (N,)."""

    def __init__(self, p: torch.Tensor, lr: torch.Tensor) -> None:
        self.p, self.lr, self.t = p, lr, 0

    def step(self, g: torch.Tensor) -> None:
        raise NotImplementedError

    def state(self) -> list[torch.Tensor]:
        """The flat state vectors, laid out as p."""
        return []


class SGD(_Opt):
    """p -= lr * g."""

    def step(self, g: torch.Tensor) -> None:
        self.t += 1
        self.p.sub_(g * self.lr)


class Momentum(_Opt):
    """torch.optim.SGD(momentum=0.9): buf = 0.9 buf + g (buf = g at the first step); p -= lr * buf."""

    MU = 0.9

    def __init__(self, p: torch.Tensor, lr: torch.Tensor) -> None:
        super().__init__(p, lr)
        self.buf = torch.zeros_like(p)

    def step(self, g: torch.Tensor) -> None:
        self.t += 1
        self.buf.mul_(self.MU).add_(g)
        self.p.sub_(self.buf * self.lr)

    def state(self) -> list[torch.Tensor]:
        return [self.buf]


class Adam(_Opt):
    """torch.optim.Adam (betas 0.9, 0.999, eps 1e-8), its arithmetic: p -= lr / bc1 * m / (sqrt(v) / sqrt(bc2) + eps)."""

    B1, B2, EPS = 0.9, 0.999, 1e-8

    def __init__(self, p: torch.Tensor, lr: torch.Tensor) -> None:
        super().__init__(p, lr)
        self.m, self.v = torch.zeros_like(p), torch.zeros_like(p)

    def step(self, g: torch.Tensor) -> None:
        self.t += 1
        self.m.lerp_(g, 1 - self.B1)
        self.v.mul_(self.B2).addcmul_(g, g, value=1 - self.B2)
        bc1, bc2 = 1 - self.B1 ** self.t, 1 - self.B2 ** self.t
        denom = self.v.sqrt().div_(math.sqrt(bc2)).add_(self.EPS)
        self.p.sub_(torch.div(self.m, denom).mul_(self.lr), alpha=1 / bc1)

    def state(self) -> list[torch.Tensor]:
        return [self.m, self.v]


OPTIMIZERS: dict[str, type[_Opt]] = {"adam": Adam, "sgd": SGD, "momentum": Momentum}
TORCH_OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {  # the same, as torch.optim (baselines, tests)
    "adam": lambda p, lr: torch.optim.Adam(p, lr=lr),
    "sgd": lambda p, lr: torch.optim.SGD(p, lr=lr),
    "momentum": lambda p, lr: torch.optim.SGD(p, lr=lr, momentum=Momentum.MU),
}


# --- the stack ------------------------------------------------------------------------------------------

class KStack:
    """K MLPs (`shapes`) of in_dim inputs and `classes` outputs as stacked, padded tensors on one device.

    Inside, the models are ordered deepest first, so that the models still computing at hidden layer l are a
    prefix: layer l's tensors hold only those n_l models (a shallow model's input passes on unchanged), and
    no work is spent on skipped layers. All parameters are views of one flat vector, which the optimiser
    updates in a few element-wise ops. Outputs, losses and metrics are in the callers' order.
    """

    def __init__(self, shapes: Sequence[Shape], in_dim: int, classes: int, lrs: Sequence[float], optimizer: str,
                 seed: int, device: torch.device) -> None:
        self.shapes, self.k, self.classes, self.device = list(shapes), len(shapes), classes, device
        k = self.k
        self.order = sorted(range(k), key=lambda i: -shapes[i].depth)  # internal j -> caller's model order[j]
        self.pos = [0] * k  # caller's i -> internal j
        for j, i in enumerate(self.order):
            self.pos[i] = j
        inner = [shapes[i] for i in self.order]
        self.depth = inner[0].depth
        self.width = W = max(s.width for s in shapes)
        L = self.depth
        self.n_active = [sum(s.depth > l for s in inner) for l in range(L)]
        bn = torch.tensor([s.bn for s in inner])
        self.any_bn, self.all_bn = bool(bn.any()), bool(bn.all())
        # the parameters, layer by layer, as (n, ...) tensors whose first index is the internal model
        sizes: list[tuple[int, ...]] = []
        for l, n in enumerate(self.n_active):
            sizes += [(n, in_dim if l == 0 else W, W), (n, W)] + ([(n, W), (n, W)] if self.any_bn else [])
        sizes += [(k, W, classes), (k, classes)]
        total = sum(math.prod(z) for z in sizes)
        self.flat = torch.zeros(total)
        views, at = [], 0
        for z in sizes:
            views.append(self.flat[at:at + math.prod(z)].view(z))
            at += math.prod(z)
        per = 4 if self.any_bn else 2
        self._w = [views[per * l] for l in range(L)]
        self._b = [views[per * l + 1] for l in range(L)]
        self._gamma = [views[per * l + 2] for l in range(L)] if self.any_bn else []
        self._beta = [views[per * l + 3] for l in range(L)] if self.any_bn else []
        with torch.no_grad():
            for j, m in enumerate(init_models(inner, in_dim, classes, seed)):
                lin = [x for x in m if isinstance(x, nn.Linear)]
                for l, layer in enumerate(lin[:-1]):
                    self._w[l][j, :layer.in_features, :layer.out_features] = layer.weight.T
                    self._b[l][j, :layer.out_features] = layer.bias
                for l, bnl in enumerate(x for x in m if isinstance(x, nn.BatchNorm1d)):
                    self._gamma[l][j, :inner[j].width] = bnl.weight
                    self._beta[l][j, :inner[j].width] = bnl.bias
                views[-2][j, :inner[j].width] = lin[-1].weight.T
                views[-1][j] = lin[-1].bias
        self.flat = self.flat.to(device)
        # leaves sharing the flat vector's memory: autograd gives their gradients, the optimiser updates `flat`
        self.params, at = [], 0
        for z in sizes:
            self.params.append(nn.Parameter(self.flat[at:at + math.prod(z)].view(z)))
            at += math.prod(z)
        self.w = [self.params[per * l] for l in range(L)]
        self.b = [self.params[per * l + 1] for l in range(L)]
        self.gamma = [self.params[per * l + 2] for l in range(L)] if self.any_bn else []
        self.beta = [self.params[per * l + 3] for l in range(L)] if self.any_bn else []
        self.wo, self.bo = self.params[-2], self.params[-1]
        self.running_mean = [torch.zeros(n * W, device=device) for n in self.n_active]
        self.running_var = [torch.ones(n * W, device=device) for n in self.n_active]
        self.bn_flag = bn.view(k, 1, 1).to(device)
        self.lrs = torch.tensor(list(lrs), dtype=torch.float32)  # caller's order
        lr_inner = self.lrs[self.order]
        self.lr_flat = torch.cat([lr_inner[:z[0]].view(-1, *([1] * (len(z) - 1))).expand(z).reshape(-1)
                                  for z in sizes]).to(device)
        self.opt = OPTIMIZERS[optimizer](self.flat, self.lr_flat)
        self.sizes = sizes
        self.alive = torch.ones(k, dtype=torch.bool)  # host copy, caller's order
        self.alive_dev = torch.ones(k, dtype=torch.bool, device=device)
        self.inv = torch.tensor(self.pos, device=device)  # internal outputs -> caller's order
        self.identity = self.order == list(range(k))
        self.diverged: list[str | None] = [None] * k
        self.diverged_step: list[int | None] = [None] * k

    def forward(self, x: torch.Tensor, train: bool, patterns: list[torch.Tensor] | None = None) -> torch.Tensor:
        """Logits (K, B, classes) of all K models (caller's order) for shared inputs x (B, in); `patterns`
        collects each layer's (n_l, B, W) ReLU on/off pattern (internal order, padded units False)."""
        W = self.width
        h: torch.Tensor = x
        for l, n in enumerate(self.n_active):
            b = self.b[l].unsqueeze(1)
            if h.dim() == 2:
                z = torch.matmul(h, self.w[l]) + b  # (n, B, W)
            else:
                z = torch.baddbmm(b, h if n == len(h) else h[:n], self.w[l])
            if self.any_bn:
                B = z.shape[1]
                flat = z.transpose(0, 1).reshape(B, n * W)  # (B, n*W): one channel per (model, unit)
                zb = F.batch_norm(flat, self.running_mean[l], self.running_var[l], self.gamma[l].reshape(-1),
                                  self.beta[l].reshape(-1), train, BN_MOMENTUM, BN_EPS)
                zb = zb.view(B, n, W).transpose(0, 1)
                z = zb if self.all_bn else torch.where(self.bn_flag[:n], zb, z)
            a = torch.relu(z)  # a padded unit's z is exactly 0 (zero weights, bias and BN scale): no mask needed
            if patterns is not None:
                patterns.append(z > 0)
            h = a if n == self.k or h.dim() == 2 else torch.cat([a, h[n:]])
        out = torch.baddbmm(self.bo.unsqueeze(1), h, self.wo)
        return out if self.identity else out[self.inv]

    def losses(self, x: torch.Tensor, y: torch.Tensor, train: bool = True) -> torch.Tensor:
        """Each model's mean cross-entropy (K,) on the shared batch."""
        z = self.forward(x, train)
        return F.cross_entropy(z.flatten(0, 1), y.repeat(self.k), reduction="none").view(self.k, -1).mean(1)

    def step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One optimiser step of all K on the batch; the K losses before the step (device tensor)."""
        losses = self.losses(x, y, train=True)
        total = torch.where(self.alive_dev, losses, torch.zeros((), device=self.device)).sum()
        grads = torch.autograd.grad(total, self.params)
        with torch.no_grad():
            self.opt.step(torch.cat([g.reshape(-1) for g in grads]))
        return losses.detach()

    def model_views(self, i: int, flat: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Caller's model i's slice of every parameter tensor (of `flat`, default the parameters)."""
        j, out, at = self.pos[i], [], 0
        src = self.flat if flat is None else flat
        for z in self.sizes:
            t = src[at:at + math.prod(z)].view(z)
            at += math.prod(z)
            if j < z[0]:
                out.append(t[j])
        return out

    def mark_diverged(self, i: int, step: int, epoch: int, what: str, cause: str) -> None:
        """Stop model i: weights and optimiser state zeroed, its loss left out from now on."""
        self.alive[i] = False
        self.alive_dev[i] = False
        self.diverged_step[i] = step
        self.diverged[i] = diverged_message(what, step, epoch, float(self.lrs[i]), cause=cause)
        with torch.no_grad():
            for flat in (self.flat, *self.opt.state()):
                for t in self.model_views(i, flat):
                    t.zero_()

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

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, y: torch.Tensor) -> tuple[list[float], list[float]]:
        """Mean cross-entropy and accuracy per model on a whole set (eval mode: BN running statistics);
        NaN for diverged models."""
        z = self.forward(x, train=False)
        loss = F.cross_entropy(z.flatten(0, 1), y.repeat(self.k), reduction="none").view(self.k, -1).mean(1)
        acc = (z.argmax(-1) == y).float().mean(1)
        out = torch.stack([loss, acc]).cpu()
        out[:, ~self.alive] = math.nan
        return out[0].tolist(), out[1].tolist()

    @torch.no_grad()
    def probabilities(self, x: torch.Tensor, chunk: int = 16384) -> torch.Tensor:
        """Softmax outputs (K, N, classes) on the CPU, in chunks."""
        return torch.cat([self.forward(x[i:i + chunk], False).softmax(-1).cpu() for i in range(0, len(x), chunk)], 1)

    @torch.no_grad()
    def region_counts(self, x: torch.Tensor, chunk: int = 8192) -> list[int]:
        """Distinct ReLU activation patterns per model over the points x: linear regions that the points hit."""
        packed: list[list[np.ndarray]] = [[] for _ in range(self.k)]
        for i in range(0, len(x), chunk):
            pats: list[torch.Tensor] = []
            self.forward(x[i:i + chunk], False, pats)
            pats_np = [p.cpu().numpy() for p in pats]
            for m in range(self.k):
                j = self.pos[m]
                rows = np.concatenate([p[j] for p in pats_np if j < len(p)], 1)  # (b, depth * W)
                packed[m].append(np.packbits(rows, axis=1))
        return [count_patterns(np.concatenate(p)) for p in packed]


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


class StackGroup:
    """Models of very different widths as a few KStacks (`width_groups`) stepped together, with KStack's
    interface in the callers' order: one batched forward and backward per group and step."""

    def __init__(self, shapes: Sequence[Shape], in_dim: int, classes: int, lrs: Sequence[float], optimizer: str,
                 seed: int, device: torch.device, ratio: float = 2.0) -> None:
        self.k, self.device = len(shapes), device
        self.groups = width_groups(shapes, ratio)
        self.stacks = [KStack([shapes[i] for i in g], in_dim, classes, [lrs[i] for i in g], optimizer, seed, device)
                       for g in self.groups]
        flat = [i for g in self.groups for i in g]
        self.inv = torch.tensor([flat.index(i) for i in range(self.k)], device=device)

    def _merge(self, parts: Sequence[Sequence]) -> list:
        out: list = [None] * self.k
        for g, part in zip(self.groups, parts):
            for i, v in zip(g, part):
                out[i] = v
        return out

    @property
    def diverged(self) -> list[str | None]:
        return self._merge([s.diverged for s in self.stacks])

    @property
    def diverged_step(self) -> list[int | None]:
        return self._merge([s.diverged_step for s in self.stacks])

    @property
    def alive(self) -> torch.Tensor:
        return torch.tensor(self._merge([s.alive.tolist() for s in self.stacks]))

    def step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One optimiser step of every group; the K losses (callers' order)."""
        return torch.cat([s.step(x, y) for s in self.stacks])[self.inv]

    def check(self, step_losses: torch.Tensor, first_step: int, steps_per_epoch: int, names: Sequence[str]) -> None:
        for g, s in zip(self.groups, self.stacks):
            s.check(step_losses[:, g], first_step, steps_per_epoch, [names[i] for i in g])

    def evaluate(self, x: torch.Tensor, y: torch.Tensor) -> tuple[list[float], list[float]]:
        parts = [s.evaluate(x, y) for s in self.stacks]
        return self._merge([p[0] for p in parts]), self._merge([p[1] for p in parts])

    def probabilities(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([s.probabilities(x) for s in self.stacks])[self.inv.cpu()]

    def region_counts(self, x: torch.Tensor) -> list[int]:
        return self._merge([s.region_counts(x) for s in self.stacks])
