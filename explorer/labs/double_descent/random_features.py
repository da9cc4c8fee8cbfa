"""Random-features regression with the minimum-norm solution: double descent in seconds.

Belkin et al. (2019, "Reconciling modern machine-learning practice and the bias-variance
trade-off") fit one-hot targets with p random features by least squares. Below p = n (training
points) the fit is the usual least-squares solution; above it the system is underdetermined and
the minimum-norm interpolating solution is taken. The test error peaks at p = n, where the
smallest singular value of the feature matrix is near zero and the solution's norm explodes.
Features are drawn once for the largest p and nested (the first p columns), and each fit is one
SVD: a = V diag(s / (s^2 + ridge)) U^T Y, with singular values below the pinv cutoff dropped.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass

import torch

from explorer.core.cache import Cache, ComputeResult, Entry
from explorer.core.config import ConfigError, check_choice, check_range
from explorer.core.device import get_device
from explorer.data import datasets
from explorer.data.noise import noise_seed, noisy_labels
from explorer.labs.double_descent.spec import Point, PointResult, SweepData, SweepSpec

KINDS = ("relu", "fourier")
MAX_FEATURES = 20_000
MAX_TRAIN = 5_000


def _relu_features(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """ReLU random features relu(x W) / sqrt(p), W ~ N(0, 1/d)."""
    return torch.relu(x @ w) / math.sqrt(w.shape[1])


def _fourier_features(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Random Fourier features sqrt(2/p) cos(x W / sigma + b) of a Gaussian kernel (Rahimi & Recht)."""
    return torch.cos(x @ w + b) * math.sqrt(2.0 / w.shape[1])


FEATURES = {"relu": _relu_features, "fourier": _fourier_features}


@dataclass(frozen=True)
class RFConfig:
    """A random-features sweep over the number of features on a subset of a data set."""

    dataset: str = "fashion_mnist"  # an explorer.data.datasets name
    train_size: int = 500  # n, where the peak sits
    test_size: int = 2000
    kind: str = "relu"  # relu | fourier
    features: tuple[int, ...] = (50, 100, 200, 300, 400, 450, 500, 550, 600, 700, 1000, 1500, 2000, 4000)
    noise: float = 0.0  # fraction of train labels replaced by another class
    ridge: float = 0.0  # 0 = minimum-norm least squares
    seed: int = 0  # random features and label noise
    data_seed: int = 0  # which subset

    def __post_init__(self) -> None:
        datasets.check_name("dataset", self.dataset)
        check_range("train_size", self.train_size, 10, MAX_TRAIN, integer=True)
        check_range("test_size", self.test_size, 10, 100_000, integer=True)
        check_choice("kind", self.kind, KINDS)
        if not self.features:
            raise ConfigError("features needs at least one value")
        for p in self.features:
            check_range("features", p, 1, MAX_FEATURES, integer=True)
        check_range("noise", self.noise, 0.0, 0.9)
        check_range("ridge", self.ridge, 0.0, 1e6)
        check_range("seed", self.seed, 0, 2**31 - 1, integer=True)
        check_range("data_seed", self.data_seed, 0, 2**31 - 1, integer=True)


def draw_weights(d: int, p: int, kind: str, seed: int, x_sample: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Feature weights (d, p) and phases (p,), float64; Fourier bandwidth = median pairwise distance."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(d, p, generator=g, dtype=torch.float64)
    b = torch.rand(p, generator=g, dtype=torch.float64) * 2 * math.pi
    if kind == "relu":
        return w / math.sqrt(d), b
    sigma = torch.pdist(x_sample[:500].double()).median().clamp_min(1e-6)
    return w / sigma, b


def min_norm_fit(phi: torch.Tensor, y: torch.Tensor, ridge: float = 0.0) -> torch.Tensor:
    """Least-squares coefficients (p, C) of phi (n, p) -> y (n, C): minimum-norm if ridge = 0."""
    u, s, vh = torch.linalg.svd(phi, full_matrices=False)
    cutoff = s.max() * max(phi.shape) * torch.finfo(phi.dtype).eps  # numpy.linalg.pinv's default rcond
    keep = s > cutoff
    inv = torch.where(keep, s / (s * s + ridge), torch.zeros_like(s))
    return vh.T @ (inv[:, None] * (u.T @ y))


@dataclass(frozen=True)
class RFFit:
    """Metrics of one fit with p features."""

    features: int
    train_mse: float
    test_mse: float
    train_err: float
    test_err: float
    norm: float  # Frobenius norm of the coefficients
    test_mse_noisy: float = float("nan")  # against noisy test labels, when given
    test_err_noisy: float = float("nan")


def fit_curve(x_tr: torch.Tensor, y_tr: torch.Tensor, x_te: torch.Tensor, y_te: torch.Tensor, num_classes: int,
              features: tuple[int, ...], kind: str = "relu", seed: int = 0, ridge: float = 0.0,
              y_te_noisy: torch.Tensor | None = None) -> list[RFFit]:
    """Fit one-hot targets with each number of features (nested draws); float64 throughout."""
    x_tr, x_te = x_tr.reshape(len(x_tr), -1).double(), x_te.reshape(len(x_te), -1).double()
    w, b = draw_weights(x_tr.shape[1], max(features), kind, seed, x_tr)
    w, b = w.to(x_tr.device), b.to(x_tr.device)
    t_tr = torch.nn.functional.one_hot(y_tr, num_classes).double()  # (n, C)
    t_te = torch.nn.functional.one_hot(y_te, num_classes).double()
    out = []
    for p in sorted(features):
        phi_tr = FEATURES[kind](x_tr, w[:, :p], b[:p])  # (n, p)
        phi_te = FEATURES[kind](x_te, w[:, :p], b[:p])
        a = min_norm_fit(phi_tr, t_tr, ridge)  # (p, C)
        z_tr, z_te = phi_tr @ a, phi_te @ a
        vals = torch.stack([((z_tr - t_tr) ** 2).sum(1).mean(), ((z_te - t_te) ** 2).sum(1).mean(),
                            (z_tr.argmax(1) != y_tr).double().mean(), (z_te.argmax(1) != y_te).double().mean(),
                            a.norm()]).tolist()
        if y_te_noisy is not None:
            t_noisy = torch.nn.functional.one_hot(y_te_noisy, num_classes).double()
            vals += torch.stack([((z_te - t_noisy) ** 2).sum(1).mean(),
                                 (z_te.argmax(1) != y_te_noisy).double().mean()]).tolist()
        out.append(RFFit(p, *vals))
    return out


def run(cfg: RFConfig) -> list[RFFit]:
    """The whole curve for a config: load the subsets, add label noise, fit every feature count."""
    tr = datasets.take(datasets.load(cfg.dataset, "train"), cfg.train_size, cfg.data_seed)
    te = datasets.take(datasets.load(cfg.dataset, "test"), cfg.test_size, cfg.data_seed + 1)
    dev = get_device() if get_device().type == "cuda" else torch.device("cpu")  # MPS has no float64
    y_tr = noisy_labels(tr.y, cfg.noise, tr.num_classes, noise_seed(cfg.seed, cfg.noise))
    return fit_curve(tr.to_float().to(dev), y_tr.to(dev), te.to_float().to(dev), te.y.to(dev), tr.num_classes,
                     cfg.features, cfg.kind, cfg.seed, cfg.ridge)


def sweep_point(spec: SweepSpec, point: Point, data: SweepData) -> PointResult:
    """One random-features point of a sweep (families rf_relu / rf_fourier)."""
    start = time.perf_counter()
    kind = spec.family.removeprefix("rf_")
    dev = data.x_train.device if data.x_train.device.type == "cuda" else torch.device("cpu")
    c = data.num_classes
    y_tr = noisy_labels(data.y_train, point.noise, c, noise_seed(point.seed, point.noise)).to(dev)
    y_te_noisy = noisy_labels(data.y_test, point.noise, c, noise_seed(point.seed, point.noise, 1)).to(dev)
    x_tr, x_te, y_te = data.x_train.to(dev), data.x_test.to(dev), data.y_test.to(dev)
    [fit] = fit_curve(x_tr, y_tr, x_te, y_te, c, (point.width,), kind, point.seed, spec.ridge, y_te_noisy.to(dev))
    metrics = {"train_err": [fit.train_err], "train_loss": [fit.train_mse], "test_err": [fit.test_err],
               "test_loss": [fit.test_mse], "test_err_noisy": [fit.test_err_noisy],
               "test_loss_noisy": [fit.test_mse_noisy]}
    params = point.width * c
    return PointResult(point, [1], metrics, params, time.perf_counter() - start, None, {})


RF_KIND = "dd_rf"
AROUND = (0.1, 0.2, 0.4, 0.6, 0.8, 0.9, 0.95, 1.0, 1.05, 1.1, 1.25, 1.5, 2.0, 3.0, 4.0, 6.0)


def features_around(n: int) -> tuple[int, ...]:
    """A grid of feature counts from n/10 to 6n, dense near p = n, always containing n."""
    return tuple(sorted({max(1, min(MAX_FEATURES, round(n * r))) for r in AROUND}))


def cached_run(cfg: RFConfig, cache: Cache) -> tuple[list[RFFit], Entry]:
    """`run(cfg)` through the cache: the fits and the entry that records how they were computed."""
    def compute() -> ComputeResult:
        fits = run(cfg)
        return ComputeResult({"fits": [dataclasses.asdict(f) for f in fits]})

    entry = cache.get_or_compute(RF_KIND, cfg, compute)
    return [RFFit(**f) for f in entry.metrics["fits"]], entry
