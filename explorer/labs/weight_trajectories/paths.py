"""Weight trajectories in PCA space: K runs that differ only in their initial weights, snapshotted as they train.

The K seeds train as one batched run (explorer.train.stacked.BatchedTrainer: shared batch order, init seed + k).
Every `every` epochs each run's weights are flattened (layer 1 alone and the whole model); one PCA is fitted to
all snapshots of all runs together, so every path is drawn in the same PC1/PC2 plane. Two workloads: a small CNN
on images (digits by default, MNIST / Fashion-MNIST when present) and the toy version, an MLP on 2D points
(explorer.data.toy2d) with many snapshots. Run 0's every-epoch snapshots are kept as tensors for the loss-surface
plot (explorer.labs.weight_trajectories.surface).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable


import torch

from explorer.core.cache import Cache, ComputeResult, Entry
from explorer.core.config import check_choice, check_range
from explorer.core.device import get_device
from explorer.core.jobs import JobContext
from explorer.core.report import SILENT, Reporter
from explorer.data import toy2d
from explorer.data.datasets import load_or_fallback, take
from explorer.nets.small import NetConfig
from explorer.train.evaluate import Diverged
from explorer.train.stacked import BatchConfig, BatchedTrainer, ModelSpec

DATASETS = ("digits", "mnist", "fashion_mnist")
TOY_DATA = tuple(k for k in toy2d.GENERATORS if toy2d.task_of(k) == "classification")
KIND = "weight-trajectories"
TOY_KIND = "weight-trajectories-toy"
N_EXPLAINED = 5  # explained-variance ratios kept per PCA (the page shows PC1, PC2 and the rest)
PARTS = ("layer 1", "whole model")


@dataclass(frozen=True)
class TrajConfig:
    """K small CNNs from K seeds on one image data set (the report: Adam 1e-3, batch 128, 9 epochs, every 3)."""

    dataset: str = "digits"  # embedded 8x8 digits: no download, seconds on a CPU
    n_train: int = 1500  # a seeded subset of the training split (all of it if larger)
    n_test: int = 1000
    seeds: int = 8  # runs; run k starts from init seed seed + k
    epochs: int = 9
    every: int = 3  # epochs between snapshots (plus the initial weights and the last epoch)
    lr: float = 1e-3  # Adam
    batch_size: int = 128
    channels: int = 8  # first conv stage; the second has twice as many
    width: int = 32  # hidden linear layer
    seed: int = 0  # first init seed, data subsets and batch order

    def __post_init__(self) -> None:
        check_choice("dataset", self.dataset, DATASETS)
        check_range("training images", self.n_train, 100, 60_000, integer=True)
        check_range("test images", self.n_test, 100, 10_000, integer=True)
        check_range("seeds", self.seeds, 2, 16, integer=True)
        check_range("epochs", self.epochs, 1, 50, integer=True)
        check_range("epochs between snapshots", self.every, 1, self.epochs, integer=True)
        check_range("learning rate", self.lr, 1e-5, 1.0)
        check_range("batch size", self.batch_size, 8, 4096, integer=True)
        check_range("channels", self.channels, 2, 32, integer=True)
        check_range("hidden width", self.width, 4, 256, integer=True)
        check_range("seed", self.seed, 0, 2**31 - 1, integer=True)

    @property
    def net(self) -> NetConfig:
        """Two conv stages (channels, 2*channels) with 2x2 pooling, a hidden layer of width, 10 outputs."""
        return NetConfig(arch="small_cnn", channels=self.channels, depth=2, width=self.width)


@dataclass(frozen=True)
class ToyConfig:
    """K MLPs from K seeds on 2D points, a snapshot every few steps."""

    data: str = "spiral"
    n_points: int = 400
    noise: int = 10  # percent
    seeds: int = 8
    epochs: int = 150  # a few steps each (n_train / batch_size)
    every: int = 2
    lr: float = 1e-2
    batch_size: int = 50
    width: int = 32  # two hidden layers
    seed: int = 0

    def __post_init__(self) -> None:
        check_choice("2D data set", self.data, TOY_DATA)
        check_range("number of points", self.n_points, 50, 5000, integer=True)
        check_range("noise (%)", self.noise, 0, 50, integer=True)
        check_range("seeds", self.seeds, 2, 16, integer=True)
        check_range("epochs", self.epochs, 1, 2000, integer=True)
        check_range("epochs between snapshots", self.every, 1, self.epochs, integer=True)
        check_range("learning rate", self.lr, 1e-5, 1.0)
        check_range("batch size", self.batch_size, 4, 4096, integer=True)
        check_range("hidden width", self.width, 2, 256, integer=True)
        check_range("seed", self.seed, 0, 2**31 - 1, integer=True)

    @property
    def net(self) -> NetConfig:
        return NetConfig(arch="mlp", width=self.width, depth=2)


@dataclass
class Workload:
    """What one training needs: the network, the data (on the device) and where layer 1's tensors are."""

    spec: ModelSpec
    x: torch.Tensor
    y: torch.Tensor
    xt: torch.Tensor
    yt: torch.Tensor
    layer1: str  # module name of the first layer ("conv1" / "fc1")
    info: dict[str, Any]


def image_workload(cfg: TrajConfig, device: torch.device) -> Workload:
    """Standardised image subsets and the small CNN's spec."""
    train_ds, notice = load_or_fallback(cfg.dataset, "train")
    test_ds, _ = load_or_fallback(train_ds.name, "test")
    train_ds, test_ds = take(train_ds, cfg.n_train, cfg.seed), take(test_ds, cfg.n_test, cfg.seed + 1)
    x, xt = train_ds.to_float(), test_ds.to_float()
    mean, std = x.mean(), x.std().clamp_min(1e-6)
    spec = ModelSpec(cfg.net, tuple(x.shape[1:]), train_ds.num_classes)
    return Workload(spec, ((x - mean) / std).to(device), train_ds.y.to(device), ((xt - mean) / std).to(device),
                    test_ds.y.to(device), "conv1",
                    {"dataset": train_ds.name, "notice": notice, "n_train": len(train_ds), "n_test": len(test_ds)})


def toy_workload(cfg: ToyConfig, device: torch.device) -> Workload:
    """The 2D points (half for training) and the MLP's spec."""
    split = toy2d.make_split(toy2d.Data2DConfig(name=cfg.data, noise=cfg.noise, n_points=cfg.n_points,
                                                seed=cfg.seed), device)
    spec = ModelSpec(cfg.net, (2,), split.num_classes)
    return Workload(spec, split.x_train, split.y_train, split.x_test, split.y_test, "fc1",
                    {"dataset": cfg.data, "notice": None, "n_train": len(split.y_train),
                     "n_test": len(split.y_test)})


def flatten(params: dict[str, torch.Tensor], prefix: str = "") -> torch.Tensor:
    """(K, P) rows of K models' stacked tensors whose names start with prefix, concatenated in name order."""
    return torch.cat([p.detach().reshape(p.shape[0], -1) for n, p in params.items() if n.startswith(prefix)], 1)


def pca(x: torch.Tensor, n: int = 2) -> dict[str, torch.Tensor]:
    """PCA of the rows of x (snapshots, P) by an SVD of the centred matrix: coords (rows, n), components (n, P),
    mean (P,), explained-variance ratio of every component."""
    x = x.double()
    mean = x.mean(0)
    u, s, vh = torch.linalg.svd(x - mean, full_matrices=False)
    var = s**2
    ratio = var / var.sum() if var.sum() > 0 else torch.zeros_like(var)
    return {"coords": u[:, :n] * s[:n], "components": vh[:n], "mean": mean, "explained": ratio}


def train_runs(w: Workload, bcfg: BatchConfig, k: int, every: int, report: Reporter = SILENT,
               device: torch.device | None = None) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Train k runs as one, snapshot every `every` epochs, one PCA per part; (metrics, run 0's path tensors)."""
    tr = BatchedTrainer(w.spec, bcfg, k, w.x, w.y, w.xt, w.yt, device=device)  # run i from seed init_seed + i
    snaps: dict[str, list[torch.Tensor]] = {p: [] for p in PARTS}
    path0: list[torch.Tensor] = []  # run 0's whole model after every epoch, for the loss surface
    marks: list[int] = []
    acc: list[list[float]] = []  # [snapshot][run] test accuracy
    curves: dict[str, list] = {"epoch": [], "train_acc": [], "test_acc": [], "train_loss": []}

    def snapshot(metrics: dict[str, list[float]]) -> None:
        whole = flatten(tr.params).cpu()
        path0.append(whole[0].clone())
        if tr.epoch % every == 0 or tr.epoch == bcfg.epochs:
            marks.append(tr.epoch)
            snaps["layer 1"].append(flatten(tr.params, w.layer1 + ".").cpu())
            snaps["whole model"].append(whole)
            acc.append([1.0 - e for e in metrics["test_err"]])
        curves["epoch"].append(tr.epoch)
        curves["train_acc"].append([1.0 - e for e in metrics["train_err"]])
        curves["test_acc"].append([1.0 - e for e in metrics["test_err"]])
        curves["train_loss"].append(metrics["train_loss"])

    snapshot(tr.evaluate())
    report.publish(None, progress=0.0, message="training")
    for _ in range(bcfg.epochs):
        report.checkpoint()
        tr.run_epoch()
        bad = next((i for i, m in enumerate(tr.diverged) if m), None)
        if bad is not None:  # one diverged run ends the lab's run: its path would stop in a zeroed model
            text = tr.diverged[bad].replace(f"model {bad}", f"the run from seed {bcfg.init_seed + bad}", 1)
            raise Diverged(text, tr.step_count, tr.epoch)
        snapshot(tr.evaluate())
        report.publish(None, progress=tr.epoch / bcfg.epochs, message=f"epoch {tr.epoch}/{bcfg.epochs}")
    out: dict[str, Any] = {**w.info, "seeds": [bcfg.init_seed + i for i in range(k)], "snapshot_epochs": marks,
                           "test_acc": acc, "curves": curves, "epochs": bcfg.epochs, "params": {}, "pca": {}}
    for part in PARTS:
        x = torch.stack(snaps[part], 1)  # (K, S, P): run k's snapshots in order
        fit = pca(x.flatten(0, 1))
        out["params"][part] = int(x.shape[-1])
        out["pca"][part] = {"coords": fit["coords"].view(k, len(marks), 2).tolist(),
                            "explained": fit["explained"][:N_EXPLAINED].tolist()}
    names = list(tr.params)
    out["shapes"] = [[n, list(tr.params[n].shape[1:])] for n in names]  # a list: JSON may sort a dict's keys
    return out, {"path0": torch.stack(path0).float()}


def train_images(cfg: TrajConfig, report: Reporter = SILENT, device: torch.device | None = None
                 ) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The image workload: cfg.seeds small CNNs trained as one batched run."""
    device = device or get_device()
    bcfg = BatchConfig(optimizer="adam", lr=cfg.lr, batch_size=cfg.batch_size, epochs=cfg.epochs, seed=cfg.seed,
                       init_seed=cfg.seed, same_init=False)
    return train_runs(image_workload(cfg, device), bcfg, cfg.seeds, cfg.every, report, device)


def train_toy(cfg: ToyConfig, report: Reporter = SILENT, device: torch.device | None = None
              ) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The toy workload: cfg.seeds MLPs on 2D points (the CPU: tiny tensors cost more on a GPU)."""
    device = device or torch.device("cpu")
    bcfg = BatchConfig(optimizer="adam", lr=cfg.lr, batch_size=cfg.batch_size, epochs=cfg.epochs, seed=cfg.seed,
                       init_seed=cfg.seed, same_init=False)
    return train_runs(toy_workload(cfg, device), bcfg, cfg.seeds, cfg.every, report, device)


TRAINERS: dict[type, tuple[str, Callable]] = {TrajConfig: (KIND, train_images), ToyConfig: (TOY_KIND, train_toy)}


def run(cfg: TrajConfig | ToyConfig, cache: Cache, report: Reporter = SILENT) -> Entry:
    """The trajectories for cfg: from the cache, else trained now."""
    kind, train = TRAINERS[type(cfg)]

    def compute() -> ComputeResult:
        metrics, tensors = train(cfg, report)
        return ComputeResult(metrics, tensors=tensors, meta={"recompute": cli_command(cfg)})

    return cache.get_or_compute(kind, cfg, compute)


def job(cfg: TrajConfig | ToyConfig, cache: Cache) -> Callable[[JobContext], Entry]:
    """A job function for views.widgets.start_job."""
    def fn(ctx: JobContext) -> Entry:
        ctx.publish(None, progress=0.0, message="loading data")
        return run(cfg, cache, ctx)

    fn.__name__ = TRAINERS[type(cfg)][0]
    return fn


def cli_command(cfg: TrajConfig | ToyConfig) -> str:
    """The terminal command that recomputes cfg (non-default settings only)."""
    default = type(cfg)()
    parts = ["python -m explorer trajectories " + ("images" if isinstance(cfg, TrajConfig) else "toy")]
    for name in cfg.__dataclass_fields__:
        if getattr(cfg, name) != getattr(default, name):
            parts.append(f"--{name.replace('_', '-')} {getattr(cfg, name)}")
    return " ".join(parts)


def table(m: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per run and snapshot: PC coordinates of both parts and the test accuracy."""
    rows = []
    for k, seed in enumerate(m["seeds"]):
        for j, epoch in enumerate(m["snapshot_epochs"]):
            row: dict[str, Any] = {"seed": seed, "epoch": epoch, "test acc": m["test_acc"][j][k]}
            for part in PARTS:
                pc1, pc2 = m["pca"][part]["coords"][k][j]
                row[f"{part} PC1"], row[f"{part} PC2"] = pc1, pc2
            rows.append(row)
    return rows
