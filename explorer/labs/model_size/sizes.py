"""Number of parameters vs generalisation: the course report's eleven two-conv CNNs, (8,8) to (128,96) filters.

Network (c1, c2): conv3x3(1->c1)-ReLU-maxpool2-conv3x3(c1->c2)-ReLU-maxpool2-flatten-FC(c2*H/4*W/4 -> 10), every
layer with a bias and every conv padded by 1, so on 28x28 images it has 10*c1 + 9*c1*c2 + c2 + 490*c2 + 10
parameters (4,594 for (8,8), 159,018 for (128,96)). Each width trains its `seeds` copies as ONE grouped model
(a shared-input conv of K*c1 filters, a groups=K conv, K linear heads; the loss is the sum of the K mean losses,
so each copy's gradient and Adam step are exactly its own). Widths differ in shape and do not stack, so they are
looped: every width sees the same minibatch order and has its own Adam, which equals training each separately.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from explorer.core.cache import Cache, ComputeResult, Entry
from explorer.core.config import ConfigError, check_choice, check_range
from explorer.core.device import get_device
from explorer.core.jobs import JobContext
from explorer.core.report import SILENT, Reporter
from explorer.core.seeding import seeded
from explorer.data.datasets import load_or_fallback, take
from explorer.nets.grouped import GroupedLinear, restack
from explorer.train.evaluate import Diverged, diverged_message

KIND = "model-size"  # cache kind of a finished sweep over widths
DATASETS = ("digits", "mnist", "fashion_mnist")
# The report's family: c1 = 8 * 16^(i/10), c2 = 8 * 12^(i/10), i = 0..10, rounded (geometric, 35x in parameters).
FAMILY: tuple[tuple[int, int], ...] = ((8, 8), (11, 10), (14, 13), (18, 17), (24, 22), (32, 28), (42, 36),
                                       (56, 46), (74, 58), (97, 75), (128, 96))
MAX_FILTERS = 256
EVAL_CHUNK = 500  # images per forward when evaluating (larger is no faster on a CPU)
INIT_STRIDE = 1000  # copy s of a width starts from seed + s * INIT_STRIDE


def label(width: tuple[int, int]) -> str:
    """'(c1,c2)' as the report writes a width."""
    return f"({width[0]},{width[1]})"


def param_count(width: tuple[int, int], image_shape: tuple[int, int, int] = (1, 28, 28), classes: int = 10) -> int:
    """Parameters of one network of this width, by formula."""
    (c1, c2), (cin, h, w) = width, image_shape
    flat = c2 * (h // 4) * (w // 4)
    return (9 * cin * c1 + c1) + (9 * c1 * c2 + c2) + (flat * classes + classes)


class GroupedCNN2(nn.Module):
    """K copies of the two-conv CNN (c1, c2) as one module: x (B, C, H, W) shared -> logits (K, B, classes)."""

    def __init__(self, width: tuple[int, int], k_models: int, image_shape: tuple[int, int, int],
                 classes: int = 10) -> None:
        super().__init__()
        (c1, c2), (cin, h, w) = width, image_shape
        self.k, self.c2 = k_models, c2
        self.conv1 = nn.Conv2d(cin, k_models * c1, 3, padding=1)  # every copy reads the same input channels
        self.conv2 = nn.Conv2d(k_models * c1, k_models * c2, 3, padding=1, groups=k_models)
        self.head = GroupedLinear(k_models, c2 * (h // 4) * (w // 4), classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = F.max_pool2d(F.relu(self.conv1(x)), 2)
        a = F.max_pool2d(F.relu(self.conv2(a)), 2)  # (B, K*c2, H/4, W/4): copy j's channels are contiguous
        return self.head(a.reshape(len(x), self.k, -1).transpose(0, 1))


def build(width: tuple[int, int], seeds: tuple[int, ...], image_shape: tuple[int, int, int],
          classes: int = 10) -> GroupedCNN2:
    """len(seeds) copies of width; copy j starts as a lone network built after torch.manual_seed(seeds[j])."""
    states = []
    for s in seeds:
        with seeded(s):
            states.append(GroupedCNN2(width, 1, image_shape, classes).state_dict())
    model = GroupedCNN2(width, len(seeds), image_shape, classes)
    model.load_state_dict(restack(states))
    return model


def _widths(value: Any) -> tuple[tuple[int, int], ...]:
    """Widths as a tuple of (c1, c2) int pairs (JSON and URLs hand in lists)."""
    try:
        return tuple((int(a), int(b)) for a, b in value)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"widths must be (c1, c2) pairs, got {value!r}") from err


@dataclass(frozen=True)
class SizeConfig:
    """The eleven widths (or a subset) trained with Adam on one data set; the default is the shipped result."""

    dataset: str = "fashion_mnist"  # the embedded digits stand in when it is absent
    n_train: int = 20_000  # a seeded subset, as the report's (the shipped result: ~25 min on 2 CPU cores)
    n_test: int = 10_000
    epochs: int = 5
    widths: tuple[tuple[int, int], ...] = FAMILY
    seeds: int = 1  # copies per width, trained as one grouped model; the page shows their mean
    lr: float = 1e-3  # Adam's step size
    batch_size: int = 128
    seed: int = 0  # subsets, initial weights and minibatch order

    def __post_init__(self) -> None:
        check_choice("dataset", self.dataset, DATASETS)
        check_range("training images", self.n_train, 100, 60_000, integer=True)
        check_range("test images", self.n_test, 100, 10_000, integer=True)
        check_range("epochs", self.epochs, 1, 50, integer=True)
        widths = _widths(self.widths)
        check_range("number of widths", len(widths), 1, 20, integer=True)
        for c1, c2 in widths:
            check_range("c1 (first conv's filters)", c1, 1, MAX_FILTERS, integer=True)
            check_range("c2 (second conv's filters)", c2, 1, MAX_FILTERS, integer=True)
        if len(set(widths)) != len(widths):
            raise ConfigError("each width may appear only once")
        object.__setattr__(self, "widths", tuple(sorted(widths, key=param_count)))
        check_range("seeds per width", self.seeds, 1, 10, integer=True)
        check_range("learning rate", self.lr, 1e-5, 1.0)
        check_range("batch size", self.batch_size, 1, 4096, integer=True)
        check_range("seed", self.seed, 0, 2**31 - 1, integer=True)


def work(cfg: SizeConfig) -> int:
    """Multiply-adds of one training pass over the data for every width and copy (28x28), a cost estimate."""
    per_image = sum(784 * 9 * c1 + 196 * 9 * c1 * c2 + 49 * c2 * 10 for c1, c2 in cfg.widths)
    return 3 * per_image * cfg.n_train * cfg.epochs * cfg.seeds


def resolve(cfg: SizeConfig) -> SizeConfig:
    """The config that really runs: the data set replaced by the embedded digits when it is missing."""
    used = load_or_fallback(cfg.dataset, "train")[0].name
    return cfg if used == cfg.dataset else dataclasses.replace(cfg, dataset=used)


def load_images(cfg: SizeConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, str, str | None]:
    """Standardised train and test images (N, 1, H, W) and labels, the data set used and the fallback notice."""
    train_ds, notice = load_or_fallback(cfg.dataset, "train")
    test_ds, _ = load_or_fallback(train_ds.name, "test")
    train_ds, test_ds = take(train_ds, cfg.n_train, cfg.seed), take(test_ds, cfg.n_test, cfg.seed + 1)
    x, xt = train_ds.to_float(), test_ds.to_float()
    mean, std = x.mean(), x.std().clamp_min(1e-6)
    return (x - mean) / std, train_ds.y, (xt - mean) / std, test_ds.y, train_ds.name, notice


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[list[float], list[float]]:
    """Each copy's mean cross-entropy and accuracy over a whole set."""
    loss = right = None
    for i in range(0, len(x), EVAL_CHUNK):
        z, yb = model(x[i:i + EVAL_CHUNK]), y[i:i + EVAL_CHUNK]  # (K, B, classes)
        lb = F.cross_entropy(z.transpose(1, 2), yb.expand(len(z), -1), reduction="none").sum(1)
        rb = (z.argmax(2) == yb).sum(1)
        loss, right = (lb, rb) if loss is None else (loss + lb, right + rb)
    return (loss / len(x)).tolist(), (right.double() / len(x)).tolist()


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def train_sizes(cfg: SizeConfig, report: Reporter = SILENT, device: torch.device | None = None) -> dict[str, Any]:
    """Train every width (its copies grouped) for cfg.epochs; per-width history and final metrics, published after
    every width's epoch. A non-finite training loss raises Diverged."""
    device = device or get_device()
    x, y, xt, yt, used, notice = load_images(cfg)
    x, y, xt, yt = x.to(device), y.to(device), xt.to(device), yt.to(device)
    shape = tuple(x.shape[1:])
    seeds = tuple(cfg.seed + s * INIT_STRIDE for s in range(cfg.seeds))
    models = [build(w, seeds, shape).to(device) for w in cfg.widths]
    opts = [torch.optim.Adam(m.parameters(), lr=cfg.lr) for m in models]
    keys = ("epoch", "train_loss", "train_acc", "test_loss", "test_acc", "seconds")
    out: dict[str, Any] = {
        "dataset": used, "notice": notice, "n_train": len(y), "n_test": len(yt), "epochs": cfg.epochs,
        "image_shape": list(shape), "seeds": cfg.seeds,
        "widths": [{"c1": c1, "c2": c2, "label": label((c1, c2)), "params": param_count((c1, c2), shape),
                    "history": {k: [] for k in keys}, "final": None} for c1, c2 in cfg.widths]}
    order = torch.Generator().manual_seed(cfg.seed)
    steps = math.ceil(len(y) / cfg.batch_size)
    total = cfg.epochs * len(models)
    report.publish(out, progress=0.0, message="training")
    for epoch in range(1, cfg.epochs + 1):
        perm = torch.randperm(len(y), generator=order).to(device)  # one minibatch order for every width
        for i, (model, opt) in enumerate(zip(models, opts)):
            report.checkpoint()
            t0 = time.perf_counter()
            model.train()
            loss_sum = torch.zeros(cfg.seeds, device=device)
            right = torch.zeros(cfg.seeds, device=device)
            for s in range(steps):
                idx = perm[s * cfg.batch_size:(s + 1) * cfg.batch_size]
                z = model(x[idx])  # (K, B, classes)
                per = F.cross_entropy(z.transpose(1, 2), y[idx].expand(cfg.seeds, -1), reduction="none").mean(1)
                opt.zero_grad(set_to_none=True)
                per.sum().backward()  # the sum of K mean losses: each copy gets exactly its own gradient
                opt.step()
                loss_sum += per.detach() * len(idx)
                right += (z.detach().argmax(2) == y[idx]).sum(1)
            train_loss = (loss_sum / len(y)).tolist()
            row = out["widths"][i]
            if not all(math.isfinite(v) for v in train_loss):
                raise Diverged(diverged_message(f"the {row['label']} CNN", epoch * steps, epoch, cfg.lr,
                                                cause="its training loss became non-finite"), epoch * steps, epoch)
            model.eval()
            test_loss, test_acc = evaluate(model, xt, yt)
            h = row["history"]
            h["epoch"].append(epoch)
            h["train_loss"].append(_mean(train_loss))
            h["train_acc"].append(_mean((right / len(y)).tolist()))
            h["test_loss"].append(_mean(test_loss))
            h["test_acc"].append(_mean(test_acc))
            if epoch == cfg.epochs:  # the end point: the whole training set evaluated with the final weights
                tr_loss, tr_acc = evaluate(model, x, y)
                row["final"] = {"train_loss": tr_loss, "train_acc": tr_acc, "test_loss": test_loss,
                                "test_acc": test_acc}
            h["seconds"].append(time.perf_counter() - t0)
            done = (epoch - 1) * len(models) + i + 1
            report.publish(out, progress=done / total,
                           message=f"epoch {epoch}/{cfg.epochs}: {row['label']} done ({done}/{total})")
    return out


def table(result: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per width: parameters and the final train/test loss and accuracy (mean over copies)."""
    rows = []
    for w in result["widths"]:
        f = w["final"]
        if f is None:
            continue
        rows.append({"width": w["label"], "c1": w["c1"], "c2": w["c2"], "params": w["params"],
                     "train loss": _mean(f["train_loss"]), "test loss": _mean(f["test_loss"]),
                     "train acc": _mean(f["train_acc"]), "test acc": _mean(f["test_acc"]),
                     "gap (train - test acc)": _mean(f["train_acc"]) - _mean(f["test_acc"]),
                     "seconds": sum(w["history"]["seconds"])})
    return rows


def history_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per width and epoch (mean over copies; training numbers are the epoch's running means)."""
    rows = []
    for w in result["widths"]:
        h = w["history"]
        for j, e in enumerate(h["epoch"]):
            rows.append({"width": w["label"], "params": w["params"], "epoch": e,
                         **{k: h[k][j] for k in ("train_loss", "train_acc", "test_loss", "test_acc")}})
    return rows


def cached(cfg: SizeConfig, cache: Cache) -> Entry | None:
    """The stored result for cfg (runtime first, then shipped), else that of the data set that really runs (the
    embedded digits when cfg's is missing here: a shipped Fashion-MNIST result still shows without the files)."""
    return cache.get(KIND, cfg) or cache.get(KIND, resolve(cfg))


def run(cfg: SizeConfig, cache: Cache, report: Reporter = SILENT, device: torch.device | None = None) -> Entry:
    """The sweep for cfg: from the cache, else trained now and stored with the command that recomputes it."""
    cfg = resolve(cfg)

    def compute() -> ComputeResult:
        return ComputeResult(train_sizes(cfg, report, device), meta={"recompute": cli_command(cfg)})

    return cache.get_or_compute(KIND, cfg, compute)


def job(cfg: SizeConfig, cache: Cache) -> Callable[[JobContext], Entry]:
    """A job function for views.widgets.start_job: publishes the sweep after every width's epoch."""
    def fn(ctx: JobContext) -> Entry:
        ctx.publish(None, progress=0.0, message="loading data")
        return run(cfg, cache, ctx)

    fn.__name__ = KIND
    return fn


FLAGS = {"dataset": "--dataset", "n_train": "--n-train", "n_test": "--n-test", "epochs": "--epochs",
         "widths": "--widths", "seeds": "--seeds", "lr": "--lr", "batch_size": "--batch-size", "seed": "--seed"}


def format_widths(widths: tuple[tuple[int, int], ...]) -> str:
    """'8x8,11x10,...' as the CLI takes them."""
    return ",".join(f"{a}x{b}" for a, b in widths)


def parse_widths(text: str) -> tuple[tuple[int, int], ...]:
    """'8x8,11x10' (or 'all') -> ((8, 8), (11, 10)); ConfigError for anything else."""
    if text.strip() == "all":
        return FAMILY
    try:
        return tuple((int(a), int(b)) for a, b in (t.strip().lower().split("x") for t in text.split(",") if t.strip()))
    except ValueError as err:
        raise ConfigError(f"widths must look like 8x8,11x10 (c1xc2, comma-separated), got {text!r}") from err


def cli_command(cfg: SizeConfig) -> str:
    """The terminal command that recomputes cfg (non-default settings only)."""
    default = SizeConfig()
    parts = ["python -m explorer size"]
    for k, flag in FLAGS.items():
        v = getattr(cfg, k)
        if v != getattr(default, k):
            parts.append(f"{flag} {format_widths(v) if k == 'widths' else v}")
    return " ".join(parts)
