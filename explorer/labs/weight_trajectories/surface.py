"""The trajectory over the loss surface (Li et al. 2018, fig. 9): one run's path in the plane of its own PCs.

For run 0's every-epoch snapshots theta_0..theta_E: PCA of (theta_i - theta_E) gives unit directions d1, d2; the
path is drawn at a_i = (theta_i - theta_E).d1, b_i = (theta_i - theta_E).d2 (the end at the origin) over the training
loss at theta_E + a d1 + b d2 on a grid that covers the path. Grid points are evaluated as K stacked copies of the
network (explorer.nets.small.stacked_forward), a chunk of points at a time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

from explorer.core.cache import Cache, ComputeResult, Entry
from explorer.core.config import check_range
from explorer.core.device import get_device
from explorer.core.jobs import JobContext
from explorer.core.report import SILENT, Reporter, part
from explorer.labs.weight_trajectories import paths
from explorer.nets.small import NetConfig, flat_views, stacked_forward
from explorer.train.evaluate import evaluate

KIND = "weight-trajectories-surface"
POINTS_PER_CHUNK = 32  # grid points evaluated as one stacked forward


@dataclass(frozen=True)
class SurfaceConfig:
    """The loss surface around run 0's path of a trajectory run."""

    run: paths.TrajConfig | paths.ToyConfig = paths.TrajConfig()
    grid: int = 21  # points per axis
    margin: float = 0.3  # the grid reaches this fraction beyond the path's extent on each side
    n_eval: int = 500  # training examples the surface's loss is measured on (the first of the run's subset)

    def __post_init__(self) -> None:
        check_range("grid points per axis", self.grid, 5, 61, integer=True)
        check_range("margin", self.margin, 0.05, 2.0)
        check_range("examples for the surface", self.n_eval, 50, 10_000, integer=True)


def directions(path: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Unit directions (2, P) from the PCA of the path's offsets from its end, the path's (a, b) and the ratios."""
    diffs = (path[:-1] - path[-1]).double()
    fit = paths.pca(diffs)
    d = fit["components"]
    coords = torch.cat([diffs, torch.zeros_like(diffs[:1])]) @ d.T  # the end is the origin
    return d, coords, fit["explained"]


def loss_grid(net: NetConfig, shapes: list, center: torch.Tensor,
              d: torch.Tensor, a: torch.Tensor, b: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
              report: Reporter = SILENT) -> torch.Tensor:
    """Mean training loss (len(b), len(a)) at center + a_i d1 + b_j d2."""
    aa, bb = torch.meshgrid(a, b, indexing="xy")  # (len(b), len(a))
    pts = torch.stack([aa.flatten(), bb.flatten()], 1).to(center.dtype)  # (G, 2)
    out = torch.empty(len(pts), dtype=torch.float64)
    d = d.to(center.dtype)
    for start in range(0, len(pts), POINTS_PER_CHUNK):
        report.checkpoint()
        chunk = pts[start:start + POINTS_PER_CHUNK].to(center.device)
        flat = center + chunk @ d.to(center.device)  # (g, P)
        params = flat_views(flat, {n: torch.Size(s) for n, s in shapes})
        [(loss, _)] = evaluate(lambda xb: stacked_forward(net, params, xb), x, [y], 2048)
        out[start:start + len(chunk)] = loss.double().cpu()
        report.publish(progress=min(1.0, (start + len(chunk)) / len(pts)),
                       message=f"loss surface: {start + len(chunk)}/{len(pts)} grid points")
    return out.view(len(b), len(a))


def compute(cfg: SurfaceConfig, cache: Cache, report: Reporter = SILENT, device: torch.device | None = None
            ) -> dict[str, Any]:
    """The surface for cfg: the trajectory run from the cache (trained first if needed), then the grid."""
    train_part = part(report, 0.0, 0.4, prefix="training: ")
    entry = paths.run(cfg.run, cache, train_part)
    m = entry.metrics
    path = entry.tensors()["path0"].double()
    d, coords, ratio = directions(path)
    span = [(float(c.min()), float(c.max())) for c in coords.T]
    axes = []
    for lo, hi in span:
        pad = cfg.margin * max(hi - lo, 1e-6)
        axes.append(torch.linspace(lo - pad, hi + pad, cfg.grid, dtype=torch.float64))
    is_toy = isinstance(cfg.run, paths.ToyConfig)
    if is_toy:
        device = device or torch.device("cpu")
        w = paths.toy_workload(cfg.run, device)
    else:
        device = device or get_device()
        w = paths.image_workload(cfg.run, device)
    loss = loss_grid(w.spec.net, m["shapes"], path[-1].float().to(device), d.float(),
                     axes[0].float(), axes[1].float(), w.x[:cfg.n_eval], w.y[:cfg.n_eval], part(report, 0.4, 1.0))
    return {"a": axes[0].tolist(), "b": axes[1].tolist(), "loss": loss.tolist(),
            "path": coords.tolist(), "path_epochs": list(range(len(path))), "explained": ratio[:2].tolist(),
            "final_loss": m["curves"]["train_loss"][-1][0], "dataset": m["dataset"],
            "n_eval": min(cfg.n_eval, len(w.y))}


def run(cfg: SurfaceConfig, cache: Cache, report: Reporter = SILENT) -> Entry:
    """The surface for cfg: from the cache, else computed now."""
    def fn() -> ComputeResult:
        return ComputeResult(compute(cfg, cache, report), meta={"recompute": paths.cli_command(cfg.run)
                                                                 + f" --surface {cfg.grid}"})

    return cache.get_or_compute(KIND, cfg, fn)


def job(cfg: SurfaceConfig, cache: Cache) -> Callable[[JobContext], Entry]:
    """A job function for views.widgets.start_job."""
    def fn(ctx: JobContext) -> Entry:
        return run(cfg, cache, ctx)

    fn.__name__ = KIND
    return fn
