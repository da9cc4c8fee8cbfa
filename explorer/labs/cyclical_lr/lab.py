"""Cyclical learning rates on CIFAR-10 pixels: the DD2424 assignment's nets, its schedule and its searches.

Data: the 3072 pixels of each image (flattened), normalised per pixel by the training part's mean and std; a
seeded n_val of the training split is held out for validation, the test split is only used at the end.
Nets: a one-layer softmax classifier (W x + b) or a two-layer ReLU net (hidden 50), weights drawn N(0, 1/d_in),
biases 0. Cost: mean cross-entropy + lambda x sum of squared weights (not biases), minimised by mini-batch SGD
with the triangular cyclical rate (schedule.triangular). K nets that differ only in lambda train as one stacked
run (one matmul for all K first layers); each net's gradient is its own because the loss is the SUM of theirs.
Also: the LR range test (exponential sweep, bias-corrected smoothed loss, stop at diverge_th x the best) and a
coarse-to-fine search over lambda. Results are cached by config; a non-finite loss raises Diverged.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from explorer.core.cache import Cache, ComputeResult, Entry
from explorer.core.config import ConfigError, check_choice, check_range
from explorer.core.device import get_device
from explorer.core.jobs import JobContext
from explorer.core.report import SILENT, Reporter, part
from explorer.data.datasets import load_or_fallback, name_or_fallback
from explorer.labs.cyclical_lr.schedule import exponential, triangular
from explorer.train.evaluate import Diverged, diverged_message, first_nonfinite

DATASETS = ("cifar10", "digits")  # digits: the embedded fallback (8x8 grey, 64 pixels), for when CIFAR-10 is absent
MODELS = {"softmax": "one-layer softmax classifier", "two_layer": "two-layer ReLU net"}
KIND_TRAIN, KIND_RANGE, KIND_SEARCH = "clr-train", "clr-range", "clr-search"
EVAL_TRAIN = 10_000  # training curves are measured on this many fixed training images (the whole part if fewer)
EVAL_CHUNK = 5_000  # examples per forward when evaluating
CHECK_EVERY = 25  # steps between divergence checks (one host sync each): a diverging run stops within this many
MAX_VAL_FRACTION = 0.2  # a small (fallback) data set keeps at most this share of its training split for validation


# --- configs ---------------------------------------------------------------------------------------------

def _check_common(dataset: str, model: str, hidden: int, batch_size: int, n_val: int, seed: int) -> None:
    check_choice("data set", dataset, DATASETS)
    check_choice("model", model, MODELS)
    check_range("hidden units", hidden, 1, 1000, integer=True)
    check_range("batch size", batch_size, 1, 10_000, integer=True)
    check_range("validation images", n_val, 100, 10_000, integer=True)
    check_range("seed", seed, 0, 2**31 - 1, integer=True)


@dataclass(frozen=True)
class TrainConfig:
    """One net trained with the triangular cyclical rate; the default is the assignment report's setting."""

    dataset: str = "cifar10"
    model: str = "two_layer"
    hidden: int = 50
    lam: float = 0.01  # L2 strength: lambda x sum of squared weights
    eta_min: float = 1e-5
    eta_max: float = 1e-1
    n_s: int = 800  # steps from eta_min up to eta_max (a cycle is 2 n_s steps)
    cycles: int = 3
    batch_size: int = 100
    n_val: int = 5000  # held out of the training split for validation
    n_train: int = 10_000  # training images used: the assignment trains on one CIFAR-10 batch file (0: all not held out)
    evals_per_cycle: int = 8  # points of the loss, cost and accuracy curves per cycle
    seed: int = 0  # the validation split, the initial weights and the batch order

    def __post_init__(self) -> None:
        _check_common(self.dataset, self.model, self.hidden, self.batch_size, self.n_val, self.seed)
        check_range("lambda", self.lam, 0.0, 10.0)
        check_range("eta_min", self.eta_min, 0.0, 10.0)
        check_range("eta_max", self.eta_max, 1e-7, 10.0)
        if self.eta_min > self.eta_max:
            raise ConfigError(f"eta_min must be at most eta_max ({self.eta_max:g}), got {self.eta_min:g}")
        check_range("step size n_s", self.n_s, 1, 20_000, integer=True)
        check_range("cycles", self.cycles, 1, 20, integer=True)
        check_range("steps (2 n_s x cycles)", 2 * self.n_s * self.cycles, 2, 100_000, integer=True)
        check_range("training images", self.n_train, 0, 60_000, integer=True)
        if 0 < self.n_train < self.batch_size:
            raise ConfigError(f"training images must be 0 (all) or at least the batch size ({self.batch_size}), "
                              f"got {self.n_train}")
        check_range("evaluations per cycle", self.evals_per_cycle, 1, 50, integer=True)

    @property
    def steps(self) -> int:
        """Update steps of the whole run."""
        return 2 * self.n_s * self.cycles


@dataclass(frozen=True)
class RangeConfig:
    """The LR range test: SGD with a rate rising exponentially from lr_low to lr_high until the loss diverges."""

    dataset: str = "cifar10"
    model: str = "two_layer"
    hidden: int = 50
    lam: float = 0.01
    lr_low: float = 1e-5
    lr_high: float = 10.0
    steps: int = 400  # steps of the whole sweep, if it does not diverge first
    batch_size: int = 100
    beta: float = 0.98  # smoothing of the loss: s_t = beta s_{t-1} + (1 - beta) loss_t, divided by 1 - beta^t
    diverge_th: float = 4.0  # stop once the smoothed loss exceeds this multiple of its lowest value
    n_val: int = 5000
    seed: int = 0

    def __post_init__(self) -> None:
        _check_common(self.dataset, self.model, self.hidden, self.batch_size, self.n_val, self.seed)
        check_range("lambda", self.lam, 0.0, 10.0)
        check_range("lowest rate", self.lr_low, 1e-8, 1.0)
        check_range("highest rate", self.lr_high, 1e-6, 1000.0)
        if self.lr_high <= self.lr_low * 10:
            raise ConfigError(f"the highest rate must be over 10x the lowest ({self.lr_low:g}), got {self.lr_high:g}")
        check_range("sweep steps", self.steps, 20, 5000, integer=True)
        check_range("smoothing beta", self.beta, 0.0, 0.999)
        check_range("divergence threshold", self.diverge_th, 1.1, 100.0)


@dataclass(frozen=True)
class SearchConfig:
    """Coarse-to-fine search over lambda (log-uniform samples), then the best retrained on more data."""

    dataset: str = "cifar10"
    hidden: int = 50
    log_lo: float = -5.0  # coarse range of log10(lambda)
    log_hi: float = -1.0
    n_coarse: int = 8
    n_fine: int = 8
    fine_half: float = 0.5  # the fine range is log10(best coarse lambda) +- this many decades
    eta_min: float = 1e-5
    eta_max: float = 1e-1
    n_s: int = 900  # the assignment's search: n_s = 2 floor(n / batch), two cycles
    cycles: int = 2
    batch_size: int = 100
    n_val: int = 5000
    final_n_val: int = 1000  # the best lambda is retrained on all training images but these
    final_cycles: int = 3
    seed: int = 0

    def __post_init__(self) -> None:
        _check_common(self.dataset, "two_layer", self.hidden, self.batch_size, self.n_val, self.seed)
        check_range("log10 lambda (low)", self.log_lo, -8.0, 1.0)
        check_range("log10 lambda (high)", self.log_hi, -8.0, 1.0)
        if self.log_lo >= self.log_hi:
            raise ConfigError(f"the coarse range's low end must be below its high end ({self.log_hi:g}), "
                              f"got {self.log_lo:g}")
        check_range("coarse samples", self.n_coarse, 2, 32, integer=True)
        check_range("fine samples", self.n_fine, 0, 32, integer=True)
        check_range("fine half-width (decades)", self.fine_half, 0.01, 3.0)
        check_range("final validation images", self.final_n_val, 100, 10_000, integer=True)
        check_range("final cycles", self.final_cycles, 1, 20, integer=True)
        TrainConfig(dataset=self.dataset, hidden=self.hidden, eta_min=self.eta_min, eta_max=self.eta_max,
                    n_s=self.n_s, cycles=self.cycles, batch_size=self.batch_size, n_val=self.n_val)

    def stage(self, lams: int = 1) -> TrainConfig:
        """The TrainConfig of one search run (its lambda is set per net)."""
        return TrainConfig(dataset=self.dataset, hidden=self.hidden, eta_min=self.eta_min, eta_max=self.eta_max,
                           n_s=self.n_s, cycles=self.cycles, batch_size=self.batch_size, n_val=self.n_val,
                           evals_per_cycle=2, seed=self.seed)


REPORT = TrainConfig()  # the report's setting (10,000 training images): 48.09% test accuracy on the original CIFAR-10
OVERFIT = TrainConfig(lam=0.0, n_train=100, n_s=100, cycles=2, eta_min=1e-5, eta_max=1e-1, batch_size=100,
                      evals_per_cycle=10)  # 100 images, no L2: 400 full-batch steps


def overfit_config(dataset: str, model: str = "two_layer", seed: int = 0) -> TrainConfig:
    """The sanity check's config on a data set: 100 training images, no regularisation."""
    return replace(OVERFIT, dataset=dataset, model=model, seed=seed)


# --- data ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Data:
    """Flattened, normalised splits on one device, and where they came from."""

    x: "Rows | torch.Tensor"  # (n, d) training part (Rows reads normalised rows of the uint8 set)
    y: torch.Tensor
    xv: "Rows | torch.Tensor"  # validation part
    yv: torch.Tensor
    xt: "Rows | torch.Tensor"  # test split
    yt: torch.Tensor
    name: str  # the data set used
    notice: str | None  # why it is not the one asked for (the fallback), else None
    classes: int


def resolve(dataset: str) -> tuple[str, str | None]:
    """The data set a page can use for `dataset`, and the notice saying how to provide it when it falls back."""
    return name_or_fallback(dataset, "train")  # nothing decoded: a page showing cached results loads no images


# Columns per block of the normalisation statistics, so that each block's mean and std are bit for bit those of one
# float copy of all the rows (tested): the mean's vectorised reduction rounds alike for blocks of 256 or 384 columns,
# not 100 or 1000 (measured on AVX-512). A block of CIFAR-10's 45,000 training images is 92 MB, where the whole copy
# was 553 MB (123 MB for the default 10,000).
STAT_COLUMNS = 512


def column_stats(flat: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-column mean and std (at least 1e-3: constant pixels, digits' borders, stay 0, not inf) of the chosen rows
    of a flattened split, read as [0, 1] floats (uint8 / 255) STAT_COLUMNS columns at a time."""
    means, stds = [], []
    for c in range(0, flat.shape[1], STAT_COLUMNS):
        block = flat[rows, c:c + STAT_COLUMNS]
        block = block.float().div_(255.0) if block.dtype == torch.uint8 else block.float()
        means.append(block.mean(0))
        stds.append(block.std(0))
    return torch.cat(means), torch.cat(stds).clamp_min(1e-3)


def load_data(dataset: str, n_val: int, n_train: int, seed: int, device: torch.device) -> Data:
    """Training split minus a seeded validation part (at most MAX_VAL_FRACTION of it), test split; per-pixel
    normalisation by the training part's mean and std."""
    train_ds, notice = load_or_fallback(dataset, "train")
    test_ds, _ = load_or_fallback(train_ds.name, "test")
    n = len(train_ds)
    n_val = min(n_val, int(n * MAX_VAL_FRACTION))
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    val_idx, train_idx = perm[:n_val], perm[n_val:]
    if n_train:
        train_idx = train_idx[:n_train]
    flat = train_ds.x.reshape(n, -1)  # the data set's own (uint8) rows: no copy
    mean, std = column_stats(flat, train_idx)
    train, test = flat.to(device), test_ds.x.reshape(len(test_ds), -1).to(device)
    mean, std = mean.to(device), std.to(device)
    return Data(Rows(train, train_idx.to(device), mean, std), train_ds.y[train_idx].to(device),
                Rows(train, val_idx.to(device), mean, std), train_ds.y[val_idx].to(device),
                Rows(test, None, mean, std), test_ds.y.to(device), train_ds.name, notice, train_ds.num_classes)


class Rows:
    """Rows of a flattened split, normalised when read: rows[i] is (u / 255 - mean) / std in float32 for the
    rows `i` picks (a slice or an index tensor), bit for bit what normalising a float copy of the whole split
    gives, without holding that copy (a CIFAR-10 job held about 250 MB of them per visitor, 600 MB for a search's
    45,000 images; now it reads the data set's own uint8 rows)."""

    def __init__(self, raw: torch.Tensor, index: torch.Tensor | None, mean: torch.Tensor, std: torch.Tensor):
        self.raw, self.index, self.mean, self.std = raw, index, mean, std

    def __len__(self) -> int:
        return len(self.raw) if self.index is None else len(self.index)

    @property
    def shape(self) -> tuple[int, int]:
        return len(self), self.raw.shape[1]

    @property
    def device(self) -> torch.device:
        return self.raw.device

    def head(self, n: int) -> Rows:
        """The first n rows, still read (normalised) when indexed: not a float copy of them all."""
        return Rows(self.raw[:n] if self.index is None else self.raw, None if self.index is None else self.index[:n],
                    self.mean, self.std)

    def __getitem__(self, i: slice | torch.Tensor) -> torch.Tensor:
        rows = self.raw[i] if self.index is None else self.raw[self.index[i]]
        rows = rows.float().div_(255.0) if rows.dtype == torch.uint8 else rows.to(torch.float32, copy=True)
        return rows.sub_(self.mean).div_(self.std)


# --- K stacked nets --------------------------------------------------------------------------------------

class Stack:
    """K nets of one shape (softmax: d->C; two-layer: d->m->C) with per-net lambda, trained by plain SGD."""

    def __init__(self, k: int, d: int, classes: int, model: str, hidden: int, lams: list[float],
                 seed: int, device: torch.device) -> None:
        g = torch.Generator().manual_seed(seed)
        dims = [d, classes] if model == "softmax" else [d, hidden, classes]
        self.weights = [(torch.randn(k, a, b, generator=g) / math.sqrt(a)).to(device).requires_grad_()
                        for a, b in zip(dims, dims[1:])]
        self.biases = [torch.zeros(k, 1, b, device=device, requires_grad=True) for b in dims[1:]]
        self.lams = torch.tensor(lams, dtype=torch.float32, device=device)
        self.k = k

    def params(self) -> list[torch.Tensor]:
        return self.weights + self.biases

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """(K, B, C) logits of a shared (B, d) batch; the first layer of all K is one matmul."""
        w, b = self.weights[0], self.biases[0]
        k, d, m = w.shape
        h = (x @ w.permute(1, 0, 2).reshape(d, k * m)).view(len(x), k, m).transpose(0, 1) + b
        for w, b in zip(self.weights[1:], self.biases[1:]):
            h = torch.baddbmm(b, h.relu(), w)
        return h

    def l2(self) -> torch.Tensor:
        """(K,) lambda x sum of squared weights (biases are not regularised)."""
        return self.lams * sum(w.square().sum((1, 2)) for w in self.weights)

    def losses(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """(K,) mean cross-entropy of each net on a batch."""
        z = self.logits(x)
        return F.cross_entropy(z.reshape(-1, z.shape[-1]), y.repeat(self.k), reduction="none").view(self.k, -1).mean(1)

    def step(self, x: torch.Tensor, y: torch.Tensor, lr: float) -> tuple[torch.Tensor, torch.Tensor]:
        """One SGD step of every net on the cost (loss + L2); returns the (K,) losses and costs before the step."""
        loss = self.losses(x, y)
        cost = loss + self.l2()
        grads = torch.autograd.grad(cost.sum(), self.params())  # the sum: each net's gradient is its own
        with torch.no_grad():
            for p, g in zip(self.params(), grads):
                p.sub_(g, alpha=lr)
        return loss.detach(), cost.detach()

    @torch.no_grad()
    def measure(self, x: torch.Tensor, y: torch.Tensor) -> tuple[list[float], list[float], list[float]]:
        """Per net: mean loss, cost (loss + L2) and accuracy over a whole set, EVAL_CHUNK examples per forward."""
        loss = torch.zeros(self.k, device=x.device)
        right = torch.zeros(self.k, device=x.device)
        for i in range(0, len(x), EVAL_CHUNK):
            z = self.logits(x[i:i + EVAL_CHUNK])
            yy = y[i:i + EVAL_CHUNK]
            loss += F.cross_entropy(z.reshape(-1, z.shape[-1]), yy.repeat(self.k), reduction="none").view(
                self.k, -1).sum(1)
            right += (z.argmax(-1) == yy).sum(1)
        loss /= len(x)
        return loss.tolist(), (loss + self.l2()).tolist(), (right / len(x)).tolist()


def _title(cfg: TrainConfig, lam: float) -> str:
    return f"the {MODELS[cfg.model]} (lambda {lam:g})"


def train_stack(cfg: TrainConfig, lams: list[float], data: Data, report: Reporter = SILENT,
                stop_on_divergence: bool = True) -> dict[str, Any]:
    """Train len(lams) nets of cfg, one per lambda, on the same batches; curves at evals_per_cycle points per cycle
    (training curves on EVAL_TRAIN fixed images), test metrics at the end. With stop_on_divergence a non-finite
    cost raises Diverged at once (within CHECK_EVERY steps); otherwise that net is marked and the others go on."""
    t0 = time.perf_counter()
    k, n = len(lams), len(data.y)
    net = Stack(k, data.x.shape[1], data.classes, cfg.model, cfg.hidden, lams, cfg.seed, data.x.device)
    batch = min(cfg.batch_size, n)
    per_epoch = n // batch
    eval_every = max(1, 2 * cfg.n_s // cfg.evals_per_cycle)
    # Rows are read (normalised) a chunk at a time, like validation, not copied whole; a tensor's slice is a view
    ex = data.x.head(EVAL_TRAIN) if isinstance(data.x, Rows) else data.x[:EVAL_TRAIN]
    ey = data.y[:EVAL_TRAIN]
    names = ("step", "epoch", "lr", "train_loss", "train_cost", "train_acc", "val_loss", "val_cost", "val_acc")
    hist: list[dict[str, list]] = [{name: [] for name in names} for _ in range(k)]
    diverged: list[int | None] = [None] * k
    out: dict[str, Any] = {"dataset": data.name, "notice": data.notice, "n_train": n, "n_val": len(data.yv),
                           "n_test": len(data.yt), "dims": data.x.shape[1], "lams": list(lams), "history": hist,
                           "diverged": diverged, "steps": cfg.steps, "batch": batch}

    def record(t: int) -> None:
        tr, va = net.measure(ex, ey), net.measure(data.xv, data.yv)
        for i, h in enumerate(hist):
            if diverged[i] is not None:
                continue
            h["step"].append(t)
            h["epoch"].append(t / per_epoch)
            h["lr"].append(triangular(t, cfg.eta_min, cfg.eta_max, cfg.n_s))
            for j, split in enumerate(("loss", "cost", "acc")):
                h["train_" + split].append(tr[j][i])
                h["val_" + split].append(va[j][i])

    gen = torch.Generator().manual_seed(cfg.seed + 1)
    record(0)
    report.publish(out, progress=0.0, message=f"step 0/{cfg.steps}")
    costs = torch.empty(CHECK_EVERY, k, device=data.x.device)
    perm = torch.randperm(n, generator=gen).to(data.x.device)
    for t in range(cfg.steps):
        if t % per_epoch == 0 and t:
            perm = torch.randperm(n, generator=gen).to(data.x.device)
        idx = perm[(t % per_epoch) * batch:(t % per_epoch + 1) * batch]
        lr = triangular(t, cfg.eta_min, cfg.eta_max, cfg.n_s)
        costs[t % CHECK_EVERY] = net.step(data.x[idx], data.y[idx], lr)[1]
        done = t + 1
        if done % CHECK_EVERY == 0 or done == cfg.steps:
            rows = costs[:(done - 1) % CHECK_EVERY + 1]
            for i, first in enumerate(first_nonfinite(rows)):
                if first is None or diverged[i] is not None:
                    continue
                step = done - len(rows) + first
                if stop_on_divergence:
                    raise Diverged(diverged_message(_title(cfg, lams[i]), step, step // per_epoch + 1,
                                                    triangular(step, cfg.eta_min, cfg.eta_max, cfg.n_s),
                                                    cause="its cost (loss + L2) became non-finite"),
                                   step, step // per_epoch + 1)
                diverged[i] = step
            report.checkpoint()
        if done % eval_every == 0 or done == cfg.steps:
            record(done)
            report.publish(out, progress=done / cfg.steps, message=f"step {done:,}/{cfg.steps:,}")
    test = net.measure(data.xt, data.yt)
    out["test_loss"] = [v if d is None else math.nan for v, d in zip(test[0], diverged)]
    out["test_acc"] = [v if d is None else math.nan for v, d in zip(test[2], diverged)]
    out["seconds"] = time.perf_counter() - t0
    return out


def train(cfg: TrainConfig, report: Reporter = SILENT, device: torch.device | None = None) -> dict[str, Any]:
    """One net of cfg trained on its data (the single-net view of train_stack); raises Diverged."""
    data = load_data(cfg.dataset, cfg.n_val, cfg.n_train, cfg.seed, device or get_device())
    return train_stack(cfg, [cfg.lam], data, report)


def summary(m: dict[str, Any], i: int = 0) -> dict[str, float]:
    """The final numbers of net i of a train_stack result."""
    h = m["history"][i]
    return {"lambda": m["lams"][i], "train acc": h["train_acc"][-1], "val acc": h["val_acc"][-1],
            "train cost": h["train_cost"][-1], "val cost": h["val_cost"][-1], "test acc": m["test_acc"][i],
            "test loss": m["test_loss"][i]}


# --- the LR range test -----------------------------------------------------------------------------------

SUGGEST_RULES = {
    "steepest": "eta_max = the rate where the smoothed loss falls fastest (per decade of rate): torch-lr-finder's "
                "suggestion and fastai's 'steep' point; eta_min = eta_max / 4, Smith (2015, section 3.3): "
                "'set base_lr to 1/3 or 1/4 of max_lr'.",
    "smith": "Smith (2015, section 3.3): the best rate is 'usually within a factor of two of the largest one that "
             "converges': eta_max = half the rate of the lowest smoothed loss, eta_min = eta_max / 4.",
}
SKIP_START = 10  # the first steps' smoothed loss is noisy: left out of the steepest-descent search (torch-lr-finder)


def suggest(lrs: list[float], smoothed: list[float], rule: str = "steepest") -> tuple[float, float]:
    """(eta_min, eta_max) from a range test's smoothed loss by one of SUGGEST_RULES."""
    check_choice("suggestion rule", rule, SUGGEST_RULES)
    best = int(np.nanargmin(smoothed))
    if rule == "smith":
        hi = lrs[best] / 2
    else:
        lo = min(SKIP_START, max(best - 2, 0))
        seg = np.asarray(smoothed[lo:best + 1])
        if len(seg) < 3:
            hi = lrs[best] / 2
        else:
            slope = np.gradient(seg, np.log10(np.asarray(lrs[lo:best + 1])))
            hi = lrs[lo + int(np.argmin(slope))]
    return hi / 4, hi


def range_test(cfg: RangeConfig, report: Reporter = SILENT, device: torch.device | None = None) -> dict[str, Any]:
    """Raise the rate exponentially each step; smoothed, bias-corrected loss; stop when it exceeds diverge_th x the
    best or goes non-finite (the divergence the test looks for, so it ends the sweep instead of raising)."""
    t0 = time.perf_counter()
    data = load_data(cfg.dataset, cfg.n_val, 0, cfg.seed, device or get_device())
    net = Stack(1, data.x.shape[1], data.classes, cfg.model, cfg.hidden, [cfg.lam], cfg.seed, data.x.device)
    n = len(data.y)
    batch = min(cfg.batch_size, n)
    per_epoch = n // batch
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    lrs, losses, smoothed = [], [], []
    avg, best, stop = 0.0, math.inf, "reached the highest rate"
    perm = torch.randperm(n, generator=gen).to(data.x.device)
    for t in range(cfg.steps):
        if t % per_epoch == 0 and t:
            perm = torch.randperm(n, generator=gen).to(data.x.device)
        if t % 20 == 0:
            report.checkpoint()
            report.publish(None, progress=t / cfg.steps, message=f"step {t}/{cfg.steps}")
        idx = perm[(t % per_epoch) * batch:(t % per_epoch + 1) * batch]
        lr = exponential(t, cfg.lr_low, cfg.lr_high, cfg.steps)
        loss = float(net.step(data.x[idx], data.y[idx], lr)[0][0])  # the data loss, before this step's update
        if not math.isfinite(loss):
            stop = f"the loss became non-finite at rate {lr:.3g}"
            break
        avg = cfg.beta * avg + (1 - cfg.beta) * loss
        s = avg / (1 - cfg.beta ** (t + 1))  # bias correction: the average starts at 0
        lrs.append(lr)
        losses.append(loss)
        smoothed.append(s)
        best = min(best, s)
        if s > cfg.diverge_th * best:
            stop = f"the smoothed loss {s:.3g} passed {cfg.diverge_th:g} x its best ({best:.3g}) at rate {lr:.3g}"
            break
    if len(lrs) < 3:
        raise Diverged(diverged_message(f"the LR range test of the {MODELS[cfg.model]}", len(lrs), None,
                                        cfg.lr_low, cause="its loss diverged within the first steps"), len(lrs), 1)
    out = {"dataset": data.name, "notice": data.notice, "lr": lrs, "loss": losses, "smoothed": smoothed,
           "stopped": stop, "best_lr": lrs[int(np.argmin(smoothed))], "seconds": time.perf_counter() - t0,
           "suggestions": {rule: list(suggest(lrs, smoothed, rule)) for rule in SUGGEST_RULES}}
    return out


# --- coarse-to-fine search over lambda -------------------------------------------------------------------

def log_uniform(n: int, lo: float, hi: float, seed: int) -> list[float]:
    """n lambdas with log10 uniform in [lo, hi], sorted, from a seeded generator."""
    g = torch.Generator().manual_seed(seed)
    return sorted((10 ** (lo + (hi - lo) * torch.rand(n, generator=g, dtype=torch.float64))).tolist())


def _stage_rows(m: dict[str, Any], stage: str) -> list[dict[str, Any]]:
    rows = []
    for i, lam in enumerate(m["lams"]):
        d = m["diverged"][i]
        row = {"stage": stage, "lambda": lam, "log10 lambda": math.log10(lam) if lam > 0 else -math.inf}
        row.update({"train acc": math.nan, "val acc": math.nan, "val cost": math.nan} if d is not None else
                   {k: v for k, v in summary(m, i).items() if k in ("train acc", "val acc", "val cost")})
        row["diverged at step"] = d
        rows.append(row)
    return rows


def search(cfg: SearchConfig, report: Reporter = SILENT, device: torch.device | None = None) -> dict[str, Any]:
    """Coarse stage (n_coarse lambdas in one stacked run), fine stage around the best, then the best retrained on
    all training images but final_n_val with its test accuracy."""
    device = device or get_device()
    t0 = time.perf_counter()
    stage = cfg.stage()
    data = load_data(cfg.dataset, cfg.n_val, 0, cfg.seed, device)
    out: dict[str, Any] = {"dataset": data.name, "notice": data.notice, "rows": [], "final": None,
                           "n_train": len(data.y), "n_val": len(data.yv)}
    shares = (0.4, 0.4, 0.2) if cfg.n_fine else (0.75, 0.0, 0.25)

    def best_of(rows: list[dict[str, Any]]) -> float:
        ok = [r for r in rows if math.isfinite(r["val acc"])]
        if not ok:
            raise Diverged("every net of the search diverged; lower eta_max", 0, 0)
        return max(ok, key=lambda r: r["val acc"])["lambda"]

    coarse = log_uniform(cfg.n_coarse, cfg.log_lo, cfg.log_hi, cfg.seed)
    m = train_stack(stage, coarse, data, part(report, 0, shares[0], prefix="coarse: ", snapshot=lambda _: out),
                    stop_on_divergence=False)
    out["rows"] += _stage_rows(m, "coarse")
    report.publish(out, progress=shares[0], message="coarse stage done")
    if cfg.n_fine:
        c = math.log10(best_of(out["rows"]))
        lo, hi = c - cfg.fine_half, c + cfg.fine_half
        fine = log_uniform(cfg.n_fine, lo, hi, cfg.seed + 1)
        m = train_stack(stage, fine, data, part(report, shares[0], shares[0] + shares[1], prefix="fine: ",
                                                  snapshot=lambda _: out),
                        stop_on_divergence=False)
        out["rows"] += _stage_rows(m, "fine")
        out["fine_range"] = [lo, hi]
        report.publish(out, progress=shares[0] + shares[1], message="fine stage done")
    best = best_of(out["rows"])
    final = replace(stage, cycles=cfg.final_cycles, n_val=cfg.final_n_val, evals_per_cycle=4)
    full = load_data(cfg.dataset, cfg.final_n_val, 0, cfg.seed, device)
    m = train_stack(final, [best], full, part(report, 1 - shares[2], 1.0, prefix="final: ", snapshot=lambda _: out))
    out["final"] = {"lambda": best, "n_train": len(full.y), "n_val": len(full.yv), "cycles": cfg.final_cycles,
                    **summary(m)}
    out["seconds"] = time.perf_counter() - t0
    report.publish(out, progress=1.0, message="done")
    return out


# --- cache and jobs --------------------------------------------------------------------------------------

COMPUTE: dict[str, Callable[..., dict[str, Any]]] = {KIND_TRAIN: train, KIND_RANGE: range_test, KIND_SEARCH: search}
KINDS = {TrainConfig: KIND_TRAIN, RangeConfig: KIND_RANGE, SearchConfig: KIND_SEARCH}


def kind_of(cfg: Any) -> str:
    """The cache kind of a config."""
    return KINDS[type(cfg)]


def run(cfg: Any, cache: Cache, report: Reporter = SILENT) -> Entry:
    """The result for cfg (any of the three configs): from the cache, else computed now and stored."""
    kind = kind_of(cfg)

    def compute() -> ComputeResult:
        return ComputeResult(COMPUTE[kind](cfg, report), meta={"recompute": cli_command(cfg)})

    return cache.get_or_compute(kind, cfg, compute)


def job(cfg: Any, cache: Cache) -> Callable[[JobContext], Entry]:
    """A job function for views.widgets.start_job."""
    def fn(ctx: JobContext) -> Entry:
        ctx.publish(None, progress=0.0, message="loading data")
        return run(cfg, cache, ctx)

    fn.__name__ = kind_of(cfg)
    return fn


def work(cfg: Any) -> int:
    """A rough cost in net-steps (to decide whether a page starts it by itself)."""
    if isinstance(cfg, TrainConfig):
        return cfg.steps
    if isinstance(cfg, RangeConfig):
        return cfg.steps
    return cfg.stage().steps * (cfg.n_coarse + cfg.n_fine) + 2 * cfg.n_s * cfg.final_cycles


SUBCOMMAND = {TrainConfig: "train", RangeConfig: "range", SearchConfig: "search"}


def cli_command(cfg: Any) -> str:
    """The terminal command that recomputes cfg (non-default settings only)."""
    default = type(cfg)()
    parts = [f"python -m explorer clr {SUBCOMMAND[type(cfg)]}"]
    for name in cfg.__dataclass_fields__:
        v = getattr(cfg, name)
        if v != getattr(default, name):
            parts.append(f"--{name.replace('_', '-')} {v:g}" if isinstance(v, float) else
                         f"--{name.replace('_', '-')} {v}")
    return " ".join(parts)
