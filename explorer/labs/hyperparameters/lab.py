"""The hyperparameter lab's three computations, cached by config: learning rates, batch sizes, depth x width.

All models train with the house's K-model step (explorer.train.fused_mlp, through kmlp.KModels). `run_lr` trains
every (learning rate, batch norm) pair as ONE batched run (K = 8 by default: one hand-written forward and backward
per step for all, a learning rate per model; a diverging model is marked and the others go on). `run_batch` trains
one model per batch size (their step counts differ, so they run one after another). `run_grid` trains the depth
row and the width row batched: grouped by width (up to 2x the narrowest of a group), each group one FusedMLP with
widths padded to its widest by zero units and shallower models skipping the layers past their depth; then the
class-probability field over the domain and the linear regions counted on a fine grid. Each `run_*` reports
progress through a Reporter and stores its result in the cache.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch

from explorer.core.cache import Cache, ComputeResult, Entry
from explorer.core.device import get_device
from explorer.core.jobs import JobContext
from explorer.core.report import SILENT, Reporter
from explorer.labs.hyperparameters.config import (DOMAIN, INPUT_SCALE, BatchSizeConfig, Data, GridConfig, LRConfig,
                                                  make_data, n_train, steps_table)
from explorer.labs.hyperparameters.kmlp import KModels, Shape, region_bound

KINDS = {"lr": "hyper-lr", "batch": "hyper-batch", "grid": "hyper-grid"}  # cache kind of each part
PUBLISH_S = 0.25  # a job publishes a snapshot at most this often
CURVES = ("train_loss", "train_acc", "test_loss", "test_acc")


def lr_name(lr: float, bn: bool) -> str:
    """'lr 0.01, BN on'."""
    return f"lr {lr:g}, BN {'on' if bn else 'off'}"


def grid_name(depth: int, width: int) -> str:
    """'depth 6 x width 16'."""
    return f"depth {depth} x width {width}"


def train_stack(stack: KModels, data: Data, batch: int, total_steps: int, eval_at: Sequence[int], seed: int,
                names: Sequence[str], *, report: Reporter = SILENT, on_eval: Callable[[dict], None] | None = None,
                progress: tuple[float, float] = (0.0, 1.0)) -> dict[str, Any]:
    """Train the stack for total_steps minibatch steps over reshuffled epochs (one batch order for all K),
    evaluating train and test loss and accuracy at the steps in eval_at; divergence is checked at each."""
    dev = stack.device
    x, y = stack.prepare(data.x_train.to(dev)), data.y_train.to(dev)
    xt, yt = stack.prepare(data.x_test.to(dev)), data.y_test.to(dev)
    n = len(y)
    batch = min(batch, n)
    per_epoch = math.ceil(n / batch)
    gen = torch.Generator().manual_seed(seed)
    hist: dict[str, Any] = {"step": [], "epoch": [], **{c: [[] for _ in range(stack.k)] for c in CURVES}}
    with flush_denormals():
        _loop(stack, x, y, xt, yt, batch, per_epoch, total_steps, sorted(set(eval_at)), gen, names, hist, report,
              on_eval, *progress)
    return hist


@contextlib.contextmanager
def flush_denormals() -> Iterator[None]:
    """Tiny floats flushed to zero in this thread while training: Adam's second moments of near-zero gradients
    fall below 1e-38, where the CPU's sqrt runs ~10x slower (measured: 0.85 ms vs 0.09 ms per step here);
    values that small change no result."""
    ok = torch.set_flush_denormal(True)  # False where the CPU cannot; there is no getter: restored to off
    try:
        yield
    finally:
        if ok:
            torch.set_flush_denormal(False)


def _loop(stack: KModels, x: torch.Tensor, y: torch.Tensor, xt: torch.Tensor, yt: torch.Tensor, batch: int,
          per_epoch: int, total_steps: int, marks: list[int], gen: torch.Generator, names: Sequence[str],
          hist: dict, report: Reporter, on_eval: Callable[[dict], None] | None, lo: float, hi: float) -> None:
    """train_stack's steps."""
    dev, n = stack.device, len(y)
    pending: list[torch.Tensor] = []
    first, step, last = 1, 0, time.perf_counter()
    while step < total_steps:
        perm = torch.randperm(n, generator=gen).to(dev)
        for start in range(0, n, batch):
            idx = perm[start:start + batch]
            pending.append(stack.step(x[idx], y[idx]))
            step += 1
            if step in marks:
                stack.check(torch.stack(pending), first, per_epoch, names)
                pending, first = [], step + 1
                report.checkpoint()
                tl, ta = stack.evaluate(x, y)
                vl, va = stack.evaluate(xt, yt)
                hist["step"].append(step)
                hist["epoch"].append(step / per_epoch)
                for c, vals in zip(CURVES, (tl, ta, vl, va)):
                    for row, v in zip(hist[c], vals):
                        row.append(v)
                now = time.perf_counter()
                if on_eval is not None and (now - last >= PUBLISH_S or step == total_steps):
                    last = now
                    on_eval(hist)
                report.publish(progress=lo + (hi - lo) * step / total_steps,
                               message=f"step {step:,} of {total_steps:,}")
            if step >= total_steps:
                break


def _finals(hist: dict, i: int) -> dict[str, float]:
    return {c: hist[c][i][-1] if hist[c][i] else math.nan for c in CURVES}


def _snapshot(out: dict) -> dict:
    return copy.deepcopy(out)  # the lists grow on in the job's thread; a page reads a copy


# --- part 1: learning rates x batch norm ---------------------------------------------------------------

def run_lr(cfg: LRConfig, report: Reporter = SILENT, device: torch.device | None = None) -> dict[str, Any]:
    """Every (lr, bn) pair of cfg as one batched run of cfg.epochs epochs, evaluated after each epoch."""
    device = device or get_device()
    data = make_data(cfg)
    pairs = [(lr, bn) for bn in cfg.bn for lr in cfg.lrs]
    names = [lr_name(lr, bn) for lr, bn in pairs]
    shapes = [Shape(cfg.depth, cfg.width, bn) for _, bn in pairs]
    stack = KModels(shapes, 2, data.classes, [lr for lr, _ in pairs], cfg.optimizer, cfg.seed, device)
    per_epoch = math.ceil(len(data.y_train) / min(cfg.batch_size, len(data.y_train)))
    out: dict[str, Any] = {"names": names, "lr": [p[0] for p in pairs], "bn": [p[1] for p in pairs],
                           "steps_per_epoch": per_epoch, "diverged": [None] * len(pairs),
                           "diverged_step": [None] * len(pairs), "history": None}
    t0 = time.perf_counter()

    def on_eval(hist: dict) -> None:
        out.update(history=hist, diverged=list(stack.diverged), diverged_step=list(stack.diverged_step))
        report.publish(_snapshot(out))

    hist = train_stack(stack, data, cfg.batch_size, cfg.epochs * per_epoch,
                       [per_epoch * e for e in range(1, cfg.epochs + 1)], cfg.seed, names, report=report,
                       on_eval=on_eval)
    out.update(history=hist, diverged=list(stack.diverged), diverged_step=list(stack.diverged_step),
               seconds=time.perf_counter() - t0, finals=[_finals(hist, i) for i in range(len(pairs))])
    return out


def lr_table(m: dict) -> list[dict]:
    """One row per model: learning rate, batch norm, final metrics, divergence."""
    rows = []
    for i, name in enumerate(m["names"]):
        f = m.get("finals") or [_finals(m["history"], j) for j in range(len(m["names"]))]
        rows.append({"model": name, "lr": m["lr"][i], "batch norm": "on" if m["bn"][i] else "off",
                     "train loss": f[i]["train_loss"], "train acc": f[i]["train_acc"],
                     "test loss": f[i]["test_loss"], "test acc": f[i]["test_acc"],
                     "diverged at step": m["diverged_step"][i], "why": m["diverged"][i] or ""})
    return rows


# --- part 2: batch sizes ---------------------------------------------------------------------------------

def run_batch(cfg: BatchSizeConfig, report: Reporter = SILENT, device: torch.device | None = None) -> dict[str, Any]:
    """One model per batch size (the same initial weights), one after another, cfg.evals evaluations along each."""
    device = device or get_device()
    data = make_data(cfg)
    table = steps_table(cfg)
    grand = sum(r["total steps"] for r in table)
    out: dict[str, Any] = {"table": table, "mode": cfg.mode, "runs": [], "seconds": []}
    done = 0
    for row in table:
        b, total = row["batch size"], row["total steps"]
        name = f"batch {b}"
        stack = KModels([Shape(cfg.depth, cfg.width, cfg.bn)], 2, data.classes, [cfg.lr], cfg.optimizer, cfg.seed,
                        device)
        marks = sorted({max(1, round(total * (i + 1) / cfg.evals)) for i in range(cfg.evals)})
        run: dict[str, Any] = {"name": name, "batch size": b, "history": None, "diverged": None}
        out["runs"].append(run)
        t0 = time.perf_counter()

        def on_eval(hist: dict, run: dict = run, stack: KModels = stack) -> None:
            run.update(history=hist, diverged=stack.diverged[0], diverged_step=stack.diverged_step[0])
            report.publish(_snapshot(out))

        hist = train_stack(stack, data, b, total, marks, cfg.seed, [name], report=report, on_eval=on_eval,
                           progress=(done / grand, (done + total) / grand))
        run.update(history=hist, diverged=stack.diverged[0], diverged_step=stack.diverged_step[0],
                   finals=_finals(hist, 0))
        out["seconds"].append(time.perf_counter() - t0)
        done += total
        report.publish(_snapshot(out))
    return out


# --- part 3: depth x width --------------------------------------------------------------------------------

def domain_grid(g: int) -> torch.Tensor:
    """(g * g, 2) points over the domain, row-major with row 0 at the top (x2 = +DOMAIN), as the PNGs draw."""
    xs = torch.linspace(-DOMAIN, DOMAIN, g)
    ys = torch.linspace(DOMAIN, -DOMAIN, g)
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([xx.reshape(-1), yy.reshape(-1)], 1)


def run_grid(cfg: GridConfig, report: Reporter = SILENT,
             device: torch.device | None = None) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The grid's models as one padded run; metrics, and the (K, G, G, classes) probability fields."""
    device = device or get_device()
    data = make_data(cfg)
    dims = cfg.shapes
    names = [grid_name(d, w) for d, w in dims]
    stack = KModels([Shape(d, w, cfg.bn) for d, w in dims], 2, data.classes, [cfg.lr] * len(dims),
                    cfg.optimizer, cfg.seed, device)
    per_epoch = math.ceil(len(data.y_train) / min(cfg.batch_size, len(data.y_train)))
    groups = [{"models": [names[i] for i in g], "depth": max(dims[i][0] for i in g),
               "width": max(dims[i][1] for i in g)} for g in stack.groups]
    out: dict[str, Any] = {"names": names, "depth": [d for d, _ in dims], "width": [w for _, w in dims],
                           "groups": groups, "history": None}
    t0 = time.perf_counter()

    def on_eval(hist: dict) -> None:
        out.update(history=hist, diverged=list(stack.diverged))
        report.publish(_snapshot(out))

    hist = train_stack(stack, data, cfg.batch_size, cfg.epochs * per_epoch,
                       [per_epoch * e for e in range(1, cfg.epochs + 1)], cfg.seed, names, report=report,
                       on_eval=on_eval, progress=(0.0, 0.95))
    train_s = time.perf_counter() - t0
    report.publish(message="decision boundaries and linear regions")
    probs = stack.probabilities((domain_grid(cfg.image_grid) / INPUT_SCALE).to(device))
    fields = probs.view(len(dims), cfg.image_grid, cfg.image_grid, data.classes)
    regions = stack.region_counts((domain_grid(cfg.region_grid) / INPUT_SCALE).to(device))
    finals = [_finals(hist, i) for i in range(len(dims))]
    out.update(history=hist, diverged=list(stack.diverged), diverged_step=list(stack.diverged_step),
               finals=finals, regions=regions,
               region_bound=[region_bound(w) if d == 1 else None for d, w in dims],
               seconds=time.perf_counter() - t0, train_seconds=train_s)
    return out, {"fields": fields.contiguous()}


def grid_table(m: dict) -> list[dict]:
    """One row per grid model: shape, parameters, final metrics, regions counted and (one layer) the bound."""
    rows = []
    for i, name in enumerate(m["names"]):
        d, w = m["depth"][i], m["width"][i]
        f = m["finals"][i]
        rows.append({"model": name, "depth": d, "width": w, "params": num_params(d, w),
                     "train loss": f["train_loss"], "test loss": f["test_loss"], "train acc": f["train_acc"],
                     "test acc": f["test_acc"], "regions counted (lower estimate)": m["regions"][i],
                     "region bound (1 hidden layer)": m["region_bound"][i]})
    return rows


def num_params(depth: int, width: int, classes: int = 3, bn: bool = False) -> int:
    """Weights and biases (and BN scales and shifts) of a 2-input MLP."""
    n = 2 * width + width + (depth - 1) * (width * width + width) + width * classes + classes
    return n + (2 * width * depth if bn else 0)


def best_worst(m: dict) -> tuple[int, int]:
    """Indices of the grid models with the lowest and the highest final test loss (NaN counts as worst)."""
    losses = [f["test_loss"] for f in m["finals"]]
    key = [v if math.isfinite(v) else math.inf for v in losses]
    return int(np.argmin(key)), int(np.argmax(key))


# --- cache, jobs, commands --------------------------------------------------------------------------------

PARTS: dict[type, str] = {LRConfig: "lr", BatchSizeConfig: "batch", GridConfig: "grid"}


def kind_of(cfg: Any) -> str:
    """The cache kind of a part's config."""
    return KINDS[PARTS[type(cfg)]]


def compute(cfg: Any, report: Reporter = SILENT, device: torch.device | None = None) -> ComputeResult:
    """The part's result for cfg, freshly computed."""
    part = PARTS[type(cfg)]
    meta = {"recompute": cli_command(cfg)}
    if part == "grid":
        metrics, tensors = run_grid(cfg, report, device)
        return ComputeResult(metrics, tensors, meta)
    return ComputeResult((run_lr if part == "lr" else run_batch)(cfg, report, device), None, meta)


def run(cfg: Any, cache: Cache, report: Reporter = SILENT, device: torch.device | None = None) -> Entry:
    """The part's result for cfg: from the cache, else computed now and stored."""
    return cache.get_or_compute(kind_of(cfg), cfg, lambda: compute(cfg, report, device))


def job(cfg: Any, cache: Cache) -> Callable[[JobContext], Entry]:
    """A job function for views.widgets.start_job: publishes snapshots as it trains, stores the result."""
    def fn(ctx: JobContext) -> Entry:
        ctx.publish(None, progress=0.0, message="starting")
        return run(cfg, cache, ctx)

    fn.__name__ = kind_of(cfg)
    return fn


def work(cfg: Any) -> int:
    """Model-steps of a run (models x optimizer steps): its cost, roughly."""
    if isinstance(cfg, BatchSizeConfig):
        return sum(r["total steps"] for r in steps_table(cfg))
    steps = cfg.epochs * math.ceil(n_train(cfg) / cfg.batch_size)
    return steps * (len(cfg.lrs) * len(cfg.bn) if isinstance(cfg, LRConfig) else len(cfg.shapes))


def _flag(v: Any) -> str:
    if isinstance(v, tuple):
        return " ".join(("on" if x else "off") if isinstance(x, bool) else f"{x:g}" for x in v)
    if isinstance(v, bool):
        return "" if v else None
    return f"{v:g}" if isinstance(v, float) else str(v)


def cli_command(cfg: Any) -> str:
    """The terminal command that recomputes cfg (its non-default settings only)."""
    default = type(cfg)()
    parts = [f"python -m explorer hyper {PARTS[type(cfg)]}"]
    for name in cfg.__dataclass_fields__:
        v = getattr(cfg, name)
        if v == getattr(default, name):
            continue
        text = _flag(v)
        flag = "--" + name.replace("_", "-")
        if isinstance(v, bool):
            parts.append(flag if v else f"--no-{name.replace('_', '-')}")
        else:
            parts.append(f"{flag} {text}")
    return " ".join(parts)
