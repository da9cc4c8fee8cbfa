"""Depth vs width on images: the course report's shallow and deep CNNs, 112,970 parameters each.

Shallow: conv3x3(1->96)-relu-conv3x3(96->128)-relu-GAP-FC(128->10). Deep: six 3x3 convs of widths
40, 16, 64, 56, 64, 56 (ReLU after each, 2x2 max-pool after the 2nd and 4th), GAP, FC(56->10). Every layer has
a bias and every conv pads by 1; global average pooling makes the count independent of the image size, so
both have exactly 112,970 parameters for 1-channel input and 10 classes (28x28 or the embedded 8x8 digits).
`train_pair` trains both for E epochs (Adam, cross-entropy, the same minibatch order) and reports each epoch's
train and test loss and accuracy through a Reporter (a page's job snapshot).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from explorer.core.cache import Cache, ComputeResult, Entry
from explorer.core.config import check_choice, check_range
from explorer.core.device import get_device
from explorer.core.jobs import JobContext
from explorer.core.report import SILENT, Reporter
from explorer.core.seeding import seeded
from explorer.data.datasets import load_or_fallback, take
from explorer.train.evaluate import Diverged, diverged_message

DATASETS = ("digits", "mnist", "fashion_mnist")
DEEP_WIDTHS = (40, 16, 64, 56, 64, 56)
SHALLOW_WIDTHS = (96, 128)
KIND = "function-fitting-cnn"  # cache kind of a finished comparison
EVAL_CHUNK = 1000  # test images per forward


def shallow_cnn(in_channels: int = 1, num_classes: int = 10) -> nn.Sequential:
    """Two wide 3x3 convs, global average pooling, one linear layer."""
    a, b = SHALLOW_WIDTHS
    return nn.Sequential(nn.Conv2d(in_channels, a, 3, padding=1), nn.ReLU(), nn.Conv2d(a, b, 3, padding=1),
                         nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(b, num_classes))


def deep_cnn(in_channels: int = 1, num_classes: int = 10) -> nn.Sequential:
    """Six narrow 3x3 convs with a 2x2 max-pool after every two but the last, global average pooling, linear."""
    layers: list[nn.Module] = []
    c = in_channels
    for i, w in enumerate(DEEP_WIDTHS):
        layers += [nn.Conv2d(c, w, 3, padding=1), nn.ReLU()]
        if i % 2 == 1 and i < len(DEEP_WIDTHS) - 1:
            layers.append(nn.MaxPool2d(2))
        c = w
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, num_classes))


MODELS = {"shallow": shallow_cnn, "deep": deep_cnn}
TITLES = {"shallow": "shallow CNN (2 convs: 96, 128)", "deep": "deep CNN (6 convs: 40-16-64-56-64-56)"}


def count(model: nn.Module) -> int:
    """Trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@dataclass(frozen=True)
class ImageConfig:
    """Both CNNs on one data set for a few epochs."""

    dataset: str = "digits"  # embedded 8x8 digits: no download, a few seconds per epoch on a CPU
    n_train: int = 1500  # a seeded subset of the training split (all of it if larger)
    n_test: int = 1000
    epochs: int = 5
    lr: float = 3e-3  # Adam's step size
    batch_size: int = 64
    seed: int = 0  # subsets, initial weights and batch order

    def __post_init__(self) -> None:
        check_choice("dataset", self.dataset, DATASETS)
        check_range("training images", self.n_train, 100, 60_000, integer=True)
        check_range("test images", self.n_test, 100, 10_000, integer=True)
        check_range("epochs", self.epochs, 1, 100, integer=True)
        check_range("learning rate", self.lr, 1e-5, 1.0)
        check_range("batch size", self.batch_size, 1, 4096, integer=True)
        check_range("seed", self.seed, 0, 2**31 - 1, integer=True)


def load_images(cfg: ImageConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, str,
                                            str | None]:
    """Standardised train and test images (N, 1, H, W) and labels, the data set used and the fallback notice."""
    train_ds, notice = load_or_fallback(cfg.dataset, "train")
    test_ds, _ = load_or_fallback(train_ds.name, "test")
    train_ds, test_ds = take(train_ds, cfg.n_train, cfg.seed), take(test_ds, cfg.n_test, cfg.seed + 1)
    x, xt = train_ds.to_float(), test_ds.to_float()
    mean, std = x.mean(), x.std().clamp_min(1e-6)
    return (x - mean) / std, train_ds.y, (xt - mean) / std, test_ds.y, train_ds.name, notice


@torch.no_grad()
def _evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Mean cross-entropy and accuracy over a whole set, EVAL_CHUNK images per forward."""
    loss, right = torch.zeros((), device=x.device), torch.zeros((), device=x.device)
    for i in range(0, len(x), EVAL_CHUNK):
        z = model(x[i:i + EVAL_CHUNK])
        loss += nn.functional.cross_entropy(z, y[i:i + EVAL_CHUNK], reduction="sum")
        right += (z.argmax(1) == y[i:i + EVAL_CHUNK]).sum()
    return float(loss) / len(x), float(right) / len(x)


def train_pair(cfg: ImageConfig, report: Reporter = SILENT, device: torch.device | None = None) -> dict[str, Any]:
    """Train the shallow and the deep CNN, one epoch of each in turn; per-epoch metrics of both (also published
    after every epoch). A non-finite training loss raises Diverged."""
    device = device or get_device()
    x, y, xt, yt, used, notice = load_images(cfg)
    x, y, xt, yt = x.to(device), y.to(device), xt.to(device), yt.to(device)
    classes = 10
    models, opts = {}, {}
    for name, build in MODELS.items():
        with seeded(cfg.seed):
            models[name] = build(x.shape[1], classes).to(device)
        opts[name] = torch.optim.Adam(models[name].parameters(), lr=cfg.lr)
    out: dict[str, Any] = {
        "dataset": used, "notice": notice, "n_train": len(y), "n_test": len(yt), "epochs": cfg.epochs,
        "image_shape": list(x.shape[1:]), "params": {n: count(m) for n, m in models.items()},
        "titles": TITLES, "history": {n: {k: [] for k in ("epoch", "train_loss", "train_acc", "test_loss",
                                                           "test_acc", "seconds")} for n in models}}
    order = torch.Generator().manual_seed(cfg.seed)
    steps = math.ceil(len(y) / cfg.batch_size)
    report.publish(out, progress=0.0, message="training")
    for epoch in range(1, cfg.epochs + 1):
        perm = torch.randperm(len(y), generator=order).to(device)
        for name, model in models.items():
            report.checkpoint()
            t0 = time.perf_counter()
            model.train()
            loss_sum, right = torch.zeros((), device=device), torch.zeros((), device=device)
            for s in range(steps):
                idx = perm[s * cfg.batch_size:(s + 1) * cfg.batch_size]
                z = model(x[idx])
                loss = nn.functional.cross_entropy(z, y[idx])
                opts[name].zero_grad(set_to_none=True)
                loss.backward()
                opts[name].step()
                loss_sum += loss.detach() * len(idx)
                right += (z.detach().argmax(1) == y[idx]).sum()
            train_loss = float(loss_sum) / len(y)
            if not math.isfinite(train_loss):
                raise Diverged(diverged_message(TITLES[name], epoch * steps, epoch, cfg.lr,
                                                cause="its training loss became non-finite"), epoch * steps, epoch)
            model.eval()
            test_loss, test_acc = _evaluate(model, xt, yt)
            h = out["history"][name]
            h["epoch"].append(epoch)
            h["train_loss"].append(train_loss)
            h["train_acc"].append(float(right) / len(y))
            h["test_loss"].append(test_loss)
            h["test_acc"].append(test_acc)
            h["seconds"].append(time.perf_counter() - t0)
            report.publish(out, progress=(epoch - (0.5 if name == "shallow" else 0.0)) / cfg.epochs,
                           message=f"epoch {epoch}/{cfg.epochs}: {name} CNN done")
    return out


def table(result: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per model and epoch: the numbers the page and the CLI print."""
    rows = []
    for name, h in result["history"].items():
        for i, e in enumerate(h["epoch"]):
            rows.append({"model": name, "params": result["params"][name], "epoch": e,
                         "train loss": h["train_loss"][i], "train acc": h["train_acc"][i],
                         "test loss": h["test_loss"][i], "test acc": h["test_acc"][i],
                         "seconds": h["seconds"][i]})
    return rows


def run(cfg: ImageConfig, cache: Cache, report: Reporter = SILENT) -> Entry:
    """The comparison for cfg: from the cache, else trained now and stored with the command that recomputes it."""
    def compute() -> ComputeResult:
        return ComputeResult(train_pair(cfg, report), meta={"recompute": cli_command(cfg)})

    return cache.get_or_compute(KIND, cfg, compute)


def job(cfg: ImageConfig, cache: Cache) -> Callable[[JobContext], Entry]:
    """A job function for views.widgets.start_job: publishes the metrics after every model's epoch."""
    def fn(ctx: JobContext) -> Entry:
        ctx.publish(None, progress=0.0, message="loading data")
        return run(cfg, cache, ctx)

    fn.__name__ = KIND
    return fn


def cli_command(cfg: ImageConfig) -> str:
    """The terminal command that recomputes cfg (non-default settings only)."""
    default = ImageConfig()
    flags = {"dataset": "--dataset", "n_train": "--n-train", "n_test": "--n-test", "epochs": "--epochs",
             "lr": "--lr", "batch_size": "--batch-size", "seed": "--seed"}
    parts = ["python -m explorer fit cnn"]
    parts += [f"{flag} {getattr(cfg, k)}" for k, flag in flags.items() if getattr(cfg, k) != getattr(default, k)]
    return " ".join(parts)
