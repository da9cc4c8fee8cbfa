"""Double-descent sweeps: a TOML spec -> points (width x label noise x seed) -> cached per-epoch curves.

A point is one model trained from its own seed on labels with its own noise draw; its result
(per-epoch train/test error and loss, parameter count, wall time, chosen checkpoints) is one cache
entry, so an interrupted sweep resumes and computes only the missing points. Points of one width
(all noise levels and seeds) train together as ONE grouped model (explorer.ddmodels): one
forward/backward per step for all of them, one shared batch order, one host sync per epoch.
MLP points of different small widths share a group too: they are zero-padded to the group's widest
model, and zero-padded units get exactly zero gradient, so they stay zero and change nothing.
Random-features points are solved in closed form (explorer.randfeat).

CLI: python -m explorer sweep SPEC.toml [--backend local|ray] [--workers N] [--ship]
"""

from __future__ import annotations

import argparse
import concurrent.futures as futures
import dataclasses
import math
import multiprocessing
import os
import sys
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from . import ddmodels
from .cache import Cache, Entry, to_plain
from .config import ConfigError, check_choice, check_range
from .device import describe_device, get_device
from .schedules import SCHEDULES

if TYPE_CHECKING:
    import pandas

aten = torch.ops.aten
POINT_KIND = "dd_point"
SWEEP_KIND = "dd_sweep"
METRICS = ("train_err", "train_loss", "test_err", "test_loss", "test_err_noisy", "test_loss_noisy")
TRAINED_FAMILIES = ("mlp", "cnn5", "resnet18")
RF_FAMILIES = ("rf_relu", "rf_fourier")
FAMILIES = TRAINED_FAMILIES + RF_FAMILIES
OPTIMIZERS = ("sgd", "momentum", "adam")
AUGMENTS = ("none", "flip_crop")
EVAL_CHUNK = 1024  # examples per evaluation forward, so evaluation never holds the whole set's activations
MAX_POINTS = 2000
MAX_GROUP = 64  # models trained together at most


def _tuple(name: str, value: Any, kind: type) -> tuple:
    """A TOML list (or a single value) as a tuple of `kind`, refused with a clear message otherwise."""
    if isinstance(value, (int, float, str)) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, (list, tuple)) or not value:
        raise ConfigError(f"{name} must be a non-empty list, got {value!r}")
    out = []
    for v in value:
        if kind is float and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)
        if not isinstance(v, kind) or isinstance(v, bool):
            raise ConfigError(f"{name} must hold {kind.__name__} values, got {v!r}")
        out.append(v)
    return tuple(out)


@dataclass(frozen=True)
class SweepSpec:
    """One double-descent sweep: data, label noise, model family and widths, recipe, seeds."""

    name: str  # short identifier, shown in the page's sweep list
    dataset: str = "mnist1d"  # an explorer.datasets name
    train_size: int = 4000  # training points (a seeded subset of the data set's train split)
    test_size: int = 1000  # test points (a seeded subset of the test split)
    label_noise: tuple[float, ...] = (0.0, 0.15)  # fraction of train labels replaced by another class
    family: str = "mlp"  # mlp | cnn5 | resnet18 | rf_relu | rf_fourier
    widths: tuple[int, ...] = (8, 16, 32, 64)  # hidden units / base channels k / random features
    optimizer: str = "momentum"  # sgd | momentum | adam
    lr: float = 0.01  # learning rate per step (per batch, mean loss)
    momentum: float = 0.9  # for optimizer = momentum
    weight_decay: float = 0.0  # L2 added to the gradient
    batch_size: int = 100  # examples per step
    epochs: int = 500  # passes over the training set
    schedule: str = "constant"  # constant | cosine | inverse_sqrt (learning-rate multiplier per epoch)
    augment: str = "none"  # none | flip_crop (random horizontal flip + 4-pixel crop; images only)
    seeds: tuple[int, ...] = (0, 1)  # each seed: its own initial weights and label-noise draw
    data_seed: int = 0  # which train/test subset, and the shared batch order
    record_every: int = 1  # evaluate every this many epochs (and always the last)
    checkpoint_epochs: tuple[int, ...] = ()  # epochs whose weights are kept (safetensors)
    ridge: float = 0.0  # random features only: 0 = minimum-norm least squares
    description: str = ""  # one line for humans

    def __post_init__(self) -> None:
        from . import datasets

        if not isinstance(self.name, str) or not 1 <= len(self.name) <= 80:
            raise ConfigError(f"name must be a string of 1 to 80 characters, got {self.name!r}")
        datasets.check_name("dataset", self.dataset)
        if not self.widths or not self.seeds or not self.label_noise:
            raise ConfigError("widths, seeds and label_noise each need at least one value")
        check_range("train_size", self.train_size, 10, 100_000, integer=True)
        check_range("test_size", self.test_size, 10, 100_000, integer=True)
        for p in self.label_noise:
            check_range("label_noise", p, 0.0, 0.9)
        check_choice("family", self.family, FAMILIES)
        top = 20_000 if self.family in RF_FAMILIES else (1024 if self.family == "mlp" else 128)
        for w in self.widths:
            check_range(f"widths (for {self.family})", w, 1, top, integer=True)
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        check_range("lr", self.lr, 1e-6, 10.0)
        check_range("momentum", self.momentum, 0.0, 0.999)
        check_range("weight_decay", self.weight_decay, 0.0, 1.0)
        check_range("batch_size", self.batch_size, 1, 100_000, integer=True)
        check_range("epochs", self.epochs, 1, 100_000, integer=True)
        check_choice("schedule", self.schedule, SCHEDULES)
        check_choice("augment", self.augment, AUGMENTS)
        for s in self.seeds:
            check_range("seeds", s, 0, 2**31 - 1, integer=True)
        check_range("data_seed", self.data_seed, 0, 2**31 - 1, integer=True)
        check_range("record_every", self.record_every, 1, 100_000, integer=True)
        for e in self.checkpoint_epochs:
            check_range("checkpoint_epochs", e, 1, self.epochs, integer=True)
        check_range("ridge", self.ridge, 0.0, 1e6)
        if len(set(self.widths)) != len(self.widths) or len(set(self.seeds)) != len(self.seeds) \
                or len(set(self.label_noise)) != len(self.label_noise):
            raise ConfigError("widths, seeds and label_noise must not repeat a value")
        n_points = len(self.widths) * len(self.seeds) * len(self.label_noise)
        if n_points > MAX_POINTS:
            raise ConfigError(f"a sweep may have at most {MAX_POINTS} points, this one has {n_points}")

    @property
    def trained(self) -> bool:
        """True for gradient-trained families, False for closed-form random features."""
        return self.family in TRAINED_FAMILIES

    def points(self) -> list[Point]:
        """Every (width, noise, seed), widths ascending."""
        return [Point(w, p, s) for w in sorted(self.widths) for p in self.label_noise for s in self.seeds]

    def recorded_epochs(self) -> list[int]:
        """The epochs (1-based) at which metrics are recorded."""
        if not self.trained:
            return [1]
        return sorted({*range(self.record_every, self.epochs + 1, self.record_every), self.epochs})

    def recipe(self) -> dict[str, Any]:
        """Everything that determines one point's result except (width, noise, seed)."""
        skip = {"name", "description", "widths", "seeds", "label_noise"}
        return {f.name: to_plain(getattr(self, f.name)) for f in dataclasses.fields(self) if f.name not in skip}


SPEC_FIELDS = {f.name: f for f in dataclasses.fields(SweepSpec)}
TUPLE_TYPES = {"label_noise": float, "widths": int, "seeds": int, "checkpoint_epochs": int}


@dataclass(frozen=True)
class Point:
    """One model of a sweep."""

    width: int
    noise: float
    seed: int


def spec_from_dict(data: dict[str, Any]) -> SweepSpec:
    """A validated spec from plain data (a parsed TOML table); unknown keys are refused by name."""
    if not isinstance(data, dict):
        raise ConfigError("a sweep spec must be a table of settings")
    table = dict(data.get("sweep", data))
    unknown = sorted(set(table) - set(SPEC_FIELDS))
    if unknown:
        raise ConfigError(f"unknown setting(s) {', '.join(unknown)}; known: {', '.join(SPEC_FIELDS)}")
    if "name" not in table:
        raise ConfigError("a sweep spec needs a name")
    for key, kind in TUPLE_TYPES.items():
        if key in table:
            table[key] = () if key == "checkpoint_epochs" and table[key] == [] else _tuple(key, table[key], kind)
    return SweepSpec(**table)


def parse_spec(text: str) -> SweepSpec:
    """A validated spec from TOML text."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"the spec is not valid TOML: {err}") from err
    return spec_from_dict(data)


def load_spec(path: str | Path) -> SweepSpec:
    """A validated spec from a TOML file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"no sweep spec at {path}")
    return parse_spec(path.read_text())


LIVE_WIDTHS = (2, 3, 4, 6, 8, 10, 12, 16, 20, 25, 32, 40, 50, 64, 80, 100, 128, 200, 300)  # sweep 1's grid
LIVE_MAX_EPOCHS = 500


def live_spec(widths: list[int], noise_pct: int, epochs: int) -> SweepSpec:
    """A small MNIST-1D MLP sweep to compute on demand (one seed, 0% and noise_pct% label noise).

    Its limits are checked here, so a server refuses a request from outside the page's widgets too: widths
    from sweep 1's grid, at most LIVE_MAX_EPOCHS epochs (the full grid then takes about 2 minutes on one core).
    """
    if not set(widths) <= set(LIVE_WIDTHS):
        raise ConfigError(f"live widths must come from {list(LIVE_WIDTHS)}, got {sorted(widths)}")
    check_range("epochs (live)", epochs, 5, LIVE_MAX_EPOCHS, integer=True)
    check_range("label noise (%)", noise_pct, 0, 50, integer=True)
    return SweepSpec(name="live-mnist1d-mlp", dataset="mnist1d", widths=tuple(sorted(widths)),
                     label_noise=tuple(sorted({0.0, noise_pct / 100})), seeds=(0,), epochs=epochs,
                     description="computed live from the page")


def point_config(spec: SweepSpec, point: Point) -> dict[str, Any]:
    """The cache config of one point: the recipe plus its width, noise and seed."""
    return {**spec.recipe(), "width": point.width, "noise": point.noise, "seed": point.seed}


# ---------------------------------------------------------------- data and label noise

@dataclass(frozen=True)
class SweepData:
    """The sweep's train and test sets on the device."""

    x_train: torch.Tensor  # (N, ...) float32
    y_train: torch.Tensor  # (N,) int64, clean
    x_test: torch.Tensor  # (M, ...) float32
    y_test: torch.Tensor  # (M,) int64, clean
    num_classes: int
    in_shape: tuple[int, ...]


def load_data(spec: SweepSpec, device: torch.device | None = None) -> SweepData:
    """Seeded train/test subsets of the spec's data set (raises DatasetUnavailable with how to get it)."""
    from . import datasets

    device = device or get_device()
    tr = datasets.take(datasets.load(spec.dataset, "train"), spec.train_size, spec.data_seed)
    te = datasets.take(datasets.load(spec.dataset, "test"), spec.test_size, spec.data_seed + 1)
    return SweepData(tr.to_float().to(device), tr.y.to(device), te.to_float().to(device), te.y.to(device),
                     tr.num_classes, tuple(tr.input_shape))


def noise_seed(seed: int, noise: float, salt: int = 0) -> int:
    """The generator seed of one point's label-noise draw (train salt 0, test salt 1)."""
    return (seed * 1_000_003 + round(noise * 1_000_000) * 7919 + salt * 104_729) % (2**63 - 1)


def noisy_labels(y: torch.Tensor, noise: float, num_classes: int, seed: int) -> torch.Tensor:
    """Replace exactly round(noise * N) labels, chosen at random, by a uniformly random OTHER class."""
    g = torch.Generator().manual_seed(seed)
    y_cpu = y.cpu()
    n_flip = round(noise * len(y_cpu))
    idx = torch.randperm(len(y_cpu), generator=g)[:n_flip]
    shift = torch.randint(1, num_classes, (n_flip,), generator=g)  # 1..C-1, never the same class
    out = y_cpu.clone()
    out[idx] = (y_cpu[idx] + shift) % num_classes
    return out.to(y.device)


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

class _MLPFast:
    """K zero-padded MLPs in -> h -> h -> out with a hand-written batched backward (tested vs autograd).

    Built for the per-step overhead of small models: each layer's bias is the last row of its weight
    matrix, fed by a constant-1 column appended to its input (prepare() appends it to the data, the ReLU
    outputs are written next to a fixed column of ones), so a step is 3 + 2 + 3 batched matmuls with no
    bias adds or bias-gradient sums. All weights live in one flat tensor and all gradients in another,
    so the optimizer update is 2-3 element-wise ops instead of a loop over parameter tensors.
    """

    def __init__(self, widths: list[int], seeds: list[int], in_dim: int, classes: int, spec: SweepSpec,
                 device: torch.device) -> None:
        k, h = len(widths), max(widths)
        self.shapes = [(k, in_dim + 1, h), (k, h + 1, h), (k, h + 1, classes)]  # weights with the bias row last
        sizes = [math.prod(s) for s in self.shapes]
        self.flat = torch.zeros(sum(sizes))
        self.weights = [v.view(s) for v, s in zip(self.flat.split(sizes), self.shapes)]
        for i, (w, s) in enumerate(zip(widths, seeds)):
            g = torch.Generator().manual_seed(s * 7_777 + w)
            for layer, (fan_in, rows, cols) in zip(self.weights, [(in_dim, in_dim, w), (w, w, w), (w, w, classes)]):
                bound = 1.0 / math.sqrt(fan_in)
                layer[i, :rows, :cols] = torch.empty(rows, cols).uniform_(-bound, bound, generator=g)
                layer[i, -1, :cols] = torch.empty(cols).uniform_(-bound, bound, generator=g)
        self.flat = self.flat.to(device)
        self.weights = [v.view(s) for v, s in zip(self.flat.split(sizes), self.shapes)]
        self.grad = torch.zeros_like(self.flat)
        self.grads = [v.view(s) for v, s in zip(self.grad.split(sizes), self.shapes)]
        self.spec, self.widths, self.classes, self.h = spec, widths, classes, h
        self.buf = self.adam_m = self.adam_v = None
        self.t = 0
        self._acts: tuple[torch.Tensor, torch.Tensor] | None = None

    @property
    def params(self) -> list[torch.Tensor]:
        """Views [w1, b1, w2, b2, w3, b3] of the weights: w (K, in, out), b (K, 1, out)."""
        return [t for w in self.weights for t in (w[:, :-1], w[:, -1:])]

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """Inputs (N, ...) -> (N, in + 1) with the constant-1 column the first layer's bias row multiplies."""
        x = x.reshape(len(x), -1)
        return torch.cat([x, torch.ones(len(x), 1, device=x.device, dtype=x.dtype)], 1)

    def _act_buffers(self, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Two (K, b, h + 1) buffers for the ReLU outputs (views of the largest batch's); the last column is 1."""
        if self._acts is None or self._acts[0].shape[1] < b:
            k = self.shapes[0][0]
            self._acts = (torch.ones(k, b, self.h + 1, device=self.flat.device),
                          torch.ones(k, b, self.h + 1, device=self.flat.device))
        return self._acts[0][:, :b], self._acts[1][:, :b]

    def _forward(self, xk: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """xk (K, B, in + 1) -> pre-activations h1, h2, ReLU outputs a1, a2 (with the 1-column), logits z."""
        w1, w2, w3 = self.weights
        a1, a2 = self._act_buffers(xk.shape[1])
        h1 = torch.bmm(xk, w1)
        torch.clamp_min(h1, 0, out=a1[..., :-1])
        h2 = torch.bmm(a1, w2)
        torch.clamp_min(h2, 0, out=a2[..., :-1])
        return h1, h2, a1, a2, torch.bmm(a2, w3)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Prepared x (B, in + 1), shared -> (K, B, C)."""
        return self._forward(x.expand(self.shapes[0][0], *x.shape))[-1]

    def step(self, x: torch.Tensor, y1h: torch.Tensor, lr: float, witness: torch.Tensor | None = None) -> None:
        """One step on prepared x (B, in + 1) with one-hot targets (K, B, C).

        witness (K,), if given, receives the sum of each model's logits: it is non-finite when a logit is inf
        or NaN, which is exactly when the stably computed cross-entropy is (short of logits near 1e35, where
        the sum itself overflows: a diverged model in any case).
        """
        w1, w2, w3 = self.weights
        bsz = x.shape[0]
        xk = x.expand(w1.shape[0], *x.shape)  # (K, B, in + 1)
        h1, h2, a1, a2, z = self._forward(xk)
        if witness is not None:
            torch.sum(z, (1, 2), out=witness)
        e = (z - z.amax(-1, keepdim=True)).exp_()
        s = e.sum(-1, keepdim=True)
        g3 = e.div_(s).sub_(y1h).mul_(1.0 / bsz)  # dL/dz of the mean cross-entropy: softmax - onehot, / B
        g2 = aten.threshold_backward(torch.bmm(g3, w3[:, :-1].transpose(1, 2)), h2, 0)  # (K, B, h); ReLU'
        g1 = aten.threshold_backward(torch.bmm(g2, w2[:, :-1].transpose(1, 2)), h1, 0)
        gw1, gw2, gw3 = self.grads
        torch.bmm(a2.transpose(1, 2), g3, out=gw3)
        torch.bmm(a1.transpose(1, 2), g2, out=gw2)
        torch.bmm(xk.transpose(1, 2), g1, out=gw1)
        self._update(lr)

    def _update(self, lr: float) -> None:
        """torch.optim's SGD / momentum / Adam arithmetic on the flat weights (element-wise)."""
        spec, p, g = self.spec, self.flat, self.grad
        if spec.weight_decay:
            g.add_(p, alpha=spec.weight_decay)
        if spec.optimizer == "adam":
            self.t += 1
            if self.adam_m is None:
                self.adam_m, self.adam_v = torch.zeros_like(p), torch.zeros_like(p)
            b1, b2, eps = 0.9, 0.999, 1e-8
            self.adam_m.lerp_(g, 1 - b1)
            self.adam_v.mul_(b2).addcmul_(g, g, value=1 - b2)
            denom = (self.adam_v.sqrt() / math.sqrt(1 - b2 ** self.t)).add_(eps)
            p.addcdiv_(self.adam_m, denom, value=-lr / (1 - b1 ** self.t))
            return
        if spec.optimizer == "momentum":
            if self.buf is None:
                self.buf = g.clone()
            else:
                self.buf.mul_(spec.momentum).add_(g)
            g = self.buf
        p.add_(g, alpha=-lr)

    def train(self, mode: bool) -> None:
        """No batch norm or dropout: nothing to switch."""

    def state(self, k: int) -> dict[str, torch.Tensor]:
        """Model k's weights un-padded, under the names of ddmodels.GroupedMLP with K=1."""
        w = self.widths[k]
        w1, b1, w2, b2, w3, b3 = (p[k:k + 1] for p in self.params)
        return {"layers.0.weight": w1[:, :, :w].clone(), "layers.0.bias": b1[:, :, :w].clone(),
                "layers.1.weight": w2[:, :w, :w].clone(), "layers.1.bias": b2[:, :, :w].clone(),
                "layers.2.weight": w3[:, :w, :].clone(), "layers.2.bias": b3.clone()}


class _AutogradGroup:
    """K same-width models of a ddmodels family as one grouped module, trained with torch.optim."""

    def __init__(self, family: str, width: int, seeds: list[int], data: SweepData, spec: SweepSpec,
                 device: torch.device) -> None:
        singles = []
        for s in seeds:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(s * 7_777 + width)
                singles.append(ddmodels.build(family, width, 1, data.in_shape, data.num_classes).state_dict())
        self.k = len(seeds)
        self.model = ddmodels.build(family, width, self.k, data.in_shape, data.num_classes).to(device)
        self.model.load_state_dict(ddmodels.restack(singles))
        params = list(self.model.parameters())
        wd = spec.weight_decay
        self.opt = {"sgd": lambda: torch.optim.SGD(params, lr=spec.lr, weight_decay=wd),
                    "momentum": lambda: torch.optim.SGD(params, lr=spec.lr, momentum=spec.momentum, weight_decay=wd),
                    "adam": lambda: torch.optim.Adam(params, lr=spec.lr, weight_decay=wd)}[spec.optimizer]()

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, ...) -> (K, B, C)."""
        return self.model(x)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """Inputs as the module takes them."""
        return x

    def step(self, x: torch.Tensor, y1h: torch.Tensor, lr: float, witness: torch.Tensor | None = None) -> None:
        """One step; the loss is the SUM of the K mean losses, so each model gets its own gradient.

        witness (K,), if given, receives each model's loss (finite exactly when the loss is)."""
        for group in self.opt.param_groups:
            group["lr"] = lr
        lp = torch.log_softmax(self.model(x), -1)  # (K, B, C)
        loss = -(lp * y1h).sum((1, 2)) / x.shape[0]  # (K,)
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


@torch.no_grad()
def _evaluate(net: Any, x: torch.Tensor, label_sets: list[torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per-model mean loss and error (device tensors (K,)) against each (K, N) label set, in chunks."""
    k, n = label_sets[0].shape
    sums = [(torch.zeros(k, device=x.device), torch.zeros(k, device=x.device)) for _ in label_sets]
    for i in range(0, n, EVAL_CHUNK):
        z = net.logits(x[i:i + EVAL_CHUNK]).float()  # (K, b, C)
        m = z.amax(-1, keepdim=True)
        lse = (z - m).exp_().sum(-1, keepdim=True).log_().add_(m).sum((1, 2))  # (K,): the loss is lse - z[y]
        pred = z.argmax(-1)  # (K, b)
        for (loss, wrong), ys in zip(sums, label_sets):
            y = ys[:, i:i + EVAL_CHUNK]
            loss += lse - z.gather(-1, y.unsqueeze(-1)).sum((1, 2))
            wrong += (pred != y).sum(1)
    return [(loss / n, wrong / n) for loss, wrong in sums]


@dataclass
class PointResult:
    """What training one point produced."""

    point: Point
    epochs: list[int]
    metrics: dict[str, list[float]]  # METRICS name -> one value per recorded epoch
    params: int
    wall_time_s: float
    diverged: str | None = None
    checkpoints: dict[str, torch.Tensor] = dataclasses.field(default_factory=dict)  # "epoch{E}/{name}"


def train_group(spec: SweepSpec, points: list[Point], data: SweepData, *,
                on_epoch: Callable[[int], None] | None = None,
                checkpoint: Callable[[], None] | None = None) -> list[PointResult]:
    """Train the points together (one forward/backward per step for all); per-epoch metrics for each."""
    if not spec.trained:
        from . import randfeat

        return [randfeat.sweep_point(spec, p, data) for p in points]
    device = data.x_train.device
    k, c = len(points), data.num_classes
    if spec.family != "mlp" and len({p.width for p in points}) != 1:
        raise ValueError("only MLP points of different widths can share a group")
    start = time.perf_counter()
    if spec.family == "mlp":
        net: Any = _MLPFast([p.width for p in points], [p.seed for p in points], math.prod(data.in_shape), c,
                            spec, device)
    else:
        net = _AutogradGroup(spec.family, points[0].width, [p.seed for p in points], data, spec, device)
    y_tr = torch.stack([noisy_labels(data.y_train, p.noise, c, noise_seed(p.seed, p.noise)) for p in points])  # (K, N)
    y_te_noisy = torch.stack([noisy_labels(data.y_test, p.noise, c, noise_seed(p.seed, p.noise, 1)) for p in points])
    y_te = data.y_test.expand(k, -1)
    y1h = F.one_hot(y_tr, c).float()  # (K, N, C)
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
    for epoch in range(spec.epochs):
        if checkpoint is not None:
            checkpoint()
        lr = spec.lr * SCHEDULES[spec.schedule](epoch, spec.epochs)
        perm = torch.randperm(n, generator=order).to(device)
        xs, ys = x_tr[perm], y1h[:, perm]  # one shuffled copy per epoch; batches are views of it
        losses = torch.empty(steps_per_epoch, k, device=device)  # per step: finite exactly when the loss is
        net.train(True)
        for s in range(steps_per_epoch):
            xb = xs[s * bs:(s + 1) * bs]
            if spec.augment == "flip_crop" and xb.dim() == 4:
                xb = _augment(xb, aug)
            net.step(xb, ys[:, s * bs:(s + 1) * bs], lr, losses[s])
        finite = torch.isfinite(losses).all(0).tolist()  # the one host sync of the epoch
        for i, ok in enumerate(finite):
            if not ok and diverged[i] is None:
                bad = int((~torch.isfinite(losses[:, i])).nonzero()[0, 0])
                diverged[i] = (f"loss became non-finite at step {epoch * steps_per_epoch + bad + 1} "
                               f"(epoch {epoch + 1}); lr {spec.lr:g} is probably too high")
        e = epoch + 1
        if e in record:
            net.train(False)
            [(tr_l, tr_e)] = _evaluate(net, x_tr, [y_tr])
            (te_l, te_e), (tn_l, tn_e) = _evaluate(net, x_te, [y_te, y_te_noisy])
            vals = torch.stack([tr_e, tr_l, te_e, te_l, tn_e, tn_l]).tolist()  # (6, K)
            epochs.append(e)
            for m, row in zip(METRICS, vals):
                for i, v in enumerate(row):
                    hist[m][i].append(float("nan") if diverged[i] else round(v, 6))
        if e in keep:
            for i in range(k):
                ckpts[i].update({f"epoch{e}/{name}": t.cpu() for name, t in net.state(i).items()})
        if on_epoch is not None:
            on_epoch(e)
    wall = time.perf_counter() - start
    return [PointResult(p, epochs, {m: hist[m][i] for m in METRICS},
                        ddmodels.param_count(spec.family, p.width, data.in_shape, data.num_classes),
                        wall / k, diverged[i], ckpts[i]) for i, p in enumerate(points)]


# ---------------------------------------------------------------- planning, cache, backends

def point_cost(spec: SweepSpec, width: int) -> float:
    """Relative cost of one point (multiply-adds per example plus a fixed per-op overhead)."""
    if spec.family == "mlp":
        return width * (40 + width + 10) + 3_000
    if spec.family in RF_FAMILIES:
        return width * 1.0 + 1_000
    return ddmodels.param_count(spec.family, width, (3, 32, 32), 10) * 20 + 50_000


def plan_groups(spec: SweepSpec, points: list[Point]) -> list[list[Point]]:
    """Group points to train together: same width; MLP widths merge while padding wastes < 25%."""
    by_width: dict[int, list[Point]] = {}
    for p in points:
        by_width.setdefault(p.width, []).append(p)
    groups: list[list[Point]] = []
    for width in sorted(by_width):
        members = by_width[width]
        if spec.family == "mlp" and groups:
            last = groups[-1]
            merged = last + members
            padded = len(merged) * point_cost(spec, width)
            real = sum(point_cost(spec, p.width) for p in merged)
            if padded <= 1.25 * real and len(merged) <= MAX_GROUP:
                groups[-1] = merged
                continue
        for i in range(0, len(members), MAX_GROUP):
            groups.append(members[i:i + MAX_GROUP])
    return groups


def result_to_entry(spec: SweepSpec, r: PointResult) -> tuple[dict, dict, dict]:
    """(metrics, tensors, meta) of a point's cache entry."""
    metrics = {"epochs": r.epochs, **r.metrics, "params": r.params, "diverged": r.diverged}
    meta = {"wall_time_s": r.wall_time_s, "device": describe_device()}
    return metrics, r.checkpoints, meta


def compute_group(spec: SweepSpec, group: list[Point], cache_root: str | None = None,
                  on_epoch: Callable[[int], None] | None = None,
                  checkpoint: Callable[[], None] | None = None) -> list[str]:
    """Train one group and write each point's entry to the cache; returns the entry keys."""
    cache = Cache(Path(cache_root)) if cache_root else Cache()
    data = load_data(spec)
    results = train_group(spec, group, data, on_epoch=on_epoch, checkpoint=checkpoint)
    keys = []
    for r in results:
        metrics, tensors, meta = result_to_entry(spec, r)
        keys.append(cache.put(POINT_KIND, point_config(spec, r.point), metrics, tensors, meta).key)
    return keys


def _worker_init(threads: int) -> None:
    """Each local worker process uses its share of the cores (and reuses freed tensor memory)."""
    from .device import configure_allocator

    torch.set_num_threads(threads)
    configure_allocator()


class Progress:
    """A one-line terminal progress bar with an ETA weighted by each group's estimated cost."""

    def __init__(self, total_cost: float, n_points: int, stream: Any = sys.stderr) -> None:
        self.total, self.n_points, self.stream = max(total_cost, 1e-9), n_points, stream
        self.done_cost, self.done_points, self.start = 0.0, 0, time.perf_counter()
        self.partial = 0.0

    def update(self, partial: float = 0.0, points: int = 0, cost: float = 0.0) -> str:
        """Record progress (finished points and cost, plus cost done inside running groups) and draw."""
        self.done_points += points
        self.done_cost += cost
        self.partial = partial
        frac = min((self.done_cost + partial) / self.total, 1.0) if self.total > 1e-9 else 1.0
        el = time.perf_counter() - self.start
        eta = el * (1 - frac) / frac if frac > 0 else float("nan")
        bar = "#" * int(30 * frac)
        line = (f"\r[{bar:<30}] {100 * frac:5.1f}%  {self.done_points}/{self.n_points} points  "
                f"elapsed {_hms(el)}  ETA {_hms(eta)}")
        if self.stream is not None:
            self.stream.write(line)
            self.stream.flush()
        return line


def _hms(s: float) -> str:
    """Seconds as 1h02m03s / 2m03s / 3s."""
    if not math.isfinite(s):
        return "?"
    s = int(s)
    h, m = s // 3600, s % 3600 // 60
    return f"{h}h{m:02d}m{s % 60:02d}s" if h else (f"{m}m{s % 60:02d}s" if m else f"{s}s")


@dataclass
class SweepResult:
    """A finished sweep: its summary entry and how many points were computed now vs found cached."""

    entry: Entry
    computed: int
    cached: int
    wall_time_s: float


def run_sweep(spec: SweepSpec, *, backend: str = "local", workers: int = 1, cache: Cache | None = None,
              on_progress: Callable[[float, str], None] | None = None,
              checkpoint: Callable[[], None] | None = None, progress_stream: Any = None,
              ray_gpus: float = 0.0) -> SweepResult:
    """Compute every missing point (resume), then write and return the sweep's summary entry."""
    check_choice("backend", backend, BACKENDS)
    check_range("workers", workers, 1, 256, integer=True)
    cache = cache or Cache()
    start = time.perf_counter()
    points = spec.points()
    missing = [p for p in points if cache.get(POINT_KIND, point_config(spec, p)) is None]
    groups = plan_groups(spec, missing)
    costs = [sum(point_cost(spec, p.width) for p in g) * (spec.epochs if spec.trained else 1) for g in groups]
    bar = Progress(sum(costs), len(points), progress_stream)
    bar.update(points=len(points) - len(missing))

    def report(partial: float = 0.0, points_done: int = 0, cost: float = 0.0) -> None:
        line = bar.update(partial, points_done, cost)
        if on_progress is not None:
            on_progress(min((bar.done_cost + partial) / bar.total, 1.0), line.strip())

    BACKENDS[backend](spec, groups, costs, cache, workers, report, checkpoint, ray_gpus)
    if progress_stream is not None:
        progress_stream.write("\n")
    entry = write_summary(spec, cache, time.perf_counter() - start)
    return SweepResult(entry, len(missing), len(points) - len(missing), time.perf_counter() - start)


def _run_local(spec, groups, costs, cache, workers, report, checkpoint, ray_gpus) -> None:
    """Groups one after another in this process, or in `workers` processes sharing the cores."""
    root = str(cache.root)
    if workers == 1:
        for g, cost in zip(groups, costs):
            per_epoch = cost / (spec.epochs if spec.trained else 1)
            compute_group(spec, g, root, on_epoch=lambda e, pe=per_epoch: report(partial=e * pe),
                          checkpoint=checkpoint)
            report(points_done=len(g), cost=cost)
        return
    threads = max(1, torch.get_num_threads() // workers)
    ctx = multiprocessing.get_context("spawn")
    with futures.ProcessPoolExecutor(workers, mp_context=ctx, initializer=_worker_init, initargs=(threads,)) as pool:
        pending = {pool.submit(compute_group, spec, g, root): (g, c) for g, c in zip(groups, costs)}
        for fut in futures.as_completed(pending):
            fut.result()
            g, cost = pending[fut]
            report(points_done=len(g), cost=cost)
            if checkpoint is not None:
                checkpoint()


def _ray_group(spec_dict: dict, group: list[tuple], cache_root: str) -> list[tuple[dict, dict, dict, dict]]:
    """A Ray task: train one group; return each point's (config, metrics, tensors as numpy, meta)."""
    from .device import configure_allocator

    configure_allocator()
    spec = spec_from_dict(spec_dict)
    data = load_data(spec)
    out = []
    for r in train_group(spec, [Point(*p) for p in group], data):
        metrics, tensors, meta = result_to_entry(spec, r)
        out.append((point_config(spec, r.point), metrics, {k: v.numpy() for k, v in tensors.items()}, meta))
    return out


def _run_ray(spec, groups, costs, cache, workers, report, checkpoint, ray_gpus) -> None:
    """Each group is a Ray task (num_gpus=ray_gpus each); the driver writes the results to its cache."""
    import ray

    if not ray.is_initialized():
        if os.environ.get("RAY_ADDRESS"):
            ray.init()  # join the cluster named there; it says how many CPUs and GPUs it has
        else:
            ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
    task = ray.remote(num_gpus=ray_gpus, num_cpus=1)(_ray_group)
    spec_dict = to_plain(spec)
    refs = {task.remote(spec_dict, [dataclasses.astuple(p) for p in g], str(cache.root)): (g, c)
            for g, c in zip(groups, costs)}
    remaining = list(refs)
    while remaining:
        ready, remaining = ray.wait(remaining, num_returns=1)
        for config, metrics, tensors, meta in ray.get(ready[0]):
            cache.put(POINT_KIND, config, metrics, {k: torch.from_numpy(v) for k, v in tensors.items()}, meta)
        g, cost = refs[ready[0]]
        report(points_done=len(g), cost=cost)
        if checkpoint is not None:
            checkpoint()


BACKENDS: dict[str, Callable[..., None]] = {"local": _run_local, "ray": _run_ray}


def write_summary(spec: SweepSpec, cache: Cache, wall_time_s: float, root: Cache | None = None) -> Entry:
    """The sweep-level entry: every point's per-epoch metrics as one (P, E, M) float32 tensor."""
    entries = [cache.get(POINT_KIND, point_config(spec, p)) for p in spec.points()]
    if any(e is None for e in entries):
        raise RuntimeError("cannot summarise a sweep with missing points")
    epochs = entries[0].metrics["epochs"]
    table = torch.tensor([[e.metrics[m] for m in METRICS] for e in entries], dtype=torch.float32)  # (P, M, E)
    points = [{"width": p.width, "noise": p.noise, "seed": p.seed, "params": e.metrics["params"],
               "wall_time_s": e.meta.get("wall_time_s"), "device": e.meta.get("device"),
               "code_version": e.meta.get("code_version"), "diverged": e.metrics["diverged"]}
              for p, e in zip(spec.points(), entries)]
    metrics = {"metric_names": list(METRICS), "epochs": epochs, "points": points,
               "points_wall_time_s": sum(p["wall_time_s"] or 0.0 for p in points)}
    meta = {"wall_time_s": wall_time_s, "sweep_name": spec.name}
    return (root or cache).put(SWEEP_KIND, spec, metrics, {"metrics": table.transpose(1, 2).contiguous()}, meta)


SPEC_DIR = Path(__file__).resolve().parents[1] / "sweeps"


def spec_file(name: str, spec_dir: Path = SPEC_DIR) -> Path | None:
    """The spec file in sweeps/ whose sweep is called `name` (to tell users how to recompute it), or None."""
    for path in sorted(spec_dir.glob("*.toml")):
        try:
            if load_spec(path).name == name:
                return path
        except ConfigError:
            continue
    return None


def recompute_command(entry: Entry) -> str:
    """The CLI command that recomputes a sweep summary entry."""
    path = spec_file(entry.config["name"])
    where = f"sweeps/{path.name}" if path is not None else "SPEC.toml"
    return f"python -m explorer sweep {where}" + (" --ship" if entry.shipped else "")


def summary_spec(entry: Entry) -> SweepSpec:
    """The spec a summary entry was computed from."""
    return spec_from_dict(entry.config)


def list_sweeps(cache: Cache | None = None) -> list[Entry]:
    """Every sweep summary in the cache (runtime and shipped), newest first."""
    entries = (cache or Cache()).entries(SWEEP_KIND)
    return sorted(entries, key=lambda e: e.meta.get("created", ""), reverse=True)


# ---------------------------------------------------------------- CLI

def main(argv: list[str]) -> int:
    """python -m explorer sweep SPEC.toml [--backend local|ray] [--workers N] [--ship]."""
    ap = argparse.ArgumentParser(prog="python -m explorer sweep", description=__doc__.splitlines()[0])
    ap.add_argument("spec", help="a sweep spec (TOML), e.g. sweeps/mnist1d_mlp.toml")
    ap.add_argument("--backend", default="local", choices=sorted(BACKENDS))
    ap.add_argument("--workers", type=int, default=1, help="parallel worker processes / Ray CPUs")
    ap.add_argument("--gpus-per-task", type=float, default=0.0, help="Ray: GPUs per task (e.g. 0.25)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads per process (0: torch's default)")
    ap.add_argument("--ship", action="store_true", help="also write the summary to cache/shipped/")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)  # on a busy machine 1 thread per process beats oversubscription
    try:
        spec = load_spec(args.spec)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    from .datasets import DatasetUnavailable

    print(f"sweep {spec.name}: {len(spec.points())} points on {describe_device()}", file=sys.stderr)
    try:
        res = run_sweep(spec, backend=args.backend, workers=args.workers, progress_stream=sys.stderr,
                        ray_gpus=args.gpus_per_task)
    except DatasetUnavailable as err:
        print(f"\nerror: {err}", file=sys.stderr)
        return 2
    print(f"done: {res.computed} points computed, {res.cached} found in the cache, "
          f"{res.wall_time_s:.1f} s; summary {res.entry.path}")
    if args.ship:
        cache = Cache()
        shipped = write_summary(spec, cache, res.entry.meta["wall_time_s"], Cache(cache.shipped_root))
        print(f"shipped: {shipped.path}")
    return 0


# ---------------------------------------------------------------- reading results for plots

def sweep_frame(entry: Entry) -> "pandas.DataFrame":
    """A summary entry as a long table: one row per (point, recorded epoch) with every metric."""
    import pandas as pd

    table = entry.tensors()["metrics"].numpy()  # (P, E, M)
    names, epochs, points = entry.metrics["metric_names"], entry.metrics["epochs"], entry.metrics["points"]
    p_idx, e_idx = (a.ravel() for a in np.indices(table.shape[:2]))
    df = pd.DataFrame(table.reshape(-1, len(names)), columns=names)
    for col in ("width", "noise", "seed", "params"):
        df[col] = [points[i][col] for i in p_idx]
    df["epoch"] = [epochs[j] for j in e_idx]
    return df


def interpolation_threshold(df: "pandas.DataFrame", noise: float, epoch: int, by: str = "width",
                            column: str = "train_err", tol: float = 0.0) -> float | None:
    """The smallest width (or params) whose seed-mean `column` at `epoch` is <= tol (the model fits
    its training labels), else None; for random features use column="train_loss", tol=1e-6."""
    at = df[(df["noise"] == noise) & (df["epoch"] == epoch)].groupby(by)[column].mean().sort_index()
    zero = at[at <= tol]
    return float(zero.index[0]) if len(zero) else None


def describe(entry: Entry) -> str:
    """One line saying what a sweep is: data, family, noise, seeds, epochs, device, wall time."""
    c, m, meta = entry.config, entry.metrics, entry.meta
    noise = "/".join(f"{100 * p:g}%" for p in c["label_noise"])
    wall = m.get("points_wall_time_s") or meta.get("wall_time_s") or 0.0
    recipe = f"{c['epochs']} epochs" if c["family"] in TRAINED_FAMILIES else "closed form"
    device = (m["points"][0].get("device") or meta.get("device", "?")) if m.get("points") else meta.get("device", "?")
    return (f"{c['name']}: {c['family']} on {c['dataset']} (n={c['train_size']}), {len(c['widths'])} widths, "
            f"noise {noise}, {len(c['seeds'])} seed(s), {recipe}, {device}, {_hms(wall)} compute")
