"""Train K models of one architecture (an explorer.nets.small NetConfig) together: one forward and one
backward per step for all K.

The K models' parameters are stacked along a new leading dimension (torch.func.stack_module_state)
and the forward runs them all at once: plain MLPs through `torch.baddbmm` on the stacked weights
(measured about 15-25% faster than vmap on the CPU for the MNIST-1D MLP), explorer.nets.small's other
networks on shared inputs through that module's own K-copies forward (grouped convolutions in channels-last
memory: 2x faster than vmap on the CPU for the weight-trajectories CNNs), anything else through
`torch.func.vmap(functional_call)` (vmap turns a batched convolution into one grouped convolution).
The loss is the SUM of the K per-model mean losses, so each model's gradient is exactly its own; the
optimizer (SGD, momentum, Adam) is elementwise, so one torch.optim optimizer over the stacked tensors
is identical to K independent ones (tested). Each model has its own labels (and optionally its own
inputs); all share one batch order. The host syncs once per epoch; a model whose loss goes
non-finite is marked diverged with its step, its metrics become NaN, and the others go on.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from explorer.core.config import ConfigError, check_choice, check_range
from explorer.core.device import get_device
from explorer.core.report import SILENT, Reporter
from explorer.core.schedules import SCHEDULES
from explorer.core.seeding import seeded
from explorer.nets.small import NetConfig, build_net, stacked_forward
from explorer.train.evaluate import diverged_message, evaluate, first_nonfinite
from explorer.train.optimizers import build_optimizer, config_for, fast_kwargs, supported_kinds

# --- the models: explorer.nets.small's families, described by a NetConfig ----------------------------

@dataclass(frozen=True)
class ModelSpec:
    """A network of explorer.nets.small and the data shape it is built for; builds identical nn.Modules."""

    net: NetConfig = NetConfig()
    input_shape: tuple[int, ...] = (40,)  # one example's shape, e.g. (40,) or (3, 32, 32)
    num_classes: int = 10

    def __post_init__(self) -> None:
        if not isinstance(self.net, NetConfig):
            raise ConfigError(f"net must be a NetConfig, got {type(self.net).__name__}")
        if self.net.dropout:  # vmap would draw one mask per model; the batched step has no dropout
            raise ConfigError("the batched trainer trains networks without dropout")
        if not 1 <= len(self.input_shape) <= 3:
            raise ConfigError(f"input shape must have 1 to 3 dimensions, got {self.input_shape}")
        for d in self.input_shape:
            check_range("input size", d, 1, 100_000, integer=True)
        check_range("number of classes", self.num_classes, 2, 1000, integer=True)

    def build(self) -> nn.Module:
        """A fresh module, initialised from torch's global RNG (seed it first)."""
        return build_net(self.net, tuple(self.input_shape), self.num_classes)

    @property
    def num_params(self) -> int:
        """Number of trainable parameters of one model."""
        with torch.device("meta"):
            return sum(p.numel() for p in self.build().parameters())


# --- training configuration --------------------------------------------------------------------------

# Elementwise, so one optimizer over the stacked tensors equals K independent ones (tested for these three).
OPTIMIZER_KINDS = supported_kinds("adam", "momentum", "sgd")

@dataclass(frozen=True)
class BatchConfig:
    """How the K models train: optimizer, step size, batch size, epochs, seeds."""

    optimizer: str = "adam"
    lr: float = 1e-3  # step size, 1e-6..10
    momentum: float = 0.9  # for the kinds that have momentum
    weight_decay: float = 0.0  # L2 coefficient, as torch.optim applies it
    batch_size: int = 128  # examples per step, shared batch order for all K models
    epochs: int = 100  # run cap
    schedule: str = "constant"
    seed: int = 0  # batch order
    init_seed: int = 0  # initial weights: model k uses init_seed (same_init) or init_seed + k
    same_init: bool = True
    eval_chunk: int = 2048  # examples per evaluation forward, per model

    def __post_init__(self) -> None:
        check_choice("optimizer", self.optimizer, OPTIMIZER_KINDS)
        check_range("learning rate", self.lr, 1e-6, 10.0)
        check_range("momentum", self.momentum, 0.0, 0.999)
        check_range("weight decay", self.weight_decay, 0.0, 1.0)
        check_range("batch size", self.batch_size, 1, 100_000, integer=True)
        check_range("epochs", self.epochs, 1, 100_000, integer=True)
        check_choice("schedule", self.schedule, SCHEDULES)
        check_range("seed", self.seed, 0, 2**31 - 1, integer=True)
        check_range("init seed", self.init_seed, 0, 2**31 - 1, integer=True)
        check_range("evaluation chunk", self.eval_chunk, 1, 1_000_000, integer=True)


METRICS = ("train_loss", "train_err", "test_loss", "test_err")


@dataclass
class BatchedHistory:
    """Per-epoch metrics of a batched run, one list per model: train_err[k][e] is model k after epoch e+1."""

    epoch: list[int] = field(default_factory=list)
    train_loss: list[list[float]] = field(default_factory=list)
    train_err: list[list[float]] = field(default_factory=list)
    test_loss: list[list[float]] = field(default_factory=list)
    test_err: list[list[float]] = field(default_factory=list)

    def to_dict(self) -> dict[str, list]:
        """Plain data for JSON."""
        return {"epoch": self.epoch, **{m: getattr(self, m) for m in METRICS}}


# --- the batched trainer -----------------------------------------------------------------------------

def _is_plain_mlp(module: nn.Module) -> bool:
    """True for an nn.Sequential of Flatten / Linear / ReLU only (the bmm fast path)."""
    return isinstance(module, nn.Sequential) and all(
        isinstance(m, (nn.Flatten, nn.Linear, nn.ReLU)) for m in module)


class BatchedTrainer:
    """K models of one architecture trained as one; deterministic for its seeds on the CPU."""

    def __init__(self, spec: ModelSpec, cfg: BatchConfig, k: int, x: torch.Tensor, y: torch.Tensor,
                 x_test: torch.Tensor | None = None, y_test: torch.Tensor | None = None,
                 *, device: torch.device | None = None) -> None:
        check_range("number of models", k, 1, 4096, integer=True)
        self.spec, self.cfg, self.k = spec, cfg, k
        self.device = device or get_device()
        sample_dims = len(spec.input_shape)
        self.x, self.x_shared = self._inputs(x, sample_dims, "x")
        self.y = self._labels(y, "y")
        self.n = self.y.shape[1]
        if self.x.shape[-sample_dims - 1] != self.n:
            raise ConfigError(f"x has {self.x.shape[-sample_dims - 1]} examples but y has {self.n}")
        self.x_test = self.y_test = None
        if x_test is not None and y_test is not None:
            self.x_test, self.x_test_shared = self._inputs(x_test, sample_dims, "x_test")
            self.y_test = self._labels(y_test, "y_test")
        self.batch_size = min(cfg.batch_size, self.n)

        modules = []
        for i in range(k):
            with seeded(cfg.init_seed + (0 if cfg.same_init else i)):
                modules.append(spec.build())
        params, buffers = stack_module_state(modules)
        self.params = {n: p.detach().to(self.device).requires_grad_() for n, p in params.items()}
        self.buffers = {n: b.to(self.device) for n, b in buffers.items()}
        self.base = copy.deepcopy(modules[0]).to("meta")
        self.fast = _is_plain_mlp(self.base)
        self.grouped = not self.fast and not self.buffers  # nets.small's stacked forward needs no buffers
        opt_cfg = config_for(cfg.optimizer, cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        # fused where torch has it: one kernel per stacked tensor per step (the same update, tested)
        self.opt = build_optimizer(opt_cfg, self.params.values(), **fast_kwargs(opt_cfg.spec.cls, self.device))
        self.gen = torch.Generator(device="cpu").manual_seed(cfg.seed)
        self.alive = torch.ones(k, dtype=torch.bool)  # host copy, updated once per epoch
        self.diverged: list[str | None] = [None] * k
        self.epoch = 0
        self.step_count = 0
        self.history = BatchedHistory()
        self.history.train_loss = [[] for _ in range(k)]
        self.history.train_err = [[] for _ in range(k)]
        self.history.test_loss = [[] for _ in range(k)]
        self.history.test_err = [[] for _ in range(k)]

    def _inputs(self, x: torch.Tensor, sample_dims: int, name: str) -> tuple[torch.Tensor, bool]:
        """Inputs on the device: (N, *shape) shared by all models, or (K, N, *shape) per model."""
        if tuple(x.shape[-sample_dims:]) != tuple(self.spec.input_shape):
            raise ConfigError(f"{name} has examples of shape {tuple(x.shape[-sample_dims:])}, "
                              f"the model expects {tuple(self.spec.input_shape)}")
        if x.dim() == sample_dims + 1:
            return x.to(self.device), True
        if x.dim() == sample_dims + 2 and x.shape[0] == self.k:
            return x.to(self.device), False
        raise ConfigError(f"{name} must be (N, ...) or ({self.k}, N, ...), got {tuple(x.shape)}")

    def _labels(self, y: torch.Tensor, name: str) -> torch.Tensor:
        """Labels on the device as (K, N) int64 (a shared (N,) vector is expanded, not copied)."""
        y = y.to(self.device, torch.int64)
        if y.dim() == 1:
            return y.unsqueeze(0).expand(self.k, -1)
        if y.dim() == 2 and y.shape[0] == self.k:
            return y
        raise ConfigError(f"{name} must be (N,) or ({self.k}, N), got {tuple(y.shape)}")

    # --- forward ---------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, shared: bool) -> torch.Tensor:
        """Logits (K, B, classes) of all K models for x (B, ...) shared or (K, B, ...)."""
        if x.dtype == torch.uint8:
            x = x.float().div_(255.0)  # images travel as uint8 and are scaled per batch
        if self.fast:
            return self._mlp_forward(x, shared)
        if shared and self.grouped:  # explorer.nets.small's own K-copies forward (grouped convolutions)
            return stacked_forward(self.spec.net, self.params, x)
        call = vmap(self._call, in_dims=(0, 0, None if shared else 0))
        return call(self.params, self.buffers, x)

    def _call(self, params: dict, buffers: dict, x: torch.Tensor) -> torch.Tensor:
        """One model's forward through functional_call (vmapped over the K models)."""
        return functional_call(self.base, (params, buffers), (x,))

    def _mlp_forward(self, x: torch.Tensor, shared: bool) -> torch.Tensor:
        """The plain MLP on stacked weights: batched matrix products, no vmap."""
        h = x.flatten(-len(self.spec.input_shape))  # (B, D) or (K, B, D)
        for name, layer in self.base.named_children():
            if isinstance(layer, nn.Linear):
                w = self.params[f"{name}.weight"].transpose(1, 2)  # (K, in, out)
                b = self.params[f"{name}.bias"].unsqueeze(1)  # (K, 1, out)
                h = torch.matmul(h, w) + b if h.dim() == 2 else torch.baddbmm(b, h, w)
            elif isinstance(layer, nn.ReLU):
                h = torch.relu(h)
        return h  # (K, B, classes)

    def _batch(self, x: torch.Tensor, shared: bool, idx: torch.Tensor) -> torch.Tensor:
        """Rows idx of shared (N, ...) or per-model (K, N, ...) inputs."""
        return x[idx] if shared else x[:, idx]

    # --- training --------------------------------------------------------------------------------
    def run_epoch(self) -> None:
        """One pass over the shared batch order; one host sync at the end for divergence."""
        cfg = self.cfg
        factor = SCHEDULES[cfg.schedule](self.epoch, cfg.epochs)
        for group in self.opt.param_groups:
            group["lr"] = cfg.lr * factor
        self.base.train()
        perm = torch.randperm(self.n, generator=self.gen).to(self.device)
        starts = range(0, self.n, self.batch_size)
        step_losses = torch.empty(len(starts), self.k, device=self.device)  # (steps, K), read once per epoch
        for s, start in enumerate(starts):
            idx = perm[start:start + self.batch_size]
            out = self.forward(self._batch(self.x, self.x_shared, idx), self.x_shared)  # (K, B, C)
            losses = F.cross_entropy(out.flatten(0, 1), self.y[:, idx].flatten(), reduction="none")
            losses = losses.view(self.k, -1).mean(1)  # (K,) each model's own mean loss
            self.opt.zero_grad()
            losses.sum().backward()
            self.opt.step()
            step_losses[s] = losses.detach()
        first_step = self.step_count + 1
        self.step_count += len(starts)
        self.epoch += 1
        for i, s in enumerate(first_nonfinite(step_losses)):  # the epoch's one host sync
            if s is not None and self.alive[i]:
                self._mark_diverged(i, first_step + s)

    def _mark_diverged(self, i: int, step: int) -> None:
        """Stop model i: its weights and optimizer state become zero so it cannot poison sums."""
        self.alive[i] = False
        self.diverged[i] = diverged_message(f"model {i}", step, self.epoch, self.cfg.lr)
        with torch.no_grad():
            for p in self.params.values():
                p[i].zero_()
                for v in self.opt.state.get(p, {}).values():
                    if torch.is_tensor(v) and v.dim() > 0:
                        v[i].zero_()

    def _evaluate_set(self, x: torch.Tensor, shared: bool, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean loss and error per model (K,), (K,) over a whole set, in chunks."""
        self.base.eval()
        [(loss, err)] = evaluate(lambda xb: self.forward(xb, shared), x, [y], self.cfg.eval_chunk,
                                 example_dim=0 if shared else 1)
        self.base.train()
        return loss, err

    def evaluate(self) -> dict[str, list[float]]:
        """Train and test loss and error per model, appended to the history (NaN for diverged)."""
        parts = list(self._evaluate_set(self.x, self.x_shared, self.y))
        if self.x_test is not None:
            parts += list(self._evaluate_set(self.x_test, self.x_test_shared, self.y_test))
        else:
            nan = torch.full((self.k,), math.nan, device=self.device)
            parts += [nan, nan]
        values = torch.stack(parts).cpu()  # (4, K): the evaluation's one host sync
        values[:, ~self.alive] = math.nan
        values = values.tolist()
        self.history.epoch.append(self.epoch)
        metrics = {}
        for name, row in zip(METRICS, values):
            for i, v in enumerate(row):
                getattr(self.history, name)[i].append(v)
            metrics[name] = row
        return metrics

    def state(self, i: int) -> dict[str, torch.Tensor]:
        """Model i's parameters and buffers with nn.Module names, on the CPU (for safetensors)."""
        out = {n: p[i].detach().cpu().clone() for n, p in self.params.items()}
        out.update({n: b[i].detach().cpu().clone() for n, b in self.buffers.items()})
        return out


@dataclass
class BatchedResult:
    """What a batched run produced: per-model curves, why any stopped, where training ended."""

    history: BatchedHistory
    diverged: list[str | None]
    epochs: int
    steps: int
    trainer: BatchedTrainer


def train_batched(spec: ModelSpec, cfg: BatchConfig, k: int, x: torch.Tensor, y: torch.Tensor,
                  x_test: torch.Tensor | None = None, y_test: torch.Tensor | None = None, *,
                  on_epoch: Callable[[int, dict[str, list[float]]], None] | None = None,
                  stop: Callable[[int, dict[str, list[float]]], bool] | None = None,
                  report: Reporter = SILENT, device: torch.device | None = None) -> BatchedResult:
    """Train K models for up to cfg.epochs, evaluating after each; `stop` may end the run early.

    `on_epoch(epoch, metrics)` sees each epoch's metrics; `report` gets a checkpoint before each epoch and the
    epoch count after it.
    """
    tr = BatchedTrainer(spec, cfg, k, x, y, x_test, y_test, device=device)
    for _ in range(cfg.epochs):
        report.checkpoint()
        tr.run_epoch()
        metrics = tr.evaluate()
        if on_epoch is not None:
            on_epoch(tr.epoch, metrics)
        report.publish(progress=tr.epoch / cfg.epochs, message=f"epoch {tr.epoch} of at most {cfg.epochs}")
        if not tr.alive.any() or (stop is not None and stop(tr.epoch, metrics)):
            break
    return BatchedResult(tr.history, tr.diverged, tr.epoch, tr.step_count, tr)
