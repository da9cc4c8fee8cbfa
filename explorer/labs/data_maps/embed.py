"""2D maps of a data set: t-SNE (fast FFT pipeline), UMAP and PCA, cached by their settings.

The t-SNE pipeline is where the speed comes from, not a different gradient: PCA to 50 dimensions
on the device, exact neighbours on those 50 dimensions (faster than approximate trees at this
size), PCA initialisation, the usual early exaggeration, then openTSNE's FFT gradients (Barnes-Hut
below FFT_FROM points) for at most `n_iter` iterations that stop early once the standardised
embedding no longer moves.
What is embedded is the map's *embedding space*: raw pixels (a RAW_SPACES key) or the representations (the
penultimate-layer activations) of a cached trained model (`space="model:<kind>:<cache key>"`,
explorer.labs.data_maps.representations); the model's key is part of the map's.
Progress and intermediate embeddings (the snapshots) go to a Reporter, so a page can show the map forming.
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from explorer.core.cache import Cache, ComputeResult, Entry
from explorer.core.config import ConfigError, check_choice, check_range
from explorer.core.device import get_device
from explorer.core.report import SILENT, Reporter
from explorer.core.seeding import seeded
from explorer.data import datasets as D
from explorer.labs.data_maps import representations as R

MAX_POINTS = 20_000  # server-side cap on the number of points embedded
PCA_DIMS = 50  # dimensions kept before neighbour search (t-SNE, UMAP)
EARLY_EXAGGERATION = 12.0
EARLY_ITERS = 125  # iterations of early exaggeration (momentum 0.5)
CHUNK_ITERS = 25  # iterations between progress reports and convergence checks
CONVERGED_RMS = 0.01  # stop when the standardised embedding moves less than this per chunk
FFT_FROM = 5000  # points from which FFT gradients beat Barnes-Hut (below, its grid costs more than it saves)
THREADS = 2  # openTSNE threads for large maps; small ones run faster on one (no barrier waits)
TRUST_SAMPLE = 1000  # points used to score trustworthiness of a finished map
TRUST_NEIGHBOURS = 10
CACHE_KIND = "map"
MAP_VERSION = 1  # bump when any map computation changes; older cached maps then miss
METHOD_SETTINGS = ("perplexity", "n_iter", "n_neighbors", "min_dist")


@dataclasses.dataclass(frozen=True)
class MapConfig:
    """One 2D map: which data, which points, which method, and the method's settings."""

    dataset: str = "fashion_mnist"  # a datasets.NAMES key or folder:<path>
    split: str = "test"
    method: str = "tsne"  # tsne | umap | pca
    space: str = "pixels"  # embedding space: a RAW_SPACES key, or model:<kind>:<cache key> (its representations)
    n_points: int = 2000  # points embedded (a seeded subset; all if the split is smaller)
    seed: int = 0  # picks the subset and seeds the method
    perplexity: float = 30.0  # t-SNE: effective number of neighbours
    n_iter: int = 500  # t-SNE: most iterations after early exaggeration
    n_neighbors: int = 15  # UMAP: size of the local neighbourhood
    min_dist: float = 0.1  # UMAP: how tightly points may pack

    def __post_init__(self) -> None:
        D.check_name("dataset", self.dataset)
        check_choice("split", self.split, D.SPLITS)
        check_choice("method", self.method, METHODS)
        if R.is_model_ref(self.space):
            R.parse_ref(self.space)  # well formed; whether the model exists and fits is checked on use
        else:
            check_choice("embedding space", self.space, [*RAW_SPACES, "model:<kind>:<cache key>"])
        check_range("n_points", self.n_points, 50, MAX_POINTS, integer=True)
        check_range("seed", self.seed, 0, 2**31 - 1, integer=True)
        check_range("perplexity", self.perplexity, 2, 100)
        check_range("n_iter", self.n_iter, 50, 2000, integer=True)
        check_range("n_neighbors", self.n_neighbors, 2, 200, integer=True)
        check_range("min_dist", self.min_dist, 0.0, 1.0)
        if self.method == "tsne" and 3 * self.perplexity >= self.n_points:
            raise ConfigError(f"perplexity {self.perplexity:g} needs more than {3 * self.perplexity:.0f} "
                              f"points; got n_points={self.n_points}")
        if self.method == "umap" and self.n_neighbors >= self.n_points:
            raise ConfigError(f"n_neighbors ({self.n_neighbors}) must be below n_points ({self.n_points})")

    def canonical(self) -> MapConfig:
        """The same map with the other methods' settings at their defaults (one cache entry per map)."""
        used = {"tsne": ("perplexity", "n_iter"), "umap": ("n_neighbors", "min_dist"), "pca": ()}[self.method]
        defaults = {f.name: f.default for f in dataclasses.fields(self)
                    if f.name in METHOD_SETTINGS and f.name not in used}
        return dataclasses.replace(self, **defaults)


@dataclasses.dataclass(frozen=True)
class MapResult:
    """A finished map: coordinates, which examples they are, labels, and quality figures."""

    config: MapConfig
    coords: np.ndarray  # (n, 2) float32
    index: np.ndarray  # (n,) int64 positions in the split
    labels: np.ndarray  # (n,) int64
    classes: tuple[str, ...]
    metrics: dict[str, Any]
    entry: Entry | None = None  # the cache entry (provenance), None when not cached


def _pixels(ds: D.ArrayDataset, index: torch.Tensor) -> torch.Tensor:
    """Raw inputs, flattened: (n, C*H*W) or (n, L), float32."""
    return D.ArrayDataset(ds.name, ds.x[index], ds.y[index], ds.classes).to_float().reshape(len(index), -1)


RAW_SPACES: dict[str, Callable[[D.ArrayDataset, torch.Tensor], torch.Tensor]] = {"pixels": _pixels}


def register_space(name: str, fn: Callable[[D.ArrayDataset, torch.Tensor], torch.Tensor]) -> None:
    """Make another embedding space computed from the inputs alone available to maps (as "pixels" is)."""
    RAW_SPACES[name] = fn


def space_vectors(cfg: MapConfig, ds: D.ArrayDataset, index: torch.Tensor, cache: Cache) -> torch.Tensor:
    """The examples `index` in the map's embedding space: (n, d) float32; a model refused raises ModelSpaceError."""
    if R.is_model_ref(cfg.space):
        return R.representations(cfg.space, ds, index, cache)
    return RAW_SPACES[cfg.space](ds, index)


def point_index(n_total: int, n_points: int, seed: int) -> torch.Tensor:
    """The seeded subset of positions a map embeds, in ascending order."""
    if n_points >= n_total:
        return torch.arange(n_total)
    g = torch.Generator().manual_seed(seed)
    return torch.sort(torch.randperm(n_total, generator=g)[:n_points]).values


def pca(x: torch.Tensor, dims: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Project (n, d) onto its top `dims` principal axes; also each axis's explained variance ratio."""
    dims = min(dims, *x.shape)
    xc = (x - x.mean(0)).to(get_device())
    total = xc.pow(2).sum()
    with seeded(seed):
        _, s, v = torch.pca_lowrank(xc, q=dims, center=False, niter=4)
    z = xc @ v[:, :dims]  # (n, dims)
    signs = torch.sign(z[z.abs().argmax(0), torch.arange(dims, device=z.device)])  # fixed signs
    z = z * torch.where(signs == 0, torch.ones_like(signs), signs)
    ratio = (s[:dims] ** 2) / total
    return z.float().cpu().numpy(), ratio.cpu().numpy()


def _tell(report: Reporter, fraction: float, message: str, coords: np.ndarray | None = None) -> None:
    """Checkpoint (a cancelled job stops between chunks of work), then publish; coords: the (n, 2) map so far."""
    report.checkpoint()
    report.publish(coords, progress=fraction, message=message)


class _Clock:
    """Turns fractions done into 'about N s left' messages."""

    def __init__(self) -> None:
        self.start = time.perf_counter()

    def eta(self, fraction: float) -> str:
        """A message with elapsed time and a linear ETA."""
        elapsed = time.perf_counter() - self.start
        if fraction <= 0.02:
            return f"{elapsed:.0f} s elapsed"
        return f"{elapsed:.0f} s elapsed, about {elapsed * (1 - fraction) / fraction:.0f} s left"


def tsne(z: np.ndarray, cfg: MapConfig, report: Reporter = SILENT) -> tuple[np.ndarray, dict[str, Any]]:
    """The fast t-SNE pipeline on PCA-reduced inputs z (n, d): returns (n, 2) and run figures."""
    from openTSNE import TSNEEmbedding, affinity, initialization

    clock = _Clock()
    total = EARLY_ITERS + cfg.n_iter
    _tell(report, 0.05, "finding neighbours")
    small = len(z) < FFT_FROM
    jobs = 1 if small else THREADS
    aff = affinity.PerplexityBasedNN(z, perplexity=cfg.perplexity, method="exact", n_jobs=jobs,
                                     random_state=cfg.seed, verbose=False)
    init = initialization.pca(z, random_state=cfg.seed)
    emb = TSNEEmbedding(init, aff, negative_gradient_method="bh" if small else "fft", n_jobs=jobs,
                        random_state=cfg.seed)
    state: dict[str, Any] = {"done": 0, "previous": None, "kl": float("nan"), "converged": False}

    def standardised(y: np.ndarray) -> np.ndarray:
        """Centre and scale to unit RMS, so growth alone does not count as movement."""
        y = y - y.mean(0)
        return y / max(float(np.sqrt((y**2).sum(1).mean())), 1e-12)

    def callback(offset: int, check: bool) -> Callable[[int, float, Any], bool]:
        def on_chunk(iteration: int, error: float, embedding: Any) -> bool:
            y = np.asarray(embedding, dtype=np.float32).copy()
            state["done"], state["kl"] = offset + iteration, float(error)
            fraction = 0.1 + 0.9 * state["done"] / total
            stop = False
            if check:
                now = standardised(y)
                if state["previous"] is not None:
                    stop = float(np.sqrt(((now - state["previous"]) ** 2).sum(1).mean())) < CONVERGED_RMS
                state["previous"] = now
            state["converged"] = stop
            _tell(report, fraction, f"iteration {state['done']}/{total}, KL {error:.3f}; {clock.eta(fraction)}", y)
            return stop

        return on_chunk

    emb = emb.optimize(EARLY_ITERS, exaggeration=EARLY_EXAGGERATION, momentum=0.5,
                       callbacks=callback(0, False), callbacks_every_iters=CHUNK_ITERS)
    emb = emb.optimize(cfg.n_iter, momentum=0.8, callbacks=callback(EARLY_ITERS, True),
                       callbacks_every_iters=CHUNK_ITERS)
    figures = {"iterations": state["done"], "kl_divergence": state["kl"], "converged": state["converged"]}
    return np.asarray(emb, dtype=np.float32), figures


class _EpochReports:
    """A file for umap-learn's tqdm bar: each refresh ("done/total") becomes a report with an ETA.

    umap-learn has no callback and keeps its embedding local while it optimises, so there are no
    honest intermediate maps to show (its `n_epochs` list returns them only after the fit); its
    progress bar is the one live signal. A report that raises (a cancelled job) stops the fit.
    """

    def __init__(self, report: Reporter) -> None:
        self.report, self.clock = report, None  # the clock starts at epoch 0, after the neighbour graph

    def write(self, text: str) -> None:
        """Parse 'done/total' and report it."""
        m = re.search(r"(\d+)/(\d+)", text)
        if m is None or int(m.group(2)) == 0:
            return
        done, total = int(m.group(1)), int(m.group(2))
        self.clock = self.clock or _Clock()
        _tell(self.report, 0.3 + 0.7 * done / total,
              f"epoch {done}/{total} (UMAP shows no intermediate maps); {self.clock.eta(done / total)}")

    def flush(self) -> None:
        """Nothing is buffered."""


def umap(z: np.ndarray, cfg: MapConfig, report: Reporter = SILENT) -> tuple[np.ndarray, dict[str, Any]]:
    """UMAP (umap-learn) on PCA-reduced inputs; seeded, so deterministic (and single-threaded)."""
    import umap as umap_learn

    _tell(report, 0.1, "building the neighbour graph (the first UMAP also compiles its kernels)")
    bar = {"file": _EpochReports(report), "disable": False, "bar_format": "{n}/{total}", "mininterval": 0.25}
    reducer = umap_learn.UMAP(n_neighbors=cfg.n_neighbors, min_dist=cfg.min_dist, random_state=cfg.seed,
                              tqdm_kwds=bar)
    coords = reducer.fit_transform(z).astype(np.float32)
    return coords, {"n_epochs": int(reducer.n_epochs) if reducer.n_epochs else None}


METHODS: dict[str, str] = {"tsne": "t-SNE", "umap": "UMAP", "pca": "PCA"}


def _cache_key(cfg: MapConfig, n_total: int) -> dict[str, Any]:
    """What identifies a map in the cache: its canonical settings and the size of its split."""
    return {"map": dataclasses.asdict(cfg.canonical()), "n_total": n_total, "version": MAP_VERSION}


def compute_map(cfg: MapConfig, cache: Cache, report: Reporter = SILENT, *, use_cache: bool = True) -> MapResult:
    """The map for `cfg`, from `cache` when it was computed before (`use_cache=False`: computed, not stored);
    publishes progress and the map as it forms; raises DatasetUnavailable."""
    ds = D.load(cfg.dataset, cfg.split)
    index = point_index(len(ds), cfg.n_points, cfg.seed)
    key = _cache_key(cfg, len(ds))

    def compute() -> ComputeResult:
        if R.is_model_ref(cfg.space):
            _tell(report, 0.01, "computing the model's representations")
        x = space_vectors(cfg, ds, index, cache)  # (n, d)
        _tell(report, 0.02, f"PCA of {x.shape[0]:,} x {x.shape[1]:,} inputs")
        z, ratio = pca(x, 2 if cfg.method == "pca" else PCA_DIMS, cfg.seed)
        metrics: dict[str, Any] = {"explained_variance": ratio.tolist(), "n_points": len(index)}
        if cfg.method == "pca":
            coords = z[:, :2]
        else:
            coords, figures = {"tsne": tsne, "umap": umap}[cfg.method](z, cfg, report)
            metrics.update(figures)
        metrics["trustworthiness"] = trust(x.numpy(), coords, cfg.seed)
        return ComputeResult(metrics=metrics, tensors={"coords": torch.from_numpy(np.ascontiguousarray(coords)),
                                                        "index": index})

    if use_cache:
        entry = cache.get_or_compute(CACHE_KIND, key, compute)
        t, metrics = entry.tensors(), entry.metrics
        coords = t["coords"].numpy()
    else:
        entry, result = None, compute()
        coords, metrics = result.tensors["coords"].numpy(), result.metrics
    _tell(report, 1.0, "finished", coords)
    return MapResult(cfg, coords, index.numpy(), ds.y[index].numpy(), ds.classes, metrics, entry)


def cached_map(cfg: MapConfig, cache: Cache) -> MapResult | None:
    """The map for `cfg` if it is already in the cache, without computing anything."""
    try:
        ds = D.load(cfg.dataset, cfg.split)
    except D.DatasetUnavailable:
        return None
    key = _cache_key(cfg, len(ds))
    entry = cache.get(CACHE_KIND, key)
    if entry is None:
        return None
    t = entry.tensors()
    index = t["index"]
    return MapResult(cfg, t["coords"].numpy(), index.numpy(), ds.y[index].numpy(), ds.classes,
                     entry.metrics, entry)


def trust(x: np.ndarray, coords: np.ndarray, seed: int, sample: int = TRUST_SAMPLE) -> float:
    """sklearn's trustworthiness (10 neighbours) of the map on a seeded sample of its points."""
    from sklearn.manifold import trustworthiness

    n = len(x)
    idx = np.random.default_rng(seed).choice(n, min(n, sample), replace=False)
    k = min(TRUST_NEIGHBOURS, len(idx) // 2 - 1)
    return float(trustworthiness(x[idx], coords[idx], n_neighbors=k))


def coords_csv(result: MapResult) -> str:
    """The map as CSV: index in the split, class id, class name, x, y."""
    rows = ["index,label,class,x,y"]
    for i, lab, (cx, cy) in zip(result.index, result.labels, result.coords):
        name = result.classes[lab].replace('"', '""')
        rows.append(f'{i},{lab},"{name}",{cx:.6g},{cy:.6g}')
    return "\n".join(rows) + "\n"


def map_job(cfg: MapConfig, cache: Cache) -> Callable[[Reporter], MapResult]:
    """A job function (explorer.core.jobs) computing the map and publishing each intermediate embedding."""

    def run(ctx: Reporter) -> MapResult:
        return compute_map(cfg, cache, ctx)

    return run
