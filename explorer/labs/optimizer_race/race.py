"""Optimizer races: on a 2-D loss surface, and on a real task with identical weights and batches.

Surface race: every racer owns a (2,) parameter and its torch.optim optimizer; each step evaluates
the surface for all racers in one call, backpropagates once, and steps every optimizer that is
still running. A racer whose loss, gradient or position stops being finite (or flies past
DIVERGE_BOUND) stops with "diverged at step N"; the others go on.

Task race: K copies of one network start from the same seeded weights and see the same batches
(one permutation per epoch) and the same dropout masks. They run as one stacked network: one
forward and one backward for all K (smallnets.train_step_fn: explorer.train.fused_mlp's hand-written
step for the MLP, autograd otherwise), gradients written into one (K, P) buffer whose row k is copy k's gradient. Then the
torch.optim optimizers step: racer k's parameter is row k of the (K, P) weights, one flat tensor
(every registered optimizer is elementwise, so this is the same update as per layer), and racers
whose classes share a step() share one optimizer with a param group each (SGD / momentum /
Nesterov; Adam / AdamW), fused where torch has a fused kernel (optimizers.build_shared_optimizers).
A diverged racer's group is dropped. The whole data set lives on the device, batches are slices of
a once-per-epoch shuffled copy, and the host syncs once per logging window, not per step.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from explorer.core.cache import Cache, ComputeResult, Entry
from explorer.core.config import ConfigError, check_choice, check_range
from explorer.core.device import get_device
from explorer.core.jobs import JobContext, JobFn
from explorer.core.report import SILENT, Reporter
from explorer.data import datasets
from explorer.labs.optimizer_race.surfaces import DTYPE, SURFACES, Surface, get_surface
from explorer.nets.small import NetConfig, eval_logits_fn, flat_stack, flat_views, init_state, make_masks, train_step_fn
from explorer.train.evaluate import diverged_message, evaluate, first_nonfinite
from explorer.train.optimizers import (OptimizerConfig, build_optimizer, build_shared_optimizers, check_racers,
                                       default_racers, momentum_of)

DIVERGE_BOUND = 1e6  # a surface racer this far from the origin has left for good
MAX_SURFACE_STEPS = 3000
TASK_KIND = "optimizer_race"
TASK_DATASETS = ("mnist1d", "fashion_mnist", "cifar10")
MAX_EXAMPLE_PASSES = 5_000_000  # n_train * epochs: keeps one race within minutes on a laptop CPU
LOG_POINTS = 120  # train-loss points per race (each one host sync)
EVAL_CHUNK = 1000  # validation examples per stacked forward
BLOWUP_FACTOR = 1000.0  # a training loss this many times its first value counts as diverged


def unique_labels(racers: tuple[OptimizerConfig, ...]) -> list[str]:
    """Legend names; identical settings get #2, #3 so every racer stays distinguishable."""
    labels, seen = [], {}
    for r in racers:
        seen[r.label] = seen.get(r.label, 0) + 1
        labels.append(r.label if seen[r.label] == 1 else f"{r.label} #{seen[r.label]}")
    return labels


# --- surface race -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SurfaceRaceConfig:
    """A race on a 2-D surface: where from, how long, who races, and how noisy the gradients are."""

    surface: str = "rosenbrock"  # a SURFACES key, or "custom" with `formula`
    start: tuple[float, float] = (-1.5, 2.5)
    steps: int = 300
    racers: tuple[OptimizerConfig, ...] = field(default_factory=default_racers)
    grad_noise: float = 0.0  # std of Gaussian noise added to every gradient (the same draws for all racers)
    seed: int = 0  # of the gradient noise
    formula: str = ""  # for surface == "custom": an expression in x and y
    half_width: float = 3.0  # for surface == "custom": the plot shows [-w, w]²

    def __post_init__(self) -> None:
        check_choice("surface", self.surface, [*SURFACES, "custom"])
        check_range("steps", self.steps, 1, MAX_SURFACE_STEPS, integer=True)
        check_racers(self.racers)
        check_range("gradient noise", self.grad_noise, 0.0, 100.0)
        check_range("seed", self.seed, 0, 2**31 - 1, integer=True)
        check_range("custom plot half-width", self.half_width, 0.1, 1000.0)
        if not isinstance(self.start, tuple) or len(self.start) != 2:
            raise ConfigError(f"start must be a point (x, y), got {self.start!r}")
        surf = self.get_surface()
        x0, x1, y0, y1 = surf.domain
        check_range("start x", self.start[0], x0, x1)
        check_range("start y", self.start[1], y0, y1)

    def get_surface(self) -> Surface:
        """The surface object (parses a custom formula; a bad one raises ConfigError)."""
        return get_surface(self.surface, self.formula, self.half_width)


@dataclass
class Track:
    """One racer's path: positions, losses, gradients and momentum at every step it ran."""

    label: str
    config: OptimizerConfig
    path: torch.Tensor  # (T+1, 2) positions, start first
    loss: torch.Tensor  # (T+1,)
    grad: torch.Tensor  # (T+1, 2) the gradient used at each position (noise included); last row: at the end
    momentum: torch.Tensor | None  # (T+1, 2) velocity / first moment after reaching each position
    distance: torch.Tensor | None  # (T+1,) to the nearest global minimum
    diverged_at: int | None = None  # the step whose result was not finite
    message: str | None = None


@dataclass
class SurfaceRace:
    """All tracks of a surface race."""

    config: SurfaceRaceConfig
    surface: Surface
    tracks: list[Track]
    wall_time_s: float


def race_surface(cfg: SurfaceRaceConfig) -> SurfaceRace:
    """Run every racer from the same start in lock-step; a diverging racer stops, the rest go on."""
    t0 = time.perf_counter()
    surf = cfg.get_surface()
    k = len(cfg.racers)
    # 2-D problems stay on the CPU: a kernel launch would cost more than the maths.
    params = [torch.tensor(cfg.start, dtype=DTYPE, requires_grad=True) for _ in range(k)]
    opts = [build_optimizer(r, [p]) for r, p in zip(cfg.racers, params)]
    noise_gen = torch.Generator().manual_seed(cfg.seed)
    alive = list(range(k))
    rows: list[list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]]] = [[] for _ in range(k)]
    diverged: list[int | None] = [None] * k
    for step in range(cfg.steps + 1):
        pts = torch.stack([params[i] for i in alive])  # (A, 2)
        losses = surf.fn(pts[:, 0], pts[:, 1])  # (A,)
        grads = torch.stack(torch.autograd.grad(losses.sum(), [params[i] for i in alive]))  # (A, 2)
        if cfg.grad_noise:  # the same draw for every racer: differences come from the optimizers alone
            grads = grads + torch.randn(2, generator=noise_gen, dtype=DTYPE) * cfg.grad_noise
        pts, losses = pts.detach(), losses.detach()
        ok = (torch.isfinite(losses) & torch.isfinite(grads).all(1) & (pts.abs().amax(1) <= DIVERGE_BOUND)).tolist()
        still = []
        for j, i in enumerate(alive):
            if not ok[j]:
                diverged[i] = step
                continue
            mom = momentum_of(cfg.racers[i], opts[i], params[i])
            rows[i].append((pts[j], losses[j], grads[j], None if mom is None else mom.detach().clone()))
            if step < cfg.steps:
                params[i].grad = grads[j]
                opts[i].step()
            still.append(i)
        alive = still
        if not alive:
            break
    tracks = []
    for i, (r, label) in enumerate(zip(cfg.racers, unique_labels(cfg.racers))):
        path = torch.stack([row[0] for row in rows[i]]) if rows[i] else torch.empty(0, 2, dtype=DTYPE)
        loss = torch.stack([row[1] for row in rows[i]]) if rows[i] else torch.empty(0, dtype=DTYPE)
        grad = torch.stack([row[2] for row in rows[i]]) if rows[i] else torch.empty(0, 2, dtype=DTYPE)
        moms = [row[3] for row in rows[i]]
        momentum = None
        if any(m is not None for m in moms):  # before the first step there is no state yet: zeros
            momentum = torch.stack([torch.zeros(2, dtype=DTYPE) if m is None else m for m in moms])
        message = None
        if diverged[i] is not None:
            message = diverged_message("", diverged[i], lr=r.lr, cause="the loss, gradient or position stopped "
                                       f"being finite (or went past {DIVERGE_BOUND:g})")
        distance = surf.distance_to_minimum(path) if len(path) else None
        tracks.append(Track(label, r, path, loss, grad, momentum, distance, diverged[i], message))
    return SurfaceRace(cfg, surf, tracks, time.perf_counter() - t0)


# --- task race ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TaskRaceConfig:
    """A race on real data: the data, the network, the racers and the training schedule."""

    dataset: str = "mnist1d"
    net: NetConfig = field(default_factory=NetConfig)
    racers: tuple[OptimizerConfig, ...] = field(default_factory=default_racers)
    n_train: int = 4000  # training examples (a seeded subset)
    n_val: int = 1000  # validation examples, from the test split
    epochs: int = 5
    batch_size: int = 64
    seed: int = 0  # initial weights, subsets, batch order and dropout masks

    def __post_init__(self) -> None:
        check_choice("dataset", self.dataset, TASK_DATASETS)
        if not isinstance(self.net, NetConfig):
            raise ConfigError(f"net must be a NetConfig, got {type(self.net).__name__}")
        check_racers(self.racers)
        check_range("training examples", self.n_train, 100, 60_000, integer=True)
        check_range("validation examples", self.n_val, 100, 10_000, integer=True)
        check_range("epochs", self.epochs, 1, 200, integer=True)
        check_range("batch size", self.batch_size, 1, 4096, integer=True)
        check_range("seed", self.seed, 0, 2**31 - 1, integer=True)
        if self.n_train * self.epochs > MAX_EXAMPLE_PASSES:
            raise ConfigError(f"training examples × epochs must be at most {MAX_EXAMPLE_PASSES:,}; "
                              f"got {self.n_train * self.epochs:,}")


@dataclass
class TaskData:
    """Standardised tensors on the device, and where they came from."""

    name: str  # the data set actually used
    x_train: torch.Tensor  # (N, C, H, W) or (N, L), float32, standardised
    y_train: torch.Tensor  # (N,) int64
    x_val: torch.Tensor
    y_val: torch.Tensor
    classes: tuple[str, ...]
    fallback: str | None = None  # why the requested data set was replaced by the embedded one

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one example."""
        return tuple(self.x_train.shape[1:])


def load_task_data(cfg: TaskRaceConfig, device: torch.device | None = None) -> TaskData:
    """The seeded train / validation subsets, standardised with the training statistics."""
    device = device or get_device()
    train, message = datasets.load_or_fallback(cfg.dataset, "train")
    val, _ = datasets.load_or_fallback(cfg.dataset if message is None else datasets.FALLBACK, "test")
    train = datasets.take(train, cfg.n_train, cfg.seed)
    val = datasets.take(val, cfg.n_val, cfg.seed)
    xt, xv = train.to_float(), val.to_float()
    dims = [0, 2, 3] if xt.dim() == 4 else [0, 1]  # per channel for images, one scale for signals
    mean, std = xt.mean(dims, keepdim=True), xt.std(dims, keepdim=True).clamp_min(1e-6)
    if xt.dim() == 2:
        mean, std = mean.squeeze(0), std.squeeze(0)
    return TaskData(train.name, ((xt - mean) / std).to(device), train.y.to(device),
                    ((xv - mean) / std).to(device), val.y.to(device), train.classes, message)


def _digest(tensors: list[torch.Tensor]) -> str:
    """sha256 of tensors' bytes: the fairness record (same weights, same batches) in the result."""
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _evaluate(logits_fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, y: torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Validation accuracy (K,) and mean loss (K,) of every copy, eval mode, on the device."""
    [(loss, err)] = evaluate(logits_fn, x, [y], EVAL_CHUNK, classes_dim=1)  # (K, C, B)
    return 1 - err, loss


def train_race(cfg: TaskRaceConfig, data: TaskData, *,
               report: Reporter = SILENT) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Train every racer on identical weights and batches, publishing live curves; (metrics, tensors) for the cache."""
    t0 = time.perf_counter()
    dev = data.x_train.device
    k, n, b = len(cfg.racers), len(data.x_train), min(cfg.batch_size, len(data.x_train))
    num_classes = len(data.classes)
    labels = unique_labels(cfg.racers)
    init = init_state(cfg.net, data.input_shape, num_classes, cfg.seed)
    flat, params = flat_stack(init, k, dev)  # (K, P): row i holds racer i's weights; name -> (K, ...) views
    grad_flat = torch.zeros_like(flat)
    grads = flat_views(grad_flat, {name: t.shape for name, t in init.items()})
    mine = [[flat[i]] for i in range(k)]  # racer i's optimizer updates row i, one flat tensor
    for i in range(k):
        mine[i][0].grad = grad_flat[i]
    opts = build_shared_optimizers(cfg.racers, mine, dev)
    train_step = train_step_fn(cfg.net, params, grads)  # fills grads
    eval_logits = eval_logits_fn(cfg.net, params)
    order_gen = torch.Generator().manual_seed(cfg.seed)
    orders = torch.stack([torch.randperm(n, generator=order_gen) for _ in range(cfg.epochs)])  # (E, N)
    drop_gen = torch.Generator(device=dev).manual_seed(cfg.seed + 1)
    masks = make_masks(cfg.net.dropout, drop_gen, dev, data.x_train.dtype)  # one mask per step, shared by all
    steps_per_epoch = math.ceil(n / b)
    total = cfg.epochs * steps_per_epoch
    log_every = max(1, total // LOG_POINTS)
    step_loss = torch.empty(total, k, device=dev)  # every step's training loss, synced per window
    curve_step: list[int] = []
    curve_loss: list[list[float]] = [[] for _ in range(k)]
    val_epoch: list[int] = [0]
    acc0, vloss0 = _evaluate(eval_logits, data.x_val, data.y_val)
    val_acc = [[float(a)] for a in acc0.cpu()]
    val_loss = [[float(v)] for v in vloss0.cpu()]
    diverged: list[int | None] = [None] * k
    messages: list[str | None] = [None] * k
    limit = torch.full((k,), math.inf)  # blow-up limit (K,): BLOWUP_FACTOR x each racer's first loss
    order_dev = orders.to(dev)

    def snapshot() -> dict[str, Any]:
        return {"labels": labels, "step": list(curve_step), "train_loss": [list(c) for c in curve_loss],
                "epoch": list(val_epoch), "val_acc": [list(a) for a in val_acc],
                "val_loss": [list(v) for v in val_loss], "steps_per_epoch": steps_per_epoch,
                "total_steps": total, "diverged_at": list(diverged),
                "messages": list(messages),
                "elapsed_s": time.perf_counter() - t0}

    def sync(start: int, stop: int) -> None:
        """Pull a window of step losses to the host; mark racers whose loss stopped being finite."""
        window = step_loss[start:stop].cpu()  # (W, K): the one host sync of the window
        if start == 0:  # cross-entropy stays finite long after training has blown up, so a huge loss counts too
            limit.copy_(window[0]).mul_(BLOWUP_FACTOR)
        curve_step.append(stop)
        means = window.mean(0).tolist()
        for i, first_bad in enumerate(first_nonfinite(window, limit)):  # on the host already: no further sync
            if diverged[i] is not None:
                continue
            if first_bad is not None:
                diverged[i] = start + first_bad + 1  # steps count from 1
                messages[i] = diverged_message(
                    "", diverged[i], (diverged[i] - 1) // steps_per_epoch + 1, cfg.racers[i].lr,
                    cause=f"the training loss became non-finite or exceeded {BLOWUP_FACTOR:g}× its first value")
                opts.drop(i)
            else:
                curve_loss[i].append(means[i])

    step, logged = 0, 0
    for epoch in range(cfg.epochs):
        perm = order_dev[epoch]
        x_epoch, y_epoch = data.x_train[perm], data.y_train[perm]  # batches are slices of these
        for s in range(0, n, b):
            per = train_step(x_epoch[s:s + b], y_epoch[s:s + b], masks)  # (K,); fills grads
            step_loss[step] = per
            opts.step()
            step += 1
            if step - logged >= log_every or s + b >= n:
                sync(logged, step)
                logged = step
                report.checkpoint()
                report.publish(snapshot(), progress=step / total, message=f"step {step} of {total}")
        acc, vloss = (t.cpu() for t in _evaluate(eval_logits, data.x_val, data.y_val))
        val_epoch.append(epoch + 1)
        for i in range(k):
            if diverged[i] is None:
                val_acc[i].append(float(acc[i]))
                val_loss[i].append(float(vloss[i]))
        report.publish(snapshot(), progress=step / total, message=f"step {step} of {total}")
    metrics = snapshot()
    metrics["table"] = [
        {"optimizer": labels[i], "final train loss": curve_loss[i][-1] if curve_loss[i] else math.nan,
         "final val accuracy": val_acc[i][-1], "best val accuracy": max(val_acc[i]),
         "status": metrics["messages"][i] or "finished"}
        for i in range(k)
    ]
    metrics["fairness"] = {
        "initial_weights_sha256": _digest(list(init.values())),
        "batch_order_sha256": _digest([orders]),
        "batch_order_seed": cfg.seed,
        "dropout_masks": "one mask per step, shared by every racer" if cfg.net.dropout else "no dropout",
    }
    metrics["data"] = {"dataset": data.name, "n_train": n, "n_val": len(data.x_val),
                       "input_shape": list(data.input_shape), "classes": list(data.classes),
                       "fallback": data.fallback}
    tensors = {"batch_order": orders.to(torch.int32), "step_loss": step_loss.cpu()}
    return metrics, tensors


@dataclass
class TaskRaceOutcome:
    """What a task-race job returns: the metrics, the cache entry (None if not cached) and a notice."""

    metrics: dict[str, Any]
    entry: Entry | None
    notice: str | None = None


def cached_task_race(cfg: TaskRaceConfig, cache: Cache) -> Entry | None:
    """The cached result of this exact race, if there is one."""
    return cache.get(TASK_KIND, cfg)


def task_race_job(cfg: TaskRaceConfig, cache: Cache) -> JobFn:
    """A job function: load the data, race (or take the cached result), publish live curves."""

    def fn(ctx: JobContext) -> TaskRaceOutcome:
        ctx.publish(None, progress=0.0, message="loading data")
        data = load_task_data(cfg)
        if data.fallback is not None:  # not what was asked for: show it, never cache it under this config
            metrics, _ = train_race(cfg, data, report=ctx)
            return TaskRaceOutcome(metrics, None, data.fallback)

        def compute() -> ComputeResult:
            metrics, tensors = train_race(cfg, data, report=ctx)
            return ComputeResult(metrics, tensors)

        entry = cache.get_or_compute(TASK_KIND, cfg, compute)
        ctx.publish(entry.metrics, progress=1.0, message="done")
        return TaskRaceOutcome(entry.metrics, entry)

    return fn
