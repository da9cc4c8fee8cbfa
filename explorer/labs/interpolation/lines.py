"""Interpolation between solutions: the loss along straight lines in weight space (Goodfellow et al. 2015) and
along filter-normalised random directions (Li et al. 2018).

Two solutions A and B start from the same initial weights and train with two recipes (the report: batch 64 at
lr 1e-3 against batch 1024 at lr 1e-2, Adam, 6 epochs). Along theta(alpha) = (1 - alpha) theta_A + alpha theta_B,
and from the initial weights to each solution, the train and test loss and accuracy are measured at each alpha.
A net with batch norm gets its running statistics recomputed on the training data at every point (the statistics
of A do not fit the weights halfway to B); that can be switched off to see why it matters. Around each solution,
a random direction with each filter rescaled to the norm of the solution's filter (bias and BN directions zero)
gives a 1D slice; the 2D slice (explorer.labs.interpolation.plane) is a background job.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn
from torch.func import functional_call

from explorer.core.cache import Cache, ComputeResult, Entry
from explorer.core.config import check_choice, check_range
from explorer.core.device import get_device
from explorer.core.jobs import JobContext
from explorer.core.report import SILENT, Reporter, part
from explorer.core.seeding import seeded
from explorer.data.datasets import load_or_fallback, take
from explorer.train.evaluate import Diverged, diverged_message

DATASETS = ("digits", "mnist", "fashion_mnist")
NETS = {"cnn": "small CNN (no batch norm)", "cnn_bn": "small CNN with batch norm"}
KIND = "interpolation"
EVAL_CHUNK = 1000  # examples per forward
BN_BATCH = 256  # examples per forward while recomputing batch-norm statistics
State = dict[str, torch.Tensor]


@dataclass(frozen=True)
class InterpConfig:
    """Two recipes from one initialisation, and the lines between what they reach."""

    dataset: str = "digits"  # embedded 8x8 digits: seconds on a CPU
    n_train: int = 1500  # a seeded subset of the training split (all of it if larger)
    n_test: int = 1000
    net: str = "cnn"
    channels: int = 8  # first conv stage; the second has twice as many
    width: int = 32  # hidden linear layer
    epochs: int = 6
    batch_a: int = 64
    lr_a: float = 1e-3
    batch_b: int = 1024
    lr_b: float = 1e-2
    points: int = 31  # alphas from alpha_min to alpha_max
    alpha_min: float = -1.0
    alpha_max: float = 2.0
    recompute_bn: bool = True  # batch-norm statistics recomputed at every point (else interpolated)
    seed: int = 0  # initial weights, subsets, batch order, random directions

    def __post_init__(self) -> None:
        check_choice("dataset", self.dataset, DATASETS)
        check_choice("network", self.net, NETS)
        check_range("training images", self.n_train, 100, 60_000, integer=True)
        check_range("test images", self.n_test, 100, 10_000, integer=True)
        check_range("channels", self.channels, 2, 32, integer=True)
        check_range("hidden width", self.width, 4, 256, integer=True)
        check_range("epochs", self.epochs, 1, 50, integer=True)
        for name in ("a", "b"):
            check_range(f"batch size of {name.upper()}", getattr(self, "batch_" + name), 1, 8192, integer=True)
            check_range(f"learning rate of {name.upper()}", getattr(self, "lr_" + name), 1e-5, 1.0)
        check_range("points along a line", self.points, 3, 201, integer=True)
        check_range("smallest alpha", self.alpha_min, -5.0, 0.0)
        check_range("largest alpha", self.alpha_max, 1.0, 6.0)
        check_range("seed", self.seed, 0, 2**31 - 1, integer=True)

    @property
    def alphas(self) -> list[float]:
        """Evenly spaced, rounded so that 0 and 1 are exact, with 0 and 1 added if the spacing misses them."""
        n, lo, hi = self.points, self.alpha_min, self.alpha_max
        return sorted({round(lo + (hi - lo) * i / (n - 1), 10) for i in range(n)} | {0.0, 1.0})


def build(net: str, channels: int, width: int, input_shape: tuple[int, ...], classes: int) -> nn.Sequential:
    """conv3x3-(BN)-ReLU-pool twice, then a hidden linear layer and the output (the lab's two nets)."""
    c, h, w = input_shape
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    for i, out in enumerate((channels, 2 * channels), 1):
        layers[f"conv{i}"] = nn.Conv2d(c, out, 3, padding=1)
        if net == "cnn_bn":
            layers[f"bn{i}"] = nn.BatchNorm2d(out)
        layers[f"act{i}"] = nn.ReLU()
        layers[f"pool{i}"] = nn.MaxPool2d(2)
        c, h, w = out, h // 2, w // 2
    layers["flatten"] = nn.Flatten()
    layers["fc"] = nn.Linear(c * h * w, width)
    layers["act3"] = nn.ReLU()
    layers["out"] = nn.Linear(width, classes)
    return nn.Sequential(layers)


@dataclass
class Data:
    """Standardised train and test images on the device, and what was loaded."""

    x: torch.Tensor
    y: torch.Tensor
    xt: torch.Tensor
    yt: torch.Tensor
    name: str
    notice: str | None
    classes: int


def load_data(cfg: InterpConfig, device: torch.device) -> Data:
    """The seeded subsets, standardised with the training mean and std."""
    train_ds, notice = load_or_fallback(cfg.dataset, "train")
    test_ds, _ = load_or_fallback(train_ds.name, "test")
    train_ds, test_ds = take(train_ds, cfg.n_train, cfg.seed), take(test_ds, cfg.n_test, cfg.seed + 1)
    x, xt = train_ds.to_float(), test_ds.to_float()
    mean, std = x.mean(), x.std().clamp_min(1e-6)
    return Data(((x - mean) / std).to(device), train_ds.y.to(device), ((xt - mean) / std).to(device),
                test_ds.y.to(device), train_ds.name, notice, train_ds.num_classes)


def has_bn(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def state_of(model: nn.Module) -> State:
    """A detached copy of the model's parameters and buffers."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def train_solution(model: nn.Module, init: State, batch: int, lr: float, epochs: int, data: Data, seed: int,
                   what: str, report: Reporter = SILENT) -> tuple[State, list[float]]:
    """Adam from `init` with one recipe; the final state and each epoch's mean training loss."""
    model.load_state_dict(init)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    order = torch.Generator().manual_seed(seed)
    n = len(data.y)
    losses = []
    model.train()
    for epoch in range(1, epochs + 1):
        report.checkpoint()
        perm = torch.randperm(n, generator=order).to(data.x.device)
        total = torch.zeros((), device=data.x.device)
        for s in range(0, n, batch):
            idx = perm[s:s + batch]
            loss = nn.functional.cross_entropy(model(data.x[idx]), data.y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.detach() * len(idx)
        losses.append(float(total) / n)
        if not math.isfinite(losses[-1]):
            step = epoch * math.ceil(n / batch)
            raise Diverged(diverged_message(what, step, epoch, lr), step, epoch)
        report.publish(progress=epoch / epochs, message=f"{what}: epoch {epoch}/{epochs}")
    return state_of(model), losses


def mix(a: State, b: State, alpha: float) -> State:
    """(1 - alpha) a + alpha b for floating tensors (exactly a at 0 and b at 1); integer buffers from a."""
    return {k: (1 - alpha) * a[k] + alpha * b[k] if a[k].is_floating_point() else a[k] for k in a}


@torch.no_grad()
def recompute_bn(model: nn.Module, params: State, x: torch.Tensor) -> State:
    """params with every batch norm's running mean and variance recomputed over x (their exact average over
    BN_BATCH-example batches, in train mode), as the model's state."""
    model.load_state_dict(params)
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average: every batch counts the same
    model.train()
    for s in range(0, len(x), BN_BATCH):
        model(x[s:s + BN_BATCH])
    for m, mom in zip(bns, saved):
        m.momentum = mom
    model.eval()
    return state_of(model)


@torch.no_grad()
def measure(model: nn.Module, state: State, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of `state` (eval mode) over a set, EVAL_CHUNK examples per forward."""
    model.eval()
    loss, right = torch.zeros((), device=x.device), torch.zeros((), device=x.device)
    for i in range(0, len(x), EVAL_CHUNK):
        z = functional_call(model, state, (x[i:i + EVAL_CHUNK],))
        loss += nn.functional.cross_entropy(z, y[i:i + EVAL_CHUNK], reduction="sum")
        right += (z.argmax(1) == y[i:i + EVAL_CHUNK]).sum()
    return float(loss) / len(x), float(right) / len(x)


def point(model: nn.Module, state: State, data: Data, recompute: bool, test: bool = True) -> dict[str, float]:
    """Train (and test) loss and accuracy at one point of weight space, BN statistics recomputed if asked."""
    if recompute and has_bn(model):
        state = recompute_bn(model, state, data.x)
    out = dict(zip(("train_loss", "train_acc"), measure(model, state, data.x, data.y)))
    if test:
        out.update(zip(("test_loss", "test_acc"), measure(model, state, data.xt, data.yt)))
    return out


def line(model: nn.Module, a: State, b: State, alphas: list[float], data: Data, recompute: bool,
         report: Reporter = SILENT) -> dict[str, list[float]]:
    """The four metrics at (1 - alpha) a + alpha b for every alpha."""
    out: dict[str, list[float]] = {"alpha": list(alphas)}
    for i, alpha in enumerate(alphas):
        report.checkpoint()
        for k, v in point(model, mix(a, b, alpha), data, recompute).items():
            out.setdefault(k, []).append(v)
        report.publish(progress=(i + 1) / len(alphas))
    return out


def filter_normalised(state: State, params: set[str], gen: torch.Generator) -> State:
    """A Gaussian direction with each filter (slice along dim 0 of a weight of 2+ dims) rescaled to the norm of
    the solution's filter; biases, batch-norm weights and buffers get zero."""
    out = {}
    for k, t in state.items():
        if k in params and t.dim() > 1:
            d = torch.randn(t.shape, generator=gen, dtype=t.dtype).to(t.device)
            dn = d.flatten(1).norm(dim=1).clamp_min(1e-12)
            tn = t.flatten(1).norm(dim=1)
            out[k] = d * (tn / dn).view(-1, *([1] * (t.dim() - 1)))
        else:
            out[k] = torch.zeros_like(t)
    return out


def shift(state: State, dirs: list[State], coefs: list[float]) -> State:
    """state + sum_i coefs_i dirs_i for floating tensors."""
    out = {}
    for k, t in state.items():
        if t.is_floating_point():
            v = t.clone()
            for d, c in zip(dirs, coefs):
                v += c * d[k]
            out[k] = v
        else:
            out[k] = t
    return out


def barrier(losses: list[float], alphas: list[float]) -> float:
    """max over alpha in [0, 1] of L(alpha) minus the straight line between L(0) and L(1) (0: no barrier)."""
    l0, l1 = losses[alphas.index(0.0)], losses[alphas.index(1.0)]
    return max(max(l - ((1 - a) * l0 + a * l1) for a, l in zip(alphas, losses) if 0 <= a <= 1), 0.0)


def compute(cfg: InterpConfig, report: Reporter = SILENT, device: torch.device | None = None
            ) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Train A and B, then every line: A-B, init-A, init-B, and a random filter-normalised 1D slice at A and B."""
    device = device or get_device()
    data = load_data(cfg, device)
    with seeded(cfg.seed):
        model = build(cfg.net, cfg.channels, cfg.width, tuple(data.x.shape[1:]), data.classes)
    model = model.to(device)
    init = state_of(model)
    a, loss_a = train_solution(model, init, cfg.batch_a, cfg.lr_a, cfg.epochs, data, cfg.seed, "solution A",
                               part(report, 0.0, 0.15, prefix="training A: "))
    b, loss_b = train_solution(model, init, cfg.batch_b, cfg.lr_b, cfg.epochs, data, cfg.seed, "solution B",
                               part(report, 0.15, 0.3, prefix="training B: "))
    alphas = cfg.alphas
    out: dict[str, Any] = {"dataset": data.name, "notice": data.notice, "n_train": len(data.y),
                           "n_test": len(data.yt), "bn": has_bn(model), "alphas": alphas,
                           "params": sum(p.numel() for p in model.parameters()),
                           "train_curves": {"A": loss_a, "B": loss_b},
                           "ends": {n: point(model, s, data, cfg.recompute_bn) for n, s in
                                    (("init", init), ("A", a), ("B", b))}, "lines": {}, "slices": {}}
    plan = [("A to B", a, b), ("init to A", init, a), ("init to B", init, b)]
    for i, (name, s0, s1) in enumerate(plan):
        out["lines"][name] = line(model, s0, s1, alphas, data, cfg.recompute_bn,
                                  part(report, 0.3 + 0.15 * i, 0.45 + 0.15 * i, prefix=f"{name}: "))
    names = {n for n, _ in model.named_parameters()}
    ts = [round(-1 + 2 * i / (cfg.points - 1), 10) for i in range(cfg.points)]
    for i, (name, s) in enumerate((("A", a), ("B", b))):
        d = filter_normalised(s, names, torch.Generator().manual_seed(cfg.seed + 17))
        rep = part(report, 0.75 + 0.125 * i, 0.875 + 0.125 * i, prefix=f"random slice at {name}: ")
        sl: dict[str, list[float]] = {"t": ts}
        for j, t in enumerate(ts):
            rep.checkpoint()
            for k, v in point(model, shift(s, [d], [t]), data, cfg.recompute_bn).items():
                sl.setdefault(k, []).append(v)
            rep.publish(progress=(j + 1) / len(ts))
        out["slices"][name] = sl
    out["barrier"] = {k: barrier(out["lines"]["A to B"][k], alphas) for k in ("train_loss", "test_loss")}
    tensors = {f"{n}/{k}": v.cpu().contiguous() for n, s in (("init", init), ("A", a), ("B", b))
               for k, v in s.items()}
    return out, tensors


def run(cfg: InterpConfig, cache: Cache, report: Reporter = SILENT) -> Entry:
    """The lines for cfg: from the cache, else computed now."""
    def fn() -> ComputeResult:
        metrics, tensors = compute(cfg, report)
        return ComputeResult(metrics, tensors=tensors, meta={"recompute": cli_command(cfg)})

    return cache.get_or_compute(KIND, cfg, fn)


def job(cfg: InterpConfig, cache: Cache) -> Callable[[JobContext], Entry]:
    """A job function for views.widgets.start_job."""
    def fn(ctx: JobContext) -> Entry:
        ctx.publish(None, progress=0.0, message="loading data")
        return run(cfg, cache, ctx)

    fn.__name__ = KIND
    return fn


def cli_command(cfg: InterpConfig) -> str:
    """The terminal command that recomputes cfg (non-default settings only)."""
    default = InterpConfig()
    parts = ["python -m explorer interpolate"]
    for name in cfg.__dataclass_fields__:
        v = getattr(cfg, name)
        if v != getattr(default, name):
            parts.append(f"--{name.replace('_', '-')}" if isinstance(v, bool) and v else
                         f"--no-{name.replace('_', '-')}" if isinstance(v, bool) else
                         f"--{name.replace('_', '-')} {v}")
    return " ".join(parts)


def states(entry: Entry, device: torch.device | str = "cpu") -> dict[str, State]:
    """The stored init, A and B states of an entry."""
    out: dict[str, State] = {}
    for key, t in entry.tensors(device).items():
        who, name = key.split("/", 1)
        out.setdefault(who, {})[name] = t
    return out


def table(m: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per line and alpha: the numbers the page and the CLI print."""
    rows = []
    for name, ln in m["lines"].items():
        for i, alpha in enumerate(ln["alpha"]):
            rows.append({"line": name, "alpha": alpha, **{k: ln[k][i] for k in
                                                          ("train_loss", "train_acc", "test_loss", "test_acc")}})
    return rows
