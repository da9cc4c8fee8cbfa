"""Grouped training of a sweep's points: points of one width (all noise levels and seeds) train together
as ONE grouped model (explorer.nets.grouped): one forward/backward per step for all of them, one shared
batch order, one host sync per epoch. MLP points of different small widths share a group too: they are
zero-padded to the group's widest model, and zero-padded units get exactly zero gradient, so they stay
zero and change nothing.

ENGINE_VERSION numbers what this module computes: bump it whenever a change gives any point other numbers (even
in the last bit); entries recorded with another version are flagged on the page and recomputed by the sweep
command (explorer.labs.double_descent.results.engine_note).
"""

from __future__ import annotations

import functools
import hashlib
import math
import time
from typing import Any

import torch
import torch.nn.functional as F

from explorer.core.report import SILENT, Reporter
from explorer.core.schedules import SCHEDULES
from explorer.core.seeding import seeded
from explorer.data.noise import noise_seed, noisy_labels
from explorer.labs.double_descent.spec import EVAL_CHUNK, METRICS, Point, PointResult, SweepData, SweepSpec
from explorer.nets import grouped as ddmodels
from explorer.train import fused_mlp
from explorer.train.evaluate import diverged_message, evaluate, first_nonfinite
from explorer.train.optimizers import build_optimizer, config_for

ENGINE_VERSION = 1  # of the trained families' numbers (v1: this grouped engine with its fused MLP step)

def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random horizontal flip and random 4-pixel crop of a padded copy, as whole-batch tensor ops."""
    b, c, h, w = x.shape
    flip = torch.rand(b, generator=gen) < 0.5
    x = torch.where(flip.to(x.device)[:, None, None, None], x.flip(3), x)
    pad = F.pad(x, (4, 4, 4, 4))  # (B, C, H+8, W+8)
    dy, dx = torch.randint(0, 9, (2, b), generator=gen).to(x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]  # (B, 1, H, 1)
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]  # (B, 1, 1, W)
    return pad[torch.arange(b, device=x.device)[:, None, None, None], torch.arange(c, device=x.device)[None, :, None, None],
               rows, cols]


# ---------------------------------------------------------------- grouped training

def _he_uniform_model(params: list, index: int, dims: list[int], generator: torch.Generator) -> None:
    """Model `index`'s weights He/Kaiming-uniform, U(+-sqrt(6 / fan_in)) (torch.nn.init.kaiming_uniform_'s
    default), biases zero, as the MNIST-1D notebook initialises; the layout of fused_mlp.init_model (padding
    left zero)."""
    for (w, b), fan_in, out in zip(params, dims[:-1], dims[1:]):
        bound = math.sqrt(6.0 / fan_in)
        w[index, :fan_in, :out] = torch.empty(fan_in, out).uniform_(-bound, bound, generator=generator)
        b[index, :out] = 0.0


class _FusedGroup:
    """K zero-padded MLPs in -> h -> h -> out as one explorer.train.fused_mlp.FusedMLP (hand-written
    backward), all weights in one flat tensor and all gradients in another, so the optimizer update is
    2-3 element-wise ops (FlatOptimizer) instead of a loop over parameter tensors."""

    def __init__(self, widths: list[int], seeds: list[int], in_dim: int, classes: int, spec: SweepSpec,
                 device: torch.device) -> None:
        k, h = len(widths), max(widths)
        self.dims = [in_dim, h, h, classes]
        flat = torch.zeros(fused_mlp.flat_size(k, self.dims))
        init = fused_mlp.init_model if spec.init == "torch_default" else _he_uniform_model
        for i, (w, s) in enumerate(zip(widths, seeds)):
            init(fused_mlp.flat_layers(flat, k, self.dims), i, [in_dim, w, w, classes],
                 torch.Generator().manual_seed(s * 7_777 + w))
        self.flat = flat.to(device)
        self.grad = torch.zeros_like(self.flat)
        self.layers = fused_mlp.flat_layers(self.flat, k, self.dims)
        self.net = fused_mlp.FusedMLP(self.layers, fused_mlp.flat_layers(self.grad, k, self.dims))
        self.opt = fused_mlp.FlatOptimizer(config_for(spec.optimizer, spec.lr, momentum=spec.momentum,
                                                      weight_decay=spec.weight_decay), self.flat)
        self.widths = widths

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """Inputs (N, ...) -> (N, in + 1) rows ending in the constant-1 column the first layer's bias row multiplies."""
        return self.net.prepare(x)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Prepared x (B, in + 1), shared -> (K, B, C)."""
        return self.net.logits(x, classes_last=True)

    def step(self, x: torch.Tensor, y: torch.Tensor, lr: float, witness: torch.Tensor | None = None) -> None:
        """One step on prepared x (B, in + 1) with labels y (K, B); witness (K,), if given, is non-finite
        exactly when a model's loss is (FusedMLP.step)."""
        self.net.step(x, y, witness=witness)
        self.opt.step(self.grad, lr)

    def train(self, mode: bool) -> None:
        """No batch norm or dropout: nothing to switch."""

    def state(self, k: int) -> dict[str, torch.Tensor]:
        """Model k's weights un-padded, under the names and shapes of ddmodels.GroupedMLP with K=1."""
        w = self.widths[k]
        layers = fused_mlp.model_layers(self.layers, k, [self.dims[0], w, w, self.dims[-1]])
        return {name: t for i, (wt, b) in enumerate(layers)
                for name, t in ((f"layers.{i}.weight", wt[None].clone()), (f"layers.{i}.bias", b[None, None].clone()))}


class _AutogradGroup:
    """K same-width models of a ddmodels family as one grouped module, trained with torch.optim."""

    def __init__(self, family: str, width: int, seeds: list[int], data: SweepData, spec: SweepSpec,
                 device: torch.device) -> None:
        singles = []
        for s in seeds:
            with seeded(s * 7_777 + width):
                single = ddmodels.build(family, width, 1, data.in_shape, data.num_classes)
                if spec.init == "he_uniform":
                    ddmodels.he_uniform_(single)
                singles.append(single.state_dict())
        self.k = len(seeds)
        self.model = ddmodels.build(family, width, self.k, data.in_shape, data.num_classes).to(device)
        self.model.load_state_dict(ddmodels.restack(singles))
        self.opt = build_optimizer(config_for(spec.optimizer, spec.lr, momentum=spec.momentum,
                                              weight_decay=spec.weight_decay), self.model.parameters())

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, ...) -> (K, B, C)."""
        return self.model(x)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """Inputs as the module takes them."""
        return x

    def step(self, x: torch.Tensor, y: torch.Tensor, lr: float, witness: torch.Tensor | None = None) -> None:
        """One step with labels y (K, B); the loss is the SUM of the K mean losses, so each model gets its own
        gradient.

        witness (K,), if given, receives each model's loss (finite exactly when the loss is)."""
        for group in self.opt.param_groups:
            group["lr"] = lr
        lp = torch.log_softmax(self.model(x), -1)  # (K, B, C)
        loss = -(lp * F.one_hot(y, lp.shape[-1]).to(lp.dtype)).sum((1, 2)) / x.shape[0]  # (K,)
        self.opt.zero_grad(set_to_none=True)
        loss.sum().backward()
        self.opt.step()
        if witness is not None:
            witness.copy_(loss.detach())

    def train(self, mode: bool) -> None:
        """Switch batch norm between batch statistics and running statistics."""
        self.model.train(mode)

    def state(self, k: int) -> dict[str, torch.Tensor]:
        """Model k's weights under the names of the K=1 module."""
        return ddmodels.unstack(self.model.state_dict(), self.k, k)


def train_group(spec: SweepSpec, points: list[Point], data: SweepData, *,
                report: Reporter = SILENT, until: int | None = None) -> list[PointResult]:
    """Train the points together (one forward/backward per step for all); per-epoch metrics for each.

    `report` gets a checkpoint before each epoch and the fraction of epochs done after it. `until` stops after that
    many epochs of the spec's run (its schedule still spans spec.epochs): the same bits as the full run's first
    epochs, for a cheap check of a shipped sweep where the full recompute cannot be exact.
    """
    if not spec.trained:
        raise ValueError(f"{spec.family} points are solved in closed form (random_features.sweep_point), not trained")
    device = data.x_train.device
    k, c = len(points), data.num_classes
    if spec.family != "mlp" and len({p.width for p in points}) != 1:
        raise ValueError("only MLP points of different widths can share a group")
    start = time.perf_counter()
    if spec.family == "mlp":
        net: Any = _FusedGroup([p.width for p in points], [p.seed for p in points], math.prod(data.in_shape), c,
                               spec, device)
    else:
        net = _AutogradGroup(spec.family, points[0].width, [p.seed for p in points], data, spec, device)
    scheme = spec.noise_scheme
    y_tr = torch.stack([noisy_labels(data.y_train, p.noise, c, noise_seed(p.seed, p.noise), scheme)
                        for p in points])  # (K, N)
    y_te_noisy = torch.stack([noisy_labels(data.y_test, p.noise, c, noise_seed(p.seed, p.noise, 1), scheme)
                              for p in points])
    y_te = data.y_test.expand(k, -1)
    x_tr, x_te = net.prepare(data.x_train), net.prepare(data.x_test)
    order = torch.Generator().manual_seed(spec.data_seed)
    aug = torch.Generator().manual_seed(spec.data_seed + 1)
    n, bs = len(x_tr), min(spec.batch_size, len(x_tr))
    record = set(spec.recorded_epochs())
    keep = set(spec.checkpoint_epochs)
    hist = {m: [[] for _ in points] for m in METRICS}
    epochs: list[int] = []
    diverged: list[str | None] = [None] * k
    ckpts: list[dict[str, torch.Tensor]] = [{} for _ in points]
    steps_per_epoch = math.ceil(n / bs)
    for epoch in range(spec.epochs if until is None else min(until, spec.epochs)):
        report.checkpoint()
        lr = spec.lr * SCHEDULES[spec.schedule](epoch, spec.epochs)
        perm = torch.randperm(n, generator=order).to(device)
        xs, ys = x_tr[perm], y_tr[:, perm]  # one shuffled copy per epoch; batches are views of it
        losses = torch.empty(steps_per_epoch, k, device=device)  # per step: finite exactly when the loss is
        net.train(True)
        for s in range(steps_per_epoch):
            xb = xs[s * bs:(s + 1) * bs]
            if spec.augment == "flip_crop" and xb.dim() == 4:
                xb = _augment(xb, aug)
            net.step(xb, ys[:, s * bs:(s + 1) * bs], lr, losses[s])
        for i, (p, bad) in enumerate(zip(points, first_nonfinite(losses))):  # the one host sync of the epoch
            if bad is not None and diverged[i] is None:
                diverged[i] = diverged_message(f"width {p.width} (noise {p.noise:g}, seed {p.seed})",
                                               epoch * steps_per_epoch + bad + 1, epoch + 1, spec.lr)
        e = epoch + 1
        if e in record:
            net.train(False)
            [(tr_l, tr_e)] = evaluate(net.logits, x_tr, [y_tr], EVAL_CHUNK)
            (te_l, te_e), (tn_l, tn_e) = evaluate(net.logits, x_te, [y_te, y_te_noisy], EVAL_CHUNK)
            vals = torch.stack([tr_e, tr_l, te_e, te_l, tn_e, tn_l]).tolist()  # (6, K)
            epochs.append(e)
            for m, row in zip(METRICS, vals):
                for i, v in enumerate(row):
                    hist[m][i].append(float("nan") if diverged[i] else round(v, 6))
        if e in keep:
            for i in range(k):
                ckpts[i].update({f"epoch{e}/{name}": t.cpu() for name, t in net.state(i).items()})
        report.publish(progress=e / spec.epochs)
    wall = time.perf_counter() - start
    return [PointResult(p, epochs, {m: hist[m][i] for m in METRICS},
                        ddmodels.param_count(spec.family, p.width, data.in_shape, data.num_classes),
                        wall / k, diverged[i], ckpts[i], c) for i, p in enumerate(points)]


CONV_PROBE_SHAPES = ((1, 28, 28), (3, 32, 32))  # MNIST-like and CIFAR-10 images (a 1x28x28-only probe agreed on a
# CPU where the CIFAR-10 sweep's convolutions gave other bits from epoch 2)


def numerics_probe(family: str) -> str:
    """A fingerprint of this machine's float kernels as a family's points use them (16 hex digits), from the bits
    of a short computation on fixed data: a few fused-MLP steps of padded models (mlp), a grouped CNN's gradients
    (cnn5, resnet18: convolution kernels and their thread split), a float64 SVD and feature matmul (random
    features), at torch's current thread count. Where the fingerprint is the one a result was computed under,
    recomputing it gives the same bits; elsewhere (another CPU, BLAS or thread count) the last bits may differ,
    and long trainings amplify them."""
    return _numerics_probe(family, torch.get_num_threads())


@functools.lru_cache(maxsize=16)
def _numerics_probe(family: str, threads: int) -> str:
    """numerics_probe for one thread count (the count is the cache key: the bits depend on it)."""
    from explorer.labs.double_descent.spec import RF_FAMILIES, SweepSpec

    g = torch.Generator().manual_seed(0)
    with torch.random.fork_rng(devices=[]):
        if family == "mlp":
            spec = SweepSpec(name="numerics-probe", dataset="digits", lr=0.05)
            net = _FusedGroup([3, 20], [0, 1], 40, 10, spec, torch.device("cpu"))
            x = net.prepare(torch.randn(100, 40, generator=g))
            for _ in range(3):
                net.step(x, torch.randint(0, 10, (2, 100), generator=g), spec.lr)
            parts = [net.flat]
        elif family in RF_FAMILIES:
            x = torch.randn(60, 50, generator=g, dtype=torch.float64)
            phi = torch.cos(x @ torch.randn(50, 90, generator=g, dtype=torch.float64))
            parts = list(torch.linalg.svd(phi, full_matrices=False))
        else:  # both image shapes the conv sweeps use: a CPU may pick other kernels for 3 input channels than for 1
            parts = []
            for shape in CONV_PROBE_SHAPES:
                torch.manual_seed(0)
                cnn = ddmodels.build("cnn5", 2, 2, shape, 10)
                cnn(torch.randn(8, *shape, generator=g)).square().sum().backward()
                parts += [p.grad for p in cnn.parameters()]
    h = hashlib.sha256(family.encode())
    for t in parts:
        h.update(t.detach().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]
