"""The hyperparameter lab's settings and data: learning rates, batch sizes, depth x width, and the 2-D points.

Three frozen configs, one per part (`LRConfig`, `BatchSizeConfig`, `GridConfig`), each checked in
__post_init__ with the allowed range in the message. The data: a multi-class 2-D set (`DATASETS`: a 3-arm
spiral or 4 Gaussian blobs, generated here because explorer.data.toy2d's sets are two-class; its two-class
sets are offered too), split into train and test points, inputs scaled by 1 / INPUT_SCALE.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from explorer.core.config import ConfigError, check_choice, check_range
from explorer.data import toy2d
from explorer.labs.hyperparameters.kmlp import OPTIMIZERS

DOMAIN = toy2d.DOMAIN  # points live in [-6, 6]^2
INPUT_SCALE = 3.0  # the networks see x / 3: inputs of about unit size
MAX_WIDTH = 256
MAX_DEPTH = 12
LRS = (1.0, 1e-2, 1e-3, 1e-5)  # the course's four learning rates
BATCH_SIZES = (1, 16, 128, 1024)
GRID_DEPTHS = (1, 2, 6, 10)  # at GRID_WIDTH
GRID_WIDTH = 16
GRID_WIDTHS = (8, 16, 32, 64)  # at GRID_DEPTH
GRID_DEPTH = 6
MODES = {"epochs": "the same number of epochs", "steps": "the same number of optimizer steps"}


def _spiral(n: int, noise: float, rng: np.random.Generator, arms: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """`arms` interleaved spiral arms from the centre out to radius 5.5, one class each."""
    y = np.arange(n) % arms
    t = rng.uniform(0.05, 1.0, n)
    ang = t * 1.5 * 2 * math.pi + y * 2 * math.pi / arms
    r = 5.5 * t
    x = np.stack([r * np.cos(ang), r * np.sin(ang)], 1) + rng.normal(0, 0.15 + 2.0 * noise, (n, 2))
    return x, y


def _blobs(n: int, noise: float, rng: np.random.Generator, k: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """k Gaussian blobs on a circle of radius 3.5, one class each."""
    y = np.arange(n) % k
    centre = 3.5 * np.stack([np.cos(2 * math.pi * y / k), np.sin(2 * math.pi * y / k)], 1)
    return centre + rng.normal(0, 0.8 + 3.0 * noise, (n, 2)), y


def _toy2d(name: str) -> Callable[[int, float, np.random.Generator], tuple[np.ndarray, np.ndarray]]:
    def gen(n: int, noise: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        pts = toy2d.GENERATORS[name](n, noise, rng)
        return pts.x, pts.y
    return gen


DATASETS: dict[str, tuple[str, Callable[[int, float, np.random.Generator], tuple[np.ndarray, np.ndarray]]]] = {
    "spiral3": ("spiral, 3 classes", _spiral),
    "blobs4": ("4 Gaussian blobs", _blobs),
    "spiral": ("spiral, 2 classes (playground)", _toy2d("spiral")),
    "circle": ("circle, 2 classes (playground)", _toy2d("circle")),
    "xor": ("xor, 2 classes (playground)", _toy2d("xor")),
}


@dataclass(frozen=True)
class Data:
    """Train and test points: raw (N, 2) in the domain, scaled inputs, labels; on the CPU."""

    raw_train: np.ndarray
    raw_test: np.ndarray
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    classes: int


def _check_data(cfg: object) -> None:
    check_choice("data set", cfg.dataset, DATASETS)
    check_range("number of points", cfg.n_points, 20, 20_000, integer=True)
    check_range("noise (%)", cfg.noise, 0, 50, integer=True)
    check_range("train ratio (%)", cfg.train_ratio, 10, 90, integer=True)
    check_range("seed", cfg.seed, 0, 2**31 - 1, integer=True)


def n_train(cfg: object) -> int:
    """Training points of a config's split."""
    return max(1, min(cfg.n_points - 1, round(cfg.n_points * cfg.train_ratio / 100)))


def make_data(cfg: object) -> Data:
    """The points of cfg's data set, deterministically from its seed, shuffled and split."""
    rng = np.random.default_rng(cfg.seed)
    x, y = DATASETS[cfg.dataset][1](cfg.n_points, cfg.noise / 100.0, rng)
    x = np.clip(x, -DOMAIN, DOMAIN).astype(np.float32)
    order = np.random.default_rng(cfg.seed + 1).permutation(len(x))
    k = n_train(cfg)
    tr, te = order[:k], order[k:]
    xs = torch.tensor(x) / INPUT_SCALE
    yt = torch.tensor(y, dtype=torch.int64)
    return Data(x[tr], x[te], xs[tr], yt[tr], xs[te], yt[te], int(y.max()) + 1)


def _check_net(depth: int, width: int) -> None:
    check_range("hidden layers", depth, 1, MAX_DEPTH, integer=True)
    check_range("width", width, 1, MAX_WIDTH, integer=True)


@dataclass(frozen=True)
class LRConfig:
    """Part 1: the course MLP at several learning rates, batch norm off and on, trained as one batched run."""

    dataset: str = "spiral3"
    n_points: int = 1000
    noise: int = 0
    train_ratio: int = 50
    seed: int = 0  # data, initial weights (the same for every model) and batch order
    depth: int = 6  # hidden ReLU layers: the course's MLP has 6 (7 Linear layers)
    width: int = 32
    lrs: tuple[float, ...] = LRS
    bn: tuple[bool, ...] = (False, True)  # batch norm settings to train: every LR with each
    optimizer: str = "adam"
    epochs: int = 100
    batch_size: int = 32

    def __post_init__(self) -> None:
        _check_data(self)
        _check_net(self.depth, self.width)
        if not isinstance(self.lrs, tuple) or not 1 <= len(self.lrs) <= 8:
            raise ConfigError(f"choose 1 to 8 learning rates, got {self.lrs!r}")
        for lr in self.lrs:
            check_range("learning rate", lr, 1e-6, 10.0)
        if len(set(self.lrs)) != len(self.lrs):
            raise ConfigError("each learning rate may be picked once")
        if not isinstance(self.bn, tuple) or not 1 <= len(self.bn) <= 2 or len(set(self.bn)) != len(self.bn):
            raise ConfigError(f"batch norm must be off, on or both, got {self.bn!r}")
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        check_range("epochs", self.epochs, 1, 1000, integer=True)
        check_range("batch size", self.batch_size, 1, 20_000, integer=True)
        _check_bn_batches(self, (self.batch_size,), any(self.bn))


def _check_bn_batches(cfg: object, sizes: tuple[int, ...], bn: bool) -> None:
    """Batch norm needs two or more examples in every batch (one has no variance: nn.BatchNorm1d refuses it)."""
    if not bn:
        return
    n = n_train(cfg)
    for b in sizes:
        if b == 1 or (n > b and n % b == 1):
            raise ConfigError(f"batch norm needs at least 2 examples in every batch; batch size {b} on {n} "
                              "training points leaves a batch of 1. Turn batch norm off or change the batch size")


@dataclass(frozen=True)
class BatchSizeConfig:
    """Part 2: batch sizes side by side, for the same number of epochs or the same number of optimizer steps."""

    dataset: str = "spiral3"
    n_points: int = 1000
    noise: int = 0
    train_ratio: int = 50
    seed: int = 0
    depth: int = 6
    width: int = 32
    batch_sizes: tuple[int, ...] = BATCH_SIZES
    mode: str = "epochs"  # "epochs": each trains `epochs`; "steps": each takes `steps` optimizer steps
    epochs: int = 20  # batch size 1 on 500 points: 10,000 steps, a background job of ~15 s on a CPU
    steps: int = 1000
    lr: float = 1e-3
    optimizer: str = "adam"
    bn: bool = False
    evals: int = 40  # evaluation points along each run

    def __post_init__(self) -> None:
        _check_data(self)
        _check_net(self.depth, self.width)
        if not isinstance(self.batch_sizes, tuple) or not 1 <= len(self.batch_sizes) <= 6:
            raise ConfigError(f"choose 1 to 6 batch sizes, got {self.batch_sizes!r}")
        for b in self.batch_sizes:
            check_range("batch size", b, 1, 20_000, integer=True)
        if len(set(self.batch_sizes)) != len(self.batch_sizes):
            raise ConfigError("each batch size may be picked once")
        check_choice("mode", self.mode, MODES)
        check_range("epochs", self.epochs, 1, 1000, integer=True)
        check_range("optimizer steps", self.steps, 1, 200_000, integer=True)
        check_range("learning rate", self.lr, 1e-6, 10.0)
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        check_range("evaluation points", self.evals, 2, 200, integer=True)
        _check_bn_batches(self, self.batch_sizes, self.bn)
        total = sum(r["total steps"] for r in steps_table(self))
        if total > 500_000:
            raise ConfigError(f"these settings take {total:,} optimizer steps in all; at most 500,000 are allowed")


def steps_table(cfg: BatchSizeConfig) -> list[dict]:
    """Per batch size: optimizer steps per epoch ceil(n / b), total steps and epochs, in cfg's mode."""
    n = n_train(cfg)
    rows = []
    for b in cfg.batch_sizes:
        per = math.ceil(n / min(b, n))
        total = cfg.epochs * per if cfg.mode == "epochs" else cfg.steps
        rows.append({"batch size": b, "examples per step": min(b, n), "steps per epoch": per,
                     "total steps": total, "epochs": total / per})
    return rows


def grid_shapes(depths: tuple[int, ...] = GRID_DEPTHS, widths: tuple[int, ...] = GRID_WIDTHS,
                width: int = GRID_WIDTH, depth: int = GRID_DEPTH) -> list[tuple[int, int]]:
    """(depth, width) of every grid model: the depth row at `width`, then the width row at `depth`, once each."""
    out: list[tuple[int, int]] = []
    for s in [(d, width) for d in depths] + [(depth, w) for w in widths]:
        if s not in out:
            out.append(s)
    return out


@dataclass(frozen=True)
class GridConfig:
    """Part 3: decision boundaries of a depth row and a width row of MLPs, all trained as one padded run."""

    dataset: str = "spiral3"
    n_points: int = 1000
    noise: int = 0
    train_ratio: int = 50
    seed: int = 0
    depths: tuple[int, ...] = GRID_DEPTHS
    widths: tuple[int, ...] = GRID_WIDTHS
    bn: bool = False
    lr: float = 3e-3
    optimizer: str = "adam"
    epochs: int = 100
    batch_size: int = 32
    region_grid: int = 300  # points per side of the grid on which linear regions are counted
    image_grid: int = 100  # points per side of the class-probability field drawn

    def __post_init__(self) -> None:
        _check_data(self)
        for name, values in (("depths", self.depths), ("widths", self.widths)):
            if not isinstance(values, tuple) or not 1 <= len(values) <= 6:
                raise ConfigError(f"choose 1 to 6 {name}, got {values!r}")
        for d in self.depths:
            check_range("hidden layers", d, 1, MAX_DEPTH, integer=True)
        for w in self.widths:
            check_range("width", w, 1, MAX_WIDTH, integer=True)
        check_range("learning rate", self.lr, 1e-6, 10.0)
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        check_range("epochs", self.epochs, 1, 1000, integer=True)
        check_range("batch size", self.batch_size, 1, 20_000, integer=True)
        check_range("region grid", self.region_grid, 10, 1000, integer=True)
        check_range("image grid", self.image_grid, 10, 400, integer=True)
        _check_bn_batches(self, (self.batch_size,), self.bn)

    @property
    def shapes(self) -> list[tuple[int, int]]:
        """(depth, width) of each model."""
        return grid_shapes(self.depths, self.widths)
