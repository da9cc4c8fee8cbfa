"""Random-features regression with the minimum-norm solution: double descent in seconds.

Belkin et al. (2019, "Reconciling modern machine-learning practice and the bias-variance
trade-off") fit one-hot targets with p random features by least squares. Below p = n (training
points) the fit is the usual least-squares solution; above it the system is underdetermined and
the minimum-norm interpolating solution is taken. The test error peaks at p = n, where the
smallest singular value of the feature matrix is near zero and the solution's norm explodes.

Features are nested, so a curve over p is one realisation, as in Belkin et al.: feature j is drawn from a
generator seeded by (seed, j // BLOCK) alone, and computed in blocks of BLOCK with the same shapes whatever
the largest p, so the fit with p features is the same number whichever other counts are computed with it
(a point's cache key names only its own p). Each count's features are the first p columns of one matrix
computed once; each fit is one SVD, a = V diag(s / (s^2 + ridge)) U^T Y with singular values below the pinv
cutoff dropped, and that one SVD serves every label-noise level of the seed.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from typing import Sequence

import torch

from explorer.core.cache import Cache, ComputeResult, Entry, to_plain
from explorer.core.config import ConfigError, check_choice, check_range
from explorer.core.report import SILENT, Reporter, part
from explorer.core.device import get_device
from explorer.data import datasets
from explorer.data.noise import noise_seed, noisy_labels
from explorer.labs.double_descent.spec import Point, PointResult, SweepData, SweepSpec

KINDS = ("relu", "fourier")
MAX_FEATURES = 20_000
MAX_TRAIN = 5_000
BLOCK = 256  # features drawn (one generator each) and computed per block
RF_ENGINE_VERSION = 2  # v1: a fresh draw and SVD per point; v2: nested features seeded per block, one SVD per count


def bandwidth_sigma(x_tr: torch.Tensor, bandwidth: str | float) -> float:
    """The Fourier bandwidth sigma: a number as given, or "median", the median pairwise distance of the first
    500 training inputs."""
    if bandwidth == "median":
        return float(torch.pdist(x_tr[:500].reshape(min(len(x_tr), 500), -1).double()).median().clamp_min(1e-6))
    return float(bandwidth)


class NestedFeatures:
    """Random features of one (kind, seed, sigma): relu(x W / sqrt(d)) / sqrt(p), W ~ N(0, 1), or
    sqrt(2 / p) cos(x W / sigma + b), b ~ U(0, 2 pi) (Rahimi & Recht's Gaussian kernel of bandwidth sigma).
    `raw` gives them without the 1 / sqrt(p) factor, which `scale(p)` holds."""

    def __init__(self, d: int, kind: str, seed: int, sigma: float, device: torch.device) -> None:
        self.d, self.kind, self.seed, self.sigma, self.device = d, kind, seed, sigma, device
        self._blocks: list[tuple[torch.Tensor, torch.Tensor]] = []

    def _block(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Block k's weights (d, BLOCK) and phases (BLOCK,), float64, drawn from its own generator."""
        while len(self._blocks) <= k:
            j = len(self._blocks)
            g = torch.Generator().manual_seed((self.seed * 1_000_003 + j * 7_919 + 17) % (2**63 - 1))
            w = torch.randn(BLOCK, self.d, generator=g, dtype=torch.float64)
            b = torch.rand(BLOCK, generator=g, dtype=torch.float64) * (2 * math.pi)
            w = w / math.sqrt(self.d) if self.kind == "relu" else w / self.sigma
            self._blocks.append((w.T.contiguous().to(self.device), b.to(self.device)))
        return self._blocks[k]

    def block(self, x: torch.Tensor, k: int) -> torch.Tensor:
        """Features k * BLOCK ... (k + 1) * BLOCK - 1 of x (N, d) float64, unscaled: (N, BLOCK)."""
        w, b = self._block(k)
        z = x @ w
        return torch.relu(z) if self.kind == "relu" else torch.cos(z + b)

    def raw(self, x: torch.Tensor, p: int) -> torch.Tensor:
        """The first p features of x (N, d), unscaled: (N, p), computed block by block."""
        return torch.cat([self.block(x, k) for k in range(math.ceil(p / BLOCK))], 1)[:, :p]

    def scale(self, p: int) -> float:
        """The factor of p features: 1 / sqrt(p) (ReLU) or sqrt(2 / p) (Fourier)."""
        return math.sqrt((1.0 if self.kind == "relu" else 2.0) / p)


def min_norm_fit(phi: torch.Tensor, y: torch.Tensor, ridge: float = 0.0) -> torch.Tensor:
    """Least-squares coefficients (p, C) of phi (n, p) -> y (n, C): minimum-norm if ridge = 0."""
    return _solve(torch.linalg.svd(phi, full_matrices=False), phi.shape, [y], ridge)[0]


def _solve(svd: tuple[torch.Tensor, torch.Tensor, torch.Tensor], shape: Sequence[int], ys: list[torch.Tensor],
           ridge: float) -> list[torch.Tensor]:
    """One SVD's coefficients for each target matrix (n, C); singular values under numpy.linalg.pinv's default
    cutoff (s_max * max(n, p) * eps) are dropped."""
    u, s, vh = svd
    cutoff = s.max() * max(shape) * torch.finfo(s.dtype).eps
    inv = torch.where(s > cutoff, s / (s * s + ridge), torch.zeros_like(s))
    return [vh.T @ (inv[:, None] * (u.T @ y)) for y in ys]


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


def fit_nested(x_tr: torch.Tensor, y_trs: Sequence[torch.Tensor], x_te: torch.Tensor, y_te: torch.Tensor,
               num_classes: int, features: Sequence[int], kind: str = "relu", seed: int = 0, ridge: float = 0.0,
               y_te_noisy: Sequence[torch.Tensor | None] | None = None, bandwidth: str | float = "median",
               report: Reporter = SILENT) -> list[list[RFFit]]:
    """For each train label set y_trs[l] (its noisy test labels y_te_noisy[l], if given), the fit with each
    number of features, ascending: fits[l][i]. One feature matrix for the largest count, nested; one SVD per
    count for all label sets; float64 throughout. `report` gets a checkpoint before each SVD and the fraction
    of counts fitted after it."""
    x_tr, x_te = x_tr.reshape(len(x_tr), -1).double(), x_te.reshape(len(x_te), -1).double()
    counts = sorted(set(features))
    feats = NestedFeatures(x_tr.shape[1], kind, seed, bandwidth_sigma(x_tr, bandwidth) if kind == "fourier" else 1.0,
                           x_tr.device)
    def onehot(y: torch.Tensor) -> torch.Tensor:
        """Labels (N,) as one-hot float64 targets (N, C)."""
        return torch.nn.functional.one_hot(y, num_classes).double()

    t_trs = [onehot(y) for y in y_trs]  # (n, C) each
    raw_tr = feats.raw(x_tr, counts[-1])  # (n, P)
    coefs: list[list[torch.Tensor]] = []  # [count][label set]: coefficients times the scale, for the raw features
    train: list[list[list[float]]] = []
    for done, p in enumerate(counts):
        report.checkpoint()
        phi = raw_tr[:, :p] * feats.scale(p)  # (n, p)
        per_set = _solve(torch.linalg.svd(phi, full_matrices=False), phi.shape, t_trs, ridge)  # (p, C) each
        rows = []
        for a, t, y in zip(per_set, t_trs, y_trs):
            z = phi @ a
            rows.append(torch.stack([((z - t) ** 2).sum(1).mean(), (z.argmax(1) != y).double().mean(),
                                     a.norm()]).tolist())
        train.append(rows)
        coefs.append([a * feats.scale(p) for a in per_set])
        report.publish(progress=(done + 1) / len(counts))
    # Test predictions block by block: each block's features once, for every count and label set.
    z_te = [[torch.zeros(len(x_te), num_classes, dtype=torch.float64, device=x_te.device) for _ in y_trs]
            for _ in counts]
    for k in range(math.ceil(counts[-1] / BLOCK)):
        block = feats.block(x_te, k)  # (m, BLOCK)
        for i, p in enumerate(counts):
            cols = min(p - k * BLOCK, BLOCK)
            if cols <= 0:
                continue
            for l, a in enumerate(coefs[i]):
                z_te[i][l] += block[:, :cols] @ a[k * BLOCK:k * BLOCK + cols]
    t_te = onehot(y_te)
    noisy = list(y_te_noisy) if y_te_noisy is not None else [None] * len(y_trs)
    fits: list[list[RFFit]] = [[] for _ in y_trs]
    for i, p in enumerate(counts):
        for l, y_n in enumerate(noisy):
            z = z_te[i][l]
            vals = torch.stack([((z - t_te) ** 2).sum(1).mean(), (z.argmax(1) != y_te).double().mean()]).tolist()
            extra = {}
            if y_n is not None:
                mse, err = torch.stack([((z - onehot(y_n)) ** 2).sum(1).mean(),
                                        (z.argmax(1) != y_n).double().mean()]).tolist()
                extra = {"test_mse_noisy": mse, "test_err_noisy": err}
            tr_mse, tr_err, norm = train[i][l]
            fits[l].append(RFFit(p, tr_mse, vals[0], tr_err, vals[1], norm, **extra))
    return fits


def fit_curve(x_tr: torch.Tensor, y_tr: torch.Tensor, x_te: torch.Tensor, y_te: torch.Tensor, num_classes: int,
              features: tuple[int, ...], kind: str = "relu", seed: int = 0, ridge: float = 0.0,
              y_te_noisy: torch.Tensor | None = None, bandwidth: str | float = "median") -> list[RFFit]:
    """Fit one-hot targets with each number of features (nested, ascending); float64 throughout."""
    return fit_nested(x_tr, [y_tr], x_te, y_te, num_classes, features, kind, seed, ridge, [y_te_noisy],
                      bandwidth)[0]


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
    bandwidth: str | float = "median"  # fourier: sigma, or "median" pairwise distance (Belkin et al. use 5)

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
        if self.bandwidth != "median":
            if isinstance(self.bandwidth, bool) or not isinstance(self.bandwidth, (int, float)):
                raise ConfigError(f"bandwidth must be a number (sigma) or \"median\", got {self.bandwidth!r}")
            check_range("bandwidth", self.bandwidth, 1e-3, 1e6)


def run(cfg: RFConfig) -> list[RFFit]:
    """The whole curve for a config: load the subsets, add label noise, fit every feature count."""
    tr = datasets.take(datasets.load(cfg.dataset, "train"), cfg.train_size, cfg.data_seed)
    te = datasets.take(datasets.load(cfg.dataset, "test"), cfg.test_size, cfg.data_seed + 1)
    dev = get_device() if get_device().type == "cuda" else torch.device("cpu")  # MPS has no float64
    y_tr = noisy_labels(tr.y, cfg.noise, tr.num_classes, noise_seed(cfg.seed, cfg.noise))
    return fit_curve(tr.to_float().to(dev), y_tr.to(dev), te.to_float().to(dev), te.y.to(dev), tr.num_classes,
                     cfg.features, cfg.kind, cfg.seed, cfg.ridge, bandwidth=cfg.bandwidth)


def sweep_points(spec: SweepSpec, points: list[Point], data: SweepData, *,
                 report: Reporter = SILENT) -> list[PointResult]:
    """Random-features points of a sweep (families rf_relu / rf_fourier): per seed, one nested feature matrix
    and one SVD per width serve every noise level; each point's wall time is its share of its seed's.
    `report` gets a checkpoint before each SVD and the fraction of them done."""
    kind = spec.family.removeprefix("rf_")
    dev = data.x_train.device if data.x_train.device.type == "cuda" else torch.device("cpu")  # MPS: no float64
    c = data.num_classes
    x_tr, x_te, y_te = data.x_train.to(dev), data.x_test.to(dev), data.y_test.to(dev)
    out: dict[Point, PointResult] = {}
    seeds = sorted({p.seed for p in points})
    for i, seed in enumerate(seeds):
        start = time.perf_counter()
        mine = [p for p in points if p.seed == seed]
        noises, widths = sorted({p.noise for p in mine}), sorted({p.width for p in mine})
        y_trs = [noisy_labels(data.y_train, q, c, noise_seed(seed, q), spec.noise_scheme).to(dev) for q in noises]
        y_te_noisy = [noisy_labels(data.y_test, q, c, noise_seed(seed, q, 1), spec.noise_scheme).to(dev)
                      for q in noises]
        fits = fit_nested(x_tr, y_trs, x_te, y_te, c, widths, kind, seed, spec.ridge, y_te_noisy, spec.bandwidth,
                          part(report, i / len(seeds), (i + 1) / len(seeds)))
        wall = (time.perf_counter() - start) / (len(noises) * len(widths))
        for p in mine:
            fit = fits[noises.index(p.noise)][widths.index(p.width)]
            metrics = {"train_err": [fit.train_err], "train_loss": [fit.train_mse], "test_err": [fit.test_err],
                       "test_loss": [fit.test_mse], "test_err_noisy": [fit.test_err_noisy],
                       "test_loss_noisy": [fit.test_mse_noisy]}
            out[p] = PointResult(p, [1], metrics, p.width * c, wall, None, {}, c)
    return [out[p] for p in points]


RF_KIND = "dd_rf"
AROUND = (0.1, 0.2, 0.4, 0.6, 0.8, 0.9, 0.95, 1.0, 1.05, 1.1, 1.25, 1.5, 2.0, 3.0, 4.0, 6.0)


def features_around(n: int) -> tuple[int, ...]:
    """A grid of feature counts from n/10 to 6n, dense near p = n, always containing n."""
    return tuple(sorted({max(1, min(MAX_FEATURES, round(n * r))) for r in AROUND}))


def cache_config(cfg: RFConfig) -> dict:
    """The cache config of a curve: its fields (bandwidth only when set away from "median") and the engine."""
    plain = {k: v for k, v in to_plain(cfg).items() if not (k == "bandwidth" and v == "median")}
    return {**plain, "engine_version": RF_ENGINE_VERSION}


def cached_run(cfg: RFConfig, cache: Cache) -> tuple[list[RFFit], Entry]:
    """`run(cfg)` through the cache: the fits and the entry that records how they were computed."""
    def compute() -> ComputeResult:
        fits = run(cfg)
        return ComputeResult({"fits": [dataclasses.asdict(f) for f in fits]},
                             meta={"engine_version": RF_ENGINE_VERSION})

    entry = cache.get_or_compute(RF_KIND, cache_config(cfg), compute)
    return [RFFit(**f) for f in entry.metrics["fits"]], entry
