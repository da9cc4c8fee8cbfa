"""Depth vs width on 1-D regression: MLPs of (about) equal parameter count fitting the same target side by side.

A target is a function on an interval (`TARGETS`); an MLP shape is its hidden widths (input and output are 1).
`iter_training` trains every shape of a `FitConfig` with Adam on the MSE, one after another within each epoch
(the shapes differ, so they are not batched; they are tiny), and yields a `FitUpdate` every `report_every`
epochs: the per-epoch training loss of each model and, every `draw_every` epochs, its curve on the drawing grid.
A non-finite loss stops the run with `Diverged`, whose message names the model, the epoch and what to change.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
from torch import nn

from explorer.core.cache import Cache, Entry
from explorer.core.config import ConfigError, check_choice, check_range
from explorer.core.device import get_device
from explorer.core.jobs import JobContext
from explorer.core.seeding import seeded
from explorer.train.evaluate import Diverged, diverged_message, first_nonfinite


@dataclass(frozen=True)
class Target:
    """A 1-D function to fit and the interval it is sampled on."""

    title: str
    fn: Callable[[torch.Tensor], torch.Tensor]
    lo: float
    hi: float


def _sinc5(x: torch.Tensor) -> torch.Tensor:
    z = 5 * math.pi * x
    return torch.sin(z) / z  # the interval starts at 0.01, so z is never 0


TARGETS: dict[str, Target] = {
    "sinc5": Target("sin(5πx) / (5πx) on (0.01, 1]", _sinc5, 0.01, 1.0),
    "step": Target("step: 0 for x < 0, 1 for x ≥ 0, on [-1, 1]", lambda x: (x >= 0).to(x.dtype), -1.0, 1.0),
    "square": Target("sign(sin 3πx) on [-1, 1]", lambda x: torch.sign(torch.sin(3 * math.pi * x)), -1.0, 1.0),
    "sines": Target("sin 2πx + ½ sin 6πx + ¼ sin 10πx on [0, 1]",
                    lambda x: (torch.sin(2 * math.pi * x) + 0.5 * torch.sin(6 * math.pi * x)
                               + 0.25 * torch.sin(10 * math.pi * x)), 0.0, 1.0),
}

# The course report's three networks. Its 571-parameter deep net has five hidden layers of 10 between the 5s
# (1-5-10-10-10-5-1 would have 351 parameters): 10 + 60 + 4 * 110 + 55 + 6 = 571, the same as 1-190-1.
PRESETS: dict[str, tuple[int, ...]] = {
    "deep 1-5-10-10-10-10-10-5-1": (5, 10, 10, 10, 10, 10, 5),
    "medium 1-10-18-15-10-4-1": (10, 18, 15, 10, 4),
    "shallow 1-190-1": (190,),
}
ACTIVATIONS = ("relu", "tanh")
MAX_MODELS = 6
MAX_HIDDEN_LAYERS = 12
MAX_WIDTH = 2048
MAX_PARAMS = 200_000  # per model: a few thousand epochs stay seconds to minutes on a CPU


def num_params(hidden: tuple[int, ...]) -> int:
    """Weights and biases of the 1-hidden...-1 MLP."""
    sizes = (1, *hidden, 1)
    return sum(a * b + b for a, b in zip(sizes, sizes[1:]))


def layer_list(hidden: tuple[int, ...]) -> str:
    """'1-5-10-1' for hidden (5, 10)."""
    return "-".join(map(str, (1, *hidden, 1)))


def parse_layers(text: str) -> tuple[int, ...]:
    """'1-5-10-1' (or '5, 10') -> hidden widths (5, 10); a list that is not 1-...-1 numbers is refused."""
    parts = [p for p in re.split(r"[-,\s]+", text.strip()) if p]
    if not parts or not all(p.isdigit() for p in parts):
        raise ConfigError(f"a network is written as layer sizes such as 1-5-10-1, got {text[:80]!r}")
    sizes = tuple(int(p) for p in parts)
    if "-" in text:
        if len(sizes) < 3 or sizes[0] != 1 or sizes[-1] != 1:
            raise ConfigError(f"a network must start and end with 1 (one input, one output), e.g. 1-10-1; "
                              f"got {text[:80]!r}")
        return sizes[1:-1]
    return sizes


def budget_widths(depth: int, budget: int) -> tuple[tuple[int, ...], int]:
    """The d-hidden-layer MLP of equal widths w whose parameter count is closest to `budget` (ties: the
    smaller w), and that count; params(w) = (d - 1) w^2 + (d + 2) w + 1 grows with w, so the search stops
    at the first w past the budget."""
    check_range("depth", depth, 1, MAX_HIDDEN_LAYERS, integer=True)
    check_range("parameter budget", budget, 4, MAX_PARAMS, integer=True)
    best_w, best_gap = 1, math.inf
    for w in range(1, MAX_WIDTH + 1):
        gap = abs(num_params((w,) * depth) - budget)
        if gap < best_gap:
            best_w, best_gap = w, gap
        if num_params((w,) * depth) > budget:
            break
    hidden = (best_w,) * depth
    return hidden, num_params(hidden)


def check_hidden(hidden: tuple[int, ...]) -> None:
    """Refuse a shape outside the lab's limits."""
    if not isinstance(hidden, tuple) or not 1 <= len(hidden) <= MAX_HIDDEN_LAYERS:
        raise ConfigError(f"a network needs 1 to {MAX_HIDDEN_LAYERS} hidden layers, got {hidden!r}")
    for w in hidden:
        check_range("hidden width", w, 1, MAX_WIDTH, integer=True)
    if num_params(hidden) > MAX_PARAMS:
        raise ConfigError(f"{layer_list(hidden)} has {num_params(hidden):,} parameters; at most {MAX_PARAMS:,} "
                          "are allowed")


@dataclass(frozen=True)
class FitConfig:
    """One side-by-side fit: target, data, the networks and their training."""

    target: str = "sinc5"
    n_train: int = 100  # training points, evenly spaced over the target's interval
    models: tuple[tuple[int, ...], ...] = tuple(PRESETS.values())  # hidden widths of each network
    activation: str = "tanh"  # with ReLU the narrow deep net often dies (a constant output) from some seeds
    epochs: int = 1000  # the deep nets are ~10x below the shallow one by epoch 300 (tanh, lr 0.01)
    lr: float = 0.01  # Adam's step size
    batch_size: int = 0  # examples per step; 0: the whole training set (full batch)
    seed: int = 0  # initial weights (the same seed for every network) and minibatch order
    draw_every: int = 50  # epochs between predicted curves on the drawing grid
    n_grid: int = 400  # points of the drawing grid

    def __post_init__(self) -> None:
        check_choice("target", self.target, TARGETS)
        check_range("training points", self.n_train, 2, 10_000, integer=True)
        if not isinstance(self.models, tuple) or not 1 <= len(self.models) <= MAX_MODELS:
            raise ConfigError(f"choose 1 to {MAX_MODELS} networks, got {len(self.models)}")
        for hidden in self.models:
            check_hidden(hidden)
        check_choice("activation", self.activation, ACTIVATIONS)
        check_range("epochs", self.epochs, 1, 50_000, integer=True)
        check_range("learning rate", self.lr, 1e-6, 10.0)
        check_range("batch size", self.batch_size, 0, 10_000, integer=True)
        check_range("seed", self.seed, 0, 2**31 - 1, integer=True)
        check_range("epochs between curves", self.draw_every, 1, 50_000, integer=True)
        check_range("grid points", self.n_grid, 10, 5_000, integer=True)

    @property
    def names(self) -> list[str]:
        """Each network's label: its layer list and parameter count."""
        return [f"{layer_list(h)} ({num_params(h):,} params)" for h in self.models]


def make_mlp(hidden: tuple[int, ...], activation: str) -> nn.Sequential:
    """1 -> hidden... -> 1 with the activation after every hidden layer (PyTorch's default initialisation)."""
    act = {"relu": nn.ReLU, "tanh": nn.Tanh}[activation]
    sizes = (1, *hidden)
    layers: list[nn.Module] = []
    for a, b in zip(sizes, sizes[1:]):
        layers += [nn.Linear(a, b), act()]
    layers.append(nn.Linear(sizes[-1], 1))
    return nn.Sequential(*layers)


@dataclass(frozen=True)
class FitData:
    """Training points and the drawing grid, (N, 1) tensors on the CPU."""

    x: torch.Tensor
    y: torch.Tensor
    grid_x: torch.Tensor
    grid_y: torch.Tensor


def make_data(cfg: FitConfig) -> FitData:
    """n_train evenly spaced points over the target's interval, and the dense grid for drawing."""
    t = TARGETS[cfg.target]
    x = torch.linspace(t.lo, t.hi, cfg.n_train).unsqueeze(1)  # (N, 1)
    gx = torch.linspace(t.lo, t.hi, cfg.n_grid).unsqueeze(1)  # (G, 1)
    return FitData(x, t.fn(x), gx, t.fn(gx))


@dataclass
class FitUpdate:
    """What happened since the last update: per-epoch training loss of each model, and curves when drawn."""

    epochs: list[int]  # 1-based epochs covered by this update
    losses: list[list[float]]  # [model][epoch in `epochs`]: mean MSE over the epoch's steps
    curves_epoch: int | None = None  # the epoch the curves below are from
    curves: list[list[float]] | None = None  # [model][grid point]: prediction after curves_epoch
    grid_mse: list[float] | None = None  # [model]: MSE against the target on the grid at curves_epoch
    final: bool = False


@dataclass
class FitHistory:
    """Everything the updates said, gathered: what a page draws and a cache stores."""

    names: list[str]
    params: list[int]
    epoch: list[int] = field(default_factory=list)
    loss: list[list[float]] = field(default_factory=list)  # [model][epoch]
    curves_epoch: int | None = None
    curves: list[list[float]] | None = None
    grid_mse: list[float] | None = None

    def add(self, up: FitUpdate) -> None:
        """Append an update."""
        if not self.loss:
            self.loss = [[] for _ in self.names]
        self.epoch += up.epochs
        for row, new in zip(self.loss, up.losses):
            row += new
        if up.curves is not None:
            self.curves_epoch, self.curves, self.grid_mse = up.curves_epoch, up.curves, up.grid_mse

    def to_dict(self) -> dict:
        """Plain values (JSON)."""
        return {"names": self.names, "params": self.params, "epoch": self.epoch, "loss": self.loss,
                "curves_epoch": self.curves_epoch, "curves": self.curves, "grid_mse": self.grid_mse}


def iter_training(cfg: FitConfig, device: torch.device | None = None,
                  report_every: int = 10) -> Iterator[FitUpdate]:
    """Train every network of cfg together, epoch by epoch; an update every `report_every` epochs (and at
    every curve and the end). Raises Diverged when a model's loss stops being finite."""
    device = device or get_device()
    data = make_data(cfg)
    x, y = data.x.to(device), data.y.to(device)
    gx, gy = data.grid_x.to(device), data.grid_y.to(device)
    models, opts = [], []
    for hidden in cfg.models:
        with seeded(cfg.seed):  # every network starts from its shape's draw of the same seed
            m = make_mlp(hidden, cfg.activation).to(device)
        models.append(m)
        opts.append(torch.optim.Adam(m.parameters(), lr=cfg.lr))
    n = len(x)
    batch = n if cfg.batch_size == 0 else min(cfg.batch_size, n)
    order = torch.Generator().manual_seed(cfg.seed)
    pending: list[torch.Tensor] = []  # (K,) device tensors, one per epoch: synced once per update
    first = 1
    for epoch in range(1, cfg.epochs + 1):
        perm = torch.randperm(n, generator=order).to(device) if batch < n else None
        sums = []
        for m, opt in zip(models, opts):
            total = torch.zeros((), device=device)
            for start in range(0, n, batch):
                idx = perm[start:start + batch] if perm is not None else slice(None)
                loss = nn.functional.mse_loss(m(x[idx]), y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += loss.detach()
            sums.append(total)
        pending.append(torch.stack(sums) / math.ceil(n / batch))
        draw = epoch % cfg.draw_every == 0 or epoch == cfg.epochs or epoch == 1
        if not (draw or epoch % report_every == 0):
            continue
        losses = torch.stack(pending)  # (epochs, K)
        bad = first_nonfinite(losses)
        for i, b in enumerate(bad):
            if b is not None:
                where = first + b
                raise Diverged(diverged_message(f"network {layer_list(cfg.models[i])}", where, where, cfg.lr,
                                                cause="its training loss became non-finite"), where, where)
        up = FitUpdate(list(range(first, epoch + 1)), losses.T.tolist(), final=epoch == cfg.epochs)
        if draw:
            with torch.no_grad():
                preds = [m(gx) for m in models]
            up.curves_epoch = epoch
            up.curves = [p.squeeze(1).tolist() for p in preds]
            up.grid_mse = [float(nn.functional.mse_loss(p, gy)) for p in preds]
        pending, first = [], epoch + 1
        yield up


def train(cfg: FitConfig, on_update: Callable[[FitUpdate, FitHistory], None] | None = None,
          device: torch.device | None = None) -> FitHistory:
    """Run iter_training to the end; the gathered history (on_update sees each update and the history so far)."""
    hist = FitHistory(cfg.names, [num_params(h) for h in cfg.models])
    for up in iter_training(cfg, device):
        hist.add(up)
        if on_update is not None:
            on_update(up, hist)
    return hist


# --- cache ---------------------------------------------------------------------------------------------

KIND = "function-fitting-1d"  # cache kind of a finished side-by-side fit


def cached(cfg: FitConfig, cache: Cache) -> Entry | None:
    """The stored finished fit of cfg, or None."""
    return cache.get(KIND, cfg)


def store(cfg: FitConfig, hist: FitHistory, cache: Cache, wall_time_s: float) -> Entry:
    """Keep a finished fit (its history and last curves) so a revisit draws it at once."""
    return cache.put(KIND, cfg, hist.to_dict(), meta={"wall_time_s": wall_time_s})


def from_entry(entry: Entry) -> FitHistory:
    """The history a stored fit holds."""
    m = entry.metrics
    return FitHistory(m["names"], m["params"], m["epoch"], m["loss"], m["curves_epoch"], m["curves"],
                      m["grid_mse"])


INLINE_WORK = 2_000_000  # parameter-steps (see `work`) a page trains in its own script run: ~3 s on a CPU
PUBLISH_S = 0.25  # a job publishes a snapshot at most this often (each is a copy of the whole history)


def work(cfg: FitConfig) -> int:
    """Parameter-steps of a run (parameters summed over the networks x optimiser steps): its cost, roughly."""
    steps = cfg.epochs * (1 if cfg.batch_size == 0 else math.ceil(cfg.n_train / cfg.batch_size))
    return steps * sum(num_params(h) for h in cfg.models)


def job(cfg: FitConfig, cache: Cache) -> Callable[[JobContext], Entry]:
    """A job function for views.widgets.start_job (runs too long for a page's script run): publishes the
    history so far every PUBLISH_S, stores the finished fit."""
    def fn(ctx: JobContext) -> Entry:
        start = last = time.perf_counter()

        def on_update(up: FitUpdate, hist: FitHistory) -> None:
            nonlocal last
            ctx.checkpoint()
            now = time.perf_counter()
            if now - last >= PUBLISH_S or up.final:
                last = now
                snap = hist.to_dict()
                snap["loss"] = [list(row) for row in snap["loss"]]  # the lists grow on; the page reads a copy
                snap["epoch"] = list(snap["epoch"])
                ctx.publish(snap, progress=hist.epoch[-1] / cfg.epochs,
                            message=f"epoch {hist.epoch[-1]:,} of {cfg.epochs:,}")

        hist = train(cfg, on_update)
        return store(cfg, hist, cache, time.perf_counter() - start)

    fn.__name__ = KIND
    return fn
