"""Transfer learning compared in one table: on a small task (two CIFAR-10 classes, a few hundred to a couple of
thousand training images) the same backbone trained from scratch, probed linearly with its source weights
frozen, fine-tuned in full at several learning rates, and, off the network, scikit-learn's logistic regression
on its frozen features and gradient boosting on the raw pixels.

Every network training goes through `explorer.train.image_fit.fit` (Adam, fixed epochs, no augmentation): a
linear probe is the source network with its classifier swapped for a fresh linear head and every other parameter
frozen (requires_grad off, its BatchNorm kept in eval mode, so the probe changes the head only). Train accuracy is
the whole training set evaluated with the final weights; test accuracy the task's test images (CIFAR-10's test
split, never seen by the source either). The source (source.py) is torchvision's ImageNet ResNet18 when its weights
file is here, else a CNN this app trained on the data set's other classes; the table says which.

The course report's ranking, fine-tune 0.7475 > gradient boosting 0.735 > linear probe 0.7325 > sklearn probe
0.715 > scratch ~0.5, is the shape to expect, not numbers to match: the page says what came out.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from explorer.core.cache import Cache, ComputeResult, Entry
from explorer.core.config import ConfigError, check_choice, check_range
from explorer.core.device import get_device
from explorer.core.jobs import JobContext
from explorer.core.report import SILENT, Reporter, part
from explorer.core.seeding import seeded
from explorer.data.datasets import ArrayDataset, load_or_fallback, name_or_fallback
from explorer.labs.transfer_learning import source as src

KIND = "transfer-table"  # cache kind of a finished table
TABLE_VERSION = 1  # bump when the table's computation changes; older entries then miss
DATASETS = ("cifar10", "digits")  # digits: the embedded fallback (8x8 grey) when CIFAR-10 is absent
CLASS_NAMES: dict[str, tuple[str, ...]] = {
    "cifar10": ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
    "digits": tuple(str(d) for d in range(10)),
}
DEFAULT_CLASSES: dict[str, tuple[str, ...]] = {"cifar10": ("cat", "dog"), "digits": ("3", "8")}
SOURCES = ("auto", "imagenet", "self")  # auto: ImageNet weights when the file is here, else self-trained
IMAGE_SIZES = (32, 64, 96, 128, 160, 224)  # side the ImageNet ResNet18 sees (32x32 images upsampled)
LOGREG_C = 1.0  # inverse L2 strength of the scikit-learn probe (on standardised features)
LOGREG_MAX_ITER = 2000
HGB_LR = 0.1  # gradient boosting's shrinkage
HGB_LEAVES = 31  # scikit-learn's default max_leaf_nodes
METHOD_ORDER = ("scratch", "probe", "finetune", "sklearn_probe", "boosting")
CPU_GFLOPS = 15.0  # training throughput assumed for an estimate (measured: ~10-20 GFLOP/s, 1 thread, shared CPU)


def _floats(value: Any, name: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in value)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{name} must be a list of numbers, got {value!r}"[:200]) from err


@dataclass(frozen=True)
class TransferConfig:
    """One table: the task, the source, and how each method trains. The default is the shipped table."""

    dataset: str = "cifar10"  # the embedded digits stand in when it is absent
    classes: tuple[str, ...] = ("cat", "dog")  # the task's classes (the source never sees them)
    n_train: int = 1000  # training images of the task, split evenly over its classes (seeded)
    n_test: int = 2000  # test images (CIFAR-10 has 1,000 per class)
    source: str = "auto"  # SOURCES; resolve() turns auto into the one used
    weights_sha256: str = ""  # the ImageNet weights file's sha256 (set by resolve, keys the cache)
    image_size: int = 64  # ImageNet source only: the side images are upsampled to
    epochs: int = 10  # per network method (scratch, probe, each fine-tune)
    batch_size: int = 64
    lr: float = 1e-3  # Adam's step size from scratch
    probe_lr: float = 1e-2  # Adam's step size of the linear probe's head
    finetune_lrs: tuple[float, ...] = (1e-3, 1e-4, 1e-5)  # one full fine-tuning per value (Adam)
    hgb_iters: int = 100  # boosting rounds on pixels (about 40 s on 1,000 CIFAR images, 1 thread)
    source_cfg: src.SourceConfig = src.SourceConfig()  # the self-trained source, when that is the source
    seed: int = 0  # subsets, initial weights and minibatch order

    def __post_init__(self) -> None:
        check_choice("dataset", self.dataset, DATASETS)
        classes = tuple(str(c) for c in self.classes)
        object.__setattr__(self, "classes", classes)
        check_range("number of task classes", len(classes), 2, 5, integer=True)
        for c in classes:
            check_choice(f"class of {self.dataset}", c, CLASS_NAMES[self.dataset])
        if len(set(classes)) != len(classes):
            raise ConfigError("each class may appear only once")
        check_range("training images", self.n_train, 20, 10_000, integer=True)
        check_range("test images", self.n_test, 20, 10_000, integer=True)
        check_choice("source", self.source, SOURCES)
        check_choice("image size", self.image_size, IMAGE_SIZES)
        check_range("epochs", self.epochs, 1, 100, integer=True)
        check_range("batch size", self.batch_size, 8, 1024, integer=True)
        check_range("learning rate", self.lr, 1e-6, 1.0)
        check_range("probe learning rate", self.probe_lr, 1e-6, 1.0)
        lrs = _floats(self.finetune_lrs, "fine-tuning learning rates")
        check_range("number of fine-tuning learning rates", len(lrs), 1, 6, integer=True)
        for v in lrs:
            check_range("fine-tuning learning rate", v, 1e-6, 1.0)
        if len(set(lrs)) != len(lrs):
            raise ConfigError("each fine-tuning learning rate may appear only once")
        object.__setattr__(self, "finetune_lrs", tuple(sorted(lrs, reverse=True)))
        check_range("boosting rounds", self.hgb_iters, 10, 2000, integer=True)
        if isinstance(self.source_cfg, dict):  # a config read back from JSON or a URL
            object.__setattr__(self, "source_cfg", src.SourceConfig(**self.source_cfg))
        if not isinstance(self.source_cfg, src.SourceConfig):
            raise ConfigError("source_cfg must be a SourceConfig")
        check_range("seed", self.seed, 0, 2**31 - 1, integer=True)


# The report's scale on a GPU: the same task with the whole CIFAR-10 training set for the source.
GPU_RECIPE = TransferConfig(n_train=2000, source_cfg=src.SourceConfig(width=1.0, per_class=5000, epochs=15))


@dataclass(frozen=True)
class Plan:
    """What really runs for a config: the data set, classes and source used, and why."""

    cfg: TransferConfig  # resolved: dataset, classes, source ("imagenet" or "self") and weights_sha256 as used
    weights: Path | None  # the ImageNet weights file (source "imagenet")
    notice: str | None  # why the data set is not the one asked for, else None
    why: str  # why this source


@functools.lru_cache(maxsize=8)
def _weights_problem(path: str, size: int, mtime_ns: int) -> str | None:
    """None when the file is a usable ResNet18 state dict, else what is wrong (memoised per file version)."""
    try:
        src.load_resnet18_state(path)
    except src.WeightsError as err:
        return str(err)
    return None


def _check_file(path: Path) -> str | None:
    st = path.stat()
    return _weights_problem(str(path.resolve()), st.st_size, st.st_mtime_ns)


def resolve(cfg: TransferConfig, weights: str | Path | None = None) -> Plan:
    """The plan for cfg: the embedded digits (and their default classes) when CIFAR-10 is absent; the ImageNet
    source when a usable weights file is given or in the hub cache (auto/imagenet), else the self-trained one.
    WeightsError when an explicitly asked-for ImageNet source cannot be had."""
    used, notice = name_or_fallback(cfg.dataset, "train")
    if used != cfg.dataset:
        cfg = dataclasses.replace(cfg, dataset=used, classes=DEFAULT_CLASSES[used]
                                  if not set(cfg.classes) <= set(CLASS_NAMES[used]) else cfg.classes)
    name = src.imagenet_weights_name()
    if cfg.source == "self":
        return Plan(dataclasses.replace(cfg, weights_sha256=""), None, notice,
                    "the self-trained source was asked for")
    path = src.find_imagenet_weights(weights)  # WeightsError for a --weights path that is not a file
    problem = _check_file(path) if path is not None else None
    if path is not None and problem is None:
        why = (f"the weights file {path.name} was given" if weights else
               f"torchvision's ImageNet weights ({name}) are in the torch hub cache")
        return Plan(dataclasses.replace(cfg, source="imagenet", weights_sha256=src.file_sha256(path)), path,
                    notice, why)
    if weights or cfg.source == "imagenet":
        raise src.WeightsError(problem or f"no ImageNet weights for ResNet18: put torchvision's {name} into the "
                                          "torch hub cache's checkpoints/ folder or pass --weights PATH")
    why = (f"torchvision's ImageNet weights file in the torch hub cache is not usable ({problem})" if problem else
           f"torchvision's ImageNet weights ({name}) are not in the torch hub cache and this app does not "
           "download them")
    return Plan(dataclasses.replace(cfg, source="self", weights_sha256=""), None, notice,
                why + f", so the source is a CNN this app trained on the other {cfg.dataset} classes")


# --- data ---------------------------------------------------------------------------------------------------

def task_split(ds: ArrayDataset, classes: tuple[str, ...], n: int, seed: int) -> ArrayDataset:
    """n images of the task's classes (evenly split, seeded), labelled 0..k-1 in the order of `classes`."""
    return src.restrict(ds, classes, max(n // len(classes), 1), seed)


def load_task(cfg: TransferConfig) -> tuple[ArrayDataset, ArrayDataset]:
    """The task's training and test images (cfg resolved: its data set is there)."""
    train_ds, _ = load_or_fallback(cfg.dataset, "train")
    test_ds, _ = load_or_fallback(train_ds.name, "test")
    return (task_split(train_ds, cfg.classes, cfg.n_train, cfg.seed),
            task_split(test_ds, cfg.classes, cfg.n_test, cfg.seed + 1))


def as_rgb(ds: ArrayDataset) -> ArrayDataset:
    """Grey images repeated into three channels (for the ImageNet ResNet18); colour images unchanged."""
    if ds.x.shape[1] == 3:
        return ds
    return ArrayDataset(ds.name, ds.x.expand(-1, 3, -1, -1).contiguous(), ds.y, ds.classes)


# --- networks -----------------------------------------------------------------------------------------------

class TaskNet(nn.Module):
    """images -> (resized) -> backbone features -> a fresh linear head; `frozen` keeps the backbone as it is."""

    def __init__(self, backbone: nn.Module, features: int, classes: int, image_size: int | None = None,
                 frozen: bool = False) -> None:
        super().__init__()
        self.backbone, self.image_size, self.frozen = backbone, image_size, frozen
        self.head = nn.Linear(features, classes)
        if frozen:
            backbone.requires_grad_(False)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) normalised images -> (N, features)."""
        if self.image_size and x.shape[-1] != self.image_size:  # the ImageNet net wants larger inputs
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
        if self.frozen:
            with torch.no_grad():  # no graph through a frozen backbone: the probe's step costs a forward only
                return self.backbone(x)
        return self.backbone(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def train(self, mode: bool = True) -> TaskNet:
        """Training mode for the head (and a trainable backbone); a frozen backbone keeps its BatchNorm
        statistics (eval mode), or the probe would change the features it is meant to read."""
        super().train(mode)
        if self.frozen:
            self.backbone.eval()
        return self


class Features(nn.Module):
    """A TaskNet's features as the output (for image_fit.predict: chunked, on the device)."""

    def __init__(self, net: TaskNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.features(x)


def trainable(model: nn.Module) -> int:
    """Parameters that training changes (requires_grad)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def task_net(source: src.Source | None, scratch_of: src.Source, classes: int, seed: int,
             frozen: bool = False) -> TaskNet:
    """The source network with a fresh head (source=None: the same architecture, randomly initialised)."""
    with seeded(seed):
        net = scratch_of.untrained() if source is None else source.network()
        backbone, feats = src.strip_head(net)
        return TaskNet(backbone, feats, classes, scratch_of.image_size, frozen)


# --- methods ------------------------------------------------------------------------------------------------

@dataclass
class Task:
    """Everything a method needs: the task's images on the device, the source and where to report."""

    cfg: TransferConfig
    train: ArrayDataset
    test: ArrayDataset
    source: src.Source
    device: torch.device


def _accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    return float((logits.argmax(1) == y.cpu()).double().mean())


def _fit_and_score(task: Task, net: TaskNet, lr: float, mean: Any, std: Any, report: Reporter) -> dict[str, Any]:
    """Train `net` with image_fit.fit and evaluate it on the whole training and test sets."""
    from explorer.train.image_fit import FitConfig, ImageData, fit, predict

    cfg = task.cfg
    train = ImageData.from_dataset(task.train, task.device, mean=mean, std=std)
    test = ImageData.from_dataset(task.test, task.device, mean=train.mean, std=train.std)
    params = trainable(net)
    result = fit(net, train, None, FitConfig(optimizer="adam", lr=lr, epochs=cfg.epochs, batch_size=cfg.batch_size,
                                             seed=cfg.seed), report, task.device)
    t0 = time.perf_counter()
    train_acc = _accuracy(predict(result.model, train), task.train.y)
    test_acc = _accuracy(predict(result.model, test), task.test.y)
    return {"test_acc": test_acc, "train_acc": train_acc, "params": params,
            "seconds": result.seconds + time.perf_counter() - t0, "lr": lr, "epochs": cfg.epochs,
            "history": {k: list(result.history.get(k, [])) for k in ("epoch", "train_loss", "train_acc")}}


def _norm(task: Task) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.tensor(task.source.mean), torch.tensor(task.source.std)


def m_scratch(task: Task, report: Reporter) -> list[dict[str, Any]]:
    """The source's architecture, randomly initialised, trained on the task alone (its own pixel statistics)."""
    net = task_net(None, task.source, len(task.cfg.classes), task.cfg.seed)
    mean, std = _norm(task) if task.source.kind == "imagenet" else (None, None)
    row = _fit_and_score(task, net, task.cfg.lr, mean, std, report)
    return [{"method": "scratch", "label": f"from scratch (Adam lr {task.cfg.lr:g})", **row}]


def m_probe(task: Task, report: Reporter) -> list[dict[str, Any]]:
    """Frozen source features, a new linear head trained by fit (only the head requires grad)."""
    net = task_net(task.source, task.source, len(task.cfg.classes), task.cfg.seed, frozen=True)
    row = _fit_and_score(task, net, task.cfg.probe_lr, *_norm(task), report)
    return [{"method": "probe", "label": f"linear probe, frozen features (Adam lr {task.cfg.probe_lr:g})", **row}]


def m_finetune(task: Task, report: Reporter, lr: float) -> list[dict[str, Any]]:
    """Every weight of the source network trained on the task, starting from the source's weights."""
    net = task_net(task.source, task.source, len(task.cfg.classes), task.cfg.seed)
    row = _fit_and_score(task, net, lr, *_norm(task), report)
    return [{"method": "finetune", "label": f"fine-tune all layers (Adam lr {lr:g})", **row}]


def _threads() -> Any:
    """scikit-learn's OpenMP/BLAS threads limited to torch's (the server runs many jobs on few cores)."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=torch.get_num_threads())


def extract(task: Task) -> tuple[np.ndarray, np.ndarray]:
    """The source's frozen features of the task's training and test images (N, D), float64."""
    from explorer.train.image_fit import ImageData, predict

    net = task_net(task.source, task.source, len(task.cfg.classes), task.cfg.seed, frozen=True).to(task.device)
    net.eval()
    mean, std = _norm(task)
    train = ImageData.from_dataset(task.train, task.device, mean=mean, std=std)
    test = ImageData.from_dataset(task.test, task.device, mean=mean, std=std)
    f = Features(net)
    return predict(f, train).double().numpy(), predict(f, test).double().numpy()


def m_sklearn_probe(task: Task, report: Reporter) -> list[dict[str, Any]]:
    """scikit-learn's LogisticRegression (L2, lbfgs) on the standardised frozen features."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    report.checkpoint()
    t0 = time.perf_counter()
    ftr, fte = extract(task)
    ytr, yte = task.train.y.numpy(), task.test.y.numpy()
    report.publish(progress=0.5, message="logistic regression on the frozen features")
    with _threads():
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=LOGREG_C, max_iter=LOGREG_MAX_ITER))
        clf.fit(ftr, ytr)
        train_acc, test_acc = float(clf.score(ftr, ytr)), float(clf.score(fte, yte))
    lr = clf[-1]
    params = int(lr.coef_.size + lr.intercept_.size)
    report.publish(progress=1.0)
    return [{"method": "sklearn_probe", "label": f"scikit-learn LogisticRegression on frozen features "
                                                  f"({ftr.shape[1]} per image)", "test_acc": test_acc,
             "train_acc": train_acc, "params": params, "seconds": time.perf_counter() - t0, "lr": None,
             "epochs": None, "history": None}]


def _leaves(clf: Any) -> int | None:
    """Leaf values of a fitted HistGradientBoostingClassifier (what it learned), None if sklearn hides them."""
    try:
        return int(sum(p.get_n_leaf_nodes() for it in clf._predictors for p in it))
    except AttributeError:
        return None


def m_boosting(task: Task, report: Reporter) -> list[dict[str, Any]]:
    """scikit-learn's HistGradientBoostingClassifier on the raw pixels in [0, 1] (no network, no source)."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    report.checkpoint()
    t0 = time.perf_counter()
    xtr = task.train.x.reshape(len(task.train), -1).numpy().astype(np.float32) / 255.0
    xte = task.test.x.reshape(len(task.test), -1).numpy().astype(np.float32) / 255.0
    ytr, yte = task.train.y.numpy(), task.test.y.numpy()
    report.publish(progress=0.0, message=f"{task.cfg.hgb_iters} boosting rounds on {xtr.shape[1]} pixels")
    with _threads():
        clf = HistGradientBoostingClassifier(max_iter=task.cfg.hgb_iters, learning_rate=HGB_LR,
                                             max_leaf_nodes=HGB_LEAVES, early_stopping=False,
                                             random_state=task.cfg.seed)
        clf.fit(xtr, ytr)
        train_acc, test_acc = float(clf.score(xtr, ytr)), float(clf.score(xte, yte))
    report.publish(progress=1.0)
    return [{"method": "boosting", "label": f"gradient boosting on pixels (HistGradientBoosting, "
                                             f"{task.cfg.hgb_iters} rounds)", "test_acc": test_acc,
             "train_acc": train_acc, "params": _leaves(clf), "seconds": time.perf_counter() - t0, "lr": HGB_LR,
             "epochs": None, "history": None}]


def steps(cfg: TransferConfig) -> list[tuple[str, Callable[[Task, Reporter], list[dict[str, Any]]]]]:
    """The methods in the order they run, each with a short name for progress messages."""
    out: list[tuple[str, Callable[[Task, Reporter], list[dict[str, Any]]]]] = [
        ("from scratch", m_scratch), ("linear probe", m_probe)]
    out += [(f"fine-tune lr {lr:g}", functools.partial(m_finetune, lr=lr)) for lr in cfg.finetune_lrs]
    out += [("scikit-learn probe", m_sklearn_probe), ("gradient boosting", m_boosting)]
    return out


# --- the table ----------------------------------------------------------------------------------------------

SOURCE_SHARE = 0.4  # of the progress bar, when the self-trained source has to be trained first


def make_source(plan: Plan, cache: Cache, report: Reporter, device: torch.device) -> src.Source:
    """The plan's source model: ImageNet weights from the file, or the self-trained CNN (cached or trained)."""
    cfg = plan.cfg
    if cfg.source == "imagenet":
        return src.imagenet_source(plan.weights, cfg.image_size, plan.why)
    key = src.SourceKey(cfg.dataset, cfg.classes, cfg.source_cfg, cfg.seed)
    return src.with_why(src.train_source(key, cache, report, device), plan.why)


def compute_table(plan: Plan, cache: Cache, report: Reporter = SILENT,
                  device: torch.device | None = None) -> dict[str, Any]:
    """Every method's row for the plan, published after each method (and after every training epoch)."""
    device = device or get_device()
    cfg = plan.cfg
    out: dict[str, Any] = {"dataset": cfg.dataset, "notice": plan.notice, "classes": list(cfg.classes),
                           "rows": [], "current": "source model", "source": None}
    report.publish(out, progress=0.0, message="loading data")
    src_key = src.SourceKey(cfg.dataset, cfg.classes, cfg.source_cfg, cfg.seed)
    lo = SOURCE_SHARE if cfg.source == "self" and cache.get(src.SOURCE_KIND, src_key) is None else 0.0
    t0 = time.perf_counter()
    source = make_source(plan, cache, part(report, 0.0, lo, prefix="training the source model: ",
                                           snapshot=lambda _: out), device)
    out["source"] = {"kind": source.kind, "label": source.label, "why": source.why,
                     "seconds": time.perf_counter() - t0, "info": source.info}
    train, test = load_task(cfg)
    if source.kind == "imagenet":
        train, test = as_rgb(train), as_rgb(test)
    out.update(n_train=len(train), n_test=len(test), image_shape=list(train.x.shape[1:]))
    task = Task(cfg, train, test, source, device)
    todo = steps(cfg)
    for i, (name, method) in enumerate(todo):
        report.checkpoint()
        out["current"] = name
        a, b = lo + (1 - lo) * i / len(todo), lo + (1 - lo) * (i + 1) / len(todo)
        report.publish(out, progress=a, message=f"{name} ({i + 1}/{len(todo)})")
        out["rows"].extend(method(task, part(report, a, b, prefix=f"{name} ({i + 1}/{len(todo)}): ",
                                             snapshot=lambda _: out)))
        report.publish(out, progress=b, message=f"{name} done ({i + 1}/{len(todo)})")
    out["current"] = None
    return out


def table(result: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per method: method, test accuracy, train accuracy, trainable params, time (s)."""
    return [{"method": r["label"], "test accuracy": r["test_acc"], "train accuracy": r["train_acc"],
             "trainable params": r["params"], "time (s)": r["seconds"]} for r in result.get("rows", [])]


def ranking(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows by test accuracy, best first, the fine-tunings reduced to the best one (the report's ranking)."""
    rows = [r for r in result.get("rows", []) if r["method"] != "finetune"]
    tunes = [r for r in result.get("rows", []) if r["method"] == "finetune"]
    if tunes:
        rows.append(max(tunes, key=lambda r: r["test_acc"]))
    return sorted(rows, key=lambda r: -r["test_acc"])


REPORT_RANKING = (("finetune", 0.7475), ("boosting", 0.735), ("probe", 0.7325), ("sklearn_probe", 0.715),
                  ("scratch", 0.5))  # the course report's test accuracies (scratch: about 0.5)
SHORT = {"finetune": "fine-tune", "boosting": "gradient boosting", "probe": "linear probe",
         "sklearn_probe": "sklearn probe", "scratch": "scratch"}


def ranking_text(result: dict[str, Any]) -> str:
    """'fine-tune 0.812 > linear probe 0.790 > ...' for the result (the best fine-tuning stands for them)."""
    return " > ".join(f"{SHORT[r['method']]} {r['test_acc']:.3f}" for r in ranking(result))


def cached(cfg: TransferConfig, cache: Cache) -> Entry | None:
    """The stored table for what cfg resolves to here (runtime first, then shipped), else None."""
    try:
        return cache.get(KIND, cache_key(resolve(cfg).cfg))
    except src.WeightsError:
        return None


def cache_key(cfg: TransferConfig) -> dict[str, Any]:
    """What a table's cache entry is keyed by: the resolved config and the table's version."""
    return {"cfg": cfg, "version": TABLE_VERSION}


def run(cfg: TransferConfig, cache: Cache, report: Reporter = SILENT, device: torch.device | None = None,
        weights: str | Path | None = None) -> Entry:
    """The table for cfg: from the cache, else computed now and stored with the command that recomputes it."""
    plan = resolve(cfg, weights)

    def compute() -> ComputeResult:
        return ComputeResult(compute_table(plan, cache, report, device),
                             meta={"recompute": cli_command(plan.cfg, weights)})

    return cache.get_or_compute(KIND, cache_key(plan.cfg), compute)


def job(cfg: TransferConfig, cache: Cache) -> Callable[[JobContext], Entry]:
    """A job function for views.widgets.start_job: publishes the table after every method and epoch."""
    def fn(ctx: JobContext) -> Entry:
        ctx.publish(None, progress=0.0, message="loading data")
        return run(cfg, cache, ctx)

    fn.__name__ = KIND
    return fn


def work(cfg: TransferConfig, flops_per_image: float) -> float:
    """Floating-point operations of the network methods (training ~3 forwards per image, evaluation 1)."""
    nets = 2 + len(cfg.finetune_lrs)
    per_method = 3 * cfg.epochs * cfg.n_train + 2 * (cfg.n_train + cfg.n_test)
    return flops_per_image * nets * per_method


# --- command line -------------------------------------------------------------------------------------------

FLAGS = {"dataset": "--dataset", "classes": "--classes", "n_train": "--n-train", "n_test": "--n-test",
         "source": "--source", "image_size": "--image-size", "epochs": "--epochs", "batch_size": "--batch-size",
         "lr": "--lr", "probe_lr": "--probe-lr", "finetune_lrs": "--finetune-lrs", "hgb_iters": "--hgb-iters",
         "seed": "--seed"}
SOURCE_FLAGS = {"family": "--source-family", "width": "--source-width", "per_class": "--source-per-class",
                "epochs": "--source-epochs", "lr": "--source-lr", "batch_size": "--source-batch-size"}


def _show(v: Any) -> str:
    return ",".join(f"{x:g}" if isinstance(x, float) else str(x) for x in v) if isinstance(v, tuple) else (
        f"{v:g}" if isinstance(v, float) else str(v))


def cli_command(cfg: TransferConfig, weights: str | Path | None = None) -> str:
    """The terminal command that recomputes cfg (non-default settings only)."""
    default = TransferConfig()
    parts = ["python -m explorer transfer"]
    for k, flag in FLAGS.items():
        v = getattr(cfg, k)
        if v != getattr(default, k) and not (k == "image_size" and cfg.source == "self"):
            parts.append(f"{flag} {_show(v)}")
    if cfg.source != "imagenet":
        for k, flag in SOURCE_FLAGS.items():
            v = getattr(cfg.source_cfg, k)
            if v != getattr(default.source_cfg, k):
                parts.append(f"{flag} {_show(v)}")
    if weights:
        parts.append(f"--weights {weights}")
    return " ".join(parts)
