"""Sharpness and sensitivity against batch size: the same small net trained at batch sizes 16 to 1024.

Each batch size trains its own copy of one network from the same initial weights (same seed) with plain SGD for a
fixed number of optimizer steps (or, as an option, a fixed number of epochs). The batch sizes differ, so the
copies cannot share one stacked step; they train one after another in a loop (each is small). After training
each copy gets: train and test loss and accuracy; input-gradient sensitivity (mean Frobenius norm of d loss_i /
d x_i over the test set); the top Hessian eigenvalue of the training loss on a fixed training subset (power
iteration on Hessian-vector products); Keskar et al. 2017's epsilon-sharpness on the same subset.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from explorer.core.cache import Cache, ComputeResult, Entry
from explorer.core.config import ConfigError, check_choice, check_range
from explorer.core.device import get_device
from explorer.core.jobs import JobContext
from explorer.core.report import SILENT, Reporter
from explorer.core.seeding import seeded
from explorer.data.datasets import load_or_fallback, take
from explorer.train import curvature as hessian
from explorer.nets.small import NetConfig, build_net, describe
from explorer.train.evaluate import Diverged, diverged_message, first_nonfinite

KIND = "sharpness-vs-batch"  # cache kind of a finished sweep
DATASETS = ("digits", "mnist", "fashion_mnist")
BATCH_SIZES = (16, 32, 64, 128, 256, 512, 1024)
BUDGETS = ("steps", "epochs")  # what is held fixed across batch sizes
ARCHS = {"mlp": "mlp", "cnn": "small_cnn"}  # page name -> explorer.nets.small family
CHECK_EVERY = 50  # steps between divergence checks (one host sync each)
EVAL_CHUNK = 1000


@dataclass(frozen=True)
class SharpConfig:
    """One sweep over batch sizes: data, network, training budget and the curvature measurements."""

    dataset: str = "digits"  # embedded 8x8 digits (1,437 training images): no download
    arch: str = "mlp"
    width: int = 64  # hidden units of each MLP layer / the CNN's hidden linear layer
    depth: int = 2  # MLP hidden layers / CNN conv stages
    batch_sizes: tuple[int, ...] = BATCH_SIZES
    budget: str = "steps"
    steps: int = 2000  # optimizer steps of every batch size (budget "steps"); 1,000 leaves the trend at 2-3x
    epochs: int = 20  # passes over the training set (budget "epochs")
    lr: float = 0.5  # SGD step size, the same for every batch size (0.1: every batch size ends equally flat)
    momentum: float = 0.0
    n_train: int = 1437  # a seeded subset of the training split (all of it if larger)
    n_test: int = 360
    n_hessian: int = 512  # fixed training subset for the Hessian and the epsilon-sharpness
    power_iters: int = 20  # Hessian-vector products at most
    power_tol: float = 1e-3  # stop when the estimate changes by less than this (relative)
    eps: float = 1e-3  # Keskar's box: |delta_i| <= eps (|theta_i| + 1)
    ascent_steps: int = 10  # projected gradient-ascent steps inside the box
    seed: int = 0

    def __post_init__(self) -> None:
        check_choice("dataset", self.dataset, DATASETS)
        check_choice("network", self.arch, ARCHS)
        check_range("hidden width", self.width, 4, 1024, integer=True)
        check_range("depth", self.depth, 1, 4, integer=True)
        if not isinstance(self.batch_sizes, tuple) or not 1 <= len(self.batch_sizes) <= 10:
            raise ConfigError(f"choose 1 to 10 batch sizes, got {self.batch_sizes!r}")
        for b in self.batch_sizes:
            check_range("batch size", b, 1, 4096, integer=True)
        check_choice("budget", self.budget, BUDGETS)
        check_range("steps", self.steps, 1, 100_000, integer=True)
        check_range("epochs", self.epochs, 1, 1000, integer=True)
        check_range("learning rate", self.lr, 1e-5, 10.0)
        check_range("momentum", self.momentum, 0.0, 0.99)
        check_range("training images", self.n_train, 100, 60_000, integer=True)
        check_range("test images", self.n_test, 50, 10_000, integer=True)
        check_range("Hessian subset", self.n_hessian, 16, 10_000, integer=True)
        check_range("power iterations", self.power_iters, 2, 500, integer=True)
        check_range("power-iteration tolerance", self.power_tol, 1e-8, 0.5)
        check_range("epsilon", self.eps, 1e-6, 0.1)
        check_range("ascent steps", self.ascent_steps, 1, 200, integer=True)
        check_range("seed", self.seed, 0, 2**31 - 1, integer=True)

    def net(self) -> NetConfig:
        """The network in explorer.nets.small's terms."""
        return NetConfig(arch=ARCHS[self.arch], width=self.width, depth=self.depth, channels=8)

    def steps_for(self, batch: int, n: int) -> int:
        """Optimizer steps of one batch size on n training examples; an epoch is n // batch full batches (the
        remainder of each reshuffle is dropped, so every step sees exactly `batch` examples)."""
        return self.steps if self.budget == "steps" else self.epochs * (n // min(batch, n))


def work(cfg: SharpConfig, n: int | None = None) -> int:
    """Examples pushed through the net in training, over all batch sizes: the sweep's cost, roughly."""
    n = n or cfg.n_train
    return sum(cfg.steps_for(b, n) * min(b, n) for b in cfg.batch_sizes)


INLINE_WORK = 3_000_000  # examples (see `work`) below which a page starts the sweep on its own


def load_data(cfg: SharpConfig) -> dict[str, Any]:
    """Standardised train/test tensors (MLP: flattened later by the net), the data set used and any notice."""
    train_ds, notice = load_or_fallback(cfg.dataset, "train")
    test_ds, _ = load_or_fallback(train_ds.name, "test")
    train_ds, test_ds = take(train_ds, cfg.n_train, cfg.seed), take(test_ds, cfg.n_test, cfg.seed + 1)
    x, xt = train_ds.to_float(), test_ds.to_float()
    mean, std = x.mean(), x.std().clamp_min(1e-6)
    return {"x": (x - mean) / std, "y": train_ds.y, "xt": (xt - mean) / std, "yt": test_ds.y,
            "name": train_ds.name, "notice": notice, "classes": train_ds.num_classes}


@torch.no_grad()
def _evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Mean cross-entropy and accuracy over a whole set."""
    loss, right = 0.0, 0.0
    for i in range(0, len(x), EVAL_CHUNK):
        z = model(x[i:i + EVAL_CHUNK])
        loss += float(nn.functional.cross_entropy(z, y[i:i + EVAL_CHUNK], reduction="sum"))
        right += float((z.argmax(1) == y[i:i + EVAL_CHUNK]).sum())
    return loss / len(x), right / len(x)


def train_one(cfg: SharpConfig, model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int,
              report: Reporter = SILENT, on_steps: Callable[[int], None] | None = None) -> int:
    """SGD on `model` at one batch size for its step budget, epoch-wise reshuffled batches; the steps taken.
    A non-finite minibatch loss raises Diverged within CHECK_EVERY steps."""
    n = len(y)
    batch = min(batch, n)
    steps = cfg.steps_for(batch, n)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum)
    order = torch.Generator().manual_seed(cfg.seed)
    per_epoch = n // batch  # drop the last partial batch: every step sees exactly `batch` examples
    perm, pos = None, per_epoch
    pending: list[torch.Tensor] = []
    model.train()
    for step in range(1, steps + 1):
        if pos >= per_epoch:
            perm, pos = torch.randperm(n, generator=order).to(x.device), 0
        idx = perm[pos * batch:(pos + 1) * batch]
        pos += 1
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        pending.append(loss.detach())
        if step % CHECK_EVERY == 0 or step == steps:
            bad = first_nonfinite(torch.stack(pending))[0]
            if bad is not None:
                at = step - len(pending) + 1 + bad
                raise Diverged(diverged_message(f"batch size {batch}", at, None, cfg.lr,
                                                cause="its minibatch loss became non-finite"), at, 0)
            pending = []
            report.checkpoint()
            if on_steps is not None:
                on_steps(step)
    model.eval()
    return steps


def measure(cfg: SharpConfig, model: nn.Module, data: dict[str, torch.Tensor], device: torch.device) -> dict[str, Any]:
    """Loss, accuracy, input sensitivity, top Hessian eigenvalue and epsilon-sharpness of a trained copy."""
    x, y, xt, yt = data["x"], data["y"], data["xt"], data["yt"]
    train_loss, train_acc = _evaluate(model, x, y)
    test_loss, test_acc = _evaluate(model, xt, yt)
    xs, ys = x[:cfg.n_hessian], y[:cfg.n_hessian]  # the training set is already a seeded shuffle: a fixed subset
    loss_fn, theta = hessian.flat_loss(model, xs, ys)
    top = hessian.top_eigenvalue(loss_fn, theta, cfg.power_iters, cfg.power_tol, cfg.seed)
    sharp = hessian.epsilon_sharpness(loss_fn, theta, cfg.eps, cfg.ascent_steps)
    return {"train_loss": train_loss, "train_acc": train_acc, "test_loss": test_loss, "test_acc": test_acc,
            "sensitivity": hessian.input_sensitivity(model, xt, yt), "top_eigenvalue": top.eigenvalue,
            "power_iterations": top.iterations, "power_converged": top.converged,
            "epsilon_sharpness": sharp.sharpness, "subset_loss": sharp.loss, "box_ok": sharp.box_ok}


def sweep(cfg: SharpConfig, report: Reporter = SILENT, device: torch.device | None = None) -> dict[str, Any]:
    """Train and measure every batch size of cfg in turn; rows published after each one."""
    device = device or get_device()
    data = load_data(cfg)
    tensors = {k: data[k].to(device) for k in ("x", "y", "xt", "yt")}
    n = len(tensors["y"])
    net = cfg.net()
    shape = tuple(tensors["x"].shape[1:])
    probe = build_net(net, shape, data["classes"])
    out: dict[str, Any] = {"dataset": data["name"], "notice": data["notice"], "n_train": n,
                           "n_test": len(tensors["yt"]), "n_hessian": min(cfg.n_hessian, n),
                           "network": describe(net), "params": sum(p.numel() for p in probe.parameters()),
                           "budget": cfg.budget, "rows": []}
    total = sum(cfg.steps_for(b, n) for b in cfg.batch_sizes)
    done = 0
    report.publish(out, progress=0.0, message="training")
    for batch in cfg.batch_sizes:
        with seeded(cfg.seed):  # the same initial weights at every batch size
            model = build_net(net, shape, data["classes"]).to(device)
        t0 = time.perf_counter()

        def on_steps(s: int, base: int = done, b: int = batch) -> None:
            report.publish(None, progress=0.95 * (base + s) / total, message=f"batch size {b}: step {s:,}")

        steps = train_one(cfg, model, tensors["x"], tensors["y"], batch, report, on_steps)
        done += steps
        report.publish(None, message=f"batch size {batch}: measuring the curvature")
        row = {"batch_size": batch, "steps": steps, "epochs": steps * min(batch, n) / n,  # examples seen / n
               **measure(cfg, model, tensors, device), "seconds": time.perf_counter() - t0}
        out["rows"].append(row)
        report.publish({**out, "rows": list(out["rows"])}, progress=0.95 * done / total,
                       message=f"batch size {batch} done")
    return out


def run(cfg: SharpConfig, cache: Cache, report: Reporter = SILENT) -> Entry:
    """The sweep for cfg: from the cache, else computed now and stored with the command that recomputes it."""
    def compute() -> ComputeResult:
        return ComputeResult(sweep(cfg, report), meta={"recompute": cli_command(cfg)})

    return cache.get_or_compute(KIND, cfg, compute)


def job(cfg: SharpConfig, cache: Cache) -> Callable[[JobContext], Entry]:
    """A job function for views.widgets.start_job."""
    def fn(ctx: JobContext) -> Entry:
        ctx.publish(None, progress=0.0, message="loading data")
        return run(cfg, cache, ctx)

    fn.__name__ = KIND
    return fn


FLAGS = {"dataset": "--dataset", "arch": "--arch", "width": "--width", "depth": "--depth", "budget": "--budget",
         "steps": "--steps", "epochs": "--epochs", "lr": "--lr", "momentum": "--momentum", "n_train": "--n-train",
         "n_test": "--n-test", "n_hessian": "--n-hessian", "power_iters": "--power-iters", "eps": "--eps",
         "ascent_steps": "--ascent-steps", "seed": "--seed"}


def cli_command(cfg: SharpConfig) -> str:
    """The terminal command that recomputes cfg (non-default settings only)."""
    default = SharpConfig()
    parts = ["python -m explorer sharpness"]
    if cfg.batch_sizes != default.batch_sizes:
        parts.append("--batch-sizes " + " ".join(map(str, cfg.batch_sizes)))
    parts += [f"{flag} {getattr(cfg, k)}" for k, flag in FLAGS.items() if getattr(cfg, k) != getattr(default, k)]
    return " ".join(parts)
