"""A 2D slice of the loss surface around one solution (Li et al. 2018): two filter-normalised random directions.

The training loss at theta + a d1 + b d2 on a grid of (a, b) in [-span, span]^2, evaluated one point at a time on
n_eval training images (a batch-norm net gets its statistics recomputed at every point); a background job with
progress, cached by config. The solutions come from the interpolation entry (explorer.labs.interpolation.lines).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

from explorer.core.cache import Cache, ComputeResult, Entry
from explorer.core.config import check_choice, check_range
from explorer.core.device import get_device
from explorer.core.jobs import JobContext
from explorer.core.report import SILENT, Reporter, part
from explorer.labs.interpolation import lines

KIND = "interpolation-plane"
AROUND = ("A", "B")


@dataclass(frozen=True)
class PlaneConfig:
    """The grid around solution A or B of an interpolation run."""

    run: lines.InterpConfig = lines.InterpConfig()
    around: str = "A"
    grid: int = 21  # points per axis
    span: float = 1.0  # a and b run from -span to span (1: a step as long as each filter)
    n_eval: int = 500  # training images per point

    def __post_init__(self) -> None:
        check_choice("solution", self.around, AROUND)
        check_range("grid points per axis", self.grid, 5, 61, integer=True)
        check_range("span", self.span, 0.05, 5.0)
        check_range("examples per point", self.n_eval, 50, 10_000, integer=True)

    @property
    def coords(self) -> list[float]:
        n = self.grid
        return [round(-self.span + 2 * self.span * i / (n - 1), 10) for i in range(n)]


def compute(cfg: PlaneConfig, cache: Cache, report: Reporter = SILENT, device: torch.device | None = None
            ) -> dict[str, Any]:
    """Train loss and accuracy on the grid (rows: b, columns: a)."""
    device = device or get_device()
    entry = lines.run(cfg.run, cache, part(report, 0.0, 0.2, prefix="solutions: "))
    sol = lines.states(entry, device)[cfg.around]
    data = lines.load_data(cfg.run, device)
    data.x, data.y = data.x[:cfg.n_eval], data.y[:cfg.n_eval]
    model = lines.build(cfg.run.net, cfg.run.channels, cfg.run.width, tuple(data.x.shape[1:]), data.classes)
    model = model.to(device)
    names = {n for n, _ in model.named_parameters()}
    gen = torch.Generator().manual_seed(cfg.run.seed + 29)
    d1, d2 = lines.filter_normalised(sol, names, gen), lines.filter_normalised(sol, names, gen)
    cs = cfg.coords
    loss = [[0.0] * len(cs) for _ in cs]
    acc = [[0.0] * len(cs) for _ in cs]
    rep = part(report, 0.2, 1.0)
    total = len(cs) ** 2
    for j, b in enumerate(cs):
        for i, a in enumerate(cs):
            rep.checkpoint()
            p = lines.point(model, lines.shift(sol, [d1, d2], [a, b]), data, cfg.run.recompute_bn, test=False)
            loss[j][i], acc[j][i] = p["train_loss"], p["train_acc"]
        rep.publish(progress=(j + 1) * len(cs) / total, message=f"2D slice: {(j + 1) * len(cs)}/{total} points")
    return {"coords": cs, "loss": loss, "acc": acc, "around": cfg.around, "bn": entry.metrics["bn"],
            "n_eval": len(data.y), "dataset": entry.metrics["dataset"]}


def run(cfg: PlaneConfig, cache: Cache, report: Reporter = SILENT) -> Entry:
    """The plane for cfg: from the cache, else computed now."""
    def fn() -> ComputeResult:
        return ComputeResult(compute(cfg, cache, report),
                             meta={"recompute": lines.cli_command(cfg.run) + f" --plane {cfg.around}"})

    return cache.get_or_compute(KIND, cfg, fn)


def job(cfg: PlaneConfig, cache: Cache) -> Callable[[JobContext], Entry]:
    """A job function for views.widgets.start_job."""
    def fn(ctx: JobContext) -> Entry:
        ctx.publish(None, progress=0.0, message="starting")
        return run(cfg, cache, ctx)

    fn.__name__ = KIND
    return fn
